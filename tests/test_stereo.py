"""Stereo rigs and rectification (slam.geometry.stereo) on a synthetic rig with known geometry."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.geometry.camera import PinholeCamera
from slam.geometry.stereo import StereoRig, rectify_stereo

W, H = 752, 480


def euroc_like_rig() -> StereoRig:
    """Two distorted cameras 11 cm apart, slightly rotated against each other (like EuRoC's)."""
    left = PinholeCamera(width=W, height=H, fx=458.654, fy=457.296, cx=367.215, cy=248.375,
                         dist=(-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05))
    right = PinholeCamera(width=W, height=H, fx=457.587, fy=456.134, cx=379.999, cy=255.238,
                          dist=(-0.28368365, 0.07451284, -0.00010473, -3.55590700e-05))
    right_from_left = np.eye(4)
    right_from_left[:3, :3] = Rotation.from_rotvec([0.004, -0.002, 0.003]).as_matrix()
    right_from_left[:3, 3] = [-0.110, 0.0004, -0.0008]
    return StereoRig(left, right, right_from_left)


def scene_points(n: int = 400, seed: int = 0) -> np.ndarray:
    """(n, 3) points in the left camera frame, 1.5-8 m away, inside both views."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(1.5, 8.0, n)
    x = rng.uniform(-0.5, 0.5, n) * z
    y = rng.uniform(-0.35, 0.35, n) * z
    return np.stack([x, y, z], axis=1)


def test_rectified_rows_match_and_disparity_gives_depth():
    rig = euroc_like_rig()
    rect = rectify_stereo(rig)
    pts = scene_points()
    uv_l, _ = rig.left.project(pts)
    uv_r, _ = rig.right.project((rig.right_from_left[:3, :3] @ pts.T).T + rig.right_from_left[:3, 3])
    keep = rig.left.in_image(uv_l) & rig.right.in_image(uv_r)
    rl = rect.rectify_points(uv_l[keep], "left")
    rr = rect.rectify_points(uv_r[keep], "right")
    np.testing.assert_allclose(rl[:, 1], rr[:, 1], atol=1e-6)  # epipolar lines are rows
    depth_rect = (rect.rect_from_left[:3, :3] @ pts[keep].T).T[:, 2]
    np.testing.assert_allclose(rect.rig.depth_from_disparity(rl[:, 0] - rr[:, 0]), depth_rect, rtol=1e-6)
    assert rect.baseline == pytest.approx(rig.baseline, rel=1e-9)
    assert rect.rig.rectified and not rect.rig.left.has_distortion
    np.testing.assert_allclose(rect.rig.right_from_left[:3, 3], [-rig.baseline, 0, 0], atol=1e-12)


def test_points_round_trip_through_rectification():
    rect = rectify_stereo(euroc_like_rig())
    rng = np.random.default_rng(1)
    uv = np.stack([rng.uniform(40, W - 40, 500), rng.uniform(40, H - 40, 500)], axis=1)
    for side in ("left", "right"):
        back = rect.unrectify_points(rect.rectify_points(uv, side), side)
        np.testing.assert_allclose(back, uv, atol=1e-6)


def test_remap_maps_agree_with_the_point_mapping_and_move_image_content():
    rig = euroc_like_rig()
    rect = rectify_stereo(rig)
    rng = np.random.default_rng(2)
    uv_rect = np.stack([rng.uniform(20, W - 20, 300), rng.uniform(20, H - 20, 300)], axis=1)
    raw = rect.unrectify_points(uv_rect, "left")
    ix, iy = np.round(uv_rect).astype(int).T
    mx, my = rect.left_map
    # the map at an integer rectified pixel is the raw pixel it samples
    np.testing.assert_allclose(np.stack([mx[iy, ix], my[iy, ix]], 1), rect.unrectify_points(np.stack([ix, iy], 1), "left"), atol=0.02)
    # a bright dot drawn at a raw pixel lands at the rectified pixel the point mapping predicts
    img = np.zeros((H, W), np.uint8)
    u, v = raw[0]
    cv2.circle(img, (int(round(u)), int(round(v))), 3, 255, -1)
    out, _ = rect.rectify_images(img, img)
    ys, xs = np.nonzero(out > 128)
    centre = np.array([xs.mean(), ys.mean()])
    expected = rect.rectify_points(np.array([[round(u), round(v)]], float), "left")[0]
    assert np.linalg.norm(centre - expected) < 0.6


def test_rig_checks():
    cam = PinholeCamera(width=W, height=H, fx=400, fy=400, cx=376, cy=240)
    with pytest.raises(ValueError, match="baseline"):
        StereoRig(cam, cam, np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 0.1  # right camera to the LEFT: not a valid rectified pair
    with pytest.raises(ValueError, match=r"right_from_left = \[I \| \(-baseline"):
        StereoRig(cam, cam, shifted, rectified=True)
    other = PinholeCamera(width=640, height=480, fx=400, fy=400, cx=320, cy=240)
    shifted[0, 3] = -0.1
    with pytest.raises(ValueError, match="image sizes differ"):
        StereoRig(cam, other, shifted)
    rig = StereoRig(cam, cam, shifted, rectified=True)
    assert rig.bf == pytest.approx(40.0)
    assert rectify_stereo(rig).rig is rig  # already rectified: nothing to do
