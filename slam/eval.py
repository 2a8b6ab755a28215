"""Trajectory evaluation against ground truth (ATE, RPE, frames tracked), using evo.

Definitions (all poses are ``world_from_cam``; positions are camera centres in metres):

- Association: evo's nearest-timestamp association (``evo.core.sync.associate_trajectories``)
  with ``max_diff`` seconds (default 0.02 s, as TUM's tools). Each pose of the shorter
  trajectory is matched to the closest pose of the other within ``max_diff``. KITTI files have
  no timestamps: then both trajectories must have the same length and are matched by index.
- Alignment: Umeyama on the matched positions, estimate onto ground truth: SE(3) (rotation +
  translation) for RGB-D / stereo, Sim(3) (plus scale) for monocular (``mono=True``).
- ATE: statistics of ``|p_gt - p_est_aligned|`` over matched poses (``ate_rmse_m`` is the
  number papers report; ``ate_mean_m``, ``ate_median_m``, ``ate_std_m``, ``ate_max_m`` too).
- RPE per frame (``rpe_trans_rmse_m``, ``rpe_rot_rmse_deg``): evo RPE with delta = 1 frame of
  the associated sequence, on the aligned estimate (so monocular scale is corrected):
  ``E_i = (gt_i^-1 gt_{i+1})^-1 (est_i^-1 est_{i+1})``; RMSE of ``|t(E_i)|`` and of angle(E_i).
- RPE per second (``rpe_trans_rmse_m_per_s``, ``rpe_rot_rmse_deg_per_s``): the same relative
  error over pairs ~``rpe_delta_s`` (1 s) apart (the TUM benchmark's ``evaluate_rpe.py``
  default, "drift per second"), each error divided by the pair's actual time span. Pairs whose
  span is off by more than 10 % (gaps) are skipped; NaN when there is no such pair.
- KITTI relative metrics (``kitti_metrics=True``; :func:`kitti_relative_errors`): the KITTI
  odometry devkit's translational error (%) and rotational error (deg/100 m), averaged over
  every segment of 100, 200, ..., 800 m (path length along the ground truth) starting every 10th
  matched frame, on the aligned estimate (so a monocular scale is corrected first). None when
  the trajectory is shorter than the shortest segment.
- Alignment by mode (:func:`mono_alignment`): Sim(3) for "mono", SE(3) for "rgbd" and "stereo".
- ``tracked_pct`` = ``n_est / n_frames_total * 100``: the estimate holds one pose per tracked
  frame. ``n_frames_total`` comes from the argument, else from a ``# n_frames: N`` header line
  of the estimated TUM file (written by the SLAM run), else it is None.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from slam.errors import InputError
from slam.io.trajectory import read_trajectory, read_tum_header, detect_format

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
TrajectoryInput = Union[PathLike, tuple]

__all__ = ["evaluate", "evaluate_full", "eval_main", "format_table", "mono_alignment",
           "kitti_relative_errors", "KITTI_LENGTHS_M", "load_groundtruth"]

KITTI_LENGTHS_M = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)  # the devkit's segment lengths


def mono_alignment(mode: str) -> bool:
    """Whether a run in ``mode`` is evaluated with Sim(3) alignment (scale corrected): True for
    "mono"; False (SE(3)) for "rgbd" and "stereo", whose scale is metric."""
    if mode == "mono":
        return True
    if mode in ("rgbd", "stereo"):
        return False
    raise ValueError(f"unknown mode {mode!r}; expected mono, rgbd or stereo")


def kitti_relative_errors(gt: np.ndarray, est: np.ndarray, lengths: Sequence[float] = KITTI_LENGTHS_M,
                          step: int = 10) -> dict:
    """KITTI odometry devkit relative errors of matched trajectories.

    gt, est: (N, 4, 4) float64 world_from_cam of the same N frames (metres), est already aligned
             (and scale-corrected for monocular runs).
    For each first frame f = 0, step, 2*step, ... and each length L: the last frame l is the
    first whose ground-truth path length from f exceeds L; the error of the segment is
    ``E = inv(inv(est_f) est_l) @ (inv(gt_f) gt_l)``, translational ``|t(E)| / L`` and rotational
    ``angle(E) / L`` (angle = arccos((trace(R) - 1) / 2)). Segments that run past the end are skipped.
    Returns {"t_err_pct": mean translational error * 100 (%), "r_err_deg_per_100m": mean
    rotational error in deg per 100 m, "segments": count, "per_length": {L: (t %, deg/100 m, count)},
    "path_length_m": ground-truth path length}; the errors are None when no segment fits.
    """
    gt = np.asarray(gt, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    if gt.shape != est.shape or gt.ndim != 3 or gt.shape[1:] != (4, 4):
        raise ValueError(f"gt and est must both be (N, 4, 4), got {gt.shape} and {est.shape}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    n = len(gt)
    dist = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1))]) if n else np.zeros(0)
    rows = []  # (length, t_err / L, r_err / L)
    for first in range(0, n, step):
        for length in lengths:
            last = int(np.searchsorted(dist, dist[first] + length, side="right"))
            if last >= n:
                continue
            delta_gt = np.linalg.inv(gt[first]) @ gt[last]
            delta_est = np.linalg.inv(est[first]) @ est[last]
            err = np.linalg.inv(delta_est) @ delta_gt
            cos = np.clip(0.5 * (np.trace(err[:3, :3]) - 1.0), -1.0, 1.0)
            rows.append((float(length), float(np.linalg.norm(err[:3, 3])) / length, float(np.arccos(cos)) / length))
    out: dict = {"segments": len(rows), "path_length_m": float(dist[-1]) if n else 0.0,
                 "lengths_m": [float(v) for v in lengths], "step_frames": int(step)}
    if not rows:
        out.update(t_err_pct=None, r_err_deg_per_100m=None, per_length={})
        return out
    arr = np.asarray(rows)
    out["t_err_pct"] = float(arr[:, 1].mean() * 100.0)
    out["r_err_deg_per_100m"] = float(np.degrees(arr[:, 2].mean()) * 100.0)
    out["per_length"] = {
        f"{L:g}": (float(arr[arr[:, 0] == L, 1].mean() * 100.0), float(np.degrees(arr[arr[:, 0] == L, 2].mean()) * 100.0),
                   int((arr[:, 0] == L).sum()))
        for L in lengths if np.any(arr[:, 0] == L)
    }
    return out


def _load(source: TrajectoryInput, role: str) -> tuple[Optional[np.ndarray], np.ndarray, Optional[Path]]:
    """-> (timestamps (N,) or None, world_from_cam (N,4,4), path or None)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            flag = "--gt" if role == "ground truth" else "--est"
            raise InputError(f"{path}: {role} file not found; pass an existing trajectory file with {flag}")
        ts, poses = read_trajectory(path)
        return ts, poses, path
    if isinstance(source, (tuple, list)) and len(source) == 2:
        ts, poses = source
        poses = np.asarray(poses, dtype=np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise ValueError(f"{role} poses must be (N, 4, 4), got {poses.shape}")
        if ts is not None:
            ts = np.asarray(ts, dtype=np.float64).reshape(-1)
            if ts.shape != (len(poses),):
                raise ValueError(f"{role} timestamps must be ({len(poses)},), got {ts.shape}")
        return ts, poses, None
    raise TypeError(f"{role}: expected a file path or a (timestamps, world_from_cam) tuple, got {type(source).__name__}")


def _to_evo(ts: Optional[np.ndarray], poses: np.ndarray, name: str):
    from evo.core.trajectory import PosePath3D, PoseTrajectory3D

    if ts is None:
        return PosePath3D(poses_se3=list(poses), meta={"name": name})
    return PoseTrajectory3D(poses_se3=list(poses), timestamps=ts.copy(), meta={"name": name})


def _stats(errors: np.ndarray) -> dict:
    if errors.size == 0:
        nan = float("nan")
        return dict(rmse=nan, mean=nan, median=nan, std=nan, min=nan, max=nan)
    return dict(
        rmse=float(np.sqrt(np.mean(errors**2))),
        mean=float(np.mean(errors)),
        median=float(np.median(errors)),
        std=float(np.std(errors)),
        min=float(np.min(errors)),
        max=float(np.max(errors)),
    )


def _relative_errors(gt: np.ndarray, est: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation (m) and rotation (deg) of E = (gt_i^-1 gt_j)^-1 (est_i^-1 est_j) for (i, j) pairs."""
    if len(pairs) == 0:
        return np.zeros(0), np.zeros(0)
    i, j = pairs[:, 0], pairs[:, 1]
    gt_rel = np.linalg.inv(gt[i]) @ gt[j]
    est_rel = np.linalg.inv(est[i]) @ est[j]
    err = np.linalg.inv(gt_rel) @ est_rel
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    R = err[:, :3, :3]
    cos = (np.trace(R, axis1=1, axis2=2) - 1.0) / 2.0
    sin = 0.5 * np.linalg.norm(np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], axis=1), axis=1)
    rot = np.degrees(np.arctan2(sin, cos))  # accurate near 0, unlike arccos
    return trans, rot


def _pairs_by_time(ts: np.ndarray, delta_s: float, tol: float = 0.1) -> np.ndarray:
    """(M, 2) index pairs (i, j) with t_j the stamp closest to t_i + delta_s, within tol * delta_s."""
    j = np.searchsorted(ts, ts + delta_s)
    pairs = []
    for i in range(len(ts)):
        best = None
        for k in (j[i] - 1, j[i]):
            if i < k < len(ts):
                if best is None or abs(ts[k] - ts[i] - delta_s) < abs(ts[best] - ts[i] - delta_s):
                    best = k
        if best is not None and abs(ts[best] - ts[i] - delta_s) <= tol * delta_s:
            pairs.append((i, best))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def evaluate_full(
    gt: TrajectoryInput,
    est: TrajectoryInput,
    mono: bool = False,
    max_diff: float = 0.02,
    n_frames_total: Optional[int] = None,
    offset: float = 0.0,
    rpe_delta_s: float = 1.0,
    kitti_metrics: bool = False,
) -> tuple[dict, dict]:
    """Like :func:`evaluate`, also returning arrays for plotting.

    Returns (metrics, details) where details has ``t`` (M,) matched estimate timestamps (or
    indices), ``gt_xyz`` (M, 3), ``est_xyz_aligned`` (M, 3), ``ate_errors_m`` (M,),
    ``sim3`` (4, 4) ``gt_world_from_est_world`` (rotation scaled by ``scale``) and
    ``gt_world_from_cam`` (M, 4, 4) the matched ground-truth poses (metres).
    """
    from evo.core import metrics, sync
    from evo.core.geometry import GeometryException

    gt_ts, gt_poses, gt_path = _load(gt, "ground truth")
    est_ts, est_poses, est_path = _load(est, "estimated")
    gt_name = str(gt_path) if gt_path else "ground truth"
    est_name = str(est_path) if est_path else "estimate"
    if len(gt_poses) == 0:
        raise InputError(f"{gt_name}: contains no poses; pass a ground-truth file with 'timestamp tx ty tz qx qy qz qw' lines")
    if len(est_poses) == 0:
        raise InputError(f"{est_name}: contains no poses (the run tracked no frame?); nothing to evaluate")
    if n_frames_total is None and est_path is not None:
        try:
            if detect_format(est_path) == "tum":
                value = read_tum_header(est_path).get("n_frames")
                n_frames_total = int(value) if value is not None else None
        except (ValueError, InputError):
            n_frames_total = None

    if gt_ts is not None and est_ts is not None:
        og, oe = np.argsort(gt_ts, kind="stable"), np.argsort(est_ts, kind="stable")
        traj_gt = _to_evo(gt_ts[og], gt_poses[og], gt_name)
        traj_est = _to_evo(est_ts[oe], est_poses[oe], est_name)
        try:
            traj_gt, traj_est = sync.associate_trajectories(traj_gt, traj_est, max_diff=max_diff, offset_2=offset)
        except sync.SyncException:
            raise InputError(
                f"no timestamps of {est_name} (t = {est_ts.min():.3f} .. {est_ts.max():.3f} s) are within "
                f"{max_diff} s of {gt_name} (t = {gt_ts.min():.3f} .. {gt_ts.max():.3f} s); check that both use "
                "the dataset's clock, or pass --offset / --max-diff"
            ) from None
        t_matched = np.asarray(traj_est.timestamps, dtype=np.float64)
    else:
        if len(gt_poses) != len(est_poses):
            which = est_name if est_ts is None else gt_name
            raise InputError(
                f"{which} has no timestamps (KITTI format), so poses are matched by line, but the ground truth "
                f"has {len(gt_poses)} poses and the estimate {len(est_poses)}; write both in TUM format instead"
            )
        traj_gt = _to_evo(None, gt_poses, gt_name)
        traj_est = _to_evo(None, est_poses, est_name)
        t_matched = np.arange(len(est_poses), dtype=np.float64)

    n_matched = int(traj_est.num_poses)
    if n_matched < 3:
        raise InputError(
            f"only {n_matched} poses of {est_name} match {gt_name} within {max_diff} s; at least 3 are needed "
            "for the alignment"
        )
    est_aligned = copy.deepcopy(traj_est)
    try:
        rot, trans, scale = est_aligned.align(traj_gt, correct_scale=mono)
    except GeometryException as exc:
        raise ValueError(f"cannot align {est_name} to {gt_name} ({exc}); is the estimate degenerate (all one point)?") from exc

    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((traj_gt, est_aligned))
    ate = np.asarray(ape.error, dtype=np.float64)
    ate_stats = _stats(ate)

    rpe_t = metrics.RPE(metrics.PoseRelation.translation_part, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
    rpe_t.process_data((traj_gt, est_aligned))
    gt_arr = np.asarray(traj_gt.poses_se3)
    est_arr = np.asarray(est_aligned.poses_se3)
    # Rotation part on the same (i, i+1) pairs as evo's RPE, vectorised: evo's rotation_angle_deg
    # relation converts pose by pose through scipy and takes seconds for a few thousand poses.
    consecutive = np.stack([np.arange(n_matched - 1), np.arange(1, n_matched)], axis=1)
    _, rpe_rot_deg = _relative_errors(gt_arr, est_arr, consecutive)
    if gt_ts is not None and est_ts is not None:
        pairs = _pairs_by_time(t_matched, rpe_delta_s)
    else:
        pairs = np.zeros((0, 2), dtype=np.int64)
    per_s_t, per_s_r = _relative_errors(gt_arr, est_arr, pairs)
    if len(pairs):
        dt = t_matched[pairs[:, 1]] - t_matched[pairs[:, 0]]
        per_s_t, per_s_r = per_s_t / dt, per_s_r / dt

    result = {
        "alignment": "Sim3" if mono else "SE3",
        "ate_rmse_m": ate_stats["rmse"],
        "ate_mean_m": ate_stats["mean"],
        "ate_median_m": ate_stats["median"],
        "ate_std_m": ate_stats["std"],
        "ate_max_m": ate_stats["max"],
        "rpe_trans_rmse_m": _stats(np.asarray(rpe_t.error))["rmse"],
        "rpe_rot_rmse_deg": _stats(rpe_rot_deg)["rmse"],
        "rpe_trans_rmse_m_per_s": _stats(per_s_t)["rmse"],
        "rpe_rot_rmse_deg_per_s": _stats(per_s_r)["rmse"],
        "rpe_delta_frames": 1,
        "rpe_delta_s": float(rpe_delta_s),
        "scale": float(scale),
        "n_gt": int(len(gt_poses)),
        "n_est": int(len(est_poses)),
        "n_matched": n_matched,
        "n_frames_total": int(n_frames_total) if n_frames_total else None,
        "tracked_pct": (100.0 * len(est_poses) / n_frames_total) if n_frames_total else None,
        "max_diff_s": float(max_diff),
    }
    if kitti_metrics:
        result.update(_kitti_fields(gt_arr, est_arr, mono))
    sim3 = np.eye(4)
    sim3[:3, :3] = scale * np.asarray(rot)
    sim3[:3, 3] = np.asarray(trans)
    details = {
        "t": t_matched,
        "gt_xyz": np.asarray(traj_gt.positions_xyz),
        "est_xyz_aligned": np.asarray(est_aligned.positions_xyz),
        "ate_errors_m": ate,
        "sim3": sim3,
        "gt_world_from_cam": gt_arr,
    }
    return result, details


def _kitti_fields(gt: np.ndarray, est_aligned: np.ndarray, mono: bool) -> dict:
    k = kitti_relative_errors(gt, est_aligned)
    where = "the Sim3-aligned (scale-corrected) estimate" if mono else "the estimate"
    if k["t_err_pct"] is None:
        note = (f"the ground-truth path of the matched frames is {k['path_length_m']:.1f} m, shorter than "
                f"KITTI's shortest segment ({KITTI_LENGTHS_M[0]:g} m)")
    else:
        note = f"KITTI devkit definition on {where}, segments of 100-800 m every {k['step_frames']} matched frames"
    return {
        "kitti_t_err_pct": k["t_err_pct"],
        "kitti_r_err_deg_per_100m": k["r_err_deg_per_100m"],
        "kitti_segments": k["segments"],
        "kitti_lengths_m": "100-800",
        "kitti_per_length": k["per_length"],
        "kitti_path_length_m": k["path_length_m"],
        "kitti_note": note,
    }


def evaluate(
    gt: TrajectoryInput,
    est: TrajectoryInput,
    mono: bool = False,
    max_diff: float = 0.02,
    n_frames_total: Optional[int] = None,
    offset: float = 0.0,
    rpe_delta_s: float = 1.0,
    kitti_metrics: bool = False,
) -> dict:
    """Evaluate an estimated trajectory against ground truth (see the module docstring).

    gt, est: a trajectory file (TUM, EuRoC csv or KITTI; detected from the content) or a tuple
             ``(timestamps (N,) seconds or None, world_from_cam (N, 4, 4) float64)``.
    mono:    Sim(3) alignment (scale corrected) instead of SE(3).
    max_diff: association threshold in seconds; offset: added to the estimate's timestamps.
    n_frames_total: frames fed to the system, for ``tracked_pct``.
    kitti_metrics: also the KITTI devkit's relative errors (``kitti_t_err_pct``,
             ``kitti_r_err_deg_per_100m``, ``kitti_segments``, ``kitti_note``, ...).
    Returns a JSON-serialisable dict: ate_rmse_m, ate_mean_m, ate_median_m, ate_std_m, ate_max_m,
    rpe_trans_rmse_m, rpe_rot_rmse_deg (delta 1 frame), rpe_trans_rmse_m_per_s,
    rpe_rot_rmse_deg_per_s (delta ~1 s, normalised by time), scale, alignment ("SE3"/"Sim3"),
    n_gt, n_est, n_matched, n_frames_total, tracked_pct (None when unknown), ...
    Raises InputError for missing, malformed or non-overlapping inputs.
    """
    return evaluate_full(gt, est, mono, max_diff, n_frames_total, offset, rpe_delta_s, kitti_metrics)[0]


def format_table(result: dict) -> str:
    """A small human-readable table of an :func:`evaluate` result."""

    def mm(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1000:.1f} mm"

    def num(v, unit, fmt=".3f"):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:{fmt}} {unit}"

    tracked = (
        f"{result['tracked_pct']:.1f} % ({result['n_est']} / {result['n_frames_total']})"
        if result.get("tracked_pct") is not None
        else f"n/a ({result['n_est']} poses; pass --n-frames)"
    )
    rows = [
        ("alignment", result["alignment"] + (f" (scale {result['scale']:.4f})" if result["alignment"] == "Sim3" else "")),
        ("ATE RMSE", mm(result["ate_rmse_m"])),
        ("ATE mean / median", f"{mm(result['ate_mean_m'])} / {mm(result['ate_median_m'])}"),
        ("ATE max", mm(result["ate_max_m"])),
        ("RPE trans (1 frame)", mm(result["rpe_trans_rmse_m"])),
        ("RPE rot (1 frame)", num(result["rpe_rot_rmse_deg"], "deg")),
        (f"RPE trans ({result['rpe_delta_s']:g} s)", num(result["rpe_trans_rmse_m_per_s"], "m/s", ".4f")),
        (f"RPE rot ({result['rpe_delta_s']:g} s)", num(result["rpe_rot_rmse_deg_per_s"], "deg/s")),
        ("poses matched", f"{result['n_matched']} of {result['n_est']} (gt {result['n_gt']})"),
        ("frames tracked", tracked),
    ]
    if "kitti_t_err_pct" in result:
        if result["kitti_t_err_pct"] is None:
            rows.append(("KITTI rel. error", f"n/a ({result['kitti_note']})"))
        else:
            rows.append(("KITTI trans. error", f"{result['kitti_t_err_pct']:.2f} % ({result['kitti_segments']} segments)"))
            rows.append(("KITTI rot. error", f"{result['kitti_r_err_deg_per_100m']:.3f} deg/100 m"))
    if result.get("groundtruth"):
        rows.append(("ground truth", result["groundtruth"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def load_groundtruth(path: PathLike) -> tuple[TrajectoryInput, str, bool]:
    """Ground truth given as a file (any trajectory format) or a dataset folder.

    A EuRoC folder gives cam0 poses (``world_from_body @ T_BS``), a KITTI ``sequences/XX`` folder
    the poses of ``poses/XX.txt`` with times.txt's timestamps, a TUM folder its groundtruth.txt.
    Returns (file path or (timestamps, world_from_cam) tuple, one-line note, is_kitti).
    Raises InputError when the folder has no ground truth.
    """
    path = Path(path)
    if not path.is_dir():
        return path, "", False
    from slam.io.detect import detect_layout

    layout = detect_layout(path)
    if layout.kind == "euroc":
        from slam.io.euroc import GROUNDTRUTH_CSV, find_mav0, read_groundtruth

        gt = read_groundtruth(layout.path)
        if gt is None:
            raise InputError(f"{find_mav0(layout.path) / GROUNDTRUTH_CSV}: not found; this EuRoC sequence has no ground truth")
        return gt, "EuRoC body (IMU) poses turned into cam0 poses: world_from_body @ T_BS(cam0)", False
    if layout.kind == "kitti":
        from slam.io.kitti import poses_path, read_groundtruth as read_kitti_gt

        gt = read_kitti_gt(layout.path)
        if gt is None:
            raise InputError(f"{poses_path(layout.path)}: not found; KITTI publishes ground truth for sequences 00-10 only")
        return gt, f"KITTI poses/{poses_path(layout.path).name} (world_from_cam0), timestamps from times.txt", True
    if layout.kind == "tum":
        return path / "groundtruth.txt", "", False
    raise InputError(f"{path}: a {layout.kind} folder has no ground truth; pass a trajectory file with --gt")


def _mono_from_header(est: str) -> bool:
    """The alignment of ``est`` when neither --mono nor --se3 is given: Sim(3) when its header
    says ``mode: mono`` (a run's trajectory.txt), said in one line on stdout; else SE(3)."""
    try:
        mode = read_tum_header(est).get("mode", "")
    except (InputError, ValueError, OSError):
        return False  # not a TUM file (or unreadable: evaluate_full says so)
    if mode == "mono":
        print(f"alignment: Sim(3) (scale corrected), because the header of {est} says 'mode: mono'; pass --se3 for SE(3)")
        return True
    return False


def eval_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m slam eval --gt G --est E [--mono] [--json out.json] [--plot out.png]``."""
    parser = argparse.ArgumentParser(
        prog="python -m slam eval",
        description="ATE / RPE of an estimated trajectory against ground truth (evo). "
        "SE(3) alignment, or Sim(3) with --mono or when the header of --est says 'mode: mono'.",
    )
    parser.add_argument("--gt", required=True, help="ground truth: a file (TUM groundtruth.txt, EuRoC csv or KITTI) or a "
                        "sequence folder (EuRoC: cam0 poses via T_BS; KITTI sequences/XX: poses/XX.txt with times.txt)")
    parser.add_argument("--est", required=True, help="estimated trajectory (e.g. runs/<run>/trajectory.txt)")
    align = parser.add_mutually_exclusive_group()
    align.add_argument("--mono", action="store_true", default=None, help="monocular: Sim(3) alignment (corrects scale); "
                       "default: from the 'mode:' header of --est (a run's trajectory.txt has one), else SE(3)")
    align.add_argument("--se3", dest="mono", action="store_false", help="SE(3) alignment whatever the header of --est says")
    parser.add_argument("--max-diff", type=float, default=0.02, help="association threshold in s (default 0.02)")
    parser.add_argument("--offset", type=float, default=0.0, help="time offset added to the estimate (s)")
    parser.add_argument("--n-frames", type=int, default=None,
                        help="frames given to the system, for the percentage tracked "
                        "(default: the '# n_frames:' header of --est)")
    parser.add_argument("--kitti", action="store_true", help="also KITTI's relative errors (%% and deg/100 m over "
                        "100-800 m segments); on by default when --gt is a KITTI sequence folder")
    parser.add_argument("--json", default=None, help="write the metrics as JSON here")
    parser.add_argument("--plot", default=None, help="write a PNG plot here")
    args = parser.parse_args(argv)
    try:
        if args.mono is None:
            args.mono = _mono_from_header(args.est)
        gt, note, is_kitti = load_groundtruth(args.gt)
        result, details = evaluate_full(gt, args.est, mono=args.mono, max_diff=args.max_diff,
                                        n_frames_total=args.n_frames, offset=args.offset,
                                        kitti_metrics=args.kitti or is_kitti)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if note:
        result["groundtruth"] = note
    print(f"{args.est}  vs  {args.gt}")
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}
        Path(args.json).write_text(json.dumps(clean, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from slam.viz.plots import plot_evaluation

        title = Path(args.est).name
        try:  # a run's trajectory.txt names its sequence in the header
            title = read_tum_header(args.est).get("sequence") or title
        except (InputError, ValueError, OSError):
            pass
        plot_evaluation(details, result, args.plot, title=title)
        print(f"wrote {args.plot}")
    return 0
