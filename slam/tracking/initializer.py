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

from slam.geometry.epipolar import TwoViewResult, initialize_two_view, rotation_two_view
from slam.optim.ba import BAProblem, bundle_adjust
from slam.tracking.config import TrackingConfig
from slam.types import FrameFeatures

log = logging.getLogger(__name__)

MIN_DEPTH_KEYPOINTS = 50  # RGB-D: keypoints with depth needed (or tracking.min_inliers if larger)
INIT_BA_ITERATIONS = 20  # ORB-SLAM's global BA of the initial two-view map


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
        self.waiting_since: Optional[int] = None  # index of the first frame offered since the last start

    def reference_for(self, fr: FrameFeatures) -> Optional[FrameFeatures]:
        """The reference frame to match fr against. None when fr has too few keypoints, or
        when there is no reference or it is older than tracking.mono_init_max_gap frames (fr then
        becomes the reference)."""
        c = self.cfg
        if self.waiting_since is None:
            self.waiting_since = fr.index
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
            res = self._rotation_start(fr, x_ref, x_cur)
            if res is None:
                return None
        self.ref = None
        self.waiting_since = None
        return res

    def _rotation_start(self, fr: FrameFeatures, x_ref: np.ndarray, x_cur: np.ndarray) -> Optional[TwoViewResult]:
        """After tracking.mono_init_rotation_after frames without a two-view start, a start from a
        pure rotation when the matches fit one (a camera turning on the spot never gives the
        baseline the two-view models need; waiting loses every frame of the turn)."""
        c = self.cfg
        if c.mono_init_rotation_after <= 0 or self.waiting_since is None:
            return None
        if fr.index - self.waiting_since < c.mono_init_rotation_after:
            return None
        res = rotation_two_view(x_ref, x_cur, self.K, threshold_px=3.0 * c.mono_init_threshold_px,
                                min_inliers=c.mono_init_min_matches)
        if res is None:
            log.debug("frame %d: rotation start rejected: fewer than %d matches, or than half of the %d, "
                      "fit a rotation", fr.index, c.mono_init_min_matches, len(x_ref))
        return res


def refine_two_view(res: TwoViewResult, x_ref: np.ndarray, x_cur: np.ndarray, K: np.ndarray,
                    inv_sigma2_ref: Optional[np.ndarray] = None, inv_sigma2_cur: Optional[np.ndarray] = None,
                    iterations: int = INIT_BA_ITERATIONS) -> TwoViewResult:
    """ORB-SLAM's treatment of a new monocular map (CreateInitialMapMonocular): bundle
    adjustment of both views and all triangulated points (the reference camera fixed), the
    outliers dropped from ``valid``, then points and translation rescaled so that the median
    reference depth is 1 again.

    res: a successful :func:`initialize_two_view` result for the matches x_ref, x_cur ((M,2)
    float64 undistorted px); inv_sigma2_*: (M,) float64 weights of the matches (1/px^2, the
    keypoints' scale levels; default 1). Returns a new TwoViewResult (same M)."""
    idx = np.flatnonzero(res.valid)
    m = len(idx)
    if m == 0:
        return res
    w0 = np.ones(m) if inv_sigma2_ref is None else np.asarray(inv_sigma2_ref, dtype=np.float64)[idx]
    w1 = np.ones(m) if inv_sigma2_cur is None else np.asarray(inv_sigma2_cur, dtype=np.float64)[idx]
    pid = np.arange(m, dtype=np.int64)
    prob = BAProblem(
        kf_ids=np.array([0, 1], dtype=np.int64), cam_from_world=np.stack([np.eye(4), res.cam1_from_cam0]),
        fixed=np.array([True, False]), point_ids=pid, points_world=res.pts_cam0[idx].copy(),
        obs_kf=np.r_[np.zeros(m, np.int64), np.ones(m, np.int64)], obs_pt=np.r_[pid, pid],
        obs_uv=np.vstack([x_ref[idx], x_cur[idx]]), obs_inv_sigma2=np.r_[w0, w1],
        obs_ur=np.full(2 * m, np.nan), bf=0.0, K=K,
    )
    out = bundle_adjust(prob, iterations=iterations)
    bad = out.obs_outlier[:m] | out.obs_outlier[m:]
    pts = out.points_world
    cam1_from_cam0 = out.cam_from_world[1].copy()
    bad |= pts[:, 2] <= 0
    bad |= (pts @ cam1_from_cam0[:3, :3].T + cam1_from_cam0[:3, 3])[:, 2] <= 0
    valid = res.valid.copy()
    valid[idx[bad]] = False
    pts_cam0 = np.full_like(res.pts_cam0, np.nan)
    med = float(np.median(pts[~bad, 2])) if (~bad).any() else 1.0
    s = 1.0 / med if np.isfinite(med) and med > 0 else 1.0
    pts_cam0[idx[~bad]] = pts[~bad] * s
    cam1_from_cam0[:3, 3] *= s
    return TwoViewResult(cam1_from_cam0=cam1_from_cam0, pts_cam0=pts_cam0, valid=valid, n_inliers=res.n_inliers,
                         median_parallax_deg=res.median_parallax_deg, model=res.model,
                         homography_ratio=res.homography_ratio)
