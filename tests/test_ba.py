"""Motion-only BA and full BA (mono + RGB-D/stereo edges) with g2o (the pose graph: test_essential_graph.py)."""
import numpy as np
import pytest

from slam.geometry.se3 import (camera_center, make_se3, rotation_angle_deg, se3_exp, so3_exp,
                               transform_points)
from slam.optim.ba import BAProblem, BAResult, bundle_adjust, optimize_pose

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
BF = 40.0


def project(cam_from_world, pts):
    pc = transform_points(cam_from_world, pts)
    return (pc[:, :2] / pc[:, 2:3]) * [K[0, 0], K[1, 1]] + K[:2, 2], pc[:, 2]


def perturb(rng, pose, rot_rad=0.02, trans_m=0.03):
    return se3_exp(np.r_[rng.normal(scale=rot_rad, size=3), rng.normal(scale=trans_m, size=3)]) @ pose


def pose_err(a, b):
    """(rotation deg, camera-centre distance m)."""
    return rotation_angle_deg(a[:3, :3] @ b[:3, :3].T), float(np.linalg.norm(camera_center(a) - camera_center(b)))


def make_world(rng, n_kf=6, n_pts=300):
    poses = np.stack([make_se3(so3_exp([0.0, 0.03 * k - 0.08, 0.01 * k]), [-0.12 * k, 0.02 * k, 0.0])
                      for k in range(n_kf)])
    pts = np.c_[rng.uniform(-2.5, 3.0, n_pts), rng.uniform(-1.8, 1.8, n_pts), rng.uniform(3.0, 7.0, n_pts)]
    return poses, pts


def observations(poses, pts, stereo=False):
    obs_kf, obs_pt, uv, ur = [], [], [], []
    for k, pose in enumerate(poses):
        x, z = project(pose, pts)
        vis = (z > 0) & (x[:, 0] >= 0) & (x[:, 0] < 640) & (x[:, 1] >= 0) & (x[:, 1] < 480)
        idx = np.flatnonzero(vis)
        obs_kf.append(np.full(idx.size, k))
        obs_pt.append(idx)
        uv.append(x[idx])
        ur.append(x[idx, 0] - BF / z[idx] if stereo else np.full(idx.size, np.nan))
    return np.concatenate(obs_kf), np.concatenate(obs_pt), np.concatenate(uv), np.concatenate(ur)


# ------------------------------------------------------------------------------------- pose only
def test_optimize_pose_recovers_pose_and_flags_outliers():
    rng = np.random.default_rng(0)
    gt = make_se3(so3_exp([0.05, -0.1, 0.02]), [0.1, 0.0, -0.2])
    pts = np.c_[rng.uniform(-2, 2, 200), rng.uniform(-1.5, 1.5, 200), rng.uniform(3, 6, 200)]
    uv, _ = project(gt, pts)
    uv = uv + rng.normal(scale=0.3, size=uv.shape)
    out = rng.choice(200, 20, replace=False)
    uv[out] += rng.choice([-1, 1], (20, 2)) * rng.uniform(15, 40, (20, 2))
    init = se3_exp(np.r_[0.02, -0.03, 0.01, 0.05, -0.04, 0.06]) @ gt
    est, inl = optimize_pose(init, pts, uv, K)
    r, t = pose_err(est, gt)
    assert r < 0.1 and t < 0.01
    assert inl.dtype == bool and inl.shape == (200,)
    assert not inl[out].any()
    assert inl[np.setdiff1d(np.arange(200), out)].mean() > 0.95
    r0, t0 = pose_err(init, gt)
    assert r0 > 0.5  # the perturbation was real


def test_optimize_pose_with_stereo_edges():
    rng = np.random.default_rng(1)
    gt = make_se3(so3_exp([0.0, 0.1, 0.0]), [0.0, 0.1, 0.0])
    pts = np.c_[rng.uniform(-2, 2, 150), rng.uniform(-1.5, 1.5, 150), rng.uniform(1, 4, 150)]
    uv, z = project(gt, pts)
    ur = uv[:, 0] - BF / z
    ur[::3] = np.nan  # mix of monocular and stereo observations
    ur[5] += 30.0     # a depth outlier on a stereo edge
    init = perturb(rng, gt, 0.02, 0.05)
    est, inl = optimize_pose(init, pts, uv, K, inv_sigma2=np.full(150, 1.0), ur=ur, bf=BF)
    r, t = pose_err(est, gt)
    assert r < 0.01 and t < 1e-3
    assert not inl[5] and inl.sum() == 149


