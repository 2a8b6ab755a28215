"""A feature process that starts before it is needed (see :class:`FeatureWorker`).

Light on purpose: it imports neither torch nor the rest of slam, so the command line can decide
whether a run will want the process (:func:`use_process_frontend`) and start it first and let the child's imports run beside its own. What runs in the child, one
task after another, is :func:`slam.runtime.process_frontend._serve`.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import time
from typing import Any, Optional

LOG = logging.getLogger("slam.runtime")

__all__ = ["FeatureWorker", "drain", "use_process_frontend"]


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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
        from slam.runtime.process_frontend import _serve

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


