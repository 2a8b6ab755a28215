"""Trajectory files: TUM, KITTI and EuRoC formats.

Every pose crossing this module is a (4, 4) float64 ``world_from_cam`` matrix
(``p_world = world_from_cam @ p_cam``), stacked as (N, 4, 4); timestamps are (N,) float64
seconds. Formats:

- TUM (``write_tum``/``read_tum``): one line per pose, ``timestamp tx ty tz qx qy qz qw``,
  ``#`` comments allowed. ``write_tum`` can put ``# key: value`` header lines first (e.g.
  ``n_frames: 798`` so that ``slam eval`` can report the percentage of frames tracked);
  ``read_tum_header`` reads them back.
- KITTI (``write_kitti``/``read_kitti``): one line per pose, the top 3x4 block row-major
  (12 numbers), no timestamps.
- EuRoC (``write_euroc``/``read_euroc``): csv with a ``#timestamp [ns],p_RS_R_x [m],...`` header,
  integer nanosecond timestamps and quaternion in (w, x, y, z) order. ``read_euroc`` also reads
  EuRoC ground-truth files (it uses the first 8 columns and ignores velocities and biases).

Malformed input raises :class:`~slam.errors.InputError` naming the file and line.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import numpy as np


from scipy.spatial.transform import Rotation

from slam.errors import InputError

# Quaternions are Hamilton, (qx, qy, qz, qw) as in TUM files and slam.geometry.se3. scipy's
# Rotation is used because it converts whole (N, 4) / (N, 3, 3) batches at once (a per-pose
# loop over slam.geometry.se3 takes ~0.4 s for a 3000-pose ground truth).

PathLike = Union[str, Path]

__all__ = [
    "InputError",
    "quats_xyzw_from_poses",
    "poses_from_tq",
    "write_tum",
    "read_tum",
    "read_tum_header",
    "write_kitti",
    "read_kitti",
    "write_euroc",
    "read_euroc",
    "write_trajectory",
    "read_trajectory",
    "detect_format",
    "EUROC_HEADER",
]

EUROC_HEADER = "#timestamp [ns],p_RS_R_x [m],p_RS_R_y [m],p_RS_R_z [m],q_RS_w [],q_RS_x [],q_RS_y [],q_RS_z []"


# --------------------------------------------------------------------------- helpers


def _check_poses(world_from_cam: np.ndarray, name: str = "world_from_cam") -> np.ndarray:
    arr = np.asarray(world_from_cam, dtype=np.float64)
    if arr.ndim == 2 and arr.shape == (4, 4):
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise ValueError(f"{name} must be (N, 4, 4), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.nonzero(~np.isfinite(arr).all(axis=(1, 2)))[0][0])
        raise ValueError(f"{name}[{bad}] is not finite; drop untracked frames instead of writing NaN poses")
    return arr


def _check_timestamps(timestamps: np.ndarray, n: int) -> np.ndarray:
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if ts.shape != (n,):
        raise ValueError(f"timestamps must be ({n},) to match the poses, got {np.shape(timestamps)}")
    if not np.all(np.isfinite(ts)):
        raise ValueError("timestamps contain NaN or inf")
    return ts


def quats_xyzw_from_poses(world_from_cam: np.ndarray) -> np.ndarray:
    """(N, 4) unit quaternions (qx, qy, qz, qw), qw >= 0, of the rotations of (N, 4, 4) poses."""
    poses = _check_poses(world_from_cam)
    if len(poses) == 0:
        return np.zeros((0, 4))
    q = Rotation.from_matrix(poses[:, :3, :3]).as_quat()  # projects onto SO(3) if slightly off
    q[q[:, 3] < 0] *= -1.0
    return q


def poses_from_tq(t_xyz: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """(N, 4, 4) float64 poses from (N, 3) translations and (N, 4) quaternions (qx, qy, qz, qw).

    Quaternions are normalised first (TUM ground truth is stored with 4 decimals).
    """
    t_xyz = np.asarray(t_xyz, dtype=np.float64).reshape(-1, 3)
    q_xyzw = np.asarray(q_xyzw, dtype=np.float64).reshape(-1, 4)
    out = np.tile(np.eye(4), (len(t_xyz), 1, 1))
    if len(t_xyz):
        out[:, :3, :3] = Rotation.from_quat(q_xyzw).as_matrix()
    out[:, :3, 3] = t_xyz
    return out


def _fmt_time(t: float) -> str:
    """Shortest decimal that round-trips, at most 9 decimals (TUM files use microseconds)."""
    return np.format_float_positional(float(t), precision=9, unique=True, trim="0")


def _open_text(path: PathLike) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found; check the path (it is resolved from {Path.cwd()})")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a trajectory file")
    try:
        return path.read_text(encoding="utf-8", errors="strict").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc}); expected a plain-text trajectory") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc


def _parse_numbers(path: PathLike, lineno: int, line: str, n_expected: int, what: str) -> list[float]:
    fields = line.replace(",", " ").split()
    if len(fields) < n_expected:
        raise InputError(
            f"{path}:{lineno}: expected {n_expected} numbers ({what}), found {len(fields)}: {line.strip()!r}"
        )
    try:
        values = [float(f) for f in fields[:n_expected]]
    except ValueError:
        bad = next(f for f in fields[:n_expected] if not _is_float(f))
        raise InputError(f"{path}:{lineno}: {bad!r} is not a number ({what}): {line.strip()!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{path}:{lineno}: NaN or inf in {line.strip()!r}; remove the line")
    return values


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _check_quat(path: PathLike, lineno: int, q: list[float]) -> None:
    n = math.sqrt(sum(v * v for v in q))
    if n < 1e-6:
        raise InputError(f"{path}:{lineno}: quaternion {q} has zero norm")
    if abs(n - 1.0) > 0.1:
        raise InputError(
            f"{path}:{lineno}: quaternion {q} has norm {n:.3f}, expected 1; is the column order right?"
        )


# --------------------------------------------------------------------------- TUM


def write_tum(
    path: PathLike,
    timestamps: np.ndarray,
    world_from_cam: np.ndarray,
    header: Optional[dict] = None,
) -> None:
    """Write poses in TUM format: ``timestamp tx ty tz qx qy qz qw`` per line.

    timestamps:     (N,) seconds.
    world_from_cam: (N, 4, 4) float64 camera-to-world poses, metres.
    header:         optional ``{key: value}`` written first as ``# key: value`` comment lines.
    Positions and quaternions get 9 decimals; timestamps the shortest exact form (<= 9 decimals).
    """
    poses = _check_poses(world_from_cam)
    ts = _check_timestamps(timestamps, len(poses))
    q = quats_xyzw_from_poses(poses) if len(poses) else np.zeros((0, 4))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, value in (header or {}).items():
        lines.append(f"# {key}: {value}")
    lines.append("# timestamp tx ty tz qx qy qz qw")
    for i in range(len(poses)):
        t = poses[i, :3, 3]
        lines.append(
            f"{_fmt_time(ts[i])} {t[0]:.9f} {t[1]:.9f} {t[2]:.9f} {q[i, 0]:.9f} {q[i, 1]:.9f} {q[i, 2]:.9f} {q[i, 3]:.9f}"
        )
    path.write_text("\n".join(lines) + "\n")


def read_tum(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM-format trajectory (also TUM ``groundtruth.txt``).

    Returns (timestamps (N,) float64 seconds, world_from_cam (N, 4, 4) float64), in file order.
    Lines starting with ``#`` and blank lines are ignored; commas are accepted as separators.
    Raises InputError naming the file and line for a malformed line.
    """
    lines = _open_text(path)
    stamps, txyz, qxyzw = [], [], []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        v = _parse_numbers(path, lineno, s, 8, "timestamp tx ty tz qx qy qz qw")
        if len(s.replace(",", " ").split()) != 8:
            raise InputError(
                f"{path}:{lineno}: expected exactly 8 columns (timestamp tx ty tz qx qy qz qw), "
                f"found {len(s.replace(',', ' ').split())}; is this a KITTI (12 columns) or EuRoC file?"
            )
        _check_quat(path, lineno, v[4:8])
        stamps.append(v[0])
        txyz.append(v[1:4])
        qxyzw.append(v[4:8])
    ts = np.asarray(stamps, dtype=np.float64)
    poses = poses_from_tq(np.asarray(txyz).reshape(-1, 3), np.asarray(qxyzw).reshape(-1, 4))
    return ts, poses


