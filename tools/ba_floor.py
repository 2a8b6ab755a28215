"""How close to the truth a run's own map could be: the floor under its keyframe error.

Runs ``python -m slam run ARGS`` (add ``--sync``), then takes the final map's global bundle-
adjustment problem (every keyframe, every point, every observation, as the map holds them) and
solves it three more ways against the ground truth:

- **as left**: the keyframes as the run left them;
- **optimum from the truth**: a global BA started from the true keyframe poses (brought into the
  map's frame by the alignment). If it lands where the run is, the back-end has found the
  optimum of its observations: loop closing and global BA cannot do better, only better
  observations can;
- **white-noise floor**: the same keyframes and points, with each observation replaced by the
  exact projection at the true pose plus Gaussian noise of the spread the real observations
  have at the truth (and the same depth / right-image coordinate model); the error left when
  the observations' errors are independent. Between this and the optimum lies what correlated
  observation errors cost (the same detector offset seen again frame after frame, wrong
  associations within the inlier test).

The residuals at the truth (observations against the points re-fitted with the true poses fixed)
are reported too: spread (also per image axis, ``std_uv_px``: motion blur along x widens u's), tail, per-point mean, and the mean horizontal residual in 8 vertical
bands of the image (``column_mean_u_px``: a horizontal zoom of the keypoints shows as a slope
from left to right, a shift as a constant; on synthetic/fast mono the default front-end's
keypoints sit 0.2 px inward at the right edge, ORB's do not: docs/benchmarks.md section 14). Keyframes are matched to the ground truth
by timestamp; monocular runs are aligned with Sim(3), others with SE(3), as ``slam eval`` does
(the ATE figures: camera centres). The truth is brought into the map's frame by an alignment whose
rotation is fitted to the keyframes' orientations (:func:`pose_alignment`).
The adjustments fix the first keyframe, and in monocular runs the second one too (at the true
pose, for the runs started from the truth).

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/ba_floor.py --groundtruth GT.txt [--json F] [--seed S [--jitter PX]] \\
        run --seq synthetic/loop --data-root DIR --mode rgbd --sync

``--seed S`` (S > 0) examines the run that ``tools/seed_spread.py`` makes with that seed: every
keypoint moved by at most ``--jitter`` px (default 0.001) from a generator seeded by (S, frame,
image); seed 0 is the unperturbed run. Monocular runs are chaotic, so the floor of one seed says
little about another's.
"""
from __future__ import annotations

import copy
import json
import os
import sys

import numpy as np

_OBS_FIELDS = ("obs_kf", "obs_pt", "obs_uv", "obs_inv_sigma2", "obs_ur")


def keyframe_ate(cam_from_world: np.ndarray, truth_world_from_cam: np.ndarray, with_scale: bool):
    """(rmse m, per-keyframe errors (K,) m, (s, R, t) with truth ~= s R c + t) of the camera centres
    of cam_from_world (K, 4, 4) against truth_world_from_cam (K, 4, 4)."""
    from slam.geometry.sim3 import umeyama_alignment

    c = np.linalg.inv(cam_from_world)[:, :3, 3]
    g = truth_world_from_cam[:, :3, 3]
    s, R, t = umeyama_alignment(c, g, with_scale=with_scale)
    e = np.linalg.norm(s * c @ R.T + t - g, axis=1)
    return float(np.sqrt(np.mean(e ** 2))), e, (s, R, t)


def pose_alignment(cam_from_world: np.ndarray, truth_world_from_cam: np.ndarray, with_scale: bool):
    """(s, R, t) with truth ~= s R map + t, the rotation fitted to the keyframes' orientations
    (the chordal mean of R_truth R_map^T) and s, t then to their centres. A fit of the centres
    alone leaves the rotation free where the centres span little against their errors: on a
    260-frame shaken monocular run (centres centimetres off over a few centimetres of travel)
    it was 4.5 deg off, so the truth brought into the map's frame was not the truth.
    cam_from_world (K, 4, 4), truth_world_from_cam (K, 4, 4)."""
    from slam.geometry.se3 import project_to_so3

    wfc = np.linalg.inv(cam_from_world)
    R = project_to_so3(np.einsum("kij,klj->il", truth_world_from_cam[:, :3, :3], wfc[:, :3, :3]))  # of sum R_truth R_map^T
    c, g = wfc[:, :3, 3], truth_world_from_cam[:, :3, 3]
    cc, gc = c - c.mean(0), g - g.mean(0)
    s = float(np.sum(gc * (cc @ R.T)) / max(np.sum(cc * cc), 1e-300)) if with_scale else 1.0
    return s, R, g.mean(0) - s * R @ c.mean(0)


