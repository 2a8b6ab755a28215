"""Runners: the synchronous reference, the pieces the threaded runner shares with it, and
signal handling.

A *stage* is any object with

- ``process(item) -> Optional[output]``: ``None`` means nothing goes downstream;
- optional ``flush() -> list[outputs]``: called once at the end of the stream (not after
  ``stop()``); its outputs go downstream before the end-of-stream marker;
- optional ``close()``: called once when the run ends, whatever the reason.

Stages know nothing about threads. There are two runners with one interface (``run() ->
RunStats``, ``stop()``, ``stats``; both raise :class:`StageError` naming the failing stage):

- :class:`SyncRunner` runs source and stages inline, one item at a time, through the whole
  chain: the reference that the threaded runner must reproduce in dataset mode;
- :class:`slam.runtime.threaded.ThreadedRunner`: a thread per stage, in one of two modes,
  dataset (nothing dropped) or live (frames queues keep only the newest frame).

:func:`slam.runtime.threaded.make_runner` picks one from ``RuntimeConfig.threaded``. :func:`handle_signals` turns
SIGINT, SIGTERM and SIGHUP into ``runner.stop()``, so a run that is interrupted or killed
still ends normally and writes what it has.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, runtime_checkable

from slam.runtime.config import RuntimeConfig
from slam.runtime.progress import ProgressDisplay
from slam.runtime.stats import RunStats, StatsCollector

LOG = logging.getLogger("slam.runtime")

READER = "reader"  # name under which errors of the source are reported
OUTPUT = "output"  # name under which errors of on_output are reported


@runtime_checkable
class Stage(Protocol):
    """What the runners need from a stage (flush/close are optional, looked up with getattr)."""

    def process(self, item: Any) -> Optional[Any]: ...


class StageError(RuntimeError):
    """A stage (or the source, named "reader", or on_output, named "output") raised.

    ``stage`` is the stage name, ``original`` the exception; it is also chained as __cause__.
    """

    def __init__(self, stage: str, original: BaseException) -> None:
        self.stage = stage
        self.original = original
        super().__init__(f"stage '{stage}' failed: {type(original).__name__}: {original}")

    def __reduce__(self):  # keep picklable (multiprocessing, pytest-xdist)
        return (StageError, (self.stage, self.original))


@dataclass
class Item:
    """Envelope the runners pass between stages (stages only ever see ``payload``).

    seq:     0-based position of the source item this came from; -1 for flush() outputs.
    t_read:  time.perf_counter() seconds when the reader produced the source item; None for
             flush() outputs.
    item_id: ``payload.index`` of the source item when it has an integer one, else ``seq``.
    """

    seq: int
    t_read: Optional[float]
    payload: Any
    item_id: int


def stamp_source_item(payload: Any, seq: int) -> Item:
    """Wrap a source item, recording ``t_read`` (also set as ``payload.t_read`` when the
    object accepts attributes, so stages can read it)."""
    t = time.perf_counter()
    try:
        setattr(payload, "t_read", t)
    except (AttributeError, TypeError):
        pass
    idx = getattr(payload, "index", seq)
    try:
        item_id = int(idx)
    except (TypeError, ValueError):
        item_id = seq
    return Item(seq, t, payload, item_id)


def call_flush(stage: Any) -> list:
    fn = getattr(stage, "flush", None)
    if fn is None:
        return []
    out = fn()
    return [o for o in (out or []) if o is not None]


def call_close(name: str, stage: Any) -> Optional[BaseException]:
    fn = getattr(stage, "close", None)
    if fn is None:
        return None
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        LOG.error("stage '%s' close() failed: %s: %s", name, type(exc).__name__, exc)
        return exc
    return None


def check_stages(stages: list[tuple[str, Any]]) -> list[str]:
    """The stage names, after checking them: unique, not reserved, each stage with process()."""
    names = [n for n, _ in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    if READER in names or OUTPUT in names:
        raise ValueError(f"stage names '{READER}' and '{OUTPUT}' are reserved")
    for name, stage in stages:
        if not callable(getattr(stage, "process", None)):
            raise TypeError(f"stage '{name}' ({type(stage).__name__}) has no process(item) method")
    return names


def resolve_latency_stage(names: list[str], wanted: str) -> Optional[str]:
    """The stage whose completion ends 'frame-to-pose' latency: ``wanted`` if present, else the
    last stage, or None when there are no stages."""
    if wanted in names:
        return wanted
    return names[-1] if names else None


def safe_progress_info(progress_fn: Optional[Callable[[], dict]], state: dict) -> dict:
    """Call progress_fn, disabling it (with one warning) if it raises."""
    if progress_fn is None or state.get("progress_fn_failed"):
        return {}
    try:
        info = progress_fn()
        return dict(info) if info else {}
    except Exception as exc:  # noqa: BLE001 - progress must never kill a run
        state["progress_fn_failed"] = True
        LOG.warning("progress_fn raised %s: %s; progress details disabled", type(exc).__name__, exc)
        return {}


def log_run_stats(stats: RunStats) -> None:
    LOG.info("runtime: %s", stats.summary())
    LOG.info("runtime per stage:\n%s", stats.table())


class SyncRunner:
    """Runs the source and every stage inline in the calling thread.

    Same constructor and semantics as :class:`slam.runtime.threaded.ThreadedRunner` (``cfg.live``
    and ``cfg.queue_size`` mean nothing here: there are no queues). The frame-to-pose latency
    ends when the stage named ``latency_stage`` returns (the last stage if none has that name).
    ``stop()`` may be called from a signal handler or another thread; the run ends after the
    item in flight and returns the statistics with ``status == "stopped"``.
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
    ) -> None:
        names = check_stages(stages)
        cfg = cfg if cfg is not None else RuntimeConfig(threaded=False)
        self.source = source
        self.stages = list(stages)
        self.cfg = cfg
        self.on_output = on_output
        self.progress_fn = progress_fn
        self.total = total
        self.stats = StatsCollector()
        self._stop = threading.Event()
        self._latency_stage = resolve_latency_stage(names, latency_stage)
        for n in names:
            self.stats.register_stage(n)
        self._ran = False
        self.result: Optional[RunStats] = None

    def stop(self) -> None:
        """Ask the run to end after the current item (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def counts(self) -> dict[str, dict[str, int]]:
        """Items in/out per stage so far; 'reader' -> {'out': items read}."""
        return {k: dict(v) for k, v in self.stats.counts.items()}

    # ------------------------------------------------------------------------------------------
    def _push(self, i: int, item: Item) -> None:
        """Run ``item`` through stages i.. and hand the last output to on_output."""
        while i < len(self.stages):
            name, stage = self.stages[i]
            self.stats.count(name, "in")
            t0 = time.perf_counter()
            try:
                out = stage.process(item.payload)
            except Exception as exc:
                raise StageError(name, exc) from exc
            t1 = time.perf_counter()
            self.stats.record_stage(name, (t1 - t0) * 1000.0)
            if name == self._latency_stage:
                self.stats.record_latency(item.t_read, t1)
                self.stats.count(name, "done")
            if out is None:
                return
            self.stats.count(name, "out")
            item = Item(item.seq, item.t_read, out, item.item_id)
            i += 1
        if self.on_output is not None:
            try:
                self.on_output(item.payload)
            except Exception as exc:
                raise StageError(OUTPUT, exc) from exc

    def run(self) -> RunStats:
        if self._ran:
            raise RuntimeError("a runner can only run once; build a new one")
        self._ran = True
        progress = ProgressDisplay(self.total, enabled=None if self.cfg.progress else False, log_interval_s=self.cfg.progress_log_s)
        pstate: dict = {}
        t_start = time.perf_counter()
        status = "completed"
        error_stage: Optional[str] = None
        n_read = 0
        try:
            try:
                it = iter(self.source)
                while not self._stop.is_set():
                    try:
                        payload = next(it)
                    except StopIteration:
                        break
                    except Exception as exc:
                        raise StageError(READER, exc) from exc
                    item = stamp_source_item(payload, n_read)
                    n_read += 1
                    self.stats.count(READER, "out")
                    self._push(0, item)
                    progress.update(self._done(), safe_progress_info(self.progress_fn, pstate))
                if self._stop.is_set():
                    status = "stopped"
                else:
                    for i, (name, stage) in enumerate(self.stages):
                        t0 = time.perf_counter()
                        try:
                            outs = call_flush(stage)
                        except Exception as exc:
                            raise StageError(name, exc) from exc
                        self.stats.record_flush(name, (time.perf_counter() - t0) * 1000.0)
                        for out in outs:
                            self.stats.count(name, "out")
                            self._push(i + 1, Item(-1, None, out, -1))
            except StageError as exc:
                status = "failed"
                error_stage = exc.stage
                raise
            except BaseException:  # KeyboardInterrupt: statistics so far, then re-raise
                status = "stopped"
                raise
        finally:
            for name, stage in self.stages:
                call_close(name, stage)
            progress.close(self._done(), safe_progress_info(self.progress_fn, pstate))
            self.result = self.stats.summarize(
                mode="sync",
                live=False,
                status=status,
                wall_s=time.perf_counter() - t_start,
                t_start=t_start,
                items_read=n_read,
                items_done=self._done(),
                error_stage=error_stage,
            )
            log_run_stats(self.result)
        return self.result

    def _done(self) -> int:
        if self._latency_stage is None:
            return self.stats.get_count(READER, "out")
        return self.stats.get_count(self._latency_stage, "done")


#: signals that stop a run the way Ctrl-C does (SIGHUP: the terminal went away)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


class SignalState:
    """What :func:`handle_signals` saw: ``signum`` of the first stop signal, None if none came.
    ``exit_code`` is the shell convention for it (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    @property
    def exit_code(self) -> Optional[int]:
        return None if self.signum is None else 128 + int(self.signum)

    @property
    def name(self) -> Optional[str]:
        return None if self.signum is None else signal.Signals(self.signum).name


@contextmanager
def handle_signals(runner: Any, logger: Optional[logging.Logger] = None) -> Iterator[SignalState]:
    """For the duration of a run, SIGINT (Ctrl-C), SIGTERM (``kill``, ``timeout``, a job
    scheduler) and SIGHUP stop ``runner`` (``runner.stop()``): the run returns normally with
    status "stopped", so the caller still writes the trajectory, map and metrics so far, and
    ends every child process. A second signal raises KeyboardInterrupt (hard abort). The
    previous handlers are restored afterwards. Outside the main thread (where signals cannot
    be handled) this does nothing. Yields a :class:`SignalState`."""
    log = logger or LOG
    state = SignalState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def _handler(signum: int, frame: Any) -> None:
        if state.signum is None:
            state.signum = signum
            runner.stop()
            # the logging module takes locks; a message from a handler is still the norm
            log.warning("%s: stopping; results so far will be written (send it again to abort)", signal.Signals(signum).name)
        else:
            for s in STOP_SIGNALS:
                signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