def read_tum_header(path: PathLike) -> dict:
    """``{key: value}`` from leading ``# key: value`` comment lines of a TUM file (values as str)."""
    out: dict = {}
    for line in _open_text(path):
        s = line.strip()
        if not s:
            continue
        if not s.startswith("#"):
            break
        body = s[1:].strip()
        if ":" in body:
            key, value = body.split(":", 1)
            if key.strip() and " " not in key.strip():
                out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------- KITTI


def write_kitti(path: PathLike, world_from_cam: np.ndarray) -> None:
    """Write poses in KITTI odometry format: the 3x4 ``[R|t]`` of each pose, row-major, 12 numbers a line.

    world_from_cam: (N, 4, 4) float64. KITTI has no timestamps; line i is pose i.
    """
    poses = _check_poses(world_from_cam)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(f"{v:.9e}" for v in m[:3, :4].reshape(-1)) for m in poses]
    path.write_text("\n".join(lines) + ("\n" if lines else ""))


def read_kitti(path: PathLike) -> np.ndarray:
    """Read a KITTI-format trajectory -> world_from_cam (N, 4, 4) float64."""
    lines = _open_text(path)
    out = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        n_fields = len(s.split())
        if n_fields != 12:
            raise InputError(
                f"{path}:{lineno}: expected 12 numbers (row-major 3x4 [R|t]), found {n_fields}: {s!r}"
            )
        v = _parse_numbers(path, lineno, s, 12, "row-major 3x4 [R|t]")
        m = np.eye(4)
        m[:3, :4] = np.asarray(v).reshape(3, 4)
        det = np.linalg.det(m[:3, :3])
        if abs(det - 1.0) > 0.1:
            raise InputError(f"{path}:{lineno}: rotation block has determinant {det:.3f}, expected 1")
        out.append(m)
    return np.asarray(out, dtype=np.float64).reshape(-1, 4, 4)


