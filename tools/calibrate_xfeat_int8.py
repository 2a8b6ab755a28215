"""Calibrate XFeat's int8 precision (slam.features.xfeat_int8) on a folder of images.

Runs the fp32 network on every image (at most --max-side px wide, as a SLAM camera would give
them), records each 3x3 layer's activation ranges, and stores them in the calibration file
under the fingerprint of the weights. Calibrate on training images only, never on the
sequences you evaluate on: the committed calibration used the training pool
``../shared/data/images`` (67 image files: ICL-NUIM, TUM fr3 office, Photo Tourism, Oxford graf).

    python tools/calibrate_xfeat_int8.py --images ../shared/data/images [--weights xfeat] [--out F]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import torch

from slam.features.config import XFeatConfig
from slam.features.xfeat import XFeat, network_input
from slam.features.xfeat_int8 import CALIBRATION_FILE, calibrate, weights_fingerprint
from slam.weights import load_weights

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, type=Path, help="folder searched recursively for images")
    ap.add_argument("--weights", default="xfeat", help="registry name or path of xfeat.pt")
    ap.add_argument("--max-side", type=int, default=640, help="images wider than this are resized to it")
    ap.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    a = ap.parse_args()
    paths = sorted(p for p in a.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images under {a.images}")
    state_dict, wpath = load_weights(a.weights, "xfeat", "XFeat weights")
    ex = XFeat(XFeatConfig(weights=a.weights, precision="fp32"), "cpu", state_dict=state_dict)

    def greys():
        for p in paths:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                continue
            if img.shape[1] > a.max_side:
                img = cv2.resize(img, (a.max_side, round(img.shape[0] * a.max_side / img.shape[1])), interpolation=cv2.INTER_AREA)
            yield network_input([img], torch.device("cpu"))[0]

    layers = calibrate(ex.net, greys())
    fp = weights_fingerprint(state_dict)
    table = json.loads(a.out.read_text()) if a.out.is_file() else {}
    table[fp] = {"weights": Path(wpath).name, "images": f"{len(paths)} images under {a.images.name}/ (at most {a.max_side} px wide)",
                 "rule": "median over the images of each layer's per-image max |input| and max |output|",
                 "layers": layers}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{a.out}: {len(layers)} layers for weights {fp} ({Path(wpath).name}) from {len(paths)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
