"""The SLAM system: builds the stages from a config.

Stages (plain classes with process(item); the runtime connects them):
  reader (iterable of Frame) -> FeatureStage -> TrackingStage -> MappingStage

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
from slam.mapping.local_mapper import LocalMapper
from slam.mapping.map import Map
from slam.runtime.schedule import MappingSchedule, make_schedule
from slam.tracking.dense_match import DenseMatching, wants_dense
from slam.tracking.frontend import FeatureStage
from slam.tracking.tracker import Tracker
from slam.types import FrameFeatures, TrackResult

log = logging.getLogger(__name__)


def learned_defaults_available() -> bool:
    """True when our own SuperPoint and SuperGlue weights ship inside the package."""
    from importlib import resources

    folder = resources.files("slam") / "weights"
    return all((folder / f"{n}.pth").is_file() for n in ("superpoint_ours", "superglue_ours"))


def resolve_config(cfg: Config, live: bool = False) -> Config:
    """A copy of ``cfg`` with everything a run decides for itself made explicit, so that the
    config.yaml of a run records what ran: ``features``/``matcher`` "auto" (our learned
    SuperPoint + SuperGlue when their weights ship in the package, ORB + nearest neighbour
    until then), ``device`` "auto" (cuda when torch sees a GPU, else cpu), ``runtime.live``,
    and ``lightglue.features`` (the LightGlue weights must fit the extractor)."""
    cfg = copy.deepcopy(cfg)
    if cfg.features == "auto" or cfg.matcher == "auto":
        learned = learned_defaults_available()
        if cfg.features == "auto":
            cfg.features = "superpoint" if learned else "orb"
        if cfg.matcher == "auto":
            cfg.matcher = "superglue" if learned and cfg.features == "superpoint" else "nn"
    cfg.device = resolve_device(cfg.device).type
    cfg.runtime.live = bool(live or cfg.runtime.live)
    if cfg.matcher == "lightglue" and not cfg.lightglue.weights:
        cfg.lightglue.features = cfg.features
    return cfg


def build_extractor(cfg: Config, device: torch.device):
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

        return XFeat(cfg.xfeat, device)
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
                          "tracking.mono_init_matcher=loftr and/or tracking.reloc_matcher=loftr")
    raise ValueError(f"unknown matcher {name!r}")


class TrackingStage:
    """process(FrameFeatures) -> what goes to mapping (a keyframe job, as the schedule wraps
    it) or None; keeps every TrackResult. The schedule decides when mapping results are written
    back and how tracking and mapping share the machine (slam.runtime.schedule)."""

    def __init__(self, tracker: Tracker, schedule: MappingSchedule):
        self.tracker = tracker
        self.schedule = schedule
        self.results: list[TrackResult] = []

    def process(self, fr: FrameFeatures):
        frame_no = len(self.results)
        self.schedule.before_frame(frame_no)
        with self.schedule.tracking():
            res, job = self.tracker.process(fr)
        self.results.append(res)
        return None if job is None else self.schedule.hand_over(job, frame_no)

    def flush(self) -> list:
        self.schedule.finish()
        return []


class MappingStage:
    """process(what the tracking stage handed over) -> None: the schedule runs the job on the mapper."""

    def __init__(self, mapper: LocalMapper, schedule: MappingSchedule):
        self.mapper = mapper
        self.schedule = schedule

    def process(self, item) -> None:
        self.schedule.run_job(self.mapper, item)
        return None

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
    tracking_stage: TrackingStage = field(init=False)
    mapping_stage: MappingStage = field(init=False)

    def __post_init__(self) -> None:
        self.tracking_stage = TrackingStage(self.tracker, self.schedule)
        self.mapping_stage = MappingStage(self.mapper, self.schedule)

    @property
    def stages(self) -> list[tuple[str, Any]]:
        return [("features", self.frontend), ("tracking", self.tracking_stage), ("mapping", self.mapping_stage)]

    def progress_info(self) -> dict:
        return {
            "state": self.tracker.state,
            "kfs": len(self.map.keyframes),
            "points": self.map.n_alive_points(),
        }

    def finish(self) -> Optional[dict]:
        """End of a run: optional global bundle adjustment."""
        if self.cfg.global_ba and len(self.map.keyframes) >= 2:
            t = time.perf_counter()
            out = self.mapper.global_bundle_adjustment()
            if out is not None:
                out["ms"] = (time.perf_counter() - t) * 1e3
                log.info("global BA over %d keyframes: chi2 %.1f -> %.1f (%.0f ms)", out["n_keyframes"], out["chi2_before"], out["chi2_after"], out["ms"])
            return out
        return None

    def trajectory(self):
        """(indices (F,), timestamps (F,) s, world_from_cam (F, 4, 4)) of every tracked frame."""
        return self.tracker.trajectory()

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
            "keyframes": n_kfs,
            **self.mapper.stats(),
            **self.schedule.stats(),
        }

    def keyframe_trajectory(self):
        with self.map.lock:
            kfs = sorted(self.map.keyframes.values(), key=lambda k: k.frame_index)
            ts = np.array([k.timestamp for k in kfs])
            poses = np.stack([k.world_from_cam for k in kfs]) if kfs else np.zeros((0, 4, 4))
        return ts, poses


def build_frontend(cfg: Config, camera: PinholeCamera) -> FeatureStage:
    """The feature stage alone (what a feature process builds for itself)."""
    device = resolve_device(cfg.device)
    extractor = build_extractor(cfg, device)
    tc = cfg.tracking
    return FeatureStage(extractor, camera, min_depth=tc.min_depth, max_depth=tc.max_depth, keep_image=any(wants_dense(tc, cfg.mode)))


def build_dense(cfg: Config, camera: PinholeCamera, device: torch.device) -> Optional[DenseMatching]:
    """LoFTR for monocular initialisation / relocalisation when the tracking settings ask for it, else None."""
    init, reloc = wants_dense(cfg.tracking, cfg.mode)
    if not (init or reloc):
        return None
    from slam.matching.loftr.matcher import LoFTR

    return DenseMatching(LoFTR(cfg.loftr, device), camera, cfg.tracking, init=init, reloc=reloc)


def build_system(cfg: Config, camera: PinholeCamera) -> SLAMSystem:
    """The whole system for a resolved configuration (features and matcher not "auto")."""
    device = resolve_device(cfg.device)
    extractor = build_extractor(cfg, device)
    matcher = build_matcher(cfg, device)
    slam_map = Map(extractor.descriptor_dim, extractor.binary)
    tc = cfg.tracking
    dense = build_dense(cfg, camera, device)
    frontend = FeatureStage(extractor, camera, min_depth=tc.min_depth, max_depth=tc.max_depth, keep_image=dense is not None)
    schedule = make_schedule(cfg.runtime)
    tracker = Tracker(tc, camera, slam_map, matcher, mode=cfg.mode, schedule=schedule, dense=dense)
    mapper = LocalMapper(cfg.mapping, camera, slam_map, matcher, mode=cfg.mode, bf=tc.bf, schedule=schedule)
    return SLAMSystem(cfg, camera, device, extractor, matcher, slam_map, frontend, tracker, mapper, schedule)
