"""The reader + feature stage in a child process (slam.runtime.process_frontend) and the
mapping schedules (slam.runtime.schedule): the dataset handoff that lets bundle adjustment overlap
tracking, and the live schedule."""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numpy as np
import pytest

from slam.runtime.config import RuntimeConfig
from slam.runtime.runner import StageError
from slam.runtime.threaded import make_runner
from slam.runtime.feature_process import ProcessFrontend, use_process_frontend
from slam.runtime.stats import StatsCollector
from slam.runtime.runner import Item, SyncRunner


# -- picklable toys (module level: the spawned child imports this module to unpickle them) -----
@dataclass
class Frame:
    index: int
    value: float


class Source:
    """n frames; raises at frame ``fail_at`` (reader error) when given."""

    def __init__(self, n: int, fail_at: int = -1, delay_s: float = 0.0):
        self.n, self.fail_at, self.delay_s = n, fail_at, delay_s

    def __iter__(self):
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError(f"cannot decode frame {i}")
            if self.delay_s:
                time.sleep(self.delay_s)
            yield Frame(i, float(i))


class Square:
    """The 'feature' stage: value -> value**2 as a numpy array; fails at ``fail_at``."""

    def __init__(self, fail_at: int = -1):
        self.fail_at = fail_at

    def process(self, fr: Frame):
        if fr.index == self.fail_at:
            raise ValueError(f"bad frame {fr.index}")
        return {"index": fr.index, "sq": np.array([fr.value**2])}


def make_square(fail_at: int = -1) -> Square:
    return Square(fail_at)


class BlasThreads:
    """Reports how many threads numpy's BLAS has in the child while it processes a frame."""

    def process(self, fr: Frame):
        from threadpoolctl import threadpool_info

        return {"index": fr.index, "blas": [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]}


def make_blas_threads() -> BlasThreads:
    return BlasThreads()


def broken_factory() -> Square:
    raise FileNotFoundError("weights.pth not found; run `python -m slam weights install x`")


class Collect:
    def __init__(self):
        self.seen = []

    def process(self, item):
        self.seen.append(item)
        return None


# -- tests ----------------------------------------------------------------------------------------
def test_auto_setting_resolution():
    assert use_process_frontend("process", True, "cuda")
    assert not use_process_frontend("thread", True, "cpu")
    assert not use_process_frontend("process", False, "cpu")  # the synchronous runner never uses one
    assert not use_process_frontend("auto", True, "cuda")
    with pytest.raises(ValueError, match="feature_stage"):
        use_process_frontend("yes", True, "cpu")


def test_items_come_back_stamped_in_order_with_child_statistics():
    pf = ProcessFrontend(Source(30), functools.partial(make_square), queue_size=4)
    sink = Collect()
    pipe = make_runner(pf, [("tracking", sink)], RuntimeConfig(progress=False))
    stats = pipe.run()
    pf.close()
    assert stats.status == "completed"
    assert [s["index"] for s in sink.seen] == list(range(30))
    assert [float(s["sq"][0]) for s in sink.seen] == [float(i * i) for i in range(30)]
    # the child's stage is in the parent's statistics, first in the chain
    assert list(stats.stages)[0] == "features" and stats.stages["features"].count == 30
    assert stats.counts["features"]["in"] == 30 and stats.items_read == 30
    assert stats.latency.count == 30 and stats.latency.p50_ms > 0


def test_child_items_keep_their_read_time():
    pf = ProcessFrontend(Source(5), functools.partial(make_square))
    t0 = time.perf_counter()
    items = list(pf)
    pf.close()
    assert all(isinstance(it, Item) for it in items)
    assert [it.item_id for it in items] == list(range(5))
    # perf_counter is the system-wide monotonic clock: the child's stamps are comparable
    assert all(t0 < it.t_read < time.perf_counter() for it in items)


def test_stage_error_in_child_is_named_and_chained():
    pf = ProcessFrontend(Source(20), functools.partial(make_square, 7))
    pipe = make_runner(pf, [("tracking", Collect())], RuntimeConfig(progress=False))
    with pytest.raises(StageError) as ei:
        pipe.run()
    pf.close()
    assert ei.value.stage == "features"
    assert isinstance(ei.value.original, ValueError) and "bad frame 7" in str(ei.value)


def test_reader_error_and_factory_error_in_child_are_named():
    pf = ProcessFrontend(Source(20, fail_at=3), functools.partial(make_square))
    with pytest.raises(StageError) as ei:
        make_runner(pf, [("tracking", Collect())], RuntimeConfig(progress=False)).run()
    pf.close()
    assert ei.value.stage == "reader" and "cannot decode frame 3" in str(ei.value)

    pf = ProcessFrontend(Source(20), broken_factory)
    with pytest.raises(StageError) as ei:
        make_runner(pf, [("tracking", Collect())], RuntimeConfig(progress=False)).run()
    pf.close()
    assert ei.value.stage == "features" and "weights install" in str(ei.value)


