"""``map.png``: the map and the trajectory drawn offscreen, written at the end of every run.

Two panels side by side: a perspective view from behind and above the cameras, looking at the
map, and an orthographic top view along the scene's "up" (:func:`slam.viz.base.estimate_up`)
with a metric grid and a scale bar. Both frame the map and every camera together, with robust
bounds (percentiles of the map points, so far outliers do not shrink the scene).

Drawn: map points as depth-sorted disks in their own image colour (a darker rim keeps white and
overlapping points apart; the size follows the point density, and the distance in the
perspective view), the trajectory as a line (start marked), keyframes as frusta scaled to the
scene (:func:`slam.viz.base.frustum_size`; the current camera has the same size, in red), loop
edges in magenta, the ground truth (when the snapshot has it) in grey; a caption with the
sequence and the counts, and a legend.

A pure numpy/OpenCV rasteriser: no OpenGL, no display, the same pixels on every machine; about
0.3 s of CPU for 100k points, 1.7 s for a million (both panels).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from slam.viz.base import MapSnapshot, default_view, frustum_lines, frustum_size

LOG = logging.getLogger(__name__)

# RGB colours, 0-255
BACKGROUND = (250, 250, 250)
PANEL = (222, 225, 230)  # light grey: white and black points both show
TRAJECTORY = (25, 90, 240)
KEYFRAME = (20, 150, 40)
CURRENT = (225, 25, 25)
GROUNDTRUTH = (90, 90, 90)
LOOP = (220, 0, 200)
GRID = (205, 208, 214)
GROUND_GRID = (180, 184, 192)  # the top view's grid laid on the floor / desk plane, in the perspective view
TEXT = (30, 30, 30)

FRAME_PCT = 4.0  # the views frame the map points between this percentile and 100 minus it

__all__ = ["render_map_png", "render_map_image", "ViewCamera", "perspective_camera", "top_camera", "legend_text"]


@dataclass
class ViewCamera:
    """The virtual camera of a panel.

    cam_from_world: (4, 4) float64, camera axes x right, y down, z into the picture.
    f:      perspective: focal length in px; orthographic: px per metre.
    cx, cy: principal point, px. width, height: panel size, px.
    ortho:  True for an orthographic (top) view.
    """

    cam_from_world: np.ndarray
    f: float
    cx: float
    cy: float
    width: int
    height: int
    ortho: bool = False

    def to_cam(self, p: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera coordinates (metres)."""
        p = np.asarray(p, np.float64)
        r, t = self.cam_from_world[:3, :3], self.cam_from_world[:3, 3]
        # three axpy passes: much faster than a (N, 3) @ (3, 3) matmul for large N
        return np.stack([p[:, 0] * r[i, 0] + p[:, 1] * r[i, 1] + p[:, 2] * r[i, 2] + t[i] for i in range(3)], axis=1)

    def project_cam(self, q: np.ndarray) -> np.ndarray:
        """(N, 3) camera coordinates -> (N, 2) pixels (perspective: valid for z > 0 only)."""
        if self.ortho:
            return q[:, :2] * self.f + np.array([self.cx, self.cy])
        z = np.maximum(q[:, 2:3], 1e-9)
        return q[:, :2] / z * self.f + np.array([self.cx, self.cy])

    def project(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> (N, 2) pixels and (N,) depth (metres along the view axis)."""
        q = self.to_cam(p)
        return self.project_cam(q), q[:, 2]

    @property
    def near(self) -> float:
        return -np.inf if self.ortho else 1e-3


def _look_rotation(view_dir: np.ndarray, screen_up: np.ndarray) -> np.ndarray:
    """(3, 3) cam_from_world rotation for a camera looking along ``view_dir`` with ``screen_up``
    pointing up in the picture."""
    z = view_dir / np.linalg.norm(view_dir)
    y = -(screen_up - z * (screen_up @ z))
    y = y / np.linalg.norm(y)
    x = np.cross(y, z)
    return np.stack([x, y, z])


def _fit_sets(snapshot: MapSnapshot, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """(map points to frame robustly (P, 3), cameras to frame entirely (C, 3)), world metres."""
    pts = snapshot.points_world.astype(np.float64)
    if len(pts) > 20000:
        pts = pts[np.linspace(0, len(pts) - 1, 20000).astype(np.int64)]
    cams = [snapshot.trajectory_world_from_cam[:, :3, 3], snapshot.groundtruth_xyz]
    for pose in snapshot.keyframe_world_from_cam:
        cams.append(frustum_lines(snapshot.camera, pose, depth)[0])
    if snapshot.current_world_from_cam is not None:
        cams.append(frustum_lines(snapshot.camera, snapshot.current_world_from_cam, depth)[0])
    return pts, np.vstack(cams)


def _robust_box(uv_pts: np.ndarray, uv_cams: np.ndarray, pct: float = FRAME_PCT) -> Optional[tuple[np.ndarray, np.ndarray]]:
    los, his = [], []
    if len(uv_pts) >= 20:
        los.append(np.percentile(uv_pts, pct, axis=0))
        his.append(np.percentile(uv_pts, 100 - pct, axis=0))
    elif len(uv_pts):
        los.append(uv_pts.min(axis=0))
        his.append(uv_pts.max(axis=0))
    if len(uv_cams):
        los.append(uv_cams.min(axis=0))
        his.append(uv_cams.max(axis=0))
    if not los:
        return None
    return np.min(los, axis=0), np.max(his, axis=0)


def perspective_camera(snapshot: MapSnapshot, width: int, height: int, fov_deg: float = 30.0,
                       fill: float = 0.9, view: Optional[dict] = None, depth: Optional[float] = None) -> ViewCamera:
    """A perspective camera from behind and above the cameras (:func:`default_view`), placed so
    that every camera and the map points (4th-96th percentile in the picture) fit into ``fill``
    of the panel. ``view`` (:func:`default_view`) and ``depth`` (:func:`frustum_size`) are
    computed when not given."""
    view = default_view(snapshot) if view is None else view
    rot = _look_rotation(-view["front"], view["up"])
    f = 0.5 * height / np.tan(np.radians(fov_deg) / 2.0)
    pts, cams = _fit_sets(snapshot, frustum_size(snapshot) if depth is None else depth)
    centre = np.asarray(view["lookat"], np.float64)
    half = np.array([0.5 * width, 0.5 * height]) * fill / f  # tan of the half field of view, x and y
    dist = float(view["extent"])
    for _ in range(4):
        rel_p, rel_c = (pts - centre) @ rot.T, (cams - centre) @ rot.T
        # the eye at centre - dist * z sees a point r at depth dist + r_z: it fits when
        # |r_xy| <= half * (dist + r_z)
        need_c = (np.abs(rel_c[:, :2]) / half - rel_c[:, 2:3]).max() if len(rel_c) else -np.inf
        need_p = np.percentile((np.abs(rel_p[:, :2]) / half - rel_p[:, 2:3]).max(axis=1), 100 - 2 * FRAME_PCT) if len(rel_p) else -np.inf
        dist = max(float(need_c), float(need_p), 1e-3)
        # re-centre on the middle of what is framed (in the picture plane through the centre)
        q_p, q_c = rel_p + [0, 0, dist], rel_c + [0, 0, dist]
        q_p, q_c = q_p[q_p[:, 2] > 1e-6], q_c[q_c[:, 2] > 1e-6]
        box = _robust_box(q_p[:, :2] / q_p[:, 2:3], q_c[:, :2] / q_c[:, 2:3])
        if box is None:
            break
        mid = (box[0] + box[1]) / 2.0 * dist
        centre = centre + rot[0] * mid[0] + rot[1] * mid[1]
    eye = centre - rot[2] * dist
    cam_from_world = np.eye(4)
    cam_from_world[:3, :3] = rot
    cam_from_world[:3, 3] = -rot @ eye
    return ViewCamera(cam_from_world, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def top_camera(snapshot: MapSnapshot, width: int, height: int, fill: float = 0.88, view: Optional[dict] = None,
               depth: Optional[float] = None) -> ViewCamera:
    """An orthographic camera looking down along the scene's up, the cameras' mean heading
    pointing up in the picture, scaled so that every camera and the map points (4th-96th
    percentile) fit into ``fill`` of the panel."""
    view = default_view(snapshot) if view is None else view
    rot = _look_rotation(-view["world_up"], view["forward"])
    pts, cams = _fit_sets(snapshot, frustum_size(snapshot) if depth is None else depth)
    box = _robust_box(pts @ rot[:2].T, cams @ rot[:2].T)
    if box is None:
        box = (-np.ones(2), np.ones(2))
    span = np.maximum(box[1] - box[0], 1e-3)
    scale = float(min(fill * width / span[0], fill * height / span[1]))
    mid = (box[0] + box[1]) / 2.0
    cam_from_world = np.eye(4)
    cam_from_world[:3, :3] = rot
    cam_from_world[:2, 3] = -mid
    return ViewCamera(cam_from_world, scale, (width - 1) / 2.0, (height - 1) / 2.0, width, height, ortho=True)


# -- rasterising ------------------------------------------------------------------------------------

def _disk(radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel offsets (dx, dy) of a disk and their shade (1 inside, 0.72 on a one-pixel rim from 2.5 px)."""
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    d = np.hypot(dx, dy)
    inside = d <= radius + 0.25
    shade = np.where(d > radius - 1.0, 0.72, 1.0) if radius >= 2.5 else np.ones_like(d)
    return dx[inside].ravel(), dy[inside].ravel(), shade[inside].ravel()


def splat_points(img: np.ndarray, uv: np.ndarray, depth: np.ndarray, rgb: np.ndarray, radius: np.ndarray) -> int:
    """Draw points as disks in place, nearer points over farther ones (a z-buffer per pixel).

    img: (H, W, 3) uint8 RGB. uv: (N, 2) pixels; depth: (N,) (smaller = nearer); rgb: (N, 3)
    uint8; radius: (N,) px (rounded to half pixels). Returns the number of pixels drawn.
    """
    h, w = img.shape[:2]
    rq = np.clip(np.round(np.asarray(radius, np.float64) * 2.0) / 2.0, 0.5, 12.0)
    pad = int(np.ceil(rq.max())) if len(rq) else 0
    ui, vi = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
    keep = np.nonzero((ui >= -pad) & (ui < w + pad) & (vi >= -pad) & (vi < h + pad))[0]
    n = len(keep)
    if n == 0:
        return 0
    order = keep[np.argsort(depth[keep], kind="stable")]  # nearest first: rank 0 wins
    ui, vi, rq, rgb = ui[order], vi[order], rq[order], rgb[order]
    # a z-buffer with a margin of 2 * pad px all round (centres up to pad px outside, disks
    # another pad px): no bounds checks per disk pixel
    m = 2 * pad
    wp, hp = w + 2 * m, h + 2 * m
    base = ((vi + m) * wp + (ui + m)).astype(np.int32)
    pix_parts, rank_parts, shade_parts = [], [], []
    for r in np.unique(rq):
        sel = np.nonzero(rq == r)[0]
        dx, dy, shade = _disk(float(r))
        pix_parts.append((base[sel, None] + (dy * wp + dx).astype(np.int32)[None]).ravel())
        rank_parts.append(np.repeat(sel.astype(np.int32), len(dx)))
        shade_parts.append(np.tile(shade, len(sel)))
    pix, rank, shade = np.concatenate(pix_parts), np.concatenate(rank_parts), np.concatenate(shade_parts)
    zbuf = np.full(hp * wp, n, np.int32)
    np.minimum.at(zbuf, pix, rank)  # the nearest point's rank per pixel
    win = np.nonzero(rank == zbuf[pix])[0]  # one entry per pixel: a disk covers a pixel once
    row, col = np.divmod(pix[win], wp)
    row, col = row - m, col - m
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
    win, row, col = win[inside], row[inside], col[inside]
    img[row, col] = np.clip(rgb[rank[win]].astype(np.float32) * shade[win, None].astype(np.float32), 0, 255).astype(np.uint8)
    return int(len(win))


def _draw_segments(img: np.ndarray, cam: ViewCamera, a: np.ndarray, b: np.ndarray, rgb: tuple,
                   thickness: int = 1, halo: bool = True) -> None:
    """Draw 3-D segments (E, 3) a -> b (world), clipped at the near plane, anti-aliased, with a
    light halo that separates them from the points below."""
    if not len(a):
        return
    qa, qb = cam.to_cam(a), cam.to_cam(b)
    if not cam.ortho:
        za, zb = qa[:, 2], qb[:, 2]
        keep = (za > cam.near) | (zb > cam.near)
        qa, qb, za, zb = qa[keep], qb[keep], za[keep], zb[keep]
        # move the end behind the near plane onto it
        t = np.clip((cam.near - za) / np.where(np.abs(zb - za) > 1e-12, zb - za, 1e-12), 0.0, 1.0)
        qa = np.where((za < cam.near)[:, None], qa + (qb - qa) * t[:, None], qa)
        t = np.clip((cam.near - zb) / np.where(np.abs(za - zb) > 1e-12, za - zb, 1e-12), 0.0, 1.0)
        qb = np.where((zb < cam.near)[:, None], qb + (qa - qb) * t[:, None], qb)
    pa, pb = cam.project_cam(qa), cam.project_cam(qb)
    lim = 4.0 * max(cam.width, cam.height)
    ok = np.isfinite(pa).all(1) & np.isfinite(pb).all(1) & (np.abs(np.c_[pa, pb]).max(axis=1) < lim)
    shift = 4
    ia = np.round(pa[ok] * (1 << shift)).astype(np.int64)
    ib = np.round(pb[ok] * (1 << shift)).astype(np.int64)
    passes = ([(PANEL, thickness + 2)] if halo else []) + [(rgb, thickness)]
    for col, th in passes:
        for p0, p1 in zip(ia, ib):
            cv2.line(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), col, th, cv2.LINE_AA, shift)


