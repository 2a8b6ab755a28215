"""Absolute pose from 3D-2D correspondences (PnP + RANSAC + Levenberg-Marquardt refinement).

Inputs are world points (N, 3) float64 metres and UNDISTORTED pixels (N, 2) float64 with K (3, 3).
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from slam.geometry.se3 import make_se3


def _pose_from_rt(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    R, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))
    return make_se3(R, np.asarray(tvec, dtype=np.float64).reshape(3))


def _rt_from_pose(cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rvec, _ = cv2.Rodrigues(np.ascontiguousarray(cam_from_world[:3, :3]))
    return rvec.reshape(3, 1).astype(np.float64), cam_from_world[:3, 3].reshape(3, 1).astype(np.float64).copy()


def reprojection_errors(cam_from_world: np.ndarray, pts_world: np.ndarray, uv: np.ndarray,
                        K: np.ndarray) -> np.ndarray:
    """(N,) reprojection error in pixels; +inf for points with depth <= 0."""
    pc = pts_world @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    z = pc[:, 2]
    ok = z > 1e-9
    zs = np.where(ok, z, 1.0)
    u = K[0, 0] * pc[:, 0] / zs + K[0, 2]
    v = K[1, 1] * pc[:, 1] / zs + K[1, 2]
    err = np.hypot(u - uv[:, 0], v - uv[:, 1])
    return np.where(ok, err, np.inf)


def _refine(cam_from_world: np.ndarray, pts: np.ndarray, uv: np.ndarray, K: np.ndarray,
            threshold_px: float, rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """LM refinement on the inliers of the current pose; inliers re-evaluated after each round."""
    inl = reprojection_errors(cam_from_world, pts, uv, K) < threshold_px
    for _ in range(rounds):
        if inl.sum() < 4:
            break
        rvec, tvec = _rt_from_pose(cam_from_world)
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-10)
        rvec, tvec = cv2.solvePnPRefineLM(pts[inl], uv[inl], K, None, rvec, tvec, criteria=crit)
        cam_from_world = _pose_from_rt(rvec, tvec)
        new_inl = reprojection_errors(cam_from_world, pts, uv, K) < threshold_px
        if np.array_equal(new_inl, inl):
            break
        inl = new_inl
    return cam_from_world, inl


def solve_pnp_ransac(pts_world: np.ndarray, uv: np.ndarray, K: np.ndarray,
                     cam_from_world_init: Optional[np.ndarray] = None, threshold_px: float = 3.0,
                     iterations: int = 200, confidence: float = 0.999,
                     min_inliers: int = 10) -> tuple[Optional[np.ndarray], np.ndarray]:
    """Robust camera pose.

    pts_world: (N, 3) world points (metres); uv: (N, 2) undistorted pixels; K: (3, 3).
    cam_from_world_init: optional (4, 4) guess (e.g. constant-velocity prediction). It is
        refined on its own inliers and competes with the RANSAC solution; the candidate with
        more inliers (then lower error) wins, so a good guess helps when RANSAC struggles and a
        bad one costs nothing.
    RANSAC uses AP3P minimal samples (4 points) and an EPnP fit on the consensus set, then
    ``solvePnPRefineLM`` on the inliers (re-selected with ``threshold_px`` after each round).
    Returns (cam_from_world (4, 4) or None, inliers (N,) bool); None with all-false when
    N < 4 or fewer than ``min_inliers`` inliers.
    """
    pts = np.ascontiguousarray(np.asarray(pts_world, dtype=np.float64))
    uv = np.ascontiguousarray(np.asarray(uv, dtype=np.float64))
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"pts_world must be (N, 3), got {pts.shape}")
    if uv.ndim != 2 or uv.shape[1] != 2 or uv.shape[0] != pts.shape[0]:
        raise ValueError(f"uv must be ({pts.shape[0]}, 2) undistorted pixels, got {uv.shape}")
    K = np.asarray(K, dtype=np.float64)
    n = pts.shape[0]
    none = (None, np.zeros(n, dtype=bool))
    if n < 4:
        return none
    finite = np.all(np.isfinite(pts), axis=1) & np.all(np.isfinite(uv), axis=1)
    if finite.sum() < 4:
        return none

    candidates = []
    try:
        ok, rvec, tvec, idx = cv2.solvePnPRansac(
            pts[finite], uv[finite], K, None, iterationsCount=int(iterations),
            reprojectionError=float(threshold_px), confidence=float(confidence),
            flags=cv2.SOLVEPNP_AP3P)
    except cv2.error:
        ok, idx = False, None
    if ok and idx is not None and len(idx) >= 4 and np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec)):
        candidates.append(_pose_from_rt(rvec, tvec))
    if cam_from_world_init is not None:
        init = np.asarray(cam_from_world_init, dtype=np.float64)
        if init.shape != (4, 4):
            raise ValueError(f"cam_from_world_init must be (4, 4), got {init.shape}")
        candidates.append(init.copy())

    best, best_inl, best_key = None, None, None
    for cand in candidates:
        refined, inl = _refine(cand, pts, uv, K, threshold_px)
        inl &= finite
        if inl.sum() == 0:
            continue
        err = reprojection_errors(refined, pts[inl], uv[inl], K)
        key = (int(inl.sum()), -float(np.mean(err)))
        if best_key is None or key > best_key:
            best, best_inl, best_key = refined, inl, key
    if best is None or best_inl.sum() < max(min_inliers, 4):
        return none
    return best, best_inl