def test_stop_mid_run_ends_the_child_without_hanging():
    pf = ProcessFrontend(Source(10_000, delay_s=0.002), functools.partial(make_square))
    holder = {}

    class StopAt20(Collect):
        def process(self, item):
            super().process(item)
            if len(self.seen) == 20:
                holder["pipe"].stop()

    sink = StopAt20()
    pipe = holder["pipe"] = make_runner(pf, [("tracking", sink)], RuntimeConfig(progress=False, join_timeout_s=10))
    t = time.perf_counter()
    stats = pipe.run()
    pf.close()
    assert time.perf_counter() - t < 30
    assert stats.status == "stopped" and not stats.hung_threads
    assert 20 <= len(sink.seen) < 10_000
    assert pf._proc is None  # joined


def test_live_mode_child_keeps_only_the_newest_frame_and_counts_drops():
    pf = ProcessFrontend(Source(60), functools.partial(make_square), live=True)

    class SlowSink(Collect):
        def process(self, item):
            time.sleep(0.02)
            return super().process(item)

    sink = SlowSink()
    stats = make_runner(pf, [("tracking", sink)], RuntimeConfig(progress=False, live=True)).run()
    pf.close()
    idx = [s["index"] for s in sink.seen]
    assert idx == sorted(idx) and idx[-1] == 59  # order kept, the last frame always arrives
    assert stats.dropped_total > 0 and len(idx) + stats.dropped_total == 60


def test_merge_stats_adds_child_queue_and_counts():
    pf = ProcessFrontend(Source(3), functools.partial(make_square))
    list(pf)
    pf.close()
    col = StatsCollector()
    col.register_stage("tracking")
    assert pf.merge_stats(col)
    assert not pf.merge_stats(col)  # once
    assert col.counts["features"]["out"] == 3 and len(col.stage_ms["features"]) == 3


# -- a feature process started in advance and kept between runs -------------------------------------
def test_worker_serves_runs_one_after_another_and_survives_errors_and_stops():
    from slam.runtime.feature_process import FeatureWorker

    w = FeatureWorker(queue_size=4, threads=1, preload=())
    try:
        assert w.wait_ready(60)
        pf = ProcessFrontend(Source(12), functools.partial(make_square), queue_size=4, worker=w)
        assert [it.payload["index"] for it in pf] == list(range(12))
        pf.close()
        assert pf.reused_worker and w.alive() and w.runs == 1 and not w.busy
        # a stage error ends the run, not the worker
        pf = ProcessFrontend(Source(20), functools.partial(make_square, 3), queue_size=4, worker=w)
        with pytest.raises(StageError, match="bad frame 3"):
            list(pf)
        pf.close()
        assert w.alive() and w.runs == 2
        # a run stopped half-way leaves nothing behind for the next one
        pf = ProcessFrontend(Source(10_000, delay_s=0.002), functools.partial(make_square), queue_size=4, worker=w)
        it = iter(pf)
        assert [next(it).payload["index"] for _ in range(5)] == list(range(5))
        pf.close()
        assert w.alive() and w.runs == 3
        pf = ProcessFrontend(Source(6), functools.partial(make_square), queue_size=4, worker=w)
        assert [it.payload["sq"][0] for it in pf] == [float(i * i) for i in range(6)]
        pf.close()
        pf.close()  # idempotent
        assert w.runs == 4
        # a worker that does not fit (another queue size) is left alone; the run starts its own
        pf = ProcessFrontend(Source(3), functools.partial(make_square), queue_size=2, worker=w)
        assert len(list(pf)) == 3
        pf.close()
        assert not pf.reused_worker and w.runs == 4 and w.alive()
    finally:
        w.close()
    assert not w.alive()
    w.close()  # idempotent


