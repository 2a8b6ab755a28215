"""How tracking and local mapping share the machine: the mapping schedule.

The tracking stage, the mapping stage, the tracker and the local mapper take one
:class:`MappingSchedule` and ask it everything that depends on how the run is scheduled:

- the tracking stage: :meth:`~MappingSchedule.before_frame` (commit mapping results that are
  due), :meth:`~MappingSchedule.tracking` (a frame is being tracked),
  :meth:`~MappingSchedule.hand_over` (a keyframe job goes to mapping), :meth:`~MappingSchedule.finish`;
- the mapping stage: :meth:`~MappingSchedule.run_job`, :meth:`~MappingSchedule.close`;
- the tracker: :meth:`~MappingSchedule.mapping_busy` (a keyframe that is merely due waits
  while mapping still has work queued: ORB-SLAM's idle condition);
- the mapper: :meth:`~MappingSchedule.yield_point` (between pieces of Python work, so the frame
  path can go first), :meth:`~MappingSchedule.backlog` (another job waits behind this one: its
  optional work is skipped), :attr:`~MappingSchedule.ba_stop` (stops a running local BA);
- background work off the frame path (the global BA after a loop):
  :meth:`~MappingSchedule.background_yield`, a point where it waits while a frame is being
  tracked or a keyframe job is being worked on (both schedules of real runs; :class:`Foreground`).

Three schedules:

- :class:`MappingSchedule`, the no-op default: mapping runs each whole job when it gets it,
  nothing is busy, nothing waits, nothing is skipped. Unit tests of the tracker and mapper.
- :class:`DatasetSchedule` (dataset runs, both runners): the deterministic mapping handoff.
  Local BA overlaps tracking, and its result is written back at a frame fixed by the sequence,
  so a threaded run equals the synchronous one.
- :class:`LiveSchedule` (live runs): tracking goes first; mapping writes its results back as
  soon as they are ready, yields to the frame path and defers to new keyframes.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterator, Optional

__all__ = ["Foreground", "MappingSchedule", "DatasetSchedule", "LiveSchedule", "make_schedule"]


class Foreground:
    """How many pieces of the frame path are at work now: frames being tracked and keyframe jobs
    being mapped (tracking waits for mapping at keyframes, so both are on it). Background work
    waits at its yield points until none is (:meth:`wait_idle`), so that on a CPU with no core to
    spare it runs in the frame path's gaps instead of beside it, where it takes a share of the
    core and of the GIL (measured on 2 cores: a frame's tracking took 56-85 ms instead of 28-38 ms
    while the global BA ran beside it; docs/benchmarks.md section 12)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0
        self.waited_ms = 0.0  # background time spent waiting
        self.n_waits = 0

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                if self._busy == 0:
                    self._cond.notify_all()

    def wait_idle(self, max_wait_s: float) -> None:
        """Block (without the GIL) until nothing is busy, or max_wait_s has passed."""
        with self._cond:
            if self._busy == 0 or max_wait_s <= 0:
                return
            t = time.perf_counter()
            self._cond.wait_for(lambda: self._busy == 0, max_wait_s)
            self.waited_ms += (time.perf_counter() - t) * 1e3
            self.n_waits += 1


