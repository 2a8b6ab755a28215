"""Two-view geometry on synthetic scenes with known relative pose."""
import numpy as np
import pytest

from slam.geometry.epipolar import (TwoViewResult, epipolar_segment_mask, estimate_essential, initialize_two_view, parallax_deg,
                                    recover_pose, rotation_two_view, triangulate, triangulation_mask)
from slam.geometry.se3 import camera_center, make_se3, rotation_angle_deg, se3_inverse, so3_exp, transform_points

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])


def project(cam_from_world, pts):
    pc = transform_points(cam_from_world, pts)
    return (pc[:, :2] / pc[:, 2:3]) * [K[0, 0], K[1, 1]] + K[:2, 2], pc[:, 2]


def scene(rng, n=400, depth=(2.0, 6.0)):
    """World = cam0 frame; points in front of cam0 that stay in view of cam1."""
    z = rng.uniform(*depth, n)
    uv = rng.uniform([20, 20], [620, 460], (n, 2))
    return np.c_[(uv - K[:2, 2]) / [K[0, 0], K[1, 1]] * z[:, None], z]


def relative_pose(t=(0.3, 0.05, 0.1), w=(0.02, -0.08, 0.03)):
    return make_se3(so3_exp(np.array(w)), np.array(t))


def angle_between_deg(a, b):
    c = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def make_pair(rng, cam1_from_cam0, n=400, noise=0.5, outlier_frac=0.2, pts=None):
    pts = scene(rng, n) if pts is None else pts
    x0, _ = project(np.eye(4), pts)
    x1, _ = project(cam1_from_cam0, pts)
    x0 = x0 + rng.normal(scale=noise, size=x0.shape)
    x1 = x1 + rng.normal(scale=noise, size=x1.shape)
    n_out = int(outlier_frac * len(pts))
    out = rng.choice(len(pts), n_out, replace=False)
    x1[out] = rng.uniform([0, 0], [640, 480], (n_out, 2))
    is_out = np.zeros(len(pts), bool)
    is_out[out] = True
    return pts, x0, x1, is_out


def test_essential_and_recover_pose_with_noise_and_outliers():
    rng = np.random.default_rng(0)
    gt = relative_pose()
    pts, x0, x1, is_out = make_pair(rng, gt)
    E, inl = estimate_essential(x0, x1, K, threshold_px=1.0)
    assert E is not None and E.shape == (3, 3)
    assert inl.shape == (len(pts),) and inl.dtype == bool
    # most true inliers kept, few outliers accepted
    assert inl[~is_out].mean() > 0.8
    assert inl[is_out].mean() < 0.1
    cam1_from_cam0, front = recover_pose(E, x0, x1, K, inl)
    assert np.linalg.norm(cam1_from_cam0[:3, 3]) == pytest.approx(1.0)
    assert rotation_angle_deg(cam1_from_cam0[:3, :3] @ gt[:3, :3].T) < 0.5
    assert angle_between_deg(cam1_from_cam0[:3, 3], gt[:3, 3]) < 2.0
    assert front.sum() > 0.9 * inl.sum()
    assert not np.any(front & ~inl)


def test_essential_too_few_points():
    E, inl = estimate_essential(np.zeros((3, 2)), np.zeros((3, 2)), K)
    assert E is None and inl.shape == (3,) and not inl.any()


