"""Tests of the threaded runtime (slam/runtime): determinism, live dropping, errors, stopping,
statistics, progress display, and g2o bundle adjustment running without the GIL."""
from __future__ import annotations

import io
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from slam.runtime.config import RuntimeConfig
from slam.runtime.runner import StageError, handle_signals
from slam.runtime.threaded import make_runner
from slam.runtime.progress import ProgressDisplay, format_progress
from slam.runtime.stats import RunStats, StatsCollector
from slam.runtime.runner import SyncRunner


# ------------------------------------------------------------------------------------------
# a deterministic toy "SLAM": features -> tracking (reads the map) -> mapping (writes the map)
# ------------------------------------------------------------------------------------------
@dataclass
class ToyFrame:
    index: int
    value: float


class ToyMap:
    def __init__(self) -> None:
        self.points: list[float] = []


class ToyFeatures:
    def __init__(self, jitter_seed: int) -> None:
        self.rng = np.random.default_rng(jitter_seed)

    def process(self, frame: ToyFrame):
        time.sleep(self.rng.uniform(0, 0.002))  # timing noise must not change results
        return (frame.index, frame.value * 2.0)


class ToyTracker:
    """Stateful: its output depends on the map at the moment it runs and on its own history."""

    def __init__(self, toy_map: ToyMap) -> None:
        self.map = toy_map
        self.last = 0.0

    def process(self, item):
        index, feat = item
        estimate = 0.5 * self.last + feat - 0.1 * sum(self.map.points[-5:]) + len(self.map.points)
        self.last = estimate
        return {"index": index, "estimate": estimate, "keyframe": index % 3 == 0}


class ToyMapper:
    """Its map edit is split like LocalMapper's: prepare, optimise (slow, off the map), commit."""

    def __init__(self, toy_map: ToyMap, jitter_seed: int) -> None:
        self.map = toy_map
        self.rng = np.random.default_rng(jitter_seed)
        self.closed = False

    def prepare(self, result):
        return {"estimate": result["estimate"]} if result["keyframe"] else None

    def optimize(self, task):
        time.sleep(self.rng.uniform(0, 0.004))  # "bundle adjustment" before the map changes

    def commit(self, task):
        self.map.points.append(task["estimate"])

    def process(self, result):
        task = self.prepare(result)
        if task is not None:
            self.optimize(task)
            self.commit(task)
        return (result["index"], round(result["estimate"], 9), len(self.map.points))

    def flush(self):
        return [("final", len(self.map.points), round(sum(self.map.points), 9))]

    def close(self):
        self.closed = True


class ToyTrackingStage:
    """Tracking under a mapping schedule, as slam.system.TrackingStage: its estimates are the run."""

    def __init__(self, tracker: ToyTracker, schedule) -> None:
        self.tracker, self.schedule, self.estimates = tracker, schedule, []

    def process(self, item):
        n = len(self.estimates)
        self.schedule.before_frame(n)
        out = self.tracker.process(item)
        self.estimates.append(out["estimate"])
        return self.schedule.hand_over(out, n) if out["keyframe"] else None

    def flush(self):
        self.schedule.finish()
        return []


class ToyMappingStage:
    def __init__(self, mapper: ToyMapper, schedule) -> None:
        self.mapper, self.schedule = mapper, schedule

    def process(self, item):
        self.schedule.run_job(self.mapper, item)

    def close(self):
        self.schedule.close()
        self.mapper.close()


def toy_stages(seed: int):
    m = ToyMap()
    return [("features", ToyFeatures(seed)), ("tracking", ToyTracker(m)), ("mapping", ToyMapper(m, seed + 1))]


def scheduled_toy_stages(seed: int, delay: int = 2):
    from slam.runtime.schedule import DatasetSchedule

    m, schedule = ToyMap(), DatasetSchedule(delay)
    mapper = ToyMapper(m, seed + 1)
    return [("features", ToyFeatures(seed)), ("tracking", ToyTrackingStage(ToyTracker(m), schedule)),
            ("mapping", ToyMappingStage(mapper, schedule))], schedule


def toy_source(n: int):
    return [ToyFrame(i, float(np.sin(i))) for i in range(n)]


