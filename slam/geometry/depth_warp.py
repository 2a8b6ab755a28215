"""Exact correspondences between two views from depth and the relative pose.

Used to label training pairs (:mod:`slam.training.ground_truth`) and to check rendered ground
truth (:mod:`slam.synth`): a pixel of image 0 with its depth is back-projected through the
camera model (OpenCV distortion included), moved by ``cam1_from_cam0`` and projected into image 1.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from slam.geometry.camera import as_pinhole_camera

__all__ = ["warp_points", "sample_depth"]


def warp_points(points0: np.ndarray, depth0: np.ndarray, camera, cam1_from_cam0: np.ndarray,
                depth1: Optional[np.ndarray] = None, occlusion_tol: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Exact correspondences: map (N, 2) distorted pixels of image 0 into image 1.

    depth0/depth1: (H, W) float32 metres (0 = invalid); the depth at a point is bilinear when
    its 4 neighbours agree within 1 %, else the nearest pixel's. cam1_from_cam0: (4, 4).
    Returns ((N, 2) float64 distorted pixels in image 1, (N,) bool valid): valid = depth known,
    in front of camera 1, inside image 1 and, when ``depth1`` is given, not occluded (depth1 at
    the target within ``occlusion_tol`` relative).
    """
    cam = as_pinhole_camera(camera)
    pts = np.asarray(points0, np.float64).reshape(-1, 2)
    z = sample_depth(depth0, pts)
    und = cam.undistort_points(pts) if cam.has_distortion else pts
    xn = (und[:, 0] - cam.cx) / cam.fx
    yn = (und[:, 1] - cam.cy) / cam.fy
    p0 = np.stack([xn * z, yn * z, z], 1)
    T = np.asarray(cam1_from_cam0, np.float64)
    p1 = p0 @ T[:3, :3].T + T[:3, 3]
    uv1, front = cam.project(p1)
    valid = (z > 0) & front & cam.in_image(uv1)
    if depth1 is not None and np.any(valid):
        z1 = sample_depth(depth1, np.where(valid[:, None], uv1, 0.0))
        valid &= (z1 > 0) & (np.abs(z1 - p1[:, 2]) <= occlusion_tol * p1[:, 2])
    return uv1, valid


def sample_depth(depth: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N,) float64 depth (metres) of (H, W) ``depth`` at (N, 2) pixels ``pts``: bilinear where the
    4 neighbours are valid and agree within 1 %, else the nearest pixel's (0 = invalid)."""
    H, W = depth.shape
    x = np.clip(pts[:, 0], 0, W - 1)
    y = np.clip(pts[:, 1], 0, H - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, W - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, H - 2)
    fx, fy = x - x0, y - y0
    d00, d01 = depth[y0, x0], depth[y0, x0 + 1]
    d10, d11 = depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]
    quad = np.stack([d00, d01, d10, d11], 1).astype(np.float64)
    bil = (d00 * (1 - fx) * (1 - fy) + d01 * fx * (1 - fy) + d10 * (1 - fx) * fy + d11 * fx * fy)
    ok = (quad.min(1) > 0) & (quad.max(1) <= quad.min(1) * 1.01)
    near = depth[np.clip(np.round(y).astype(int), 0, H - 1), np.clip(np.round(x).astype(int), 0, W - 1)]
    return np.where(ok, bil, near).astype(np.float64)
