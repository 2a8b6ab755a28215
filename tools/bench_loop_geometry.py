"""Benchmark the geometry and optimisation core of loop closing (issue 16).

1. Essential graph (``slam.optim.essential_graph.optimize_essential_graph``) on a synthetic
   drifting loop of ``--keyframes`` keyframes: spanning tree + ``--covis`` covisibility edges per
   keyframe + ``--loop-edges`` new loop edges, Sim(3) (monocular) and SE(3) (RGB-D / stereo), with
   the default solver (Gauss-Newton, stopping at convergence) and ORB-SLAM's 20 LM iterations.
   The issue's bar: <= 300 ms at 300 keyframes.
2. Sim(3) RANSAC (``solve_sim3_ransac``) + g2o refinement (``optimize_sim3``) on ``--matches``
   matched map points between two keyframes with 30 % wrong matches (scale 0.7 for Sim(3)).

    python tools/bench_loop_geometry.py --out docs/results/loop_geometry_cpu.json

Reports the median and the minimum over ``--repeat`` runs of wall-clock and process CPU time
(all threads). On a shared machine the wall-clock median includes waiting for a core; the load
average before and after is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from slam.geometry.se3 import make_se3, se3_inverse, so3_exp, transform_points
from slam.geometry.sim3 import make_sim3, project_points, sim3_decompose, sim3_inverse, solve_sim3_ransac
from slam.optim.essential_graph import optimize_essential_graph, synthetic_loop
from slam.optim.sim3 import optimize_sim3

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed(fn, repeat: int) -> tuple[dict, object]:
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ms = lambda xs: {"median_ms": 1e3 * float(np.median(xs)), "min_ms": 1e3 * float(np.min(xs))}  # noqa: E731
    return {"wall": ms(wall), "cpu": ms(cpu)}, out


def bench_essential_graph(n_kf: int, n_covis: int, n_loop: int, repeat: int) -> list[dict]:
    rows = []
    for fix_scale in (False, True):
        # the drift of the 60-keyframe test loop (1.8x scale, 18 deg yaw over the loop), spread over n_kf
        data = synthetic_loop(n_kf=n_kf, radius=5.0 * n_kf / 60.0, n_covis=n_covis, n_loop_edges=n_loop,
                              scale_drift=1.8 ** (1.0 / n_kf) - 1.0, yaw_drift_deg=18.0 / n_kf, fix_scale=fix_scale, seed=0)
        for algorithm in ("gauss_newton", "levenberg"):  # the default (stops at convergence) vs ORB-SLAM's 20 LM steps
            chunk = 1024
            def run():
                return optimize_essential_graph(data["kf_ids"], data["cam_from_world"], data["corrected_ids"],
                                                data["corrected"], data["edges"], data["loop_edges"], data["fixed_ids"],
                                                fix_scale=fix_scale, iterations=20, edge_chunk=chunk, algorithm=algorithm)
            run()  # warm-up
            t, res = _timed(run, repeat)
            truth_c = sim3_inverse(data["truth"])[:, :3, 3]
            err = lambda m: float(np.sqrt(np.mean(np.sum((sim3_inverse(m)[:, :3, 3] - truth_c) ** 2, axis=1))))  # noqa: E731
            rows.append({"graph": "SE(3)" if fix_scale else "Sim(3)", "algorithm": algorithm, "edge_chunk": chunk, "keyframes": n_kf,
                         "edges": res.n_edges, "lm_iterations": res.iterations, **t,
                         "build_ms_last": 1e3 * res.timings["build"], "optimize_ms_last": 1e3 * res.timings["optimize"],
                         "build_cpu_ms_last": 1e3 * res.timings["build_cpu"],
                         "optimize_cpu_ms_last": 1e3 * res.timings["optimize_cpu"],
                         "rms_centre_error_before_m": err(data["cam_from_world"]),
                         "rms_centre_error_after_m": err(res.cam_from_world)})
    return rows


def two_view_matches(rng, n: int, scale: float, outlier_frac: float = 0.3):
    src_from_world = make_se3(so3_exp([0.02, -0.1, 0.01]), [0.3, -0.05, 0.1])
    dst_from_world = make_se3(so3_exp([-0.03, 0.2, 0.02]), [-0.5, 0.02, -0.1])
    z = rng.uniform(2.0, 6.0, n)
    pw = np.c_[rng.uniform(-0.35, 0.35, (n, 2)) * z[:, None], z]
    ps, pd = transform_points(src_from_world, pw), transform_points(dst_from_world, pw)
    uv_src = project_points(K, ps)[0] + rng.normal(scale=0.5, size=(n, 2))
    uv_dst = project_points(K, pd)[0] + rng.normal(scale=0.5, size=(n, 2))
    p_src = ps * (1.0 + rng.normal(scale=0.005, size=(n, 1)))
    p_dst = scale * pd * (1.0 + rng.normal(scale=0.005, size=(n, 1)))
    idx = rng.choice(n, int(round(outlier_frac * n)), replace=False)
    p_dst[idx], uv_dst[idx] = p_dst[np.roll(idx, 1)], uv_dst[np.roll(idx, 1)]
    truth = make_sim3(scale, np.eye(3), np.zeros(3)) @ dst_from_world @ se3_inverse(src_from_world)
    return dict(p_src=p_src, p_dst=p_dst, uv_src=uv_src, uv_dst=uv_dst), truth


def bench_sim3(n: int, repeat: int) -> list[dict]:
    rows = []
    for fix_scale in (False, True):
        data, truth = two_view_matches(np.random.default_rng(0), n, 1.0 if fix_scale else 0.7)
        ransac = lambda: solve_sim3_ransac(**data, K_src=K, fix_scale=fix_scale, seed=0)  # noqa: E731
        ransac()
        t_r, r = _timed(ransac, repeat)
        refine = lambda: optimize_sim3(r.dst_from_src, **data, K_src=K, fix_scale=fix_scale)  # noqa: E731
        refine()
        t_o, o = _timed(refine, repeat)
        both = lambda: optimize_sim3(solve_sim3_ransac(**data, K_src=K, fix_scale=fix_scale, seed=0).dst_from_src,  # noqa: E731
                                     **data, K_src=K, fix_scale=fix_scale)
        t_b, _ = _timed(both, repeat)
        s, R, t = sim3_decompose(o.dst_from_src)
        s0, R0, t0 = sim3_decompose(truth)
        rows.append({"model": "SE(3)" if fix_scale else "Sim(3)", "matches": n, "ransac_iterations": r.iterations,
                     "ransac_inliers": r.n_inliers, "refined_inliers": o.n_inliers,
                     "ransac": t_r, "refine": t_o, "ransac_plus_refine": t_b,
                     "scale_error": abs(float(s / s0) - 1.0), "translation_error_m": float(np.linalg.norm(t - t0))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keyframes", type=int, default=300)
    ap.add_argument("--covis", type=int, default=5, help="covisibility edges per keyframe")
    ap.add_argument("--loop-edges", type=int, default=3)
    ap.add_argument("--matches", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    load_before = os.getloadavg()
    eg = bench_essential_graph(args.keyframes, args.covis, args.loop_edges, args.repeat)
    s3 = bench_sim3(args.matches, args.repeat)
    result = {"machine": f"{_cpu_name()}, {os.cpu_count()} cores", "load_before": load_before,
              "load_after": os.getloadavg(), "essential_graph": eg, "sim3": s3}
    print(f"machine: {result['machine']}, load average {load_before[0]:.1f} -> {result['load_after'][0]:.1f}")
    print("essential graph (at most 20 iterations)           edges  wall median/min ms   CPU median/min ms (build+optimize)   RMS error before -> after")
    for r in eg:
        print(f"  {r['graph']:6s} {r['keyframes']} kf, {r['algorithm']:12s} {r['lm_iterations']:2d} it  {r['edges']:6d}  "
              f"{r['wall']['median_ms']:8.1f} / {r['wall']['min_ms']:6.1f}   {r['cpu']['median_ms']:8.1f} / {r['cpu']['min_ms']:6.1f}"
              f" ({r['build_cpu_ms_last']:.0f}+{r['optimize_cpu_ms_last']:.0f})"
              f"   {r['rms_centre_error_before_m']:.2f} m -> {r['rms_centre_error_after_m']:.2f} m")
    print(f"Sim(3) solver on {args.matches} matches (30 % wrong)   wall median/min ms (RANSAC | refine | both)   CPU median ms (both)")
    for r in s3:
        print(f"  {r['model']:6s} RANSAC {r['ransac_iterations']:3d} it, {r['ransac_inliers']} -> {r['refined_inliers']} inliers   "
              f"{r['ransac']['wall']['median_ms']:.1f}/{r['ransac']['wall']['min_ms']:.1f} | "
              f"{r['refine']['wall']['median_ms']:.1f}/{r['refine']['wall']['min_ms']:.1f} | "
              f"{r['ransac_plus_refine']['wall']['median_ms']:.1f}/{r['ransac_plus_refine']['wall']['min_ms']:.1f}   "
              f"{r['ransac_plus_refine']['cpu']['median_ms']:.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
