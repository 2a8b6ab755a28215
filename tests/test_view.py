"""``python -m slam view RUN_DIR`` (slam/viz/run_view.py) on tiny run folders written here, and
the trajectory plot (slam/viz/plots.py)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from slam.cli import main
from slam.eval import evaluate_full
from slam.io.ply import write_ply
from slam.io.trajectory import write_tum
from slam.viz.plots import plot_evaluation, world_up_axis
from slam.viz.render import GROUNDTRUTH
from slam.viz.run_view import RUN_FILES, load_run


@pytest.fixture(autouse=True)
def _logging(restore_slam_logging):
    yield


def _poses(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """(N,) timestamps and (N, 4, 4) world_from_cam: a camera sliding sideways and forward,
    looking along +z (world = first camera's frame)."""
    ts = 1000.0 + np.arange(n) / 30.0
    s = np.linspace(0, 1, n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = s - 0.5
    poses[:, 2, 3] = 0.3 * np.sin(np.pi * s)
    return ts, poses


def _gt_world_from_est() -> np.ndarray:
    """A rigid motion-capture frame: z up, the camera's world rotated and moved."""
    m = np.eye(4)
    m[:3, :3] = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # camera y down -> world -z
    m[:3, 3] = [2.0, 1.0, 1.5]
    return m


def write_run(folder, with_gt: bool = True):
    """A tiny run folder as slam.app writes one; the ground truth is the estimate seen in a
    motion-capture frame."""
    folder.mkdir(parents=True, exist_ok=True)
    ts, poses = _poses()
    write_tum(folder / "trajectory.txt", ts, poses, header={"n_frames": len(ts)})
    write_tum(folder / "keyframes.txt", ts[::10], poses[::10])
    rng = np.random.default_rng(0)
    n = 3000
    pts = np.vstack([np.c_[rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.2, n), np.full(n, 3.0)],
                     np.c_[rng.uniform(-2, 2, n), np.full(n, 1.2), rng.uniform(0.5, 3, n)]])
    cols = np.vstack([np.tile([220, 60, 40], (n, 1)), np.tile([40, 160, 60], (n, 1))]).astype(np.uint8)
    write_ply(folder / "map.ply", pts, cols)
    (folder / "config.yaml").write_text("mode: rgbd\n")
    metrics = {"sequence": "tiny/desk", "mode": "rgbd", "features": "orb", "matcher": "nn",
               "camera": {"width": 640, "height": 480, "fx": 517.3, "fy": 516.5, "cx": 318.6, "cy": 255.3}}
    if with_gt:
        write_tum(folder / "groundtruth.txt", ts, _gt_world_from_est() @ poses)
        metrics["groundtruth"] = str(folder / "groundtruth.txt")
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_load_run_aligns_the_ground_truth_into_the_map(tmp_path):
    snap = load_run(write_run(tmp_path / "run"))
    assert len(snap.trajectory_world_from_cam) == 60 and len(snap.keyframe_world_from_cam) == 6
    assert len(snap.points_world) == 6000 and snap.camera.fx == pytest.approx(517.3)
    assert "tiny/desk" in snap.title and "rgbd" in snap.title
    assert snap.groundtruth_xyz.shape == (60, 3)
    # brought back into the map's frame, it lies on the estimate (the mocap frame is undone)
    assert np.abs(snap.groundtruth_xyz - snap.camera_positions()).max() < 1e-6
    assert len(load_run(write_run(tmp_path / "run2", with_gt=False)).groundtruth_xyz) == 0


def test_view_png_renders_the_run(tmp_path, capsys):
    grey = {}
    for with_gt in (True, False):
        run = write_run(tmp_path / f"run_{with_gt}", with_gt=with_gt)
        out = tmp_path / "pics" / f"view_{with_gt}.png"
        assert main(["view", str(run), "--png", str(out)]) == 0
        assert str(out) in capsys.readouterr().out
        img = cv2.imread(str(out))
        assert img.shape == (800, 1600, 3)
        red = (img[:, :, 2] > 150) & (img[:, :, 1] < 110) & (img[:, :, 0] < 100)
        assert red[:, :800].sum() > 200 and red[:, 800:].sum() > 200  # the map in both panels
        grey[with_gt] = (np.abs(img.astype(int) - np.array(GROUNDTRUTH[::-1])).sum(axis=2) < 30).sum()
    assert grey[True] > grey[False] + 300  # the ground truth is drawn (wider, under the estimate)


def test_view_of_a_folder_that_is_no_run_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "not_a_run"
    bad.mkdir()
    (bad / "trajectory.txt").write_text("")
    assert main(["view", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(bad) in err and "keyframes.txt" in err and "map.ply" in err and "metrics.json" in err
    assert "trajectory.txt" not in err.split("missing")[0].split(":", 2)[-1]  # present: not listed as missing
    assert main(["view", str(tmp_path / "nowhere"), "--png", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere" in err and not (tmp_path / "x.png").exists()
    assert set(RUN_FILES) >= {"trajectory.txt", "map.ply"}


def test_view_without_display_says_use_png(tmp_path, capsys, monkeypatch):
    pytest.importorskip("open3d")
    import slam.viz.open3d_viewer as ov

    monkeypatch.setattr(ov, "has_display", lambda: False)
    assert main(["view", str(write_run(tmp_path / "run"))]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--png" in err and "display" in err


def test_trajectory_plot_of_an_evaluation(tmp_path):
    ts, poses = _poses(200)
    gt = _gt_world_from_est() @ poses
    est = poses.copy()
    est[:, :3, 3] += np.random.default_rng(0).normal(0, 0.01, (200, 3))
    result, details = evaluate_full((ts, gt), (ts, est))
    assert world_up_axis(details["gt_world_from_cam"]) == (2, 1.0)  # a mocap frame: z up
    assert world_up_axis(poses) == (1, -1.0)  # a camera-rooted frame (KITTI): -y up
    path = plot_evaluation(details, result, tmp_path / "trajectory.png", title="tiny/desk")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 500 and img.shape[1] > 1800
    blue = (np.abs(img.astype(int) - np.array([180, 119, 31])).sum(axis=2) < 60)  # matplotlib's tab:blue (BGR)
    third = img.shape[1] // 3
    assert blue[:, :third].sum() > 200 and blue[:, third:2 * third].sum() > 200  # top and side views
    red = (np.abs(img.astype(int) - np.array([40, 39, 214])).sum(axis=2) < 60)  # tab:red, the ATE curve
    assert red[:, 2 * third:].sum() > 200
    with pytest.raises(ValueError, match="matched"):
        plot_evaluation({**details, "t": details["t"][:5]}, result, tmp_path / "bad.png")


def test_view_draws_the_loops_the_run_recorded(tmp_path, caplog):
    """metrics.json's loop_edges (world positions of the keyframe centres a loop joins, written by
    the system at the end of a run) are drawn by `slam view` as they are in the run's map.png;
    an unreadable entry is warned about and left out."""
    from slam.viz.render import LOOP

    run = write_run(tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    _, poses = _poses()
    edge = [poses[50][:3, 3].tolist(), poses[5][:3, 3].tolist()]
    metrics["loop_edges"] = [edge]
    (run / "metrics.json").write_text(json.dumps(metrics))
    snap = load_run(run)
    np.testing.assert_allclose(snap.loop_segments(), [edge])
    out = tmp_path / "view.png"
    assert main(["view", str(run), "--png", str(out)]) == 0
    img = cv2.imread(str(out))
    magenta = (np.abs(img.astype(int) - np.array(LOOP[::-1])).sum(axis=2) < 30)
    assert magenta[:, 800:].sum() > 50  # the loop edge in the top view
    metrics["loop_edges"] = [[1, 2]]  # not positions
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert len(load_run(run).loop_segments()) == 0
    assert "loop_edges" in caplog.text
