"""End-to-end SLAM on the first 100 frames of TUM RGB-D fr1_xyz with the shipped ORB configs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slam.app import open_input, run_slam
from slam.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]

REPO_ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 100


def run_fr1_xyz(shared_data: Path, config: str, out_root: Path) -> dict:
    cfg = load_config([REPO_ROOT / "configs" / config],
                      ["device=cpu", "runtime.progress=false", f"output.root={out_root}", "output.plot=false"])
    cfg.max_frames = N_FRAMES
    inputs = open_input("tum/fr1_xyz", cfg, data_root=str(shared_data / "tum"))
    assert inputs.n_frames == N_FRAMES
    assert inputs.groundtruth is not None and inputs.groundtruth.is_file()
    return run_slam(cfg, inputs)


def test_fr1_xyz_rgbd(fr1_xyz, shared_data, tmp_path):
    m = run_fr1_xyz(shared_data, "tum_rgbd.yaml", tmp_path / "runs")
    assert m["mode"] == "rgbd" and m["features"] == "orb" and m["matcher"] == "nn"
    assert m["status"] in ("finished", "completed")
    assert m["frames_in"] == N_FRAMES
    assert m["tracked_pct"] == 100.0, m
    ev = m["eval"]
    assert ev["alignment"] == "SE3"
    assert ev["n_matched"] >= N_FRAMES - 2  # ground truth covers the whole slice
    assert ev["ate_rmse_m"] < 0.02, ev
    saved = json.loads((Path(m["run_dir"]) / "metrics.json").read_text())
    assert saved["eval"]["ate_rmse_m"] == pytest.approx(ev["ate_rmse_m"])


def test_fr1_xyz_mono(fr1_xyz, shared_data, tmp_path):
    m = run_fr1_xyz(shared_data, "tum_mono.yaml", tmp_path / "runs")
    assert m["mode"] == "mono"
    assert m["status"] in ("finished", "completed")
    assert m["init_frame"] is not None and m["init_frame"] < 40, m
    assert m["tracked_after_init_pct"] >= 95, m
    ev = m["eval"]
    assert ev["alignment"] == "Sim3"
    assert ev["ate_rmse_m"] < 0.03, ev
    assert np.isfinite(ev["scale"]) and ev["scale"] > 0