class MappingSchedule:
    """The no-op schedule: mapping runs each whole job (``mapper.process(job)``) when it gets it."""

    #: stop handle (slam.optim.ba.BAStop) for a running local BA; None = never stopped
    ba_stop: Optional[Any] = None

    # -- tracking stage ------------------------------------------------------------------------
    def before_frame(self, frame_no: int) -> None:
        """Before tracking frame number ``frame_no`` (0-based position in the run)."""

    def tracking(self) -> ContextManager[None]:
        """Context of the tracking stage's work on one frame (the write-backs before it, the
        tracking, the hand-over after it)."""
        return nullcontext()

    def hand_over(self, job: Any, frame_no: int) -> Any:
        """A keyframe job produced at frame ``frame_no``; returns what goes to the mapping stage."""
        return job

    def finish(self) -> None:
        """End of the stream, on the tracking side: every outstanding result is written back."""

    # -- mapping stage -------------------------------------------------------------------------
    def run_job(self, mapper: Any, item: Any) -> None:
        """Work on what :meth:`hand_over` returned."""
        mapper.process(item)

    def close(self) -> None:
        """The run ends (also after an error or a stop): release every wait."""

    # -- tracker and mapper --------------------------------------------------------------------
    def mapping_busy(self) -> bool:
        """Tracking: local mapping still works on earlier keyframe jobs."""
        return False

    def yield_point(self) -> None:
        """Mapping: a point between pieces of work where the frame path may go first."""

    def backlog(self) -> bool:
        """Mapping: another keyframe job waits behind the one being worked on."""
        return False

    def background_yield(self, max_wait_s: float) -> None:
        """Background work (the global BA after a loop): wait here while the frame path is busy,
        at most max_wait_s (the no-op schedule: never)."""

    def drain_committed(self) -> list:
        """Keyframe ids whose mapping results were written back since the last call, in order
        (dataset runs: loop closing reads the map after them; other schedules: [])."""
        return []

    def stats(self) -> dict:
        """Figures for metrics.json."""
        return {}


class DatasetSchedule(MappingSchedule):
    """Overlaps local bundle adjustment with tracking, deterministically (the mapping handoff).

    The mapping stage prepares a keyframe's job (phase A: cull, triangulate, fuse, gather the BA
    problem) while tracking waits, then optimises (phase B) while tracking goes on. The tracking
    stage commits the result (phase C) itself, at a point fixed by the frame sequence alone:
    before tracking the frame ``delay`` frames after the keyframe, or before handing over the
    next keyframe job, whichever comes first. So the map that tracking sees at every frame, and
    the whole run, is the same whether the stages run in threads or in the synchronous runner;
    only the waiting differs. ``delay=1``: tracking waits for the whole job before the next frame.

    Waits poll every 0.25 s; :meth:`close` (the mapping stage's close, also after an error or a
    stop) releases them, after which tracking goes on without the outstanding results.
    """

    def __init__(self, delay: int) -> None:
        if delay < 1:
            raise ValueError(f"runtime.commit_delay_frames must be >= 1, got {delay}")
        self.delay = int(delay)
        self._cond = threading.Condition()
        # job number -> {"state": issued|prepared|optimized|dropped, "task", "mapper", "due"}
        self._tasks: dict[int, dict] = {}
        self._issued = 0
        self._closed = False
        self.wait_ms: list[float] = []  # time tracking spent waiting for mapping
        self._committed: list[int] = []  # keyframe ids committed since drain_committed()
        self.foreground = Foreground()

    def tracking(self) -> ContextManager[None]:
        return self.foreground.busy()

    def background_yield(self, max_wait_s: float) -> None:
        self.foreground.wait_idle(max_wait_s)

    # -- tracking side --------------------------------------------------------------------------
    def hand_over(self, job: Any, frame_no: int) -> tuple:
        self.commit_all()  # the next job is prepared on the map with every earlier result in it
        with self._cond:
            n = self._issued
            self._issued += 1
            self._tasks[n] = {"state": "issued", "task": None, "mapper": None, "due": frame_no + self.delay}
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
        """The last job must be prepared, and every job that is due is committed."""
        if self._issued:
            self._wait(self._issued - 1, ("prepared", "optimized", "dropped"))
        for n in sorted(self._tasks):
            if self._tasks[n]["due"] <= frame_no:
                self._commit(n)

    def commit_all(self) -> None:
        """Commit every outstanding job (before the next job is handed over, and at the end)."""
        for n in sorted(self._tasks):
            self._commit(n)

    def finish(self) -> None:
        self.commit_all()

    def _commit(self, n: int) -> None:
        if not self._wait(n, ("optimized", "dropped")):
            return
        with self._cond:
            entry = self._tasks.pop(n)
        if entry["task"] is not None:
            entry["mapper"].commit(entry["task"])
            kf_id = getattr(entry["task"], "kf_id", None)
            if kf_id is not None:
                self._committed.append(int(kf_id))

    def drain_committed(self) -> list:
        out, self._committed = self._committed, []
        return out

    # -- mapping side ---------------------------------------------------------------------------
    def run_job(self, mapper: Any, item: tuple) -> None:
        n, job = item
        task = None
        with self.foreground.busy():
            try:
                task = mapper.prepare(job)
            finally:
                self._set(n, "prepared" if task is not None else "dropped", task, mapper)
            if task is not None:
                mapper.optimize(task)
                self._set(n, "optimized", task, mapper)

    def _set(self, n: int, state: str, task: Any, mapper: Any) -> None:
        with self._cond:
            if n in self._tasks:
                self._tasks[n].update(state=state, task=task, mapper=mapper)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stats(self) -> dict:
        return {"tracking_waited_for_mapping_ms": float(sum(self.wait_ms)),
                "background_yielded_ms": float(self.foreground.waited_ms)}


