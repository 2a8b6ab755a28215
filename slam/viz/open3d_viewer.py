"""``--viewer open3d``: a live Open3D window showing trajectory, camera frusta and the map.

The window lives in its own thread. ``update(snapshot)`` only stores a reference to the newest
snapshot under a lock (O(1), never waits for rendering), so the viewer cannot slow tracking;
the viewer thread redraws at most ``fps`` times a second from whatever snapshot is newest,
skipping the ones in between. Closing the window by hand just stops drawing.

Open3D 0.20 silently falls back to an invisible EGL context when there is no display, so the
viewer checks for a display itself and raises :class:`DeviceError` (suggesting
``--viewer none``) instead of "showing" a window nobody can see.
"""
from __future__ import annotations

import copy
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from slam.errors import DeviceError
from slam.viz.base import MapSnapshot

LOG = logging.getLogger(__name__)

__all__ = ["Open3DViewer", "has_display"]


def has_display() -> bool:
    """True when a window can be shown: always on macOS/Windows; on Linux/BSD, DISPLAY or
    WAYLAND_DISPLAY must be set."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class Open3DViewer:
    """Live 3D window (Open3D legacy Visualizer) fed with :class:`MapSnapshot` objects.

    width, height: window size in pixels.
    point_size:    rendered size of map points in pixels.
    fps:           maximum redraw rate of the viewer thread.
    visible:       False renders into an invisible window (tests, headless checks).
    title:         window title.
    camera:        PinholeCamera-like used for frusta when a snapshot carries none.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        point_size: float = 2.0,
        fps: float = 20.0,
        visible: bool = True,
        title: str = "slam",
        start_timeout_s: float = 20.0,
        camera: Any = None,
    ) -> None:
        if visible and not has_display():
            raise DeviceError(
                "--viewer open3d needs a display, and none was found (DISPLAY / WAYLAND_DISPLAY unset: "
                "a headless machine or an ssh session without -X). Use --viewer none; the map and "
                "trajectory PNGs are still written to the run folder at the end"
            )
        try:
            import open3d  # noqa: F401
        except ImportError as exc:
            raise DeviceError(
                f"--viewer open3d needs Open3D ({exc}); install it with `pip install open3d` "
                "(or `pip install open3d-cpu`), or use --viewer none"
            ) from None
        self.width, self.height = int(width), int(height)
        self.point_size = float(point_size)
        self.period_s = 1.0 / max(float(fps), 1e-3)
        self.visible = bool(visible)
        self.title = title
        self.camera = camera
        self._lock = threading.Lock()
        self._pending: Optional[MapSnapshot] = None
        self._shots: list[tuple[Path, threading.Event]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._init_error: Optional[str] = None
        self.n_updates = 0  # snapshots received
        self.n_rendered = 0  # snapshots drawn (the rest were superseded before drawing)
        self.window_closed = False
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="slam-viewer", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout_s):
            self._stop.set()
            raise DeviceError(f"the Open3D window did not open within {start_timeout_s:.0f} s; use --viewer none")
        if self._init_error is not None:
            raise DeviceError(f"{self._init_error}; use --viewer none")

    # -- API (any thread) ---------------------------------------------------------------------
    def update(self, snapshot: MapSnapshot) -> None:
        """Store the newest snapshot; returns immediately."""
        with self._lock:
            self._pending = snapshot
            self.n_updates += 1

    def save_png(self, path: Union[str, Path], snapshot: MapSnapshot) -> Path:
        """Offscreen PNG of ``snapshot`` (:func:`slam.viz.render.render_map_png`), for the end of
        a run. Closes the live window first: Open3D's legacy visualizer cannot keep a second GL
        context alive beside the window's (the window's shaders break), so the two never overlap."""
        from slam.viz.render import render_map_png

        if self._thread.is_alive():
            LOG.info("closing the viewer window to render %s offscreen", Path(path).name)
            self.close()
        return render_map_png(snapshot, path)

    def screenshot(self, path: Union[str, Path], timeout_s: float = 10.0) -> Optional[Path]:
        """Save what the window shows now (taken by the viewer thread); None if it is not running."""
        if not self._thread.is_alive():
            return None
        done = threading.Event()
        with self._lock:
            self._shots.append((Path(path), done))
        while not done.wait(0.1):
            if not self._thread.is_alive() or timeout_s <= 0:
                return None
            timeout_s -= 0.1
        return Path(path) if Path(path).is_file() else None

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the viewer thread and close the window (waits at most ``timeout_s``)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                LOG.warning("the Open3D viewer thread did not stop within %.0f s", timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> "Open3DViewer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- viewer thread ------------------------------------------------------------------------
    def _take(self) -> Optional[MapSnapshot]:
        with self._lock:
            snap, self._pending = self._pending, None
        return snap

    def _run(self) -> None:
        import open3d as o3d

        from slam.viz.render import apply_default_view, build_open3d_geometries

        vis = None
        try:
            with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
                vis = o3d.visualization.Visualizer()
                ok = vis.create_window(window_name=self.title, width=self.width, height=self.height, visible=self.visible)
            if not ok:
                self._init_error = "Open3D could not create a window (no OpenGL context)"
                return
            opt = vis.get_render_option()
            opt.point_size = self.point_size
            opt.background_color = np.array([0.08, 0.08, 0.10])
            self._ready.set()
            shown: dict[str, Any] = {}
            view_set = False
            while not self._stop.is_set():
                t0 = time.perf_counter()
                snap = self._take()
                if snap is not None:
                    if snap.camera is None and self.camera is not None:
                        snap = copy.copy(snap)
                        snap.camera = self.camera
                    geoms = build_open3d_geometries(snap, trajectory_rgb=(0.35, 0.7, 1.0))  # bright on dark
                    for name, g in shown.items():
                        vis.remove_geometry(g, reset_bounding_box=False)
                    for g in geoms.values():
                        vis.add_geometry(g, reset_bounding_box=not view_set)
                    shown = geoms
                    if geoms and not view_set:
                        apply_default_view(vis, snap)
                        view_set = True
                    self.n_rendered += 1
                with self._lock:
                    shots, self._shots = self._shots, []
                for path, done in shots:
                    vis.update_renderer()
                    vis.capture_screen_image(str(path), do_render=True)
                    done.set()
                if not vis.poll_events():
                    self.window_closed = True
                    LOG.info("viewer window closed; the run continues without it")
                    break
                vis.update_renderer()
                left = self.period_s - (time.perf_counter() - t0)
                if left > 0:
                    self._stop.wait(left)
        except BaseException as exc:  # noqa: BLE001 - a viewer must never kill the run
            self.error = exc
            if not self._ready.is_set():
                self._init_error = f"Open3D viewer failed to start: {type(exc).__name__}: {exc}"
            else:
                LOG.error("viewer thread stopped: %s: %s", type(exc).__name__, exc)
        finally:
            self._ready.set()
            if vis is not None:
                try:
                    vis.destroy_window()
                except Exception:  # noqa: BLE001
                    pass
