"""What a viewer shows (:class:`MapSnapshot`), the viewer protocol, and shared geometry helpers.

A viewer receives immutable snapshots of the SLAM state. ``update(snapshot)`` must return at
once (store the newest snapshot; a viewer thread renders it), so a viewer never slows tracking.
The SLAM side should build a snapshot from copies of its arrays, at most a few times a second.

Nothing here imports Open3D; the Open3D viewer and renderer import it lazily.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Union, runtime_checkable

import numpy as np

from slam.errors import DeviceError

__all__ = [
    "MapSnapshot",
    "Viewer",
    "DeviceError",
    "frustum_lines",
    "scene_bounds",
    "estimate_up",
    "dominant_plane",
    "frustum_size",
    "default_view",
]


def _poses(arr: Any, name: str) -> np.ndarray:
    if arr is None:
        return np.zeros((0, 4, 4))
    a = np.asarray(arr, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 4, 4))
    if a.ndim == 2 and a.shape == (4, 4):
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (4, 4):
        raise ValueError(f"MapSnapshot.{name} must be (N, 4, 4) world_from_cam poses, got shape {a.shape}")
    return a


@dataclass
class MapSnapshot:
    """The SLAM state to draw, in the world frame (metres).

    trajectory_world_from_cam: (N, 4, 4) float64, camera poses of all tracked frames, in order.
    keyframe_world_from_cam:   (K, 4, 4) float64, keyframe poses.
    current_world_from_cam:    (4, 4) float64 pose of the latest frame, or None (lost / not started).
    points_world:              (P, 3) float32 map points, metres.
    colors:                    (P, 3) uint8 RGB per point; None = grey.
    camera:                    object with width, height, fx, fy, cx, cy (e.g. PinholeCamera), used
                               for the frustum shapes; None = a 4:3 camera with 60 deg field of view.
    state, frame_index:        optional labels (tracking state, frame number) for titles.
    loop_edges:                loop-closure edges to draw: (E, 2) int64 indices into
                               ``keyframe_world_from_cam`` (the two keyframes a loop joins), or
                               (E, 2, 3) float64 world positions of the two ends (metres); empty =
                               no loop. :meth:`loop_segments` gives (E, 2, 3) either way.
    groundtruth_xyz:           (G, 3) float64 ground-truth camera positions already aligned into the
                               map's world frame (metres), in time order; empty = none.
    title:                     caption, e.g. the sequence name ("tum/fr1_xyz (rgbd)").
    metric:                    False when lengths are in map units, not metres (a monocular map).
    """

    trajectory_world_from_cam: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    keyframe_world_from_cam: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    current_world_from_cam: Optional[np.ndarray] = None
    points_world: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    colors: Optional[np.ndarray] = None
    camera: Any = None
    state: str = ""
    frame_index: int = -1
    loop_edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    groundtruth_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    title: str = ""
    metric: bool = True

    def __post_init__(self) -> None:
        self.trajectory_world_from_cam = _poses(self.trajectory_world_from_cam, "trajectory_world_from_cam")
        self.keyframe_world_from_cam = _poses(self.keyframe_world_from_cam, "keyframe_world_from_cam")
        if self.current_world_from_cam is not None:
            cur = np.asarray(self.current_world_from_cam, dtype=np.float64)
            if cur.shape != (4, 4):
                raise ValueError(f"MapSnapshot.current_world_from_cam must be (4, 4), got {cur.shape}")
            self.current_world_from_cam = cur
        pts = np.asarray(self.points_world if self.points_world is not None else np.zeros((0, 3)), dtype=np.float32)
        if pts.size == 0:
            pts = np.zeros((0, 3), np.float32)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"MapSnapshot.points_world must be (P, 3) metres, got shape {pts.shape}")
        if self.colors is None:
            cols = np.full((len(pts), 3), 160, np.uint8)
        else:
            cols = np.asarray(self.colors)
            if cols.size == 0 and len(pts) == 0:
                cols = np.zeros((0, 3), np.uint8)
            if cols.shape != (len(pts), 3):
                raise ValueError(f"MapSnapshot.colors must be ({len(pts)}, 3) uint8 RGB, got shape {cols.shape}")
            if cols.dtype != np.uint8:
                scale = 255.0 if cols.dtype.kind == "f" and cols.size and float(cols.max()) <= 1.0 else 1.0
                cols = np.clip(np.round(cols.astype(np.float64) * scale), 0, 255).astype(np.uint8)
        finite = np.isfinite(pts).all(axis=1)
        self.points_world = pts[finite]
        self.colors = cols[finite]
        self.loop_edges = self._check_loops(self.loop_edges)
        gt = np.asarray(self.groundtruth_xyz if self.groundtruth_xyz is not None else np.zeros((0, 3)), np.float64)
        if gt.size == 0:
            gt = np.zeros((0, 3))
        if gt.ndim != 2 or gt.shape[1] != 3:
            raise ValueError(f"MapSnapshot.groundtruth_xyz must be (G, 3) metres, got shape {gt.shape}")
        self.groundtruth_xyz = gt[np.isfinite(gt).all(axis=1)]

    def _check_loops(self, edges: Any) -> np.ndarray:
        if edges is None:
            return np.zeros((0, 2), np.int64)
        e = np.asarray(edges)
        if e.size == 0:
            return np.zeros((0, 2), np.int64)
        if e.ndim == 2 and e.shape[1] == 2:
            if e.dtype.kind not in "iu":
                raise ValueError(f"MapSnapshot.loop_edges as (E, 2) must hold integer keyframe indices, got {e.dtype}")
            n_kf = len(self.keyframe_world_from_cam)
            if e.min() < 0 or e.max() >= n_kf:
                raise ValueError(f"MapSnapshot.loop_edges index a keyframe outside 0..{n_kf - 1} "
                                 f"(got {int(e.min())}..{int(e.max())})")
            return e.astype(np.int64)
        if e.ndim == 3 and e.shape[1:] == (2, 3):
            return e.astype(np.float64)
        raise ValueError(f"MapSnapshot.loop_edges must be (E, 2) keyframe indices or (E, 2, 3) world positions, got shape {e.shape}")

    def loop_segments(self) -> np.ndarray:
        """(E, 2, 3) float64 world positions (metres) of the two ends of each loop edge."""
        e = self.loop_edges
        if e.ndim == 3:
            return e.copy()
        if not len(e):
            return np.zeros((0, 2, 3))
        return self.keyframe_world_from_cam[:, :3, 3][e]

    @property
    def is_empty(self) -> bool:
        return (
            len(self.points_world) == 0
            and len(self.trajectory_world_from_cam) == 0
            and len(self.keyframe_world_from_cam) == 0
            and self.current_world_from_cam is None
        )

    def camera_positions(self) -> np.ndarray:
        """(N, 3) trajectory positions (world frame, metres)."""
        return self.trajectory_world_from_cam[:, :3, 3].copy()


@runtime_checkable
class Viewer(Protocol):
    """A live viewer. ``update`` must not block: it stores the newest snapshot only."""

    def update(self, snapshot: MapSnapshot) -> None: ...

    def close(self) -> None: ...

    def save_png(self, path: Union[str, Path], snapshot: MapSnapshot) -> Path: ...


def _intrinsics(camera: Any) -> tuple[float, float, float, float, float, float]:
    if camera is None:
        w, h = 640.0, 480.0
        f = 0.5 * w / np.tan(np.radians(30.0))
        return w, h, f, f, (w - 1) / 2, (h - 1) / 2
    return (float(camera.width), float(camera.height), float(camera.fx), float(camera.fy), float(camera.cx), float(camera.cy))


def frustum_lines(camera: Any, world_from_cam: np.ndarray, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Wireframe of a camera: (5, 3) world points (centre, then the image corners at ``depth``
    metres along the optical axis) and (8, 2) int line indices into them."""
    w, h, fx, fy, cx, cy = _intrinsics(camera)
    corners_px = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    rays = np.stack([(corners_px[:, 0] - cx) / fx, (corners_px[:, 1] - cy) / fy, np.ones(4)], axis=1)
    pts_cam = np.vstack([np.zeros(3), rays * depth])
    pts_world = pts_cam @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]
    lines = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]], dtype=np.int64)
    return pts_world, lines




