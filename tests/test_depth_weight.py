"""slam.mapping.depth_weight: the RGB-D depth weight (bf) measured from a solved bundle adjustment.

A scene with known pixel noise and known inverse-depth noise: after a local BA (started at the
hand-set bf = 40, as a run starts), the estimate is the ratio of the two spreads, whatever bf the
problem was solved with; the shared value moves toward it in log space and only when asked to."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from slam.mapping.depth_weight import DepthWeight, equal_weight_bf, inverse_depth
from slam.optim.ba import BAProblem, synthetic_ba_problem
from slam.optim.ba_schur import bundle_adjust_schur


def _rgbd_problem(noise_px: float, noise_inv_depth: float, bf: float = 40.0, seed: int = 0) -> BAProblem:
    """8 keyframes on a 1 m line looking at points 3-8 m away, each point seen by 4 of them; every
    observation has a depth reading whose inverse carries Gaussian noise noise_inv_depth (1/m);
    pixels carry noise_px (the assumed sigma is 1 px). Poses and points start perturbed."""
    return synthetic_ba_problem(n_kf=8, n_points=800, obs_per_point=4, noise_px=noise_px, outlier_frac=0.0, n_fixed=1,
                                stereo_frac=1.0, seed=seed, bf=bf, noise_inv_depth=noise_inv_depth)


@pytest.mark.parametrize("noise_inv_depth", [0.002, 0.02])
def test_the_estimate_is_the_ratio_of_pixel_to_inverse_depth_noise(noise_inv_depth):
    noise_px = 0.5
    prob = _rgbd_problem(noise_px, noise_inv_depth)
    res = bundle_adjust_schur(prob, iterations=10)
    est, n = equal_weight_bf(prob, res)
    truth = noise_px / noise_inv_depth  # 250 or 25 px * m
    assert n > 1000
    assert truth / 1.25 < est < truth * 1.25, (est, truth)


@pytest.mark.parametrize("noise_inv_depth, start", [(0.02, 400.0), (0.002, 10.0)])
def test_a_badly_set_start_converges_as_the_runs_bundle_adjustments_repeat(noise_inv_depth, start):
    """Depth trusted 16x too much (or 25x too little): one BA's estimate is off, but each BA solved
    with the updated value brings it closer, as the local BAs of a run do."""
    weight = DepthWeight(start, auto=True)
    for _ in range(8):
        prob = _rgbd_problem(0.5, noise_inv_depth, bf=weight.bf)  # the same readings each time
        weight.observe(prob, bundle_adjust_schur(prob, iterations=10))
    truth = 0.5 / noise_inv_depth
    assert truth / 1.25 < weight.bf < truth * 1.25, (weight.bf, truth)


def test_too_few_depth_readings_give_no_estimate():
    prob = _rgbd_problem(0.5, 0.002)
    prob.obs_ur = np.full_like(prob.obs_ur, np.nan)  # monocular edges only
    res = bundle_adjust_schur(prob, iterations=3)
    assert equal_weight_bf(prob, res) is None
    assert equal_weight_bf(prob, res, min_samples=10 ** 6) is None


def test_the_shared_value_moves_half_way_in_log_space_and_only_when_auto():
    prob = _rgbd_problem(0.5, 0.002)
    res = bundle_adjust_schur(prob, iterations=10)
    est = equal_weight_bf(prob, res)[0]

    fixed = DepthWeight(40.0)
    fixed.observe(prob, res)
    assert fixed.bf == 40.0 and fixed.updates == 0

    auto = DepthWeight(40.0, auto=True)
    auto.observe(prob, res)
    assert auto.updates == 1 and auto.last_estimate == pytest.approx(est)
    assert auto.bf == pytest.approx(np.sqrt(40.0 * est))
    for _ in range(30):
        auto.observe(prob, res)
    assert auto.bf == pytest.approx(est, rel=1e-6)
    assert auto.stats()["bf_initial"] == 40.0

    capped = DepthWeight(40.0, auto=True, gain=1.0, hi=100.0)
    capped.observe(prob, res)
    assert capped.bf == pytest.approx(100.0)
    auto.observe(None, None)  # a BA that did not run changes nothing
    assert auto.updates == 31


def test_the_estimate_hardly_follows_the_bf_the_problem_was_solved_with():
    """The same readings solved at bf = 40 and at bf = 400 give estimates within a quarter of the
    truth (125) both: the depth spread is taken between the readings themselves, not against
    points whose depth bf decides (that way, bf = 40 on short baselines measured a fraction of
    the noise-free value)."""
    truth = 0.5 / 0.004
    for bf in (40.0, 400.0):
        prob = _rgbd_problem(0.5, 0.004, bf=bf, seed=5)
        est = equal_weight_bf(prob, bundle_adjust_schur(prob, iterations=10))[0]
        assert truth / 1.25 < est < truth * 1.25, (bf, est)


def test_a_solution_given_as_plain_arrays_is_accepted():
    prob = _rgbd_problem(0.5, 0.002)
    res = bundle_adjust_schur(prob, iterations=10)
    plain = SimpleNamespace(cam_from_world=np.array(res.cam_from_world), points_world=np.array(res.points_world))
    assert equal_weight_bf(prob, plain) == equal_weight_bf(prob, res)



def test_depth_readings_as_inverse_depth_and_virtual_right_coordinate():
    """A reading z (m) becomes 1/z and u - bf / z (px); no reading (0) becomes NaN in both."""
    u = np.array([100.0, 200.0, 300.0])
    z = np.array([2.0, 0.0, 0.5])
    np.testing.assert_allclose(inverse_depth(z), [0.5, np.nan, 2.0])
    np.testing.assert_allclose(DepthWeight(40.0).virtual_right(u, z), [80.0, np.nan, 220.0])
    assert np.isnan(DepthWeight(40.0).virtual_right(u, np.zeros(3))).all()
