"""The SLAM system: builds the stages from a config.

Stages (plain classes with process(item); the runtime connects them):
  reader (iterable of Frame) -> FeatureStage -> TrackingStage -> MappingStage [-> LoopClosingStage]

Loop closing (slam.loop.closing, on unless loop_closing.enabled=false or no vocabulary fits the
extractor) detects, verifies and corrects loops at points fixed by the frame sequence in dataset
runs, and runs the global bundle adjustment after a loop in its own stage.

How tracking and mapping share the machine is the mapping schedule's business
(slam.runtime.schedule): in dataset runs local bundle adjustment overlaps tracking and its
result is written back at a frame fixed by the sequence, so threads and the synchronous runner
give the same run; in live runs tracking goes first.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from slam.config import Config
from slam.device import resolve_device
from slam.errors import ConfigError
from slam.geometry.camera import PinholeCamera
from slam.loop.closing import LoopClosing, LoopClosingStage, LoopWake
from slam.mapping.depth_weight import DepthWeight
from slam.mapping.local_mapper import LocalMapper
from slam.mapping.map import Map
from slam.runtime.schedule import MappingSchedule, make_schedule
from slam.tracking.dense_match import DenseMatching, wants_dense
from slam.tracking.frontend import FeatureStage
from slam.tracking.patch_align import patch_align_on
from slam.tracking.small_image import SmallImageMaker
from slam.tracking.tracker import Tracker
from slam.types import FrameFeatures, TrackResult, has_depth

log = logging.getLogger(__name__)


def weights_installed(name: str) -> bool:
    """True when the weights ``name`` (a registry name or a path) resolve to a file; the one
    weights lookup the auto choices below make (tests monkeypatch it)."""
    from slam.errors import WeightsError
    from slam.weights import resolve_weights

    try:
        resolve_weights(name)
    except WeightsError:
        return False
    return True


#: Learned pairs ``features: auto`` / ``matcher: auto`` consider, best first, per device type:
#: (features, matcher, weights that must be installed). The first whose weights are all there
#: wins; ORB + nearest neighbour when none is.
AUTO_PAIRS = {
    "cpu": (("xfeat", "lightglue", ("xfeat", "xfeat_lighterglue")), ("xfeat", "nn", ("xfeat",))),
    "cuda": (("superpoint", "superglue", ("superpoint", "superglue")),
             ("superpoint", "superglue", ("superpoint_v1", "superglue_indoor")),  # Magic Leap's, placed by the user
             ("xfeat", "lightglue", ("xfeat", "xfeat_lighterglue")), ("xfeat", "nn", ("xfeat",))),
}
#: Learned matcher for extractor features when ``matcher: auto`` and its weights are installed.
AUTO_MATCHER = {"superpoint": ("superglue", ("superglue",)), "xfeat": ("lightglue", ("xfeat_lighterglue",)),
                "aliked": ("lightglue", ("aliked_lightglue",)), "disk": ("lightglue", ("disk_lightglue",))}


def _weights_for(cfg: Config, model: str) -> str:
    """The weights file of an AUTO_PAIRS entry: the configured weights for "superpoint" /
    "superglue", the registry name itself for the others."""
    if model == "superpoint":
        return cfg.superpoint.weights
    if model == "superglue":
        return cfg.superglue.weights
    return model


def choose_features_and_matcher(cfg: Config, device_type: str) -> tuple[str, str, str, tuple[str, ...]]:
    """(features, matcher, why, weights of the chosen pair) for ``features`` / ``matcher``
    "auto" on ``device_type``.

    Both auto: the first pair of AUTO_PAIRS[device_type] whose weights are installed, else
    ORB + NN. Features auto with a given matcher: the extractor that matcher needs (superglue:
    superpoint; lightglue: xfeat when installed, else aliked; nn: the best installed learned
    extractor, else ORB). Matcher auto with given features: AUTO_MATCHER's matcher when its
    weights are installed, else nn."""
    pairs = AUTO_PAIRS["cuda" if device_type == "cuda" else "cpu"]
    feats, matcher = cfg.features, cfg.matcher
    chosen: tuple[str, ...] = ()
    if feats == "auto":
        if matcher == "superglue":
            feats, why = "superpoint", "superglue matches superpoint features"
        elif matcher == "lightglue":
            feats = "xfeat" if weights_installed("xfeat") else "aliked"
            why = "lightglue with the installed xfeat weights" if feats == "xfeat" else "lightglue without xfeat weights"
        else:
            ok = [(f, m, w) for f, m, w in pairs if all(weights_installed(_weights_for(cfg, x)) for x in w)
                  and (matcher == "auto" or m == matcher or matcher == "nn")]
            if ok:
                feats, chosen = ok[0][0], ok[0][2]
                matcher = ok[0][1] if matcher == "auto" else matcher
                why = f"the best learned pair on {device_type} whose weights are installed"
            else:
                feats = "orb"
                why = f"no learned weights installed for {device_type} (python -m slam weights install xfeat xfeat_lighterglue)"
    else:
        why = "features given"
    if matcher == "auto":
        name, needs = AUTO_MATCHER.get(feats, ("nn", ()))
        matcher = name if needs and all(weights_installed(_weights_for(cfg, x)) for x in needs) else "nn"
    return feats, matcher, why, chosen


def resolve_config(cfg: Config, live: bool = False) -> Config:
    """A copy of ``cfg`` with everything a run decides for itself made explicit, so that the
    config.yaml of a run records what ran (this is the one home of the auto choices):

    - ``device`` "auto": cuda when torch sees a GPU, else cpu;
    - ``features`` / ``matcher`` "auto": the best learned pair whose weights are installed
      (:func:`choose_features_and_matcher`: XFeat + LighterGlue on CPU; SuperPoint + SuperGlue
      on CUDA), ORB + nearest neighbour when none is; the choice is logged;
    - ``tracking.learned_matching`` "auto": keyframes on CPU, every_frame on CUDA;
    - ``tracking`` / ``mapping.max_desc_dist_float`` unset: the extractor's own guided-search
      threshold (slam.features.config.GUIDED_MAX_L2);
    - ``runtime.feature_threads`` 0: every core for a heavy extractor, else 1
      (:func:`slam.runtime.feature_process.resolve_feature_threads`);
    - ``mapping.ba_window_mono`` / ``ba_iterations_mono`` 0: 20 / 10 for a heavy extractor on a
      CPU, else 6 / 5 (:func:`slam.mapping.config.mono_local_ba`);
    - ``runtime.live``, and ``lightglue.features`` (the LightGlue weights must fit the extractor).
    """
    from slam.features.config import HEAVY_CPU_EXTRACTORS, guided_max_l2
    from slam.mapping.config import mono_local_ba
    from slam.runtime.feature_process import resolve_feature_threads
    from slam.tracking.config import default_learned_matching

    cfg = copy.deepcopy(cfg)
    cfg.device = resolve_device(cfg.device).type
    if cfg.features == "auto" or cfg.matcher == "auto":
        asked = (cfg.features, cfg.matcher)
        cfg.features, cfg.matcher, why, weights = choose_features_and_matcher(cfg, cfg.device)
        if "superpoint_v1" in weights:
            cfg.superpoint.weights, cfg.superglue.weights = "superpoint_v1", "superglue_indoor"
        log.info("features=%s matcher=%s -> %s + %s (%s)", asked[0], asked[1], cfg.features, cfg.matcher, why)
    if cfg.tracking.learned_matching == "auto":
        cfg.tracking.learned_matching = default_learned_matching(cfg.device)
    for section in (cfg.tracking, cfg.mapping):
        if section.max_desc_dist_float is None:
            section.max_desc_dist_float = guided_max_l2(cfg.features)
    cfg.runtime.feature_threads = resolve_feature_threads(cfg.runtime.feature_threads, cfg.features)
    cfg.mapping.ba_window_mono, cfg.mapping.ba_iterations_mono = mono_local_ba(
        cfg.mapping, large=cfg.device == "cpu" and cfg.features in HEAVY_CPU_EXTRACTORS)
    cfg.runtime.live = bool(live or cfg.runtime.live)
    if cfg.matcher == "lightglue" and not cfg.lightglue.weights:
        cfg.lightglue.features = cfg.features
    return cfg


def build_extractor(cfg: Config, device: torch.device, depth_run: bool = False):
    """The configured extractor. ``depth_run``: it feeds a run with measured depth (RGB-D, stereo),
    where XFeat's ``auto`` precision may take bf16 on more CPUs (slam.features.xfeat.XFeat); off for
    single images, vocabulary pools and tools, so their descriptors do not depend on the CPU's maker."""
    name = cfg.features
    if name == "orb":
        from slam.features.orb import ORBExtractor

        return ORBExtractor(cfg.orb, device)
    if name == "superpoint":
        from slam.features.superpoint import SuperPoint

        return SuperPoint(cfg.superpoint, device)
    if name == "aliked":
        from slam.features.aliked import ALIKED

        return ALIKED(cfg.aliked, device)
    if name == "disk":
        from slam.features.disk import DISK

        return DISK(cfg.disk, device)
    if name == "xfeat":
        from slam.features.xfeat import XFeat

        return XFeat(cfg.xfeat, device, depth_run=depth_run)
    raise ValueError(f"unknown features {name!r}")