def test_idle_worker_closes_at_once():
    from slam.runtime.feature_process import FeatureWorker

    t = time.perf_counter()
    w = FeatureWorker(preload=("slam.system",))  # still importing when closed
    w.close()
    assert not w.alive() and time.perf_counter() - t < 5


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the child's state from /proc (Linux)")
def test_worker_ends_when_its_parent_dies():
    import subprocess
    import sys
    from pathlib import Path

    script = ("import os\nfrom slam.runtime.feature_process import FeatureWorker\n"
              "w = FeatureWorker(preload=())\nassert w.wait_ready(60)\nprint(w.proc.pid, flush=True)\nos._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pid = int(out.stdout.strip())

    def running() -> bool:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        return "State:\tZ" not in status  # a zombie has ended

    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running()


def test_first_output_time_is_reported():
    pf = ProcessFrontend(Source(5), functools.partial(make_square))
    stats = make_runner(pf, [("tracking", Collect())], RuntimeConfig(progress=False)).run()
    pf.close()
    assert stats.first_output_s is not None and 0 < stats.first_output_s <= stats.wall_s
    stats = SyncRunner(Source(5), [("features", Square()), ("tracking", Collect())], RuntimeConfig(progress=False, threaded=False)).run()
    assert stats.first_output_s is not None and 0 < stats.first_output_s <= stats.wall_s


# -- the mapping handoff ---------------------------------------------------------------------------
class FakeMapper:
    """Records the order of prepare / optimize / commit; optimize is slow (like g2o)."""

    def __init__(self, log, optimize_s=0.0):
        self.log, self.optimize_s = log, optimize_s

    def prepare(self, job):
        self.log.append(("prepare", job))
        return {"job": job}

    def optimize(self, task):
        time.sleep(self.optimize_s)
        self.log.append(("optimized", task["job"]))

    def commit(self, task):
        self.log.append(("commit", task["job"]))


class FakeTracker:
    """Emits a keyframe job at the given frames and logs each frame it tracks."""

    def __init__(self, log, kf_frames):
        self.log, self.kf_frames = log, set(kf_frames)

    def process(self, fr):
        self.log.append(("track", fr))
        return object(), (fr if fr in self.kf_frames else None)


def _handoff_run(threaded: bool, optimize_s: float):
    from slam.runtime.schedule import DatasetSchedule
    from slam.system import MappingStage, TrackingStage

    log = []
    mapper = FakeMapper(log, optimize_s)
    schedule = DatasetSchedule(delay=3)
    stages = [("tracking", TrackingStage(FakeTracker(log, [2, 4, 10]), schedule)), ("mapping", MappingStage(mapper, schedule))]
    cfg = RuntimeConfig(threaded=threaded, progress=False)
    make_runner(range(16), stages, cfg).run()
    # optimize runs concurrently in threads: compare the order of what touches the map
    return [e for e in log if e[0] != "optimized"]


def test_handoff_commits_at_fixed_frames_in_threads_and_synchronously():
    sync = _handoff_run(False, 0.0)
    thr = _handoff_run(True, 0.05)  # optimisation slower than tracking: tracking must wait at the due frame
    assert thr == sync
    pos = {e: i for i, e in enumerate(sync)}
    # job of frame 2 is prepared before frame 3 is tracked
    assert pos[("prepare", 2)] < pos[("track", 3)]
    # ... and committed before the next job (frame 4) is prepared, not later
    assert pos[("track", 4)] < pos[("commit", 2)] < pos[("prepare", 4)]
    # job of frame 4 is due 3 frames later: committed between frames 6 and 7
    assert pos[("track", 6)] < pos[("commit", 4)] < pos[("track", 7)]
    # the last job is committed at the end of the stream
    assert sync[-1] == ("commit", 10) or pos[("commit", 10)] < pos[("track", 14)]


# -- live keyframe deferral --------------------------------------------------------------------------
def test_keyframe_policy_defers_due_keyframes_while_mapping_is_busy():
    from types import SimpleNamespace

    from slam.tracking.keyframe_policy import KeyframePolicy, KeyframePolicyConfig

    pol = KeyframePolicy(KeyframePolicyConfig(min_interval=5, max_interval=30), "mono")
    fr = SimpleNamespace(kp_depth=np.zeros(300))
    kfs = SimpleNamespace(keyframes={0: None, 1: None, 2: None})
    ids = np.full(300, -1)
    ids[:80] = np.arange(80)  # 80 tracked of a reference with 100: due (ratio 0.9), not weak (0.5)
    assert pol.need_keyframe(fr, ids, 100, 6, kfs)
    assert not pol.need_keyframe(fr, ids, 100, 6, kfs, mapping_busy=True)
    assert pol.need_keyframe(fr, ids, 100, 30, kfs, mapping_busy=True)  # max_interval still inserts
    weak = ids.copy()
    weak[40:] = -1  # 40 of 100: tracking weakens, insert even while mapping is busy
    assert pol.need_keyframe(fr, weak, 100, 6, kfs, mapping_busy=True)


def test_weak_tracking_is_a_drop_from_what_frames_have_tracked():
    """A detector that repeats fewer keypoints than the reference keyframe holds points tracks a
    steady 40 % of them: not weak (no keyframe before min_interval). A drop to half of the
    best frame since the keyframe is weak."""
    from types import SimpleNamespace

    from slam.tracking.keyframe_policy import KeyframePolicy, KeyframePolicyConfig

    pol = KeyframePolicy(KeyframePolicyConfig(min_interval=5, max_interval=30, weak_ratio=0.5), "rgbd")
    fr = SimpleNamespace(kp_depth=np.full(1000, 5.0))  # every keypoint far: the close-point rule stays out
    kfs = SimpleNamespace(keyframes={0: None, 1: None, 2: None})
    ids = np.full(1000, -1)
    ids[:320] = np.arange(320)  # 320 tracked of a reference keyframe with 800 points
    assert pol.need_keyframe(fr, ids, 800, 2, kfs)  # the old yardstick (ref alone): weak
    assert not pol.need_keyframe(fr, ids, 800, 2, kfs, recent_best=350)  # steady yield: not weak
    assert pol.need_keyframe(fr, ids, 800, 2, kfs, recent_best=700)  # 320 after 700: weak
    assert pol.need_keyframe(fr, ids, 800, 5, kfs, recent_best=350)  # due by min_interval and the ratio
    few = np.full(1000, -1)
    few[:70] = np.arange(70)  # below weak_min_tracked (75): weak whatever the yardstick
    assert pol.need_keyframe(fr, few, 100, 2, kfs, recent_best=80)


def test_mapping_load_counts_jobs_until_mapping_finishes():
    from slam.runtime.schedule import LiveSchedule
    from slam.system import MappingStage, TrackingStage

    load = LiveSchedule()
    tracker = FakeTracker([], kf_frames=[1])
    ts = TrackingStage(tracker, load)
    assert not load.mapping_busy()
    job = ts.process(1)
    assert job == 1 and load.mapping_busy()  # what the tracker asks before a keyframe that is merely due
    MappingStage(SimpleMapper(), load).process(job)
    assert not load.mapping_busy()


class SimpleMapper:
    def process(self, job):
        return None


def test_mapping_yields_to_a_frame_being_tracked():
    """Live runs: mapping's yield point waits until tracking has finished its frame (or
    max_wait_s), and returns at once when no frame is being tracked."""
    import threading

    from slam.runtime.schedule import LiveSchedule
    from slam.system import MappingStage

    load = LiveSchedule(max_wait_s=30.0)
    order: list[str] = []
    in_frame = threading.Event()
    release = threading.Event()

    def tracking():
        with load.tracking():
            in_frame.set()
            release.wait(10)
            order.append("frame tracked")

    class YieldingMapper:
        schedule = load  # the mapper's schedule is the run's (slam.mapping.local_mapper.LocalMapper)

        def process(self, job):
            self.schedule.yield_point()
            order.append("mapping work")

    mapper = YieldingMapper()
    stage = MappingStage(mapper, load)
    t = threading.Thread(target=tracking)
    t.start()
    assert in_frame.wait(10)
    m = threading.Thread(target=stage.process, args=(None,))
    m.start()
    m.join(0.2)
    assert m.is_alive() and order == []  # mapping waits while the frame is tracked
    release.set()
    t.join(10)
    m.join(10)
    assert order == ["frame tracked", "mapping work"]
    assert load.n_yields == 1 and load.yield_ms > 0
    load.yield_point()  # no frame in progress: no wait
    assert load.n_yields == 1
    short = LiveSchedule(max_wait_s=0.01)
    with short.tracking():
        short.yield_point()  # the wait is bounded even if tracking never finishes
    assert short.n_yields == 1


def test_child_limits_numpy_blas_to_the_runs_setting():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from slam.runtime.feature_process import FeatureWorker

    library_default = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    if not library_default or max(library_default) == 1:
        pytest.skip("numpy's BLAS has one thread by default here: nothing to tell apart")
    worker = FeatureWorker(queue_size=8, threads=1)
    try:
        seen = []
        for n in (1, 0, 1):  # one child serves runs with different settings, each with its own
            pf = ProcessFrontend(Source(2), functools.partial(make_blas_threads), blas_threads=n, worker=worker)
            seen.append([it.payload["blas"] for it in pf])
            pf.close()
        assert seen[0] == seen[2] == [[1] * len(library_default)] * 2
        assert seen[1] == [library_default] * 2  # 0: the library's own setting, restored after the run
    finally:
        worker.close()


def test_main_process_torch_threads_leave_a_core_to_the_feature_process():
    import torch

    from slam.runtime.blas import main_process_torch_threads, torch_threads

    assert main_process_torch_threads(3, feature_process=False) == 3  # explicit wins
    assert main_process_torch_threads(0, feature_process=False) == 0  # torch's default
    assert main_process_torch_threads(0, feature_process=True, cpu_count=2) == 1
    assert main_process_torch_threads(0, feature_process=True, cpu_count=8) == 7
    assert main_process_torch_threads(0, feature_process=True, cpu_count=1) == 1
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before
