"""Map initialisation: when the first frames are good enough to start a map.

- :class:`DepthInitializer` (RGB-D): one frame with enough keypoints with depth.
- :class:`MonoInitializer`: two views. It keeps a reference frame, and initialises from
  matched points of the reference and the current frame, (M,2) and (M,2) undistorted pixels,
  with ORB-SLAM's model selection (slam.geometry.epipolar.initialize_two_view). The points may
  come from any matcher: :func:`keypoint_correspondences` gets them from a keypoint matcher; a
  detector-free matcher only needs another such function.

Neither touches the map: the tracker builds the initial map (slam.tracking.keyframes).
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from slam.geometry.epipolar import TwoViewResult, initialize_two_view
from slam.tracking.config import TrackingConfig
from slam.types import FrameFeatures

log = logging.getLogger(__name__)

MIN_DEPTH_KEYPOINTS = 50  # RGB-D: keypoints with depth needed (or tracking.min_inliers if larger)


def keypoint_correspondences(matcher, ref: FrameFeatures, cur: FrameFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match the keypoints of ref and cur with matcher.match. Returns (pairs (M,2) int64
    keypoint indices (ref, cur), x_ref (M,2) float64, x_cur (M,2) float64 undistorted px)."""
    pairs = matcher.match(ref.features, cur.features).pairs()
    return pairs, ref.kp_uv[pairs[:, 0]], cur.kp_uv[pairs[:, 1]]


class DepthInitializer:
    """RGB-D: the first frame with enough keypoints with depth starts the map."""

    def __init__(self, cfg: TrackingConfig) -> None:
        self.min_keypoints = max(MIN_DEPTH_KEYPOINTS, cfg.min_inliers)

    def ready(self, fr: FrameFeatures) -> bool:
        return int((fr.kp_depth > 0).sum()) >= self.min_keypoints


class MonoInitializer:
    """Monocular two-view initialisation against a reference frame.

    Per frame: :meth:`reference_for` gives the reference to match against (or None: the frame
    is not usable, or became the new reference); the caller matches the two frames and passes
    the matched points to :meth:`initialise`.
    """

    def __init__(self, cfg: TrackingConfig, K: np.ndarray) -> None:
        self.cfg = cfg
        self.K = K
        self.ref: Optional[FrameFeatures] = None

    def reference_for(self, fr: FrameFeatures) -> Optional[FrameFeatures]:
        """The reference frame to match fr against. None when fr has too few keypoints, or
        when there is no reference or it is older than tracking.mono_init_max_gap frames (fr then
        becomes the reference)."""
        c = self.cfg
        if len(fr.kp_uv) < c.mono_init_min_matches:
            return None
        if self.ref is None or fr.index - self.ref.index > c.mono_init_max_gap:
            self.ref = fr
            return None
        return self.ref

    def initialise(self, fr: FrameFeatures, x_ref: np.ndarray, x_cur: np.ndarray) -> Optional[TwoViewResult]:
        """Two-view geometry from matched points x_ref, x_cur ((M,2) float64 undistorted px in
        the reference and fr). Returns the TwoViewResult (cam1_from_cam0 = cam_from_ref;
        points in the reference camera; `valid` (M,) marks the matches that became points), or
        None. With fewer than half of tracking.mono_init_min_matches matches, fr becomes the
        reference. After a success the reference is cleared."""
        c = self.cfg
        if len(x_ref) < c.mono_init_min_matches:
            if len(x_ref) < c.mono_init_min_matches // 2:
                self.ref = fr
            return None
        res, reason = initialize_two_view(
            x_ref, x_cur, self.K, threshold_px=c.mono_init_threshold_px, min_inliers=c.mono_init_min_matches // 2,
            min_parallax_deg=c.mono_init_min_parallax_deg, min_point_parallax_deg=c.mono_init_min_point_parallax_deg,
            min_valid=c.mono_init_min_matches // 2,
        )
        if res is None:
            log.debug("frame %d: mono init rejected: %s", fr.index, reason)
            return None
        self.ref = None
        return res
