"""Benchmark LightGlue: ms per pair at 512 / 1024 / 2048 keypoints, full vs adaptive.

"full" runs all 9 layers on every point (depth_confidence = width_confidence = -1);
"adaptive" uses the defaults (early exit at 0.95, pruning at 0.99). Weights: the released
aliked_lightglue (or disk_lightglue with --features disk), which must be installed
(``python -m slam weights install aliked_lightglue``).

Pairs: frame-to-keyframe pairs of TUM fr1_xyz (frame k against frame k + --gap, spread over
the sequence) with features from the project's ALIKED extractor (pure top-k, so every image has
exactly the requested number of keypoints). Without the data or the extractor it falls back
to a synthetic set: random 128-D descriptors with keypoints warped by a mild homography plus
30% outliers -- the JSON field "pairs_source" says which was used.

For each size and mode it times ``LightGlue.match`` (one pair per call) and
``LightGlue.match_many`` (the frame against --batch keyframes in one call), median over
pairs x repeats after a warm-up, and reports the mean exit layer, the share of pruned points,
the number of matches and how many adaptive matches agree with the full model's.

    python tools/bench_lightglue.py --out runs/bench_lightglue.json
    python tools/bench_lightglue.py --sizes 512 1024 --pairs 4 --threads 1

CPU timings on a machine shared with other jobs are noisy; the load average before and after
is recorded in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from slam.device import resolve_device
from slam.matching.lightglue import LightGlue, LightGlueConfig
from slam.types import Features

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = {"full": dict(depth_confidence=-1.0, width_confidence=-1.0), "adaptive": {}}


def fr1_xyz_dir() -> Path:
    env = os.environ.get("SLAM_SHARED_DATA")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return root / "tum" / "rgbd_dataset_freiburg1_xyz"


def fr1_pairs(n_pairs: int, gap: int) -> Optional[list[tuple[Path, Path]]]:
    """n_pairs (frame k, frame k+gap) image paths spread over fr1_xyz, or None without the data."""
    seq = fr1_xyz_dir()
    rgb_txt = seq / "rgb.txt"
    if not rgb_txt.is_file():
        return None
    names = [ln.split()[1] for ln in rgb_txt.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    starts = np.linspace(0, len(names) - 1 - gap, n_pairs).astype(int)
    return [(seq / names[s], seq / names[s + gap]) for s in starts]


def aliked_features(pairs: list[tuple[Path, Path]], n_kpts: int, features: str, device: torch.device):
    """Features for each image pair from the project's extractor, exactly n_kpts per image."""
    if features == "aliked":
        from slam.features.aliked import ALIKED, ALIKEDConfig
        ext = ALIKED(ALIKEDConfig(max_keypoints=n_kpts, detection_threshold=-1), device)
    else:
        from slam.features.disk import DISK, DISKConfig
        ext = DISK(DISKConfig(max_keypoints=n_kpts), device)
    out = []
    for p0, p1 in pairs:
        imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in (p0, p1)]
        if any(im is None for im in imgs):
            raise SystemExit(f"error: cannot read {p0} or {p1}")
        out.append(tuple(ext.extract_batch(imgs)))
    return out


