"""The reader and the feature stage in a child process, seen by the pipeline as its source.

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
a small threaded :class:`~slam.runtime.pipeline.Pipeline` whose queue keeps only the newest
frame (drops are counted in the child and merged into the parent's statistics). The items come back already stamped with the
child's ``t_read`` (``time.perf_counter()`` is the system-wide monotonic clock on Linux and
macOS), so frame-to-pose latency still starts when the frame was read.

Payloads cross the process boundary pickled with the standard pickler (tensors are copied, not
moved to shared memory, which would cost a file descriptor each). CUDA devices are better served
by threads (one CUDA context, no copies), so :func:`use_process_frontend` chooses the process
only for CPU runs with more than one core.

Errors in the child (opening the source, building the extractor, a frame that fails) are
re-raised in the parent as :class:`~slam.runtime.sync.StageError` naming the child's stage
("reader" or "features"), with the child's traceback in the message. SIGINT is ignored in the
child: the parent decides, and stops the run through a shared flag that the child polls
(:class:`~slam.runtime.worker.FeatureWorker`).
"""
from __future__ import annotations

import logging
import pickle
import queue as queue_mod
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Optional

from slam.runtime.sync import READER, Item, StageError
from slam.runtime.worker import FeatureWorker, drain as _drain, use_process_frontend

LOG = logging.getLogger("slam.runtime")

__all__ = ["FeatureWorker", "ProcessFrontend", "use_process_frontend", "source_factory"]


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


def _raw_stats(collector: Any) -> dict:
    with collector._lock:
        return {
            "stage_ms": {k: list(v) for k, v in collector.stage_ms.items()},
            "flush_ms": {k: list(v) for k, v in collector.flush_ms.items()},
            "depths": {k: list(v) for k, v in collector.depths.items()},
            "queue_info": dict(collector.queue_info),
            "dropped": dict(collector.dropped),
            "dropped_ids": {k: list(v) for k, v in collector.dropped_ids.items()},
            "counts": {k: dict(v) for k, v in collector.counts.items()},
        }


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
    from slam.runtime.pipeline import Pipeline, RuntimeConfig

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
    cfg = RuntimeConfig(threaded=live, live=live, queue_size=queue_size, progress=False, sync_mapping=False,
                        lossless_stages=[], latency_stage=stage_name, join_timeout_s=10.0)
    pipe = Pipeline(source, [(stage_name, _Stamped(stage))], cfg, on_output=send)
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
        out_q.put(("error", exc.stage, _picklable(exc.original), "".join(traceback.format_exception(exc.original)), _raw_stats(pipe.stats)))
        return
    except BaseException as exc:  # noqa: BLE001
        out_q.put(("error", stage_name, _picklable(exc), traceback.format_exc(), _raw_stats(pipe.stats)))
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
    out_q.put(("end", _raw_stats(pipe.stats)))


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
                self._note(_drain(self._q))  # a child blocked on a full queue must be able to finish
                if not self._finished:
                    time.sleep(0.02)
            if not self._finished:
                self._note(_drain(self._q))
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
        raw = self._child_stats
        name = self.stage_name
        with collector._lock:
            # the child's stage comes first in tables, as it does in the chain
            collector.stage_ms = {name: list(raw["stage_ms"].get(name, [])), **{k: v for k, v in collector.stage_ms.items() if k != name}}
            if raw["flush_ms"].get(name):
                collector.flush_ms.setdefault(name, []).extend(raw["flush_ms"][name])
            for qname, info in raw["queue_info"].items():
                if qname == "output":
                    continue  # the child's output queue is the process boundary
                collector.queue_info[qname] = tuple(info)
                collector.depths.setdefault(qname, []).extend(raw["depths"].get(qname, []))
                collector.dropped[qname] = collector.dropped.get(qname, 0) + raw["dropped"].get(qname, 0)
                collector.dropped_ids.setdefault(qname, []).extend(raw["dropped_ids"].get(qname, []))
            for cname, c in raw["counts"].items():
                if cname == READER:
                    # the parent counts what the child delivered as read; the child's reader is the truth
                    collector.counts[READER] = dict(c)
                elif cname == name:
                    collector.counts[name] = {k: v for k, v in c.items() if k != "done"}
        return True
