#!/usr/bin/env bash
# Download PASCAL VOC2007 trainval + test into a VOCdevkit folder.
# Usage: bash data/scripts/VOC2007.sh [TARGET_DIR]   (default: ~/data)
# Result: TARGET_DIR/VOCdevkit/VOC2007/{Annotations,ImageSets,JPEGImages,...}
set -euo pipefail
TARGET=${1:-$HOME/data}
MIRROR=${VOC_MIRROR:-http://host.robots.ox.ac.uk/pascal/VOC/voc2007}
mkdir -p "$TARGET"
cd "$TARGET"
for f in VOCtrainval_06-Nov-2007.tar VOCtest_06-Nov-2007.tar; do
  echo "Downloading $f ..."
  curl -fL --retry 3 -C - -o "$f" "$MIRROR/$f"
  echo "Extracting $f ..."
  tar -xf "$f"
  rm -f "$f"
done
echo "Done: $TARGET/VOCdevkit/VOC2007"
echo "Check it with: python -m data.check $TARGET/VOCdevkit --format voc --year 2007"
