"""Tests of the viewers and the end-of-run images (slam/viz)."""
from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest

from slam.errors import DeviceError
from slam.geometry.camera import PinholeCamera
from slam.viz import create_viewer
from slam.viz.base import MapSnapshot, Viewer, default_view, frustum_lines
from slam.viz.null import NullViewer
from slam.viz.plots import plot_trajectories
from slam.viz.render import render_map_png


def make_snapshot(n_poses: int = 60, n_points: int = 6000, seed: int = 0) -> MapSnapshot:
    """A camera moving sideways in front of a coloured back wall and above a floor
    (camera convention: x right, y down, z forward)."""
    rng = np.random.default_rng(seed)
    traj = np.tile(np.eye(4), (n_poses, 1, 1))
    s = np.linspace(0.0, 1.0, n_poses)
    traj[:, 0, 3] = s - 0.5
    traj[:, 2, 3] = 0.3 * np.sin(np.pi * s)
    n = n_points // 2
    wall = np.c_[rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.2, n), np.full(n, 3.0)]
    floor = np.c_[rng.uniform(-2, 2, n), np.full(n, 1.2), rng.uniform(0.5, 3, n)]
    pts = np.vstack([wall, floor]).astype(np.float32)
    cols = np.vstack([np.tile([220, 60, 40], (n, 1)), np.tile([40, 160, 60], (n, 1))]).astype(np.uint8)
    cam = PinholeCamera(width=640, height=480, fx=517.3, fy=516.5, cx=318.6, cy=255.3)
    return MapSnapshot(traj, traj[::10], traj[-1], pts, cols, cam, state="OK", frame_index=n_poses - 1)


def non_background_fraction(path, background=(255, 255, 255)) -> float:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return float(np.any(np.abs(img.astype(int) - np.array(background[::-1])) > 10, axis=2).mean())


@pytest.mark.parametrize("backend", ["open3d", "matplotlib"])
def test_render_map_png_writes_an_image_of_the_right_size(tmp_path, backend):
    if backend == "open3d":
        pytest.importorskip("open3d")
    path = render_map_png(make_snapshot(), tmp_path / "run" / "map.png", width=640, height=480, backend=backend)
    assert path.is_file() and path.stat().st_size > 1000
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
    frac = non_background_fraction(path)
    assert 0.01 < frac < 0.9  # something drawn, not a flood fill
    # the map colours made it into the picture (red wall points: R high, G and B low)
    red = (img[:, :, 2] > 150) & (img[:, :, 1] < 110) & (img[:, :, 0] < 100)
    assert red.sum() > 50


def test_render_falls_back_to_matplotlib_and_says_so(tmp_path, caplog, monkeypatch):
    import slam.viz.render as render

    def broken(*a, **k):
        raise RuntimeError("no OpenGL")

    monkeypatch.setattr(render, "_render_open3d", broken)
    with caplog.at_level(logging.WARNING, logger="slam.viz.render"):
        path = render_map_png(make_snapshot(), tmp_path / "map.png", width=320, height=240)
    assert cv2.imread(str(path)).shape == (240, 320, 3)
    assert any("matplotlib" in r.getMessage() and "no OpenGL" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="no OpenGL"):
        render_map_png(make_snapshot(), tmp_path / "m2.png", backend="open3d")


def test_render_empty_snapshot_still_writes_a_png(tmp_path):
    path = render_map_png(MapSnapshot(), tmp_path / "empty.png", width=320, height=240)
    assert cv2.imread(str(path)).shape == (240, 320, 3)


def test_plot_trajectories_with_and_without_ground_truth(tmp_path):
    snap = make_snapshot()
    est = snap.camera_positions()
    gt = est + np.random.default_rng(1).normal(0, 0.01, est.shape)
    p = plot_trajectories(est, gt, tmp_path / "traj.png", title="test", subtitle="ATE RMSE 0.010 m")
    img = cv2.imread(str(p))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 900
    # both lines drawn: the estimate in matplotlib's blue (BGR ~ (180, 119, 31))
    blue = (np.abs(img.astype(int) - np.array([180, 119, 31])).sum(axis=2) < 60).sum()
    assert blue > 200
    p2 = plot_trajectories(snap.trajectory_world_from_cam, None, tmp_path / "traj_nogt.png")
    assert cv2.imread(str(p2)) is not None
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        plot_trajectories(np.zeros((5, 2)), None, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="up="):
        plot_trajectories(est, None, tmp_path / "bad.png", up="w")


