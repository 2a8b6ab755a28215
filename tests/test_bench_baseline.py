"""`slam bench --baseline`: the fps ratio of two configurations run side by side."""
from __future__ import annotations

import pytest

from slam.bench import _baseline_ratios


def row(config: str, mode: str, rep: int, fps: float, feats: str) -> dict:
    return {"input": "tum/fr1_xyz", "mode": mode, "repeat": rep, "runner": "threaded", "config": config, "fps": fps,
            "features": feats, "matcher": "lightglue" if feats == "xfeat" else "nn"}


def test_ratio_per_mode_and_round_with_the_median():
    rows = [row("main", "rgbd", 0, 12.0, "xfeat"), row("baseline", "rgbd", 0, 20.0, "orb"),
            row("baseline", "rgbd", 1, 10.0, "orb"), row("main", "rgbd", 1, 8.0, "xfeat"),
            row("baseline", "rgbd", 2, 16.0, "orb"), row("main", "rgbd", 2, 12.0, "xfeat"),
            row("main", "mono", 0, 5.0, "xfeat"), row("baseline", "mono", 0, 10.0, "orb")]
    out = _baseline_ratios(rows, [("tum/fr1_xyz", ["rgbd", "mono"])], repeat=3)
    assert out["rgbd"]["per_repeat"] == pytest.approx([0.6, 0.8, 0.75])
    assert out["rgbd"]["median"] == pytest.approx(0.75)
    assert out["rgbd"]["baseline"] == "orb+nn" and out["rgbd"]["features"] == "xfeat"
    assert out["mono"]["per_repeat"] == pytest.approx([0.5])


def test_no_ratio_without_a_baseline_run():
    rows = [row("main", "rgbd", 0, 12.0, "xfeat")]
    assert _baseline_ratios(rows, [("tum/fr1_xyz", ["rgbd"])], repeat=1) == {}


def test_tracking_wait_share_of_the_wall_time():
    from slam.bench import _wait_pct, format_table

    assert _wait_pct({"tracking_waited_for_mapping_ms": 31621.2, "wall_s": 52.94}) == pytest.approx(59.7)
    assert _wait_pct({"wall_s": 10.0}) is None  # a run that recorded no wait (the synchronous runner)
    assert _wait_pct({"tracking_waited_for_mapping_ms": 5.0, "wall_s": 0.0}) is None
    r = {"sequence": "tum/fr1_xyz", "mode": "mono", "runner": "threaded", "features": "xfeat", "matcher": "lightglue",
         "frames": 798, "tracked_pct": 99.6, "ate_rmse_m": 0.0091, "alignment": "Sim3", "rpe_trans_rmse_m": 0.006,
         "rpe_rot_rmse_deg": 0.4, "fps": 15.1, "peak_rss_mb": 479.0, "keyframes": 29,
         "stage_mean_ms": {"features": 49.8, "mapping": 294.9}, "tracking_wait_pct": 59.7}
    line = format_table([r]).splitlines()[-1]
    assert "mapping=295" in line and "tracking waited for mapping 60 % of the run" in line
    assert "latency" not in line  # a run that recorded none
    r["tracking_wait_pct"] = None
    assert "waited" not in format_table([r])
    r["latency_ms"] = {"p50_ms": 75.7, "p95_ms": 1041.8}
    assert "latency p50/p95 76/1042" in format_table([r])
