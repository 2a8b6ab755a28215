"""Live runs: mapping defers to new keyframes (skip of queued jobs' optional work, BA stop), and
numpy's BLAS thread limit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import transform_points
from slam.mapping.local_mapper import LocalMapper, MappingConfig
from slam.mapping.map import Keyframe, Map
from slam.optim.ba import BAProblem, BAStop
from slam.runtime.schedule import LiveSchedule, MappingSchedule
from slam.system import MappingStage
from slam.tracking.tracker import KeyframeJob
from slam.types import Features

CAM = PinholeCamera(width=640, height=480, fx=520.0, fy=520.0, cx=320.0, cy=240.0)


def _mapper(schedule=None, **cfg) -> LocalMapper:
    """A real two-keyframe RGB-D map: 60 points in front of both cameras (0.1 m apart), each
    keyframe observing every point at its exact projection with its depth, so fusion runs on
    real keypoints and the local BA problem is a real one."""
    rng = np.random.default_rng(0)
    m = Map(32, True)
    xyz = np.c_[rng.uniform(-1, 1, 60), rng.uniform(-0.7, 0.7, 60), rng.uniform(2, 4, 60)]
    desc = rng.integers(0, 256, (60, 32), dtype=np.uint8)
    ids = None
    for k in range(2):
        cam_from_world = np.eye(4)
        cam_from_world[0, 3] = -0.1 * k
        pc = transform_points(cam_from_world, xyz)
        uv = CAM.project_undistorted(pc)
        n = len(uv)
        kf = Keyframe(
            id=m.new_keyframe_id(), frame_index=k, timestamp=float(k), cam_from_world=cam_from_world,
            features=Features(torch.as_tensor(uv, dtype=torch.float32), torch.ones(n), torch.as_tensor(desc), (640, 480)),
            kp_uv=uv, kp_depth=pc[:, 2], kp_sigma2=np.ones(n), kp_color=np.zeros((n, 3), np.uint8),
            desc=desc, point_ids=np.full(n, -1, dtype=np.int64))
        m.add_keyframe(kf)
        if ids is None:
            ids = m.add_points(xyz, desc, np.zeros((n, 3), np.uint8), kf.id)
        m.add_observations(kf.id, np.arange(n), ids)
    return LocalMapper(MappingConfig(**cfg), CAM, m, matcher=None, mode="rgbd", schedule=schedule)


def _job(kf_id: int = 1) -> KeyframeJob:
    return KeyframeJob(kf_id, np.zeros(0, dtype=np.int64))


class QueuedSchedule(MappingSchedule):
    """A schedule whose backlog the test sets, with a BA stop handle."""

    def __init__(self) -> None:
        self.ba_stop = BAStop()
        self.queued = False

    def backlog(self) -> bool:
        return self.queued


def test_live_schedule_requests_ba_stop_when_a_second_job_is_queued():
    load = LiveSchedule()
    load.add(1)
    assert load.mapping_busy() and not load.backlog() and not load.ba_stop.requested
    load.add(1)  # tracking hands over another keyframe while the first is worked on
    assert load.backlog() and load.ba_stop.requested
    load.add(-1)
    assert not load.backlog()


def test_the_mapper_asks_its_schedule_and_the_default_never_skips():
    load = LiveSchedule()
    mapper = _mapper(load)
    assert mapper.schedule is load and mapper.schedule.ba_stop is load.ba_stop
    MappingStage(mapper, load)  # the stage patches nothing into the mapper
    assert mapper.schedule is load
    dataset_mapper = _mapper()  # dataset runs: nothing depends on timing
    assert dataset_mapper.schedule.backlog() is False and dataset_mapper.schedule.ba_stop is None


def test_prepare_skips_fusion_and_ba_when_another_job_is_queued():
    sched = QueuedSchedule()
    mapper = _mapper(sched)
    task = mapper.prepare(_job())
    assert isinstance(task.problem, BAProblem) and len(task.problem.point_ids) == 60
    assert len(mapper.timings["fuse"]) == 1 and mapper.n_skipped == 0
    sched.queued = True
    task = mapper.prepare(_job())
    assert task is not None and task.problem is None
    assert len(mapper.timings["fuse"]) == 1  # no second fusion
    assert mapper.n_skipped == 1


def test_prepare_ignores_backlog_when_switched_off():
    load = LiveSchedule(skip_when_queued=False)
    load.add(2)  # a job waits behind this one
    mapper = _mapper(load)
    assert not load.backlog() and load.ba_stop is None
    task = mapper.prepare(_job())
    assert isinstance(task.problem, BAProblem) and mapper.n_skipped == 0


def test_optimize_skips_ba_for_a_job_that_arrived_after_prepare(monkeypatch):
    import slam.mapping.local_mapper as lm

    ran = []

    class Result:
        aborted, iterations = False, 10

    for solver in ("bundle_adjust", "bundle_adjust_schur"):  # whichever mapping.ba_solver picks
        monkeypatch.setattr(lm, solver, lambda *a, **k: ran.append(k.get("stop")) or Result())
    sched = QueuedSchedule()
    mapper = _mapper(sched)
    sched.ba_stop.request()  # left over from an earlier job: reset before this BA
    task = mapper.prepare(_job())
    sched.queued = True
    mapper.optimize(task)
    assert ran == [] and task.result is None and mapper.n_ba_aborted == 1
    sched.queued = False
    mapper.optimize(task)
    assert ran == [sched.ba_stop] and not sched.ba_stop.requested  # reset, then armed for the solver
    assert isinstance(task.result, Result) and mapper.n_ba_aborted == 1


def test_a_real_local_ba_runs_and_commits_on_the_real_map():
    mapper = _mapper()
    before = mapper.map.keyframes[1].cam_from_world.copy()
    mapper.map.keyframes[1].cam_from_world[0, 3] += 0.01  # 1 cm off: BA must pull it back
    out = mapper.process(_job())
    assert out is not None and mapper.n_ba == 1
    assert np.abs(mapper.map.keyframes[1].cam_from_world[:3, 3] - before[:3, 3]).max() < 1e-3


def test_blas_threads_limits_inside_the_block_only():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from slam.runtime.blas import blas_threads

    def blas_counts():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_counts()
    if not before:
        pytest.skip("numpy has no BLAS that threadpoolctl can see")
    with blas_threads(1):
        assert blas_counts() == [1] * len(before)
    assert blas_counts() == before
    with blas_threads(0):  # 0: the library's own setting
        assert blas_counts() == before


def test_runtime_blas_threads_default_and_validation():
    from slam.config import load_config
    from slam.errors import ConfigError

    cfg = load_config([], [])
    assert cfg.runtime.blas_threads == 1 and cfg.runtime.feature_threads == 0
    with pytest.raises(ConfigError, match="feature_threads"):
        load_config([], ["runtime.feature_threads=-1"])
    assert cfg.mapping.triangulation_match == "epipolar" and cfg.runtime.live_skip_when_queued
    with pytest.raises(ConfigError, match="triangulation_match"):
        load_config([], ["mapping.triangulation_match=all"])
    with pytest.raises(ConfigError, match="final_pose_refiner"):
        load_config([], ["tracking.final_pose_refiner=ceres"])


def test_feature_threads_auto_gives_every_core_to_heavy_extractors_only():
    from slam.runtime.feature_process import resolve_feature_threads

    assert resolve_feature_threads(0, "aliked", cpu_count=2) == 2
    assert resolve_feature_threads(0, "superpoint", cpu_count=8) == 8
    assert resolve_feature_threads(0, "disk", cpu_count=1) == 1
    for light in ("xfeat", "orb", "auto"):  # auto resolves to XFeat or ORB on a CPU
        assert resolve_feature_threads(0, light, cpu_count=2) == 1
    assert resolve_feature_threads(3, "xfeat", cpu_count=2) == 3  # an explicit setting wins
