"""Settings of tracking and of the keyframe policy (light: no torch; ``slam.config`` builds on them)."""
from __future__ import annotations

from dataclasses import dataclass, field

from slam.params import param


@dataclass
class KeyframePolicyConfig:
    min_interval: int = param(5, ge=0)  # frames since the last keyframe before a new one may be inserted (unless tracking weakens)
    weak_ratio: float = param(0.5, ge=0.0, le=1.0)  # tracked < weak_ratio x reference points: insert regardless of min_interval
    max_interval: int = param(30, ge=1)  # insert at the latest after this many frames (with enough tracked points)
    ref_ratio_rgbd: float = param(0.75, ge=0.0, le=1.0)  # insert when tracked points < ratio x points of the reference keyframe
    ref_ratio_mono: float = param(0.9, ge=0.0, le=1.0)
    min_tracked: int = param(15, ge=0)  # never insert with fewer tracked points than this
    close_depth: float = param(3.0, gt=0.0)  # m: RGB-D "close" points (ORB-SLAM ThDepth ~ 40 x baseline)
    min_close_tracked: int = param(100, ge=0)  # RGB-D: too few close tracked points ...
    min_close_untracked: int = param(70, ge=0)  # ... and this many close untracked ones -> insert


@dataclass
class TrackingConfig:
    min_depth: float = param(0.1, ge=0.0)  # m, nearest valid depth (RGB-D)
    max_depth: float = param(6.0, gt=0.0)  # m, farthest depth used for RGB-D points
    bf: float = param(40.0, gt=0.0)  # px*m: fx*baseline of the virtual stereo rig for RGB-D edges (ORB-SLAM2 TUM value)
    search_radius_px: float = param(15.0, gt=0.0)  # guided search radius around the motion-model prediction
    local_search_radius_px: float = param(4.0, gt=0.0)  # guided search radius for local-map points (x sqrt(sigma2))
    max_desc_dist_binary: float = param(50.0, ge=0.0)  # bits: ORB descriptor distance accepted by guided search
    max_desc_dist_float: float = param(0.9, ge=0.0)  # L2 distance accepted for learned descriptors
    match_ratio: float = param(0.9, gt=0.0, le=1.0)  # best/second-best ratio in guided search
    pnp_threshold_px: float = param(4.0, gt=0.0)  # RANSAC reprojection threshold
    final_pose_refiner: str = param("gn", choices=("gn", "g2o"))  # pose-only refinement after local-map tracking. Same model and
    # outlier rounds (tests/test_pose_gn.py checks they agree to 1e-6); g2o costs ~10 ms more per frame on CPU
    # because g2opy builds its graph edge by edge in Python
    min_matches_motion: int = param(20, ge=1)  # fewer guided matches than this -> PnP fallback
    min_inliers: int = param(30, ge=1)  # fewer inliers than this -> LOST
    n_local_keyframes: int = param(10, ge=1)  # keyframes whose points form the local map
    n_match_keyframes: int = param(3, ge=1)  # learned matchers: reference + best covisible keyframes matched per frame
    reloc_candidates: int = param(8, ge=1)  # keyframes tried when relocalising
    reloc_min_inliers: int = param(40, ge=1)
    mono_init_min_matches: int = param(100, ge=8)
    mono_init_max_gap: int = param(40, ge=1)  # frames; replace the reference frame after this many failures
    mono_init_min_parallax_deg: float = param(1.0, ge=0.0)
    mono_init_threshold_px: float = param(1.0, gt=0.0)
    mono_init_matcher: str = param("keypoints", choices=("keypoints", "loftr"))  # monocular initialisation from the frames' keypoint matches, or from LoFTR on the two images (settings: loftr.*)
    reloc_matcher: str = param("keypoints", choices=("keypoints", "loftr"))  # relocalisation: keypoint matches to the candidate keyframes, or LoFTR on their images
    reloc_dense_candidates: int = param(3, ge=1)  # reloc_matcher=loftr: candidate keyframes matched per lost frame (one LoFTR pass each)
    dense_snap_px: float = param(4.0, gt=0.0)  # LoFTR match -> nearest keypoint within this radius (map points live on keypoints)
    keyframes: KeyframePolicyConfig = field(default_factory=KeyframePolicyConfig)
