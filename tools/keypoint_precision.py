"""How precisely a front-end places the same scene point in two images, measured against exact
depth and poses (a synthetic sequence, or any RGB-D sequence whose depth and ground truth you trust).

For frame pairs (i, i + gap), every ``--every`` frames: the front-end's keypoints and its own
matcher's matches; each first keypoint is carried into the second image by the first frame's
depth and the two ground-truth poses (slam.geometry.depth_warp.warp_points); the distance from
there to the matched keypoint is the error. Matches under ``--max-px`` count as correct; the
tool prints their number, the median, RMS and 90th percentile of the error (pixels), and the
share of matches that are correct. ``--align-lk`` first moves each second keypoint to where the
patch around the first one is found again (pyramidal Lucas-Kanade, 11 x 11, started at the
match): what a patch tracker would observe.

    python tools/keypoint_precision.py --seq synthetic/loop_short --data-root DIR --features xfeat --matcher lightglue
    python tools/keypoint_precision.py --seq synthetic/loop_short --data-root DIR --features aliked --matcher lightglue --json F
    python tools/keypoint_precision.py --seq synthetic/loop_short --data-root DIR xfeat.shifted_grid=false   # XFeat's one cell grid

docs/benchmarks.md section 12 (2026-12-05) has the figures for XFeat, ALIKED and ORB.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch


def _pairs(n: int, gap: int, every: int) -> list[tuple[int, int]]:
    return [(i, i + gap) for i in range(0, n - gap, every)]


def precision(errors: np.ndarray, n_matches: int, max_px: float) -> dict:
    """Summary of per-match errors (px) of the matches whose ground truth is known."""
    ok = errors[errors < max_px]
    if len(ok) == 0:
        return {"matches": int(n_matches), "correct": 0}
    return {"matches": int(n_matches), "correct": int(len(ok)), "correct_share": round(len(ok) / max(len(errors), 1), 4),
            "median_px": round(float(np.median(ok)), 3), "rms_px": round(float(np.sqrt((ok ** 2).mean())), 3),
            "p90_px": round(float(np.percentile(ok, 90)), 3)}


def main(argv: list[str]) -> int:
    from slam.app import open_input
    from slam.config import load_config
    from slam.errors import SlamError
    from slam.geometry.depth_warp import warp_points
    from slam.system import build_extractor, build_matcher, resolve_config

    ap = argparse.ArgumentParser(prog="keypoint_precision.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", required=True, help="an RGB-D sequence with ground truth (synthetic/NAME, tum/NAME or a folder)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--features", default="xfeat")
    ap.add_argument("--matcher", default="lightglue")
    ap.add_argument("--gap", type=int, default=3, help="frames between the two images of a pair")
    ap.add_argument("--every", type=int, default=10, help="a pair starts every this many frames")
    ap.add_argument("--max-px", type=float, default=4.0, help="a match within this many px of the truth is correct")
    ap.add_argument("--align-lk", action="store_true", help="align the second keypoint to the first one's patch (Lucas-Kanade)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides, e.g. xfeat.shifted_grid=false")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        cfg = resolve_config(load_config(None, [f"features={a.features}", f"matcher={a.matcher}", "device=cpu", "mode=rgbd", *a.overrides]))
        inputs = open_input(a.seq, cfg, data_root=a.data_root)
        if inputs.groundtruth is None:
            raise SlamError(f"{a.seq}: no ground truth; the tool needs exact poses and depth")
        from slam.io.trajectory import read_trajectory

        gt_t, gt_wfc = inputs.groundtruth if isinstance(inputs.groundtruth, tuple) else read_trajectory(inputs.groundtruth)
        if gt_t is None:
            raise SlamError(f"{a.seq}: the ground truth has no timestamps")
        n = inputs.n_frames or 0
        pairs = _pairs(n, a.gap, a.every)
        wanted = {k for p in pairs for k in p}
        frames = {f.index: f for f in inputs.source if f.index in wanted}  # only the frames of the pairs
        extractor, matcher = build_extractor(cfg, torch.device("cpu")), build_matcher(cfg, torch.device("cpu"))
    except SlamError as exc:
        print(f"error: {exc} (this tool has no --mode: it needs depth images and ground truth, e.g. a synthetic or TUM RGB-D sequence)",
              file=sys.stderr)
        return 2

    def cam_from_world(t: float) -> np.ndarray:
        return np.linalg.inv(gt_wfc[int(np.argmin(np.abs(gt_t - t)))])

    errors, n_matches = [], 0
    for i, j in pairs:
        if i not in frames or j not in frames:
            continue
        f0, f1 = frames[i], frames[j]
        if f0.depth is None:
            print(f"error: {a.seq}: frame {i} has no depth image", file=sys.stderr)
            return 2
        k0f, k1f = extractor.extract(f0.image), extractor.extract(f1.image)
        pr = matcher.match(k0f, k1f).pairs()
        k0, k1 = k0f.keypoints.numpy()[pr[:, 0]].astype(np.float64), k1f.keypoints.numpy()[pr[:, 1]].astype(np.float64)
        if a.align_lk and len(pr):
            g0, g1 = (cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY) if f.image.ndim == 3 else f.image for f in (f0, f1))
            moved, st, _ = cv2.calcOpticalFlowPyrLK(g0, g1, k0.astype(np.float32).reshape(-1, 1, 2), k1.astype(np.float32).reshape(-1, 1, 2).copy(),
                                                    winSize=(11, 11), maxLevel=0, flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
            moved = moved.reshape(-1, 2).astype(np.float64)
            keep = (st.ravel() == 1) & (np.linalg.norm(moved - k1, axis=1) < 3.0)
            k1 = np.where(keep[:, None], moved, k1)
        uv, valid = warp_points(k0, f0.depth, inputs.camera, cam_from_world(f1.timestamp) @ np.linalg.inv(cam_from_world(f0.timestamp)))
        errors.append(np.linalg.norm(uv - k1, axis=1)[valid])
        n_matches += len(pr)
    res = precision(np.concatenate(errors) if errors else np.zeros(0), n_matches, a.max_px)
    res.update({"seq": a.seq, "features": a.features, "matcher": a.matcher, "gap": a.gap, "every": a.every,
                "align_lk": a.align_lk, "overrides": a.overrides, "pairs": len(errors)})
    print(f"{a.features} + {a.matcher}, {a.seq}, {len(errors)} pairs {a.gap} frames apart{' (Lucas-Kanade aligned)' if a.align_lk else ''}: "
          f"{res.get('correct', 0)} of {n_matches} matches within {a.max_px:g} px; error median {res.get('median_px')} px, "
          f"RMS {res.get('rms_px')} px, 90th percentile {res.get('p90_px')} px")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
