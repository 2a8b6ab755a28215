"""The reader and the feature stage in a child process, seen by the runner as its source.

Why a process: on a CPU the stages are Python code that holds the GIL most of the time
(numpy calls on small arrays, graph building, bookkeeping), so threads in one interpreter
overlap little: on 2 cores the threaded pipeline ran at 0.98x the synchronous runner. A child
process has its own interpreter and GIL, so image decoding and feature extraction run on one
core while tracking and mapping run on the other.

::

    child process:   source --reader--> [q features] --> features --> mp queue
    main process:    ProcessFrontend (iterable) --reader--> [q tracking] --> tracking --> ...

In dataset mode the child reads and extracts inline, in one thread (nothing is dropped, so
results equal the synchronous runner's, and the child keeps to one core). In live mode it runs
a small :class:`~slam.runtime.threaded.ThreadedRunner` in live mode, whose queue keeps only the newest
frame (drops are counted in the child and merged into the parent's statistics). The items come back already stamped with the
child's ``t_read`` (``time.perf_counter()`` is the system-wide monotonic clock on Linux and
macOS), so frame-to-pose latency still starts when the frame was read.

Payloads cross the process boundary pickled with the standard pickler (tensors are copied, not
moved to shared memory, which would cost a file descriptor each). CUDA devices are better served
by threads (one CUDA context, no copies), so :func:`use_process_frontend` chooses the process
only for CPU runs with more than one core.

Errors in the child (opening the source, building the extractor, a frame that fails) are
re-raised in the parent as :class:`~slam.runtime.runner.StageError` naming the child's stage
("reader" or "features"), with the child's traceback in the message. SIGINT is ignored in the
child: the parent decides, and stops the run through a shared flag that the child polls.

The process itself is a :class:`FeatureWorker`, which can be started before its first run and
serve several: the command line starts one as its first step, so the child's imports (seconds)
run beside the parent's, and ``bench`` keeps one for all its threaded runs. This module imports
neither torch nor the rest of slam at import time, so the command line can decide whether a run
will want the process (:func:`use_process_frontend`) and start it before its own imports.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import signal
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Optional

from slam.features.config import HEAVY_CPU_EXTRACTORS
from slam.runtime.runner import READER, Item, StageError

LOG = logging.getLogger("slam.runtime")

__all__ = ["FeatureWorker", "ProcessFrontend", "resolve_feature_threads", "use_process_frontend", "source_factory"]


def use_process_frontend(setting: str, threaded: bool, device_type: str) -> bool:
    """Resolve ``runtime.feature_stage`` ("auto", "process", "thread") for a run.

    auto: a process for threaded runs on the CPU when the machine has more than one core.
    The synchronous runner never uses one.
    """
    if setting not in ("auto", "process", "thread"):
        raise ValueError(f"runtime.feature_stage must be auto, process or thread, got {setting!r}")
    if not threaded or setting == "thread":
        return False
    if setting == "process":
        return True
    return device_type == "cpu" and (os.cpu_count() or 1) > 1


def resolve_feature_threads(setting: int, features: str, cpu_count: Optional[int] = None) -> int:
    """Threads of the feature process (``runtime.feature_threads``): ``setting`` when > 0; auto
    (0): every core for a heavy extractor, whose frames leave the tracking core idle most of
    the time, else 1 (XFeat, ORB, and ``auto``, which resolves to one of them on a CPU).
    Measured on fr1_xyz RGB-D, 2 cores: ALIKED 5.6 against 4.2 fps with 2 threads; XFeat 10.7
    against 13.9 fps, mono 9.4 against 15.6 (docs/benchmarks.md section 13)."""
    if setting > 0:
        return int(setting)
    if features in HEAVY_CPU_EXTRACTORS:
        return max(1, int(cpu_count if cpu_count is not None else (os.cpu_count() or 1)))
    return 1


def _set_threads(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(max(1, threads))
    except Exception:  # noqa: BLE001 - torch is optional for the child
        pass
    try:
        import cv2

        cv2.setNumThreads(max(1, threads))
    except Exception:  # noqa: BLE001
        pass


def _worker_main(tasks: Any, out_q: Any, stop_flag: Any, ready: Any, threads: int, preload: tuple) -> None:
    """Entry point of the child process (module level, so the spawn start method can import
    it): import ``preload`` ahead of the first task, set ``ready``, then serve tasks until None
    arrives."""
    # the parent decides when a run stops (Ctrl-C, or a terminal that went away, reach the whole
    # process group); SIGTERM keeps its default, so the parent can still end a stuck child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s (feature process): %(message)s")
    _set_threads(threads)
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a run that needs it reports the error itself
            pass
    ready.value = 1
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):  # the parent is gone (it holds the only write end)
            return
        if task is None:
            return
        _serve(task, out_q, stop_flag)


class FeatureWorker:
    """A feature process that can be started before its first run and serve several runs.

    Starting a process takes seconds (a fresh interpreter imports torch and slam), which the
    first frame of a threaded run would otherwise wait for. The command line starts one as its
    first step, so the child's imports overlap the parent's, and ``bench`` keeps one for all its
    threaded runs. ``preload``: modules imported before the first task (``("slam.system",)``
    for the command line; nothing for a worker started by a :class:`ProcessFrontend` itself,
    which imports what the task needs). The queue back to the parent holds ``queue_size``
    items and the child runs torch/OpenCV with ``threads`` threads, so a worker serves runs
    with those settings only (:meth:`fits`). ``close()`` ends the process (idempotent).
    A child whose parent died ends by itself (its task pipe reaches end of file).
    Parent and child signal each other through polled bytes (``stop_flag``, ``ready``), not
    ``mp.Event``, whose ``set()`` waits for the waiters to wake and would hang if one died.
    """

    def __init__(self, queue_size: int = 8, threads: int = 1, preload: tuple = ("slam.system",)) -> None:
        ctx = mp.get_context("spawn")
        self.queue_size = max(1, int(queue_size))
        self.threads = int(threads)
        tasks_in, self.tasks = ctx.Pipe(duplex=False)  # the child gets the read end only
        self.out_q = ctx.Queue(maxsize=self.queue_size)
        self.stop_flag = ctx.RawValue("b", 0)
        self.ready = ctx.RawValue("b", 0)  # set to 1 by the child once ``preload`` is imported
        self.busy = False  # a run was handed over and has not reported its end yet
        self.runs = 0  # runs served to the end
        self.proc: Any = ctx.Process(target=_worker_main, args=(tasks_in, self.out_q, self.stop_flag, self.ready, self.threads, tuple(preload)),
                                     name="slam-feature-process", daemon=True)
        self.proc.start()
        tasks_in.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Wait until the child has imported ``preload`` (benchmarks: so that no timed run
        includes the process start-up); False on timeout or when the child died."""
        deadline = time.monotonic() + timeout_s
        while not self.ready.value:
            if not self.alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def fits(self, queue_size: int, threads: int) -> bool:
        """Whether this worker can serve a run with these settings now."""
        return self.alive() and not self.busy and self.queue_size == max(1, int(queue_size)) and self.threads == int(threads)

    def submit(self, task: bytes) -> None:
        self.stop_flag.value = 0
        self.busy = True
        self.tasks.send(task)

    def run_finished(self) -> None:
        """The run handed over last reported its end: the worker can take the next one."""
        self.busy = False
        self.runs += 1

    def close(self, timeout_s: float = 10.0) -> None:
        """End the process: an idle one at once (it holds nothing but its imports), one with a
        run in flight after that run stops (within ``timeout_s``, then terminated)."""
        if self.proc is None:
            return
        if self.proc.is_alive() and self.busy:
            self.stop_flag.value = 1  # the run ends after its current frame
            self.tasks.send(None)
            deadline = time.monotonic() + timeout_s
            while self.proc.is_alive() and time.monotonic() < deadline:
                drain(self.out_q)  # a child blocked on a full queue must be able to finish
                self.proc.join(0.05)
            if self.proc.is_alive():
                LOG.warning("feature process did not stop within %.0f s; terminating it", timeout_s)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
        drain(self.out_q)
        self.out_q.close()
        self.out_q.join_thread()
        self.tasks.close()
        self.proc = None
        self.busy = False

    def __enter__(self) -> "FeatureWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drain(q: Any) -> Optional[tuple]:
    """Empty ``q`` without blocking; returns the last end/error message seen, if any."""
    last = None
    while True:
        try:
            msg = q.get_nowait()
        except (queue_mod.Empty, OSError, ValueError):
            return last
        if msg[0] in ("end", "error"):
            last = msg



