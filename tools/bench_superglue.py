"""Benchmark the SuperGlue matcher: milliseconds per image pair and for one frame against K
keyframes in one batched pass, with random weights in the official configuration (9 self + 9 cross
layers, 256 dims, 4 heads).

    python tools/bench_superglue.py --out runs/bench_superglue.json   # (PYTHONPATH=. without pip install -e .)
    python tools/bench_superglue.py --threads 1 --precision auto bf16 --reference
    python tools/bench_superglue.py --device cuda --precision fp16 --sizes 512 1024 2048
    python tools/bench_superglue.py --reference      # also time a plain re-statement of the
                                                     # published model (einsum, logsumexp loop)

Timings go through SuperGlue.match / match_many, so they include moving the features to the
device, padding and copying the matches back. Wall-clock medians over --repeat runs after
--warmup runs; the CPU time of this process is reported too (on a shared machine the wall clock
is inflated by other processes; the CPU time much less so).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from slam.device import resolve_device
from slam.matching.superglue import SuperGlue, SuperGlueConfig, SuperGlueNet
from slam.types import Features

OFFICIAL = dict(descriptor_dim=256, n_layers=9, num_heads=4, keypoint_encoder=[32, 64, 128, 256])
W, H = 640, 480


def synthetic_features(n: int, seed: int, device: torch.device, dim: int = 256) -> Features:
    """n keypoints uniformly in a 640x480 image with random unit descriptors."""
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(n, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0])
    desc = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    return Features(kp, torch.rand(n, generator=g), desc, (W, H)).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, warmup: int, repeat: int) -> dict:
    for _ in range(warmup):
        fn()
    _sync(device)
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {"ms_median": statistics.median(wall), "ms_min": min(wall), "cpu_ms_median": statistics.median(cpu)}


def reference_style_scores(sd: dict, data: dict, iters: int, num_heads: int = 4) -> torch.Tensor:
    """The published model's maths in its own (B, D, N) layout: einsum attention with interleaved
    heads, unfused BatchNorm, logsumexp Sinkhorn loop (a baseline for the speed-up on the same
    machine at the same time)."""

    def conv(x, p):
        return torch.einsum("oi,bin->bon", sd[f"{p}.weight"][..., 0], x) + sd[f"{p}.bias"][None, :, None]

    def bn(x, p):
        return ((x - sd[f"{p}.running_mean"][None, :, None]) / torch.sqrt(sd[f"{p}.running_var"][None, :, None] + 1e-5)
                * sd[f"{p}.weight"][None, :, None] + sd[f"{p}.bias"][None, :, None])

    def mlp(x, p, n_conv):
        for i in range(n_conv):
            x = conv(x, f"{p}.{3 * i}")
            if i < n_conv - 1:
                x = torch.relu(bn(x, f"{p}.{3 * i + 1}"))
        return x

    def attention(x, src, p):
        b, d, _ = x.shape
        hd = d // num_heads
        q = conv(x, f"{p}.proj.0").view(b, hd, num_heads, -1)
        k = conv(src, f"{p}.proj.1").view(b, hd, num_heads, -1)
        v = conv(src, f"{p}.proj.2").view(b, hd, num_heads, -1)
        prob = (torch.einsum("bdhn,bdhm->bhnm", q, k) / hd ** 0.5).softmax(dim=-1)
        return conv(torch.einsum("bhnm,bdhm->bdhn", prob, v).reshape(b, d, -1), f"{p}.merge")

    def encode(k, s, d, size):
        kn = (k - size[:, None, :] / 2) / (size.max(dim=1).values[:, None, None] * 0.7)
        return d.transpose(1, 2) + mlp(torch.cat([kn.transpose(1, 2), s[:, None]], 1), "kenc.encoder", 5)

    d0 = encode(data["kpts0"], data["scores0"], data["desc0"], data["image_size0"])
    d1 = encode(data["kpts1"], data["scores1"], data["desc1"], data["image_size1"])
    n_layers = len({k.split(".")[2] for k in sd if k.startswith("gnn.layers.")})
    for layer in range(n_layers):
        p = f"gnn.layers.{layer}"
        s0, s1 = (d1, d0) if layer % 2 else (d0, d1)
        m0 = mlp(torch.cat([d0, attention(d0, s0, f"{p}.attn")], 1), f"{p}.mlp", 2)
        m1 = mlp(torch.cat([d1, attention(d1, s1, f"{p}.attn")], 1), f"{p}.mlp", 2)
        d0, d1 = d0 + m0, d1 + m1
    f0, f1 = conv(d0, "final_proj"), conv(d1, "final_proj")
    scores = torch.einsum("bdn,bdm->bnm", f0, f1) / f0.shape[1] ** 0.5
    b, n, m = scores.shape
    alpha = sd["bin_score"]
    z = torch.cat([torch.cat([scores, alpha.expand(b, n, 1)], 2), alpha.expand(b, 1, m + 1)], 1)
    norm = -torch.log(torch.tensor(float(n + m)))
    log_mu = torch.cat([norm.expand(n), (torch.log(torch.tensor(float(m))) + norm)[None]])[None]
    log_nu = torch.cat([norm.expand(m), (torch.log(torch.tensor(float(n))) + norm)[None]])[None]
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(z + u[:, :, None], dim=1)
    return z + u[:, :, None] + v[:, None, :] - norm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--precision", nargs="+", default=["auto"], help="one or more of auto fp32 fp16 bf16")
    ap.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048], help="keypoints per image")
    ap.add_argument("--iters", nargs="+", type=int, default=[20, 100], help="Sinkhorn iterations")
    ap.add_argument("--keyframes", type=int, default=4, help="K for one frame against K keyframes in one pass (0: none)")
    ap.add_argument("--kf-sizes", nargs="+", type=int, default=[1024], help="keypoint counts for the 1-vs-K runs")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--reference", action="store_true", help="also time the plain re-statement of the published model (1024 kp, fp32)")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    state_dict = SuperGlueNet(**OFFICIAL).state_dict()  # random weights, official configuration
    load_before = os.getloadavg()
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "weights": "random (official configuration: 9 self + 9 cross layers, 256 dims, 4 heads)",
        "loadavg_before": load_before,
    }
    rows = []
    print(f"SuperGlue benchmark on {device} ({info['device_name']}), torch {torch.__version__}, "
          f"{info['threads']} threads, load average {load_before[0]:.1f}")
    header = f"{'precision':>9} {'mode':>10} {'kp':>5} {'iters':>5} {'ms median':>10} {'ms min':>8} {'cpu ms':>8} {'ms/pair':>8}"
    print(header)
    print("-" * len(header))

    def report(row):
        rows.append(row)
        print(f"{row['precision']:>9} {row['mode']:>10} {row['keypoints']:>5} {row['sinkhorn_iterations']:>5} "
              f"{row['ms_median']:>10.1f} {row['ms_min']:>8.1f} {row['cpu_ms_median']:>8.1f} {row['ms_per_pair']:>8.1f}", flush=True)

    for precision in args.precision:
        for iters in args.iters:
            cfg = SuperGlueConfig(sinkhorn_iterations=iters, precision=precision)
            sg = SuperGlue(cfg, device, state_dict=state_dict)
            dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[sg.precision]
            for n in args.sizes:
                f0, f1 = synthetic_features(n, 1, device), synthetic_features(n, 2, device)
                with torch.inference_mode():
                    t = time_call(lambda: sg.match(f0, f1), device, args.warmup, args.repeat)
                report({"precision": dtype, "mode": "pair", "keypoints": n, "sinkhorn_iterations": iters, **t,
                        "pairs": 1, "ms_per_pair": t["ms_median"]})
            for n in (args.kf_sizes if args.keyframes > 0 else []):
                query = synthetic_features(n, 1, device)
                refs = [synthetic_features(n - 37 * i, 10 + i, device) for i in range(args.keyframes)]  # padded batch
                with torch.inference_mode():
                    t = time_call(lambda: sg.match_many(query, refs), device, args.warmup, args.repeat)
                report({"precision": dtype, "mode": f"1-vs-{args.keyframes}", "keypoints": n, "sinkhorn_iterations": iters,
                        **t, "pairs": args.keyframes, "ms_per_pair": t["ms_median"] / args.keyframes})
    if args.reference:
        sd = {k: v.to(device) for k, v in state_dict.items()}
        f0, f1 = synthetic_features(1024, 1, device), synthetic_features(1024, 2, device)
        size = torch.tensor([[W, H]], dtype=torch.float32, device=device)
        data = {"kpts0": f0.keypoints[None], "scores0": f0.scores[None], "desc0": f0.descriptors[None], "image_size0": size,
                "kpts1": f1.keypoints[None], "scores1": f1.scores[None], "desc1": f1.descriptors[None], "image_size1": size}
        for iters in args.iters:
            with torch.no_grad():
                t = time_call(lambda: reference_style_scores(sd, data, iters), device, args.warmup, max(1, args.repeat // 2))
            report({"precision": "float32", "mode": "reference", "keypoints": 1024, "sinkhorn_iterations": iters, **t,
                    "pairs": 1, "ms_per_pair": t["ms_median"]})
    info["loadavg_after"] = os.getloadavg()
    print(f"load average after: {info['loadavg_after'][0]:.1f} (timings on a shared machine are inflated)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"info": info, "results": rows}, indent=2))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
