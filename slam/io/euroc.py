"""EuRoC MAV dataset reader (ETH ASL layout).

A sequence folder (``V1_01_easy/``) holds ``mav0/`` with one folder per sensor:

- ``cam0/`` (left) and ``cam1/`` (right): ``data.csv`` (``#timestamp [ns],filename`` then one
  ``<ns>,<file>`` line per image), ``data/<file>`` (752x480 8-bit grey PNG, 20 Hz) and
  ``sensor.yaml``: ``camera_model: pinhole``, ``intrinsics: [fu, fv, cu, cv]``,
  ``distortion_model: radial-tangential``, ``distortion_coefficients: [k1, k2, p1, p2]``,
  ``resolution: [width, height]`` and ``T_BS`` (4x4 row-major ``body_from_cam``: the camera's
  pose in the body frame, which is the IMU's).
- ``state_groundtruth_estimate0/data.csv``: the ground truth, ``world_from_body`` at 200 Hz
  (``timestamp [ns], p_RS_R xyz [m], q_RS wxyz, ...``; only the first 8 columns are used).

Timestamps are integer nanoseconds in the files and seconds (float64) everywhere in this module's
results. Rows of ``data.csv`` whose image is absent are skipped with one warning per camera.
Left and right frames are paired by timestamp (equal in EuRoC, which triggers both cameras
together; ``max_pair_difference_s`` allows small offsets in other recordings in this layout).

Ground truth is turned into the camera's pose: ``world_from_cam0 = world_from_body @ T_BS``
(:func:`read_groundtruth`), so that it compares like with like against a visual trajectory.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np
import yaml

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import se3_inverse
from slam.geometry.stereo import StereoRectification, StereoRig, rectify_stereo
from slam.errors import InputError
from slam.io.base import LockedReader, read_image
from slam.io.trajectory import read_euroc
from slam.types import Frame

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = [
    "EuRoCCamera", "EuRoCReader", "find_mav0", "read_sensor_yaml", "read_image_list", "read_groundtruth",
    "GROUNDTRUTH_CSV",
]

GROUNDTRUTH_CSV = "state_groundtruth_estimate0/data.csv"
_RADTAN = ("radial-tangential", "radtan", "plumb_bob")


def find_mav0(folder: PathLike) -> Optional[Path]:
    """The ``mav0`` folder of a EuRoC sequence given the sequence folder or ``mav0`` itself; None
    when ``folder`` is neither (no ``mav0/cam0/data.csv`` nor ``cam0/data.csv``)."""
    folder = Path(folder)
    for cand in (folder / "mav0", folder):
        if (cand / "cam0" / "data.csv").is_file():
            return cand
    return None


@dataclass
class EuRoCCamera:
    """One camera of a EuRoC sequence, from its ``sensor.yaml``.

    name:          "cam0" or "cam1".
    camera:        intrinsics, radial-tangential distortion and resolution (pixels).
    body_from_cam: (4, 4) float64 ``T_BS``: ``p_body = body_from_cam @ p_cam``, metres.
    rate_hz:       nominal frame rate.
    sensor_yaml:   the file it was read from.
    """

    name: str
    camera: PinholeCamera
    body_from_cam: np.ndarray
    rate_hz: float
    sensor_yaml: Path


def _load_opencv_yaml(path: Path) -> dict:
    """Parse a ``%YAML:1.0`` file as written by OpenCV/Kalibr (directive and matrix tags dropped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc}); restore it from the sequence's archive") from exc
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("%YAML")]
    text = "\n".join(lines).replace("!!opencv-matrix", "")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); restore it from the sequence's archive") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of keys (intrinsics, T_BS, ...); restore it from the sequence's archive")
    return data


