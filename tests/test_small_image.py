"""The rotation between two frames from small blurred images (slam.tracking.small_image).

A pure rotation needs no depth: the second image is the first resampled through the turned
camera, exactly, with the camera's lens distortion on both sides. The alignment must recover
the rotation from a wrong start, through the distortion and a change of exposure."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.features.base import synthetic_image
from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import so3_exp, so3_log
from slam.tracking.small_image import RotationAligner, SmallImageMaker, align_rotation, small_camera_matrix

W, H = 640, 480
CAM = PinholeCamera(width=W, height=H, fx=520.0, fy=518.0, cx=318.6, cy=255.3,
                    dist=(0.2624, -0.9531, -0.0054, 0.0026, 1.1633))  # TUM fr1's distortion


def _turned(img0: np.ndarray, cur_from_last: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """img0 seen by the camera turned by cur_from_last (3,3): each pixel of the new image
    (distorted) -> its ray -> the first camera's pixel (distorted) -> a sample of img0."""
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    uv1 = camera.undistort_points(np.stack([gx.ravel(), gy.ravel()], axis=1))
    rays = np.c_[uv1, np.ones(len(uv1))] @ np.linalg.inv(camera.K).T
    p0 = rays @ cur_from_last  # last_from_cur @ ray, as rows
    uv0 = camera.distort_points(camera.project_undistorted(p0))
    mx = uv0[:, 0].reshape(H, W).astype(np.float32)
    my = uv0[:, 1].reshape(H, W).astype(np.float32)
    return cv2.remap(img0, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.linalg.norm(so3_log(R))))


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    img = synthetic_image(H, W, seed=3)
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


@pytest.mark.parametrize("omega_deg", [(2.0, -1.5, 0.5), (-4.0, 3.0, 2.0), (0.3, 0.2, -6.0)])
def test_the_rotation_between_two_views_is_recovered_from_no_turn(texture, omega_deg):
    R = so3_exp(np.radians(omega_deg))
    cur = _turned(texture, R, CAM)
    mk = SmallImageMaker(CAM)
    res = align_rotation(mk.make(texture), mk.make(cur), mk.K_small, [np.eye(3)])
    assert res is not None
    assert _angle_deg(res.cur_from_last @ R.T) < 0.1
    assert res.residual < res.start_residual
    assert res.overlap > 0.6


def test_the_best_start_is_taken(texture):
    """8 degrees is beyond what the alignment reaches from no turn at 80 px; a start near the
    truth (as the constant-velocity turn is) among wrong ones still gets there."""
    R = so3_exp(np.radians([8.0, -3.0, 1.0]))
    cur = _turned(texture, R, CAM)
    mk = SmallImageMaker(CAM)
    near = so3_exp(np.radians([6.5, -2.0, 0.0]))
    res = align_rotation(mk.make(texture), mk.make(cur), mk.K_small, [np.eye(3), near, near.T])
    assert _angle_deg(res.cur_from_last @ R.T) < 0.1


def test_exposure_change_is_absorbed(texture):
    R = so3_exp(np.radians([1.5, 1.0, -0.5]))
    cur = np.clip(_turned(texture, R, CAM).astype(np.float32) * 0.7 + 30.0, 0, 255).astype(np.uint8)
    mk = SmallImageMaker(CAM)
    res = align_rotation(mk.make(texture), mk.make(cur), mk.K_small, [np.eye(3)])
    assert _angle_deg(res.cur_from_last @ R.T) < 0.1


def test_the_small_image_is_undistorted(texture):
    """Without the undistortion (a maker that believes the lens has none), the same pair is
    aligned worse: the distortion is what the maker removes."""
    R = so3_exp(np.radians([5.0, -3.0, 2.0]))  # the view moves through the distorted border
    cur = _turned(texture, R, CAM)
    good = SmallImageMaker(CAM)
    bare = PinholeCamera(width=W, height=H, fx=CAM.fx, fy=CAM.fy, cx=CAM.cx, cy=CAM.cy)
    wrong = SmallImageMaker(bare)
    e_good = _angle_deg(align_rotation(good.make(texture), good.make(cur), good.K_small, [np.eye(3)]).cur_from_last @ R.T)
    e_wrong = _angle_deg(align_rotation(wrong.make(texture), wrong.make(cur), wrong.K_small, [np.eye(3)]).cur_from_last @ R.T)
    assert e_good < 0.05
    assert e_wrong > 5 * e_good


def test_small_camera_matrix_keeps_pixel_centres():
    K = small_camera_matrix(CAM, 80)
    s = 80 / W
    # the principal point, a full-resolution pixel position, maps to its place on the small grid
    assert K[0, 2] == pytest.approx((CAM.cx + 0.5) * s - 0.5)
    assert K[1, 1] == pytest.approx(CAM.fy * s)
    mk = SmallImageMaker(CAM)
    assert mk.make(np.zeros((H, W), np.uint8)).shape == (60, 80)


def test_the_tracker_predicts_with_the_aligned_rotation_and_the_velocity_translation(texture):
    """Tracker._rotation_prediction: the last pose, turned by the small images' rotation, moved
    by the constant-velocity translation; the velocity's own (wrong: a jerk) rotation is not
    used. A velocity whose rotation agrees within tracking.rotation_prior_min_px is kept."""
    from types import SimpleNamespace

    from slam.tracking.tracker import Tracker

    R = so3_exp(np.radians([3.0, -2.0, 1.5]))
    mk = SmallImageMaker(CAM)
    last_pose = np.eye(4)
    last_pose[:3, :3] = so3_exp(np.radians([10.0, 5.0, 0.0]))
    last_pose[:3, 3] = [0.1, -0.2, 0.3]
    velocity = np.eye(4)
    velocity[:3, :3] = so3_exp(np.radians([-1.0, 1.0, 0.0]))  # a constant-velocity turn that is wrong
    velocity[:3, 3] = [0.01, 0.02, -0.03]
    fake = SimpleNamespace(_aligner=RotationAligner(mk.K_small), _focal=CAM.fx, cfg=SimpleNamespace(rotation_prior_min_px=5.0), velocity=velocity, rotation_prior_ms=0.0, n_rotation_alignments=0,
                           last=SimpleNamespace(data=SimpleNamespace(small_image=mk.make(texture)), cam_from_world=last_pose))
    fr = SimpleNamespace(small_image=mk.make(_turned(texture, R, CAM)))
    pred = Tracker._rotation_prediction(fake, fr)
    step = pred @ np.linalg.inv(last_pose)
    assert _angle_deg(step[:3, :3] @ R.T) < 0.1
    np.testing.assert_allclose(step[:3, 3], velocity[:3, 3], atol=1e-12)
    assert fake.n_rotation_alignments == 1
    fake.velocity = velocity.copy()
    fake.velocity[:3, :3] = so3_exp(np.radians([3.2, -2.1, 1.5]))  # 0.22 deg from the truth: 2 px, no jerk
    assert Tracker._rotation_prediction(fake, fr) is None
    fake.cfg.rotation_prior_min_px = 0.0
    assert Tracker._rotation_prediction(fake, fr) is not None
    fake.last.data.small_image = None  # a frame without a small image (rotation prior off): no prediction
    assert Tracker._rotation_prediction(fake, fr) is None
