#!/usr/bin/env bash
# Download MS COCO 2014 (or 2017 with COCO_YEAR=2017) images and instance
# annotations.
# Usage: bash data/scripts/COCO2014.sh [TARGET_DIR]   (default: ~/data/coco)
# Result: TARGET_DIR/annotations/instances_{train,val}2014.json,
#         TARGET_DIR/train2014/, TARGET_DIR/val2014/
# (2017: instances_{train,val}2017.json, train2017/, val2017/)
set -euo pipefail
TARGET=${1:-$HOME/data/coco}
YEAR=${COCO_YEAR:-2014}
BASE=${COCO_MIRROR:-http://images.cocodataset.org}
mkdir -p "$TARGET"
cd "$TARGET"
fetch() {  # url
  local f; f=$(basename "$1")
  echo "Downloading $f ..."
  curl -fL --retry 3 -C - -o "$f" "$1"
  echo "Extracting $f ..."
  unzip -q -o "$f"
  rm -f "$f"
}
fetch "$BASE/zips/train$YEAR.zip"
fetch "$BASE/zips/val$YEAR.zip"
fetch "$BASE/annotations/annotations_trainval$YEAR.zip"
echo "Done: $TARGET"
echo "Check it with: python -m data.check $TARGET --format coco --split val$YEAR"