def _numbers(path: Path, data: dict, key: str, n: int) -> list[float]:
    value = data.get(key)
    if isinstance(value, dict) and "data" in value:
        value = value["data"]
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise InputError(
            f"{path}: key '{key}' must be a list of {n} numbers, got {value!r}; "
            "fix the file (see cam0/sensor.yaml of any EuRoC sequence for the format)"
        )
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise InputError(f"{path}: key '{key}' holds a value that is not a number: {value!r}") from None
    if not all(np.isfinite(out)):
        raise InputError(f"{path}: key '{key}' holds NaN or inf: {value!r}")
    return out


def read_sensor_yaml(path: PathLike) -> EuRoCCamera:
    """Read a EuRoC camera ``sensor.yaml`` -> :class:`EuRoCCamera`.

    Raises InputError (naming the file and the fix) when the file is missing, is not a pinhole
    radial-tangential camera, or lacks intrinsics, resolution or ``T_BS``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: not found; each EuRoC camera folder needs sensor.yaml (intrinsics, distortion, T_BS): "
            "unpack the sequence's whole ASL archive, or copy sensor.yaml from the same camera rig"
        )
    data = _load_opencv_yaml(path)
    model = str(data.get("camera_model", "pinhole")).lower()
    if model != "pinhole":
        raise InputError(f"{path}: camera_model {model!r} is not supported; only 'pinhole' cameras can be read")
    dist_model = str(data.get("distortion_model", "radial-tangential")).lower()
    if dist_model not in _RADTAN:
        raise InputError(
            f"{path}: distortion_model {dist_model!r} is not supported; recalibrate with the "
            "radial-tangential model (k1, k2, p1, p2) or undistort the images first"
        )
    fu, fv, cu, cv = _numbers(path, data, "intrinsics", 4)
    width, height = (int(v) for v in _numbers(path, data, "resolution", 2))
    dist = [0.0] * 4
    if "distortion_coefficients" in data:
        coeffs = data["distortion_coefficients"]
        n = len(coeffs) if isinstance(coeffs, list) and len(coeffs) == 5 else 4  # k1 k2 p1 p2 [k3]
        dist = _numbers(path, data, "distortion_coefficients", n)
    body_from_cam = np.asarray(_numbers(path, data, "T_BS", 16), dtype=np.float64).reshape(4, 4)
    R = body_from_cam[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.abs(body_from_cam[3] - [0, 0, 0, 1]).max() > 1e-9:
        raise InputError(f"{path}: T_BS is not a rigid transform (rotation not orthonormal); fix the file")
    try:
        camera = PinholeCamera(width=width, height=height, fx=fu, fy=fv, cx=cu, cy=cv, dist=tuple(dist))
    except ValueError as exc:
        raise InputError(f"{path}: invalid camera ({exc})") from None
    try:
        rate = float(data.get("rate_hz", 20.0))
    except (TypeError, ValueError):
        raise InputError(f"{path}: rate_hz {data.get('rate_hz')!r} is not a number") from None
    return EuRoCCamera(path.parent.name, camera, body_from_cam, rate, path)


def read_image_list(csv_path: PathLike) -> list[tuple[int, str]]:
    """Read a camera's ``data.csv`` -> ``[(timestamp_ns, filename), ...]`` sorted by time.

    Raises InputError naming the file and line for a malformed row (not ``<integer ns>,<file>``)
    or a repeated timestamp.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"{path}: not found; a EuRoC camera folder must hold data.csv ('#timestamp [ns],filename')")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as text ({exc}); restore it from the sequence's archive") from exc
    rows: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = [f.strip() for f in s.split(",")]
        if len(fields) != 2 or not fields[1]:
            raise InputError(
                f"{path}:{lineno}: expected '<timestamp ns>,<filename>', found {s!r}; fix or remove the line"
            )
        try:
            ns = int(fields[0])
        except ValueError:
            raise InputError(
                f"{path}:{lineno}: timestamp {fields[0]!r} is not an integer number of nanoseconds; fix or remove the line"
            ) from None
        rows.append((ns, fields[1]))
    if not rows:
        raise InputError(f"{path}: lists no images; restore it from the sequence's archive")
    rows.sort()
    stamps = [r[0] for r in rows]
    if len(set(stamps)) != len(stamps):
        dup = next(a for a, b in zip(stamps, stamps[1:]) if a == b)
        raise InputError(f"{path}: timestamp {dup} appears twice; remove the duplicate line")
    return rows