class LiveSchedule(MappingSchedule):
    """Live runs: tracking (the latency path) goes first, and new keyframes go first.

    - ``pending``: keyframe jobs handed to mapping and not yet finished; the tracker defers
      keyframes that are merely due while mapping is busy.
    - While a frame is being tracked (:meth:`tracking`), mapping's Python work waits at its
      yield points (:meth:`yield_point`, at most ``max_wait_s`` each), so the two threads do not
      take turns on the GIL in the middle of a frame. g2o's optimize releases the GIL and is not
      paused. ``yield_ms`` adds up mapping's waits.
    - With ``skip_when_queued``: when a job is handed over while another is still being worked
      on, ``ba_stop`` ends that job's running local BA early, and :meth:`backlog` tells the
      mapper to skip the optional work of a job that has another one queued behind it.
    - Mapping writes each job's result back itself, as soon as it is ready.
    """

    def __init__(self, max_wait_s: float = 0.05, skip_when_queued: bool = True) -> None:
        from slam.optim.ba import BAStop

        self._lock = threading.Lock()
        self.pending = 0
        self.max_wait_s = float(max_wait_s)
        self.skip_when_queued = bool(skip_when_queued)
        self._idle = threading.Event()
        self._idle.set()
        self.yield_ms = 0.0
        self.n_yields = 0
        self.ba_stop = BAStop() if skip_when_queued else None
        self.foreground = Foreground()

    def add(self, n: int) -> None:
        with self._lock:
            self.pending += n
            queued = n > 0 and self.pending > 1
        if queued and self.ba_stop is not None:  # a new job waits behind the running one: end its local BA early
            self.ba_stop.request()

    # -- tracking side --------------------------------------------------------------------------
    @contextmanager
    def tracking(self) -> Iterator[None]:
        self._idle.clear()
        try:
            with self.foreground.busy():
                yield
        finally:
            self._idle.set()

    def hand_over(self, job: Any, frame_no: int) -> Any:
        self.add(1)
        return job

    def mapping_busy(self) -> bool:
        return self.pending > 0

    # -- mapping side ---------------------------------------------------------------------------
    def run_job(self, mapper: Any, item: Any) -> None:
        try:
            with self.foreground.busy():
                mapper.process(item)
        finally:
            self.add(-1)

    def background_yield(self, max_wait_s: float) -> None:
        self.foreground.wait_idle(max_wait_s)

    def backlog(self) -> bool:
        return self.skip_when_queued and self.pending > 1

    def yield_point(self) -> None:
        """Called by mapping between pieces of work (never while holding the map lock)."""
        if self._idle.is_set():
            return
        t = time.perf_counter()
        self._idle.wait(self.max_wait_s)  # blocks without the GIL
        self.yield_ms += (time.perf_counter() - t) * 1e3
        self.n_yields += 1

    def close(self) -> None:
        self._idle.set()

    def stats(self) -> dict:
        return {"mapping_yielded_to_tracking_ms": float(self.yield_ms),
                "background_yielded_ms": float(self.foreground.waited_ms)}


def make_schedule(runtime: Any) -> MappingSchedule:
    """The schedule of a run with these runtime settings (``slam.runtime.config.RuntimeConfig``)."""
    if runtime.live:
        return LiveSchedule(runtime.live_yield_max_ms / 1e3, runtime.live_skip_when_queued)
    return DatasetSchedule(runtime.commit_delay_frames)
