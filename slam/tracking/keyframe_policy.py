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
                      mapping_busy: bool = False, recent_best: int = 0) -> bool:
        """mapping_busy (live runs): local mapping has queued work, so a keyframe that is only due
        by the frame count (ORB-SLAM's c1b) waits; weak tracking or max_interval still insert.

        recent_best: the most points one frame tracked since the last keyframe (this frame
        included; 0 = unknown). Tracking is "weak" (a keyframe before min_interval) when it
        falls below weak_ratio x the smaller of ref_tracked and recent_best: a drop from what
        frames have been tracking, not from the reference keyframe's point count. The two differ
        when the detector repeats fewer keypoints than a keyframe holds points: XFeat frames
        track 40-65 % of the reference keyframe's points on fr1_xyz (ORB 55-75 %), which
        against ref_tracked alone read as weak every few frames. Fewer than weak_min_tracked
        tracked points is weak in any case (ORB-SLAM3 inserts below 75 inliers)."""
        c = self.cfg
        n_tracked = int((point_ids >= 0).sum())
        if n_tracked < c.min_tracked:
            return False
        yardstick = min(ref_tracked, recent_best) if recent_best > 0 else ref_tracked
        weak = n_tracked < c.weak_ratio * yardstick or n_tracked < c.weak_min_tracked
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