def read_groundtruth(mav0: PathLike, body_from_cam: Optional[np.ndarray] = None) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """EuRoC ground truth as camera poses.

    mav0:          the ``mav0`` folder (or the sequence folder containing it).
    body_from_cam: (4, 4) ``T_BS`` of the camera whose poses are wanted (default: cam0's, from
                   its sensor.yaml); the identity gives the body (IMU) poses themselves.
    Returns (timestamps (N,) float64 seconds, world_from_cam (N, 4, 4) float64 metres) with
    ``world_from_cam = world_from_body @ body_from_cam``, or None when the sequence has no
    ``state_groundtruth_estimate0/data.csv``. Malformed rows raise InputError (file and line).
    """
    root = find_mav0(mav0) or Path(mav0)
    path = root / GROUNDTRUTH_CSV
    if not path.is_file():
        return None
    if body_from_cam is None:
        body_from_cam = read_sensor_yaml(root / "cam0" / "sensor.yaml").body_from_cam
    ts, world_from_body = read_euroc(path)
    if len(ts) == 0:
        raise InputError(f"{path}: holds no poses; restore it from the sequence's archive")
    order = np.argsort(ts, kind="stable")
    return ts[order], world_from_body[order] @ np.asarray(body_from_cam, dtype=np.float64)


def _present(mav0: Path, cam: str, rows: list[tuple[int, str]]) -> list[tuple[int, Path]]:
    """Rows whose image exists; one warning for those that do not."""
    folder = mav0 / cam / "data"
    out, missing = [], []
    for ns, name in rows:
        p = folder / name
        (out if p.is_file() else missing).append((ns, p))
    if missing:
        log.warning("%s: %d of %d images listed in data.csv are absent (first: %s); those rows are skipped",
                    mav0 / cam, len(missing), len(rows), missing[0][1].name)
    return out


