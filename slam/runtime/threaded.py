"""The threaded runner: a reader thread and one thread per stage, joined by bounded queues.

::

    source --reader--> [q features] --> features --> [q tracking] --> tracking --> [q mapping]
        --> mapping --> [q output] --> main thread: on_output(), progress display, monitoring

Two modes
    - Dataset mode (``cfg.live`` false): every queue blocks when full (``queue_size`` items), so
      nothing is ever dropped. Results equal the synchronous runner's as long as the stages
      order their shared state themselves (the SLAM stages do, through the mapping schedule in
      :mod:`slam.runtime.schedule`).
    - Live mode (``cfg.live`` true): the queues into frame stages keep only the newest item
      (capacity 1): a new item replaces the waiting one and the replaced one is counted as
      dropped (``RunStats.queues[...].dropped``, ``RunStats.dropped_ids``). The queues into the
      ``lossless`` stages (default: mapping, whose keyframe jobs must never be lost, and loop
      closing, which looks up every keyframe) and the output queue still block. The ``background`` stages' threads (default: mapping) run at
      a lower OS priority (``cfg.background_nice``). This bounds latency when the system is
      slower than the camera.

    The typed :class:`slam.types.EndOfStream` marker follows the last item through every queue
    and is never dropped. At end of stream each stage's ``flush()`` outputs go downstream first.

Stopping and errors
    One ``threading.Event`` stops every thread; blocked ``put``/``get`` calls wake up at once.
    ``stop()`` (e.g. from :func:`slam.runtime.runner.handle_signals`) ends the run after the
    items in flight and ``run()`` returns normally with ``status == "stopped"``; outputs that
    already reached the output queue are still delivered to ``on_output``. ``flush()`` is not
    called after a stop; ``close()`` always is (in the stage's own thread). An exception in the
    source, a stage or ``on_output`` sets the stop event; every thread is joined (all joins
    share one deadline of ``join_timeout_s``) and ``run()`` raises :class:`StageError` naming
    the stage, chained to the original exception. Threads still alive after the deadline are
    daemon threads, reported in ``RunStats.hung_threads`` and the log.

Latency
    The reader stamps every source item with ``t_read`` (``time.perf_counter()``; also set as
    ``item.t_read`` when the object accepts attributes). When the ``latency_stage`` (default
    "tracking"; the last stage if no stage has that name) returns from ``process()`` on an
    item, ``now - t_read`` is recorded as the frame-to-pose latency.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable, Optional

from slam.runtime.config import RuntimeConfig
from slam.runtime.progress import ProgressDisplay
from slam.runtime.runner import (
    OUTPUT,
    READER,
    Item,
    StageError,
    SyncRunner,
    call_close,
    call_flush,
    check_stages,
    log_run_stats,
    resolve_latency_stage,
    safe_progress_info,
    stamp_source_item,
)
from slam.runtime.stats import RunStats, StatsCollector
from slam.types import EndOfStream

LOG = logging.getLogger("slam.runtime")

__all__ = ["ThreadedRunner", "make_runner"]


class _Stopped:
    """Returned by a queue get() when the stop event is set."""


_STOPPED = _Stopped()
_EMPTY = object()


class _StageQueue:
    """FIFO between two threads with a stop-aware put/get.

    policy "block": put waits while full. policy "latest": put never waits; a waiting item is
    replaced by the new one and counted as dropped (EndOfStream is never dropped). policy
    "unbounded" (capacity 0): put never waits and nothing is dropped.
    """

    def __init__(self, name: str, capacity: int, policy: str, stop: threading.Event, stats: StatsCollector) -> None:
        if policy not in ("block", "latest", "unbounded"):
            raise ValueError(f"queue policy must be block, latest or unbounded, got {policy!r}")
        if (capacity < 1) != (policy == "unbounded"):
            raise ValueError(f"queue capacity must be >= 1 (0 with policy unbounded), got {capacity} ({policy})")
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self._dq: collections.deque = collections.deque()
        self._cond = threading.Condition(threading.RLock())
        self._stop = stop
        self._stats = stats
        stats.register_queue(name, capacity, policy)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def qsize(self) -> int:
        return len(self._dq)

    def put(self, item: Any) -> bool:
        """Enqueue; False when the stop event ended a wait (the item was not enqueued)."""
        with self._cond:
            if self.policy == "latest" and not isinstance(item, EndOfStream):
                while len(self._dq) >= self.capacity and not isinstance(self._dq[0], EndOfStream):
                    old = self._dq.popleft()
                    self._stats.record_drop(self.name, old.item_id if isinstance(old, Item) else -1)
            elif self.policy == "block":
                while len(self._dq) >= self.capacity and not isinstance(item, EndOfStream):
                    if self._stop.is_set():
                        return False
                    self._cond.wait(0.25)
            self._dq.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: Optional[float] = None) -> Any:
        """Next item; _STOPPED when the stop event is set; _EMPTY after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._dq:
                if self._stop.is_set():
                    return _STOPPED
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return _EMPTY
                    self._cond.wait(min(left, 0.25))
                else:
                    self._cond.wait(0.25)
            depth = len(self._dq) - (1 if isinstance(self._dq[-1], EndOfStream) else 0)
            item = self._dq.popleft()
            self._cond.notify_all()
        self._stats.record_depth(self.name, depth)
        return item

    def get_nowait(self) -> Any:
        with self._cond:
            if not self._dq:
                return _EMPTY
            item = self._dq.popleft()
            self._cond.notify_all()
            return item