# ------------------------------------------------------------------------------------- full BA
def build_problem(rng, stereo=False, n_fixed=2, outlier_frac=0.02, noise=0.0):
    poses_gt, pts_gt = make_world(rng)
    obs_kf, obs_pt, uv, ur = observations(poses_gt, pts_gt, stereo)
    uv = uv + rng.normal(scale=noise, size=uv.shape) if noise else uv
    m = obs_kf.size
    out = rng.choice(m, int(outlier_frac * m), replace=False)
    uv[out] += rng.choice([-1, 1], (out.size, 2)) * rng.uniform(20, 50, (out.size, 2))
    fixed = np.zeros(len(poses_gt), bool)
    fixed[:n_fixed] = True
    poses0 = np.stack([p if f else perturb(rng, p) for p, f in zip(poses_gt, fixed)])
    pts0 = pts_gt + rng.normal(scale=0.05, size=pts_gt.shape)
    kf_ids = np.arange(len(poses_gt), dtype=np.int64) * 10 + 7  # ids are not indices
    point_ids = np.arange(len(pts_gt), dtype=np.int64) + 1000
    problem = BAProblem(kf_ids=kf_ids, cam_from_world=poses0, fixed=fixed, point_ids=point_ids,
                        points_world=pts0, obs_kf=kf_ids[obs_kf], obs_pt=point_ids[obs_pt], obs_uv=uv,
                        obs_inv_sigma2=np.ones(m), obs_ur=ur, bf=BF if stereo else 0.0, K=K)
    is_out = np.zeros(m, bool)
    is_out[out] = True
    return problem, poses_gt, pts_gt, is_out


def test_bundle_adjust_recovers_structure_and_keeps_fixed_poses():
    rng = np.random.default_rng(2)
    problem, poses_gt, pts_gt, is_out = build_problem(rng)
    fixed_before = problem.cam_from_world[problem.fixed].copy()
    res = bundle_adjust(problem, iterations=10)
    assert isinstance(res, BAResult)
    assert res.cam_from_world.shape == (6, 4, 4) and res.points_world.shape == pts_gt.shape
    assert np.array_equal(res.cam_from_world[problem.fixed], fixed_before)  # bit-for-bit
    assert res.chi2_after < 1e-3 * res.chi2_before
    for k in np.flatnonzero(~problem.fixed):
        r, t = pose_err(res.cam_from_world[k], poses_gt[k])
        assert r < 0.01 and t < 1e-3, (k, r, t)
    # every corrupted observation is flagged; a point seen twice with one bad observation may lose both
    assert res.obs_outlier[is_out].all()
    assert res.obs_outlier[~is_out].mean() < 0.005
    assert np.median(np.linalg.norm(res.points_world - pts_gt, axis=1)) < 1e-3
    assert res.iterations > 10  # two stages ran


def test_bundle_adjust_with_noise_lowers_error_and_handles_fixed_only_points():
    rng = np.random.default_rng(3)
    problem, poses_gt, pts_gt, is_out = build_problem(rng, noise=0.5, outlier_frac=0.0)
    # extra points observed only by the two fixed keyframes, plus one unobserved point
    extra_gt = np.array([[0.2, 0.1, 4.0], [-0.3, 0.2, 5.0], [0.5, -0.4, 3.5]])
    uv_extra, kf_extra, pt_extra = [], [], []
    for k in (0, 1):
        x, _ = project(poses_gt[k], extra_gt)
        uv_extra.append(x)
        kf_extra += [problem.kf_ids[k]] * 3
        pt_extra += [5000, 5001, 5002]
    problem.point_ids = np.r_[problem.point_ids, 5000, 5001, 5002, 6000]
    problem.points_world = np.r_[problem.points_world, extra_gt + 0.1, [[9.0, 9.0, 9.0]]]
    problem.obs_kf = np.r_[problem.obs_kf, kf_extra]
    problem.obs_pt = np.r_[problem.obs_pt, pt_extra]
    problem.obs_uv = np.r_[problem.obs_uv, np.concatenate(uv_extra)]
    problem.obs_inv_sigma2 = np.r_[problem.obs_inv_sigma2, np.ones(6)]
    problem.obs_ur = np.r_[problem.obs_ur, np.full(6, np.nan)]
    res = bundle_adjust(problem, iterations=10)
    assert res.chi2_after < 0.1 * res.chi2_before
    # final reprojection RMS close to the 0.5 px noise
    m = problem.obs_kf.size
    assert res.chi2_after / (~res.obs_outlier).sum() < 2 * 0.5 ** 2 * 1.5
    assert res.obs_outlier.sum() < 0.01 * m
    for k in np.flatnonzero(~problem.fixed):
        r, t = pose_err(res.cam_from_world[k], poses_gt[k])
        assert r < 0.15 and t < 0.015, (k, r, t)  # perturbation was ~2 deg, ~5 cm
    np.testing.assert_allclose(res.points_world[-4:-1], extra_gt, atol=1e-2)
    np.testing.assert_array_equal(res.points_world[-1], [9.0, 9.0, 9.0])  # unobserved: unchanged


def test_bundle_adjust_stereo_edges_single_fixed_keyframe():
    rng = np.random.default_rng(4)
    problem, poses_gt, pts_gt, is_out = build_problem(rng, stereo=True, n_fixed=1, outlier_frac=0.02)
    # monocular edges mixed in
    problem.obs_ur[::4] = np.nan
    res = bundle_adjust(problem, iterations=10)
    for k in range(1, 6):
        r, t = pose_err(res.cam_from_world[k], poses_gt[k])
        assert r < 0.01 and t < 1e-3, (k, r, t)
    assert res.obs_outlier[is_out].all() and res.obs_outlier[~is_out].mean() < 0.005
    assert np.array_equal(res.cam_from_world[0], problem.cam_from_world[0])