def build_matcher(cfg: Config, device: torch.device):
    name = cfg.matcher
    if name == "nn":
        from slam.matching.nn import NearestNeighborMatcher

        return NearestNeighborMatcher(cfg.nn, device)
    if name == "superglue":
        from slam.matching.superglue import SuperGlue

        return SuperGlue(cfg.superglue, device)
    if name == "lightglue":
        from slam.matching.lightglue import LightGlue

        return LightGlue(cfg.lightglue, device)
    if name == "loftr":
        raise ConfigError("matcher=loftr matches whole images without keypoints, so it cannot track; keep a keypoint "
                          "matcher (nn, superglue, lightglue) and use LoFTR where two images are compared: "
                          "tracking.mono_init_matcher=loftr, tracking.reloc_matcher=loftr and/or loop_closing.matcher=loftr")
    raise ValueError(f"unknown matcher {name!r}")


class TrackingStage:
    """process(FrameFeatures) -> what goes to mapping (a keyframe job, as the schedule wraps
    it) or None; keeps every TrackResult. The schedule decides when mapping results are written
    back and how tracking and mapping share the machine (slam.runtime.schedule)."""

    def __init__(self, tracker: Tracker, schedule: MappingSchedule, loop: Optional[LoopClosing] = None):
        self.tracker = tracker
        self.schedule = schedule
        self.loop = loop
        self.results: list[TrackResult] = []

    def process(self, fr: FrameFeatures):
        # the frame path is busy (slam.runtime.schedule.Foreground: background work waits) for the
        # whole frame: the write-backs and loop closing's per-frame work before it, and the
        # hand-over of a keyframe job after it, not only the tracking itself
        frame_no = len(self.results)
        with self.schedule.tracking():
            self.schedule.before_frame(frame_no)
            wake = self.loop.before_frame(frame_no) if self.loop is not None else None
            res, job = self.tracker.process(fr)
            self.results.append(res)
            return wake if job is None else self.schedule.hand_over(job, frame_no)

    def flush(self) -> list:
        self.schedule.finish()
        if self.loop is not None:
            self.loop.finish(len(self.results))
        return []