class ThreadedRunner:
    """Runs ``source`` and ``stages`` in threads, in dataset or live mode (``cfg.live``).

    source:      any iterable (e.g. a dataset reader, :class:`slam.io.camera.CameraSource`, or a
                 :class:`slam.runtime.feature_process.ProcessFrontend`, whose items arrive
                 already stamped).
    stages:      list of ``(name, stage)``; names must be unique; "reader" and "output" are
                 reserved (they name the source and ``on_output`` in errors and statistics).
    on_output:   called in the main thread with every output of the last stage, in order.
    progress_fn: called in the main thread a few times a second; returns a dict for the
                 progress line, e.g. ``{"state": "OK", "keyframes": 12, "map_points": 3456}``.
    total:       number of source items expected (progress display), None if unknown.
    latency_stage: the stage whose completion ends the frame-to-pose latency.
    lossless:    live mode: stages whose input queue never drops (keyframe jobs).
    unbounded:   stages whose input queue never makes its producer wait (both modes; its items
                 are small and few, and the stage may spend seconds on one: loop closing's
                 wake-ups, one per keyframe, while a global BA runs; ORB-SLAM's loop closer
                 queue). Reported with capacity 0.
    background:  live mode: stages whose thread runs at ``cfg.background_nice``.

    ``run()`` may be called once. ``stop()`` is safe from a signal handler or any thread.
    ``stats`` is the live :class:`StatsCollector`; ``counts()`` the items in/out per stage.
    """

    def __init__(
        self,
        source: Iterable,
        stages: list[tuple[str, Any]],
        cfg: Optional[RuntimeConfig] = None,
        on_output: Optional[Callable[[Any], None]] = None,
        progress_fn: Optional[Callable[[], dict]] = None,
        total: Optional[int] = None,
        latency_stage: str = "tracking",
        lossless: tuple[str, ...] = ("mapping", "loop_closing"),
        background: tuple[str, ...] = ("mapping",),
        unbounded: tuple[str, ...] = ("loop_closing",),
    ) -> None:
        self.cfg = cfg if cfg is not None else RuntimeConfig()
        if not stages:
            raise ValueError("a runner needs at least one stage")
        names = check_stages(stages)
        self.source = source
        self.stages = list(stages)
        self.names = names
        self.on_output = on_output
        self.progress_fn = progress_fn
        self.total = total
        self.background = tuple(background)
        self.stats = StatsCollector()
        for n in names:
            self.stats.register_stage(n)
        self._stop = threading.Event()
        self._error_lock = threading.Lock()
        self._error: Optional[tuple[str, BaseException]] = None
        self._latency_stage = resolve_latency_stage(names, latency_stage)
        live = self.cfg.live
        self._queues: list[_StageQueue] = []
        for name in names + [OUTPUT]:
            lossy = live and name != OUTPUT and name not in lossless
            if name in unbounded:
                q = _StageQueue(name, 0, "unbounded", self._stop, self.stats)
            else:
                q = _StageQueue(name, 1 if lossy else self.cfg.queue_size, "latest" if lossy else "block", self._stop, self.stats)
            self._queues.append(q)
        self._busy_since: dict[str, Optional[float]] = {n: None for n in names}
        self._threads: list[threading.Thread] = []
        self._ran = False
        self.result: Optional[RunStats] = None

    # -- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every thread after the item it is working on (safe from a signal handler)."""
        self._stop.set()
        # the conditions use re-entrant locks, so this is safe even from a signal handler that
        # interrupted the main thread inside a queue call
        self._wake_all()
        self._stop_source()

    def _stop_source(self) -> None:
        """A source with a stop() method (ProcessFrontend) is told to stop too."""
        fn = getattr(self.source, "stop", None)
        if callable(fn):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                LOG.warning("source stop() failed: %s", exc)

    def _wake_all(self) -> None:
        for q in self._queues:
            q.wake()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def counts(self) -> dict[str, dict[str, int]]:
        """Items per stage so far: {"reader": {"out": n}, "<stage>": {"in", "out", "dropped", "done"}}.
        "dropped" counts items dropped from that stage's input queue (live mode)."""
        return self.stats.counts_now()

    def _fail(self, name: str, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = (name, exc)
                LOG.debug("stage '%s' raised %s: %s", name, type(exc).__name__, exc)
        self._stop.set()
        self._wake_all()
        self._stop_source()

    # -- threads ------------------------------------------------------------------------------
    def _reader(self) -> None:
        q = self._queues[0]
        seq = 0
        try:
            for payload in self.source:
                if self._stop.is_set():
                    return
                # a source that runs stages of its own (ProcessFrontend) yields stamped Items
                item = payload if isinstance(payload, Item) else stamp_source_item(payload, seq)
                seq += 1
                self.stats.count(READER, "out")
                if not q.put(item):
                    return
                if self._stop.is_set():
                    return
            q.put(EndOfStream())
        except StageError as exc:  # a stage that runs inside the source (ProcessFrontend)
            self._fail(exc.stage, exc.original)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self._fail(READER, exc)

    def _lower_priority(self, name: str) -> None:
        """Live mode: the ``background`` stages (mapping) run their thread at a lower OS priority
        (Linux nice is per thread), so bundle adjustment, which runs without the GIL, takes CPU
        only where features and tracking leave it."""
        cfg = self.cfg
        if not (cfg.live and cfg.background_nice > 0 and name in self.background):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + int(cfg.background_nice))
            LOG.debug("%s thread runs at nice +%d", name, cfg.background_nice)
        except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at normal priority
            LOG.info("could not lower the priority of the %s thread (%s)", name, exc)

    def _stage_loop(self, i: int) -> None:
        name, stage = self.stages[i]
        inq, outq = self._queues[i], self._queues[i + 1]
        is_latency = name == self._latency_stage
        try:
            self._lower_priority(name)
            while True:
                item = inq.get()
                if item is _STOPPED:
                    return
                if isinstance(item, EndOfStream):
                    t0 = time.perf_counter()
                    outs = call_flush(stage)
                    self.stats.record_flush(name, (time.perf_counter() - t0) * 1000.0)
                    for out in outs:
                        self.stats.count(name, "out")
                        if not outq.put(Item(-1, None, out, -1)):
                            return
                    outq.put(item)
                    return
                self.stats.count(name, "in")
                t0 = time.perf_counter()
                self._busy_since[name] = t0
                out = stage.process(item.payload)
                t1 = time.perf_counter()
                self._busy_since[name] = None
                self.stats.record_stage(name, (t1 - t0) * 1000.0)
                if is_latency:
                    self.stats.record_latency(item.t_read, t1)
                    self.stats.count(name, "done")
                if out is None:
                    continue
                self.stats.count(name, "out")
                if not outq.put(Item(item.seq, item.t_read, out, item.item_id)):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self._fail(name, exc)
        finally:
            self._busy_since[name] = None
            err = call_close(name, stage)
            if err is not None:
                self._fail(name, err)

    # -- main ---------------------------------------------------------------------------------
    def run(self) -> RunStats:
        """Run to the end of the source (or stop()/error); returns the run statistics.

        Raises StageError(stage, original) when a stage, the source ("reader") or on_output
        ("output") raised. A KeyboardInterrupt in the main thread stops all threads (joined with
        a short timeout) and is re-raised.
        """
        if self._ran:
            raise RuntimeError("a runner can only run once; build a new one")
        self._ran = True
        cfg = self.cfg
        self._threads = [threading.Thread(target=self._reader, name="slam-reader", daemon=True)]
        for i, (name, _) in enumerate(self.stages):
            self._threads.append(threading.Thread(target=self._stage_loop, args=(i,), name=f"slam-{name}", daemon=True))
        progress = ProgressDisplay(self.total, enabled=None if cfg.progress else False, log_interval_s=cfg.progress_log_s)
        pstate: dict = {}
        t_start = time.perf_counter()
        for t in self._threads:
            t.start()
        sink = self._queues[-1]
        reached_end = False
        interrupted: Optional[BaseException] = None
        last_move = time.perf_counter()
        last_total = -1
        try:
            while True:
                item = sink.get(timeout=0.1)
                if item is _STOPPED:
                    break
                if isinstance(item, EndOfStream):
                    reached_end = True
                    break
                if item is not _EMPTY:
                    self._deliver(item)
                    if self._stop.is_set() and self._error is not None:
                        break
                progress.update(self._done(), self._progress_info(pstate))
                if cfg.stall_timeout_s > 0:
                    moved = self._moved_total()
                    now = time.perf_counter()
                    if moved != last_total:
                        last_total, last_move = moved, now
                    elif now - last_move > cfg.stall_timeout_s:
                        self._fail(self._stalled_stage(now), TimeoutError(
                            f"no item moved through the pipeline for {cfg.stall_timeout_s:.0f} s "
                            f"(runtime.stall_timeout_s); queue depths {self.stats.queue_depth_now()}"))
                        break
        except BaseException as exc:  # KeyboardInterrupt / SystemExit in the main thread
            interrupted = exc
            self._stop.set()
            self._wake_all()
        hung = self._join_all(2.0 if interrupted is not None else cfg.join_timeout_s)
        if self._error is None and interrupted is None:
            # deliver what reached the output queue before a stop
            while self._error is None:
                item = sink.get_nowait()
                if item is _EMPTY:
                    break
                if isinstance(item, EndOfStream):
                    reached_end = True
                    continue
                self._deliver(item)
        progress.close(self._done(), self._progress_info(pstate))
        merge = getattr(self.source, "merge_stats", None)
        if callable(merge):  # statistics of stages that ran inside the source (ProcessFrontend)
            try:
                merge(self.stats)
            except Exception as exc:  # noqa: BLE001
                LOG.warning("could not merge the source's statistics: %s", exc)
        if self._error is not None:
            status = "failed"
        elif reached_end and not self._stop.is_set():
            status = "completed"
        else:
            status = "stopped"
        self.result = self.stats.summarize(
            mode="threaded",
            live=cfg.live,
            status=status,
            wall_s=time.perf_counter() - t_start,
            t_start=t_start,
            items_read=self.stats.get_count(READER, "out"),
            items_done=self._done(),
            hung_threads=hung,
            error_stage=self._error[0] if self._error else None,
        )
        log_run_stats(self.result)
        if hung:
            LOG.error("threads still alive after join timeout (%.1f s): %s", cfg.join_timeout_s, ", ".join(hung))
        if interrupted is not None:
            raise interrupted
        if self._error is not None:
            name, exc = self._error
            raise StageError(name, exc) from exc
        return self.result

    def _deliver(self, item: Item) -> None:
        if self.on_output is None:
            return
        try:
            self.on_output(item.payload)
        except Exception as exc:  # noqa: BLE001 - re-raised as StageError("output")
            self._fail(OUTPUT, exc)

    def _join_all(self, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(deadline - time.monotonic(), 0.01))
        return [t.name for t in self._threads if t.is_alive()]

    def _done(self) -> int:
        return self.stats.get_count(self._latency_stage, "done") if self._latency_stage else 0

    def _moved_total(self) -> int:
        c = self.counts()
        return sum(v.get("in", 0) + v.get("out", 0) for v in c.values())

    def _stalled_stage(self, now: float) -> str:
        busy = [(t, n) for n, t in self._busy_since.items() if t is not None]
        if busy:
            return min(busy)[1]
        return READER

    def _progress_info(self, pstate: dict) -> dict:
        info = safe_progress_info(self.progress_fn, pstate)
        if self.cfg.live:
            info.setdefault("dropped", sum(self.stats.dropped.values()))
        return info


def make_runner(source: Iterable, stages: list[tuple[str, Any]], cfg: RuntimeConfig, **kwargs: Any):
    """The runner ``cfg`` asks for: :class:`SyncRunner` when ``cfg.threaded`` is false, else a
    :class:`slam.runtime.threaded.ThreadedRunner` (live mode when ``cfg.live``). ``kwargs``:
    on_output, progress_fn, total, latency_stage (and the threaded runner's own options)."""
    if not cfg.threaded:
        kwargs = {k: v for k, v in kwargs.items() if k in ("on_output", "progress_fn", "total", "latency_stage")}
        return SyncRunner(source, stages, cfg, **kwargs)
    return ThreadedRunner(source, stages, cfg, **kwargs)
