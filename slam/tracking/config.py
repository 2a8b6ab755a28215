"""Settings of tracking and of the keyframe policy (light: no torch; ``slam.config`` builds on them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from slam.params import param


EVERY_FRAME = "every_frame"
KEYFRAMES = "keyframes"
LEARNED_MATCHING = ("auto", EVERY_FRAME, KEYFRAMES)


def default_learned_matching(device_type: str) -> str:
    """What ``tracking.learned_matching: auto`` means on a device ("cpu" | "cuda"): the learned
    matcher on every frame where it is cheap (CUDA), only at keyframes elsewhere."""
    return EVERY_FRAME if device_type == "cuda" else KEYFRAMES


@dataclass
class KeyframePolicyConfig:
    min_interval: int = param(5, ge=0)  # frames since the last keyframe before a new one may be inserted (unless tracking weakens)
    weak_ratio: float = param(0.0, ge=0.0, le=1.0)  # tracked < weak_ratio x min(reference points, most tracked by a frame since the keyframe): insert regardless of min_interval. 0 (since 2026-12-06; was 0.5): only weak_min_tracked makes a frame weak. Blur thins what a frame tracks without a loss, and the ratio then clustered keyframes in blurred frames: fr1_xyz shaken at 70 deg/s mono, ten jittered runs, median 2.22 -> 1.79 cm; synthetic/corridor mono 23.67 -> 11.47 cm; fr1_xyz, KITTI, EuRoC, synthetic fast/fast_blur/loop_short identical (docs/benchmarks.md section 14)
    weak_min_tracked: int = param(75, ge=0)  # tracked < this is weak too, whatever the ratios (ORB-SLAM3's 75 inliers)
    max_interval: int = param(30, ge=1)  # insert at the latest after this many frames (with enough tracked points)
    ref_ratio_rgbd: float = param(0.75, ge=0.0, le=1.0)  # insert when tracked points < ratio x points of the reference keyframe
    ref_ratio_mono: float = param(0.9, ge=0.0, le=1.0)
    min_tracked: int = param(15, ge=0)  # never insert with fewer tracked points than this
    close_depth: float = param(3.0, gt=0.0)  # m: RGB-D "close" points (ORB-SLAM ThDepth ~ 40 x baseline); stereo runs set stereo.close_baselines x baseline
    min_close_tracked: int = param(100, ge=0)  # RGB-D: too few close tracked points ...
    min_close_untracked: int = param(70, ge=0)  # ... and this many close untracked ones -> insert


@dataclass
class StereoConfig:
    """Stereo mode (``mode: stereo``): matching the left and right keypoints of a rectified pair
    (slam.tracking.stereo). The rig gives ``bf`` = fx * baseline; ``tracking.bf`` and
    ``tracking.keyframes.close_depth`` are set from it for the run (config.yaml records them)."""

    method: str = param("search", choices=("search", "matcher"))  # search: descriptor search along the rows (ORB: ORB-SLAM2's
    # row search, band scaled by the octave; learned features: the same band) | matcher: the configured matcher, then the epipolar check
    band_px: float = param(2.0, gt=0.0)  # half-height of the epipolar band at octave 0 (px; x scale^octave for ORB)
    max_desc_dist_binary: float = param(75.0, ge=0.0)  # bits (ORB-SLAM2: (TH_HIGH + TH_LOW) / 2)
    max_desc_dist_float: float = param(0.9, ge=0.0)  # L2 distance of unit descriptors
    ratio: float = param(0.9, gt=0.0, le=1.0)  # best / second-best descriptor distance within the band (1 = off)
    subpixel: bool = True  # refine the right u by SAD block matching along the row and a parabola fit
    window: int = param(5, ge=1)  # SAD patch half-size (11x11 patches at the keypoint's octave)
    search_px: int = param(5, ge=1)  # SAD search +- this many pixels (at the octave) around the matched u
    sad_outlier_factor: float = param(2.1, gt=0.0)  # drop matches whose SAD exceeds this x the median (ORB-SLAM2: 1.5 x 1.4)
    min_disparity_px: float = param(0.5, gt=0.0)  # smaller disparities get no depth (farther than bf / this)
    close_baselines: float = param(40.0, gt=0.0)  # close/far threshold: depth < this x baseline is "close" (ORB-SLAM2: 40)
    triangulate: bool = True  # local mapping also triangulates keypoints without stereo depth between keyframes (ORB-SLAM2)


@dataclass
class TrackingConfig:
    min_depth: float = param(0.1, ge=0.0)  # m, nearest valid depth (RGB-D)
    max_depth: float = param(6.0, gt=0.0)  # m, farthest depth used for RGB-D points
    bf: float = param(40.0, gt=0.0)  # px*m: fx*baseline of the virtual stereo rig for RGB-D edges (ORB-SLAM2 TUM value): how many px one unit of inverse-depth error (1/m) costs; with bf_auto the starting value; stereo runs set it from the rig
    bf_auto: bool = True  # RGB-D: bf follows the run's own residuals, sigma_px / sigma_invdepth after each local BA (slam.mapping.depth_weight); whole fr1_xyz (Kinect) ends near 120, the synthetic sequences (depth noise 0.0005 z^2) near 330-580; false = bf fixed. Stereo keeps the rig's
    depth_outliers_as_mono: str = param("rescue", choices=("never", "rescue", "always"))  # depth modes, pose refinement (final_pose_refiner=gn): a keypoint whose depth fails the 3-dof test but whose pixel passes the 2-dof one is kept without its depth instead of dropped (slam.optim.pose_gn). rescue: only in a second refinement when the first keeps too few inliers to track (fr1_xyz shaken at 70 deg/s, 20 ms blur, RGB-D: never loses a frame at the blur peak, rescue tracks all); always: worse trajectories (there 2.64 against 1.91 cm; synthetic/loop 0.35 against 0.26 cm; docs/benchmarks.md section 12)
    search_radius_px: float = param(15.0, gt=0.0)  # guided search radius around the motion-model prediction
    local_search_radius_px: float = param(4.0, gt=0.0)  # guided search radius for local-map points (x sqrt(sigma2))
    max_desc_dist_binary: float = param(50.0, ge=0.0)  # bits: ORB descriptor distance accepted by guided search
    max_desc_dist_float: Optional[float] = param(None, ge=0.0)  # L2 distance of unit float descriptors accepted by guided search; None = the extractor's own (slam.features.config.GUIDED_MAX_L2)
    match_ratio: float = param(0.9, gt=0.0, le=1.0)  # best/second-best ratio in guided search
    pnp_threshold_px: float = param(4.0, gt=0.0)  # RANSAC reprojection threshold
    frame_refine_points: int = param(1000, ge=0)  # inlier matches each tracked frame keeps (at most; evenly spaced) so that the end of a run re-estimates its pose against the final map (slam.tracking.trajectory.FrameTrajectory.refine: bundle adjustment corrects keyframes, not the frames between them; about 20 B per match, 256 MB over all frames at most); 0 = off. Fewer than all inliers adds noise: 128 gave synthetic/fast RGB-D ORB 0.79 cm against 0.61 cm with all, 0.68 cm off
    frame_smooth_accel: float = param(0.5, ge=0.0)  # end of a run: the frames between each two keyframes are re-estimated together with a smooth-motion prior, the acceleration of the camera centre ~ N(0, sigma^2), sigma = this x the median scene depth, per s^2 (scale-free; slam.optim.frame_smoother). Alone, a frame whose points lie at one depth (a wall in a monocular turn) can slide sideways while turning (synthetic/loop_short mono 2.67 -> 1.60 cm, RPE 2.03 -> 0.43 cm per frame; docs/benchmarks.md); 0 = each frame alone. Needs frame_refine_points > 0
    patch_align: str = param("depth", choices=("never", "depth", "always"))  # align each tracked keypoint to its map point's reference image patch before the final pose (slam.tracking.patch_align): consistent observations instead of a new detection per frame. depth = RGB-D and stereo only (there: synthetic/fast RGB-D 1.95 -> 0.59 cm); monocular gains and losses are mixed (synthetic/fast mono ORB tracked 70 -> 46 %, fast_blur mono ORB 1.57 -> 1.05 cm; docs/benchmarks.md section 14)
    patch_align_max_px: float = param(6.0, gt=0.0)  # largest accepted shift from the detected keypoint (px)
    patch_align_min_zncc: float = param(0.7, ge=-1.0, le=1.0)  # smallest accepted zero-mean normalised correlation with the warped reference patch
    patch_align_iterations: int = param(10, ge=1)  # Gauss-Newton iterations at most (a point stops when its step is below 0.05 px)
    final_pose_refiner: str = param("gn", choices=("gn", "g2o"))  # pose-only refinement after local-map tracking. Same model and
    # outlier rounds (tests/test_pose_gn.py checks they agree to 1e-6); g2o costs ~10 ms more per frame on CPU
    # because g2opy builds its graph edge by edge in Python
    predict_check_px: float = param(7.5, ge=0.0)  # guided search: the constant-velocity prediction is checked against a PnP pose
    # from mutual nearest descriptors to the last frame's points, and replaced when that pose moves them more than this (median px;
    # half of search_radius_px: a smaller miss guided search absorbs itself) with at least min_inliers inliers;
    # slam.tracking.search.CandidateSearch.check_prediction. 0 = off. fr1_xyz every 3rd frame (frame_stride=3), default front-end,
    # RGB-D: 3.13 -> 1.05 cm; costs about 4 ms of tracking CPU per frame (docs/benchmarks.md section 14)
    rotation_prior: bool = False  # the frames' rotation from small blurred images (slam.tracking.small_image, PTAM's
    # "small blurry image"): both frames shrunk to 80 px wide and aligned on SO(3), about 2 ms; a turn's blur hardly shows at that
    # size. When it disagrees with the constant-velocity rotation by more than rotation_prior_min_px it replaces it in the
    # prediction (before the descriptor check, predict_check_px, and guided search): a jerk. Off by default: on fr1_xyz shaken at
    # 70 deg/s it did not rank against constant velocity over three jittered runs (mono 1.44-6.17 cm against 2.15-3.14), and
    # tracked more of a 150 deg/s shake (docs/benchmarks.md section 14)
    rotation_prior_min_px: float = param(5.0, ge=0.0)  # px at the image centre (full resolution): smaller disagreements keep the
    # constant-velocity rotation, which smooth motion predicts well (replacing it on every frame: KITTI 07 mono 27.1 -> 52.1 cm)
    rotation_prior_width: int = param(80, ge=16)  # px: width of the small images
    min_matches_motion: int = param(20, ge=1)  # fewer guided matches than this -> PnP fallback
    min_inliers: int = param(30, ge=1)  # fewer inliers than this -> LOST
    wide_search: bool = True  # a failed prediction is redone from matches to the last frame and reloc_candidates keyframes (PnP)
    wide_search_staged: bool = False  # the wide search first matches the last frame alone (one matcher pair; with the keyframes a
    # first fallback matched) and matches the other keyframes only if that pose keeps fewer than min_inliers after the local map.
    # Opt-in: fr1_xyz shaken at 150 deg/s (30 px blur) mono runs 1.2 instead of 0.9 fps, but at 70 deg/s (11 px) mono it is
    # not ranked against the one-stage search (1.50, 1.91, 1.22 against 1.38, 1.74, 1.40 cm over three seeds); docs/benchmarks.md section 14
    n_local_keyframes: int = param(10, ge=1)  # keyframes whose points form the local map
    n_match_keyframes: int = param(3, ge=1)  # learned matchers: reference + best covisible keyframes matched per frame
    reloc_candidates: int = param(8, ge=1)  # keyframes tried when relocalising
    reloc_min_inliers: int = param(40, ge=1)
    mono_init_min_matches: int = param(100, ge=8)
    mono_init_max_gap: int = param(40, ge=1)  # frames; replace the reference frame after this many failures
    mono_init_min_parallax_deg: float = param(1.0, ge=0.0)  # the 50th largest parallax of the triangulated points (ORB-SLAM)
    mono_init_min_point_parallax_deg: float = param(0.36, ge=0.0)  # parallax a matched point needs to become an initial map point (ORB-SLAM's
    # 0.36 deg; with 1 deg, forward motion starts from too few points: KITTI 07 91 points, lost at frame 69; 0.36: 356, 97 % tracked)
    mono_init_rotation_after: int = param(10, ge=0)  # frames without a two-view start (no baseline: a camera turning on the spot or standing still) after which matches that a pure rotation explains start the map, its points at depth 1 on the reference rays (slam.geometry.epipolar.rotation_two_view); 0 = never. 10 since 2026-12-04: synthetic/fast mono 85.7 -> 97.0 % tracked (3.51 -> 3.18 cm), fast_blur mono 96.3 -> 97.0 % (4.01 -> 3.33 cm), ORB fast 70 -> 96 %, EuRoC micro mono 0 -> 90.5 %; runs that start within 10 frames unchanged (docs/benchmarks.md section 14)
    mono_init_threshold_px: float = param(1.0, gt=0.0)
    mono_init_ba: bool = False  # ORB-SLAM: BA of the two-view map (20 iterations), outliers dropped, median depth 1; fewer than mono_init_min_matches points left: rejected (ATE mixed: docs/benchmarks.md section 14)
    learned_matching: str = param("auto", choices=LEARNED_MATCHING)  # learned matchers only. every_frame: each frame is
    # matched against keyframes by the matcher; keyframes: frames are tracked by guided search (projected map points,
    # float descriptor distances) and the matcher runs at initialisation, for new keyframes' triangulation, relocalisation
    # and frames whose guided search failed; auto: keyframes on CPU, every_frame on CUDA (slam.system.resolve_config)
    mono_init_matcher: str = param("keypoints", choices=("keypoints", "loftr"))  # monocular initialisation from the frames' keypoint matches, or from LoFTR on the two images (settings: loftr.*)
    reloc_matcher: str = param("keypoints", choices=("keypoints", "loftr"))  # relocalisation: keypoint matches to the candidate keyframes, or LoFTR on their images
    reloc_dense_candidates: int = param(3, ge=1)  # reloc_matcher=loftr: candidate keyframes matched per lost frame (one LoFTR pass each)
    dense_snap_px: float = param(4.0, gt=0.0)  # LoFTR match -> nearest keypoint within this radius (map points live on keypoints)
    new_map_after_lost_frames: int = param(30, ge=0)  # atlas (slam.mapping.atlas): after this many frames lost in a row, start a
    # new map and keep the old one; place recognition merges them when they meet (needs loop closing; 0 = stay lost)
    new_map_in_depth_modes: bool = False  # also in RGB-D and stereo (which relocalise more easily); monocular only by default
    reset_young_map_keyframes: int = param(5, ge=0)  # monocular, with the atlas: tracking lost while the map has at most this many
    # keyframes, and within reset_young_map_frames frames of its initialisation, discards that map (its keyframes, points and
    # frames) and initialises again at once, instead of trying to relocalise in it for new_map_after_lost_frames frames
    # (ORB-SLAM's "track lost soon after initialisation, resetting", same count). A map lost that young is usually a wrong
    # start: fr1_xyz shaken at 150 deg/s with 30 px blur, first 200 frames, started five wrong maps of 2 keyframes each, each
    # lost on its next frame, and tracked 1 % (docs/benchmarks.md section 14). 0 = off
    reset_young_map_frames: int = param(10, ge=1)  # frames after the initialisation within which a loss counts as "soon" (above):
    # the wrong starts above were lost on the next frame; a map that tracked longer is kept and the atlas rule above applies
    keyframes: KeyframePolicyConfig = field(default_factory=KeyframePolicyConfig)
