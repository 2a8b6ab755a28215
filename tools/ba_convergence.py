"""How far a run's local bundle adjustments stop from their optimum, per initial damping.

Runs ``python -m slam run ARGS`` (add ``--sync``), keeps every local BA problem the mapper gave
the numpy solver (:func:`slam.optim.ba_schur.bundle_adjust_schur`, with the run's iteration
count), then solves each problem again:

- with ``--reference-iterations`` (default 40) steps at g2o's initial damping: the optimum;
- with the run's own iteration count at each initial damping of ``--taus``
  (``mapping.ba_tau``: initial lambda = tau x the Hessian's largest diagonal entry).

For each tau it reports how far the free keyframes' camera centres stop from the optimum (the
largest distance per problem, in cm: median, p90, max over the problems), the final chi2 over
the optimum's (in %, over each result's own inliers), and the CPU time per problem.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/ba_convergence.py --taus 1e-5,1e-8 --json F \\
        run --seq kitti/07 --data-root ../shared/data/kitti/dataset --mode mono --sync
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def centres(cam_from_world: np.ndarray) -> np.ndarray:
    """(K, 3) camera centres (world frame, m) of cam_from_world (K, 4, 4)."""
    return np.linalg.inv(cam_from_world)[:, :3, 3]


def main(argv: list[str]) -> int:
    if "run" not in argv:
        print("usage: ba_convergence.py [--taus T1,T2] [--reference-iterations N] [--json F] run SLAM_RUN_ARGS",
              file=sys.stderr)
        return 2
    cut = argv.index("run")
    ap = argparse.ArgumentParser(prog="ba_convergence.py")
    ap.add_argument("--taus", default="1e-5,1e-8", help="initial dampings to compare, comma-separated")
    ap.add_argument("--reference-iterations", type=int, default=40, help="steps per stage of the optimum")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv[:cut])
    taus = [float(t) for t in a.taus.split(",")]

    import slam.mapping.local_mapper as local_mapper
    from slam.cli import main as slam_main
    from slam.optim.ba_schur import TAU, bundle_adjust_schur

    problems = []

    def keep(problem, *args, **kwargs):
        problems.append((problem, int(kwargs.get("iterations", args[0] if args else 10))))
        return bundle_adjust_schur(problem, *args, **kwargs)

    local_mapper.bundle_adjust_schur = keep
    rc = slam_main(argv[cut:])
    rows = []
    for problem, iterations in problems:
        free = ~np.asarray(problem.fixed, dtype=bool)
        if not free.any():
            continue
        opt = bundle_adjust_schur(problem, iterations=a.reference_iterations, tau=TAU)
        row = {"keyframes": int(len(problem.kf_ids)), "free": int(free.sum()),
               "observations": int(problem.obs_kf.size), "iterations": iterations, "taus": {}}
        for tau in taus:
            t0 = time.process_time()
            res = bundle_adjust_schur(problem, iterations=iterations, tau=tau)
            ms = (time.process_time() - t0) * 1e3
            row["taus"][repr(tau)] = {
                "max_centre_from_optimum_cm": float(np.abs(centres(res.cam_from_world[free]) - centres(opt.cam_from_world[free])).max() * 100),
                "chi2_over_optimum_pct": float((res.chi2_after - opt.chi2_after) / max(opt.chi2_after, 1e-300) * 100),
                "cpu_ms": ms}
        rows.append(row)
    summary = {"command": " ".join(["python -m slam"] + argv[cut:]), "problems": len(rows),
               "reference_iterations": a.reference_iterations, "taus": {}}
    for tau in taus:
        d = np.array([r["taus"][repr(tau)]["max_centre_from_optimum_cm"] for r in rows])
        c = np.array([r["taus"][repr(tau)]["chi2_over_optimum_pct"] for r in rows])
        t = np.array([r["taus"][repr(tau)]["cpu_ms"] for r in rows])
        summary["taus"][repr(tau)] = {} if not rows else {
            "centre_from_optimum_cm_median": float(np.median(d)), "p90": float(np.percentile(d, 90)), "max": float(d.max()),
            "chi2_over_optimum_pct_median": float(np.median(c)), "chi2_over_optimum_pct_max": float(c.max()),
            "cpu_ms_median": float(np.median(t))}
    print(json.dumps(summary, indent=1))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"summary": summary, "problems": rows}, fh, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