def truth_in_map_frame(truth_world_from_cam: np.ndarray, align) -> np.ndarray:
    """(K, 4, 4) cam_from_world of the true poses in the map's frame, given the alignment
    (s, R, t) with truth_point ~= s R map_point + t (the map's scale kept: centres divided by s)."""
    s, R, t = align
    out = np.tile(np.eye(4), (len(truth_world_from_cam), 1, 1))
    for i, wc in enumerate(truth_world_from_cam):
        R_map = R.T @ wc[:3, :3]
        c_map = R.T @ (wc[:3, 3] - t) / s
        out[i, :3, :3] = R_map.T
        out[i, :3, 3] = -R_map.T @ c_map
    return out


def _project(prob, cam_from_world: np.ndarray, points_world: np.ndarray):
    """Pinhole projection of every observation's point: (u, v, z) arrays (M,)."""
    ip = np.searchsorted(prob.point_ids, prob.obs_pt)
    ik = np.searchsorted(prob.kf_ids, prob.obs_kf)
    T = cam_from_world[ik]
    pc = np.einsum("nij,nj->ni", T[:, :3, :3], points_world[ip]) + T[:, :3, 3]
    K = prob.K
    return K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2], K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2], pc[:, 2]


def _subset(prob, keep: np.ndarray):
    out = copy.deepcopy(prob)
    for f in _OBS_FIELDS:
        setattr(out, f, getattr(out, f)[keep])
    return out


def floor(prob, truth_world_from_cam: np.ndarray, with_scale: bool, iterations: int = 50, seed: int = 0) -> dict:
    """The figures of the module docstring for a BA problem (slam.optim.ba.BAProblem) whose keyframes have the true poses truth_world_from_cam (K, 4, 4).
    Errors in the truth's units (metres), residuals in pixels."""
    from slam.optim.ba import bundle_adjust

    prob = copy.deepcopy(prob)
    prob.fixed[:] = False
    # the gauge: the first keyframe; monocular maps (with_scale) also the second, or the scale
    # is a free direction and the adjustment can shrink the map to nothing
    prob.fixed[: 2 if with_scale else 1] = True
    ate_left = keyframe_ate(prob.cam_from_world, truth_world_from_cam, with_scale)[0]
    truth_map = truth_in_map_frame(truth_world_from_cam, pose_alignment(prob.cam_from_world, truth_world_from_cam, with_scale))
    from_truth = copy.deepcopy(prob)
    from_truth.cam_from_world = truth_map.copy()
    res = bundle_adjust(from_truth, iterations=iterations)
    ate_opt, err_opt, _ = keyframe_ate(res.cam_from_world, truth_world_from_cam, with_scale)
    # residuals at the truth: the points re-fitted with every pose fixed at the truth
    at_truth = copy.deepcopy(from_truth)
    at_truth.fixed[:] = True
    fit = bundle_adjust(at_truth, iterations=20)
    u, v, z = _project(at_truth, truth_map, fit.points_world)
    good = ~fit.obs_outlier & (z > 0)
    r = np.c_[prob.obs_uv[:, 0] - u, prob.obs_uv[:, 1] - v][good]
    rn = np.linalg.norm(r, axis=1)
    pt = prob.obs_pt[good]
    _, inv = np.unique(pt, return_inverse=True)
    n = np.bincount(inv)
    mean_u, mean_v = np.bincount(inv, r[:, 0]) / n, np.bincount(inv, r[:, 1]) / n
    sigma = float(r.std()) if len(r) else 0.0
    # a bias that depends on where the keypoint lies in the image (a detector's, or the camera
    # model's): the mean horizontal residual in 8 vertical bands across the observations' u range
    u_obs = prob.obs_uv[good, 0]
    column_u = []
    if len(r):
        edges = np.linspace(u_obs.min(), u_obs.max(), 9)
        band = np.clip(np.searchsorted(edges, u_obs, side="right") - 1, 0, 7)
        column_u = [round(float(r[band == b, 0].mean()), 3) if np.count_nonzero(band == b) >= 10 else None
                    for b in range(8)]
    # white-noise floor: exact projections plus independent noise of the same spread
    rng = np.random.default_rng(seed)
    white = _subset(from_truth, good)
    white.points_world = fit.points_world.copy()
    uu = u[good] + rng.normal(0.0, sigma, good.sum())
    vv = v[good] + rng.normal(0.0, sigma, good.sum())
    white.obs_uv = np.c_[uu, vv]
    white.obs_ur = np.where(np.isfinite(prob.obs_ur[good]), uu - prob.bf / z[good], np.nan)
    res_w = bundle_adjust(white, iterations=iterations)
    ate_white = keyframe_ate(res_w.cam_from_world, truth_world_from_cam, with_scale)[0]
    return {
        "keyframes": int(len(prob.kf_ids)), "fixed_keyframes": int(prob.fixed.sum()), "points": int(len(prob.point_ids)), "observations": int(prob.obs_kf.size),
        "ate_as_left_m": ate_left,
        "ate_optimum_from_truth_m": ate_opt,
        "ate_white_noise_floor_m": ate_white,
        "chi2_optimum_from_truth": float(res.chi2_after),
        "worst_keyframes_at_optimum": [[int(k), float(e)] for k, e in
                                       sorted(zip(prob.kf_ids.tolist(), err_opt), key=lambda x: -x[1])[:5]],
        "residuals_at_truth": {
            "observations": int(good.sum()), "mean_px": r.mean(0).round(4).tolist() if len(r) else [0.0, 0.0],
            "std_px": sigma, "std_uv_px": r.std(0).round(4).tolist() if len(r) else [0.0, 0.0], "median_px": float(np.median(rn)) if len(rn) else 0.0,
            "p99_px": float(np.percentile(rn, 99)) if len(rn) else 0.0,
            "share_over_1_5px": float((rn > 1.5).mean()) if len(rn) else 0.0,
            "per_point_mean_rms_px": float(np.sqrt(np.mean(mean_u[inv] ** 2 + mean_v[inv] ** 2))) if len(rn) else 0.0,
            "column_mean_u_px": column_u,
        },
    }