def _polyline(img: np.ndarray, cam: ViewCamera, xyz: np.ndarray, rgb: tuple, thickness: int, halo: bool = True) -> None:
    if len(xyz) >= 2:
        _draw_segments(img, cam, xyz[:-1], xyz[1:], rgb, thickness, halo)


def _frusta(img: np.ndarray, cam: ViewCamera, snapshot: MapSnapshot, poses: np.ndarray, depth: float,
            rgb: tuple, thickness: int) -> None:
    a, b = [], []
    for pose in poses:
        p, lines = frustum_lines(snapshot.camera, pose, depth)
        a.append(p[lines[:, 0]])
        b.append(p[lines[:, 1]])
    if a:
        _draw_segments(img, cam, np.vstack(a), np.vstack(b), rgb, thickness)


def _nice_step(length: float) -> float:
    """The largest of 1, 2, 5 x 10^k not above ``length``."""
    if length <= 0:
        return 1.0
    k = np.floor(np.log10(length))
    for m in (5.0, 2.0, 1.0):
        if m * 10 ** k <= length:
            return float(m * 10 ** k)
    return float(10 ** k)


def _fmt_m(v: float, metric: bool = True) -> str:
    """A length for a label: "20 cm", "2 m"; "0.2 units" when the map has no metric scale."""
    if not metric:
        return f"{v:g} units"
    return f"{v * 100:g} cm" if v < 1.0 else f"{v:g} m"


