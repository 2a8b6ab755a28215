"""Tests of the viewers and the end-of-run images (slam/viz)."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from slam.errors import DeviceError
from slam.geometry.camera import PinholeCamera
from slam.viz import create_viewer
from slam.viz.base import MapSnapshot, Viewer, default_view, frustum_lines
from slam.viz.null import NullViewer
from slam.viz.render import GROUNDTRUTH, LOOP, PANEL, render_map_png


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


def test_render_map_png_draws_both_panels_in_the_map_colours(tmp_path):
    path = render_map_png(make_snapshot(), tmp_path / "run" / "map.png", width=800, height=400)
    assert path.is_file() and path.stat().st_size > 1000
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img.shape == (400, 800, 3)
    panel = np.array(PANEL[::-1])
    drawn = np.any(np.abs(img.astype(int) - panel) > 12, axis=2) & np.any(np.abs(img.astype(int) - 250) > 12, axis=2)
    left, right = drawn[40:360, 10:390], drawn[40:360, 410:790]
    assert left.mean() > 0.05 and right.mean() > 0.05  # both panels hold a drawing
    assert left.mean() < 0.9 and right.mean() < 0.9  # not a flood fill
    # the map colours made it into both panels (red wall points: R high, G and B low)
    red = (img[:, :, 2] > 150) & (img[:, :, 1] < 110) & (img[:, :, 0] < 100)
    assert red[:, :400].sum() > 100 and red[:, 400:].sum() > 100
    green = (img[:, :, 1] > 130) & (img[:, :, 2] < 90) & (img[:, :, 0] < 90)  # the floor
    assert green[:, :400].sum() > 100 and green[:, 400:].sum() > 100


def test_render_draws_loop_edges_and_ground_truth(tmp_path):
    snap = make_snapshot()

    def magenta_and_grey(s):
        img = cv2.imread(str(render_map_png(s, tmp_path / "m.png", width=800, height=400)))[40:360]
        mag = (np.abs(img.astype(int) - np.array(LOOP[::-1])).sum(axis=2) < 60).sum()
        grey = (np.abs(img.astype(int) - np.array(GROUNDTRUTH[::-1])).sum(axis=2) < 30).sum()
        return mag, grey

    mag0, grey0 = magenta_and_grey(snap)
    snap.loop_edges = snap._check_loops(np.array([[0, 5], [1, 4]]))
    snap.groundtruth_xyz = snap.camera_positions() + [0.0, -0.1, 0.0]
    mag1, grey1 = magenta_and_grey(snap)
    assert mag0 < 20 and mag1 > 50
    assert grey1 > grey0 + 50
    assert snap.loop_segments().shape == (2, 2, 3)
    assert np.allclose(snap.loop_segments()[0, 1], snap.keyframe_world_from_cam[5, :3, 3])


def test_render_empty_snapshot_still_writes_a_png(tmp_path):
    path = render_map_png(MapSnapshot(), tmp_path / "empty.png", width=320, height=240)
    assert cv2.imread(str(path)).shape == (240, 320, 3)


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
    with pytest.raises(ValueError, match="outside 0..2"):
        MapSnapshot(keyframe_world_from_cam=np.tile(np.eye(4), (3, 1, 1)), loop_edges=np.array([[0, 3]]))
    with pytest.raises(ValueError, match="loop_edges"):
        MapSnapshot(loop_edges=np.zeros((2, 3)))
    s = MapSnapshot(loop_edges=np.zeros((1, 2, 3)), groundtruth_xyz=np.array([[0, 0, 0], [np.nan, 0, 0.0]]))
    assert s.loop_segments().shape == (1, 2, 3) and s.groundtruth_xyz.shape == (1, 3)
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
    assert abs(view["up"] @ view["front"]) < 1e-9 and view["up"] @ view["world_up"] > 0.3
    assert view["front"][2] < 0  # the eye is behind the cameras (they look along +z)
    assert view["front"] @ view["world_up"] > np.sin(np.radians(25))  # and above them


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
        png = viewer.save_png(tmp_path / "map.png", make_snapshot())  # CPU render: the window stays
        assert cv2.imread(str(png)).shape == (800, 1600, 3)
        assert viewer.running and viewer.error is None
        assert not viewer.wait(timeout_s=0.3)  # still open
        viewer.close()
        assert viewer.wait(timeout_s=5) and not viewer.running
    finally:
        viewer.close()


def test_open3d_geometries_match_the_picture():
    pytest.importorskip("open3d")
    from slam.viz.base import frustum_size
    from slam.viz.open3d_viewer import build_open3d_geometries

    snap = make_snapshot()
    snap.loop_edges = snap._check_loops(np.array([[0, 5]]))
    snap.groundtruth_xyz = snap.camera_positions() + 0.01
    geoms = build_open3d_geometries(snap)
    assert set(geoms) == {"points", "trajectory", "groundtruth", "keyframes", "current", "loops"}
    assert len(geoms["points"].points) == len(snap.points_world)
    assert np.allclose(np.asarray(geoms["points"].colors)[0], snap.colors[0] / 255.0)
    assert len(geoms["keyframes"].lines) == 8 * len(snap.keyframe_world_from_cam)
    # the current camera is as large as a keyframe's frustum (not several times larger)
    cur = np.asarray(geoms["current"].points)
    kf = np.asarray(geoms["keyframes"].points)[:5]
    size = lambda p: np.linalg.norm(p[1:] - p[0], axis=1).max()
    assert size(cur) == pytest.approx(size(kf)) and size(cur) > frustum_size(snap)
    assert len(build_open3d_geometries(MapSnapshot())) == 0
