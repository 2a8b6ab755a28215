"""Live runs: mapping defers to new keyframes (skip of queued jobs' optional work, BA stop), and
numpy's BLAS thread limit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slam.geometry.camera import PinholeCamera
from slam.mapping.local_mapper import LocalMapper, MappingConfig
from slam.mapping.map import Keyframe, Map
from slam.system import MappingLoad, MappingStage
from slam.tracking.tracker import KeyframeJob
from slam.types import Features


def _mapper(**cfg) -> LocalMapper:
    m = Map(32, True)
    for k in range(2):
        n = 20
        m.add_keyframe(Keyframe(
            id=m.new_keyframe_id(), frame_index=k, timestamp=float(k), cam_from_world=np.eye(4),
            features=Features(torch.zeros(n, 2), torch.zeros(n), torch.zeros(n, 32, dtype=torch.uint8), (640, 480)),
            kp_uv=np.zeros((n, 2)), kp_depth=np.zeros(n), kp_sigma2=np.ones(n), kp_color=np.zeros((n, 3), np.uint8),
            desc=np.zeros((n, 32), np.uint8), point_ids=np.full(n, -1, dtype=np.int64)))
    cam = PinholeCamera(width=640, height=480, fx=520.0, fy=520.0, cx=320.0, cy=240.0)
    mapper = LocalMapper(MappingConfig(**cfg), cam, m, matcher=None, mode="rgbd")
    calls = []
    mapper._fuse = lambda kf_id: calls.append(("fuse", kf_id))  # type: ignore[method-assign]
    mapper._local_problem = lambda kf_id: calls.append(("ba problem", kf_id)) or "problem"  # type: ignore[method-assign]
    mapper.calls = calls  # type: ignore[attr-defined]
    return mapper


def _job(kf_id: int = 1) -> KeyframeJob:
    return KeyframeJob(kf_id, np.zeros(0, dtype=np.int64))


def test_mapping_load_requests_ba_stop_when_a_second_job_is_queued():
    load = MappingLoad()
    load.add(1)
    assert load.busy() and not load.backlog() and not load.ba_stop.requested
    load.add(1)  # tracking hands over another keyframe while the first is worked on
    assert load.backlog() and load.ba_stop.requested
    load.add(-1)
    assert not load.backlog()


def test_mapping_stage_wires_backlog_and_ba_stop_into_the_mapper():
    load = MappingLoad()
    mapper = _mapper()
    MappingStage(mapper, None, load)
    assert mapper.backlog == load.backlog and mapper.ba_stop is load.ba_stop
    dataset_mapper = _mapper()
    MappingStage(dataset_mapper, None, None)  # dataset runs: no load, nothing depends on timing
    assert dataset_mapper.backlog() is False and dataset_mapper.ba_stop is None


def test_prepare_skips_fusion_and_ba_when_another_job_is_queued():
    mapper = _mapper()
    task = mapper.prepare(_job())
    assert task.problem == "problem" and mapper.calls == [("fuse", 1), ("ba problem", 1)]
    mapper.calls.clear()
    mapper.backlog = lambda: True
    task = mapper.prepare(_job())
    assert task is not None and task.problem is None and mapper.calls == []
    assert mapper.n_skipped == 1


def test_prepare_ignores_backlog_when_switched_off():
    mapper = _mapper(live_skip_when_queued=False)
    mapper.backlog = lambda: True
    task = mapper.prepare(_job())
    assert task.problem == "problem" and mapper.n_skipped == 0


def test_optimize_skips_ba_for_a_job_that_arrived_after_prepare(monkeypatch):
    import slam.mapping.local_mapper as lm
    from slam.optim.ba import BAStop

    ran = []

    class Result:
        aborted, iterations = False, 10

    monkeypatch.setattr(lm, "bundle_adjust", lambda *a, **k: ran.append(k.get("stop")) or Result())
    mapper = _mapper()
    mapper.ba_stop = BAStop()
    mapper.ba_stop.request()  # left over from an earlier job: reset before this BA
    task = mapper.prepare(_job())
    mapper.backlog = lambda: True
    mapper.optimize(task)
    assert ran == [] and task.result is None and mapper.n_ba_aborted == 1
    mapper.backlog = lambda: False
    mapper.optimize(task)
    assert ran == [mapper.ba_stop] and not mapper.ba_stop.requested  # reset, then armed for g2o
    assert isinstance(task.result, Result) and mapper.n_ba_aborted == 1


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
    assert cfg.runtime.blas_threads == 1
    assert cfg.mapping.triangulation_match == "epipolar" and cfg.mapping.live_skip_when_queued
    with pytest.raises(ConfigError, match="triangulation_match"):
        load_config([], ["mapping.triangulation_match=all"])
    with pytest.raises(ConfigError, match="final_pose_refiner"):
        load_config([], ["tracking.final_pose_refiner=ceres"])