def test_triangulation_exact_and_mask():
    rng = np.random.default_rng(1)
    cam0_from_world = make_se3(so3_exp([0.1, 0.2, -0.1]), [0.5, -0.2, 1.0])
    cam1_from_world = relative_pose() @ cam0_from_world
    pts_cam0 = scene(rng, 200)
    pts = transform_points(se3_inverse(cam0_from_world), pts_cam0)
    x0, _ = project(cam0_from_world, pts)
    x1, _ = project(cam1_from_world, pts)
    tri = triangulate(cam0_from_world, cam1_from_world, x0, x1, K)
    np.testing.assert_allclose(tri, pts, atol=1e-8)
    mask = triangulation_mask(tri, cam0_from_world, cam1_from_world, x0, x1, K, 2.0, 0.0)
    assert mask.all()

    # points behind both cameras: same pixels, mirrored through the camera centre -> masked
    c0 = camera_center(cam0_from_world)
    behind = 2 * c0 - pts[:10]
    bx0, z0 = project(cam0_from_world, behind)
    bx1, z1 = project(cam1_from_world, behind)
    assert np.all(z0 < 0)
    tri_b = triangulate(cam0_from_world, cam1_from_world, bx0, bx1, K)
    np.testing.assert_allclose(tri_b, behind, atol=1e-8)
    assert not triangulation_mask(tri_b, cam0_from_world, cam1_from_world, bx0, bx1, K, 2.0, 0.0).any()

    # a wrong correspondence has a large reprojection error -> masked
    xw = x1.copy()
    xw[:5] += 30.0
    tri_w = triangulate(cam0_from_world, cam1_from_world, x0, xw, K)
    m = triangulation_mask(tri_w, cam0_from_world, cam1_from_world, x0, xw, K, 2.0, 0.0)
    assert not m[:5].any() and m[5:].all()

    # parallax: far points have small parallax and are removed by the parallax threshold
    par = parallax_deg(tri, c0, camera_center(cam1_from_world))
    assert par.shape == (200,) and np.all(par > 0)
    m_par = triangulation_mask(tri, cam0_from_world, cam1_from_world, x0, x1, K, 2.0, np.median(par))
    assert 0.3 < m_par.mean() < 0.7
    # known value: point at equal distance with rays 90 degrees apart
    assert parallax_deg(np.array([[1.0, 1.0, 0.0]]), np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]))[0] \
        == pytest.approx(90.0)


def test_initialize_two_view_accepts_general_scene():
    rng = np.random.default_rng(2)
    gt = relative_pose()
    pts, x0, x1, is_out = make_pair(rng, gt, n=500)
    res, reason = initialize_two_view(x0, x1, K)
    assert reason == "ok"
    assert isinstance(res, TwoViewResult)
    assert res.model == "essential"
    assert rotation_angle_deg(res.cam1_from_cam0[:3, :3] @ gt[:3, :3].T) < 0.5
    assert angle_between_deg(res.cam1_from_cam0[:3, 3], gt[:3, 3]) < 2.0
    assert res.valid.sum() >= 50
    # a random outlier can land on its epipolar line by chance; it must stay rare
    gross = is_out & (np.abs(x1 - project(gt, pts)[0]).max(1) > 5)
    assert (res.valid & gross).sum() <= 0.03 * res.valid.sum()
    assert np.median(res.pts_cam0[res.valid, 2]) == pytest.approx(1.0)
    assert np.all(np.isnan(res.pts_cam0[~res.valid]))
    # the scale-free structure matches the ground truth up to the recovered scale
    s = np.linalg.norm(res.cam1_from_cam0[:3, 3]) / np.linalg.norm(gt[:3, 3])
    good = res.valid & ~is_out
    rel = np.linalg.norm(res.pts_cam0[good] - s * pts[good], axis=1) / np.linalg.norm(s * pts[good], axis=1)
    assert np.median(rel) < 0.05  # depth noise at 0.5 px, 0.33 m baseline, 2-6 m depth is ~2-3 %
    assert res.median_parallax_deg > 1.0


def test_initialize_two_view_rejects_pure_rotation():
    rng = np.random.default_rng(3)
    rot = make_se3(so3_exp([0.02, -0.1, 0.03]), np.zeros(3))
    pts, x0, x1, _ = make_pair(rng, rot, n=500, outlier_frac=0.1)
    res, reason = initialize_two_view(x0, x1, K)
    assert res is None
    assert reason != "ok" and len(reason) > 10


