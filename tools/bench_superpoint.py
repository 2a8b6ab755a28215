"""Benchmark the SuperPoint front-end end to end: image array -> Features.

Times ``SuperPoint.extract`` (single image) and ``SuperPoint.extract_batch`` (batched) at
640x480 with max_keypoints=1024, for each precision on the current device, plus the network
alone (to show the cost of the post-processing). For each reduced precision it also reports
how close it stays to fp32: keypoint repeatability (share of fp32 keypoints with a keypoint
within 1 px / at the same pixel) and the mean cosine between descriptors at the same pixel.

Images: real 640x480 frames from ../shared/data/tum/rgbd_dataset_freiburg1_xyz/rgb when
present (or --image), else a synthetic one. Weights: random (He-initialised, so the heatmap
has peaks like a trained model's) unless --weights names a file or registered weights;
timings do not depend on the weights, the fp32-vs-fast-path agreement somewhat does.

    python tools/bench_superpoint.py --out runs/bench_superpoint.json
    python tools/bench_superpoint.py --device cuda --precisions fp32,fp16 --batch 32

Prints a table and writes JSON (--out). Timings from a shared machine are noisy: the load
average before and after is recorded in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from slam.device import autocast, resolve_device
from slam.features.superpoint import (
    LAYERS,
    SuperPoint,
    SuperPointConfig,
    keypoint_repeatability,
    synthetic_image,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_rgb_dir() -> Path:
    env = os.environ.get("SLAM_SHARED_DATA")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return root / "tum" / "rgbd_dataset_freiburg1_xyz" / "rgb"


def load_images(image: Optional[str], n: int) -> tuple[list[np.ndarray], str]:
    """n BGR 640x480 frames: --image, else the first n frames of fr1_xyz, else synthetic."""
    if image:
        img = cv2.imread(image, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"error: cannot read image {image}")
        imgs, source = [img], image
    else:
        rgb = shared_rgb_dir()
        files = sorted(p for p in rgb.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if rgb.is_dir() else []
        imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files[: max(n, 1)]]
        imgs = [i for i in imgs if i is not None]
        source = f"{rgb} ({len(imgs)} frames)" if imgs else ""
        if not imgs:
            imgs = [cv2.cvtColor(synthetic_image(480, 640, seed=s), cv2.COLOR_GRAY2BGR) for s in range(max(n, 1))]
            source = "synthetic (shared data not found)"
    imgs = [cv2.resize(i, (640, 480), interpolation=cv2.INTER_AREA) if i.shape[:2] != (480, 640) else i for i in imgs]
    while len(imgs) < n:
        imgs = imgs + imgs
    return imgs[:n], source


def random_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """He-normal random weights in the official layout; detector logits scaled so the heatmap
    has distinct peaks (a near-flat heatmap would make precision comparisons meaningless)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (cin, cout, k) in LAYERS.items():
        std = (2.0 / (cin * k * k)) ** 0.5 * (4.0 if name == "convPb" else 1.0)
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * std
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01
    return sd


