"""Settings of local mapping (light: no torch; ``slam.config`` builds on them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from slam.params import param


@dataclass
class MappingConfig:
    local_ba: bool = True  # run local bundle adjustment after each keyframe
    ba_window: int = param(6, ge=1)  # keyframes optimised (RGB-D, stereo): the new one plus its best covisible ones
    ba_window_mono: int = param(0, ge=0)  # the same in monocular runs, where the window must also hold the scale (ORB-SLAM: every covisible keyframe); 0 = auto (mono_local_ba: 20 for a heavy extractor on a CPU, else 6). 20, with ba_iterations_mono=10, ends ORB monocular fr1_xyz's scale collapses (10 of 10 jittered runs 0.84-0.88 cm; 3 of 10 over 5 cm with 6 / 5) and narrows the default's spreads on KITTI 07, corridor and loop_short, but costs monocular throughput 0.77x (local BA 3x; 0.66x before the numpy solver was made 1.7x faster) and is worse on ORB KITTI, synthetic/fast and synthetic/loop with loop closing, so it is not the default for the fast front-ends (docs/benchmarks.md section 14, "a larger, converged monocular local BA"); with ALIKED + LightGlue, whose extractor bounds the frame rate on a CPU, it is (fr1_xyz mono 0.89 / 0.91 cm against 1.35 / 2.01 cm, docs/benchmarks.md section 14)
    ba_max_fixed: int = param(6, ge=0)  # at most this many fixed keyframes that also observe local points
    mono_fix_all_observers: bool = False  # monocular local BA fixes every other keyframe that sees its points, not only ba_max_fixed (ORB-SLAM; the map stays consistent, but fr1_xyz/corridor ATE mixed: docs/benchmarks.md section 14)
    ba_iterations: int = param(5, ge=1)  # Levenberg iterations per local BA stage (two stages), RGB-D and stereo
    ba_iterations_mono: int = param(0, ge=0)  # the same in monocular runs (ORB-SLAM: 5 then 10); 0 = auto (mono_local_ba: 10 with the large window, else 5). With ba_window_mono=20 use 10: with 5, a 20-keyframe window drifts in scale on forward motion (corridor seed 2: 8.2 cm with 6 keyframes, 32.5 cm with 20 and 5 iterations, 3.1 cm with 20 and 10)
    ba_solver: str = param("auto", choices=("auto", "schur", "g2o"))  # local BA: schur = numpy Levenberg on the Schur complement (slam.optim.ba_schur; g2o's model, damping and optimum, without g2opy's per-edge Python graph building) | g2o | auto = schur in depth modes (rgbd, stereo), and in mono for problems with at least two fixed keyframes (gauge fixed: the solvers agree to 1e-12 on most problems, a few end mm apart at an outlier flip), g2o for the others, whose scale is a null direction where the two solvers' rounding differs and monocular runs hinge on it (docs/benchmarks.md section 13); a window too large for schur goes to g2o
    ba_tau: float = param(1e-5, gt=0.0)  # numpy local BA (ba_solver schur, or auto where it picks schur): initial Levenberg damping = ba_tau x the Hessian's largest diagonal entry; 1e-5 is g2o's (slam.optim.ba_schur.TAU). It leaves a monocular window's free keyframes 0.8 cm (median, KITTI 07) from the optimum after the 5 + 5 steps; 1e-8 gets within 0.01 cm at the same cost, and KITTI 07 mono goes 40.4 -> 34.4 cm (median of five jittered runs), but synthetic/loop_short mono collapses in two runs of five (33-36 cm) and ORB's KITTI gets worse (25.1 -> 30.0 cm), so g2o's stays the default (docs/benchmarks.md section 13, "the local BA's initial damping"); the g2o solver always uses its own
    global_ba_iterations: int = param(15, ge=1)
    global_ba_tolerance: float = param(1e-6, ge=0.0)  # numpy global BAs: a stage ends once a step lowers its cost by at most this fraction (Ceres' default function tolerance); 0 = every step, as g2o
    global_ba_solver: str = param("auto", choices=("auto", "schur", "g2o"))  # global BAs (the one after a loop, and the one at the end of a run): schur = the numpy solver with its reduced system formed in chunks of points (slam.optim.ba_schur; the same optimum as g2o's on the global BAs of real runs, keyframes within 1e-5 m with depth and 0.2 mm in monocular maps, at 0.42x g2o's CPU on a 49-keyframe map, 0.28x at 300 keyframes, with no GIL-held graph building; docs/benchmarks.md section 12) | g2o | auto = schur where the map has at most MAX_REDUCED_KEYFRAMES (600) free keyframes, else g2o
    n_triangulation_neighbours: int = param(6, ge=1)  # monocular: covisible keyframes used to triangulate new points
    triangulation_match: str = param("epipolar", choices=("epipolar", "matcher"))  # epipolar: descriptor search along each keypoint's epipolar line (ORB-SLAM's SearchForTriangulation; for descriptor-only matchers such as nn, ~4x cheaper than matching all pairs) | matcher: the configured matcher on all free keypoints (learned matchers: see triangulation_learned_neighbours)
    triangulation_learned_neighbours: int = param(-1, ge=-1)  # learned matchers (lightglue, superglue): -1 = every neighbour (default); else only the first this-many of the covisible keyframes that triangulate are matched by the learned matcher, the others by the epipolar search (triangulation_match=epipolar; the poses are known there, so the search is a band a few px wide; measured, not the default: docs/benchmarks.md section 13)
    triangulation_gate: bool = False  # learned matchers, monocular triangulation: before matching a keyframe with a neighbour, leave out the free keypoints that have no partner near their epipolar segment between the depths the two keyframes' points span (LocalMapper._gate). The learned matcher's time about 0.8x (fr1_xyz) / 0.65x (synthetic/loop_short), as many matches passing the triangulation check and no more wrong ones; default mono 1.05x fps, ALIKED mono 1.07-1.18x. Opt-in: synthetic/loop without loop closing drifts more (1.45-1.63 against 1.09 cm) and loop_short / corridor medians are higher (docs/benchmarks.md section 13)
    triangulation_gate_depth: float = param(4.0, ge=1.0)  # the gate's depths: the 2nd to 98th percentile of the two keyframes' point depths, widened this many times each way
    triangulation_ratio: float = param(0.9, gt=0.0, le=1.0)  # epipolar search: best/second-best descriptor distance ratio within the band
    n_fuse_neighbours: int = param(6, ge=0)  # keyframes whose points are fused into the new keyframe
    fuse_radius_px: float = param(3.0, gt=0.0)
    distinctive_descriptors: bool = False  # true: after fusion, each point of the new keyframe with >= 3 observations takes the observation descriptor with the least median distance to the others (ORB-SLAM's ComputeDistinctiveDescriptors); false: a point keeps its first keyframe's descriptor. Off: equal with ORB, worse with XFeat (synthetic/loop RGB-D 0.54 -> 0.63 cm, KITTI 07 mono 27 -> 63 cm; docs/benchmarks.md section 14)
    min_found_ratio: float = param(0.25, ge=0.0, le=1.0)  # cull points found in fewer than this fraction of frames where visible
    rotation_points_below: int = param(150, ge=0)  # monocular: a keyframe tracking fewer map points than this, whose covisible keyframes are all too close to triangulate (a turn on the spot), makes points from its matches with the two latest of them, on its rays at the median depth of what it tracks (LocalMapper._rotation_points); 0 = off
    min_parallax_cos: float = param(0.9998, gt=0.0, le=1.0)  # triangulation: cos of the minimum parallax angle
    min_parallax_sigmas: float = param(0.0, ge=0.0)  # triangulation: the parallax must also be this many times its own standard deviation, sqrt(sigma0^2 + sigma1^2) / fx (the two keypoints' octave sigmas, 1 px at octave 0); 0 = off (default). A noisy parallax near min_parallax_cos passes only when the noise inflated it, which puts the point too near. 7 (at octave 0 and fx ~ 500 px the same as min_parallax_cos) ends ORB monocular fr1_xyz's scale collapses (3 in 10 jittered runs -> 0), but loses KITTI 07 in 2 of 5 and collapses loop_short in 1 of 5: off by default (docs/benchmarks.md section 14)
    max_reproj_chi2: float = param(5.991, gt=0.0)  # triangulation check (chi2, 2 dof, 95%)
    cull_keyframes: bool = True
    redundant_ratio: float = param(0.9, ge=0.0, le=1.0)  # cull a keyframe when this share of its points is seen by 3+ others
    max_desc_dist_binary: float = param(50.0, ge=0.0)
    max_desc_dist_float: Optional[float] = param(None, ge=0.0)  # L2 of unit float descriptors; None = the extractor's own (slam.features.config.GUIDED_MAX_L2)


#: (window, Levenberg iterations per stage) of the monocular local BA, when left to auto (0).
MONO_BA_LIGHT = (6, 5)  # fast extractors (XFeat, ORB): the mapping thread bounds the frame rate
MONO_BA_LARGE = (20, 10)  # heavy extractors on a CPU: they bound it, so the BA may converge a large window


def mono_local_ba(cfg: MappingConfig, large: bool = False) -> tuple[int, int]:
    """(window, iterations) of the monocular local BA: ``mapping.ba_window_mono`` and
    ``ba_iterations_mono`` where set (> 0), else MONO_BA_LARGE if ``large`` (slam.system.resolve_config:
    a heavy extractor, slam.features.config.HEAVY_CPU_EXTRACTORS, on a CPU), else MONO_BA_LIGHT.
    The large window ends ORB's monocular scale collapses on fr1_xyz and takes ALIKED's monocular
    fr1_xyz from 1.35 / 2.01 to 0.89 / 0.91 cm, but costs XFeat's monocular frame rate 0.77x
    (docs/benchmarks.md section 14)."""
    window, iterations = MONO_BA_LARGE if large else MONO_BA_LIGHT
    return (cfg.ba_window_mono or window, cfg.ba_iterations_mono or iterations)
