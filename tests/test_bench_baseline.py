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
