"""The background global BA yields to the frame path (slam.runtime.schedule.Foreground,
LoopClosing._gba_pause): it waits while a frame is tracked or a keyframe mapped."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from slam.loop.closing import LoopClosing
from slam.loop.config import LoopClosingConfig
from slam.optim.ba import BAStop
from slam.runtime.schedule import DatasetSchedule, Foreground, LiveSchedule, MappingSchedule


def test_wait_idle_returns_at_once_when_nothing_is_busy():
    fg = Foreground()
    fg.wait_idle(10.0)  # would hang the test if it waited
    assert fg.n_waits == 0


def test_wait_idle_waits_until_the_frame_path_is_done():
    fg = Foreground()
    entered, release, order = threading.Event(), threading.Event(), []

    def frame_path():
        with fg.busy():
            entered.set()
            release.wait(10.0)
            order.append("frame done")

    t = threading.Thread(target=frame_path)
    t.start()
    entered.wait(10.0)
    waiter = threading.Thread(target=lambda: (fg.wait_idle(30.0), order.append("background resumed")))
    waiter.start()
    release.set()
    waiter.join(30.0)
    t.join(30.0)
    assert order == ["frame done", "background resumed"]
    assert fg.n_waits == 1


def test_wait_idle_gives_up_after_its_longest_wait():
    fg = Foreground()
    with fg.busy():
        fg.wait_idle(0.01)  # still busy: returns after at most the longest wait
        assert fg.n_waits == 1


@pytest.mark.parametrize("schedule", [DatasetSchedule(1), LiveSchedule()], ids=["dataset", "live"])
def test_tracking_and_mapping_jobs_count_as_the_frame_path(schedule):
    seen = []

    class Mapper:
        def prepare(self, job):
            seen.append(schedule.foreground._busy)
            return None

        def process(self, item):
            seen.append(schedule.foreground._busy)

    with schedule.tracking():
        seen.append(schedule.foreground._busy)
    schedule.run_job(Mapper(), schedule.hand_over("job", 0))
    assert seen == [1, 1] and schedule.foreground._busy == 0


@pytest.mark.parametrize("schedule", [DatasetSchedule(1), LiveSchedule()], ids=["dataset", "live"])
def test_the_whole_frame_of_the_tracking_stage_counts_as_the_frame_path(schedule):
    """The tracking thread's work around the tracking itself (the mapping write-backs before a
    frame, loop closing's per-frame work, the hand-over of a keyframe job) also keeps the
    background global BA waiting."""
    from slam.system import TrackingStage

    seen = {}
    busy = lambda: schedule.foreground._busy  # noqa: E731
    before_frame, hand_over = schedule.before_frame, schedule.hand_over

    def spy_before_frame(frame_no):
        seen["write-backs"] = busy()
        before_frame(frame_no)

    def spy_hand_over(job, frame_no):
        seen["hand-over"] = busy()
        return hand_over(job, frame_no)

    def track(fr):
        seen["tracking"] = busy()
        return None, "job"  # (result, keyframe job)

    schedule.before_frame, schedule.hand_over = spy_before_frame, spy_hand_over
    loop = SimpleNamespace(before_frame=lambda n: seen.setdefault("loop closing", busy()))
    TrackingStage(SimpleNamespace(process=track), schedule, loop).process(None)
    assert seen == {"write-backs": 1, "loop closing": 1, "tracking": 1, "hand-over": 1}
    assert schedule.foreground._busy == 0


def test_the_no_op_schedule_never_waits():
    MappingSchedule().background_yield(10.0)  # unit tests of the mapper: returns at once


def _job(stopped: bool = False) -> dict:
    stop = BAStop()
    if stopped:
        stop.request()
    return {"due": 140, "queued_at": 100, "task": SimpleNamespace(stop=stop)}


def _closing(live: bool, frame_no: int, **cfg) -> SimpleNamespace:
    calls = []
    sched = SimpleNamespace(background_yield=lambda s: calls.append(s))
    return SimpleNamespace(live=live, _frame_no=frame_no, cfg=LoopClosingConfig(**cfg), mapping_schedule=sched,
                           calls=calls)


@pytest.mark.parametrize("frame_no,waits", [(100, True), (129, True), (130, False), (140, False)])
def test_dataset_runs_stop_yielding_in_the_last_quarter_before_the_global_ba_is_due(frame_no, waits):
    """Queued at frame 100, due at 140: it yields up to frame 129, so that it is done when
    tracking reaches frame 140 (tracking would wait for it there)."""
    lc = _closing(False, frame_no)
    LoopClosing._gba_pause(lc, _job())
    assert lc.calls == ([pytest.approx(LoopClosingConfig().global_ba_yield_max_ms / 1e3)] if waits else [])


def test_live_runs_always_yield_and_the_longest_wait_is_a_setting():
    lc = _closing(True, 10_000, global_ba_yield_max_ms=20.0)
    LoopClosing._gba_pause(lc, _job())
    assert lc.calls == [pytest.approx(0.02)]


@pytest.mark.parametrize("live", [False, True])
def test_a_global_ba_told_to_stop_no_longer_waits(live):
    """A new loop (or the end of the run) stops the running global BA and waits for it: it must
    not sit out the frame path first."""
    lc = _closing(live, 100)
    LoopClosing._gba_pause(lc, _job(stopped=True))
    assert lc.calls == []
