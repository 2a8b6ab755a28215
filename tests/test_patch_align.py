"""Patch alignment of tracked keypoints (slam.tracking.patch_align) on images with exact truth.

A textured plane seen by a reference camera and by a second camera turned by a few degrees
(a pure rotation: the second image is the first warped by the homography K R K^-1, exact for
every depth). Keypoints detected loosely in the second image (errors up to 3 px) must move to
the true projections of the reference keypoints' points."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from slam.features.base import synthetic_image
from slam.geometry.camera import PinholeCamera
from slam.mapping.map import Map
from slam.tracking.patch_align import PATCH, PatchAligner

W, H = 640, 480
CAM = PinholeCamera(width=W, height=H, fx=500.0, fy=500.0, cx=320.0, cy=240.0)


def _rot(yaw_deg: float, roll_deg: float) -> np.ndarray:
    y, r = np.radians(yaw_deg), np.radians(roll_deg)
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Rz @ Ry


def _scene(yaw_deg=3.0, roll_deg=6.0, n=120, seed=0, copies=1):
    """(map with one keyframe and n points, aligner that has its patches, frame, truth uv (n, 2),
    cam_from_world of the frame). copies > 1 repeats every corner that many times (as many
    points and keypoints at the same place, each with its own detection error)."""
    rng = np.random.default_rng(seed)
    img0 = cv2.GaussianBlur(synthetic_image(H, W, seed=seed), (0, 0), 1.0)
    grey0 = img0 if img0.ndim == 2 else cv2.cvtColor(img0, cv2.COLOR_BGR2GRAY)
    R = _rot(yaw_deg, roll_deg)
    Hm = CAM.K @ R @ np.linalg.inv(CAM.K)  # image 0 -> image 1
    grey1 = cv2.warpPerspective(grey0, Hm, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # reference keypoints: corners of the texture, away from the borders
    corners = cv2.goodFeaturesToTrack(grey0, n, 0.01, 12).reshape(-1, 2).astype(np.float64)
    corners = corners[(corners[:, 0] > 60) & (corners[:, 0] < W - 60) & (corners[:, 1] > 60) & (corners[:, 1] < H - 60)]
    corners = np.tile(corners, (copies, 1))
    z = 2.0
    pts = CAM.unproject(corners, np.full(len(corners), z))  # world = camera 0
    m = Map(descriptor_dim=8, binary=False)
    with m.lock:
        ids = m.add_points(pts, np.zeros((len(pts), 8), np.float32), np.zeros((len(pts), 3), np.uint8), 0)
        kf = SimpleNamespace(id=0, point_ids=ids.copy(), cam_from_world=np.eye(4), kp_uv=corners,
                             features=SimpleNamespace(keypoints_np=corners.astype(np.float32)))
        m.keyframes[0] = kf
        aligner = PatchAligner(CAM)
        aligner.on_keyframe(m, kf, grey0)
    h = np.c_[corners, np.ones(len(corners))] @ Hm.T
    truth = h[:, :2] / h[:, 2:]
    detected = truth + rng.uniform(-3.0, 3.0, truth.shape)
    fr = SimpleNamespace(image=grey1, kp_uv=detected.copy(), kp_uv_detected=None,
                         features=SimpleNamespace(keypoints_np=detected.astype(np.float32)))
    cam_from_world = np.eye(4)
    cam_from_world[:3, :3] = R
    return m, aligner, fr, truth, ids, cam_from_world


def test_reference_patches_are_stored_once_per_point():
    m, aligner, fr, truth, ids, _ = _scene()
    assert m.patches is not None and m.patches.ok[ids].all()
    assert m.patches.patch.shape[1:] == (PATCH, PATCH)
    before = m.patches.patch[ids].copy()
    aligner.on_keyframe(m, m.keyframes[0], np.zeros((H, W), np.uint8))  # a second image: patches kept
    assert np.array_equal(m.patches.patch[ids], before)


@pytest.mark.parametrize("yaw_deg, roll_deg", [(3.0, 0.0), (3.0, 8.0)])
def test_loose_keypoints_move_to_the_true_projections(yaw_deg, roll_deg):
    m, aligner, fr, truth, ids, cam_from_world = _scene(yaw_deg, roll_deg)
    detected = fr.kp_uv.copy()
    with m.lock:
        n = aligner.refine(m, fr, cam_from_world, ids.copy())
    err_before = np.linalg.norm(detected - truth, axis=1)
    err_after = np.linalg.norm(fr.kp_uv - truth, axis=1)
    assert np.median(err_before) > 1.5
    assert n >= 0.9 * len(ids)
    assert np.median(err_after) < 0.1 and np.mean(err_after < 0.3) > 0.9, np.percentile(err_after, [50, 90])
    assert np.array_equal(fr.kp_uv_detected, detected)  # the detections are kept


def test_more_points_than_one_stacked_template_image_holds():
    """The reference patches are stacked into one image per 1024 points: cv2.remap takes images
    under 32767 rows, i.e. at most 1560 patches of 21 rows. 2000 points align like 120 do."""
    m, aligner, fr, truth, ids, cam_from_world = _scene(3.0, 8.0, copies=30)
    assert len(ids) > 32767 // PATCH
    with m.lock:
        n = aligner.refine(m, fr, cam_from_world, ids.copy())
    err_after = np.linalg.norm(fr.kp_uv - truth, axis=1)
    assert n >= 0.9 * len(ids)
    assert np.median(err_after) < 0.1 and np.mean(err_after < 0.3) > 0.9, np.percentile(err_after, [50, 90])


def test_unmatched_and_unrecognisable_keypoints_stay_where_they_were_detected():
    m, aligner, fr, truth, ids, cam_from_world = _scene()
    detected = fr.kp_uv.copy()
    pids = ids.copy()
    pids[::2] = -1  # unmatched
    noise = np.random.default_rng(1).integers(0, 256, fr.image.shape).astype(np.uint8)
    fr.image = noise  # nothing in the frame looks like the reference patches
    with m.lock:
        n = aligner.refine(m, fr, cam_from_world, pids)
    assert n < 0.1 * len(ids)
    assert np.array_equal(fr.kp_uv[::2], detected[::2])
    moved = np.linalg.norm(fr.kp_uv - detected, axis=1) > 0
    assert moved.sum() == n


def test_refining_twice_starts_again_from_the_detections():
    m, aligner, fr, truth, ids, cam_from_world = _scene()
    detected = fr.kp_uv.copy()
    with m.lock:
        aligner.refine(m, fr, cam_from_world, ids.copy())
        none = np.full(len(ids), -1, dtype=np.int64)
        assert aligner.refine(m, fr, cam_from_world, none) == 0
    assert np.array_equal(fr.kp_uv, detected)