def _text(img: np.ndarray, s: str, org: tuple, scale: float, rgb: tuple = TEXT, thick: int = 1) -> None:
    cv2.putText(img, s, (int(org[0]), int(org[1])), cv2.FONT_HERSHEY_DUPLEX, scale, rgb, thick, cv2.LINE_AA)


def _grid_step(top: ViewCamera) -> float:
    """Grid spacing (metres) of the top view: a round length about a fifth of its width."""
    return _nice_step(0.2 * top.width / top.f)


def ground_grid(top: ViewCamera, up: np.ndarray, ground: float) -> tuple[np.ndarray, np.ndarray]:
    """Segments (E, 3) a -> b (world, metres) of the top view's grid laid on the ground plane
    ``up . p = ground`` (the floor or desk top), over the area the top view shows: drawn in
    the perspective view, they show where the ground is."""
    step = _grid_step(top)
    rot = top.cam_from_world[:3, :3]
    mid = -top.cam_from_world[:2, 3]
    half = np.array([top.width, top.height]) / (2.0 * top.f)
    xs = np.arange(np.ceil((mid[0] - half[0]) / step), np.floor((mid[0] + half[0]) / step) + 1) * step
    ys = np.arange(np.ceil((mid[1] - half[1]) / step), np.floor((mid[1] + half[1]) / step) + 1) * step
    lo, hi = mid - half, mid + half
    a = [np.c_[xs, np.full(len(xs), lo[1])], np.c_[np.full(len(ys), lo[0]), ys]]
    b = [np.c_[xs, np.full(len(xs), hi[1])], np.c_[np.full(len(ys), hi[0]), ys]]
    a2, b2 = np.vstack(a), np.vstack(b)

    def world(q: np.ndarray) -> np.ndarray:
        return q[:, :1] * rot[0] + q[:, 1:2] * rot[1] + ground * up

    return world(a2), world(b2)


