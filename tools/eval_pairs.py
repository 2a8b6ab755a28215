"""Two-view evaluation on ../shared/data/pairs: churchill (homographies) and scannet (poses).

    python tools/eval_pairs.py --out runs/eval_pairs.json
    python tools/eval_pairs.py --superpoint runs/sp_cpu/joint_r1/weights.pth --superglue runs/sg_cpu/weights.pth \
        --methods "superpoint(ours)+nn" "superpoint(ours)+superglue(ours)" --out runs/eval_ours.json

Methods: orb+nn, sift+nn, superpoint(ours)+nn, superpoint(ours)+superglue(ours), aliked+lightglue,
disk+lightglue, xfeat+nn, xfeat+lightglue
(max 1024 keypoints each; NN = mutual nearest neighbour with ratio test 0.8).
churchill (images resized to at most 640 px, H_1_k for k = 2..6): repeatability at 3 px,
matching precision/recall at 3 px, homography accuracy (mean corner error < 3/5/10 px).
scannet (15 pairs at 640x480): pose AUC at 5/10/20 deg (essential matrix, USAC_MAGSAC).
Prints a table and writes JSON (per-pair rows included). Metric code: slam/training/evaluation.py.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from slam.training.evaluation import (METHOD_NAMES, build_methods, evaluate_churchill, evaluate_scannet, format_table,
                                      load_churchill, load_scannet)


def _default_data() -> Path:
    env = os.environ.get("SLAM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=_default_data(), help="shared data folder (with pairs/)")
    ap.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), help="subset of: " + ", ".join(METHOD_NAMES))
    ap.add_argument("--superpoint", default=None, help="our SuperPoint weights (default: superpoint_ours)")
    ap.add_argument("--superglue", default=None, help="our SuperGlue weights (default: superglue_ours)")
    ap.add_argument("--max-keypoints", type=int, default=1024)
    ap.add_argument("--max-side", type=int, default=640, help="churchill images are shrunk to this longer side")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/eval_pairs.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs_root = args.data / "pairs"
    if not pairs_root.is_dir():
        ap.error(f"{pairs_root} not found; pass --data pointing at ../shared/data (or set SLAM_SHARED_DATA)")
    methods = build_methods(args.methods, args.superpoint, args.superglue, args.device, args.max_keypoints)
    churchill = evaluate_churchill(methods, load_churchill(pairs_root / "churchill", args.max_side))
    scannet = evaluate_scannet(methods, load_scannet(pairs_root / "scannet"))
    print(format_table(churchill, scannet))
    result = {"churchill": churchill, "scannet": scannet,
              "settings": {"max_keypoints": args.max_keypoints, "max_side": args.max_side, "threads": args.threads,
                           "device": args.device, "superpoint": args.superpoint, "superglue": args.superglue,
                           "machine": platform.processor() or platform.machine()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
