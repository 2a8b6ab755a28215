"""``trajectory.png``: the aligned estimate against the ground truth (matplotlib Agg, no display).

Three panels: a top view (the plane perpendicular to "up"), a side view (the horizontal axis
along which the ground truth moves most, against up) and the absolute trajectory error over
time; start (circle) and end (square) marked on both trajectories, thin red lines joining
matched poses in the top view. The title gives the alignment (SE(3) or Sim(3) with its scale),
the ATE RMSE / median / max and the poses matched.

Frames: the estimate arrives already aligned onto the ground truth (slam.eval.evaluate_full),
so both are drawn in the ground truth's world frame. "Up" in that frame: when the first
ground-truth pose is the identity, the world is a camera's frame (KITTI poses, a SLAM output
used as reference), y points down and up is -y; otherwise the ground truth comes from a
motion-capture or GNSS frame (TUM, EuRoC, the synthetic sequences), whose up is z.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Union

import numpy as np

LOG = logging.getLogger(__name__)

__all__ = ["plot_evaluation", "world_up_axis"]

_NAMES = ("x", "y", "z")


def world_up_axis(gt_world_from_cam: Optional[np.ndarray]) -> tuple[int, float]:
    """(axis index, sign) of "up" in the ground truth's world frame (see the module docstring).

    gt_world_from_cam: (N, 4, 4) ground-truth poses, or None (then z up).
    """
    if gt_world_from_cam is not None and len(gt_world_from_cam):
        r0 = np.asarray(gt_world_from_cam[0], np.float64)[:3, :3]
        angle = math.degrees(math.acos(float(np.clip((np.trace(r0) - 1.0) / 2.0, -1.0, 1.0))))
        if angle < 2.0:
            return 1, -1.0
    return 2, 1.0


def _ate_unit(values_m: np.ndarray) -> tuple[float, str]:
    top = float(np.nanmax(values_m)) if len(values_m) else 0.0
    if top < 0.5:
        return 1000.0, "mm"
    if top < 5.0:
        return 100.0, "cm"
    return 1.0, "m"


def _fmt_len(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if v < 0.1:
        return f"{v * 1000:.1f} mm"
    if v < 10:
        return f"{v * 100:.2f} cm"
    return f"{v:.2f} m"


def plot_evaluation(details: dict, result: dict, path: Union[str, Path], title: str = "", dpi: int = 110) -> Path:
    """Write ``trajectory.png`` (see the module docstring) and return its path.

    details: from slam.eval.evaluate_full: "t" (M,) s, "gt_xyz" (M, 3) m, "est_xyz_aligned"
             (M, 3) m (in the ground truth's frame), "ate_errors_m" (M,), optionally
             "gt_world_from_cam" (M, 4, 4) (for the up axis; z up without it).
    result:  the evaluation's dict ("alignment", "scale", "ate_rmse_m", "ate_median_m",
             "ate_max_m", "n_matched", "n_est").
    title:   the first words of the title, e.g. the sequence name.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gt = np.asarray(details["gt_xyz"], np.float64)
    est = np.asarray(details["est_xyz_aligned"], np.float64)
    err = np.asarray(details["ate_errors_m"], np.float64)
    t = np.asarray(details["t"], np.float64)
    if gt.ndim != 2 or gt.shape[1] != 3 or est.shape != gt.shape or len(err) != len(gt) or len(t) != len(gt):
        raise ValueError(f"details must hold matched (M, 3) gt_xyz and est_xyz_aligned, (M,) ate_errors_m and t; "
                         f"got {gt.shape}, {est.shape}, {err.shape}, {t.shape}")
    up_i, up_sign = world_up_axis(details.get("gt_world_from_cam"))
    horiz = [i for i in range(3) if i != up_i]
    spread = np.ptp(gt[:, horiz], axis=0) if len(gt) else np.zeros(2)
    side_i = horiz[int(np.argmax(spread))]
    up_label = f"{'-' if up_sign < 0 else ''}{_NAMES[up_i]} (up) [m]"

    fig = Figure(figsize=(18, 5.8), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 1.0, 1.15]})
    align = result.get("alignment", "SE3")
    est_label = f"estimate ({align}-aligned)"
    views = [
        (axes[0], "top view", horiz[0], horiz[1], f"{_NAMES[horiz[0]]} [m]", f"{_NAMES[horiz[1]]} [m]"),
        (axes[1], f"side view ({_NAMES[side_i]} against up)", side_i, up_i, f"{_NAMES[side_i]} [m]", up_label),
    ]
    for ax, name, h, v, xl, yl in views:
        sv = up_sign if v == up_i else 1.0
        if ax is axes[0] and len(gt):
            step = max(1, len(gt) // 60)
            for k in range(0, len(gt), step):
                ax.plot([gt[k, h], est[k, h]], [sv * gt[k, v], sv * est[k, v]], "-", color="tab:red", lw=0.6,
                        alpha=0.55, label="error (every %d)" % step if k == 0 else None)
        ax.plot(gt[:, h], sv * gt[:, v], "-", color="0.15", lw=2.4, label="ground truth")
        ax.plot(est[:, h], sv * est[:, v], "-", color="tab:blue", lw=1.1, label=est_label)
        for data, col in ((gt, "0.15"), (est, "tab:blue")):
            if len(data):
                ax.plot(data[0, h], sv * data[0, v], "o", ms=8, mfc="none", mec=col, mew=2)
                ax.plot(data[-1, h], sv * data[-1, v], "s", ms=7, mfc="none", mec=col, mew=2)
        ax.plot([], [], "o", ms=8, mfc="none", mec="0.4", mew=2, label="start")
        ax.plot([], [], "s", ms=7, mfc="none", mec="0.4", mew=2, label="end")
        ax.set_title(name)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8, framealpha=0.85)

    ax = axes[2]
    k, unit = _ate_unit(err)
    tt = t - t[0] if len(t) else t
    ax.plot(tt, err * k, "-", color="tab:red", lw=1.0, label="ATE per pose")
    for key, style, name in (("ate_rmse_m", "--", "RMSE"), ("ate_median_m", ":", "median")):
        v = result.get(key)
        if v is not None and math.isfinite(v):
            ax.axhline(v * k, color="k", ls=style, lw=1.0, label=f"{name} {v * k:.1f} {unit}")
    ax.set_xlabel("time [s]" if len(t) and np.ptp(t) > 0 else "pose")
    ax.set_ylabel(f"ATE [{unit}]")
    ax.set_ylim(0, max(float(np.nanmax(err)) * k * 1.08, 1e-9) if len(err) else 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax.set_title("absolute trajectory error over time")

    scale = f", scale {result['scale']:.4f}" if align == "Sim3" and result.get("scale") is not None else ""
    head = f"{title}: " if title else ""
    fig.suptitle(
        f"{head}ATE RMSE {_fmt_len(result.get('ate_rmse_m'))} (median {_fmt_len(result.get('ate_median_m'))}, "
        f"max {_fmt_len(result.get('ate_max_m'))}), {align} alignment{scale}, "
        f"{result.get('n_matched', len(gt))} of {result.get('n_est', len(est))} poses matched",
        fontsize=12,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    LOG.info("trajectory plot written to %s", path)
    return path
