"""Offscreen PNG of the map and trajectory (no display needed), written at the end of every run.

Open3D renders offscreen (``Visualizer().create_window(visible=False)``; Open3D falls back to
EGL/OSMesa when there is no display). If Open3D is missing or cannot render, a matplotlib 3D
plot of the same content is written instead and the log says so.

Colours: map points in their own RGB, trajectory blue, keyframe frusta green, current camera red.
A legend line with counts is drawn in the top-left corner.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np

from slam.viz.base import MapSnapshot, default_view, frustum_lines, scene_bounds

LOG = logging.getLogger(__name__)

TRAJECTORY_RGB = (0.10, 0.35, 0.95)
KEYFRAME_RGB = (0.05, 0.60, 0.15)
CURRENT_RGB = (0.90, 0.10, 0.10)
BACKGROUND_RGB = (1.0, 1.0, 1.0)

__all__ = ["render_map_png", "build_open3d_geometries", "frustum_size", "display_points"]


def frustum_size(snapshot: MapSnapshot) -> float:
    """Frustum depth in metres: 4% of the scene diagonal (at least 1 cm)."""
    lo, hi = scene_bounds(snapshot)
    return max(0.04 * float(np.linalg.norm(hi - lo)), 0.01)


def display_points(snapshot: MapSnapshot, max_points: int = 300_000) -> tuple[np.ndarray, np.ndarray]:
    """Points (float64 metres) and colours (float RGB in [0, 1]) worth drawing: far outliers
    (outside the robust scene box grown by 50%) are left out so they do not shrink the view,
    and at most ``max_points`` are kept (evenly strided, deterministic)."""
    pts = snapshot.points_world.astype(np.float64)
    cols = snapshot.colors.astype(np.float64) / 255.0
    if len(pts) == 0:
        return pts, cols
    lo, hi = scene_bounds(snapshot)
    grow = (hi - lo) * 0.5
    keep = np.all((pts >= lo - grow) & (pts <= hi + grow), axis=1)
    pts, cols = pts[keep], cols[keep]
    if len(pts) > max_points:
        idx = np.linspace(0, len(pts) - 1, max_points).astype(np.int64)
        pts, cols = pts[idx], cols[idx]
    return pts, cols


def _frusta(snapshot: MapSnapshot, poses: np.ndarray, depth: float) -> tuple[np.ndarray, np.ndarray]:
    all_pts, all_lines = [], []
    for k, pose in enumerate(poses):
        p, l = frustum_lines(snapshot.camera, pose, depth)
        all_pts.append(p)
        all_lines.append(l + 5 * k)
    if not all_pts:
        return np.zeros((0, 3)), np.zeros((0, 2), np.int64)
    return np.vstack(all_pts), np.vstack(all_lines)


def build_open3d_geometries(
    snapshot: MapSnapshot, max_points: int = 300_000, trajectory_rgb: tuple = TRAJECTORY_RGB
) -> dict[str, Any]:
    """Open3D geometries for a snapshot: "points" (PointCloud), "trajectory", "keyframes",
    "current" (LineSets). Empty parts are left out."""
    import open3d as o3d

    out: dict[str, Any] = {}
    depth = frustum_size(snapshot)
    pts, cols = display_points(snapshot, max_points)
    if len(pts):
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        pcd.colors = o3d.utility.Vector3dVector(cols)
        out["points"] = pcd
    traj = snapshot.camera_positions()
    if len(traj) >= 2:
        ls = o3d.geometry.LineSet(
            o3d.utility.Vector3dVector(traj), o3d.utility.Vector2iVector(np.stack([np.arange(len(traj) - 1), np.arange(1, len(traj))], 1))
        )
        ls.paint_uniform_color(trajectory_rgb)
        out["trajectory"] = ls
    kp, kl = _frusta(snapshot, snapshot.keyframe_world_from_cam, depth)
    if len(kp):
        ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(kp), o3d.utility.Vector2iVector(kl))
        ls.paint_uniform_color(KEYFRAME_RGB)
        out["keyframes"] = ls
    if snapshot.current_world_from_cam is not None:
        cp, cl = frustum_lines(snapshot.camera, snapshot.current_world_from_cam, depth * 1.8)
        ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(cp), o3d.utility.Vector2iVector(cl))
        ls.paint_uniform_color(CURRENT_RGB)
        out["current"] = ls
    return out


def apply_default_view(vis: Any, snapshot: MapSnapshot, zoom: float = 0.7) -> None:
    view = default_view(snapshot)
    vc = vis.get_view_control()
    vc.set_lookat(view["lookat"])
    vc.set_front(view["front"])
    vc.set_up(view["up"])
    vc.set_zoom(zoom)


def _fit_points(snapshot: MapSnapshot) -> tuple[np.ndarray, np.ndarray]:
    """(map points subsample, camera points) that the view should contain."""
    pts, _ = display_points(snapshot, 20_000)
    cams = [snapshot.camera_positions()]
    depth = frustum_size(snapshot)
    for poses in (snapshot.keyframe_world_from_cam,):
        p, _ = _frusta(snapshot, poses, depth)
        cams.append(p)
    if snapshot.current_world_from_cam is not None:
        cams.append(frustum_lines(snapshot.camera, snapshot.current_world_from_cam, depth * 1.8)[0])
    return pts, np.vstack([c for c in cams if len(c)]) if any(len(c) for c in cams) else np.zeros((0, 3))


def fit_view(vis: Any, snapshot: MapSnapshot, width: int, height: int, zoom: float, fill: float = 0.85) -> None:
    """Re-centre and re-zoom so the map (1st-99th percentile of projected points) and every
    camera fill about ``fill`` of the image."""
    vc = vis.get_view_control()
    params = vc.convert_to_pinhole_camera_parameters()
    K = np.asarray(params.intrinsic.intrinsic_matrix, dtype=np.float64)
    cam_from_world = np.asarray(params.extrinsic, dtype=np.float64)
    pts, cams = _fit_points(snapshot)

    def project(p: np.ndarray) -> np.ndarray:
        if not len(p):
            return np.zeros((0, 2))
        q = p @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
        q = q[q[:, 2] > 1e-6]
        return q[:, :2] / q[:, 2:3] * np.diag(K)[:2] + K[:2, 2]

    uv_pts, uv_cams = project(pts), project(cams)
    los, his = [], []
    if len(uv_pts) >= 10:
        los.append(np.percentile(uv_pts, 1, axis=0))
        his.append(np.percentile(uv_pts, 99, axis=0))
    elif len(uv_pts):
        los.append(uv_pts.min(axis=0))
        his.append(uv_pts.max(axis=0))
    if len(uv_cams):
        los.append(uv_cams.min(axis=0))
        his.append(uv_cams.max(axis=0))
    if not los:
        return
    lo, hi = np.min(los, axis=0), np.max(his, axis=0)
    span = np.maximum(hi - lo, 1.0)
    scale = float(np.clip(max(span[0] / (fill * width), span[1] / (fill * height)), 0.02, 50.0))
    centre_px = (lo + hi) / 2.0
    lookat = default_view(snapshot)["lookat"]
    z = float((cam_from_world[:3, :3] @ lookat + cam_from_world[:3, 3])[2])
    if z > 1e-6:
        d = centre_px - K[:2, 2]
        shift_cam = np.array([d[0] * z / K[0, 0], d[1] * z / K[1, 1], 0.0])
        lookat = lookat + cam_from_world[:3, :3].T @ shift_cam
        vc.set_lookat(lookat)
    vc.set_zoom(zoom * scale)


def legend_text(snapshot: MapSnapshot) -> str:
    traj = snapshot.camera_positions()
    length = float(np.linalg.norm(np.diff(traj, axis=0), axis=1).sum()) if len(traj) > 1 else 0.0
    parts = []
    if snapshot.frame_index >= 0:
        parts.append(f"frame {snapshot.frame_index}")
    if snapshot.state:
        parts.append(snapshot.state)
    parts += [
        f"{len(traj)} poses ({length:.2f} m)",
        f"{len(snapshot.keyframe_world_from_cam)} keyframes",
        f"{len(snapshot.points_world)} points",
    ]
    return " | ".join(parts)


def _draw_legend(rgb: np.ndarray, snapshot: MapSnapshot) -> np.ndarray:
    img = np.ascontiguousarray(rgb)
    scale = max(img.shape[1] / 1280.0, 0.5)
    y = int(28 * scale)
    cv2.putText(img, legend_text(snapshot), (int(12 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (30, 30, 30), max(int(2 * scale), 1), cv2.LINE_AA)
    x = int(12 * scale)
    for label, col in (("trajectory", TRAJECTORY_RGB), ("keyframes", KEYFRAME_RGB), ("current", CURRENT_RGB)):
        y2 = int(58 * scale)
        c = tuple(int(255 * v) for v in col)
        cv2.line(img, (x, y2 - int(6 * scale)), (x + int(24 * scale), y2 - int(6 * scale)), c, max(int(3 * scale), 1), cv2.LINE_AA)
        cv2.putText(img, label, (x + int(30 * scale), y2), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, c, max(int(2 * scale), 1), cv2.LINE_AA)
        x += int((40 + 12 * len(label)) * scale)
    return img


def overlay_polyline(img: np.ndarray, pts_world: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray,
                     rgb: tuple, thickness: int = 2) -> np.ndarray:
    """Draw a 3-D polyline (N, 3) world points onto an RGB image seen by the pinhole camera
    (K (3, 3), cam_from_world (4, 4)); segments behind the camera are skipped."""
    p_cam = pts_world @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    front = p_cam[:, 2] > 1e-6
    uv = np.full((len(p_cam), 2), np.nan)
    uv[front] = (p_cam[front, :2] / p_cam[front, 2:3]) * np.diag(K)[:2] + K[:2, 2]
    color = tuple(int(255 * v) for v in rgb)
    out = np.ascontiguousarray(img)
    shift = 4
    for a, b in zip(uv[:-1], uv[1:]):
        if np.isfinite(a).all() and np.isfinite(b).all() and np.abs(np.r_[a, b]).max() < 1e5:
            pa = tuple(int(round(v * (1 << shift))) for v in a)
            pb = tuple(int(round(v * (1 << shift))) for v in b)
            cv2.line(out, pa, pb, color, thickness, cv2.LINE_AA, shift)
    return out


def _render_open3d(snapshot: MapSnapshot, width: int, height: int, point_size: float) -> np.ndarray:
    """(height, width, 3) uint8 RGB rendered offscreen with Open3D."""
    import os
    import tempfile

    # GLFW complains on stderr when XDG_RUNTIME_DIR is unset (headless machines, CI)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="slam-xdg-")
    import open3d as o3d

    geoms = build_open3d_geometries(snapshot)
    if not geoms:
        raise RuntimeError("nothing to draw (empty snapshot)")
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        vis = o3d.visualization.Visualizer()
        if not vis.create_window(window_name="slam-render", width=width, height=height, visible=False):
            raise RuntimeError("Open3D could not create an offscreen window")
    try:
        for g in geoms.values():
            vis.add_geometry(g)
        opt = vis.get_render_option()
        opt.point_size = float(point_size)
        opt.background_color = np.asarray(BACKGROUND_RGB)
        opt.line_width = 2.0  # honoured where the GL driver supports wide lines
        zoom = 0.7
        apply_default_view(vis, snapshot, zoom)
        vis.poll_events()
        vis.update_renderer()
        fit_view(vis, snapshot, width, height, zoom)
        vis.poll_events()
        vis.update_renderer()
        buf = np.asarray(vis.capture_screen_float_buffer(do_render=True))
        params = vis.get_view_control().convert_to_pinhole_camera_parameters()
    finally:
        vis.destroy_window()
    img = np.clip(np.round(buf * 255.0), 0, 255).astype(np.uint8)
    # GL lines are 1 px wide: draw the trajectory again on top, thick and anti-aliased
    traj = snapshot.camera_positions()
    if len(traj) >= 2:
        K = np.asarray(params.intrinsic.intrinsic_matrix, dtype=np.float64)
        cam_from_world = np.asarray(params.extrinsic, dtype=np.float64)
        img = overlay_polyline(img, traj, K, cam_from_world, TRAJECTORY_RGB, thickness=max(3, width // 400))
    if img.shape[:2] != (height, width):
        raise RuntimeError(f"Open3D rendered {img.shape[1]}x{img.shape[0]} instead of {width}x{height}")
    bg = np.array([int(255 * v) for v in BACKGROUND_RGB], np.uint8)
    if not np.any(img != bg):
        raise RuntimeError("Open3D rendered an empty image")
    return img


def _render_matplotlib(snapshot: MapSnapshot, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB: matplotlib 3D plot of the same content (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    view = default_view(snapshot)
    up, front = view["world_up"], view["front"]
    e1 = np.cross(up, front)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    basis = np.stack([e1, e2, up])  # rows: plot x, y, z (z = up)
    centre = view["lookat"]

    def tf(p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, dtype=np.float64) - centre) @ basis.T

    fig = Figure(figsize=(width / 100.0, height / 100.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="3d")
    pts, cols = display_points(snapshot, 60_000)
    if len(pts):
        q = tf(pts)
        ax.scatter(q[:, 0], q[:, 1], q[:, 2], s=1.0, c=cols, depthshade=False, linewidths=0)
    traj = snapshot.camera_positions()
    if len(traj):
        q = tf(traj)
        ax.plot(q[:, 0], q[:, 1], q[:, 2], color=TRAJECTORY_RGB, linewidth=1.5)
    depth = frustum_size(snapshot)
    for poses, col, d in ((snapshot.keyframe_world_from_cam, KEYFRAME_RGB, depth),):
        for pose in poses:
            p, lines = frustum_lines(snapshot.camera, pose, d)
            q = tf(p)
            for a, b in lines:
                ax.plot(*q[[a, b]].T, color=col, linewidth=0.6)
    if snapshot.current_world_from_cam is not None:
        p, lines = frustum_lines(snapshot.camera, snapshot.current_world_from_cam, depth * 1.8)
        q = tf(p)
        for a, b in lines:
            ax.plot(*q[[a, b]].T, color=CURRENT_RGB, linewidth=1.2)
    lo, hi = scene_bounds(snapshot)
    corners = tf(np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]))
    half = max(0.75 * float(np.abs(corners).max()), 1e-3)
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_zlim(-half, half)
    ax.set_box_aspect((1, 1, 1))
    f = front @ basis.T
    ax.view_init(elev=float(np.degrees(np.arcsin(np.clip(f[2], -1, 1)))), azim=float(np.degrees(np.arctan2(f[1], f[0]))))
    ax.set_axis_off()
    ax.set_title(legend_text(snapshot) + f"  (view {2 * half:.2f} m across)", fontsize=10)
    if snapshot.is_empty:
        ax.text2D(0.5, 0.5, "empty map", transform=ax.transAxes, ha="center")
    fig.subplots_adjust(0, 0, 1, 0.95)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3])


def render_map_png(
    snapshot: MapSnapshot,
    path: Union[str, Path],
    width: int = 1280,
    height: int = 960,
    backend: str = "auto",
    point_size: float = 3.0,
) -> Path:
    """Render trajectory, keyframes, current camera and coloured map points to a PNG.

    backend: "auto" (Open3D offscreen, matplotlib if that fails), "open3d" (errors propagate),
    or "matplotlib". Returns the path written. The image is exactly ``width`` x ``height``.
    """
    if backend not in ("auto", "open3d", "matplotlib"):
        raise ValueError(f"backend {backend!r} is not valid; choose one of auto, open3d, matplotlib")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img: Optional[np.ndarray] = None
    used = backend
    if backend in ("auto", "open3d"):
        try:
            img = _draw_legend(_render_open3d(snapshot, width, height, point_size), snapshot)
            used = "open3d"
        except Exception as exc:  # noqa: BLE001 - fall back, and say so
            if backend == "open3d":
                raise
            LOG.warning("Open3D offscreen rendering unavailable (%s: %s); rendering %s with matplotlib instead", type(exc).__name__, exc, path.name)
    if img is None:
        img = _render_matplotlib(snapshot, width, height)
        used = "matplotlib"
    if img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}; check that the folder is writable")
    LOG.info("map image written to %s (%s, %dx%d)", path, used, width, height)
    return path
