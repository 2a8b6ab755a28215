"""The SLAM system: builds the stages from a config and runs them over a frame source.

Stages (plain classes with process(item); the runtime connects them):
  reader (iterable of Frame) -> FeatureStage -> TrackingStage -> MappingStage

With ``mapping.commit_delay_frames > 0`` (the default) a MappingHandoff lets local bundle
adjustment run while tracking goes on, with the same result in threads and synchronously; the
runtime's own sync_mapping wait is then not needed (SLAMSystem.needs_sync_mapping).
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch

from slam.config import Config
from slam.device import resolve_device
from slam.geometry.camera import PinholeCamera
from slam.mapping.local_mapper import LocalMapper
from slam.mapping.map import Map
from slam.optim.ba import BAStop
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
    if name == "loftr":
        from slam.config import ConfigError

        raise ConfigError("matcher=loftr matches whole images without keypoints; the SLAM pipeline does not use it "
                          "yet. Use it with `python -m slam match IMG0 IMG1 --matcher loftr`, or pick nn, superglue "
                          "or lightglue for a run")
    raise ValueError(f"unknown matcher {name!r}")


class MappingHandoff:
    """Overlaps local bundle adjustment with tracking, deterministically.

    The mapping stage prepares a keyframe's job (phase A: cull, triangulate, fuse, gather the BA
    problem) while tracking waits, then optimises (phase B) while tracking goes on. The tracking
    stage commits the result (phase C) itself, at a point fixed by the frame sequence alone:
    before tracking the frame ``delay`` frames after the keyframe, or before handing over the
    next keyframe job, whichever comes first. So the map that tracking sees at every frame, and
    the whole run, is the same whether the stages run in threads or in the synchronous runner;
    only the waiting differs.

    Waits poll every 0.25 s; ``close()`` (the mapping stage's close, also after an error or a
    stop) releases them, after which tracking goes on without the outstanding results.
    """

    def __init__(self, mapper: LocalMapper, delay: int) -> None:
        if delay < 1:
            raise ValueError(f"mapping.commit_delay_frames must be >= 1 for a handoff, got {delay}")
        self.mapper = mapper
        self.delay = int(delay)
        self._cond = threading.Condition()
        self._tasks: dict[int, dict] = {}  # job number -> {"state": issued|prepared|optimized, "task", "due"}
        self._issued = 0
        self._closed = False
        self.wait_ms: list[float] = []  # time tracking spent waiting for mapping

    # -- tracking side --------------------------------------------------------------------------
    def issue(self, job, frame_no: int) -> tuple:
        """Register a job produced while tracking frame number ``frame_no``; returns what the
        pipeline sends to the mapping stage."""
        with self._cond:
            n = self._issued
            self._issued += 1
            self._tasks[n] = {"state": "issued", "task": None, "due": frame_no + self.delay}
        return (n, job)

    def _wait(self, n: int, states: tuple) -> bool:
        t = time.perf_counter()
        with self._cond:
            while self._tasks.get(n, {}).get("state") not in states:
                if self._closed or n not in self._tasks:
                    return False
                self._cond.wait(0.25)
        self.wait_ms.append((time.perf_counter() - t) * 1e3)
        return True

    def before_frame(self, frame_no: int) -> None:
        """Called by tracking before frame ``frame_no``: the last job must be prepared, and
        every job that is due is committed."""
        if self._issued:
            self._wait(self._issued - 1, ("prepared", "optimized", "dropped"))
        for n in sorted(self._tasks):
            if self._tasks[n]["due"] <= frame_no:
                self._commit(n)

    def commit_all(self) -> None:
        """Commit every outstanding job (before the next job is handed over, and at the end)."""
        for n in sorted(self._tasks):
            self._commit(n)

    def _commit(self, n: int) -> None:
        if not self._wait(n, ("optimized", "dropped")):
            return
        with self._cond:
            entry = self._tasks.pop(n)
        if entry["task"] is not None:
            self.mapper.commit(entry["task"])

    # -- mapping side ---------------------------------------------------------------------------
    def run(self, item: tuple) -> None:
        n, job = item
        task = None
        try:
            task = self.mapper.prepare(job)
        finally:
            self._set(n, "prepared" if task is not None else "dropped", task)
        if task is not None:
            self.mapper.optimize(task)
            self._set(n, "optimized", task)

    def _set(self, n: int, state: str, task) -> None:
        with self._cond:
            if n in self._tasks:
                self._tasks[n]["state"] = state
                self._tasks[n]["task"] = task
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class MappingLoad:
    """Live runs: how tracking (the latency path) and mapping share one interpreter.

    - ``pending``: keyframe jobs handed to mapping and not yet finished; the tracker defers
      keyframes that are merely due while mapping is busy.
    - Tracking goes first: while a frame is being tracked (:meth:`foreground`), mapping's
      Python work waits at its yield points (:meth:`yield_point`, at most ``max_wait_s`` each),
      so the two threads do not take turns on the GIL in the middle of a frame. g2o's optimize
      releases the GIL and is not paused. ``yield_ms`` adds up mapping's waits.
    - New keyframes go first: when a job is handed over while another is still being worked on,
      ``ba_stop`` ends that job's running local BA early, and :meth:`backlog` tells the mapper to
      skip the optional work of a job that has another one queued behind it
      (``mapping.live_skip_when_queued``).
    """

    def __init__(self, max_wait_s: float = 0.05) -> None:
        self._lock = threading.Lock()
        self.pending = 0
        self.max_wait_s = float(max_wait_s)
        self._idle = threading.Event()
        self._idle.set()
        self.yield_ms = 0.0
        self.n_yields = 0
        self.ba_stop = BAStop()

    def add(self, n: int) -> None:
        with self._lock:
            self.pending += n
            queued = n > 0 and self.pending > 1
        if queued:  # a new job waits behind the running one: end its local BA early
            self.ba_stop.request()

    def busy(self) -> bool:
        return self.pending > 0

    def backlog(self) -> bool:
        """Another job is queued behind the one mapping is working on."""
        return self.pending > 1

    @contextmanager
    def foreground(self) -> Iterator[None]:
        self._idle.clear()
        try:
            yield
        finally:
            self._idle.set()

    def yield_point(self) -> None:
        """Called by mapping between pieces of work (never while holding the map lock)."""
        if self._idle.is_set():
            return
        t = time.perf_counter()
        self._idle.wait(self.max_wait_s)  # blocks without the GIL
        self.yield_ms += (time.perf_counter() - t) * 1e3
        self.n_yields += 1


class TrackingStage:
    """process(FrameFeatures) -> mapping job or None; keeps every TrackResult.

    With a MappingHandoff the job is ``(n, KeyframeJob)`` and mapping results are committed
    here, at fixed frames (see MappingHandoff)."""

    def __init__(self, tracker: Tracker, handoff: Optional[MappingHandoff] = None, load: Optional[MappingLoad] = None):
        self.tracker = tracker
        self.handoff = handoff
        self.load = load
        self.results: list[TrackResult] = []
        if load is not None:
            tracker.mapping_busy = load.busy

    def process(self, fr: FrameFeatures):
        frame_no = len(self.results)
        if self.handoff is not None:
            self.handoff.before_frame(frame_no)
        with self.load.foreground() if self.load is not None else nullcontext():
            res, job = self.tracker.process(fr)
        self.results.append(res)
        if job is not None and self.load is not None:
            self.load.add(1)
        if job is None or self.handoff is None:
            return job
        self.handoff.commit_all()  # the next job is prepared on the map with every earlier result in it
        return self.handoff.issue(job, frame_no)

    def flush(self) -> list:
        if self.handoff is not None:
            self.handoff.commit_all()
        return []


class MappingStage:
    def __init__(self, mapper: LocalMapper, handoff: Optional[MappingHandoff] = None, load: Optional[MappingLoad] = None):
        self.mapper = mapper
        self.handoff = handoff
        self.load = load
        if load is not None:
            mapper.yield_point = load.yield_point
            mapper.backlog = load.backlog
            mapper.ba_stop = load.ba_stop

    def process(self, job):
        try:
            if self.handoff is not None:
                self.handoff.run(job)
            else:
                self.mapper.process(job)
        finally:
            if self.load is not None:
                self.load.add(-1)
        return None

    def close(self) -> None:
        if self.handoff is not None:
            self.handoff.close()


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
    handoff: Optional[MappingHandoff] = None
    load: Optional[MappingLoad] = None
    tracking_stage: TrackingStage = field(init=False)
    mapping_stage: MappingStage = field(init=False)

    def __post_init__(self) -> None:
        self.tracking_stage = TrackingStage(self.tracker, self.handoff, self.load)
        self.mapping_stage = MappingStage(self.mapper, self.handoff, self.load)

    @property
    def needs_sync_mapping(self) -> bool:
        """Whether the runtime must wait for each whole mapping job to equal the synchronous run
        (False with a handoff, which orders the map updates itself)."""
        return self.handoff is None

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


def build_frontend(cfg: Config, camera: PinholeCamera) -> FeatureStage:
    """The feature stage alone (what a feature process builds for itself)."""
    device = resolve_device(cfg.device)
    extractor = build_extractor(cfg, device)
    tc = cfg.tracking
    return FeatureStage(extractor, camera, min_depth=tc.min_depth, max_depth=tc.max_depth)


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
    # live runs need no reproducibility and must never wait for a due commit: mapping then
    # writes its results back itself, as soon as they are ready
    handoff = MappingHandoff(mapper, mc.commit_delay_frames) if mc.commit_delay_frames > 0 and not cfg.runtime.live else None
    load = MappingLoad(mc.live_yield_max_ms / 1e3) if cfg.runtime.live else None
    return SLAMSystem(cfg, camera, device, extractor, matcher, slam_map, frontend, tracker, mapper, handoff, load)
