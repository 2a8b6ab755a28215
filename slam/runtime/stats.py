"""Run-time statistics of a pipeline run: per-stage timing, frame-to-pose latency, queues, drops.

Two layers:

- :class:`StatsCollector` is filled while the pipeline runs. Every ``record_*`` method is
  safe to call from any thread (appends to lists and integer increments under a lock).
- :class:`RunStats` is the frozen summary that ``Pipeline.run()`` returns. ``to_dict()`` is
  what goes into ``metrics.json`` (key ``"runtime"``), ``summary()`` is a one-line log
  message and ``table()`` a fixed-width table for the run log.

Units: every duration is in milliseconds (``*_ms``) except ``wall_s``; queue depths are item
counts. Timestamps handed to :meth:`StatsCollector.record_latency` are ``time.perf_counter()``
seconds, the clock the pipeline uses for ``t_read``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

import numpy as np


@dataclass
class TimingSummary:
    """Summary of a list of durations, all in milliseconds."""

    count: int = 0
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    max_ms: float = 0.0
    total_ms: float = 0.0

    @staticmethod
    def from_samples(samples_ms: Iterable[float]) -> "TimingSummary":
        arr = np.asarray(list(samples_ms), dtype=np.float64)
        if arr.size == 0:
            return TimingSummary()
        return TimingSummary(
            count=int(arr.size),
            mean_ms=float(arr.mean()),
            p50_ms=float(np.percentile(arr, 50)),
            p95_ms=float(np.percentile(arr, 95)),
            max_ms=float(arr.max()),
            total_ms=float(arr.sum()),
        )


@dataclass
class QueueSummary:
    """One queue between two threads (named after its consumer).

    capacity:   maximum number of items it holds (1 for a live "newest only" queue; 0: no limit).
    policy:     "block" (a full queue makes the producer wait), "latest" (a new item
                replaces the waiting one; the replaced item is counted as dropped) or
                "unbounded" (never full, never drops: loop closing's wake-ups).
    mean_depth / max_depth: items waiting, sampled each time the consumer takes an item.
    dropped:    items discarded by a "latest" queue.
    """

    capacity: int = 0
    policy: str = "block"
    mean_depth: float = 0.0
    max_depth: int = 0
    dropped: int = 0


@dataclass
class RunStats:
    """Frozen summary of one pipeline run.

    mode:          "threaded" or "sync".
    live:          True when the queues kept only the newest item.
    status:        "completed" (source exhausted), "stopped" (stop(), a signal) or "failed" (a stage raised).
    wall_s:        seconds from run() start to the last thread joined.
    items_read:    items the source produced.
    items_done:    items the latency stage (normally "tracking") finished.
    fps:           items_done / wall_s.
    stages:        per stage name, timing of its process() calls.
    flush_ms:      per stage name, total ms spent in flush() at end of stream.
    latency:       frame-to-pose latency, reader producing the item -> latency stage done.
    queues:        per consumer name ("<stage>" or "output"), queue summary.
    counts:        per stage name {"in": items received, "out": items emitted,
                   "dropped": items dropped in its input queue}; key "reader" has "out".
    dropped_total: all dropped items, all queues.
    dropped_ids:   per queue, ``index`` attributes (or source sequence numbers) of the items
                   dropped, so a caller can tell which frames never reached tracking.
    hung_threads:  names of threads still alive after their join timeout (should be empty).
    error_stage:   the stage that raised, when status == "error".
    first_output_s: seconds from run() start to the first item the latency stage finished
                   (start-up: a feature process's imports, model loading); None if none did.
    """

    mode: str = "threaded"
    live: bool = False
    status: str = "completed"
    wall_s: float = 0.0
    items_read: int = 0
    items_done: int = 0
    fps: float = 0.0
    stages: dict = field(default_factory=dict)
    flush_ms: dict = field(default_factory=dict)
    latency: TimingSummary = field(default_factory=TimingSummary)
    queues: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    dropped_total: int = 0
    dropped_ids: dict = field(default_factory=dict)
    hung_threads: list = field(default_factory=list)
    error_stage: Optional[str] = None
    first_output_s: Optional[float] = None

    def to_dict(self, include_dropped_ids: bool = False) -> dict:
        """JSON-ready dict for metrics.json (dropped ids left out unless asked: they can be long)."""
        out = asdict(self)
        if not include_dropped_ids:
            out.pop("dropped_ids")
        return out

    def summary(self) -> str:
        """One line for the log."""
        parts = [
            f"{self.mode}{' live' if self.live else ''} run {self.status}:",
            f"{self.items_done}/{self.items_read} items in {self.wall_s:.2f} s ({self.fps:.1f} fps)",
        ]
        if self.latency.count:
            parts.append(f"latency p50 {self.latency.p50_ms:.1f} ms p95 {self.latency.p95_ms:.1f} ms")
        stage_txt = ", ".join(f"{k} {v.mean_ms:.1f}" for k, v in self.stages.items())
        if stage_txt:
            parts.append(f"mean ms/item: {stage_txt}")
        parts.append(f"dropped {self.dropped_total}")
        if self.hung_threads:
            parts.append(f"HUNG threads: {', '.join(self.hung_threads)}")
        return " | ".join(parts)

    def table(self) -> str:
        """Fixed-width table: one row per stage plus latency, then one row per queue."""
        head = f"{'stage':<14}{'n':>7}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"
        lines = [head, "-" * len(head)]
        for name, t in self.stages.items():
            lines.append(f"{name:<14}{t.count:>7}{t.mean_ms:>10.2f}{t.p50_ms:>10.2f}{t.p95_ms:>10.2f}{t.max_ms:>10.2f}")
        t = self.latency
        lines.append(f"{'frame->pose':<14}{t.count:>7}{t.mean_ms:>10.2f}{t.p50_ms:>10.2f}{t.p95_ms:>10.2f}{t.max_ms:>10.2f}")
        if self.queues:
            qhead = f"{'queue':<14}{'policy':>10}{'cap':>6}{'mean':>8}{'max':>6}{'dropped':>9}"
            lines += ["", qhead, "-" * len(qhead)]
            for name, q in self.queues.items():
                lines.append(f"{name:<14}{q.policy:>10}{q.capacity:>6}{q.mean_depth:>8.2f}{q.max_depth:>6}{q.dropped:>9}")
        return "\n".join(lines)


class StatsCollector:
    """Thread-safe accumulator behind :class:`RunStats`.

    The pipeline records stage timings, queue depths and drops itself. Frame-to-pose latency is
    recorded automatically when the latency stage finishes an item; a caller that wants to
    record it elsewhere can call :meth:`record_latency` with the item's ``t_read``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stage_ms: dict[str, list[float]] = {}
        self.flush_ms: dict[str, list[float]] = {}
        self.latency_ms: list[float] = []
        self.depths: dict[str, list[int]] = {}
        self.queue_info: dict[str, tuple[int, str]] = {}
        self.dropped: dict[str, int] = {}
        self.dropped_ids: dict[str, list[int]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.first_done: Optional[float] = None  # perf_counter() when the latency stage finished its first item

    # -- registration -------------------------------------------------------------------------
    def register_stage(self, name: str) -> None:
        with self._lock:
            self.stage_ms.setdefault(name, [])
            self.counts.setdefault(name, {"in": 0, "out": 0, "dropped": 0})

    def register_queue(self, name: str, capacity: int, policy: str) -> None:
        with self._lock:
            self.queue_info[name] = (capacity, policy)
            self.depths.setdefault(name, [])
            self.dropped.setdefault(name, 0)
            self.dropped_ids.setdefault(name, [])

    # -- recording ----------------------------------------------------------------------------
    def record_stage(self, name: str, ms: float) -> None:
        self.stage_ms.setdefault(name, []).append(float(ms))

    def record_flush(self, name: str, ms: float) -> None:
        self.flush_ms.setdefault(name, []).append(float(ms))

    def record_latency(self, t_read: Optional[float], t_done: Optional[float] = None) -> Optional[float]:
        """Record one frame-to-pose latency from ``t_read`` (perf_counter seconds) to ``t_done``
        (default: now). Returns the latency in ms, or None when ``t_read`` is None."""
        t_done = time.perf_counter() if t_done is None else t_done
        if self.first_done is None:
            self.first_done = t_done
        if t_read is None:
            return None
        ms = (t_done - t_read) * 1000.0
        self.latency_ms.append(ms)
        return ms

    def record_depth(self, queue_name: str, depth: int) -> None:
        self.depths.setdefault(queue_name, []).append(int(depth))

    def record_drop(self, queue_name: str, item_id: int) -> None:
        with self._lock:
            self.dropped[queue_name] = self.dropped.get(queue_name, 0) + 1
            self.dropped_ids.setdefault(queue_name, []).append(int(item_id))
            if queue_name in self.counts:
                self.counts[queue_name]["dropped"] += 1

    def count(self, name: str, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts.setdefault(name, {"in": 0, "out": 0, "dropped": 0})
            self.counts[name][key] = self.counts[name].get(key, 0) + n

    def get_count(self, name: str, key: str) -> int:
        with self._lock:
            return self.counts.get(name, {}).get(key, 0)

    def counts_now(self) -> dict[str, dict[str, int]]:
        """A copy of the item counts so far (see RunStats.counts)."""
        with self._lock:
            return {k: dict(v) for k, v in self.counts.items()}

    def to_raw(self) -> dict:
        """Everything recorded so far as plain lists and dicts (picklable): what a feature process
        sends back to its parent, which adds it with :meth:`merge_raw`."""
        with self._lock:
            return {
                "stage_ms": {k: list(v) for k, v in self.stage_ms.items()},
                "flush_ms": {k: list(v) for k, v in self.flush_ms.items()},
                "depths": {k: list(v) for k, v in self.depths.items()},
                "queue_info": dict(self.queue_info),
                "dropped": dict(self.dropped),
                "dropped_ids": {k: list(v) for k, v in self.dropped_ids.items()},
                "counts": {k: dict(v) for k, v in self.counts.items()},
            }

    def merge_raw(self, raw: dict, stage: str) -> None:
        """Add what another process recorded (:meth:`to_raw`) for its stage ``stage`` and the
        queues in front of it. That stage comes first in tables, as it does in the chain; the
        other process's reader counts replace ours (it read the frames; we only received them);
        its output queue, the process boundary, is left out."""
        with self._lock:
            self.stage_ms = {stage: list(raw["stage_ms"].get(stage, [])), **{k: v for k, v in self.stage_ms.items() if k != stage}}
            if raw["flush_ms"].get(stage):
                self.flush_ms.setdefault(stage, []).extend(raw["flush_ms"][stage])
            for qname, info in raw["queue_info"].items():
                if qname == "output":
                    continue
                self.queue_info[qname] = tuple(info)
                self.depths.setdefault(qname, []).extend(raw["depths"].get(qname, []))
                self.dropped[qname] = self.dropped.get(qname, 0) + raw["dropped"].get(qname, 0)
                self.dropped_ids.setdefault(qname, []).extend(raw["dropped_ids"].get(qname, []))
            for cname, c in raw["counts"].items():
                if cname == "reader":
                    self.counts["reader"] = dict(c)
                elif cname == stage:
                    self.counts[stage] = {k: v for k, v in c.items() if k != "done"}

    def queue_depth_now(self) -> dict[str, int]:
        """Last sampled depth of every queue (for a progress line)."""
        return {k: (v[-1] if v else 0) for k, v in list(self.depths.items())}

    # -- summary ------------------------------------------------------------------------------
    def summarize(
        self,
        *,
        mode: str,
        live: bool,
        status: str,
        wall_s: float,
        items_read: int,
        items_done: int,
        hung_threads: Optional[list[str]] = None,
        error_stage: Optional[str] = None,
        t_start: Optional[float] = None,
    ) -> RunStats:
        with self._lock:
            counts = {k: dict(v) for k, v in self.counts.items()}
            dropped = dict(self.dropped)
            dropped_ids = {k: list(v) for k, v in self.dropped_ids.items()}
        queues = {}
        for name, (cap, policy) in self.queue_info.items():
            d = np.asarray(self.depths.get(name, []), dtype=np.float64)
            queues[name] = QueueSummary(
                capacity=cap,
                policy=policy,
                mean_depth=float(d.mean()) if d.size else 0.0,
                max_depth=int(d.max()) if d.size else 0,
                dropped=dropped.get(name, 0),
            )
        return RunStats(
            mode=mode,
            live=live,
            status=status,
            wall_s=float(wall_s),
            items_read=int(items_read),
            items_done=int(items_done),
            fps=float(items_done / wall_s) if wall_s > 0 else 0.0,
            stages={k: TimingSummary.from_samples(v) for k, v in self.stage_ms.items()},
            flush_ms={k: float(sum(v)) for k, v in self.flush_ms.items()},
            latency=TimingSummary.from_samples(self.latency_ms),
            queues=queues,
            counts=counts,
            dropped_total=int(sum(dropped.values())),
            dropped_ids=dropped_ids,
            hung_threads=list(hung_threads or []),
            error_stage=error_stage,
            first_output_s=(self.first_done - t_start) if (t_start is not None and self.first_done is not None) else None,
        )
