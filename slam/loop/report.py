"""Accepted loops against ground truth: the relative-pose error of each loop (the issue's
5 cm / 2 deg bar). Light (numpy only).

``python -m slam.loop.report RUN_DIR GROUNDTRUTH`` prints one line per loop; the run folder's
metrics.json holds the loops (``loop_closing.loops``: frame indices and ``cur_from_loop``) and
trajectory.txt the estimated trajectory (for the monocular map's scale). A last line splits the
ATE into drift (the per-frame error's moving average over ``SMOOTH_FRAMES`` frames, what loop
closing can remove) and jitter (the rest: frame-to-frame tracking noise), :func:`ate_split`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from slam.geometry.se3 import rotation_angle_deg, se3_inverse
from slam.geometry.sim3 import sim3_decompose, umeyama_alignment


def _read_tum(path: Path) -> np.ndarray:
    rows = [list(map(float, ln.split()[:8])) for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return np.array(rows).reshape(-1, 8)


def _cam_from_world(row: np.ndarray) -> np.ndarray:
    """TUM row (t, x, y, z, qx, qy, qz, qw) of world_from_cam -> (4, 4) cam_from_world."""
    x, y, z, w = row[4:8]
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = row[1:4]
    return se3_inverse(out)


def _nearest(table: np.ndarray, t: float, tol: float = 0.02) -> int:
    i = int(np.argmin(np.abs(table[:, 0] - t)))
    return i if abs(table[i, 0] - t) <= tol else -1


def loop_errors(run_dir: Path, groundtruth: Path, frame_timestamps: np.ndarray) -> list[dict]:
    """[{cur_frame, loop_frame, rot_err_deg, trans_err_m, final_rot_err_deg, final_trans_err_m}]
    for every accepted loop of the run.

    frame_timestamps: (F,) float64 seconds of the sequence's frames, by frame index.
    The monocular map's units are turned into metres with the scale of the Sim(3) alignment of
    the whole estimated trajectory to the ground truth (RGB-D: 1); ``trans_err_local_m`` (monocular
    runs that recorded ``loop_side_positions``) uses instead the scale of the loop keyframe's
    neighbourhood when the loop was accepted, the map the loop was measured in. ``final_*``: the
    relative pose of the same two frames in the run's final trajectory (after the loop's
    correction and global BA), same units; absent when a frame is not in the trajectory."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    loops = m.get("loop_closing", {}).get("loops", [])
    gt = _read_tum(groundtruth)
    est = _read_tum(Path(run_dir) / "trajectory.txt")
    c = 1.0
    if m.get("mode") == "mono":
        pairs = [(i, j) for i, t in enumerate(est[:, 0]) if (j := _nearest(gt, t)) >= 0]
        a = est[[i for i, _ in pairs], 1:4]
        b = gt[[j for _, j in pairs], 1:4]
        c = umeyama_alignment(a, b, with_scale=True)[0]
    out = []
    for lp in loops:
        i_c = _nearest(gt, float(frame_timestamps[lp["cur_frame"]]))
        i_l = _nearest(gt, float(frame_timestamps[lp["loop_frame"]]))
        if i_c < 0 or i_l < 0:
            continue
        truth = _cam_from_world(gt[i_c]) @ se3_inverse(_cam_from_world(gt[i_l]))
        s, R, t = sim3_decompose(np.asarray(lp["cur_from_loop"]))
        rot = rotation_angle_deg(R.T @ truth[:3, :3])
        trans = float(np.linalg.norm(t * c / s - truth[:3, 3]))
        e = {"cur_frame": lp["cur_frame"], "loop_frame": lp["loop_frame"], "rot_err_deg": rot, "trans_err_m": trans}
        c_loc = _local_scale(lp.get("loop_side_positions"), gt, frame_timestamps) if m.get("mode") == "mono" else None
        if c_loc is not None:
            e["trans_err_local_m"] = float(np.linalg.norm(t * c_loc / s - truth[:3, 3]))
        j_c = _nearest(est, float(frame_timestamps[lp["cur_frame"]]))
        j_l = _nearest(est, float(frame_timestamps[lp["loop_frame"]]))
        if j_c >= 0 and j_l >= 0:
            final = _cam_from_world(est[j_c]) @ se3_inverse(_cam_from_world(est[j_l]))
            e["final_rot_err_deg"] = rotation_angle_deg(final[:3, :3].T @ truth[:3, :3])
            e["final_trans_err_m"] = float(np.linalg.norm(final[:3, 3] * c - truth[:3, 3]))
        out.append(e)
    return out


