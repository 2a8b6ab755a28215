"""The trajectory of every tracked frame, stored relative to its reference keyframe.

A frame's pose is kept as cam_from_refkf, so when bundle adjustment or loop closure moves the
keyframe, the frame moves with it (ORB-SLAM's relative frame poses). Frames whose keyframe was
culled follow the culled keyframe's parent (Map.keyframe_pose_or_ancestor).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from slam.geometry.se3 import se3_inverse
from slam.mapping.map import Keyframe, Map


class FrameTrajectory:
    def __init__(self, slam_map: Map) -> None:
        self.map = slam_map
        self._frames: list[tuple[int, float, int, np.ndarray]] = []  # (index, timestamp, ref kf id, cam_from_refkf)

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, index: int, timestamp: float, ref: Keyframe, cam_from_world: np.ndarray) -> None:
        """Frame `index` at cam_from_world (4,4) float64, relative to keyframe ref (caller holds
        map.lock, so ref's pose is the one cam_from_world was estimated against)."""
        self._frames.append((index, timestamp, ref.id, cam_from_world @ ref.world_from_cam))

    def add_relative(self, index: int, timestamp: float, ref_kf_id: int, cam_from_ref: np.ndarray) -> None:
        """Frame `index` at cam_from_ref (4,4) float64 relative to keyframe ref_kf_id."""
        self._frames.append((index, timestamp, ref_kf_id, cam_from_ref))

    def poses(self, keep: Optional[Callable[[int], bool]] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices (F,) int64, timestamps (F,) float64 s, world_from_cam (F,4,4) float64) of
        every frame whose reference keyframe (or an ancestor) lives, in frame order, with the
        keyframes' current poses. keep: reference keyframe id -> whether to include the frame
        (one map of the atlas); None = every frame."""
        with self.map.lock:
            idx, ts, poses = [], [], []
            for index, t, kf_id, cam_from_ref in self._frames:
                if keep is not None and not keep(kf_id):
                    continue
                ref_cam_from_world = self.map.keyframe_pose_or_ancestor(kf_id)
                if ref_cam_from_world is None:
                    continue
                idx.append(index)
                ts.append(t)
                poses.append(se3_inverse(cam_from_ref @ ref_cam_from_world))
        if not idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 4, 4))
        order = np.argsort(idx, kind="stable")
        return np.asarray(idx)[order], np.asarray(ts)[order], np.stack(poses)[order]
