"""When does a tracked frame become a keyframe (after ORB-SLAM2's criteria)."""
from __future__ import annotations


import numpy as np

from slam.tracking.config import KeyframePolicyConfig
from slam.types import FrameFeatures, has_depth


class KeyframePolicy:
    def __init__(self, cfg: KeyframePolicyConfig, mode: str):
        self.cfg = cfg
        self.mode = mode

    def need_keyframe(self, fr: FrameFeatures, point_ids: np.ndarray, ref_tracked: int, frames_since_kf: int, slam_map,
                      mapping_busy: bool = False) -> bool:
        """mapping_busy (live runs): local mapping has queued work, so a keyframe that is only due
        by the frame count (ORB-SLAM's c1b) waits; weak tracking or max_interval still insert."""
        c = self.cfg
        n_tracked = int((point_ids >= 0).sum())
        if n_tracked < c.min_tracked:
            return False
        weak = n_tracked < c.weak_ratio * ref_tracked
        if frames_since_kf < c.min_interval and not weak:
            return False
        need_close = False
        depth = has_depth(self.mode)
        if depth:
            close = (fr.kp_depth > 0) & (fr.kp_depth < c.close_depth)
            n_close_tracked = int((close & (point_ids >= 0)).sum())
            n_close_untracked = int((close & (point_ids < 0)).sum())
            need_close = n_close_tracked < c.min_close_tracked and n_close_untracked > c.min_close_untracked
        ratio = c.ref_ratio_rgbd if depth else c.ref_ratio_mono
        if len(slam_map.keyframes) < 2:
            ratio = 0.4
        c1a = frames_since_kf >= c.max_interval
        c1b = (frames_since_kf >= c.min_interval and not mapping_busy) or weak
        c1c = depth and (n_tracked < 0.25 * ref_tracked or need_close)
        c2 = (n_tracked < ref_tracked * ratio or need_close) and n_tracked > c.min_tracked
        return bool((c1a or c1b or c1c) and (c2 or c1a))
