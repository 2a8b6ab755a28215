"""The numpy Schur-complement local BA (slam.optim.ba_schur) against g2o and against ground truth."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slam.config import load_config
from slam.errors import SlamError
from slam.optim.ba import BAStop, bundle_adjust, synthetic_ba_problem
from slam.optim import ba_schur
from slam.optim.ba_schur import bundle_adjust_schur, dense_size, fits


@pytest.mark.parametrize("stereo_frac", [0.0, 0.6])
def test_schur_reaches_g2os_result(stereo_frac):
    """Same model, robust scheme and damping as g2o's Levenberg: the same estimate, outliers,
    chi2 and iteration count (mono and mixed RGB-D edges, 1 % gross outliers, 2 fixed keyframes)."""
    prob = synthetic_ba_problem(n_kf=8, n_points=600, obs_per_point=4, stereo_frac=stereo_frac, seed=3)
    a = bundle_adjust(prob, iterations=5)
    b = bundle_adjust_schur(prob, iterations=5)
    assert a.iterations == b.iterations == 10
    np.testing.assert_array_equal(a.obs_outlier, b.obs_outlier)
    assert a.obs_outlier.sum() > 0  # the test exercises the second stage's exclusion
    np.testing.assert_allclose(b.cam_from_world, a.cam_from_world, atol=1e-9)
    np.testing.assert_allclose(b.points_world, a.points_world, atol=1e-8)
    assert b.chi2_after == pytest.approx(a.chi2_after, rel=1e-9)
    assert b.chi2_before == pytest.approx(a.chi2_before, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_small_initial_damping_reaches_the_optimum_in_five_steps(seed):
    """g2o's initial damping (1e-5 x the largest diagonal entry, a keyframe's) holds the weakly
    constrained points back, so 5 + 5 steps stop millimetres short of the optimum; tau = 1e-8
    (``mapping.ba_tau``) gets there in the same number of steps."""
    prob = synthetic_ba_problem(n_kf=8, n_points=600, obs_per_point=3, seed=seed)
    free = ~prob.fixed

    def centres(res):
        return np.linalg.inv(res.cam_from_world[free])[:, :3, 3]

    optimum = centres(bundle_adjust_schur(prob, iterations=60))
    small = bundle_adjust_schur(prob, iterations=5, tau=1e-8)
    g2os = bundle_adjust_schur(prob, iterations=5)
    assert small.iterations == g2os.iterations == 10
    assert np.abs(centres(small) - optimum).max() < 2e-4  # m
    assert np.abs(centres(g2os) - optimum).max() > 1e-3


def test_schur_sums_a_keyframes_two_observations_of_one_point_as_g2o_does():
    """A keyframe that observes a point twice (two keypoints on one map point) adds two blocks to
    the same keyframe-point coupling entry: summed, not overwritten (the solver's scatter path)."""
    prob = synthetic_ba_problem(n_kf=6, n_points=300, obs_per_point=3, seed=7)
    rng = np.random.default_rng(0)
    free_rows = np.flatnonzero(~prob.fixed[prob.obs_kf])
    dup = rng.choice(free_rows, 40, replace=False)
    prob = dataclasses.replace(
        prob, obs_kf=np.r_[prob.obs_kf, prob.obs_kf[dup]], obs_pt=np.r_[prob.obs_pt, prob.obs_pt[dup]],
        obs_uv=np.r_[prob.obs_uv, prob.obs_uv[dup] + rng.normal(scale=0.7, size=(40, 2))],
        obs_inv_sigma2=np.r_[prob.obs_inv_sigma2, prob.obs_inv_sigma2[dup]], obs_ur=np.r_[prob.obs_ur, prob.obs_ur[dup]])
    a = bundle_adjust(prob, iterations=5)
    b = bundle_adjust_schur(prob, iterations=5)
    np.testing.assert_array_equal(a.obs_outlier, b.obs_outlier)
    np.testing.assert_allclose(b.cam_from_world, a.cam_from_world, atol=1e-9)
    np.testing.assert_allclose(b.points_world, a.points_world, atol=1e-8)


def test_schur_recovers_the_true_poses_and_keeps_fixed_ones():
    """Noise-free observations, perturbed start: the solver returns the true poses and points;
    fixed keyframes, keyframes without observations and unobserved points are returned bit for bit."""
    prob = synthetic_ba_problem(n_kf=6, n_points=400, obs_per_point=4, noise_px=0.0, outlier_frac=0.0,
                                stereo_frac=0.5, seed=5)
    truth = np.tile(np.eye(4), (6, 1, 1))
    truth[:, 0, 3] = -np.linspace(0.0, 1.0, 6)
    start_pts = prob.points_world  # perturbed by ~5 cm; the observations are exact
    # an extra keyframe and point that nothing observes
    extra_pose = np.eye(4)
    extra_pose[:3, 3] = [5.0, 6.0, 7.0]
    prob = dataclasses.replace(
        prob, kf_ids=np.r_[prob.kf_ids, 99], cam_from_world=np.concatenate([prob.cam_from_world, extra_pose[None]]),
        fixed=np.r_[prob.fixed, False], point_ids=np.r_[prob.point_ids, 12345],
        points_world=np.concatenate([start_pts, [[1.0, 2.0, 3.0]]]))
    res = bundle_adjust_schur(prob, iterations=10)
    np.testing.assert_allclose(res.cam_from_world[:6], truth, atol=1e-6)
    assert np.array_equal(res.cam_from_world[prob.fixed], prob.cam_from_world[prob.fixed])
    assert np.array_equal(res.cam_from_world[6], extra_pose)
    assert np.array_equal(res.points_world[-1], [1.0, 2.0, 3.0])
    assert res.chi2_after < 1e-6 * res.chi2_before
    assert not res.obs_outlier.any()


def test_schur_stop_requested_returns_the_input():
    prob = synthetic_ba_problem(n_kf=5, n_points=200, obs_per_point=3, seed=1)
    stop = BAStop()
    stop.request()
    res = bundle_adjust_schur(prob, iterations=5, stop=stop)
    assert res.aborted and res.iterations == 0
    assert np.array_equal(res.cam_from_world, prob.cam_from_world)
    assert np.array_equal(res.points_world, prob.points_world)


@pytest.mark.parametrize("stereo_frac,n_fixed,obs_per_point", [(0.0, 2, 4), (0.6, 2, 4), (0.3, 6, 2)])
def test_the_chunked_reduced_system_takes_the_dense_steps(stereo_frac, n_fixed, obs_per_point):
    """The reduced system formed chunk by chunk of points (global BAs) gives the dense layout's
    estimate, outliers and iterations to rounding. Several chunks (1000 points); with 6 of 12
    keyframes fixed and 2 observations per point, some points have no free observation."""
    prob = synthetic_ba_problem(n_kf=12, n_points=1000, obs_per_point=obs_per_point, n_fixed=n_fixed,
                                stereo_frac=stereo_frac, seed=5)
    a = bundle_adjust_schur(prob, iterations=5, layout="dense")
    b = bundle_adjust_schur(prob, iterations=5, layout="chunked")
    assert a.iterations == b.iterations == 10
    np.testing.assert_array_equal(a.obs_outlier, b.obs_outlier)
    np.testing.assert_allclose(b.cam_from_world, a.cam_from_world, atol=1e-10)
    np.testing.assert_allclose(b.points_world, a.points_world, atol=1e-9)
    assert b.chi2_after == pytest.approx(a.chi2_after, rel=1e-10)
    moved = np.linalg.norm(b.cam_from_world[n_fixed:, :3, 3] - prob.cam_from_world[n_fixed:, :3, 3], axis=1)
    assert moved.min() > 1e-3  # the free keyframes did move


def test_a_function_tolerance_ends_the_stages_early_at_the_same_optimum():
    """ftol (mapping.global_ba_tolerance): a stage stops once a step gains at most ftol of the
    cost; 0 runs every step, as g2o."""
    prob = synthetic_ba_problem(n_kf=10, n_points=800, obs_per_point=4, stereo_frac=0.5, seed=7)
    full = bundle_adjust_schur(prob, iterations=15, layout="chunked")
    early = bundle_adjust_schur(prob, iterations=15, layout="chunked", ftol=1e-6)
    assert full.iterations == 30 and early.iterations < full.iterations
    # the second stage's inliers come from the first stage's end, so an observation at the chi2
    # threshold may flip: the same optimum to about 1e-4
    assert early.chi2_after == pytest.approx(full.chi2_after, rel=1e-3)
    np.testing.assert_allclose(early.cam_from_world, full.cam_from_world, atol=1e-4)
    assert np.count_nonzero(early.obs_outlier != full.obs_outlier) <= 2


def test_the_chunked_layout_sums_two_observations_of_one_point_in_one_keyframe():
    prob = synthetic_ba_problem(n_kf=6, n_points=300, obs_per_point=3, seed=4)
    dup = np.arange(0, 900, 7)
    prob = dataclasses.replace(prob, obs_kf=np.r_[prob.obs_kf, prob.obs_kf[dup]], obs_pt=np.r_[prob.obs_pt, prob.obs_pt[dup]],
                               obs_uv=np.r_[prob.obs_uv, prob.obs_uv[dup] + 0.3], obs_inv_sigma2=np.r_[prob.obs_inv_sigma2, prob.obs_inv_sigma2[dup]],
                               obs_ur=np.r_[prob.obs_ur, prob.obs_ur[dup]])
    a = bundle_adjust_schur(prob, iterations=5, layout="dense")
    b = bundle_adjust_schur(prob, iterations=5, layout="chunked")
    np.testing.assert_allclose(b.cam_from_world, a.cam_from_world, atol=1e-10)
    np.testing.assert_allclose(b.points_world, a.points_world, atol=1e-9)


def test_auto_layout_chunks_above_max_dense_and_fits_bounds_the_free_keyframes(monkeypatch):
    prob = synthetic_ba_problem(n_kf=8, n_points=400, obs_per_point=3, seed=6)
    calls = []
    real = ba_schur._solve_chunked
    monkeypatch.setattr(ba_schur, "_solve_chunked", lambda *a: calls.append(1) or real(*a))
    bundle_adjust_schur(prob, iterations=2)
    assert not calls  # 18 x 6 x 400 entries: dense
    monkeypatch.setattr(ba_schur, "MAX_DENSE", dense_size(prob) - 1)
    bundle_adjust_schur(prob, iterations=2)
    assert calls
    with pytest.raises(ValueError, match="layout"):
        bundle_adjust_schur(prob, layout="sparse")
    assert fits(prob)
    monkeypatch.setattr(ba_schur, "MAX_REDUCED_KEYFRAMES", 5)  # 6 free keyframes
    assert not fits(prob)


def test_global_ba_solver_picks_numpy_where_it_fits_and_g2o_otherwise(monkeypatch):
    from slam.geometry.camera import PinholeCamera
    from slam.mapping.local_mapper import LocalMapper
    from slam.mapping.map import Map

    cfg = load_config().mapping
    assert cfg.global_ba_solver == "auto"
    with pytest.raises(SlamError, match="global_ba_solver"):
        load_config(overrides=["mapping.global_ba_solver=ceres"])
    cam = PinholeCamera(width=640, height=480, fx=525.0, fy=525.0, cx=319.5, cy=239.5)
    prob = synthetic_ba_problem(n_kf=8, n_points=400, obs_per_point=3, seed=6)
    for mode in ("mono", "rgbd"):
        assert LocalMapper(cfg, cam, Map(32, True), None, mode=mode).global_solver(prob) == "schur"
    g2o_only = LocalMapper(dataclasses.replace(cfg, global_ba_solver="g2o"), cam, Map(32, True), None, mode="rgbd")
    assert g2o_only.global_solver(prob) == "g2o"
    lm = LocalMapper(cfg, cam, Map(32, True), None, mode="rgbd")
    a, b = lm.solve_global(prob, 5), g2o_only.solve_global(prob, 5)
    np.testing.assert_allclose(a.cam_from_world, b.cam_from_world, atol=1e-8)  # the same optimum
    monkeypatch.setattr(ba_schur, "MAX_REDUCED_KEYFRAMES", 5)
    assert lm.global_solver(prob) == "g2o"


def test_dense_size_counts_free_keyframes_times_points():
    prob = synthetic_ba_problem(n_kf=7, n_points=300, obs_per_point=3, n_fixed=2, seed=2)
    assert dense_size(prob) == 18 * 5 * 300


def test_ba_solver_is_a_checked_setting_and_auto_means_depth_modes_and_fixed_gauge_mono():
    from slam.geometry.camera import PinholeCamera
    from slam.mapping.local_mapper import LocalMapper
    from slam.mapping.map import Map

    assert load_config(overrides=["mapping.ba_solver=g2o"]).mapping.ba_solver == "g2o"
    cfg = load_config().mapping
    assert cfg.ba_solver == "auto"
    with pytest.raises(SlamError, match="ba_solver"):
        load_config(overrides=["mapping.ba_solver=ceres"])
    cam = PinholeCamera(width=640, height=480, fx=525.0, fy=525.0, cx=319.5, cy=239.5)
    uses = {mode: LocalMapper(cfg, cam, Map(32, True), None, mode=mode).uses_schur() for mode in ("rgbd", "stereo", "mono")}
    assert uses == {"rgbd": True, "stereo": True, "mono": False}
    forced = dataclasses.replace(cfg, ba_solver="schur")
    assert LocalMapper(forced, cam, Map(32, True), None, mode="mono").uses_schur()
    # monocular, auto: numpy once two fixed keyframes fix the gauge (scale included), g2o before
    mono = LocalMapper(cfg, cam, Map(32, True), None, mode="mono")
    problem = synthetic_ba_problem(n_kf=4, n_points=50, obs_per_point=3)
    for n_fixed, expected in ((1, False), (2, True), (3, True)):
        problem.fixed[:] = np.arange(4) < n_fixed
        assert mono.uses_schur(problem) is expected, n_fixed
    g2o_only = LocalMapper(dataclasses.replace(cfg, ba_solver="g2o"), cam, Map(32, True), None, mode="mono")
    assert not g2o_only.uses_schur(problem)


def test_pause_comes_between_pieces_of_setup_steps_and_chunks_and_changes_nothing():
    """The background global BA waits for the frame path at ``pause``: at the start, between the
    pieces of the setup (before the sort, before and within the chunking, before the model),
    and in each step: before the linearisation and five times within it (point Jacobians, point
    blocks, keyframe Jacobians, coupling blocks, their regrouping), once per KF_PER_PAUSE
    keyframes' Hessian blocks, after the solve's products with the point blocks, every
    CHUNKS_PER_PAUSE chunks (from the first), before and after the sum of the chunks, after the
    factorisation, before and after applying the step and before its cost: at least 16 pauses a
    step with 9 free keyframes and 10 chunks (1200 points), and more with more keyframes.
    Pausing does not change the result."""
    prob = synthetic_ba_problem(n_kf=10, n_points=1200, obs_per_point=4, stereo_frac=0.5, seed=3)
    calls = []
    plain = bundle_adjust_schur(prob, iterations=6, layout="chunked")
    paused = bundle_adjust_schur(prob, iterations=6, layout="chunked", pause=lambda: calls.append(1))
    assert paused.iterations == plain.iterations == 12
    assert len(calls) >= 5 + 16 * paused.iterations  # more where a step is retried
    np.testing.assert_array_equal(paused.cam_from_world, plain.cam_from_world)
    np.testing.assert_array_equal(paused.points_world, plain.points_world)
    # 39 free keyframes: two more groups of Hessian blocks in every step
    wide = synthetic_ba_problem(n_kf=40, n_points=1200, obs_per_point=4, stereo_frac=0.5, seed=3)
    wide_calls = []
    res = bundle_adjust_schur(wide, iterations=6, layout="chunked", pause=lambda: wide_calls.append(1))
    assert res.iterations == 12
    assert len(wide_calls) >= len(calls) + 2 * res.iterations