# --------------------------------------------------------------------------- EuRoC


def write_euroc(path: PathLike, timestamps: np.ndarray, world_from_cam: np.ndarray) -> None:
    """Write poses in EuRoC csv format (timestamp in integer ns, position, quaternion w,x,y,z).

    timestamps: (N,) seconds; world_from_cam: (N, 4, 4) float64.
    """
    poses = _check_poses(world_from_cam)
    ts = _check_timestamps(timestamps, len(poses))
    q = quats_xyzw_from_poses(poses) if len(poses) else np.zeros((0, 4))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [EUROC_HEADER]
    for i in range(len(poses)):
        t = poses[i, :3, 3]
        ns = int(round(ts[i] * 1e9))
        lines.append(
            f"{ns},{t[0]:.9f},{t[1]:.9f},{t[2]:.9f},{q[i, 3]:.9f},{q[i, 0]:.9f},{q[i, 1]:.9f},{q[i, 2]:.9f}"
        )
    path.write_text("\n".join(lines) + "\n")


def read_euroc(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a EuRoC csv trajectory or ground truth -> (timestamps (N,) seconds, world_from_cam (N,4,4))."""
    lines = _open_text(path)
    stamps, txyz, qxyzw = [], [], []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = [f.strip() for f in s.split(",")]
        if len(fields) < 8:
            raise InputError(
                f"{path}:{lineno}: expected at least 8 comma-separated values "
                f"(timestamp [ns], p_x, p_y, p_z, q_w, q_x, q_y, q_z), found {len(fields)}: {s!r}"
            )
        try:
            ns = int(fields[0])
        except ValueError:
            if _is_float(fields[0]):
                raise InputError(
                    f"{path}:{lineno}: timestamp {fields[0]!r} is not an integer; EuRoC timestamps are nanoseconds"
                ) from None
            raise InputError(f"{path}:{lineno}: timestamp {fields[0]!r} is not a number: {s!r}") from None
        v = _parse_numbers(path, lineno, " ".join(fields[1:8]), 7, "p_x p_y p_z q_w q_x q_y q_z")
        _check_quat(path, lineno, v[3:7])
        stamps.append(ns * 1e-9)
        txyz.append(v[0:3])
        qxyzw.append([v[4], v[5], v[6], v[3]])
    ts = np.asarray(stamps, dtype=np.float64)
    return ts, poses_from_tq(np.asarray(txyz).reshape(-1, 3), np.asarray(qxyzw).reshape(-1, 4))


# --------------------------------------------------------------------------- any format

FORMATS = ("tum", "kitti", "euroc")


def detect_format(path: PathLike) -> str:
    """Guess "tum", "kitti" or "euroc" from the first data line (8 fields / 12 fields / csv)."""
    for lineno, line in enumerate(_open_text(path), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "," in s:
            return "euroc"
        n = len(s.split())
        if n == 8:
            return "tum"
        if n == 12:
            return "kitti"
        raise InputError(
            f"{path}:{lineno}: cannot tell the trajectory format: {n} columns; expected 8 (TUM: "
            "timestamp tx ty tz qx qy qz qw), 12 (KITTI: row-major 3x4) or a EuRoC csv"
        )
    return "tum"  # empty file: any reader returns no poses


def read_trajectory(path: PathLike, fmt: str = "auto") -> tuple[Optional[np.ndarray], np.ndarray]:
    """Read any supported format -> (timestamps (N,) seconds or None for KITTI, world_from_cam (N,4,4))."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "tum":
        return read_tum(path)
    if fmt == "euroc":
        return read_euroc(path)
    if fmt == "kitti":
        return None, read_kitti(path)
    raise ValueError(f"unknown trajectory format {fmt!r}; choose one of {', '.join(FORMATS)} or auto")


def write_trajectory(path: PathLike, timestamps: np.ndarray, world_from_cam: np.ndarray, fmt: str = "tum") -> None:
    """Write (N,) timestamps and (N,4,4) world_from_cam in ``fmt`` ("tum", "kitti" or "euroc")."""
    if fmt == "tum":
        write_tum(path, timestamps, world_from_cam)
    elif fmt == "kitti":
        write_kitti(path, world_from_cam)
    elif fmt == "euroc":
        write_euroc(path, timestamps, world_from_cam)
    else:
        raise ValueError(f"unknown trajectory format {fmt!r}; choose one of {', '.join(FORMATS)}")
