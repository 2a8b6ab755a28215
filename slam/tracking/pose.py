"""A frame's pose from its 2D-3D candidates: PnP + RANSAC when no reliable prior exists, then
pose-only refinement with outlier rounds (monocular reprojection edges; RGB-D keypoints with
depth add ORB-SLAM's virtual right-camera coordinate ``ur = u - bf / depth``).

Candidates are given as point_ids (N,) int64: the map point matched to each keypoint of the
frame, -1 = none. Poses are cam_from_world (4,4) float64. The caller holds ``map.lock``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.pnp import solve_pnp_ransac
from slam.mapping.depth_weight import DepthWeight
from slam.mapping.map import Map
from slam.optim.ba import optimize_pose
from slam.optim.pose_gn import refine_pose_gn
from slam.tracking.config import TrackingConfig
from slam.types import FrameFeatures, has_depth

MIN_CANDIDATES = 10  # fewer 2D-3D candidates or inliers than this: no pose


class PoseEstimator:
    def __init__(self, cfg: TrackingConfig, camera: PinholeCamera, slam_map: Map, mode: str,
                 depth_weight: Optional[DepthWeight] = None) -> None:
        """depth_weight: the bf of the depth edges, shared with mapping (None: tracking.bf, fixed)."""
        self.cfg = cfg
        self.K = camera.K
        self.map = slam_map
        self.mode = mode
        self.depth = depth_weight if depth_weight is not None else DepthWeight(cfg.bf)
        self.n_depth_rescues = 0  # refinements kept by tracking.depth_outliers_as_mono=rescue

    def observations(self, fr: FrameFeatures, point_ids: np.ndarray):
        """The matched keypoints as pose-refinement input: (kp (K,) int64 keypoint indices,
        pts (K,3) float64 world points, uv (K,2) float64 undistorted px, inv_sigma2 (K,),
        ur (K,) float64 virtual right u in px or NaN without depth)."""
        kp = np.nonzero(point_ids >= 0)[0]
        pts = self.map.pts_xyz[point_ids[kp]]
        uv = fr.kp_uv[kp]
        inv_s2 = 1.0 / fr.kp_sigma2[kp]
        ur = self.depth.virtual_right(uv[:, 0], fr.kp_depth[kp]) if has_depth(self.mode) else np.full(len(kp), np.nan)
        return kp, pts, uv, inv_s2, ur

    def estimate(self, fr: FrameFeatures, point_ids: np.ndarray, prior: Optional[np.ndarray],
                 pred: np.ndarray) -> tuple[Optional[np.ndarray], np.ndarray]:
        """Pose from candidates: Gauss-Newton refinement from `prior` (4,4), or, with prior None,
        PnP + RANSAC (initialised at `pred`) first. Returns (cam_from_world or None, inlier mask
        (N,) bool over the frame's keypoints)."""
        c = self.cfg
        kp, pts, uv, inv_s2, ur = self.observations(fr, point_ids)
        inl_kp = np.zeros(len(point_ids), dtype=bool)
        if len(kp) < MIN_CANDIDATES:
            return None, inl_kp
        if prior is None:
            cam_from_world, inl = solve_pnp_ransac(pts, uv, self.K, cam_from_world_init=pred, threshold_px=c.pnp_threshold_px,
                                                   min_inliers=MIN_CANDIDATES)
            if cam_from_world is None:
                return None, inl_kp
            init = cam_from_world
        else:
            init = prior
        cam_from_world, inl = self._refine_gn(init, pts, uv, inv_s2, ur, MIN_CANDIDATES)
        if inl.sum() < MIN_CANDIDATES:
            return None, inl_kp
        inl_kp[kp[inl]] = True
        return cam_from_world, inl_kp

    def refine(self, fr: FrameFeatures, cam_from_world: np.ndarray, point_ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Final refinement from cam_from_world with tracking.final_pose_refiner (gn | g2o).
        Outliers are set to -1 in point_ids (in place). Returns (cam_from_world, n_inliers);
        with fewer than MIN_CANDIDATES candidates, the pose unchanged and 0."""
        kp, pts, uv, inv_s2, ur = self.observations(fr, point_ids)
        if len(kp) < MIN_CANDIDATES:
            return cam_from_world, 0
        if self.cfg.final_pose_refiner == "g2o":
            cam_from_world, inl = optimize_pose(cam_from_world, pts, uv, self.K, inv_sigma2=inv_s2, ur=ur, bf=self.depth.bf)
        else:
            cam_from_world, inl = self._refine_gn(cam_from_world, pts, uv, inv_s2, ur, self.cfg.min_inliers)
        point_ids[kp[~inl]] = -1
        return cam_from_world, int(inl.sum())

    def _refine_gn(self, init: np.ndarray, pts, uv, inv_s2, ur, needed: int) -> tuple[np.ndarray, np.ndarray]:
        """refine_pose_gn with tracking.depth_outliers_as_mono: always, never, or (rescue) a second
        time with it when fewer than `needed` observations are inliers the first time."""
        mode = self.cfg.depth_outliers_as_mono
        out = refine_pose_gn(init, pts, uv, self.K, inv_sigma2=inv_s2, ur=ur, bf=self.depth.bf,
                             depth_outliers_as_mono=mode == "always")
        if mode == "rescue" and out[1].sum() < needed and np.isfinite(ur).any():
            again = refine_pose_gn(init, pts, uv, self.K, inv_sigma2=inv_s2, ur=ur, bf=self.depth.bf, depth_outliers_as_mono=True)
            if again[1].sum() > out[1].sum():
                self.n_depth_rescues += 1
                return again
        return out