def run_toy(cfg: RuntimeConfig, n: int = 60, seed: int = 0):
    outs: list = []
    stages = toy_stages(seed)
    stats = make_runner(toy_source(n), stages, cfg, on_output=outs.append).run()
    return outs, stats, stages


def run_scheduled_toy(cfg: RuntimeConfig, n: int = 60, seed: int = 0):
    stages, schedule = scheduled_toy_stages(seed)
    stats = make_runner(toy_source(n), stages, cfg).run()
    return stages[1][1].estimates, stats, stages, schedule


def slam_threads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("slam-") and t.is_alive()]


def test_threaded_equals_synchronous():
    """Dataset mode: with the mapping schedule ordering the map edits (the handoff), the
    threaded run equals the synchronous one whatever the timing of its stages."""
    ref, ref_stats, _, _ = run_scheduled_toy(RuntimeConfig(threaded=False, progress=False))
    assert ref_stats.mode == "sync" and ref_stats.status == "completed"
    assert len(ref) == 60
    for seed in (1, 2):
        est, stats, stages, schedule = run_scheduled_toy(RuntimeConfig(threaded=True, queue_size=4, progress=False), seed=seed)
        assert est == ref
        assert stats.mode == "threaded" and stats.status == "completed"
        assert stats.items_read == 60 and stats.items_done == 60 and stats.dropped_total == 0
        assert stats.latency.count == 60
        assert stats.counts["mapping"]["in"] == 20  # one keyframe job every third frame
        assert stages[2][1].mapper.closed  # close() called
        # tracking waited for mapping at the frames the schedule fixes (every frame once a job was issued)
        assert len(schedule.wait_ms) >= 58
    assert not slam_threads_alive()


def test_sync_runner_is_the_same_interface():
    outs: list = []
    runner = SyncRunner(toy_source(10), toy_stages(0), RuntimeConfig(progress=False), on_output=outs.append)
    stats = runner.run()
    assert isinstance(stats, RunStats) and stats.items_done == 10 and len(outs) == 11
    with pytest.raises(RuntimeError, match="only run once"):
        runner.run()


def test_unscheduled_mapping_still_delivers_everything_in_order():
    outs, stats, stages = run_toy(RuntimeConfig(progress=False), n=40)
    assert [o[0] for o in outs[:-1]] == list(range(40))
    assert stats.counts["mapping"]["in"] == 40 and stages[2][1].closed
    assert outs[-1][0] == "final"


# ------------------------------------------------------------------------------------------
# live mode
# ------------------------------------------------------------------------------------------
class Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def process(self, item):
        time.sleep(self.seconds)
        return item


class Passthrough:
    def process(self, item):
        return item


def paced_source(n: int, period_s: float):
    for i in range(n):
        time.sleep(period_s)
        yield ToyFrame(i, float(i))


def test_live_mode_drops_old_frames_and_counts_them():
    outs: list = []
    stages = [("features", Slow(0.02)), ("tracking", Passthrough()), ("mapping", Passthrough())]
    cfg = RuntimeConfig(live=True, progress=False)
    stats = make_runner(paced_source(60, 0.002), stages, cfg, on_output=outs.append).run()
    assert stats.status == "completed" and stats.live
    assert stats.dropped_total > 0
    got = [o.index for o in outs]
    # every frame read was either tracked or dropped in exactly one queue
    assert stats.items_read == 60
    assert len(got) + stats.dropped_total == 60
    dropped = sorted(i for ids in stats.dropped_ids.values() for i in ids)
    assert sorted(dropped + got) == list(range(60))
    assert got == sorted(got)  # order kept
    assert got[-1] == 59  # the newest frame is never lost (end of stream is never dropped)
    assert stats.queues["features"].policy == "latest" and stats.queues["features"].capacity == 1
    assert stats.queues["mapping"].policy == "block"  # mapping jobs are never dropped
    assert stats.counts["features"]["dropped"] == stats.queues["features"].dropped
    assert not slam_threads_alive()