def source_factory(source: Any) -> Any:
    """What to send to the child for ``source``: ``source.process_factory()`` when the source
    has one (a camera must be opened where it is read, so the parent releases it and the child
    reopens it), else the source itself, which must then be picklable."""
    fn = getattr(source, "process_factory", None)
    if callable(fn):
        return fn()
    try:
        pickle.dumps(source)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(
            f"{type(source).__name__} cannot be sent to the feature process ({exc}); give it a "
            "process_factory() method or run with runtime.feature_stage=thread"
        ) from exc
    return source


class _Stamped:
    """Child-side wrapper: returns (t_read, index, output) so the parent can rebuild the Item."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage

    def process(self, payload: Any) -> Optional[tuple]:
        out = self.stage.process(payload)
        if out is None:
            return None
        return (getattr(payload, "t_read", None), getattr(payload, "index", None), out)

    def flush(self) -> list:
        fn = getattr(self.stage, "flush", None)
        outs = (fn() or []) if fn is not None else []
        return [(None, None, o) for o in outs if o is not None]

    def close(self) -> None:
        fn = getattr(self.stage, "close", None)
        if fn is not None:
            fn()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(task: bytes, out_q: Any, stop_flag: Any) -> None:
    """One run in the child: unpickle the task, build the source and the stage, run them and
    send every output, then ("end", stats) or ("error", stage, exc, traceback, stats)."""
    from slam.runtime.blas import blas_threads
    from slam.runtime.config import RuntimeConfig
    from slam.runtime.threaded import make_runner

    where = READER
    try:
        source_obj, stage_factory, stage_name, live, queue_size, n_blas = pickle.loads(task)
        source = source_obj() if callable(source_obj) and not hasattr(source_obj, "__iter__") else source_obj
        where = stage_name
        stage = stage_factory()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out_q.put(("error", where, _picklable(exc), traceback.format_exc(), None))
        return

    def send(triple: tuple) -> None:
        out_q.put(("item", pickle.dumps(triple, protocol=pickle.HIGHEST_PROTOCOL)))

    # dataset mode: read and extract inline, one thread, so the child keeps to one core and the
    # parent's tracking has the other (a reader thread here made three busy threads on two
    # cores); live mode needs the reader thread to keep only the newest frame
    cfg = RuntimeConfig(threaded=live, live=live, queue_size=queue_size, progress=False, join_timeout_s=10.0)
    runner_kw = {"lossless": (), "background": ()} if live else {}
    pipe = make_runner(source, [(stage_name, _Stamped(stage))], cfg, on_output=send, latency_stage=stage_name, **runner_kw)
    done = threading.Event()

    def watch() -> None:
        # a shared byte polled, not an mp.Event: Event.set() waits for every waiter to wake,
        # and a child that exits while waiting would then hang the parent
        while not done.wait(0.05):
            if stop_flag.value:
                pipe.stop()
                return

    watcher = threading.Thread(target=watch, name="slam-feature-process-stop", daemon=True)
    watcher.start()
    try:
        with blas_threads(n_blas):
            pipe.run()
    except StageError as exc:
        out_q.put(("error", exc.stage, _picklable(exc.original), "".join(traceback.format_exception(exc.original)), pipe.stats.to_raw()))
        return
    except BaseException as exc:  # noqa: BLE001
        out_q.put(("error", stage_name, _picklable(exc), traceback.format_exc(), pipe.stats.to_raw()))
        return
    finally:
        done.set()
        watcher.join(1.0)
        close = getattr(source, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001
                pass
    out_q.put(("end", pipe.stats.to_raw()))


class ProcessFrontend:
    """Iterable of pre-stamped :class:`Item` envelopes computed in a child process.

    source:        the frame source (picklable, or with ``process_factory()``; see :func:`source_factory`).
    stage_factory: picklable zero-argument callable that builds the stage in the child
                   (e.g. ``functools.partial(slam.system.build_frontend, cfg, camera)``).
    stage_name:    name of the child's stage in statistics and errors ("features").
    live:          newest-only queues in the child (drops counted and merged into the stats).
    queue_size:    capacity of the child's queues and of the queue back to the parent.
    threads:       torch intra-op threads in the child.
    blas_threads:  numpy's BLAS threads in the child during this run (0 = library default; see
                   slam.runtime.blas).
    worker:        a :class:`FeatureWorker` started earlier, used when it :meth:`~FeatureWorker.fits`
                   (and left running for the next run); otherwise the frontend starts its own
                   and ends it in ``close()``.

    ``start()`` hands the run to the child (iteration starts it if needed; start early to
    overlap a new child's imports with the parent's set-up). ``stop()`` asks the child to stop
    after the frame in flight (safe from a signal handler); ``close()`` waits for the child to
    finish the run, ending a child that does not within ``join_timeout_s``.
    ``merge_stats(collector)`` adds the child's stage timings, queue depths, drops and counts to
    the parent's :class:`~slam.runtime.stats.StatsCollector` (the pipeline calls it at the end of
    a run).
    """

    def __init__(self, source: Any, stage_factory: Callable[[], Any], *, stage_name: str = "features", live: bool = False,
                 queue_size: int = 8, threads: int = 1, join_timeout_s: float = 10.0,
                 worker: Optional[FeatureWorker] = None, blas_threads: int = 1) -> None:
        self._source_obj = source_factory(source)
        self.stage_factory = stage_factory
        self.stage_name = stage_name
        self.live = bool(live)
        self.queue_size = max(1, int(queue_size))
        self.threads = int(threads)
        self.blas_threads = int(blas_threads)
        self.join_timeout_s = float(join_timeout_s)
        self._given_worker = worker
        self._worker: Optional[FeatureWorker] = None
        self._own_worker = False
        self._q: Any = None
        self._stop_flag: Any = None
        self._proc: Any = None
        self._stopping = False
        self._finished = False  # the child reported the end of this run (end or error)
        self._closed = False
        self._child_stats: Optional[dict] = None
        self._merged = False

    @property
    def reused_worker(self) -> bool:
        """Whether this run went to a worker started before it (no process start-up)."""
        return self._worker is not None and not self._own_worker

    # -- control --------------------------------------------------------------------------------
    def start(self) -> "ProcessFrontend":
        if self._worker is not None:
            return self
        task = pickle.dumps((self._source_obj, self.stage_factory, self.stage_name, self.live, self.queue_size,
                             self.blas_threads),
                            protocol=pickle.HIGHEST_PROTOCOL)
        w = self._given_worker
        if w is not None and w.fits(self.queue_size, self.threads):
            self._own_worker = False
        else:
            if w is not None:
                LOG.info("the feature process started in advance does not fit this run (alive %s, busy %s, queue %d/%d, "
                         "threads %d/%d); starting another", w.alive(), w.busy, w.queue_size, self.queue_size, w.threads, self.threads)
            w = FeatureWorker(self.queue_size, self.threads, preload=())
            self._own_worker = True
        self._worker = w
        self._q, self._stop_flag, self._proc = w.out_q, w.stop_flag, w.proc
        w.submit(task)
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._stop_flag is not None:
            self._stop_flag.value = 1

    def close(self) -> None:
        """Stop the run and wait for the child to finish it (ending the child after
        join_timeout_s); a worker of our own is ended, one given to us is kept. Idempotent."""
        w = self._worker
        if w is None or self._closed or w.proc is None:
            return
        self._closed = True
        if not self._finished:
            self.stop()
            deadline = time.monotonic() + self.join_timeout_s
            while not self._finished and w.alive() and time.monotonic() < deadline:
                self._note(drain(self._q))  # a child blocked on a full queue must be able to finish
                if not self._finished:
                    time.sleep(0.02)
            if not self._finished:
                self._note(drain(self._q))
        if self._finished:
            w.run_finished()
        if self._own_worker or not self._finished:  # ours, or one that did not finish the run: end it
            w.close(timeout_s=0.5)
        self._proc = None

    def _note(self, msg: Optional[tuple]) -> None:
        if msg is None:
            return
        self._finished = True
        if msg[-1] is not None:  # end and error messages both end with the child's statistics
            self._child_stats = msg[-1]

    def __enter__(self) -> "ProcessFrontend":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Item]:
        self.start()
        seq = 0
        while True:
            try:
                msg = self._q.get(timeout=0.1)
            except queue_mod.Empty:
                if self._stopping:
                    return
                if not self._proc.is_alive():
                    try:
                        msg = self._q.get(timeout=0.5)
                    except queue_mod.Empty:
                        raise StageError(self.stage_name, RuntimeError(
                            f"the feature process exited with code {self._proc.exitcode} without reporting why "
                            "(its error, if any, is on stderr above; killed for memory?). A script that calls slam must guard its "
                            "entry point with `if __name__ == \"__main__\":` (the process is started with spawn); "
                            "runtime.feature_stage=thread runs the features in a thread instead")) from None
                else:
                    continue
            kind = msg[0]
            if kind == "item":
                t_read, index, out = pickle.loads(msg[1])
                item_id = int(index) if isinstance(index, int) else seq
                yield Item(seq, t_read, out, item_id)
                seq += 1
            elif kind == "end":
                self._finished = True
                self._child_stats = msg[1]
                return
            elif kind == "error":
                _, where, exc, tb, stats = msg
                self._finished = True
                self._child_stats = stats
                LOG.error("feature process: stage '%s' failed:\n%s", where, tb.rstrip())
                raise StageError(where, exc)
            else:  # pragma: no cover - protocol error
                raise RuntimeError(f"feature process sent an unknown message {kind!r}")

    # -- statistics -----------------------------------------------------------------------------
    def merge_stats(self, collector: Any) -> bool:
        """Add the child's statistics to ``collector`` (once); False when none arrived.
        After a stop the child's last report may still be on its way: this closes the child
        (waiting for it) first."""
        if self._child_stats is None and self._proc is not None:
            self.close()
        if self._child_stats is None or self._merged:
            return False
        self._merged = True
        collector.merge_raw(self._child_stats, self.stage_name)
        return True