def stats_ms(times_s: list[float], per: int = 1) -> dict[str, float]:
    a = np.asarray(times_s) * 1e3 / per
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "min": float(a.min()), "n": int(a.size)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, n: int, warmup: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of n calls after warm-up. On a shared machine the
    CPU time of a 1-thread run (--threads 1) is the steadier figure: it is about what the wall
    time would be on an idle core."""
    for _ in range(warmup):
        fn()
    sync(device)
    wall, cpu = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def agreement(ref_feats, test_feats) -> dict[str, float]:
    reps, exact, cos = [], [], []
    for a, b in zip(ref_feats, test_feats):
        a, b = a.to("cpu"), b.to("cpu")
        reps.append(keypoint_repeatability(a.keypoints, b.keypoints, 1.0))
        exact.append(keypoint_repeatability(a.keypoints, b.keypoints, 0.0))
        if len(a) and len(b):
            d, j = torch.cdist(a.keypoints, b.keypoints).min(dim=1)
            same = d == 0
            if bool(same.any()):
                cos.append(float((a.descriptors[same] * b.descriptors[j[same]]).sum(1).mean()))
    return {"repeatability_1px": float(np.mean(reps)), "repeatability_exact": float(np.mean(exact)),
            "descriptor_cosine": float(np.mean(cos)) if cos else float("nan")}


def loadavg() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--precisions", default="", help="comma list of fp32,bf16,fp16 (default: fp32,bf16 on CPU; "
                                                        "fp32,fp16,bf16 on CUDA)")
    ap.add_argument("--frames", type=int, default=20, help="timed single-image calls per precision (>= 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=0, help="batch size for the batched timing (default 4 CPU, 32 CUDA)")
    ap.add_argument("--batch-calls", type=int, default=0, help="timed batched calls (default: enough for >= 20 frames)")
    ap.add_argument("--max-keypoints", type=int, default=1024)
    ap.add_argument("--weights", default="", help="weights path or name (default: random weights)")
    ap.add_argument("--image", default="", help="use this image (resized to 640x480) instead of fr1_xyz")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd network")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = [p for p in args.precisions.split(",") if p] or (
        ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    batch = args.batch or (32 if device.type == "cuda" else 4)
    batch_calls = args.batch_calls or max(3, -(-20 // batch))
    images, source = load_images(args.image, max(batch, 8))
    state_dict = None if args.weights else random_weights(0)
    load_before = loadavg()

    rows = []
    feats_by_prec: dict[str, list] = {}
    variants = [(p, False) for p in precisions] + ([(p, True) for p in precisions] if args.compile else [])
    for prec, comp in variants:
        cfg = SuperPointConfig(weights=args.weights or "superpoint_ours", max_keypoints=args.max_keypoints,
                               precision=prec, compile=comp)
        sp = SuperPoint(cfg, device, state_dict=state_dict)
        label = prec + ("+compile" if comp else "")
        print(f"[{label}] timing on {device} ...", file=sys.stderr, flush=True)
        k = [0]

        def single(sp=sp):
            img = images[k[0] % len(images)]
            k[0] += 1
            return sp.extract(img)

        t_single, c_single = time_calls(single, args.frames, args.warmup, device)
        t_batch, c_batch = time_calls(lambda sp=sp: sp.extract_batch(images[:batch]), batch_calls, 1, device)
        # the network alone, for the share of the post-processing
        gray = torch.from_numpy(cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY)).to(device)[None, None].float() / 255
        gray = gray.contiguous(memory_format=sp.memory_format)

        def net_only(sp=sp):
            with torch.inference_mode(), sp._cudnn_flags(), autocast(sp.device, sp.precision):
                return sp._forward_net(gray)

        t_net, c_net = time_calls(net_only, max(2, args.frames // 2), min(2, args.warmup), device)
        feats = sp.extract_batch(images[:min(8, batch)])
        if not comp:
            feats_by_prec[prec] = feats
        row = {
            "precision": label, "device": str(device),
            "single_ms": stats_ms(t_single), "batched_ms_per_frame": stats_ms(t_batch, batch),
            "batch": batch, "network_ms": stats_ms(t_net),
            "single_cpu_ms": stats_ms(c_single), "batched_cpu_ms_per_frame": stats_ms(c_batch, batch),
            "network_cpu_ms": stats_ms(c_net),
            "fps_single": 1000.0 / stats_ms(t_single)["mean"],
            "fps_batched": 1000.0 / stats_ms(t_batch, batch)["mean"],
            "keypoints_mean": float(np.mean([len(f) for f in feats])),
        }
        ref = feats_by_prec.get("fp32")
        if ref is not None and label != "fp32":
            row["vs_fp32"] = agreement(ref, feats)
        rows.append(row)
        sp = None  # free the model before the next variant (closures above still name sp)

    env = {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "image_source": source, "image_size": [640, 480], "max_keypoints": args.max_keypoints,
        "weights": args.weights or "random (He init)", "loadavg_before": load_before, "loadavg_after": loadavg(),
    }
    head = (f"{'precision':<14}{'single mean':>12}{'p50':>9}{'p95':>9}{'batched/frame':>15}{'fps(batch)':>11}"
            f"{'net p50':>9}{'cpu single':>11}{'cpu net':>9}{'kpts':>7}{'rep@1px':>9}{'exact':>7}{'desc cos':>9}")
    print(f"SuperPoint end to end, 640x480, max_keypoints={args.max_keypoints}, device={device} "
          f"({env['gpu'] or platform.processor() or 'cpu'}), threads={env['cpu_threads']}, images: {source}")
    print(head)
    for r in rows:
        s, b, v = r["single_ms"], r["batched_ms_per_frame"], r.get("vs_fp32", {})
        print(f"{r['precision']:<14}{s['mean']:>12.2f}{s['p50']:>9.2f}{s['p95']:>9.2f}{b['mean']:>15.2f}"
              f"{r['fps_batched']:>11.1f}{r['network_ms']['p50']:>9.2f}{r['single_cpu_ms']['p50']:>11.2f}"
              f"{r['network_cpu_ms']['p50']:>9.2f}{r['keypoints_mean']:>7.0f}"
              + (f"{v['repeatability_1px']:>9.3f}{v['repeatability_exact']:>7.3f}{v['descriptor_cosine']:>9.4f}" if v else ""))
    print(f"(ms per frame, wall clock unless 'cpu' = process CPU time p50; batched = batch {batch}; "
          f"load average before/after: {load_before} / {env['loadavg_after']})")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"env": env, "results": rows}, indent=2))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