def test_rotation_two_view_recovers_a_pure_rotation_with_outliers():
    """What initialize_two_view refuses (no baseline), rotation_two_view accepts: the rotation to
    0.05 deg under 0.5 px noise and 30 % outliers, the outliers left out, each point at depth 1
    on its reference ray."""
    rng = np.random.default_rng(4)
    rot = make_se3(so3_exp([0.02, -0.1, 0.03]), np.zeros(3))
    pts, x0, x1, is_out = make_pair(rng, rot, n=500, outlier_frac=0.3)
    res = rotation_two_view(x0, x1, K, threshold_px=3.0, min_inliers=100)
    assert res is not None and res.model == "rotation" and res.median_parallax_deg == 0.0
    assert rotation_angle_deg(res.cam1_from_cam0[:3, :3] @ rot[:3, :3].T) < 0.05
    assert np.allclose(res.cam1_from_cam0[:3, 3], 0.0)
    assert res.valid[~is_out].mean() > 0.99 and res.valid[is_out].mean() < 0.02
    v = res.valid
    np.testing.assert_allclose(res.pts_cam0[v, 2], 1.0)
    np.testing.assert_allclose(res.pts_cam0[v, :2] * [K[0, 0], K[1, 1]] + K[:2, 2], x0[v], atol=1e-9)  # on x0's rays
    assert np.isnan(res.pts_cam0[~v]).all()


def test_rotation_two_view_refuses_a_real_baseline():
    """A sideways step of 0.3 m at 2-6 m depth moves points by 26-78 px more than any rotation
    explains: no rotation start."""
    rng = np.random.default_rng(5)
    pts, x0, x1, _ = make_pair(rng, make_se3(so3_exp([0.0, 0.0, 0.0]), np.array([0.3, 0.0, 0.0])), n=500, outlier_frac=0.0)
    assert rotation_two_view(x0, x1, K, threshold_px=3.0, min_inliers=100) is None


def test_rotation_two_view_needs_the_rotation_to_explain_most_matches():
    """Enough inliers in number but a minority of the matches (forward motion: only the points
    near the focus of expansion fit a rotation): refused at the default share of one half."""
    rng = np.random.default_rng(6)
    rot = make_se3(so3_exp([0.01, 0.05, 0.0]), np.zeros(3))
    pts, x0, x1, is_out = make_pair(rng, rot, n=500, outlier_frac=0.6)
    assert rotation_two_view(x0, x1, K, threshold_px=3.0, min_inliers=100) is None
    res = rotation_two_view(x0, x1, K, threshold_px=3.0, min_inliers=100, min_share=0.3)
    assert res is not None and res.valid[~is_out].mean() > 0.99


def test_initialize_two_view_rejects_tiny_baseline_and_few_matches():
    rng = np.random.default_rng(4)
    pts, x0, x1, _ = make_pair(rng, relative_pose(t=(0.01, 0.0, 0.0)), n=500, outlier_frac=0.0)
    res, reason = initialize_two_view(x0, x1, K)
    assert res is None and reason != "ok"
    res, reason = initialize_two_view(x0[:20], x1[:20], K)
    assert res is None and "too few" in reason


def test_initialize_two_view_planar_scene_uses_homography():
    rng = np.random.default_rng(5)
    gt = relative_pose(t=(0.4, 0.0, 0.05), w=(0.0, -0.05, 0.02))
    uv = rng.uniform([20, 20], [620, 460], (400, 2))
    rays = np.c_[(uv - K[:2, 2]) / [K[0, 0], K[1, 1]], np.ones(400)]
    n_plane, d = np.array([0.0, -0.3, -1.0]) / np.linalg.norm([0.0, -0.3, -1.0]), 3.0  # n.X + d = 0
    pts = rays * (-d / (rays @ n_plane))[:, None]
    assert np.all(pts[:, 2] > 0)
    pts, x0, x1, _ = make_pair(rng, gt, pts=pts, noise=0.3, outlier_frac=0.1)
    res, reason = initialize_two_view(x0, x1, K)
    assert reason == "ok", reason
    assert res.model == "homography"
    assert rotation_angle_deg(res.cam1_from_cam0[:3, :3] @ gt[:3, :3].T) < 1.0
    assert angle_between_deg(res.cam1_from_cam0[:3, 3], gt[:3, 3]) < 5.0


