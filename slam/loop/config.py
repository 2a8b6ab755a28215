"""Settings of place recognition (light: no torch; ``slam.config`` builds on them)."""
from __future__ import annotations

from dataclasses import dataclass

from slam.params import param


@dataclass
class PlaceRecognitionConfig:
    vocabulary: str = "auto"  # auto = the vocabulary for the extractor and its weights (slam.loop.store), or a path to an .npz
    min_common_ratio: float = param(0.8, ge=0.0, le=1.0)  # candidates share more than this x the most words shared (ORB-SLAM: 0.8)
    retain_ratio: float = param(0.75, ge=0.0, le=1.0)  # keep covisibility groups above this x the best group's score (ORB-SLAM: 0.75)
    covisible_neighbours: int = param(10, ge=0)  # neighbours that form a candidate's group (ORB-SLAM: 10)
    merge_every: int = param(16, ge=1)  # keyframe database: new/erased keyframes merged into the index in batches of this many


@dataclass
class LoopClosingConfig:
    """Loop detection, verification and correction (slam.loop.closing); keys ``loop_closing.*``."""

    enabled: bool = True  # false = no keyframe database, no loop closing, relocalisation from covisibility only (the behaviour before loop closing)
    consistency: int = param(3, ge=1)  # a candidate must be found for this many consecutive keyframes (ORB-SLAM: 3)
    min_keyframes: int = param(10, ge=1)  # no loop is searched before the map holds this many keyframes (ORB-SLAM: 10)
    matcher: str = param("keypoints", choices=("keypoints", "loftr"))  # candidate verification from the configured keypoint matcher, or LoFTR on the two keyframes' images (settings: loftr.*; map merging too)
    dense_transfer_px: float = param(2.0, gt=0.0)  # matcher=loftr: a match snapped to a keypoint of one keyframe pairs with the other's keypoint within this radius of where it should be
    min_matches: int = param(20, ge=3)  # keypoint matches to a candidate with map points on both sides before RANSAC (ORB-SLAM: 20)
    descriptor_prefilter: bool = True  # learned matchers: a candidate whose map-point keypoints have fewer than min_matches mutual nearest descriptors (ratio 0.8, within the mapper's descriptor threshold) is rejected before the learned matcher runs, as ORB-SLAM gates on a descriptor search. synthetic/loop RGB-D: 45 of 46 candidates had 1-12 such matches, all of them failed RANSAC after LighterGlue; the true loop had 196
    min_ransac_inliers: int = param(20, ge=3)  # Sim(3) / SE(3) RANSAC inliers
    min_refined_inliers: int = param(20, ge=3)  # inliers after the g2o refinement (ORB-SLAM: 20)
    min_final_inliers: int = param(30, ge=3)  # inliers of the second refinement, on the projected matches seen by both keyframes (ORB-SLAM3 refines again there)
    inlier_max_px: float = param(4.0, gt=0.0)  # the inlier tests' pixel threshold (sqrt(chi2 x sigma^2), by octave) never exceeds this
    structure_refinement: str = param("auto", choices=("auto", "on", "off"))  # the accepted loop's pose refined last in a bundle adjustment welding the two sides by the verified matches: the loop side's keyframes fixed, the matched loop points free (slam.loop.verification, step 6); auto = monocular maps only. synthetic/loop mono, 7 runs: loops 0.10-1.11 deg / 0.75-7.7 cm from the truth -> 0.04-0.44 deg / 0.4-3.3 cm, ATE unchanged; RGB-D, where depth readings already place the points: 0.87 -> 0.81 cm (loop_short 0.25 -> 0.50 cm) for 250 ms on the tracking thread (docs/benchmarks.md section 12, 2026-12-06 19:25); off = the pose of the second Sim(3) refinement
    refine_keyframes: int = param(10, ge=0)  # ... with the current keyframe and this many of its covisible keyframes free (0 = the current keyframe alone)
    structure_iterations: int = param(10, ge=1)  # Levenberg iterations of each of its two stages
    min_projection_matches: int = param(40, ge=1)  # map points of the loop neighbourhood found again by projection (ORB-SLAM: 40)
    projection_radius_px: float = param(10.0, gt=0.0)  # search radius when projecting the loop neighbourhood's points
    min_temporal_gap: int = param(0, ge=0)  # candidates are at least this many keyframes older than the query (0 = only covisibility excludes)
    max_candidates: int = param(1, ge=1)  # consistent candidates verified per keyframe, best first (candidates already joined by a loop edge are skipped)
    neighbourhood: int = param(10, ge=1)  # covisible keyframes of the current one corrected with it, and of the loop keyframe whose points are fused
    loop_edge_min_shared: int = param(20, ge=1)  # new loop edges of the essential graph join keyframes sharing this many points after fusion
    graph_iterations: int = param(20, ge=1)  # most Gauss-Newton iterations of the essential graph (stops at convergence, 2-4; ORB-SLAM: 20 Levenberg)
    verify_delay_frames: int = param(10, ge=0)  # dataset runs: a keyframe's loop candidates are matched (the learned matcher's share of verification) in the loop-closing stage and verified this many frames later on the tracking thread (waiting if the matching is not done), so the matching does not stall tracking; 0 = detection and verification together on the tracking thread. Live runs verify in the loop-closing stage anyway
    correction_delay_frames: int = param(10, ge=1)  # dataset runs: the essential graph (run in the loop-closing stage) is written back this many frames after the loop (tracking waits if it is not done)
    global_ba: bool = True  # a global bundle adjustment after each loop, in the background
    global_ba_iterations: int = param(10, ge=1)
    global_ba_delay_frames: int = param(30, ge=1)  # dataset runs: its result is applied at least this many frames after the essential graph's (tracking waits if it is not done) ...
    global_ba_yield_max_ms: float = param(200.0, ge=0.0)  # the background global BA waits at each of its pause points (between pieces of its work of a few ms: slam.optim.ba_schur) while a frame is tracked or a keyframe mapped, at most this long per point, so it runs in the frame path's gaps (beside it, on 2 cores, tracking took twice as long per frame: docs/benchmarks.md section 12, 2026-12-07 11:47); dataset runs stop waiting for the last quarter of the frames before it is due, so that tracking does not wait for it; 0 = never waits
    global_ba_delay_per_keyframe: float = param(1.5, ge=0.0)  # ... and at least this many frames per keyframe it adjusts (its cost grows with the map; yielding to the frame path, 49 keyframes take 2.1-3.6 s, 27-48 frames, in threaded runs on this 2-core CPU, and it stops yielding for the last quarter of its frames: with 1.0 it ran into that quarter in 10 of 14 runs, with 1.5 in none of 3; docs/benchmarks.md section 12, 2026-12-07 14:45); 0 = global_ba_delay_frames alone


@dataclass
class MapMergingConfig:
    """Merging the maps of the atlas (slam.loop.merge); keys ``map_merging.*``. Verification uses
    the ``loop_closing`` thresholds."""

    enabled: bool = True  # false: maps started after a loss stay separate segments
    min_keyframes: int = param(2, ge=2)  # the active map needs this many keyframes before it is merged
    candidates: int = param(3, ge=1)  # place-recognition candidates verified per keyframe, best first
    confirm_neighbours: int = param(2, ge=0)  # covisible keyframes of the current one that must see the candidate's points too
    confirm_min_matches: int = param(20, ge=1)  # ... with at least this many projection matches each
    weld_iterations: int = param(10, ge=1)  # Levenberg iterations of the welding bundle adjustment
