#!/usr/bin/env bash
# Download PASCAL VOC2012 trainval into a VOCdevkit folder (beside VOC2007).
# Usage: bash data/scripts/VOC2012.sh [TARGET_DIR]   (default: ~/data)
# Result: TARGET_DIR/VOCdevkit/VOC2012/{Annotations,ImageSets,JPEGImages,...}
set -euo pipefail
TARGET=${1:-$HOME/data}
MIRROR=${VOC_MIRROR:-http://host.robots.ox.ac.uk/pascal/VOC/voc2012}
mkdir -p "$TARGET"
cd "$TARGET"
f=VOCtrainval_11-May-2012.tar
echo "Downloading $f ..."
curl -fL --retry 3 -C - -o "$f" "$MIRROR/$f"
echo "Extracting $f ..."
tar -xf "$f"
rm -f "$f"
echo "Done: $TARGET/VOCdevkit/VOC2012"
echo "Check it with: python -m data.check $TARGET/VOCdevkit --format voc --year 2012"
