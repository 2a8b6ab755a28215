"""Evaluation for EuRoC and KITTI: KITTI's relative metrics against hand-computed cases, the
alignment chosen by mode, and ground truth given as a dataset folder."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.eval import eval_main, evaluate, kitti_relative_errors, load_groundtruth, mono_alignment
from slam.io.trajectory import write_tum

from tiny_datasets import T_BS0, make_euroc, make_kitti


def straight_line(n: int) -> np.ndarray:
    """(n, 4, 4): identity rotation, 1 m per frame along z (dist[i] = i metres)."""
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, 2, 3] = np.arange(n, dtype=float)
    return out


def test_kitti_translation_error_by_hand():
    # 201 frames, 200 m. Segments start at frames 0, 10, ..., 200; a 100 m segment from frame f ends
    # at the first frame whose path length from f EXCEEDS 100 m: f + 101. It fits for f <= 99, so
    # 10 segments of 100 m (frames 0..90) and none of 200 m or more.
    gt = straight_line(201)
    est = gt.copy()
    est[:, 2, 3] *= 1.01  # 1 % too long
    # each segment: gt moves 101 m, the estimate 102.01 m; error |101 - 102.01| / 100 m = 1.01 %
    k = kitti_relative_errors(gt, est)
    assert k["segments"] == 10
    assert k["t_err_pct"] == pytest.approx(1.01, abs=1e-9)
    assert k["r_err_deg_per_100m"] == pytest.approx(0.0, abs=1e-6)
    assert list(k["per_length"]) == ["100"]
    assert k["path_length_m"] == pytest.approx(200.0)


def test_kitti_rotation_error_by_hand():
    # the estimate's heading drifts by eps rad per frame about y, positions exact. A 100 m segment
    # spans 101 frames: relative rotation error 101 * eps rad over 100 m -> 101 * eps * 180/pi deg per 100 m.
    eps = 1e-4
    gt = straight_line(201)
    est = gt.copy()
    est[:, :3, :3] = Rotation.from_rotvec(np.outer(np.arange(201) * eps, [0, 1, 0])).as_matrix()
    k = kitti_relative_errors(gt, est)
    assert k["r_err_deg_per_100m"] == pytest.approx(101 * eps * 180 / math.pi, rel=1e-6)
    # translation: E = inv(d_est) d_gt, t(E) = R_e^T (t_gt - t_e) with t_e = R_f^T (0, 0, 101) for start f
    t_errs = []
    for f in range(0, 100, 10):
        Rf = Rotation.from_rotvec([0, f * eps, 0]).as_matrix()
        t_e = Rf.T @ np.array([0, 0, 101.0])
        t_errs.append(np.linalg.norm(np.array([0, 0, 101.0]) - t_e) / 100)
    assert k["t_err_pct"] == pytest.approx(100 * np.mean(t_errs), rel=1e-6)


def test_kitti_step_and_lengths():
    gt = straight_line(901)  # 900 m: lengths up to 800 m fit
    k = kitti_relative_errors(gt, gt.copy())
    # starts every 10 frames; length L fits for f + L + 1 <= 900, i.e. f <= 899 - L
    expected = sum(len(range(0, 900 - int(L), 10)) for L in range(100, 900, 100))
    assert k["segments"] == expected and k["t_err_pct"] == pytest.approx(0.0, abs=1e-9)
    assert kitti_relative_errors(gt, gt, step=5)["segments"] > expected
    short = kitti_relative_errors(straight_line(50), straight_line(50))
    assert short["segments"] == 0 and short["t_err_pct"] is None


def test_evaluate_reports_kitti_metrics_on_the_sim3_aligned_estimate():
    gt = straight_line(201)
    gt[:, 0, 3] = 5.0 * np.sin(np.arange(201) / 30.0)  # not a line, so the alignment is well posed
    ts = np.arange(201) * 0.1
    est = gt.copy()
    est[:, :3, 3] *= 0.5  # monocular scale
    r = evaluate((ts, gt), (ts, est), mono=True, kitti_metrics=True)
    assert r["kitti_t_err_pct"] == pytest.approx(0.0, abs=1e-6) and r["kitti_segments"] > 0
    assert "Sim3" in r["kitti_note"]
    r = evaluate((ts[:40], gt[:40]), (ts[:40], est[:40]), mono=True, kitti_metrics=True)
    assert r["kitti_t_err_pct"] is None and "shorter than" in r["kitti_note"]


def test_alignment_by_mode():
    assert mono_alignment("mono") is True
    assert mono_alignment("rgbd") is False and mono_alignment("stereo") is False
    with pytest.raises(ValueError, match="unknown mode"):
        mono_alignment("lidar")


def test_euroc_folder_as_groundtruth_gives_cam0_poses(tmp_path, capsys):
    made = make_euroc(tmp_path / "seq", n=6)
    gt, note, is_kitti = load_groundtruth(tmp_path / "seq")
    ts, world_from_cam0 = gt
    np.testing.assert_allclose(world_from_cam0, made["world_from_body"] @ T_BS0, atol=1e-8)
    assert "T_BS" in note and not is_kitti
    # a camera trajectory compared against the folder: zero error, and the table says what the ground truth is
    write_tum(tmp_path / "est.txt", ts, world_from_cam0)
    assert eval_main(["--gt", str(tmp_path / "seq"), "--est", str(tmp_path / "est.txt"), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "cam0 poses" in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["ate_rmse_m"] < 1e-6 and "T_BS" in m["groundtruth"]


def test_kitti_folder_as_groundtruth_matches_by_timestamp(tmp_path, capsys):
    made = make_kitti(tmp_path / "dataset", n=5)
    write_tum(tmp_path / "est.txt", made["times"][1:], made["world_from_cam0"][1:])  # frame 0 untracked
    assert eval_main(["--gt", str(made["folder"]), "--est", str(tmp_path / "est.txt")]) == 0
    out = capsys.readouterr().out
    assert "KITTI rel. error" in out and "n/a" in out  # 3.6 m: no 100 m segment
    assert eval_main(["--gt", str(tmp_path / "dataset" / "sequences"), "--est", str(tmp_path / "est.txt")]) == 2
    assert "not a sequence itself" in capsys.readouterr().err
