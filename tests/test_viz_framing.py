"""The framing maths of the map pictures (slam/viz/base.py, slam/viz/render.py) on synthetic
scenes with a known vertical: up estimate, robust bounds, frustum scale, panel cameras."""
from __future__ import annotations

import numpy as np
import pytest

from slam.viz.base import MapSnapshot, default_view, dominant_plane, estimate_up, frustum_size, scene_bounds
from slam.viz.render import ground_grid, perspective_camera, point_radius, splat_points, top_camera

Z_UP = np.array([0.0, 0.0, 1.0])


def camera_pose(position, yaw_deg: float, down_deg: float) -> np.ndarray:
    """world_from_cam of an upright camera (no roll) in a z-up world, looking along heading
    ``yaw_deg`` (0 = +y), tilted ``down_deg`` below the horizon (camera x right, y down, z forward)."""
    yaw, down = np.radians(yaw_deg), np.radians(down_deg)
    heading = np.array([np.sin(yaw), np.cos(yaw), 0.0])
    z = np.cos(down) * heading - np.sin(down) * Z_UP
    x = np.cross(z, Z_UP)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, :3] = np.stack([x, y, z], axis=1)
    m[:3, 3] = position
    return m


def desk_scene(n_poses: int = 80, n_points: int = 4000, tilt: float = 45.0, outliers: int = 0, scale: float = 1.0,
               seed: int = 0, with_desk: bool = True, extra=None) -> MapSnapshot:
    """Cameras 0.75 m above a desk top (z = 0.75), 45 deg down, sweeping 0.6 m sideways and
    0.3 m forward; points on the desk (and a few far outliers)."""
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 1, n_poses)
    traj = np.stack([camera_pose([0.6 * t - 0.3, 0.3 * t, 1.5], 5 * np.sin(6 * t), tilt) for t in s])
    parts = []
    if with_desk:
        parts.append(np.c_[rng.uniform(-0.8, 0.8, n_points), rng.uniform(0.4, 1.6, n_points), np.full(n_points, 0.75)])
    if extra is not None:
        parts.append(extra)
    if outliers:
        parts.append(rng.normal(0, 1, (outliers, 3)) * 1000.0)
    pts = np.vstack(parts) if parts else np.zeros((0, 3))
    traj[:, :3, 3] *= scale
    cols = np.tile([200, 120, 40], (len(pts), 1)).astype(np.uint8)
    return MapSnapshot(traj, traj[::8], traj[-1], (pts * scale).astype(np.float32), cols)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def test_up_from_the_desk_plane_not_the_tilted_cameras():
    snap = desk_scene()
    assert angle_deg(estimate_up(snap), Z_UP) < 2.0
    normal, d, share = dominant_plane(snap, -snap.trajectory_world_from_cam[:, :3, 1].mean(axis=0))
    assert angle_deg(normal, Z_UP) < 1.0 and d == pytest.approx(0.75, abs=0.01) and share > 0.9
    view = default_view(snap)  # the desk top is the ground the perspective view draws a grid on
    assert float(view["ground"]) == pytest.approx(0.75, abs=0.01) and angle_deg(view["world_up"], Z_UP) < 2.0
    segs = ground_grid(top_camera(snap, 600, 500, view=view), view["world_up"], float(view["ground"]))
    assert len(segs[0]) >= 4 and np.allclose(np.r_[segs[0], segs[1]] @ view["world_up"], 0.75)
    # without a map the cameras' mean -y is the estimate: 45 deg off for cameras looking down
    bare = desk_scene(with_desk=False)
    assert angle_deg(estimate_up(bare), Z_UP) == pytest.approx(45.0, abs=3.0)
    assert np.isnan(default_view(bare)["ground"])


def test_up_from_camera_headings_when_they_turn():
    # a camera turning all the way round, tilted 30 deg down, no map: its x axes span the horizontal
    traj = np.stack([camera_pose([np.cos(a), np.sin(a), 1.2], np.degrees(a), 30.0) for a in np.linspace(0, 2 * np.pi, 60)])
    assert angle_deg(estimate_up(MapSnapshot(trajectory_world_from_cam=traj)), Z_UP) < 1.0


def test_up_ignores_a_wall_in_front_and_a_ceiling():
    rng = np.random.default_rng(1)
    n = 3000
    wall = np.c_[rng.uniform(-1, 1, n), np.full(n, 2.0), rng.uniform(0, 2.5, n)]  # in front of the cameras
    ceiling = np.c_[rng.uniform(-1, 1, n), rng.uniform(0, 2, n), np.full(n, 2.6)]  # above them
    bare_up = estimate_up(desk_scene(with_desk=False))
    for extra in (wall, ceiling):
        snap = desk_scene(with_desk=False, extra=extra)
        assert angle_deg(estimate_up(snap), bare_up) < 1.0  # neither is taken for the floor
    # with the desk as well, the desk wins
    assert angle_deg(estimate_up(desk_scene(extra=np.vstack([wall[:800], ceiling[:800]]))), Z_UP) < 2.0