def main(argv: list[str]) -> int:
    out_json, gt_path, seed, jitter = None, None, 0, 1e-3
    while argv and argv[0] in ("--json", "--groundtruth", "--seed", "--jitter") and len(argv) > 1:
        if argv[0] == "--json":
            out_json = argv[1]
        elif argv[0] == "--groundtruth":
            gt_path = argv[1]
        elif argv[0] == "--seed":
            seed = int(argv[1])
        else:
            jitter = float(argv[1])
        argv = argv[2:]
    if gt_path is None or not argv:
        print("usage: ba_floor.py --groundtruth GT.txt [--json F] [--seed S [--jitter PX]] run --seq ... --sync", file=sys.stderr)
        return 2
    import slam.app as app
    from slam.cli import main as slam_main
    from slam.io.trajectory import read_tum

    gt_ts, gt_poses = read_tum(gt_path)
    captured = {}
    finish = app._finish

    def keep(cfg, system, *args, **kwargs):
        out = finish(cfg, system, *args, **kwargs)
        m = system.mapper.map
        ids = sorted(m.keyframes)
        stamps = np.array([m.keyframes[k].timestamp for k in ids])
        j = np.abs(gt_ts[None, :] - stamps[:, None]).argmin(1)
        ok = np.abs(gt_ts[j] - stamps) <= 0.02
        ids = [k for k, o in zip(ids, ok) if o]
        captured.update(problem=system.mapper._gather(ids, 0), truth=gt_poses[j[ok]], mono=cfg.mode == "mono")
        return out

    app._finish = keep
    if seed > 0:  # the run seed_spread.py makes with this seed (its worker perturbs the keypoints)
        import seed_spread

        os.environ[seed_spread._ENV] = f"{seed} {jitter}"
        rc = seed_spread._worker(argv)
    else:
        rc = slam_main(argv)
    if "problem" not in captured or captured["problem"] is None:
        print("no map to examine", file=sys.stderr)
        return rc or 2
    res = floor(captured["problem"], captured["truth"], captured["mono"])
    res["command"] = " ".join(["python -m slam"] + argv)
    res["seed"] = seed
    res["jitter_px"] = jitter if seed > 0 else 0.0  # seed 0 is the unperturbed run
    cm = {k: round(v * 100, 3) for k, v in res.items() if k.startswith("ate_")}
    print(f"keyframe ATE (cm): as left {cm['ate_as_left_m']}, optimum of its observations from the truth "
          f"{cm['ate_optimum_from_truth_m']}, white-noise floor {cm['ate_white_noise_floor_m']}")
    print("residuals at the truth:", json.dumps(res["residuals_at_truth"]))
    if out_json:
        with open(out_json, "w") as f:
            json.dump(res, f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