def _local_scale(rows, gt: np.ndarray, frame_timestamps: np.ndarray) -> float | None:
    """Scale (metres per map unit) of the Sim(3) alignment of the loop keyframe's neighbourhood as
    it was when the loop was accepted (rows [[frame_index, x, y, z], ...] from metrics.json) to the
    ground truth; None with fewer than 3 keyframes."""
    if not rows or len(rows) < 3:
        return None
    rows = np.asarray(rows, dtype=np.float64)
    idx = [_nearest(gt, float(frame_timestamps[int(f)])) for f in rows[:, 0]]
    keep = [k for k, i in enumerate(idx) if i >= 0]
    if len(keep) < 3:
        return None
    return float(umeyama_alignment(rows[keep, 1:4], gt[[idx[k] for k in keep], 1:4], with_scale=True)[0])


SMOOTH_FRAMES = 15


def ate_split(run_dir: Path, groundtruth: Path, window: int = SMOOTH_FRAMES) -> dict:
    """{ate_m, drift_m, jitter_m}: RMS of the per-frame position error after the alignment
    (Sim(3) for monocular runs, else SE(3)), of its moving average over ``window`` frames, and of
    the remainder (``ate^2 ~= drift^2 + jitter^2``)."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    gt = _read_tum(groundtruth)
    est = _read_tum(Path(run_dir) / "trajectory.txt")
    pairs = [(i, j) for i, t in enumerate(est[:, 0]) if (j := _nearest(gt, t)) >= 0]
    a = est[[i for i, _ in pairs], 1:4]
    b = gt[[j for _, j in pairs], 1:4]
    c, R, t = umeyama_alignment(a, b, with_scale=m.get("mode") == "mono")
    err = c * a @ R.T + t - b
    k = max(int(window), 1)
    pad = np.pad(err, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(pad[:, i], np.ones(k) / k, mode="valid") for i in range(3)], axis=1)
    rms = lambda x: float(np.sqrt(np.mean(np.sum(x ** 2, axis=1))))  # noqa: E731
    return {"ate_m": rms(err), "drift_m": rms(smooth), "jitter_m": rms(err - smooth)}


def main(argv: list[str]) -> int:
    run_dir, gt = Path(argv[0]), Path(argv[1])
    rgb = Path(argv[2]) if len(argv) > 2 else gt.parent / "rgb.txt"
    ts = np.array([float(ln.split()[0]) for ln in rgb.read_text().splitlines() if ln.strip() and not ln.startswith("#")])
    for e in loop_errors(run_dir, gt, ts):
        local = f" ({100 * e['trans_err_local_m']:.2f} cm at the loop's local scale)" if "trans_err_local_m" in e else ""
        final = (f"; in the final trajectory {e['final_rot_err_deg']:.3f} deg, {100 * e['final_trans_err_m']:.2f} cm"
                 if "final_trans_err_m" in e else "")
        print(f"loop frame {e['cur_frame']} -> {e['loop_frame']}: {e['rot_err_deg']:.3f} deg, {100 * e['trans_err_m']:.2f} cm{local}{final}")
    sp = ate_split(run_dir, gt)
    print(f"ATE {100 * sp['ate_m']:.2f} cm = drift {100 * sp['drift_m']:.2f} cm ({SMOOTH_FRAMES}-frame moving average) "
          f"+ jitter {100 * sp['jitter_m']:.2f} cm")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
