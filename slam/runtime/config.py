"""Settings of the runtime (light: no torch; ``slam.config`` builds on them)."""
from __future__ import annotations

from dataclasses import dataclass, field

from slam.params import param


@dataclass
class RuntimeConfig:
    threaded: bool = True  # run reader and each stage in its own thread; False = synchronous runner
    queue_size: int = param(8, ge=1)  # capacity of each blocking queue between threads (items)
    live: bool = False  # live camera: queues keep only the newest item and count drops
    join_timeout_s: float = param(30.0, gt=0.0)  # deadline for joining all threads at the end (seconds)
    progress: bool = True  # progress line on a TTY (a log line every progress_log_s otherwise)
    sync_mapping: bool = True  # dataset mode: wait for mapping to finish each job (= synchronous result)
    sync_stages: list[str] = field(default_factory=lambda: ["mapping"])  # stages whose producer waits (sync_mapping)
    lossless_stages: list[str] = field(default_factory=lambda: ["mapping"])  # live mode: input queues that never drop
    latency_stage: str = "tracking"  # frame-to-pose latency ends when this stage finishes an item
    progress_log_s: float = param(5.0, gt=0.0)  # seconds between progress log lines when stdout is not a TTY
    stall_timeout_s: float = param(0.0, ge=0.0)  # > 0: fail naming the busy stage when no item moves for this long
    feature_stage: str = param("auto", choices=("auto", "process", "thread"))  # where reader + features run when threaded: auto (process on a multi-core CPU) | process | thread
    background_stages: list[str] = field(default_factory=lambda: ["mapping"])  # live mode: threads run at a lower OS priority
    background_nice: int = param(10, ge=0, le=19)  # live mode: nice increment of those threads (Linux; 0 = off), so g2o yields the cores to the frame path
    blas_threads: int = param(1, ge=0)  # threads of numpy's BLAS during a run, here and in the feature process (0 = library default); see slam.runtime.blas