def test_fundamental_from_poses_satisfies_epipolar_constraint():
    from slam.geometry.epipolar import fundamental_from_poses

    rng = np.random.default_rng(5)
    K0 = np.array([[520.0, 0.0, 320.0], [0.0, 515.0, 240.0], [0.0, 0.0, 1.0]])
    K1 = np.array([[480.0, 0.0, 300.0], [0.0, 482.0, 250.0], [0.0, 0.0, 1.0]])
    cam1_from_cam0 = make_se3(so3_exp([0.05, -0.1, 0.03]), [0.3, -0.05, 0.1])
    pts0 = np.c_[rng.uniform(-2, 2, 100), rng.uniform(-1.5, 1.5, 100), rng.uniform(2, 6, 100)]
    pts1 = transform_points(cam1_from_cam0, pts0)
    x0 = pts0[:, :2] / pts0[:, 2:] @ K0[:2, :2].T + K0[:2, 2]
    x1 = pts1[:, :2] / pts1[:, 2:] @ K1[:2, :2].T + K1[:2, 2]
    F = fundamental_from_poses(cam1_from_cam0, K0, K1)
    lines = np.c_[x0, np.ones(100)] @ F.T
    dist_px = np.abs((lines * np.c_[x1, np.ones(100)]).sum(1)) / np.hypot(lines[:, 0], lines[:, 1])
    assert dist_px.max() < 1e-6
    # a point off its epipolar line is measurably off
    lines_bad = (np.c_[x1 + [0.0, 5.0], np.ones(100)] * lines).sum(1) / np.hypot(lines[:, 0], lines[:, 1])
    assert np.median(np.abs(lines_bad)) > 1.0
    # pure rotation: no epipolar geometry
    assert np.abs(fundamental_from_poses(make_se3(so3_exp([0.1, 0.0, 0.0]), [0.0, 0.0, 0.0]), K0)).max() == 0.0


def test_refine_two_view_bundle_adjusts_and_renormalises():
    """ORB-SLAM's initial-map BA: the two-view map fits the matches better, the gross outliers
    leave it, the median depth is 1 again, the structure stays that of the truth."""
    from slam.tracking.initializer import refine_two_view
    rng = np.random.default_rng(5)
    gt = relative_pose(t=(0.12, 0.02, 0.03))
    pts, x0, x1, is_out = make_pair(rng, gt, n=500, noise=1.0, outlier_frac=0.1)
    res, reason = initialize_two_view(x0, x1, K, threshold_px=2.0)
    assert reason == "ok"
    ref = refine_two_view(res, x0, x1, K)
    assert ref.pts_cam0.shape == res.pts_cam0.shape and ref.valid.shape == res.valid.shape
    assert not np.any(ref.valid & ~res.valid)  # BA only drops points
    assert 0.9 * res.valid.sum() <= ref.valid.sum()
    assert np.median(ref.pts_cam0[ref.valid, 2]) == pytest.approx(1.0)
    assert np.all(np.isnan(ref.pts_cam0[~ref.valid]))

    def reproj(r, sel):
        e0 = np.linalg.norm(project(np.eye(4), r.pts_cam0[sel])[0] - x0[sel], axis=1)
        e1 = np.linalg.norm(project(r.cam1_from_cam0, r.pts_cam0[sel])[0] - x1[sel], axis=1)
        return float(np.mean(e0 ** 2 + e1 ** 2))

    both = ref.valid & res.valid
    assert reproj(ref, both) < reproj(res, both)  # triangulation was near-optimal already: a small gain
    gross = is_out & (np.abs(x1 - project(gt, pts)[0]).max(1) > 5)
    assert (ref.valid & gross).sum() <= (res.valid & gross).sum()
    def structure_err(r):  # median relative point error against the truth at the recovered scale
        s = np.linalg.norm(r.cam1_from_cam0[:3, 3]) / np.linalg.norm(gt[:3, 3])
        good = both & ~is_out
        return np.median(np.linalg.norm(r.pts_cam0[good] - s * pts[good], axis=1) / np.linalg.norm(s * pts[good], axis=1))

    assert structure_err(ref) < min(0.1, 1.05 * structure_err(res))  # 1 px noise, 1.5 deg parallax
    assert rotation_angle_deg(ref.cam1_from_cam0[:3, :3] @ gt[:3, :3].T) < 0.5