class MappingStage:
    """process(what the tracking stage handed over) -> None: the schedule runs the job on the mapper."""

    def __init__(self, mapper: LocalMapper, schedule: MappingSchedule, forward: bool = False):
        self.mapper = mapper
        self.schedule = schedule
        self.forward = forward  # loop closing follows: pass it a LoopWake after each job

    def process(self, item) -> Optional[LoopWake]:
        if isinstance(item, LoopWake):
            return item
        self.schedule.run_job(self.mapper, item)
        if not self.forward:
            return None
        job = item[1] if isinstance(item, tuple) else item
        return LoopWake(int(job.kf_id))

    def close(self) -> None:
        self.schedule.close()


@dataclass
class SLAMSystem:
    cfg: Config
    camera: PinholeCamera
    device: torch.device
    extractor: Any
    matcher: Any
    map: Map
    frontend: FeatureStage
    tracker: Tracker
    mapper: LocalMapper
    schedule: MappingSchedule
    loop: Optional[LoopClosing] = None
    tracking_stage: TrackingStage = field(init=False)
    mapping_stage: MappingStage = field(init=False)
    frame_refinement: Optional[dict] = None  # set by finish(): frames re-estimated against the final map

    def __post_init__(self) -> None:
        self.tracking_stage = TrackingStage(self.tracker, self.schedule, self.loop)
        self.mapping_stage = MappingStage(self.mapper, self.schedule, forward=self.loop is not None)

    @property
    def stages(self) -> list[tuple[str, Any]]:
        out = [("features", self.frontend), ("tracking", self.tracking_stage), ("mapping", self.mapping_stage)]
        if self.loop is not None:
            out.append(("loop_closing", LoopClosingStage(self.loop)))
        return out

    def loop_segments(self) -> np.ndarray:
        """(E, 2, 3) world positions of the keyframes each closed loop joins (for map.png)."""
        return self.loop.loop_segments() if self.loop is not None else np.zeros((0, 2, 3))

    def progress_info(self) -> dict:
        return {
            "state": self.tracker.state,
            "kfs": len(self.map.keyframes),
            "points": self.map.n_alive_points(),
        }

    def finish(self) -> Optional[dict]:
        """End of a run: optional global bundle adjustment (the first keyframe of each map fixed),
        then the frames between keyframes re-estimated against the final map
        (tracking.frame_refine_points; slam.tracking.trajectory.FrameTrajectory.refine)."""
        out = None
        if self.cfg.global_ba and len(self.map.keyframes) >= 2:
            t = time.perf_counter()
            at = self.tracker.atlas
            with self.map.lock:
                firsts = [ks[0] for ks in (at.keyframes_of(k, self.map.keyframes) for k in at.map_ids()) if ks] if at else []
            out = self.mapper.global_bundle_adjustment(fixed_ids=firsts)
            if out is not None:
                out["ms"] = (time.perf_counter() - t) * 1e3
                log.info("global BA over %d keyframes: chi2 %.1f -> %.1f (%.0f ms)", out["n_keyframes"], out["chi2_before"], out["chi2_after"], out["ms"])
        dw = self.mapper.depth
        if dw.auto:
            log.info("depth weight: bf %.1f px*m after %d updates (started at %.1f; last estimate %s)", dw.bf, dw.updates,
                     dw.initial, "none" if dw.last_estimate is None else f"{dw.last_estimate:.1f}")
        if self.cfg.tracking.frame_refine_points > 0:
            t = time.perf_counter()
            tr = self.tracker  # the K that tracking used, and the depth weight as the run left it
            at = self.tracker.atlas
            self.frame_refinement = tr.frame_poses.refine(tr.pose.K, tr.pose.depth.bf if has_depth(tr.mode) else 0.0,
                                                          accel_per_depth=tr.cfg.frame_smooth_accel,
                                                          map_of=at.map_of if at else None)
            self.frame_refinement["ms"] = (time.perf_counter() - t) * 1e3
            fr = self.frame_refinement
            log.info("frames re-estimated against the final map: %d (%d kept as tracked), median shift %.4f, "
                     "%d solved with the smooth-motion prior, %.0f ms",
                     fr["frames"], fr["skipped"], fr["median_shift_m"], fr["smoothed"], fr["ms"])
        return out

    def trajectory(self):
        """(indices (F,), timestamps (F,) s, world_from_cam (F, 4, 4)) of every tracked frame (with
        several unmerged maps: the frames of the main map, the one holding most frames)."""
        if self.tracker.atlas is None:
            return self.tracker.trajectory()
        segs = self.trajectory_segments()
        return segs[0][1:] if segs else self.tracker.trajectory()

    def trajectory_segments(self) -> list[tuple]:
        """[(map id, indices (F,), timestamps (F,) s, world_from_cam (F, 4, 4)), ...]: the tracked
        frames of each map of the atlas in its own world frame, the map with most frames first
        (one entry without an atlas, or once every map was merged)."""
        at = self.tracker.atlas
        if at is None:
            return [(0, *self.tracker.trajectory())]
        segs = []
        for k in at.map_ids():
            seg = self.tracker.frame_poses.poses(keep=lambda kf_id, k=k: at.map_of(kf_id) == k)
            if len(seg[0]):
                segs.append((k, *seg))
        segs.sort(key=lambda s: (-len(s[1]), s[0]))
        return segs

    def map_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(P, 3) float32 world points and (P, 3) uint8 colours of the main map (every live point
        without an atlas)."""
        main = self.main_map_id()
        if main is None:
            return self.map.snapshot_points()
        with self.map.lock:
            ids = self.map.alive_point_ids()
            ids = ids[self.tracker.atlas.maps_of(self.map.pts_first_kf[ids]) == main]
            return self.map.pts_xyz[ids].astype(np.float32), self.map.pts_color[ids].copy()

    def main_map_id(self) -> Optional[int]:
        """The atlas map holding most tracked frames (trajectory.txt's); None without an atlas
        or before any frame was tracked."""
        if self.tracker.atlas is None:
            return None
        segs = self.trajectory_segments()
        return segs[0][0] if segs else None

    def stats(self) -> dict:
        """The system's figures for metrics.json: tracking, mapping and scheduling counters."""
        results = self.tracking_stage.results
        first_ok = next((i for i, r in enumerate(results) if r.state == "OK"), None)
        n_after_init = len(results) - first_ok if first_ok is not None else 0
        n_ok_after = sum(1 for r in results[first_ok:] if r.state == "OK") if first_ok is not None else 0
        with self.map.lock:
            n_kfs = len(self.map.keyframes)
        return {
            "tracked_after_init_pct": 100.0 * n_ok_after / max(n_after_init, 1),
            "init_frame": first_ok,
            "lost_events": self.tracker.n_lost,
            "relocalisations": self.tracker.n_relocalised,
            "matcher_frames": self.tracker.n_matched_frames,  # tracked frames for which the matcher ran (not init/reloc)
            "depth_rescues": self.tracker.pose.n_depth_rescues,  # pose refinements saved by keeping depth outliers' pixels (tracking.depth_outliers_as_mono=rescue)
            "wide_searches": {"first_stage": self.tracker.n_wide_first_stage, "all_keyframes": self.tracker.n_wide_searches},
            "predictions_replaced": self.tracker.n_predictions_replaced,  # frames whose motion-model prediction the descriptor check replaced
            "rotation_priors": self.tracker.n_rotation_priors,  # frames whose prediction took the small images' rotation (tracking.rotation_prior)
            "rotation_prior_ms": round(self.tracker.rotation_prior_ms / max(1, self.tracker.n_rotation_alignments), 2),  # per alignment
            "keyframes": n_kfs,
            **self.mapper.stats(),
            **({"depth_weight": self.mapper.depth.stats()} if has_depth(self.cfg.mode) else {}),
            **self.schedule.stats(),
            **(self.loop.stats() if self.loop is not None else {"loop_closing": {"enabled": False}}),
            # (E, 2, 3) world positions (trajectory.txt's frame) of the keyframe centres each loop
            # joins, as map.png draws them; `python -m slam view` reads them
            "loop_edges": self.loop_segments().tolist(),
            **self._atlas_stats(n_kfs),
            "frame_refinement": self.frame_refinement,
            "patch_align": self.tracker.patch_aligner.stats() if self.tracker.patch_aligner is not None else {"enabled": False},
        }

    def _atlas_stats(self, n_kfs: int) -> dict:
        at = self.tracker.atlas
        if at is None:
            return {}
        with self.map.lock:
            out = at.stats(self.map.keyframes)
        out["new_maps_after_loss"] = self.tracker.n_new_maps
        out["young_maps_discarded"] = self.tracker.n_young_resets
        if self.loop is not None and self.loop.merger is not None:
            out["merge_detection"] = self.loop.merger.stats()
        return {"atlas": out}

    def keyframe_trajectory(self):
        """(timestamps (K,) s, world_from_cam (K, 4, 4)) of the keyframes (of the main map)."""
        main = self.main_map_id()
        with self.map.lock:
            kfs = sorted(self.map.keyframes.values(), key=lambda k: k.frame_index)
            if main is not None:
                kfs = [k for k in kfs if self.tracker.atlas.map_of(k.id) == main]
            ts = np.array([k.timestamp for k in kfs])
            poses = np.stack([k.world_from_cam for k in kfs]) if kfs else np.zeros((0, 4, 4))
        return ts, poses


def resolve_rig(cfg: Config, rig) -> Config:
    """Stereo mode: a copy of ``cfg`` with what the rig decides made explicit, ``tracking.bf`` =
    fx * baseline and ``tracking.keyframes.close_depth`` = ``stereo.close_baselines`` x baseline
    (ORB-SLAM2's ThDepth). rig: the rectified slam.geometry.stereo.StereoRig of the input.
    Other modes: ``cfg`` unchanged. ConfigError for stereo without a rectified rig."""
    if cfg.mode != "stereo":
        return cfg
    if rig is None or not rig.rectified:
        raise ConfigError("mode=stereo needs a rectified stereo input (EuRoC, KITTI or synthetic/stereo); "
                          "run this input with --mode mono or rgbd")
    cfg = copy.deepcopy(cfg)
    cfg.tracking.bf = float(rig.bf)
    cfg.tracking.keyframes.close_depth = float(cfg.stereo.close_baselines * rig.baseline)
    return cfg


def build_stereo_matcher(cfg: Config, camera: PinholeCamera, device: torch.device):
    """The StereoMatcher of a stereo run (None in other modes): bf from ``tracking.bf`` (set by
    :func:`resolve_rig`), ORB's pyramid scale for its octaves, the configured matcher when
    ``stereo.method`` is "matcher"."""
    if cfg.mode != "stereo":
        return None
    from slam.tracking.stereo import StereoMatcher

    scale = cfg.orb.scale_factor if cfg.features == "orb" else 1.0
    matcher = build_matcher(cfg, device) if cfg.stereo.method == "matcher" else None
    return StereoMatcher(cfg.stereo, cfg.tracking.bf, camera.fx, scale_factor=scale, matcher=matcher)


def build_frontend(cfg: Config, camera: PinholeCamera) -> FeatureStage:
    """The feature stage alone (what a feature process builds for itself)."""
    device = resolve_device(cfg.device)
    extractor = build_extractor(cfg, device, depth_run=has_depth(cfg.mode))
    tc = cfg.tracking
    return FeatureStage(extractor, camera, min_depth=tc.min_depth, max_depth=tc.max_depth,
                        stereo=build_stereo_matcher(cfg, camera, device), keep_image=keeps_images(cfg),
                        small_image=small_image_maker(cfg, camera))


def small_image_maker(cfg: Config, camera: PinholeCamera) -> Optional[SmallImageMaker]:
    """What makes each frame's small image when the tracker's rotation prior is on, else None."""
    tc = cfg.tracking
    return SmallImageMaker(camera, width=tc.rotation_prior_width) if tc.rotation_prior else None


def keeps_images(cfg: Config) -> bool:
    """Frames keep a grey copy of their image: for patch alignment or LoFTR."""
    return patch_align_on(cfg.tracking.patch_align, cfg.mode) or any(dense_paths(cfg))


def dense_paths(cfg: Config) -> tuple[bool, bool, bool]:
    """Where the settings ask for LoFTR: (monocular initialisation, relocalisation, loop verification)."""
    init, reloc = wants_dense(cfg.tracking, cfg.mode)
    return init, reloc, cfg.loop_closing.enabled and cfg.loop_closing.matcher == "loftr"


def build_dense(cfg: Config, camera: PinholeCamera, device: torch.device) -> Optional[DenseMatching]:
    """LoFTR for monocular initialisation / relocalisation / loop verification when the settings
    ask for it, else None."""
    init, reloc, loop = dense_paths(cfg)
    if not (init or reloc or loop):
        return None
    from slam.matching.loftr.matcher import LoFTR

    return DenseMatching(LoFTR(cfg.loftr, device), camera, cfg.tracking, init=init, reloc=reloc, loop=loop)


def attach_atlas(cfg: Config, camera: PinholeCamera, tracker: Tracker, loop: LoopClosing) -> None:
    """Several maps (slam.mapping.atlas) when lost tracking may start a new map in this mode
    (``tracking.new_map_after_lost_frames``): the tracker relocalises in the active map only,
    loops stay within a map, and places shared with another map merge them (slam.loop.merge)."""
    tc = cfg.tracking
    if tc.new_map_after_lost_frames <= 0 or (cfg.mode != "mono" and not tc.new_map_in_depth_modes):
        return
    from slam.loop.merge import MapMerger
    from slam.mapping.atlas import Atlas

    atlas = Atlas()
    tracker.atlas = loop.atlas = atlas
    tracker.relocalizer.usable = atlas.in_active
    if cfg.map_merging.enabled:
        loop.merger = MapMerger(cfg.map_merging, atlas, loop, camera, fix_scale=cfg.mode != "mono")


def build_system(cfg: Config, camera: PinholeCamera) -> SLAMSystem:
    """The whole system for a resolved configuration (features and matcher not "auto")."""
    device = resolve_device(cfg.device)
    extractor = build_extractor(cfg, device, depth_run=has_depth(cfg.mode))
    matcher = build_matcher(cfg, device)
    slam_map = Map(extractor.descriptor_dim, extractor.binary)
    tc = cfg.tracking
    dense = build_dense(cfg, camera, device)
    frontend = FeatureStage(extractor, camera, min_depth=tc.min_depth, max_depth=tc.max_depth,
                            stereo=build_stereo_matcher(cfg, camera, device), keep_image=keeps_images(cfg),
                            small_image=small_image_maker(cfg, camera))
    schedule = make_schedule(cfg.runtime)
    depth = DepthWeight(tc.bf, auto=tc.bf_auto and cfg.mode == "rgbd")  # stereo: the rig's bf, measured
    tracker = Tracker(tc, camera, slam_map, matcher, mode=cfg.mode, schedule=schedule, dense=dense, depth_weight=depth)
    mapper = LocalMapper(cfg.mapping, camera, slam_map, matcher, mode=cfg.mode, schedule=schedule,
                         close_depth=tc.keyframes.close_depth, triangulate_stereo=cfg.stereo.triangulate, depth_weight=depth)
    loop = None
    if cfg.loop_closing.enabled:
        from slam.loop.store import vocabulary_for_config

        vocabulary = vocabulary_for_config(cfg, required=False)  # None: logged, run without loop closing
        if vocabulary is not None:
            loop = LoopClosing(cfg, camera, slam_map, matcher, mapper, tracker, schedule, vocabulary, live=cfg.runtime.live)
            tracker.relocalizer.place = loop.place_candidates
            attach_atlas(cfg, camera, tracker, loop)
    return SLAMSystem(cfg, camera, device, extractor, matcher, slam_map, frontend, tracker, mapper, schedule, loop)
