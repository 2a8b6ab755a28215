"""The SLAM system: builds the stages from a config and runs them over a frame source.

Stages (plain classes with process(item); the runtime connects them):
  reader (iterable of Frame) -> FeatureStage -> TrackingStage -> MappingStage
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np
import torch

from slam.config import Config
from slam.device import resolve_device
from slam.geometry.camera import PinholeCamera
from slam.mapping.local_mapper import LocalMapper
from slam.mapping.map import Map
from slam.tracking.frontend import FeatureStage
from slam.tracking.tracker import Tracker
from slam.types import FrameFeatures, TrackResult

log = logging.getLogger(__name__)


def learned_defaults_available() -> bool:
    """True when our own SuperPoint and SuperGlue weights ship inside the package."""
    from importlib import resources

    folder = resources.files("slam") / "weights"
    return all((folder / f"{n}.pth").is_file() for n in ("superpoint_ours", "superglue_ours"))


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

        lg = cfg.lightglue
        if not lg.weights:  # the LightGlue weights must fit the extractor
            lg.features = cfg.features
        return LightGlue(lg, device)
    raise ValueError(f"unknown matcher {name!r}")


class TrackingStage:
    """process(FrameFeatures) -> KeyframeJob or None; keeps every TrackResult."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        self.results: list[TrackResult] = []

    def process(self, fr: FrameFeatures):
        res, job = self.tracker.process(fr)
        self.results.append(res)
        return job


class MappingStage:
    def __init__(self, mapper: LocalMapper):
        self.mapper = mapper

    def process(self, job):
        self.mapper.process(job)
        return None


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
    tracking_stage: TrackingStage = field(init=False)
    mapping_stage: MappingStage = field(init=False)

    def __post_init__(self) -> None:
        self.tracking_stage = TrackingStage(self.tracker)
        self.mapping_stage = MappingStage(self.mapper)

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
        return self.tracker.trajectory()

    def keyframe_trajectory(self):
        with self.map.lock:
            kfs = sorted(self.map.keyframes.values(), key=lambda k: k.frame_index)
            ts = np.array([k.timestamp for k in kfs])
            poses = np.stack([k.world_from_cam for k in kfs]) if kfs else np.zeros((0, 4, 4))
        return ts, poses


def build_system(cfg: Config, camera: PinholeCamera) -> SLAMSystem:
    device = resolve_device(cfg.device)
    extractor = build_extractor(cfg, device)
    matcher = build_matcher(cfg, device)
    slam_map = Map(extractor.descriptor_dim, extractor.binary)
    tc = cfg.tracking
    frontend = FeatureStage(extractor, camera, min_depth=tc.min_depth, max_depth=tc.max_depth)
    tracker = Tracker(tc, camera, slam_map, matcher, mode=cfg.mode)
    mc = cfg.mapping
    mapper = LocalMapper(mc, camera, slam_map, matcher, mode=cfg.mode, bf=tc.bf)
    return SLAMSystem(cfg, camera, device, extractor, matcher, slam_map, frontend, tracker, mapper)
