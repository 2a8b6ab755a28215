"""Pose-only Gauss-Newton refinement (slam.optim.pose_gn) against ground truth and against g2o."""
from __future__ import annotations

import numpy as np
import pytest

from slam.geometry.se3 import make_se3, rotation_angle_deg, se3_inverse, so3_exp
from slam.optim.ba import optimize_pose
from slam.optim.pose_gn import refine_pose_gn

K = np.array([[517.3, 0.0, 318.6], [0.0, 516.5, 255.3], [0.0, 0.0, 1.0]])
BF = 40.0
W, H = 640, 480


def make_problem(seed: int, n: int = 300, outlier_frac: float = 0.2, stereo_frac: float = 0.0,
                 noise_px: float = 0.5, levels: bool = False):
    """Points seen by a camera at a known pose; a fraction of observations are gross outliers.

    Returns dict(cam_from_world true, pts (n,3), uv (n,2), ur (n,) NaN for mono, inv_sigma2 (n,),
    outlier (n,) bool).
    """
    rng = np.random.default_rng(seed)
    cam_from_world = make_se3(so3_exp(rng.normal(scale=0.4, size=3)), rng.normal(scale=0.5, size=3))
    # points in camera coordinates inside the image, 0.8 - 4 m deep
    u = rng.uniform(20, W - 20, n)
    v = rng.uniform(20, H - 20, n)
    z = rng.uniform(0.8, 4.0, n)
    pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    pts = pc @ cam_from_world[:3, :3] + (-cam_from_world[:3, :3].T @ cam_from_world[:3, 3])
    np.testing.assert_allclose(pts @ cam_from_world[:3, :3].T + cam_from_world[:3, 3], pc, atol=1e-9)
    level = rng.integers(0, 4, n) if levels else np.zeros(n, dtype=int)
    sigma = 1.2 ** level
    uv = np.stack([u, v], 1) + rng.normal(size=(n, 2)) * (noise_px * sigma)[:, None]
    ur = np.full(n, np.nan)
    stereo = rng.random(n) < stereo_frac
    ur[stereo] = u[stereo] - BF / z[stereo] + rng.normal(size=stereo.sum()) * noise_px * sigma[stereo]
    outlier = np.zeros(n, dtype=bool)
    outlier[rng.choice(n, size=int(round(outlier_frac * n)), replace=False)] = True
    # gross errors: 25-80 px in a random direction
    ang = rng.uniform(0, 2 * np.pi, outlier.sum())
    mag = rng.uniform(25, 80, outlier.sum())
    uv[outlier] += np.stack([np.cos(ang), np.sin(ang)], 1) * mag[:, None]
    ur[outlier & stereo] += rng.uniform(-60, 60, (outlier & stereo).sum())
    return {"cam_from_world": cam_from_world, "pts": pts, "uv": uv, "ur": ur,
            "inv_sigma2": 1.0 / sigma ** 2, "outlier": outlier, "stereo": stereo}


