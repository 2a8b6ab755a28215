"""`python -m slam run` with the stage timers reading CPU time instead of wall-clock time.

On a shared machine the wall-clock time of a stage mostly measures the other sessions' load;
the CPU time of the thread that ran it does not (much). Use it with the synchronous runner
(``--sync``: every stage runs in the main thread) and one torch thread, so that the thread's
CPU time is the whole cost of the stage. metrics.json's ``runtime.stages`` then hold CPU ms per
item (features and tracking per frame, mapping per keyframe job); ``--profile FILE`` also writes
a cProfile of the run measured in CPU time.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/stage_cpu.py run --seq tum/fr1_xyz \\
        --data-root ../shared/data/tum --max-frames 200 --sync
"""
from __future__ import annotations

import cProfile
import sys
import time
import types


def main(argv: list[str]) -> int:
    profile = None
    if len(argv) >= 2 and argv[0] == "--profile":
        profile, argv = argv[1], argv[2:]
    import slam.runtime.runner as runner
    from slam.cli import main as slam_main

    # the runner reads time.perf_counter() around each stage's process(); give it the thread's CPU clock
    runner.time = types.SimpleNamespace(perf_counter=time.thread_time, monotonic=time.monotonic, sleep=time.sleep)
    if profile is None:
        return slam_main(argv)
    prof = cProfile.Profile(timer=time.thread_time)
    prof.enable()
    try:
        return slam_main(argv)
    finally:
        prof.disable()
        prof.dump_stats(profile)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
