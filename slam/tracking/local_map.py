"""The local map of a tracked frame, and the second stage of tracking against it.

The local map is the points of the keyframes that share points with the frame (the best
tracking.n_local_keyframes of them, the reference keyframe, and a bounded second ring of their
neighbours), as in ORB-SLAM's UpdateLocalMap. The keyframe sharing most points becomes the
reference keyframe. Point ids are (P,) int64; poses cam_from_world (4,4) float64. The caller
holds ``map.lock``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from slam.mapping.map import Map
from slam.tracking.config import TrackingConfig
from slam.tracking.pose import PoseEstimator
from slam.tracking.search import CandidateSearch
from slam.types import FrameFeatures

SECOND_RING_FROM = 2  # neighbours are added for this many best keyframes ...
SECOND_RING_MIN_SHARED = 30  # ... when they share at least this many points ...
SECOND_RING_MAX = 3  # ... at most this many each


def reference_keyframe(slam_map: Map, point_ids: np.ndarray) -> Optional[int]:
    """The keyframe sharing most live points with point_ids ((N,) int64, -1 = none), else the
    newest keyframe, else None (empty map)."""
    tracked = point_ids[point_ids >= 0]
    cov = slam_map.covisible_keyframes(tracked[slam_map.pts_alive[tracked]]) if len(tracked) else []
    if cov:
        return cov[0][0]
    if slam_map.keyframes:
        return max(slam_map.keyframes)
    return None


def local_points(slam_map: Map, point_ids: np.ndarray, ref_kf_id: Optional[int], n_local: int) -> tuple[np.ndarray, list[int], Optional[int]]:
    """Local map of a frame whose keypoints show point_ids ((N,) int64, -1 = none).

    Returns (live point ids (P,) int64 sorted, local keyframe ids, reference keyframe id: the
    keyframe sharing most points, or ref_kf_id when none shares any)."""
    tracked = point_ids[point_ids >= 0]
    cov = slam_map.covisible_keyframes(tracked)
    kf_ids = [k for k, _ in cov[:n_local]]
    if cov:
        ref_kf_id = cov[0][0]
    if ref_kf_id is not None and ref_kf_id not in kf_ids and ref_kf_id in slam_map.keyframes:
        kf_ids.append(ref_kf_id)
    for k, _ in cov[:SECOND_RING_FROM]:
        for k2, _ in slam_map.keyframe_covisibility(k, min_shared=SECOND_RING_MIN_SHARED)[:SECOND_RING_MAX]:
            if k2 not in kf_ids:
                kf_ids.append(k2)
    pids = [slam_map.keyframes[k].point_ids for k in kf_ids if k in slam_map.keyframes]
    if not pids:
        return np.zeros(0, dtype=np.int64), kf_ids, ref_kf_id
    allp = np.unique(np.concatenate(pids))
    allp = allp[allp >= 0]
    allp = allp[slam_map.pts_alive[allp]]
    return allp, kf_ids, ref_kf_id


class LocalMapTracking:
    """Second stage of tracking: project the local map with the first pose estimate, add the
    matches, align the matched keypoints to their points' reference patches (aligner: a
    slam.tracking.patch_align.PatchAligner, or None), refine the pose, count the found points."""

    def __init__(self, cfg: TrackingConfig, slam_map: Map, search: CandidateSearch, pose: PoseEstimator, aligner=None) -> None:
        self.cfg = cfg
        self.map = slam_map
        self.search = search
        self.pose = pose
        self.aligner = aligner

    def track(self, fr: FrameFeatures, cam_from_world: np.ndarray, point_ids: np.ndarray, ref_kf_id: Optional[int],
              wide: bool = False) -> tuple[np.ndarray, np.ndarray, int, Optional[int]]:
        """From a first estimate cam_from_world (4,4) with its inlier candidates point_ids (N,)
        (updated in place), -> (cam_from_world, point_ids, n_inliers, reference keyframe id).
        wide doubles the search radius (tracking.local_search_radius_px)."""
        local, _, ref_kf_id = local_points(self.map, point_ids, ref_kf_id, self.cfg.n_local_keyframes)
        radius = self.cfg.local_search_radius_px * (2.0 if wide else 1.0)
        self.search.in_local_map(fr, cam_from_world, point_ids, local, radius)
        if self.aligner is not None:
            self.aligner.refine(self.map, fr, cam_from_world, point_ids)
        cam_from_world, n_inl = self.pose.refine(fr, cam_from_world, point_ids)
        if n_inl > 0:
            self.map.count_found(point_ids[point_ids >= 0])
        return cam_from_world, point_ids, n_inl, ref_kf_id