def perturb(cam_from_world: np.ndarray, seed: int, rot_deg: float = 3.0, trans_m: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    t = rng.normal(size=3)
    t *= trans_m / np.linalg.norm(t)
    return make_se3(so3_exp(axis * np.deg2rad(rot_deg)), t) @ cam_from_world


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(rotation deg, camera-centre distance m) between two cam_from_world."""
    d = a @ se3_inverse(b)
    ca, cb = se3_inverse(a)[:3, 3], se3_inverse(b)[:3, 3]
    return rotation_angle_deg(d[:3, :3]), float(np.linalg.norm(ca - cb))


def solve(fn, prob, init, stereo: bool):
    return fn(init, prob["pts"], prob["uv"], K, inv_sigma2=prob["inv_sigma2"],
              ur=prob["ur"] if stereo else None, bf=BF if stereo else 0.0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stereo_frac", [0.0, 0.6], ids=["mono", "rgbd"])
def test_recovers_pose_and_flags_outliers(seed, stereo_frac):
    prob = make_problem(seed, stereo_frac=stereo_frac, levels=seed % 2 == 1)
    init = perturb(prob["cam_from_world"], seed)
    r0, t0 = pose_error(init, prob["cam_from_world"])
    assert r0 > 2.9 and t0 > 0.01  # the start really is off
    est, inl = solve(refine_pose_gn, prob, init, stereo_frac > 0)
    assert est.shape == (4, 4) and inl.shape == (len(prob["pts"]),) and inl.dtype == bool
    r, t = pose_error(est, prob["cam_from_world"])
    assert r < 0.05 and t < 0.005, (r, t)
    assert not np.any(inl[prob["outlier"]]), "an outlier was kept"
    assert inl[~prob["outlier"]].mean() > 0.9  # chi2 95% quantile: ~5% of inliers may drop
    np.testing.assert_array_equal(est[3], [0, 0, 0, 1])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stereo_frac", [0.0, 0.6, 1.0], ids=["mono", "rgbd", "stereo_only"])
def test_agrees_with_g2o_optimize_pose(seed, stereo_frac):
    prob = make_problem(10 + seed, stereo_frac=stereo_frac, levels=True)
    init = perturb(prob["cam_from_world"], seed, rot_deg=2.0, trans_m=0.03)
    gn, inl_gn = solve(refine_pose_gn, prob, init, stereo_frac > 0)
    g2, inl_g2 = solve(optimize_pose, prob, init, stereo_frac > 0)
    np.testing.assert_array_equal(inl_gn, inl_g2)
    np.testing.assert_allclose(gn, g2, atol=1e-6)


def test_exact_data_gives_exact_pose():
    prob = make_problem(7, outlier_frac=0.0, noise_px=0.0, stereo_frac=0.5)
    init = perturb(prob["cam_from_world"], 7, rot_deg=5.0, trans_m=0.1)
    est, inl = solve(refine_pose_gn, prob, init, True)
    assert inl.all()
    np.testing.assert_allclose(est, prob["cam_from_world"], atol=1e-9)


def test_stereo_terms_are_used_only_with_bf():
    # with bf > 0 the virtual right coordinate constrains depth: corrupting it changes the answer
    prob = make_problem(8, outlier_frac=0.0, stereo_frac=1.0, noise_px=0.3)
    init = perturb(prob["cam_from_world"], 8)
    bad = prob["ur"] + 1.5  # a consistent 1.5 px bias on every ur (within the chi2 gate)
    a, _ = refine_pose_gn(init, prob["pts"], prob["uv"], K, prob["inv_sigma2"], prob["ur"], BF)
    b, _ = refine_pose_gn(init, prob["pts"], prob["uv"], K, prob["inv_sigma2"], bad, BF)
    c, _ = refine_pose_gn(init, prob["pts"], prob["uv"], K, prob["inv_sigma2"], bad, 0.0)  # mono
    d, _ = refine_pose_gn(init, prob["pts"], prob["uv"], K, prob["inv_sigma2"], None, 0.0)
    assert np.abs(a - b).max() > 1e-4
    np.testing.assert_allclose(c, d, atol=1e-12)


def test_rotation_is_orthonormal_from_non_orthonormal_init():
    prob = make_problem(3, stereo_frac=0.3)
    init = perturb(prob["cam_from_world"], 3)
    rng = np.random.default_rng(0)
    init[:3, :3] += rng.normal(scale=2e-3, size=(3, 3))  # drifted off SO(3), as products of poses do
    assert np.abs(init[:3, :3].T @ init[:3, :3] - np.eye(3)).max() > 1e-3
    est, inl = solve(refine_pose_gn, prob, init, True)
    R = est[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert abs(np.linalg.det(R) - 1.0) < 1e-12
    r, t = pose_error(est, prob["cam_from_world"])
    assert r < 0.05 and t < 0.005
    assert not np.any(inl[prob["outlier"]])


def test_degenerate_inputs():
    init = np.eye(4)
    est, inl = refine_pose_gn(init, np.zeros((0, 3)), np.zeros((0, 2)), K)
    np.testing.assert_array_equal(est, init)
    assert inl.shape == (0,)
    # fewer than 3 usable points: the pose is returned unchanged (no crash, no NaN)
    pts = np.array([[0.0, 0.0, 2.0], [0.1, 0.0, 2.0]])
    uv = np.array([[318.6, 255.3], [344.5, 255.3]])
    est, inl = refine_pose_gn(init, pts, uv, K)
    assert np.all(np.isfinite(est))
    np.testing.assert_allclose(est, init, atol=1e-12)


def test_points_behind_the_camera_are_outliers():
    prob = make_problem(5, outlier_frac=0.0, stereo_frac=0.0)
    pts = prob["pts"].copy()
    cam = prob["cam_from_world"]
    behind = np.arange(10)
    pc = pts[behind] @ cam[:3, :3].T + cam[:3, 3]
    pc[:, 2] *= -1  # mirror through the camera plane: same pixel up to sign, negative depth
    pts[behind] = (pc - cam[:3, 3]) @ cam[:3, :3]
    est, inl = refine_pose_gn(perturb(cam, 5, 1.0, 0.01), pts, prob["uv"], K)
    assert not inl[behind].any()
    r, t = pose_error(est, cam)
    assert r < 0.05 and t < 0.005


def test_g2o_reference_gives_every_edge_a_unique_internal_id():
    """Staged edges get the ids they would have had if added one by one (g2o orders active
    edges by id and breaks ties by heap address: with duplicates, runs differ at 1e-12)."""
    from slam.optim import ba

    assert ba.edge_ids_are_unique()


def test_bundle_adjust_is_repeatable_bit_for_bit():
    from slam.optim.ba import bundle_adjust, synthetic_ba_problem

    prob = synthetic_ba_problem(6, 800, 4, stereo_frac=0.5)
    ref = bundle_adjust(prob, iterations=5, edge_chunk=256)  # several staging graphs
    for rep in range(2):
        junk = [np.zeros(100 + 31 * rep) for _ in range(40 * (rep + 1))]  # shift heap addresses
        out = bundle_adjust(prob, iterations=5, edge_chunk=256)
        np.testing.assert_array_equal(out.cam_from_world, ref.cam_from_world)
        np.testing.assert_array_equal(out.points_world, ref.points_world)
        del junk


def test_g2o_reference_is_repeatable_to_1e9():
    """Whatever the edge order, repeated solves agree far below any tracking tolerance."""
    prob = make_problem(3, n=1200, stereo_frac=0.5, levels=True)
    init = perturb(prob["cam_from_world"], 3)
    ref, inl_ref = solve(optimize_pose, prob, init, True)
    for rep in range(3):
        junk = [np.zeros(100 + 31 * rep) for _ in range(40 * rep)]  # shift heap addresses
        est, inl = solve(optimize_pose, prob, init, True)
        np.testing.assert_array_equal(inl, inl_ref)
        np.testing.assert_allclose(est, ref, atol=1e-9)
        del junk


def test_a_wrong_depth_under_a_right_pixel_is_kept_without_its_depth():
    """Every observation has a depth; a third of the depths are off by 30 % (a keypoint beside an
    edge reading the other side), their pixels exact to noise. Dropped whole, those keypoints are
    lost to tracking; with depth_outliers_as_mono they stay as monocular observations, and the
    pose is as good. True pixel outliers stay outliers either way."""
    prob = make_problem(11, n=300, outlier_frac=0.1, stereo_frac=1.0, noise_px=0.5)
    rng = np.random.default_rng(12)
    bad_depth = ~prob["outlier"] & (rng.random(300) < 0.33)
    pc = prob["pts"] @ prob["cam_from_world"][:3, :3].T + prob["cam_from_world"][:3, 3]
    ur = prob["ur"].copy()
    ur[bad_depth] = prob["uv"][bad_depth, 0] - BF / (1.3 * pc[bad_depth, 2])
    init = perturb(prob["cam_from_world"], 11)
    kw = dict(inv_sigma2=prob["inv_sigma2"], ur=ur, bf=BF)
    _, inl_drop = refine_pose_gn(init, prob["pts"], prob["uv"], K, **kw)
    est, inl_mono = refine_pose_gn(init, prob["pts"], prob["uv"], K, depth_outliers_as_mono=True, **kw)
    assert inl_drop[bad_depth].mean() < 0.5  # most wrong depths fail the 3-dof test (far ones pass at bf 40)
    assert inl_mono[bad_depth].mean() > 0.95
    assert not inl_mono[prob["outlier"]].any()
    assert inl_mono[~prob["outlier"] & ~bad_depth].mean() > 0.95
    rot, trans = pose_error(est, prob["cam_from_world"])
    assert rot < 0.1 and trans < 0.01
    # without wrong depths, only the pixel outliers' fate can differ; the inliers are the same
    clean = dict(kw, ur=prob["ur"])
    a = refine_pose_gn(init, prob["pts"], prob["uv"], K, **clean)
    b = refine_pose_gn(init, prob["pts"], prob["uv"], K, depth_outliers_as_mono=True, **clean)
    np.testing.assert_array_equal(a[1][~prob["outlier"]], b[1][~prob["outlier"]])
    assert pose_error(a[0], b[0])[0] < 1e-3 and pose_error(a[0], b[0])[1] < 1e-4
