"""Stereo camera rigs and their rectification.

A :class:`StereoRig` is two :class:`~slam.geometry.camera.PinholeCamera` (left, right) and the
rigid transform ``right_from_left`` between their optical frames (``p_right = right_from_left
@ p_left``, metres). A rig is *rectified* when both cameras are the same ideal pinhole (same K,
no distortion, same image size) and ``right_from_left = [I | (-baseline, 0, 0)]``: then a point
at depth Z (metres) seen at left pixel (u, v) is at right pixel (u - fx * baseline / Z, v), the
disparity ``d = fx * baseline / Z`` (ORB-SLAM's ``bf = fx * baseline``).

KITTI's images are already rectified (:func:`slam.io.kitti.read_calib` builds a rectified rig).
EuRoC's are not: :func:`rectify_stereo` computes the rectifying rotations with
``cv2.stereoRectify`` (zero disparity at infinity, horizontal baseline) and the
``cv2.initUndistortRectifyMap`` lookup tables that turn a raw (distorted) image pair into a
rectified one. The rectified left camera is rotated with respect to the raw left camera by
``rect_from_left``; a trajectory estimated from rectified images is ``world_from_rect`` and
``world_from_rect @ rect_from_left`` is the raw left camera's pose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import se3_inverse

__all__ = ["StereoRig", "StereoRectification", "rectify_stereo"]


def _check_se3(m: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"{name} must be a (4, 4) matrix, got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} is not finite")
    R = m[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0.0 or np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-9:
        raise ValueError(f"{name} is not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)")
    return m


@dataclass
class StereoRig:
    """Two cameras and the transform between them.

    left, right:      intrinsics and distortion of each camera (pixels).
    right_from_left:  (4, 4) float64 SE(3), ``p_right = right_from_left @ p_left``, metres.
    rectified:        True when the images are rectified (see the module docstring); then
                      ``left`` and ``right`` must be the same undistorted pinhole and
                      ``right_from_left`` a pure translation along -x (checked).
    left_from_body:   optional (4, 4) pose of the left camera in the sensor rig's body frame
                      (EuRoC: ``inv(T_BS)`` of cam0); identity when unknown.
    """

    left: PinholeCamera
    right: PinholeCamera
    right_from_left: np.ndarray
    rectified: bool = False
    left_from_body: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        self.right_from_left = _check_se3(self.right_from_left, "right_from_left")
        self.left_from_body = _check_se3(self.left_from_body, "left_from_body")
        if self.baseline <= 1e-6:
            raise ValueError("right_from_left has no translation: a stereo rig needs a baseline > 0")
        if (self.left.width, self.left.height) != (self.right.width, self.right.height):
            raise ValueError(
                f"left and right image sizes differ ({self.left.width}x{self.left.height} vs "
                f"{self.right.width}x{self.right.height})"
            )
        if self.rectified:
            l, r = self.left, self.right
            if l.has_distortion or r.has_distortion:
                raise ValueError("a rectified rig has no distortion; rectify the images first (rectify_stereo)")
            if not np.allclose([l.fx, l.fy, l.cy], [r.fx, r.fy, r.cy], rtol=0, atol=1e-6 * max(l.fx, 1.0)):
                raise ValueError("a rectified rig has the same fx, fy and cy in both cameras")
            t = self.right_from_left[:3, 3]
            if np.abs(self.right_from_left[:3, :3] - np.eye(3)).max() > 1e-6 or abs(t[1]) + abs(t[2]) > 1e-6 or t[0] >= 0:
                raise ValueError(
                    "a rectified rig has right_from_left = [I | (-baseline, 0, 0)] (right camera at +x of the left one)"
                )

    @property
    def baseline(self) -> float:
        """Distance between the two optical centres, metres."""
        return float(np.linalg.norm(self.right_from_left[:3, 3]))

    @property
    def left_from_right(self) -> np.ndarray:
        """(4, 4) inverse of ``right_from_left``."""
        return se3_inverse(self.right_from_left)

    @property
    def bf(self) -> float:
        """``fx * baseline`` (pixels * metres) of a rectified rig: depth Z = bf / disparity."""
        if not self.rectified:
            raise ValueError("bf is defined for a rectified rig only; rectify it first (rectify_stereo)")
        return self.left.fx * self.baseline

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of both images, pixels."""
        return self.left.width, self.left.height

    def depth_from_disparity(self, disparity: np.ndarray) -> np.ndarray:
        """(N,) disparities u_left - u_right (pixels, > 0) of a rectified rig -> (N,) depths, metres
        (0 where the disparity is not positive)."""
        d = np.asarray(disparity, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.where(d > 0, self.bf / np.where(d > 0, d, 1.0), 0.0)

    def rectify(self, alpha: float = 0.0) -> "StereoRectification":
        """:func:`rectify_stereo` of this rig."""
        return rectify_stereo(self, alpha=alpha)


@dataclass
class StereoRectification:
    """The result of :func:`rectify_stereo`.

    raw:             the input (unrectified) rig.
    rig:             the rectified rig: both cameras the pinhole ``K`` (no distortion, same size
                     as the raw images), ``right_from_left = [I | (-baseline, 0, 0)]``.
    rect_from_left:  (4, 4) rotation taking raw-left coordinates to rectified-left ones
                     (``p_rect = rect_from_left @ p_left``); ``rect_from_right`` likewise.
    left_map, right_map: (map_x, map_y), each (H, W) float32: for every rectified pixel the
                     raw pixel to sample (``cv2.remap(raw, map_x, map_y, cv2.INTER_LINEAR)``).
    """

    raw: StereoRig
    rig: StereoRig
    rect_from_left: np.ndarray
    rect_from_right: np.ndarray
    left_map: tuple[np.ndarray, np.ndarray]
    right_map: tuple[np.ndarray, np.ndarray]

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 pinhole matrix of the rectified images."""
        return self.rig.left.K

    @property
    def baseline(self) -> float:
        """Baseline in metres (the same as the raw rig's)."""
        return self.rig.baseline

    def rectify_images(self, left: np.ndarray, right: np.ndarray,
                       interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, np.ndarray]:
        """Raw (H, W[, C]) uint8 left and right images -> rectified images of the same shape."""
        w, h = self.raw.image_size
        for name, img in (("left", left), ("right", right)):
            if img.shape[:2] != (h, w):
                raise ValueError(f"{name} image is {img.shape[1]}x{img.shape[0]}, the rig's cameras are {w}x{h}")
        out_l = cv2.remap(left, self.left_map[0], self.left_map[1], interpolation, borderMode=cv2.BORDER_CONSTANT)
        out_r = cv2.remap(right, self.right_map[0], self.right_map[1], interpolation, borderMode=cv2.BORDER_CONSTANT)
        return out_l, out_r

    def rectify_points(self, uv_raw: np.ndarray, side: str = "left") -> np.ndarray:
        """(N, 2) raw (distorted) pixels of one camera -> (N, 2) rectified pixels."""
        cam, R = (self.raw.left, self.rect_from_left) if side == "left" else (self.raw.right, self.rect_from_right)
        uv = np.asarray(uv_raw, dtype=np.float64).reshape(-1, 2)
        if len(uv) == 0:
            return uv.copy()
        ideal = cam.undistort_points(uv)  # exact inverse of the distortion (Newton-refined)
        rays = np.concatenate([(ideal - [cam.cx, cam.cy]) / [cam.fx, cam.fy], np.ones((len(uv), 1))], axis=1)
        return self.rig.left.project_undistorted(rays @ R[:3, :3].T)

    def unrectify_points(self, uv_rect: np.ndarray, side: str = "left") -> np.ndarray:
        """(N, 2) rectified pixels -> (N, 2) raw (distorted) pixels of one camera."""
        cam, R = (self.raw.left, self.rect_from_left) if side == "left" else (self.raw.right, self.rect_from_right)
        uv = np.asarray(uv_rect, dtype=np.float64).reshape(-1, 2)
        K = self.rig.left
        rays_rect = np.concatenate([(uv - [K.cx, K.cy]) / [K.fx, K.fy], np.ones((len(uv), 1))], axis=1)
        rays = rays_rect @ R[:3, :3]  # R^T applied to each row
        return cam.project(rays)[0]


def _rotation_4x4(R: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = R
    return out


def rectify_stereo(rig: StereoRig, alpha: float = 0.0, new_size: Optional[tuple[int, int]] = None) -> StereoRectification:
    """Rectify a raw stereo rig (``cv2.stereoRectify`` with zero disparity at infinity).

    alpha:    0 keeps only valid pixels in the rectified images (no black borders; the default,
              what feature extraction wants), 1 keeps every raw pixel (black borders).
    new_size: (width, height) of the rectified images; default the raw size.
    Returns a :class:`StereoRectification`. Raises ValueError for a rig whose baseline is mostly
    vertical (after rectification the epipolar lines must be rows).
    """
    if rig.rectified:
        ident = np.eye(4)
        w, h = rig.image_size
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return StereoRectification(rig, rig, ident, ident.copy(), (xs, ys), (xs.copy(), ys.copy()))
    size = rig.image_size
    out_size = tuple(new_size) if new_size is not None else size
    R = rig.right_from_left[:3, :3]
    t = rig.right_from_left[:3, 3]
    R1, R2, P1, P2, _Q, _roi1, _roi2 = cv2.stereoRectify(
        rig.left.K, rig.left.dist_array, rig.right.K, rig.right.dist_array, size, R.copy(), t.reshape(3, 1).copy(),
        flags=cv2.CALIB_ZERO_DISPARITY, alpha=float(alpha), newImageSize=out_size,
    )
    if abs(P2[1, 3]) > abs(P2[0, 3]):
        raise ValueError("the stereo baseline is mostly vertical; only left/right (horizontal) rigs are supported")
    fx, fy, cx, cy = P1[0, 0], P1[1, 1], P1[0, 2], P1[1, 2]
    baseline = -P2[0, 3] / P2[0, 0]
    if baseline <= 0:
        raise ValueError(
            f"after rectification the right camera is at x = {baseline:.4f} m of the left one; "
            "swap left and right (right_from_left must put the right camera at +x)"
        )
    cam = PinholeCamera(width=out_size[0], height=out_size[1], fx=fx, fy=fy, cx=cx, cy=cy)
    right_cam = PinholeCamera(width=out_size[0], height=out_size[1], fx=P2[0, 0], fy=P2[1, 1], cx=P2[0, 2], cy=P2[1, 2])
    rect_rl = np.eye(4)
    rect_rl[0, 3] = -baseline
    rect_from_left = _rotation_4x4(R1)
    rectified = StereoRig(cam, right_cam, rect_rl, rectified=True,
                          left_from_body=rect_from_left @ rig.left_from_body)
    maps = []
    for c, Ri, Pi in ((rig.left, R1, P1), (rig.right, R2, P2)):
        mx, my = cv2.initUndistortRectifyMap(c.K, c.dist_array, Ri, Pi[:3, :3], out_size, cv2.CV_32FC1)
        maps.append((mx, my))
    return StereoRectification(rig, rectified, rect_from_left, _rotation_4x4(R2), maps[0], maps[1])