def _grid(img: np.ndarray, cam: ViewCamera) -> float:
    """Metric grid lines of the top view, drawn under everything else; returns the step (m)."""
    step = _grid_step(cam)
    half_w, half_h = cam.width / (2 * cam.f), cam.height / (2 * cam.f)
    cx_m, cy_m = -cam.cam_from_world[0, 3], -cam.cam_from_world[1, 3]  # panel centre, metres
    for x in np.arange(np.floor((cx_m - half_w) / step) * step, cx_m + half_w + step, step):
        u = int(round((x + cam.cam_from_world[0, 3]) * cam.f + cam.cx))
        cv2.line(img, (u, 0), (u, cam.height - 1), GRID, 1)
    for y in np.arange(np.floor((cy_m - half_h) / step) * step, cy_m + half_h + step, step):
        v = int(round((y + cam.cam_from_world[1, 3]) * cam.f + cam.cy))
        cv2.line(img, (0, v), (cam.width - 1, v), GRID, 1)
    return step


def _scale_bar(img: np.ndarray, cam: ViewCamera, ui: float, metric: bool, step: float) -> None:
    """The grid's scale bar and its label in the bottom-left corner, drawn last on a panel-coloured
    box so that map points do not cover the label."""
    x0, y0 = int(16 * ui), cam.height - int(18 * ui)
    x1 = x0 + int(round(step * cam.f))
    note = "grid" if metric else "grid; monocular: map units, not metres"
    label = f"{_fmt_m(step, metric)} ({note})"
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_DUPLEX, 0.5 * ui, 1)
    pad = int(6 * ui)
    cv2.rectangle(img, (x0 - pad, y0 - max(th, int(5 * ui)) - pad), (x1 + int(8 * ui) + tw + pad, cam.height - 1), PANEL, -1)
    cv2.line(img, (x0, y0), (x1, y0), TEXT, max(int(2 * ui), 1))
    for x in (x0, x1):
        cv2.line(img, (x, y0 - int(5 * ui)), (x, y0 + int(5 * ui)), TEXT, max(int(2 * ui), 1))
    _text(img, label, (x1 + int(8 * ui), y0 + int(5 * ui)), 0.5 * ui)