def test_dataset_mode_never_drops_even_with_a_slow_stage():
    outs: list = []
    stages = [("features", Slow(0.005)), ("tracking", Passthrough())]
    stats = make_runner(paced_source(30, 0.0), stages, RuntimeConfig(queue_size=2, progress=False), on_output=outs.append).run()
    assert [o.index for o in outs] == list(range(30))
    assert stats.dropped_total == 0
    assert stats.queues["features"].max_depth <= 2


class Gate:
    """A stage that holds its first item until released (a loop closer busy with a global BA)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.released = None
        self.seen: list = []

    def process(self, item):
        if not self.seen:
            self.released = self.release.wait(10.0)  # False: nobody released it
        self.seen.append(item.index)
        return None


class ReleaseAt:
    """Passes items on, and releases the gate when it has passed ``n`` of them: only possible if
    nothing upstream waits for the gated stage."""

    def __init__(self, gate: Gate, n: int) -> None:
        self.gate, self.n, self.count = gate, n, 0

    def process(self, item):
        self.count += 1
        if self.count == self.n:
            self.gate.release.set()
        return item


@pytest.mark.parametrize("live", [False, True])
def test_a_busy_loop_closer_never_holds_up_mapping_and_loses_no_wake_up(live):
    """The loop-closing queue is unbounded and lossless: while the loop closer works on one item
    (seconds of global BA), mapping hands it every later one without waiting (a bounded queue of
    2 would block the third put, and the gate would never open), in order, none dropped."""
    gate = Gate()
    stages = [("mapping", ReleaseAt(gate, 20)), ("loop_closing", gate)]
    cfg = RuntimeConfig(live=live, queue_size=2, progress=False)
    stats = make_runner(paced_source(20, 0.0), stages, cfg).run()
    assert stats.status == "completed"
    assert gate.released, "mapping waited for the loop closer"
    assert gate.seen == list(range(20))
    q = stats.queues["loop_closing"]
    assert q.policy == "unbounded" and q.capacity == 0 and q.dropped == 0 and q.max_depth >= 3


# ------------------------------------------------------------------------------------------
# errors, stopping, hangs
# ------------------------------------------------------------------------------------------
class FailAt:
    def __init__(self, at: int) -> None:
        self.at = at
        self.closed = False

    def process(self, item):
        if item.index == self.at:
            raise ValueError(f"bad frame {item.index}")
        return item

    def close(self):
        self.closed = True


@pytest.mark.parametrize("threaded", [True, False])
def test_stage_exception_is_reraised_with_stage_name(threaded):
    failing = FailAt(5)
    stages = [("features", Passthrough()), ("tracking", failing), ("mapping", Passthrough())]
    pipe = make_runner(toy_source(1000), stages, RuntimeConfig(threaded=threaded, progress=False))
    with pytest.raises(StageError) as info:
        pipe.run()
    assert info.value.stage == "tracking"
    assert isinstance(info.value.original, ValueError)
    assert isinstance(info.value.__cause__, ValueError)
    assert "tracking" in str(info.value) and "bad frame 5" in str(info.value)
    assert failing.closed
    assert pipe.result.status == "failed" and pipe.result.error_stage == "tracking"
    assert not slam_threads_alive()


def test_source_and_output_errors_are_named():
    def broken_source():
        yield ToyFrame(0, 0.0)
        raise OSError("disk gone")

    with pytest.raises(StageError) as info:
        make_runner(broken_source(), [("tracking", Passthrough())], RuntimeConfig(progress=False)).run()
    assert info.value.stage == "reader" and isinstance(info.value.original, OSError)

    def bad_output(_):
        raise KeyError("sink")

    with pytest.raises(StageError) as info:
        make_runner(toy_source(5), [("tracking", Passthrough())], RuntimeConfig(progress=False), on_output=bad_output).run()
    assert info.value.stage == "output"
    assert not slam_threads_alive()


@pytest.mark.parametrize("threaded", [True, False])
def test_stop_mid_run_returns_partial_results(threaded):
    outs: list = []
    endless = (ToyFrame(i, float(i)) for i in itertools.count())
    stages = [("features", Slow(0.001)), ("tracking", Passthrough()), ("mapping", Passthrough())]

    def on_output(item):
        outs.append(item.index)
        if len(outs) == 20:
            pipe.stop()

    pipe = make_runner(endless, stages, RuntimeConfig(threaded=threaded, progress=False), on_output=on_output)
    stats = pipe.run()
    assert stats.status == "stopped"
    assert len(outs) >= 20
    assert outs == list(range(len(outs)))  # a prefix of the stream, nothing lost in between
    assert stats.items_done >= 20
    assert not slam_threads_alive()


def test_sigint_stops_cleanly_and_second_sigint_aborts():
    outs: list = []
    endless = (ToyFrame(i, float(i)) for i in itertools.count())
    pipe = make_runner(endless, [("tracking", Slow(0.001))], RuntimeConfig(progress=False))

    def on_output(item):
        outs.append(item.index)
        if len(outs) == 10:
            os.kill(os.getpid(), signal.SIGINT)

    pipe.on_output = on_output
    before = signal.getsignal(signal.SIGINT)
    with handle_signals(pipe) as state:
        stats = pipe.run()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    assert stats.status == "stopped" and len(outs) >= 10
    assert state.name == "SIGINT" and state.exit_code == 130

    # two Ctrl-C: the second raises KeyboardInterrupt out of run(), threads still end
    pipe2 = make_runner((ToyFrame(i, 0.0) for i in itertools.count()), [("tracking", Slow(0.001))], RuntimeConfig(progress=False))
    n = {"k": 0}

    def twice(item):
        n["k"] += 1
        if n["k"] in (5, 6):
            os.kill(os.getpid(), signal.SIGINT)

    pipe2.on_output = twice
    with pytest.raises(KeyboardInterrupt):
        with handle_signals(pipe2):
            # keep items flowing after the first stop so the second signal arrives
            pipe2.stop = lambda: None  # type: ignore[method-assign]
            pipe2.run()
    assert signal.getsignal(signal.SIGINT) is before
    time.sleep(0.05)
    assert not slam_threads_alive()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_run_like_ctrl_c(signum):
    outs: list = []
    pipe = make_runner((ToyFrame(i, float(i)) for i in itertools.count()), [("tracking", Slow(0.001))], RuntimeConfig(progress=False))

    def on_output(item):
        outs.append(item.index)
        if len(outs) == 10:
            os.kill(os.getpid(), signum)

    pipe.on_output = on_output
    before = signal.getsignal(signum)
    with handle_signals(pipe) as state:
        stats = pipe.run()
    assert signal.getsignal(signum) is before
    assert stats.status == "stopped" and len(outs) >= 10
    assert state.signum == signum and state.exit_code == 128 + signum
    assert not slam_threads_alive()


def test_join_has_a_timeout_when_a_stage_hangs():
    release = threading.Event()

    class Hang:
        def process(self, item):
            release.wait(30)
            return item

    pipe = make_runner(toy_source(3), [("tracking", Hang())], RuntimeConfig(join_timeout_s=0.3, progress=False))
    timer = threading.Timer(0.2, pipe.stop)
    timer.start()
    try:
        stats = pipe.run()
        assert stats.status == "stopped"
        assert stats.hung_threads == ["slam-tracking"]
    finally:
        release.set()
        timer.cancel()
    time.sleep(0.1)
    assert not slam_threads_alive()


def test_stall_watchdog_names_the_stuck_stage():
    release = threading.Event()

    class Hang:
        def process(self, item):
            release.wait(30)
            return item

    cfg = RuntimeConfig(stall_timeout_s=0.3, join_timeout_s=0.3, progress=False)
    try:
        with pytest.raises(StageError) as info:
            make_runner(toy_source(3), [("features", Passthrough()), ("tracking", Hang())], cfg).run()
        assert info.value.stage == "tracking" and isinstance(info.value.original, TimeoutError)
    finally:
        release.set()


@pytest.mark.parametrize("threaded", [True, False])
def test_invalid_pipelines_are_rejected(threaded):
    cfg = RuntimeConfig(threaded=threaded)
    with pytest.raises(ValueError, match="unique"):
        make_runner([], [("a", Passthrough()), ("a", Passthrough())], cfg)
    with pytest.raises(ValueError, match="reserved"):
        make_runner([], [("reader", Passthrough())], cfg)
    with pytest.raises(TypeError, match="process"):
        make_runner([], [("a", object())], cfg)


# ------------------------------------------------------------------------------------------
# statistics and progress
# ------------------------------------------------------------------------------------------
def test_run_stats_to_dict_summary_and_table(caplog):
    with caplog.at_level(logging.INFO, logger="slam.runtime"):
        _, stats, _ = run_toy(RuntimeConfig(progress=False), n=20)
    d = stats.to_dict()
    json.dumps(d)  # serialisable for metrics.json
    assert set(d["stages"]) == {"features", "tracking", "mapping"}
    for k in ("mean_ms", "p50_ms", "p95_ms", "max_ms"):
        assert d["stages"]["features"][k] >= 0
    assert d["latency"]["count"] == 20 and d["latency"]["p95_ms"] >= d["latency"]["p50_ms"] > 0
    assert set(d["queues"]) == {"features", "tracking", "mapping", "output"}
    assert "dropped_ids" not in d and "dropped_ids" in stats.to_dict(include_dropped_ids=True)
    line = stats.summary()
    assert "20/20" in line and "dropped 0" in line
    table = stats.table()
    assert "frame->pose" in table and "tracking" in table and "policy" in table
    assert any("runtime:" in r.getMessage() for r in caplog.records)


def test_timing_summary_percentiles():
    c = StatsCollector()
    for v in range(1, 101):
        c.record_stage("s", float(v))
    c.record_latency(0.0, 0.25)
    s = c.summarize(mode="sync", live=False, status="completed", wall_s=2.0, items_read=100, items_done=100)
    assert s.stages["s"].mean_ms == pytest.approx(50.5)
    assert s.stages["s"].p50_ms == pytest.approx(50.5)
    assert s.stages["s"].p95_ms == pytest.approx(95.05)
    assert s.stages["s"].max_ms == 100.0
    assert s.latency.mean_ms == pytest.approx(250.0)
    assert s.fps == pytest.approx(50.0)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_display_tty_and_log_modes(caplog):
    text = format_progress(120, 798, 14.8, {"state": "OK", "keyframes": 12, "map_points": 3456, "extra": 1.5})
    assert text.startswith("[120/798  15%]") and "OK" in text and "KF 12" in text and "MP 3456" in text and "extra 1.5" in text

    tty = FakeTTY()
    p = ProgressDisplay(total=10, stream=tty, refresh_hz=0)
    for i in range(3):
        p.update(i, {"state": "OK"})
    p.close(3, {"state": "OK"})
    out = tty.getvalue()
    assert out.count("\r") == 4 and out.endswith("\n") and "[ 3/10" in out

    pipe_stream = io.StringIO()  # not a TTY: nothing drawn, a log line instead
    with caplog.at_level(logging.INFO, logger="slam.progress"):
        p = ProgressDisplay(total=10, stream=pipe_stream, log_interval_s=0.0)
        p.update(5, {"state": "LOST"})
    assert pipe_stream.getvalue() == ""
    assert any("LOST" in r.getMessage() for r in caplog.records)

    silent = FakeTTY()
    ProgressDisplay(total=10, stream=silent, enabled=False).update(1)
    assert silent.getvalue() == ""


def test_progress_fn_feeds_the_display(caplog):
    calls = {"n": 0}

    def progress_fn():
        calls["n"] += 1
        return {"state": "OK", "keyframes": 1, "map_points": 2}

    cfg = RuntimeConfig(progress=True, progress_log_s=0.0)
    with caplog.at_level(logging.INFO, logger="slam.progress"):
        make_runner(paced_source(10, 0.01), [("tracking", Passthrough())], cfg, progress_fn=progress_fn, total=10).run()
    assert calls["n"] >= 2
    assert any("[10/10" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------
# g2o bundle adjustment releases the GIL: another thread keeps running during optimize()
# ------------------------------------------------------------------------------------------
def build_ba_problem(n_cams: int = 8, n_points: int = 300, seed: int = 0):
    g2o = pytest.importorskip("g2opy")
    rng = np.random.default_rng(seed)
    opt = g2o.SparseOptimizer()
    opt.set_algorithm(g2o.OptimizationAlgorithmLevenberg(g2o.BlockSolverSE3(g2o.LinearSolverEigenSE3())))
    fx, fy, cx, cy = 500.0, 500.0, 320.0, 240.0
    points_world = rng.uniform([-2, -2, 4], [2, 2, 8], (n_points, 3))
    for c in range(n_cams):
        v = g2o.VertexSE3Expmap()
        v.set_id(c)
        cam_from_world_t = -np.array([0.1 * c, 0.0, 0.0])
        v.set_estimate(g2o.SE3Quat(np.eye(3), cam_from_world_t + rng.normal(0, 0.01, 3)))
        v.set_fixed(c < 2)
        opt.add_vertex(v)
    for j, p in enumerate(points_world):
        vp = g2o.VertexPointXYZ()
        vp.set_id(n_cams + j)
        vp.set_marginalized(True)
        vp.set_estimate(p + rng.normal(0, 0.05, 3))
        opt.add_vertex(vp)
        for c in range(n_cams):
            pc = p - np.array([0.1 * c, 0.0, 0.0])
            uv = np.array([fx * pc[0] / pc[2] + cx, fy * pc[1] / pc[2] + cy]) + rng.normal(0, 0.5, 2)
            e = g2o.EdgeSE3ProjectXYZ()
            e.set_vertex(0, vp)
            e.set_vertex(1, opt.vertex(c))
            e.set_measurement(uv)
            e.set_information(np.eye(2))
            e.set_robust_kernel(g2o.RobustKernelHuber(np.sqrt(5.991)))
            e.fx, e.fy, e.cx, e.cy = fx, fy, cx, cy
            opt.add_edge(e)
    opt.initialize_optimization()
    return opt


def count_main_thread_iterations_during(fn) -> int:
    """Run fn in a worker thread; return how many pure-Python loop iterations the main thread
    made between the worker entering and leaving fn."""
    counter = {"n": 0}
    marks: dict = {}
    go, done = threading.Event(), threading.Event()

    def worker():
        go.wait()
        marks["start"] = counter["n"]
        fn()
        marks["end"] = counter["n"]
        done.set()

    th = threading.Thread(target=worker, name="ba-worker")
    th.start()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # forced GIL hand-overs are tiny, so only a released GIL lets us count far
    try:
        go.set()
        while not done.is_set():
            counter["n"] += 1
    finally:
        sys.setswitchinterval(old)
        th.join(30)
    return marks["end"] - marks["start"]


def test_g2o_optimize_lets_another_thread_run():
    opt = build_ba_problem()
    opt.compute_active_errors()
    chi2_before = opt.active_robust_chi2()
    during_ba = count_main_thread_iterations_during(lambda: opt.optimize(60))
    opt.compute_active_errors()
    assert opt.active_robust_chi2() < 0.5 * chi2_before  # it did optimise
    # control: a C call that holds the GIL for its whole duration
    during_gil_held = count_main_thread_iterations_during(lambda: sum(range(10_000_000)))
    assert during_ba > 50_000
    assert during_ba > 4 * during_gil_held


def test_live_pipeline_with_a_video_file_standing_in_for_the_camera(tmp_path):
    """A paced video file (realtime=True, 100 fps) feeds a live pipeline whose tracking is slower
    than the camera: frames are dropped and counted, latency stays bounded by one frame of work."""
    import cv2

    from slam.io.camera import CameraSource

    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 100.0, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), i * 5, np.uint8))
    writer.release()
    outs: list = []
    with CameraSource(str(video), realtime=True) as cam:
        stages = [("features", Passthrough()), ("tracking", Slow(0.03)), ("mapping", Passthrough())]
        stats = make_runner(cam, stages, RuntimeConfig(live=True, progress=False), on_output=outs.append).run()
    assert stats.items_read == 40
    assert stats.dropped_total > 0 and len(outs) + stats.dropped_total == 40
    assert outs[-1].index == 39
    assert stats.latency.count == len(outs)
    assert all(o.depth is None and o.image.shape == (48, 64, 3) for o in outs)