class EuRoCReader(LockedReader):
    """Frames of a EuRoC sequence: cam0, and cam1 paired with it by timestamp when ``stereo``.

    folder:     the sequence folder (holding ``mav0/``) or ``mav0`` itself.
    stereo:     also read cam1 (``Frame.image_right``); frames without a right partner within
                ``max_pair_difference_s`` are skipped (one warning).
    rectify:    with stereo, rectify both images (:func:`slam.geometry.stereo.rectify_stereo`):
                ``camera`` is then the rectified pinhole (no distortion) and ``rig.rectified``.
                Without, images are raw and ``camera`` carries cam0's distortion.
    max_frames, start, stride: take frames ``start, start+stride, ...`` (max_frames 0 = all).

    Attributes: ``cam0``/``cam1`` (:class:`EuRoCCamera`, cam1 None when absent and not needed),
    ``camera`` (the PinholeCamera of ``Frame.image``), ``rig`` (StereoRig or None),
    ``rectification`` (StereoRectification or None), ``mav0`` (Path).
    Frames: ``index`` = position in the selection, ``timestamp`` seconds, ``image`` (and
    ``image_right``) (H, W, 3) uint8 BGR (the grey images repeated), ``path`` the cam0 file.
    An unreadable image, or one whose size is not ``resolution`` of sensor.yaml, is skipped
    with a warning and recorded in ``skipped`` as (index, path, reason).
    Raises InputError (file and fix named) for a missing sensor.yaml or data.csv, a malformed
    data.csv, a missing cam1 when stereo, or a first image whose size disagrees with sensor.yaml.
    """

    def __init__(self, folder: PathLike, stereo: bool = False, rectify: bool = True, max_frames: int = 0,
                 start: int = 0, stride: int = 1, max_pair_difference_s: float = 0.001) -> None:
        if stride < 1 or start < 0 or max_frames < 0:
            raise ValueError(f"need stride >= 1, start >= 0, max_frames >= 0; got {stride}, {start}, {max_frames}")
        folder = Path(folder)
        mav0 = find_mav0(folder)
        if mav0 is None:
            raise InputError(
                f"{folder}: not a EuRoC sequence (no mav0/cam0/data.csv); point at the folder that holds mav0/ "
                "(download it with `python -m slam download euroc/<name>`)"
            )
        self.mav0 = mav0
        self.folder = mav0.parent if mav0.name == "mav0" else mav0
        self.stereo = bool(stereo)
        self.cam0 = read_sensor_yaml(mav0 / "cam0" / "sensor.yaml")
        left = _present(mav0, "cam0", read_image_list(mav0 / "cam0" / "data.csv"))
        self.cam1: Optional[EuRoCCamera] = None
        if (mav0 / "cam1" / "sensor.yaml").is_file() or self.stereo:
            if self.stereo and not (mav0 / "cam1").is_dir():
                raise InputError(
                    f"{mav0 / 'cam1'}: not found, but stereo was asked for; run monocular (--mode mono) "
                    "or unpack the sequence's whole archive (it includes cam1)"
                )
            self.cam1 = read_sensor_yaml(mav0 / "cam1" / "sensor.yaml")
        entries: list[tuple[int, Path, Optional[Path]]]
        if self.stereo:
            right = _present(mav0, "cam1", read_image_list(mav0 / "cam1" / "data.csv"))
            entries = self._pair(left, right, int(round(max_pair_difference_s * 1e9)))
        else:
            entries = [(ns, p, None) for ns, p in left]
        if not entries:
            raise InputError(f"{mav0 / 'cam0' / 'data'}: none of the images listed in cam0/data.csv exist; unpack the archive again")
        entries = entries[start::stride]
        if max_frames > 0:
            entries = entries[:max_frames]
        self._entries = entries
        self._check_first_sizes()
        self.rig: Optional[StereoRig] = None
        if self.cam1 is not None:
            try:
                self.rig = StereoRig(self.cam0.camera, self.cam1.camera,
                                     se3_inverse(self.cam1.body_from_cam) @ self.cam0.body_from_cam,
                                     rectified=False, left_from_body=se3_inverse(self.cam0.body_from_cam))
            except ValueError as exc:
                if self.stereo:
                    raise InputError(
                        f"{self.cam1.sensor_yaml}: does not make a stereo pair with {self.cam0.sensor_yaml} ({exc}); "
                        "use the sensor.yaml files of one rig, or run monocular (--mode mono)"
                    ) from None
                log.debug("cam0/cam1 do not form a stereo rig (%s); monocular only", exc)
        self.rectification: Optional[StereoRectification] = None
        self.camera: PinholeCamera = self.cam0.camera
        if self.stereo and rectify:
            assert self.rig is not None
            self.rectification = rectify_stereo(self.rig)
            self.rig = self.rectification.rig
            self.camera = self.rig.left
        self._lock = threading.Lock()
        self.n_skipped = 0
        self.skipped: list[tuple[int, str, str]] = []

    def _pair(self, left: list, right: list, tol_ns: int) -> list[tuple[int, Path, Optional[Path]]]:
        r_ns = np.array([ns for ns, _ in right], dtype=np.int64)
        out, unpaired = [], 0
        for ns, p in left:
            k = int(np.searchsorted(r_ns, ns))
            best = min((j for j in (k - 1, k) if 0 <= j < len(r_ns)), key=lambda j: abs(int(r_ns[j]) - ns), default=None)
            if best is None or abs(int(r_ns[best]) - ns) > tol_ns:
                unpaired += 1
                continue
            out.append((ns, p, right[best][1]))
        if unpaired:
            log.warning("%s: %d of %d cam0 images have no cam1 image within %.1f ms; those frames are skipped",
                        self.mav0, unpaired, len(left), tol_ns * 1e-6)
        return out

    def _check_first_sizes(self) -> None:
        """The first image of each camera must have sensor.yaml's resolution."""
        ns, left, right = self._entries[0]
        checks = [(left, self.cam0)] + ([(right, self.cam1)] if right is not None and self.cam1 is not None else [])
        for path, cam in checks:
            img, why = read_image(path, cv2.IMREAD_UNCHANGED)
            if img is None:
                raise InputError(f"{path}: the first image {why}; restore it from the sequence's archive")
            w, h = img.shape[1], img.shape[0]
            if (w, h) != (cam.camera.width, cam.camera.height):
                raise InputError(
                    f"{path}: image is {w}x{h} but {cam.sensor_yaml} says resolution [{cam.camera.width}, "
                    f"{cam.camera.height}]; use the images this calibration belongs to, or fix its resolution and intrinsics"
                )

    # ------------------------------------------------------------------ info

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def timestamps(self) -> np.ndarray:
        """(N,) float64 seconds of the selected frames."""
        return np.array([ns for ns, _, _ in self._entries], dtype=np.float64) * 1e-9

    @property
    def groundtruth_path(self) -> Optional[Path]:
        p = self.mav0 / GROUNDTRUTH_CSV
        return p if p.is_file() else None

    @property
    def cam_from_body(self) -> np.ndarray:
        """(4, 4) pose of the camera of ``Frame.image`` (rectified left when rectified) in the body frame."""
        if self.rig is not None and self.rectification is not None:
            return self.rig.left_from_body
        return se3_inverse(self.cam0.body_from_cam)

    def groundtruth(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Ground truth of the camera of ``Frame.image``: (timestamps (N,) s, world_from_cam
        (N, 4, 4)) = ``world_from_body @ body_from_cam`` (cam0's T_BS, and the rectifying
        rotation when rectified); None when the sequence has none."""
        return read_groundtruth(self.mav0, se3_inverse(self.cam_from_body))

    # ------------------------------------------------------------------ reading

    def _skip(self, index: int, path: Path, reason: str) -> None:
        log.warning("skipping frame %d (%s): %s", index, path, reason)
        with self._lock:
            self.n_skipped += 1
            self.skipped.append((index, str(path), reason))

    def _load(self, index: int, path: Path, cam: EuRoCCamera) -> Optional[np.ndarray]:
        img, why = read_image(path, cv2.IMREAD_COLOR)
        if img is None:
            self._skip(index, path, f"image {why}")
            return None
        if img.shape[:2] != (cam.camera.height, cam.camera.width):
            self._skip(index, path, f"image is {img.shape[1]}x{img.shape[0]}, {cam.sensor_yaml} says "
                                    f"{cam.camera.width}x{cam.camera.height}")
            return None
        return img

    def read(self, index: int) -> Optional[Frame]:
        """Load selected frame ``index`` (thread-safe); None (recorded in ``skipped``) when unusable."""
        ns, left_path, right_path = self._entries[index]
        left = self._load(index, left_path, self.cam0)
        if left is None:
            return None
        right = None
        if right_path is not None:
            assert self.cam1 is not None
            right = self._load(index, right_path, self.cam1)
            if right is None:
                return None
            if self.rectification is not None:
                left, right = self.rectification.rectify_images(left, right)
        return Frame(index=index, timestamp=ns * 1e-9, image=left, depth=None, path=str(left_path), image_right=right)

    def __iter__(self) -> Iterator[Frame]:
        with self._lock:
            self.n_skipped = 0
            self.skipped = []
        for i in range(len(self._entries)):
            frame = self.read(i)
            if frame is not None:
                yield frame
        if self.n_skipped:
            log.warning("%s: skipped %d of %d frames (missing or unusable images)", self.mav0, self.n_skipped, len(self))

    def __repr__(self) -> str:
        return f"EuRoCReader({str(self.folder)!r}, frames={len(self)}, stereo={self.stereo})"