def synthetic_features(n_pairs: int, n_kpts: int, seed: int = 0):
    """Homography-warped synthetic pairs: 70% shared points (descriptor noise 0.05), 30% outliers."""
    rng = np.random.default_rng(seed)
    out = []
    w, h = 640, 480
    for _ in range(n_pairs):
        k0 = rng.uniform([0, 0], [w, h], size=(n_kpts, 2))
        hmat = np.array([[1.0, 0.02, 8.0], [-0.02, 1.0, -5.0], [1e-5, 0.0, 1.0]]) + rng.normal(0, 1e-3, (3, 3)) * [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
        warped = cv2.perspectiveTransform(k0[None], hmat)[0] + rng.normal(0, 0.5, (n_kpts, 2))
        d0 = F.normalize(torch.from_numpy(rng.normal(size=(n_kpts, 128))).float(), dim=-1)
        d1 = F.normalize(d0 + 0.05 * torch.from_numpy(rng.normal(size=(n_kpts, 128))).float(), dim=-1)
        outl = rng.random(n_kpts) < 0.3
        warped[outl] = rng.uniform([0, 0], [w, h], size=(outl.sum(), 2))
        d1[torch.from_numpy(outl)] = F.normalize(torch.from_numpy(rng.normal(size=(outl.sum(), 128))).float(), dim=-1)
        perm = rng.permutation(n_kpts)
        f0 = Features(torch.from_numpy(k0).float(), torch.ones(n_kpts), d0, (w, h))
        f1 = Features(torch.from_numpy(warped[perm]).float(), torch.ones(n_kpts), d1[perm], (w, h))
        out.append((f0, f1))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_size(feats, features: str, device: torch.device, repeats: int, batch: int) -> dict:
    res: dict = {}
    matches = {}
    for mode, kw in MODES.items():
        lg = LightGlue(LightGlueConfig(features=features, **kw), device)
        lg.match(*feats[0])  # warm-up
        times, stops, pruned, counts, ms = [], [], [], [], []
        for f0, f1 in feats:
            for _ in range(repeats):
                _sync(device)
                t = time.perf_counter()
                m = lg.match(f0, f1)
                _sync(device)
                times.append(1e3 * (time.perf_counter() - t))
            ms.append(m.matches0)
            stops.append(lg.last_info["stop"][0])
            pruned.append((lg.last_info["pruned0"][0] + lg.last_info["pruned1"][0]) / (len(f0) + len(f1)))
            counts.append(len(m))
        matches[mode] = ms
        row = {
            "ms_per_pair": statistics.median(times),
            "ms_per_pair_min": min(times),
            "mean_stop_layer": float(np.mean(stops)),
            "pruned_share": float(np.mean(pruned)),
            "mean_matches": float(np.mean(counts)),
        }
        if batch > 1 and len(feats) >= 1:
            query = feats[0][0]
            refs = [feats[i % len(feats)][1] for i in range(batch)]
            lg.match_many(query, refs)
            bt = []
            for _ in range(repeats):
                _sync(device)
                t = time.perf_counter()
                lg.match_many(query, refs)
                _sync(device)
                bt.append(1e3 * (time.perf_counter() - t) / batch)
            row["batched_ms_per_pair"] = statistics.median(bt)
            row["batched_stops"] = lg.last_info["stop"]
        res[mode] = row
    agree = []
    for a, b in zip(matches["full"], matches["adaptive"]):
        either = (a >= 0) | (b >= 0)
        agree.append(float((a[either] == b[either]).mean()) if either.any() else 1.0)
    res["adaptive_agreement"] = float(np.mean(agree))
    res["speedup"] = res["full"]["ms_per_pair"] / res["adaptive"]["ms_per_pair"]
    if "batched_ms_per_pair" in res["full"]:
        res["batched_speedup"] = res["full"]["batched_ms_per_pair"] / res["adaptive"]["batched_ms_per_pair"]
    return res


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="keypoints per image")
    ap.add_argument("--pairs", type=int, default=6, help="image pairs per size")
    ap.add_argument("--gap", type=int, default=5, help="frame gap between a frame and its keyframe")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per pair")
    ap.add_argument("--batch", type=int, default=4, help="keyframes per match_many call (1 = skip)")
    ap.add_argument("--features", choices=("aliked", "disk"), default="aliked")
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic pairs even if fr1_xyz is present")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--out", default="", help="write results as JSON here")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    pairs = None if args.synthetic else fr1_pairs(args.pairs, args.gap)
    results = {}
    source = ""
    for n in args.sizes:
        feats = None
        if pairs is not None:
            try:
                feats = aliked_features(pairs, n, args.features, device)
                source = f"TUM fr1_xyz frames k vs k+{args.gap}, {args.features} features (top-k)"
            except ImportError as exc:
                print(f"note: {args.features} extractor unavailable ({exc}); using synthetic pairs", file=sys.stderr)
                pairs = None
        if feats is None:
            feats = synthetic_features(args.pairs, n)
            source = "synthetic: random 128-D descriptors, homography-warped keypoints, 30% outliers"
        kp = float(np.mean([len(f0) + len(f1) for f0, f1 in feats]) / 2)
        results[str(n)] = {"mean_keypoints": kp, **bench_size(feats, args.features, device, args.repeats, args.batch)}
        r = results[str(n)]
        print(f"{n:>5} kp  full {r['full']['ms_per_pair']:8.1f} ms  adaptive {r['adaptive']['ms_per_pair']:8.1f} ms  "
              f"x{r['speedup']:.2f}  stop {r['adaptive']['mean_stop_layer']:.1f}  pruned "
              f"{100 * r['adaptive']['pruned_share']:.0f}%  agree {100 * r['adaptive_agreement']:.0f}%", flush=True)
    load_after = os.getloadavg()

    print()
    print(f"LightGlue ({args.features}_lightglue) on {device}, {torch.get_num_threads()} threads; pairs: {source}")
    hdr = f"{'kp':>6} {'full ms':>9} {'adapt ms':>9} {'speedup':>8} {'stop':>5} {'pruned':>7} {'matches f/a':>12} {'agree':>6}"
    if args.batch > 1:
        hdr += f" {'batch full':>11} {'batch adapt':>12}"
    print(hdr)
    for n, r in results.items():
        line = (f"{n:>6} {r['full']['ms_per_pair']:9.1f} {r['adaptive']['ms_per_pair']:9.1f} {r['speedup']:7.2f}x "
                f"{r['adaptive']['mean_stop_layer']:5.1f} {100 * r['adaptive']['pruned_share']:6.0f}% "
                f"{r['full']['mean_matches']:6.0f}/{r['adaptive']['mean_matches']:<5.0f} {100 * r['adaptive_agreement']:5.0f}%")
        if args.batch > 1:
            line += f" {r['full']['batched_ms_per_pair']:11.1f} {r['adaptive']['batched_ms_per_pair']:12.1f}"
        print(line)
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
          f"({os.cpu_count()} CPUs; timings on a shared machine are noisy)")

    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "command": "python tools/bench_lightglue.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "weights": f"{args.features}_lightglue",
            "pairs_source": source,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "results": results,
        }, indent=2))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