def test_bundle_adjust_rejects_bad_problem():
    rng = np.random.default_rng(5)
    problem, *_ = build_problem(rng)
    problem.obs_kf = problem.obs_kf.copy()
    problem.obs_kf[0] = 123456
    with pytest.raises(ValueError, match="unknown keyframe"):
        bundle_adjust(problem)
    problem, *_ = build_problem(rng)
    problem.obs_uv = problem.obs_uv[:-1]
    with pytest.raises(ValueError, match="obs_uv"):
        bundle_adjust(problem)


def test_bundle_adjust_chunked_edge_insertion_matches_direct_insertion():
    rng = np.random.default_rng(8)
    problem, *_ = build_problem(rng, noise=0.3)
    direct = bundle_adjust(problem, iterations=5, edge_chunk=0)
    chunked = bundle_adjust(problem, iterations=5, edge_chunk=37)
    np.testing.assert_allclose(chunked.cam_from_world, direct.cam_from_world, atol=1e-12)
    np.testing.assert_allclose(chunked.points_world, direct.points_world, atol=1e-12)
    np.testing.assert_array_equal(chunked.obs_outlier, direct.obs_outlier)
    assert chunked.chi2_after == pytest.approx(direct.chi2_after, rel=1e-9)


# ------------------------------------------------------------------------------------- BAStop
def _stopping_pause(stop, at_call):
    """A pause callback that requests the stop on its at_call-th call (1-based)."""
    calls = []

    def pause():
        calls.append(1)
        if len(calls) == at_call:
            stop.request()

    return pause, calls


def test_bastop_before_optimisation_returns_input_unchanged():
    from slam.optim.ba import BAStop

    rng = np.random.default_rng(11)
    problem, _, _, _ = build_problem(rng)
    n_build = problem.obs_kf.size // 512  # pauses while the graph is built
    stop = BAStop()
    pause, _ = _stopping_pause(stop, n_build + 1)  # the pause just before stage 1's optimize
    res = bundle_adjust(problem, iterations=10, pause=pause, stop=stop)
    assert res.aborted and res.iterations == 0
    assert np.array_equal(res.cam_from_world, problem.cam_from_world)
    assert np.array_equal(res.points_world, problem.points_world)
    assert res.obs_outlier.shape == (problem.obs_kf.size,)


def test_bastop_while_building_the_graph_returns_input_unchanged():
    from slam.optim.ba import BAStop

    rng = np.random.default_rng(12)
    problem, _, _, _ = build_problem(rng)
    assert problem.obs_kf.size > 1024
    stop = BAStop()
    pause, calls = _stopping_pause(stop, 1)
    res = bundle_adjust(problem, iterations=10, pause=pause, stop=stop)
    assert res.aborted and res.iterations == 0 and len(calls) == 1  # no further pauses: it returned at once
    assert np.array_equal(res.cam_from_world, problem.cam_from_world)


def test_bastop_before_second_stage_keeps_stage_one_result():
    from slam.optim.ba import BAStop

    rng = np.random.default_rng(13)
    problem, poses_gt, _, _ = build_problem(rng)
    n_build = problem.obs_kf.size // 512
    stop = BAStop()
    pause, _ = _stopping_pause(stop, n_build + 2)  # the pause just before stage 2's optimize
    res = bundle_adjust(problem, iterations=10, pause=pause, stop=stop)
    full = bundle_adjust(problem, iterations=10)
    assert res.aborted and not full.aborted
    assert 0 < res.iterations <= 10 < full.iterations  # stage 1 ran, stage 2 did not
    assert res.chi2_after < 1e-2 * res.chi2_before  # the robust stage already converged
    free = np.flatnonzero(~problem.fixed)
    for k in free:
        r, t = pose_err(res.cam_from_world[k], poses_gt[k])
        assert r < 0.05 and t < 5e-3, (k, r, t)


@pytest.mark.slow
def test_bastop_from_another_thread_ends_a_running_optimisation():
    """g2o runs without the GIL; a request from another thread sets its force-stop flag."""
    import threading

    from slam.optim.ba import BAStop, synthetic_ba_problem

    problem = synthetic_ba_problem(n_kf=20, n_points=6000, obs_per_point=5)
    stop = BAStop()
    done = threading.Event()

    def requester():
        while stop._opt is None and not done.is_set():  # until g2o runs stage 1 (seconds at this size)
            done.wait(0.001)
        stop.request()

    th = threading.Thread(target=requester)
    th.start()
    res = bundle_adjust(problem, iterations=50, stop=stop)
    done.set()
    th.join(10)
    assert res.aborted
    assert res.iterations < 50  # stopped inside stage 1 (50 LM iterations alone); stage 2 never started
