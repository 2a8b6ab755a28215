"""Trajectory plots (matplotlib, Agg; no display needed): top and side views, with ground truth.

``plot_trajectories`` draws the estimate and, when given, the ground truth in three panels: a
top view (the plane perpendicular to "up") and two side views (each horizontal axis vs up). Both trajectories
must already be in the same frame (align the estimate to the ground truth first, e.g. with
slam.geometry.sim3.umeyama_alignment / evo); this module draws, it does not align.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

LOG = logging.getLogger(__name__)

__all__ = ["plot_trajectories"]

_AXES = {"x": 0, "y": 1, "z": 2}


def _axis(spec: str) -> tuple[int, float]:
    spec = spec.strip().lower()
    sign = -1.0 if spec.startswith("-") else 1.0
    name = spec.lstrip("+-")
    if name not in _AXES:
        raise ValueError(f"up={spec!r} must be one of x, y, z, -x, -y, -z or auto")
    return _AXES[name], sign


def _xyz(arr: Optional[np.ndarray], name: str) -> Optional[np.ndarray]:
    if arr is None:
        return None
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 3 and a.shape[1:] == (4, 4):
        a = a[:, :3, 3]
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3) positions in metres (or (N, 4, 4) poses), got shape {a.shape}")
    return a


def plot_trajectories(
    est_xyz: np.ndarray,
    gt_xyz: Optional[np.ndarray],
    path: Union[str, Path],
    title: str = "",
    up: str = "auto",
    labels: Sequence[str] = ("estimate", "ground truth"),
    subtitle: str = "",
    dpi: int = 120,
) -> Path:
    """Write a PNG with a top view and two side views of the trajectories.

    est_xyz: (N, 3) estimated camera positions, metres (or (N, 4, 4) world_from_cam poses).
    gt_xyz:  (M, 3) ground-truth positions in the SAME frame, or None.
    up:      world axis pointing up: "x", "y", "z" with optional "-"; "auto" = "z" when ground
             truth is given (mocap / TUM convention), else "-y" (the first camera's frame, y down).
    subtitle: an extra line under the title (e.g. "ATE RMSE 0.012 m").
    Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    est = _xyz(est_xyz, "est_xyz")
    gt = _xyz(gt_xyz, "gt_xyz")
    if gt is not None and len(gt) == 0:
        gt = None
    if up == "auto":
        up = "z" if gt is not None else "-y"
    up_i, up_sign = _axis(up)
    horiz = [i for i in range(3) if i != up_i]
    names = ["x", "y", "z"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(16, 5.5), dpi=dpi)
    FigureCanvasAgg(fig)
    up_label = f"{'-' if up_sign < 0 else ''}{names[up_i]} (up)"
    # (panel title, horizontal axis index, vertical axis: index or "up")
    panels = [
        ("top view", horiz[0], horiz[1]),
        ("side view", horiz[0], "up"),
        ("side view", horiz[1], "up"),
    ]
    series = []
    if gt is not None:
        series.append((gt, labels[1] if len(labels) > 1 else "ground truth", "0.35", "--", 1.4))
    series.append((est, labels[0], "tab:blue", "-", 1.6))

    def coords(data: np.ndarray, h: int, v) -> tuple[np.ndarray, np.ndarray]:
        return data[:, h], (up_sign * data[:, up_i] if v == "up" else data[:, v])

    for k, (name, h, v) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        for data, label, color, style, lw in series:
            if len(data):
                ax.plot(*coords(data, h, v), style, color=color, lw=lw, label=label)
        if len(est):
            ax.plot(*coords(est[:1], h, v), "o", color="tab:green", ms=6, label="start")
        ax.set_title(name)
        ax.set_xlabel(f"{names[h]} [m]")
        ax.set_ylabel(f"{up_label if v == 'up' else names[v]} [m]")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
        if not len(est) and gt is None:
            ax.text(0.5, 0.5, "no poses", transform=ax.transAxes, ha="center")
        else:
            ax.legend(loc="best", fontsize=9)
    heading = title or "trajectory"
    if subtitle:
        heading += "\n" + subtitle
    fig.suptitle(heading)
    fig.tight_layout()
    fig.savefig(str(path))
    LOG.info("trajectory plot written to %s", path)
    return path
