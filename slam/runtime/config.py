"""Settings of the runtime (light: no torch; ``slam.config`` builds on them).

Two modes: dataset runs (``live`` false: nothing is dropped, and the mapping handoff makes the
threaded run equal the synchronous one) and live runs (``live`` true: frame queues keep only
the newest frame, mapping writes its results back as soon as they are ready and defers to
tracking). ``slam.runtime.schedule`` holds the mapping schedule of each mode.
"""
from __future__ import annotations

from dataclasses import dataclass

from slam.params import param


@dataclass
class RuntimeConfig:
    threaded: bool = True  # reader and each stage in a thread of its own (and features in a process, see feature_stage); False = synchronous runner
    live: bool = False  # live camera: frame queues keep only the newest frame and count drops (set by `slam live`)
    queue_size: int = param(8, ge=1)  # capacity of each blocking queue between threads (items; loop closing's input is unbounded: its wake-ups must never hold up mapping, slam.runtime.threaded)
    feature_stage: str = param("auto", choices=("auto", "process", "thread"))  # where reader + features run when threaded: auto = a process on a multi-core CPU
    feature_threads: int = param(0, ge=0)  # torch/OpenCV threads of the feature process (feature_stage process); 0 = auto: every core for the heavy extractors (aliked, disk, superpoint), whose frames leave the tracking core idle, else 1 (slam.runtime.feature_process.resolve_feature_threads; docs/benchmarks.md section 13)
    blas_threads: int = param(1, ge=0)  # threads of numpy's BLAS during a run, here and in the feature process (0 = library default); see slam.runtime.blas
    torch_threads: int = param(0, ge=0)  # torch intra-op threads of the main process during a threaded run (0 = auto: one core fewer than the machine's when features run in their own process, so the learned matcher does not oversubscribe the cores; else torch's default); see slam.runtime.blas
    # dataset mode: the mapping handoff
    commit_delay_frames: int = param(8, ge=1)  # local BA runs while tracking goes on; its result is written back before this many more frames are tracked, or before the next keyframe job (1 = before the next frame: tracking waits for the whole job)
    # live mode: tracking goes first
    live_yield_max_ms: float = param(50.0, ge=0.0)  # longest wait of mapping at one yield point while a frame is tracked
    live_skip_when_queued: bool = True  # when another keyframe job is waiting, skip this one's fusion and local BA, and end a running local BA early (ORB-SLAM's CheckNewKeyFrames and abort of BA), so the new keyframe's points reach tracking sooner
    background_nice: int = param(10, ge=0, le=19)  # nice increment of the mapping thread (Linux; 0 = off), so g2o yields the cores to the frame path
    # monitoring
    progress: bool = True  # progress line on a TTY (a log line every progress_log_s otherwise)
    progress_log_s: float = param(5.0, gt=0.0)  # seconds between progress log lines when stdout is not a TTY
    stall_timeout_s: float = param(0.0, ge=0.0)  # > 0: fail naming the busy stage when no item moves for this long
    join_timeout_s: float = param(30.0, gt=0.0)  # deadline for joining all threads at the end (seconds)
