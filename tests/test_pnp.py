"""PnP + RANSAC on synthetic data with known pose."""
import numpy as np

from slam.geometry.pnp import solve_pnp_ransac
from slam.geometry.se3 import make_se3, rotation_angle_deg, se3_inverse, so3_exp, transform_points

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])


def setup(rng, n=300, noise=0.5, outlier_frac=0.2):
    cam_from_world = make_se3(so3_exp([0.1, -0.3, 0.05]), [0.2, -0.1, 0.5])
    z = rng.uniform(1.5, 6.0, n)
    uv_true = rng.uniform([0, 0], [640, 480], (n, 2))
    pts_cam = np.c_[(uv_true - K[:2, 2]) / [K[0, 0], K[1, 1]] * z[:, None], z]
    pts_world = transform_points(se3_inverse(cam_from_world), pts_cam)
    uv = uv_true + rng.normal(scale=noise, size=uv_true.shape)
    n_out = int(outlier_frac * n)
    out = rng.choice(n, n_out, replace=False)
    uv[out] = rng.uniform([0, 0], [640, 480], (n_out, 2))
    is_out = np.zeros(n, bool)
    is_out[out] = True
    return cam_from_world, pts_world, uv, is_out


def check(est, gt):
    assert est is not None and est.shape == (4, 4)
    assert rotation_angle_deg(est[:3, :3] @ gt[:3, :3].T) < 0.5
    assert np.linalg.norm(se3_inverse(est)[:3, 3] - se3_inverse(gt)[:3, 3]) < 0.01


def test_pnp_ransac_with_outliers():
    rng = np.random.default_rng(0)
    gt, pts, uv, is_out = setup(rng)
    est, inl = solve_pnp_ransac(pts, uv, K, threshold_px=3.0)
    check(est, gt)
    assert inl.dtype == bool and inl.shape == (len(pts),)
    assert inl[~is_out].mean() > 0.95
    assert inl[is_out].mean() < 0.05


def test_pnp_uses_initial_guess_and_survives_a_bad_one():
    rng = np.random.default_rng(1)
    gt, pts, uv, is_out = setup(rng, outlier_frac=0.4)
    near = make_se3(so3_exp([0.01, 0.0, -0.01]), [0.02, 0.0, 0.01]) @ gt
    est, inl = solve_pnp_ransac(pts, uv, K, cam_from_world_init=near)
    check(est, gt)
    far = make_se3(so3_exp([1.0, 0.5, 0.0]), [3.0, 0.0, 0.0]) @ gt
    est, inl = solve_pnp_ransac(pts, uv, K, cam_from_world_init=far)
    check(est, gt)


def test_pnp_rejects_degenerate_input():
    rng = np.random.default_rng(2)
    gt, pts, uv, _ = setup(rng, n=30, outlier_frac=0.0)
    est, inl = solve_pnp_ransac(pts[:3], uv[:3], K)
    assert est is None and inl.shape == (3,) and not inl.any()
    # all correspondences random: nothing consistent
    est, inl = solve_pnp_ransac(pts, rng.uniform([0, 0], [640, 480], (30, 2)), K, min_inliers=15)
    assert est is None and not inl.any()
