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
    """

    trajectory_world_from_cam: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    keyframe_world_from_cam: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    current_world_from_cam: Optional[np.ndarray] = None
    points_world: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    colors: Optional[np.ndarray] = None
    camera: Any = None
    state: str = ""
    frame_index: int = -1

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


def scene_bounds(snapshot: MapSnapshot, percentile: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Robust (lo, hi) corners of the scene (3,) each: map points between the given percentiles
    plus every camera position; a unit box around the origin when empty."""
    parts = []
    if len(snapshot.points_world):
        p = snapshot.points_world.astype(np.float64)
        lo, hi = np.percentile(p, percentile, axis=0), np.percentile(p, 100 - percentile, axis=0)
        parts += [lo[None], hi[None]]
    for poses in (snapshot.trajectory_world_from_cam, snapshot.keyframe_world_from_cam):
        if len(poses):
            parts.append(poses[:, :3, 3])
    if snapshot.current_world_from_cam is not None:
        parts.append(snapshot.current_world_from_cam[None, :3, 3])
    if not parts:
        return -np.ones(3), np.ones(3)
    allp = np.vstack(parts)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    pad = np.maximum(hi - lo, 1e-3) * 0.05 + 1e-3
    return lo - pad, hi + pad


def default_view(snapshot: MapSnapshot) -> dict[str, np.ndarray]:
    """A view from behind and above the cameras: ``lookat`` (scene centre), ``front`` (unit
    vector from lookat towards the eye), ``up`` (unit, orthogonal to front: the image's up),
    ``world_up`` (unit, the scene's vertical), ``extent`` (scene diagonal, metres).

    'Up' is minus the mean camera y axis (cameras are usually held upright, y pointing down);
    'behind' is minus the mean viewing direction. Without cameras: world -y up, looking along +z.
    """
    lo, hi = scene_bounds(snapshot)
    poses = snapshot.trajectory_world_from_cam
    if not len(poses):
        poses = snapshot.keyframe_world_from_cam
    if not len(poses) and snapshot.current_world_from_cam is not None:
        poses = snapshot.current_world_from_cam[None]
    if len(poses):
        up = -poses[:, :3, 1].mean(axis=0)
        forward = poses[:, :3, 2].mean(axis=0)
    else:
        up, forward = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    if np.linalg.norm(up) < 1e-6:
        up = np.array([0.0, -1.0, 0.0])
    up = up / np.linalg.norm(up)
    forward = forward - up * (forward @ up)
    if np.linalg.norm(forward) < 1e-6:
        forward = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])
    forward = forward / np.linalg.norm(forward)
    front = -forward + 0.8 * up
    front = front / np.linalg.norm(front)
    # a slight sideways component makes the depth structure readable
    side = np.cross(up, front)
    front = front + 0.35 * side
    front = front / np.linalg.norm(front)
    screen_up = up - front * (up @ front)  # Open3D needs up orthogonal to front for its extrinsics
    screen_up = screen_up / np.linalg.norm(screen_up)
    return {
        "lookat": (lo + hi) / 2.0,
        "front": front,
        "up": screen_up,
        "world_up": up,
        "extent": np.array(float(np.linalg.norm(hi - lo))),
    }
