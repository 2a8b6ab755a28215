"""``python -m slam view RUN_DIR [--png FILE]``: look at a finished run.

A run folder (slam.app) holds trajectory.txt and keyframes.txt (TUM), map.ply, config.yaml and
metrics.json. :func:`load_run` turns it into a :class:`MapSnapshot`: trajectory, keyframes, the
last pose as the current camera, the coloured map, the camera intrinsics when metrics.json
records them, and the ground truth when metrics.json names it (``metrics["groundtruth"]``, a
trajectory file or a dataset folder, as ``python -m slam eval --gt`` takes) and it can be read:
aligned into the map's frame as the evaluation aligns it (SE(3), Sim(3) for monocular runs),
i.e. the inverse of the estimate-to-ground-truth alignment applied to the ground truth.

:func:`view_run` shows the snapshot in the Open3D viewer (needs a display) until the window is
closed, or renders it headless to a PNG (slam.viz.render) with ``png=``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from slam.errors import InputError
from slam.viz.base import MapSnapshot

LOG = logging.getLogger(__name__)

__all__ = ["RUN_FILES", "load_run", "view_run", "groundtruth_in_map_frame"]

RUN_FILES = ("trajectory.txt", "keyframes.txt", "map.ply", "config.yaml", "metrics.json")


class _Camera:
    """Intrinsics read from metrics.json: width, height (px), fx, fy, cx, cy (px)."""

    def __init__(self, d: dict) -> None:
        self.width, self.height = int(d["width"]), int(d["height"])
        self.fx, self.fy, self.cx, self.cy = (float(d[k]) for k in ("fx", "fy", "cx", "cy"))


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: not a folder; pass a run folder written by `python -m slam run` (runs/<date>_<time>_<sequence>)")
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise InputError(f"{run_dir} is not a run folder: {', '.join(missing)} missing; pass a folder written by "
                         "`python -m slam run` (runs/<date>_<time>_<sequence>)")


def groundtruth_in_map_frame(groundtruth: Any, timestamps: np.ndarray, world_from_cam: np.ndarray,
                             mono: bool) -> tuple[np.ndarray, dict]:
    """Ground-truth positions in the map's frame, aligned as the evaluation aligns them.

    groundtruth: a trajectory file or dataset folder (slam.eval.load_groundtruth) or a
    (timestamps, world_from_cam) tuple. timestamps (N,) s, world_from_cam (N, 4, 4): the estimate.
    Returns ((M, 3) float64 metres: the matched ground-truth positions mapped by the inverse of
    the estimate-to-ground-truth Sim(3)/SE(3), the evaluation's result dict).
    """
    from slam.eval import evaluate_full, load_groundtruth

    gt = groundtruth
    if isinstance(gt, (str, Path)):
        gt, _, _ = load_groundtruth(gt)
    result, details = evaluate_full(gt, (timestamps, world_from_cam), mono=mono)
    sim3 = details["sim3"]  # p_gt = sim3 @ p_est
    gt_xyz = np.asarray(details["gt_xyz"], np.float64)
    in_map = (gt_xyz - sim3[:3, 3]) @ np.linalg.inv(sim3[:3, :3]).T
    return in_map, result


def _loop_edges(loops, run_dir: Path) -> Optional[np.ndarray]:
    """metrics.json's ``loop_edges``: (E, 2, 3) world positions of the keyframe centres each loop
    joins (float64), or None when there are none or the entry is unreadable (warned)."""
    if not loops:
        return None
    try:
        arr = np.asarray(loops, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 3 or arr.shape[1:] != (2, 3):
        LOG.warning("%s: loop_edges is not a list of (2, 3) positions; loops not drawn", run_dir / "metrics.json")
        return None
    return arr


def load_run(run_dir: Union[str, Path], with_groundtruth: bool = True) -> MapSnapshot:
    """The :class:`MapSnapshot` of a run folder (see the module docstring).

    Raises InputError naming the folder and the missing files when it is not a run folder, or
    the file at fault when one cannot be read. A ground truth that cannot be read or aligned is
    left out with a warning.
    """
    from slam.io.ply import read_ply
    from slam.io.trajectory import read_tum

    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{run_dir / 'metrics.json'}: cannot be read ({exc}); the run folder is damaged") from None
    if not isinstance(metrics, dict):
        raise InputError(f"{run_dir / 'metrics.json'}: not a JSON object; the run folder is damaged")
    ts, traj = read_tum(run_dir / "trajectory.txt")
    _, kf = read_tum(run_dir / "keyframes.txt")
    pts, cols = read_ply(run_dir / "map.ply")
    camera = None
    if isinstance(metrics.get("camera"), dict):
        try:
            camera = _Camera(metrics["camera"])
        except (KeyError, TypeError, ValueError):
            LOG.warning("%s: camera entry is incomplete; frusta drawn with a default 4:3 camera", run_dir / "metrics.json")
    mode = str(metrics.get("mode", ""))
    gt_xyz = np.zeros((0, 3))
    gt_source = metrics.get("groundtruth")
    if with_groundtruth and gt_source and len(traj) > 2:
        try:
            gt_xyz, _ = groundtruth_in_map_frame(gt_source, ts, traj, mono=mode == "mono")
        except Exception as exc:  # noqa: BLE001 - the run is still worth showing without it
            LOG.warning("ground truth %s not shown: %s", gt_source, exc)
    title = str(metrics.get("sequence", run_dir.name))
    details = [m for m in (mode, f"{metrics.get('features', '')}+{metrics.get('matcher', '')}".strip("+")) if m]
    if details:
        title += f" ({', '.join(details)})"
    ev = metrics.get("eval") or {}
    if isinstance(ev, dict) and ev.get("ate_rmse_m") is not None:
        title += f", ATE {ev['ate_rmse_m'] * 100:.2f} cm {ev.get('alignment', '')}".rstrip()
    loops = _loop_edges(metrics.get("loop_edges"), run_dir)
    return MapSnapshot(
        trajectory_world_from_cam=traj,
        keyframe_world_from_cam=kf,
        current_world_from_cam=traj[-1] if len(traj) else None,
        points_world=pts,
        colors=cols,
        camera=camera,
        groundtruth_xyz=gt_xyz,
        loop_edges=loops,
        title=title,
        metric=mode != "mono",
    )


def view_run(run_dir: Union[str, Path], png: Optional[Union[str, Path]] = None, width: int = 1600,
             height: int = 800) -> Optional[Path]:
    """Show the run in the Open3D viewer until its window is closed, or, with ``png``, write
    the same scene to that PNG headless (returns its path)."""
    snapshot = load_run(run_dir)
    if png is not None:
        from slam.viz.render import render_map_png

        return render_map_png(snapshot, png, width=width, height=height)
    from slam.errors import DeviceError
    from slam.viz import create_viewer
    from slam.viz.open3d_viewer import has_display

    if not has_display():
        raise DeviceError(f"viewing {run_dir} needs a display, and none was found (DISPLAY / WAYLAND_DISPLAY unset); "
                          "render it headless with --png FILE")
    viewer = create_viewer("open3d", title=f"slam view: {snapshot.title}", camera=snapshot.camera)
    try:
        viewer.update(snapshot)
        viewer.wait()
    finally:
        viewer.close()
    return None