def _camera_poses(snapshot: MapSnapshot) -> np.ndarray:
    """(N, 4, 4) world_from_cam of every camera in the snapshot (trajectory, else keyframes,
    plus the current one)."""
    poses = snapshot.trajectory_world_from_cam
    if not len(poses):
        poses = snapshot.keyframe_world_from_cam
    if snapshot.current_world_from_cam is not None:
        poses = np.concatenate([poses, snapshot.current_world_from_cam[None]])
    return poses


def _camera_centres(snapshot: MapSnapshot) -> np.ndarray:
    """(N, 3) every camera position and ground-truth position of the snapshot, metres."""
    parts = [snapshot.trajectory_world_from_cam[:, :3, 3], snapshot.keyframe_world_from_cam[:, :3, 3],
             snapshot.groundtruth_xyz]
    if snapshot.current_world_from_cam is not None:
        parts.append(snapshot.current_world_from_cam[None, :3, 3])
    return np.vstack(parts)


def scene_bounds(snapshot: MapSnapshot, percentile: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Robust (lo, hi) corners (3,) of the scene, metres: the map points between the given
    percentiles (per axis; far outliers do not count) plus every camera and ground-truth
    position, padded by 5 %; a 2 m box around the origin when empty."""
    parts = [_camera_centres(snapshot)]
    if len(snapshot.points_world):
        p = snapshot.points_world
        if len(p) > 50_000:  # percentiles of an even subsample: the same bounds, much faster
            p = p[np.linspace(0, len(p) - 1, 50_000).astype(np.int64)]
        parts.append(np.percentile(p.astype(np.float64), [percentile, 100 - percentile], axis=0))
    allp = np.vstack(parts)
    if not len(allp):
        return -np.ones(3), np.ones(3)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    pad = np.maximum(hi - lo, 1e-3) * 0.05 + 1e-3
    return lo - pad, hi + pad


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.asarray(fallback, np.float64)


def estimate_up(snapshot: MapSnapshot) -> np.ndarray:
    """(3,) unit vector of the scene's vertical ("up") in the world frame, from the cameras.

    1. Minus the mean camera y axis: cameras are held upright (image y down), so this is up
       up to the mean tilt (for a TUM run whose world is the first camera: its -y).
    2. When the cameras' headings vary enough (their x axes, horizontal for a camera without
       roll, span a plane: second eigenvalue of mean(x x^T) > 25 % of the first), up is the
       normal of that plane; this removes a common tilt (a camera looking down at a desk).
    3. When the camera centres lie on a plane (a car, a robot at constant height: smallest
       variance < 1 % of the middle one, over at least 10 cameras) whose normal is within 30 deg
       of the estimate, that normal.
    4. When the map has a dominant plane below the cameras (a floor, a road, a desk top: at
       least 15 % of the points within 1 % of the scene diagonal, found by a seeded RANSAC)
       whose normal is within 50 deg of the estimate, that normal: the truest "up" there is
       (on TUM fr1_xyz within 2 deg of gravity where the cameras' -y is 42 deg off; on the
       synthetic default sequence 5 deg, where it is 19 deg off).
    Without cameras: world -y (the first camera's up in a camera-rooted world).
    """
    return _up_and_ground(snapshot)[0]


def _up_and_ground(snapshot: MapSnapshot) -> tuple[np.ndarray, Optional[float]]:
    """(:func:`estimate_up`, offset d (metres) of the dominant plane n . p = d when it gave the
    up, else None)."""
    poses = _camera_poses(snapshot)
    if not len(poses):
        return np.array([0.0, -1.0, 0.0]), None
    up = _unit(-poses[:, :3, 1].mean(axis=0), np.array([0.0, -1.0, 0.0]))
    xs = poses[:, :3, 0]
    w, vec = np.linalg.eigh(xs.T @ xs / len(xs))  # ascending
    if w[1] > 0.25 * w[2]:
        n = vec[:, 0] * np.sign(vec[:, 0] @ up or 1.0)
        if n @ up > np.cos(np.radians(60.0)):
            up = n
    centres = poses[:, :3, 3]
    if len(centres) >= 10:
        c = centres - centres.mean(axis=0)
        w, vec = np.linalg.eigh(c.T @ c / len(c))
        if w[2] > 1e-8 and w[0] < 0.01 * w[1] and w[1] > 0.01 * w[2]:
            n = vec[:, 0] * np.sign(vec[:, 0] @ up or 1.0)
            if n @ up > np.cos(np.radians(30.0)):
                up = n
    plane = dominant_plane(snapshot, up, max_angle_deg=50.0)
    if plane is not None:
        return plane[0], plane[1]
    return _unit(up, np.array([0.0, -1.0, 0.0])), None


def dominant_plane(snapshot: MapSnapshot, up: np.ndarray, max_angle_deg: float = 50.0, min_share: float = 0.15,
                   iterations: int = 300, max_points: int = 4000) -> Optional[tuple[np.ndarray, float, float]]:
    """The map's dominant roughly horizontal plane below the cameras, or None.

    RANSAC (seeded, deterministic) over at most ``max_points`` map points for the plane with the
    most points within 1 % of the scene diagonal whose normal is within ``max_angle_deg`` of
    ``up`` and which has the median camera on its upper side; refined by least squares on its
    inliers. Returns (unit normal (3,) pointing up, offset d with n . p = d on the plane
    (metres), share of points on it), or None when no plane holds ``min_share`` of the points
    (and at least 30 of them).
    """
    pts = snapshot.points_world.astype(np.float64)
    if len(pts) < 30:
        return None
    if len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(np.int64)]
    lo, hi = scene_bounds(snapshot)
    thr = 0.01 * float(np.linalg.norm(hi - lo))
    poses = _camera_poses(snapshot)
    cam_mid = np.median(poses[:, :3, 3], axis=0) if len(poses) else None
    cos_max = np.cos(np.radians(max_angle_deg))
    rng = np.random.default_rng(0)
    tri = rng.integers(0, len(pts), size=(iterations, 3))
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals[ok] /= norms[ok, None]
    normals *= np.where(normals @ up < 0, -1.0, 1.0)[:, None]
    ok &= normals @ up > cos_max
    best, best_n = 0, None
    for k in np.nonzero(ok)[0]:
        n, d = normals[k], float(normals[k] @ a[k])
        if cam_mid is not None and n @ cam_mid < d:
            continue  # the cameras are below it: a ceiling
        count = int((np.abs(pts @ n - d) < thr).sum())
        if count > best:
            best, best_n = count, (n, d)
    if best_n is None or best < max(30, min_share * len(pts)):
        return None
    n, d = best_n
    inl = pts[np.abs(pts @ n - d) < thr]
    centred = inl - inl.mean(axis=0)
    w, vec = np.linalg.eigh(centred.T @ centred)
    n_ref = vec[:, 0] * (1.0 if vec[:, 0] @ n >= 0 else -1.0)
    if n_ref @ up > cos_max:
        n = n_ref
    return n, float(n @ inl.mean(axis=0)), best / len(pts)


def horizontal_forward(snapshot: MapSnapshot, up: np.ndarray) -> np.ndarray:
    """(3,) unit horizontal direction (orthogonal to ``up``) the cameras look along on average;
    any horizontal direction when they look straight up or down (or there are none)."""
    poses = _camera_poses(snapshot)
    fwd = poses[:, :3, 2].mean(axis=0) if len(poses) else np.array([0.0, 0.0, 1.0])
    fwd = fwd - up * (fwd @ up)
    if np.linalg.norm(fwd) < 1e-6:
        ref = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        fwd = np.cross(up, ref)
    return _unit(fwd, np.array([0.0, 0.0, 1.0]))


def frustum_size(snapshot: MapSnapshot) -> float:
    """Depth (metres) of the camera frusta to draw, the same for keyframes and the current camera:
    8 % of the trajectory's extent, kept between 1.5 % and 5 % of the scene diagonal (so a
    stationary camera still shows, and a long drive does not hide the map); 3 % of the scene
    diagonal without a trajectory."""
    lo, hi = scene_bounds(snapshot)
    diag = float(np.linalg.norm(hi - lo))
    centres = _camera_poses(snapshot)[:, :3, 3]
    if len(centres) < 2:
        return max(0.03 * diag, 1e-3)
    extent = float(np.linalg.norm(centres.max(axis=0) - centres.min(axis=0)))
    return max(float(np.clip(0.08 * extent, 0.015 * diag, 0.05 * diag)), 1e-3)


def default_view(snapshot: MapSnapshot) -> dict[str, np.ndarray]:
    """A view from behind and above the cameras: ``lookat`` (scene centre), ``front`` (unit
    vector from lookat towards the eye), ``up`` (unit, orthogonal to front: the image's up),
    ``world_up`` (unit, the scene's vertical, :func:`estimate_up`), ``forward`` (unit, the
    horizontal direction the cameras look along), ``extent`` (scene diagonal, metres),
    ``ground`` (offset d of the floor / desk plane ``world_up . p = d`` that gave the up, metres;
    NaN when the up came from the cameras alone).

    The view looks the way the cameras look on average, turned 15 deg sideways so the depth of
    the scene reads, and 15 deg further down than they do (at least 30 deg, at most 70 deg below
    the horizon): close to what the cameras saw, so the scene is recognisable, seen from above.
    """
    lo, hi = scene_bounds(snapshot)
    up, ground = _up_and_ground(snapshot)
    forward = horizontal_forward(snapshot, up)
    poses = _camera_poses(snapshot)
    look = poses[:, :3, 2].mean(axis=0) if len(poses) else forward
    down = float(np.degrees(np.arcsin(np.clip(-(_unit(look, forward) @ up), -1.0, 1.0))))
    elev = np.radians(np.clip(down + 15.0, 30.0, 70.0))
    yaw = np.radians(15.0)
    side = np.cross(forward, up)
    horiz = np.cos(yaw) * forward + np.sin(yaw) * side
    front = -np.cos(elev) * horiz + np.sin(elev) * up  # from the scene towards the eye
    screen_up = up - front * (up @ front)  # Open3D needs up orthogonal to front for its extrinsics
    screen_up = screen_up / np.linalg.norm(screen_up)
    return {
        "lookat": (lo + hi) / 2.0,
        "front": front,
        "up": screen_up,
        "world_up": up,
        "forward": forward,
        "extent": np.array(float(np.linalg.norm(hi - lo))),
        "ground": np.array(np.nan if ground is None else ground),
    }