def test_bounds_ignore_far_outliers():
    clean_lo, clean_hi = scene_bounds(desk_scene())
    lo, hi = scene_bounds(desk_scene(outliers=40))  # 1 % of the points a kilometre away
    assert np.all(hi - lo < 3.0) and np.allclose(lo, clean_lo, atol=0.1) and np.allclose(hi, clean_hi, atol=0.1)
    # every camera inside, whatever the points say
    cams = desk_scene().trajectory_world_from_cam[:, :3, 3]
    assert np.all(cams >= lo) and np.all(cams <= hi)


def test_frustum_size_follows_the_scene():
    d1, d10 = frustum_size(desk_scene()), frustum_size(desk_scene(scale=10.0))
    assert d10 == pytest.approx(10 * d1, rel=1e-6)  # scale-free: a monocular map looks the same
    lo, hi = scene_bounds(desk_scene())
    diag = np.linalg.norm(hi - lo)
    traj = desk_scene().trajectory_world_from_cam[:, :3, 3]
    extent = np.linalg.norm(traj.max(0) - traj.min(0))
    assert d1 == pytest.approx(0.08 * extent) and 0.015 * diag <= d1 <= 0.05 * diag
    # a stationary camera still gets a visible frustum; a long drive does not get huge ones
    still = desk_scene()
    still.trajectory_world_from_cam[:, :3, 3] = still.trajectory_world_from_cam[0, :3, 3]
    lo, hi = scene_bounds(still)
    assert frustum_size(still) == pytest.approx(0.015 * np.linalg.norm(hi - lo))
    long = desk_scene()
    long.trajectory_world_from_cam[:, 0, 3] *= 100.0
    lo, hi = scene_bounds(long)
    assert frustum_size(long) == pytest.approx(0.05 * np.linalg.norm(hi - lo))


@pytest.mark.parametrize("make_cam", [perspective_camera, top_camera])
def test_panels_frame_cameras_and_map_together(make_cam):
    w, h = 700, 600
    for snap in (desk_scene(), desk_scene(outliers=40), desk_scene(scale=0.01)):
        cam = make_cam(snap, w, h)
        uv, depth = cam.project(snap.trajectory_world_from_cam[:, :3, 3])
        assert np.all(depth > 0) or cam.ortho
        assert np.all((uv >= 0) & (uv < [w, h]))  # every camera in the picture
        desk = snap.points_world[: 4000]
        uv, depth = cam.project(desk)
        inside = np.all((uv >= 0) & (uv < [w, h]), axis=1) & (depth > 0 if not cam.ortho else True)
        assert inside.mean() > 0.85  # the map, too
        span = np.percentile(uv[inside], 95, axis=0) - np.percentile(uv[inside], 5, axis=0)
        assert span.max() > 0.4 * max(w, h) * (0.5 if not cam.ortho else 1.0)  # and not shrunk by outliers


def test_top_view_looks_down_with_the_cameras_heading_up():
    cam = top_camera(desk_scene(), 600, 600)
    assert cam.ortho and angle_deg(cam.cam_from_world[2, :3], -Z_UP) < 2.0
    # a point ahead of the cameras (+y) is higher in the picture than one behind them
    uv, _ = cam.project(np.array([[0.0, 2.0, 0.75], [0.0, -1.0, 0.75]]))
    assert uv[0, 1] < uv[1, 1]
    # and +x (the cameras' right) is to the right: not mirrored
    uv, _ = cam.project(np.array([[1.0, 0.5, 0.75], [-1.0, 0.5, 0.75]]))
    assert uv[0, 0] > uv[1, 0]


def test_splats_are_depth_sorted_and_sized():
    img = np.zeros((40, 40, 3), np.uint8)
    uv = np.array([[20.0, 20.0], [21.0, 20.0]])
    cols = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    n = splat_points(img, uv, np.array([2.0, 1.0]), cols, np.array([4.0, 4.0]))
    assert n > 40
    assert img[20, 21, 2] == 255 and img[20, 20, 2] == 255  # the nearer (blue) one on top
    assert img[20, 16, 0] > 0  # the farther one shows beside it
    assert point_radius(100, 800, 700) == 5.0 and point_radius(1_000_000, 800, 700) == 1.5
