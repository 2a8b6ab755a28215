"""Compare the two bundle-adjustment solvers on the problems of a real run.

Runs ``python -m slam run ARGS`` (add ``--sync``) with ``mapping.ba_solver=g2o``, keeps every
local bundle-adjustment problem the mapper solved (not the final global one), then solves each again with g2o
(:func:`slam.optim.ba.bundle_adjust`) and with the numpy Schur solver
(:func:`slam.optim.ba_schur.bundle_adjust_schur`), alternating, and reports the largest
difference between their results and the CPU time of each (process time, one BLAS thread).
With ``--global`` it does the same for the global BAs instead (after a loop and at the end of the
run; ``mapping.global_ba_solver=g2o``), where the numpy solver forms large reduced systems in
chunks of points.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/ba_schur_check.py [--global] --json out.json \\
        run --seq tum/fr1_xyz --data-root ../shared/data/tum --max-frames 200 --sync
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> int:
    out_json, global_ba = None, False
    while argv and argv[0] in ("--json", "--global"):
        if argv[0] == "--global":
            global_ba, argv = True, argv[1:]
        elif len(argv) >= 2:
            out_json, argv = argv[1], argv[2:]
        else:
            break
    import slam.mapping.local_mapper as local_mapper
    from slam.cli import main as slam_main
    from slam.optim.ba import bundle_adjust
    from slam.optim.ba_schur import bundle_adjust_schur

    problems = []

    def keep(problem, *args, **kwargs):
        if "stop" in kwargs:  # the local BA (the mapper's global BA at the end of a run passes no stop)
            problems.append((problem, kwargs.get("iterations", args[0] if args else 10)))
        return bundle_adjust(problem, *args, **kwargs)

    solve_global = local_mapper.LocalMapper.solve_global

    def keep_global(self, problem, iterations, **kwargs):  # stop, pause: as the loop closer passes them
        problems.append((problem, iterations))
        return solve_global(self, problem, iterations, **kwargs)

    if global_ba:
        local_mapper.LocalMapper.solve_global = keep_global
        rc = slam_main(argv + ["mapping.global_ba_solver=g2o"])
    else:
        local_mapper.bundle_adjust = keep
        rc = slam_main(argv + ["mapping.ba_solver=g2o"])
    rows = []
    for problem, iterations in problems:
        t0 = time.process_time()
        a = bundle_adjust(problem, iterations=iterations)
        t1 = time.process_time()
        b = bundle_adjust_schur(problem, iterations=iterations, layout="chunked" if global_ba else "auto")  # as the system runs it
        t2 = time.process_time()
        free = ~np.asarray(problem.fixed, dtype=bool)
        rows.append({
            "observations": int(problem.obs_kf.size), "keyframes": int(len(problem.kf_ids)), "free": int(free.sum()),
            "g2o_ms": (t1 - t0) * 1e3, "schur_ms": (t2 - t1) * 1e3,
            "max_pose_diff_m": float(np.abs(a.cam_from_world[free, :3, 3] - b.cam_from_world[free, :3, 3]).max(initial=0.0)),
            "max_rot_diff": float(np.abs(a.cam_from_world[free, :3, :3] - b.cam_from_world[free, :3, :3]).max(initial=0.0)),
            "max_point_diff_m": float(np.abs(a.points_world - b.points_world).max(initial=0.0)),
            "outliers_differ": int(np.count_nonzero(a.obs_outlier != b.obs_outlier)),
            "chi2_after_g2o": a.chi2_after, "chi2_after_schur": b.chi2_after,
        })
    g2o_ms = np.array([r["g2o_ms"] for r in rows])
    schur_ms = np.array([r["schur_ms"] for r in rows])
    summary = {
        "command": " ".join(["python -m slam"] + argv), "global": global_ba, "problems": len(rows),
        "median_observations": float(np.median([r["observations"] for r in rows])) if rows else 0.0,
        "g2o_cpu_ms_median": float(np.median(g2o_ms)) if rows else 0.0,
        "schur_cpu_ms_median": float(np.median(schur_ms)) if rows else 0.0,
        "cpu_ratio_of_sums": float(g2o_ms.sum() / schur_ms.sum()) if rows else 0.0,
        "max_pose_diff_m": max((r["max_pose_diff_m"] for r in rows), default=0.0),
        "max_point_diff_m": max((r["max_point_diff_m"] for r in rows), default=0.0),
        "outliers_differ": sum(r["outliers_differ"] for r in rows),
    }
    print(json.dumps(summary, indent=1))
    if out_json:
        with open(out_json, "w") as fh:
            json.dump({"summary": summary, "problems": rows}, fh, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
