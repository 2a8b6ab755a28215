"""Benchmark XFeat and LighterGlue: ms per 640x480 frame (single and batched) and per pair.

XFeat: ``XFeat.extract`` on one image per call, and ``XFeat.extract_batch`` on --batch images
per call (ms per image), at --max-keypoints. LighterGlue: ``LightGlue.match`` on one pair per
call, and ``LightGlue.match_many`` on one frame against --keyframes keyframes (ms per call).
Images: fr1_xyz frames when the data is there (``$SLAM_SHARED_DATA`` or ../shared/data), else a
synthetic textured image. Weights: the installed xfeat / xfeat_lighterglue, else random weights
of the same architecture (the JSON field "weights" says which; timings do not depend on them
except through the number of keypoints).

    python tools/bench_xfeat.py --device cuda --precisions fp16 --out runs/bench_xfeat.json
    python tools/bench_xfeat.py --device cpu --frames 5 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import torch

from slam.device import resolve_device
from slam.errors import WeightsError

REPO_ROOT = Path(__file__).resolve().parents[1]


def fr1_images(n: int) -> Optional[list[np.ndarray]]:
    """n (480,640,3) uint8 BGR frames spread over fr1_xyz, or None without the data."""
    env = os.environ.get("SLAM_SHARED_DATA")
    seq = (Path(env) if env else REPO_ROOT.parent / "shared" / "data") / "tum" / "rgbd_dataset_freiburg1_xyz"
    rgb_txt = seq / "rgb.txt"
    if not rgb_txt.is_file():
        return None
    names = [ln.split()[1] for ln in rgb_txt.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    picks = np.linspace(0, len(names) - 1, n).astype(int)
    imgs = [cv2.imread(str(seq / names[i]), cv2.IMREAD_COLOR) for i in picks]
    return imgs if all(im is not None for im in imgs) else None


def synthetic_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """n (480,640,3) uint8 images of random blobs and lines, shifted a little from one to the next."""
    rng = np.random.default_rng(seed)
    base = np.full((560, 720, 3), 128, np.uint8)
    for _ in range(400):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        p = tuple(int(v) for v in rng.integers(0, [720, 560]))
        if rng.random() < 0.5:
            cv2.circle(base, p, int(rng.integers(3, 25)), c, -1)
        else:
            cv2.line(base, p, tuple(int(v) for v in rng.integers(0, [720, 560])), c, int(rng.integers(1, 4)))
    return [base[i * 4:i * 4 + 480, i * 3:i * 3 + 640].copy() for i in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, calls: int, warmup: int) -> float:
    """Median wall milliseconds of fn() over `calls` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def build(device: torch.device, precision: str, max_keypoints: int):
    """(XFeat, LighterGlue, weights origin) at `precision`; random weights when not installed."""
    from slam.features.xfeat import XFeat, XFeatConfig, XFeatNet
    from slam.matching.lightglue import LightGlue, LightGlueConfig, LightGlueNet

    xcfg = XFeatConfig(max_keypoints=max_keypoints, precision=precision)
    lcfg = LightGlueConfig(features="xfeat", precision="fp32" if precision == "int8" else precision)  # int8: XFeat's convolutions only
    try:
        return XFeat(xcfg, device), LightGlue(lcfg, device), "installed (xfeat, xfeat_lighterglue)"
    except WeightsError:
        torch.manual_seed(0)
        net = LightGlueNet(n_layers=6, num_heads=1, descriptor_dim=96, input_dim=64)
        sd = {f"matcher.{k}": v for k, v in net.state_dict().items()}
        return (XFeat(xcfg, device, state_dict=XFeatNet().state_dict()), LightGlue(lcfg, device, state_dict=sd),
                "random (weights not installed)")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--precisions", default="", help="comma list of fp32,fp16,bf16,int8 (int8: CPU, XFeat only; default: fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--max-keypoints", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=20, help="timed single calls per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=0, help="images per extract_batch call (default 32 CUDA, 4 CPU)")
    ap.add_argument("--keyframes", type=int, default=3, help="keyframes per match_many call")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    precisions = [p for p in args.precisions.split(",") if p] or (["fp16"] if device.type == "cuda" else ["fp32"])
    batch = args.batch or (32 if device.type == "cuda" else 4)
    imgs = fr1_images(max(batch, args.keyframes + 1))
    source = "fr1_xyz"
    if imgs is None:
        imgs, source = synthetic_images(max(batch, args.keyframes + 1)), "synthetic"
    results = []
    for prec in precisions:
        xfeat, lg, origin = build(device, prec, args.max_keypoints)
        feats = xfeat.extract_batch(imgs[: args.keyframes + 1])
        row = {"precision": prec, "weights": origin,
               "keypoints_mean": float(np.mean([len(f) for f in feats]))}
        row["xfeat_single_ms"] = time_ms(lambda: xfeat.extract(imgs[0]), device, args.frames, args.warmup)
        calls = max(2, args.frames // batch)
        row["xfeat_batched_ms_per_image"] = time_ms(lambda: xfeat.extract_batch(imgs[:batch]), device, calls,
                                                    1) / batch
        row["xfeat_batch"] = batch
        row["lighterglue_pair_ms"] = time_ms(lambda: lg.match(feats[0], feats[1]), device, args.frames, args.warmup)
        row["lighterglue_1_vs_k_ms"] = time_ms(lambda: lg.match_many(feats[0], feats[1:]), device, args.frames,
                                               args.warmup)
        row["keyframes"] = args.keyframes
        row["matches_pair"] = int((lg.match(feats[0], feats[1]).matches0 >= 0).sum())
        results.append(row)
        print(f"{prec}: XFeat {row['xfeat_single_ms']:.1f} ms single, {row['xfeat_batched_ms_per_image']:.1f} ms/image "
              f"batched x{batch}; LighterGlue {row['lighterglue_pair_ms']:.1f} ms/pair, "
              f"{row['lighterglue_1_vs_k_ms']:.1f} ms 1 vs {args.keyframes} ({row['keypoints_mean']:.0f} kp, {origin})",
              flush=True)
    out = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "images": source,
           "max_keypoints": args.max_keypoints, "load_avg": os.getloadavg(), "results": results}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
        print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