def point_radius(n_visible: int, width: int, height: int) -> float:
    """Base disk radius (px) of map points: about a third of the panel covered when the points
    spread over it, between 1.5 px (dense maps) and 5 px (sparse maps)."""
    if n_visible <= 0:
        return 3.0
    return float(np.clip(np.sqrt(0.3 * width * height / (np.pi * n_visible)), 1.5, 5.0))


def _render_panel(snapshot: MapSnapshot, cam: ViewCamera, ui: float, label: str, depth_f: float,
                  grid: Optional[tuple[np.ndarray, np.ndarray]] = None) -> np.ndarray:
    img = np.full((cam.height, cam.width, 3), PANEL, np.uint8)
    step = None
    if cam.ortho and not snapshot.is_empty:
        step = _grid(img, cam)
    elif grid is not None:
        _draw_segments(img, cam, grid[0], grid[1], GROUND_GRID, 1, halo=False)
    pts = snapshot.points_world
    if len(pts):
        uv, depth = cam.project(pts)
        vis = (depth > cam.near) & (uv[:, 0] > -20) & (uv[:, 0] < cam.width + 20) & (uv[:, 1] > -20) & (uv[:, 1] < cam.height + 20)
        r0 = point_radius(int(vis.sum()), cam.width, cam.height)
        if cam.ortho:
            radius = np.full(int(vis.sum()), r0)
        else:
            d = depth[vis]
            radius = np.clip(r0 * float(np.median(d)) / np.maximum(d, 1e-6), 1.0, 2.0 * r0) if len(d) else d
        splat_points(img, uv[vis], depth[vis], snapshot.colors[vis], radius)
    lw = max(int(round(2 * ui)), 1)
    has_gt = len(snapshot.groundtruth_xyz) >= 2
    _polyline(img, cam, snapshot.groundtruth_xyz, GROUNDTRUTH, lw + 4)  # wider: shows on both sides of the estimate
    _frusta(img, cam, snapshot, snapshot.keyframe_world_from_cam, depth_f, KEYFRAME, max(lw - 1, 1))
    _polyline(img, cam, snapshot.camera_positions(), TRAJECTORY, lw, halo=not has_gt)
    loops = snapshot.loop_segments()
    if len(loops):
        _draw_segments(img, cam, loops[:, 0], loops[:, 1], LOOP, lw)
    if snapshot.current_world_from_cam is not None:
        _frusta(img, cam, snapshot, snapshot.current_world_from_cam[None], depth_f, CURRENT, lw)
    traj = snapshot.camera_positions()
    if len(traj):
        uv, depth = cam.project(traj[:1])
        if depth[0] > cam.near:
            c = (int(round(uv[0, 0])), int(round(uv[0, 1])))
            cv2.circle(img, c, int(5 * ui), PANEL, -1, cv2.LINE_AA)
            cv2.circle(img, c, int(4 * ui), TRAJECTORY, -1, cv2.LINE_AA)
    if step is not None:
        _scale_bar(img, cam, ui, snapshot.metric, step)
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_DUPLEX, 0.6 * ui, 1)
    cv2.rectangle(img, (0, 0), (int(20 * ui) + tw, int(36 * ui)), PANEL, -1)
    _text(img, label, (12 * ui, 26 * ui), 0.6 * ui)
    if snapshot.is_empty:
        _text(img, "empty map", (cam.width // 2 - 60 * ui, cam.height // 2), 0.8 * ui)
    return img


def legend_text(snapshot: MapSnapshot) -> str:
    """One line: title, frame, state, poses (path length), keyframes, points, loop edges."""
    traj = snapshot.camera_positions()
    length = float(np.linalg.norm(np.diff(traj, axis=0), axis=1).sum()) if len(traj) > 1 else 0.0
    parts = [snapshot.title] if snapshot.title else []
    if snapshot.frame_index >= 0:
        parts.append(f"frame {snapshot.frame_index}")
    if snapshot.state:
        parts.append(snapshot.state)
    parts += [
        f"{len(traj)} poses ({length:.2f} {'m' if snapshot.metric else 'units'} path)",
        f"{len(snapshot.keyframe_world_from_cam)} keyframes",
        f"{len(snapshot.points_world)} points",
        f"{len(snapshot.loop_edges)} loop edges",
    ]
    return "  |  ".join(parts)


def _legend(img: np.ndarray, snapshot: MapSnapshot, y: int, ui: float, depth: float) -> None:
    items = [("trajectory", TRAJECTORY), ("keyframes", KEYFRAME), ("current camera", CURRENT)]
    if len(snapshot.groundtruth_xyz):
        items.append(("ground truth (aligned)", GROUNDTRUTH))
    items.append((f"loop edges ({len(snapshot.loop_edges)})", LOOP))
    items.append((f"map points in their colour; frusta {_fmt_m(float(f'{depth:.2g}'), snapshot.metric)} deep", TEXT))
    x = int(14 * ui)
    for label, col in items:
        if col is not TEXT:
            cv2.line(img, (x, y - int(5 * ui)), (x + int(26 * ui), y - int(5 * ui)), col, max(int(3 * ui), 1), cv2.LINE_AA)
            x += int(32 * ui)
        _text(img, label, (x, y), 0.5 * ui)
        (tw, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_DUPLEX, 0.5 * ui, 1)
        x += tw + int(22 * ui)


def render_map_image(snapshot: MapSnapshot, width: int = 1600, height: int = 800) -> np.ndarray:
    """(height, width, 3) uint8 RGB picture of ``snapshot`` (see the module docstring)."""
    ui = max(width / 1600.0, 0.45)
    header, footer = int(44 * ui), int(34 * ui)
    ph = max(height - header - footer, 16)
    pw = max(width // 2, 16)
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    view, depth = default_view(snapshot), frustum_size(snapshot)
    persp = perspective_camera(snapshot, pw - 2, ph, view=view, depth=depth)
    top = top_camera(snapshot, width - pw - 2, ph, view=view, depth=depth)
    grid = None if not np.isfinite(view["ground"]) else ground_grid(top, view["world_up"], float(view["ground"]))
    img[header:header + ph, :pw - 2] = _render_panel(snapshot, persp, ui, "perspective view", depth, grid)
    img[header:header + ph, pw + 2:] = _render_panel(snapshot, top, ui, "top view (looking down the estimated vertical)", depth)
    cv2.rectangle(img, (0, header), (pw - 3, header + ph - 1), GRID, 1)
    cv2.rectangle(img, (pw + 2, header), (width - 1, header + ph - 1), GRID, 1)
    _text(img, legend_text(snapshot), (14 * ui, 30 * ui), 0.7 * ui, thick=max(int(round(ui)), 1))
    _legend(img, snapshot, header + ph + int(23 * ui), ui, depth)
    return img


def render_map_png(snapshot: MapSnapshot, path: Union[str, Path], width: int = 1600, height: int = 800) -> Path:
    """Write :func:`render_map_image` of ``snapshot`` to ``path`` (PNG, exactly width x height);
    returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = render_map_image(snapshot, width, height)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}; check that the folder is writable")
    LOG.info("map image written to %s (%dx%d)", path, width, height)
    return path