def _segment_distance_by_sampling(x0, x1, T, lo, hi, n=4000):
    """(N, M) distance of each x1 to the sampled image of each x0's ray at depths lo..hi that
    lie in front of camera 1 (inf where none does): the reference for epipolar_segment_mask."""
    out = np.full((len(x0), len(x1)), np.inf)
    depths = np.geomspace(lo, hi, n)
    for i, uv in enumerate(x0):
        ray = np.r_[(uv - K[:2, 2]) / [K[0, 0], K[1, 1]], 1.0]
        pc = (np.outer(depths, ray)) @ T[:3, :3].T + T[:3, 3]
        front = pc[:, 2] > 1e-3 * lo
        if not front.any():
            continue
        q = pc[front, :2] / pc[front, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
        out[i] = np.sqrt(((x1[:, None, :] - q[None]) ** 2).sum(2)).min(1)
    return out


@pytest.mark.parametrize("t", [(0.3, 0.05, 0.1), (0.02, 0.0, 0.6), (0.0, 0.0, -0.5)])
def test_epipolar_segment_mask_equals_the_sampled_segment(t):
    """A pair is kept exactly when x1 lies within r0 + r1 px of the image of x0's ray between the
    two depths, cut to what is in front of camera 1: sideways, forward and backward motion
    (where part of each ray lies behind camera 1), against dense sampling of the rays."""
    rng = np.random.default_rng(1)
    T = relative_pose(t=t)
    x0 = rng.uniform([0, 0], [640, 480], (60, 2))
    x1 = rng.uniform([-100, -100], [740, 580], (400, 2))
    lo, hi = 0.2, 5.0
    r0 = rng.uniform(2.0, 4.0, 60)
    r1 = rng.uniform(2.0, 4.0, 400)
    got = epipolar_segment_mask(x0, x1, K, T, (lo, hi), r0, r1)
    d = _segment_distance_by_sampling(x0, x1, T, lo, hi)
    r = r0[:, None] + r1[None, :]
    clear = np.abs(d - r) > 0.5  # the samples lie well under a pixel apart
    assert got.shape == (60, 400) and clear.mean() > 0.97
    np.testing.assert_array_equal(got[clear], (d <= r)[clear])
    assert 0 < got.sum() < got.size


def test_epipolar_segment_mask_keeps_true_partners_and_drops_points_out_of_view_or_depth():
    """Points of a scene at 2-6 m seen from two cameras: every true pair is kept; the same pairs
    with the partner moved 10 px across its epipolar line are not; a depth range that stops short
    of the points drops them; a pure rotation (a segment shrunk to a point) still keeps the pair."""
    rng = np.random.default_rng(2)
    pts = scene(rng, n=200)
    T = relative_pose()
    x0, _ = project(np.eye(4), pts)
    x1, _ = project(T, pts)
    keep = epipolar_segment_mask(x0, x1, K, T, (0.5, 24.0), 1.0, 1.0)
    assert keep[np.arange(200), np.arange(200)].all()
    # across the epipolar line: the line's normal in image 1 at the partner
    F = np.linalg.inv(K).T @ np.array([[0, -T[2, 3], T[1, 3]], [T[2, 3], 0, -T[0, 3]], [-T[1, 3], T[0, 3], 0]]) @ T[:3, :3] @ np.linalg.inv(K)
    lines = np.c_[x0, np.ones(200)] @ F.T
    normal = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    moved = epipolar_segment_mask(x0, x1 + 10.0 * normal, K, T, (0.5, 24.0), 1.0, 1.0)
    assert not moved[np.arange(200), np.arange(200)].any()
    z = pts[:, 2]
    short = epipolar_segment_mask(x0, x1, K, T, (0.5, 1.5), 1.0, 1.0)
    assert not short[np.arange(200), np.arange(200)][z > 2.0].any()
    R = relative_pose(t=(0.0, 0.0, 0.0))
    xr, _ = project(R, pts)
    rot = epipolar_segment_mask(x0, xr, K, R, (0.5, 24.0), 1.0, 1.0)
    assert rot[np.arange(200), np.arange(200)].all() and rot.sum() < 0.05 * rot.size
    with pytest.raises(ValueError):
        epipolar_segment_mask(x0, x1, K, T, (2.0, 1.0), 1.0, 1.0)