def test_map_snapshot_validation_and_defaults():
    s = MapSnapshot(points_world=np.array([[0, 0, 1], [np.nan, 0, 0]], np.float32))
    assert s.points_world.shape == (1, 3) and s.colors.shape == (1, 3) and s.colors.dtype == np.uint8
    s = MapSnapshot(points_world=np.zeros((2, 3)), colors=np.full((2, 3), 0.5))
    assert s.colors.dtype == np.uint8 and int(s.colors[0, 0]) == 128
    with pytest.raises(ValueError, match="points_world"):
        MapSnapshot(points_world=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="colors"):
        MapSnapshot(points_world=np.zeros((4, 3)), colors=np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="trajectory_world_from_cam"):
        MapSnapshot(trajectory_world_from_cam=np.zeros((3, 3, 4)))
    assert MapSnapshot().is_empty and not make_snapshot().is_empty


def test_frustum_and_default_view_geometry():
    cam = PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=319.5, cy=239.5)
    world_from_cam = np.eye(4)
    world_from_cam[:3, 3] = [1.0, 2.0, 3.0]
    pts, lines = frustum_lines(cam, world_from_cam, depth=0.5)
    assert pts.shape == (5, 3) and lines.shape == (8, 2)
    assert np.allclose(pts[0], [1, 2, 3]) and np.allclose(pts[1:, 2], 3.5)
    assert pts[1, 0] < 1.0 < pts[2, 0] and pts[1, 1] < 2.0 < pts[3, 1]  # top-left, top-right, bottom
    view = default_view(make_snapshot())
    assert np.isclose(np.linalg.norm(view["front"]), 1.0)
    assert view["world_up"] @ np.array([0, -1, 0]) > 0.99  # cameras upright: world -y is up
    assert abs(view["up"] @ view["front"]) < 1e-9 and view["up"] @ view["world_up"] > 0.5
    assert view["front"][2] < 0  # the eye is behind the cameras (they look along +z)


def test_null_viewer_and_factory(tmp_path):
    v = create_viewer("none")
    assert isinstance(v, NullViewer) and isinstance(v, Viewer)
    v.update(make_snapshot())
    assert v.n_updates == 1
    path = v.save_png(tmp_path / "map.png", make_snapshot())
    assert path.is_file()
    v.close()
    with pytest.raises(ValueError, match="none, open3d"):
        create_viewer("vtk")


def test_open3d_viewer_without_display_is_a_clear_error(monkeypatch):
    pytest.importorskip("open3d")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    import slam.viz.open3d_viewer as ov

    monkeypatch.setattr(ov.sys, "platform", "linux")
    with pytest.raises(DeviceError, match="--viewer none"):
        create_viewer("open3d")


def test_open3d_viewer_thread_renders_the_newest_snapshot(tmp_path):
    pytest.importorskip("open3d")
    from slam.viz.open3d_viewer import Open3DViewer

    viewer = Open3DViewer(width=320, height=240, visible=False, fps=50)
    try:
        assert isinstance(viewer, Viewer) and viewer.running
        for i in range(20):  # a burst of updates: update() only stores the newest
            viewer.update(make_snapshot(n_poses=10 + i, n_points=2000))
        assert viewer.n_updates == 20
        deadline = time.monotonic() + 30
        while viewer.n_rendered == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 1 <= viewer.n_rendered <= 20
        shot = viewer.screenshot(tmp_path / "window.png")
        assert shot is not None
        img = cv2.imread(str(shot))
        assert img.shape == (240, 320, 3)
        assert non_background_fraction(shot, background=(20, 20, 26)) > 0.01
        png = viewer.save_png(tmp_path / "map.png", make_snapshot())  # closes the window first
        assert cv2.imread(str(png)).shape == (960, 1280, 3)
        assert not viewer.running and viewer.error is None
    finally:
        viewer.close()
