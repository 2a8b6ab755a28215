"""Keyframe creation: a tracked frame becomes a keyframe of the map; RGB-D and stereo keyframes
also create map points from their depth, and the monocular map starts from two views.

Stereo (ORB-SLAM2's rule): the first keyframe makes a point of every keypoint with depth; later
ones make points of their unmatched close keypoints (depth < ``close_depth``, 40 baselines) and,
while fewer than MIN_STEREO_POINTS keypoints (matched or new) are counted, of the nearest far
ones too.

Every method here changes the map: the caller holds ``map.lock``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import transform_points
from slam.mapping.map import Keyframe, Map
from slam.types import FrameFeatures, has_depth

MIN_STEREO_POINTS = 100  # stereo keyframes: points (matched or new) counted before far keypoints stop making points


@dataclass
class KeyframeJob:
    """Sent from tracking to mapping when a keyframe was inserted.

    kf_id:         the new keyframe's id.
    new_point_ids: (P,) int64 ids of the points the tracker created from depth (RGB-D), else empty.
    is_initial:    the keyframe that initialised the map.
    """

    kf_id: int
    new_point_ids: np.ndarray
    is_initial: bool = False


class KeyframeFactory:
    """Inserts keyframes into the map (mode "rgbd", "stereo" or "mono"). close_depth: metres,
    the stereo close/far threshold."""

    def __init__(self, camera: PinholeCamera, slam_map: Map, mode: str, close_depth: float = float("inf")) -> None:
        self.camera = camera
        self.map = slam_map
        self.mode = mode
        self.close_depth = close_depth
        self.keep_images = False  # keyframes keep their frame's image (detector-free relocalisation)

    def _depth_keypoints(self, kf: Keyframe) -> np.ndarray:
        """(P,) int64 keypoints of kf that become new points (see the module docstring)."""
        free = (kf.point_ids < 0) & (kf.kp_depth > 0)
        if self.mode != "stereo" or len(self.map.keyframes) <= 1:
            return np.nonzero(free)[0]
        valid = np.nonzero(kf.kp_depth > 0)[0]
        valid = valid[np.argsort(kf.kp_depth[valid], kind="stable")]
        counted_before = np.arange(len(valid))  # keypoints with depth nearer than this one (all count)
        take = (kf.kp_depth[valid] < self.close_depth) | (counted_before < MIN_STEREO_POINTS)
        sel = valid[take]
        return np.sort(sel[kf.point_ids[sel] < 0])

    def insert(self, fr: FrameFeatures, cam_from_world: np.ndarray, point_ids: np.ndarray,
               depth_points: bool = True) -> tuple[Keyframe, np.ndarray]:
        """Make fr a keyframe at cam_from_world (4,4) with its matched points point_ids ((N,)
        int64 map point per keypoint, -1 = none; copied). In RGB-D mode with depth_points, every
        unmatched keypoint with depth becomes a new point (stereo: see the module docstring). Returns (keyframe, new point ids (P,)
        int64). The keyframe's point_ids may differ from the argument: dead and repeated points
        are dropped (Map.add_keyframe)."""
        m = self.map
        kf = Keyframe(
            id=m.new_keyframe_id(), frame_index=fr.index, timestamp=fr.timestamp,
            cam_from_world=cam_from_world.copy(), features=fr.features, kp_uv=fr.kp_uv, kp_depth=fr.kp_depth,
            kp_sigma2=fr.kp_sigma2, kp_color=fr.kp_color, desc=fr.desc, point_ids=point_ids.copy(), image=fr.image if self.keep_images else None,
        )
        m.add_keyframe(kf)
        new_ids = np.zeros(0, dtype=np.int64)
        if depth_points and has_depth(self.mode):
            sel = self._depth_keypoints(kf)
            if len(sel):
                pc = self.camera.unproject(kf.kp_uv[sel], kf.kp_depth[sel])
                pw = transform_points(kf.world_from_cam, pc)
                new_ids = m.add_points(pw, kf.desc[sel], kf.kp_color[sel], kf.id)
                m.add_observations(kf.id, sel, new_ids)
                m.update_normals(new_ids)
        return kf, new_ids

    def insert_two_view(self, ref: FrameFeatures, fr: FrameFeatures, pairs: np.ndarray, pts_ref: np.ndarray,
                        cam_from_ref: np.ndarray) -> tuple[Keyframe, Keyframe, np.ndarray]:
        """The monocular initial map: ref becomes keyframe 0 at the world origin, fr keyframe 1.

        pairs:        (M,2) int64 keypoint indices (ref, fr) of the triangulated matches.
        pts_ref:      (M,3) float64 their points in ref's camera frame = world frame, metres
                      (up to the monocular scale).
        cam_from_ref: (4,4) float64 pose of fr relative to ref.
        Returns (keyframe of ref, keyframe of fr, point ids (M,) int64 of the new points)."""
        m = self.map
        kf0, _ = self.insert(ref, np.eye(4), np.full(len(ref.kp_uv), -1, dtype=np.int64), depth_points=False)
        ids = m.add_points(pts_ref, ref.desc[pairs[:, 0]], ref.kp_color[pairs[:, 0]], kf0.id)
        m.add_observations(kf0.id, pairs[:, 0], ids)
        pid1 = np.full(len(fr.kp_uv), -1, dtype=np.int64)
        pid1[pairs[:, 1]] = ids
        kf1, _ = self.insert(fr, cam_from_ref, pid1, depth_points=False)
        return kf0, kf1, ids
