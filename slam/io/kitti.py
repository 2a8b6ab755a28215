"""KITTI odometry dataset reader.

Layout (as unpacked from KITTI's ``data_odometry_*.zip`` archives)::

    dataset/
      sequences/XX/calib.txt      P0: .. P3: (3x4 row-major projection matrices of the rectified cameras)
      sequences/XX/times.txt      one timestamp per frame, seconds from the start
      sequences/XX/image_0/, image_1/   left/right grey PNGs (000000.png, ...)
      sequences/XX/image_2/, image_3/   left/right colour PNGs
      poses/XX.txt                ground truth for 00-10: 12 numbers per frame, world_from_cam0 (3x4)

The images are rectified: every ``Pi = K [I | t_i]`` shares one K with cam0's frame as
reference, so ``t_i = K^-1 Pi[:, 3]`` is the offset of camera i (``p_cam_i = p_cam0 + t_i``).
For the grey pair the baseline is ``-P1[0, 3] / fx``; for the colour pair
``(P2[0, 3] - P3[0, 3]) / fx``. The ground truth is the pose of cam0 (the left grey camera);
for the colour camera it is moved by cam2's offset (about 6 cm).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.stereo import StereoRig
from slam.errors import InputError
from slam.io.base import LockedReader, read_image
from slam.io.trajectory import read_kitti
from slam.types import Frame

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["KITTICalib", "KITTIReader", "read_calib", "read_times", "read_groundtruth", "poses_path",
           "is_kitti_sequence"]


def is_kitti_sequence(folder: PathLike) -> bool:
    """True when ``folder`` looks like ``sequences/XX``: calib.txt, times.txt and an image_N folder."""
    folder = Path(folder)
    return ((folder / "calib.txt").is_file() and (folder / "times.txt").is_file()
            and any((folder / f"image_{i}").is_dir() for i in range(4)))


def poses_path(sequence_folder: PathLike) -> Path:
    """Where KITTI keeps the ground truth of ``.../sequences/XX``: ``.../poses/XX.txt``."""
    folder = Path(sequence_folder).resolve()
    return folder.parent.parent / "poses" / f"{folder.name}.txt"


@dataclass
class KITTICalib:
    """The projection matrices of ``calib.txt``: ``P`` maps "P0".."P3" to (3, 4) float64 arrays
    (only those present); ``path`` the file."""

    P: dict
    path: Path

    def _get(self, name: str, why: str) -> np.ndarray:
        if name not in self.P:
            raise InputError(
                f"{self.path}: has no {name}, needed for {why}; use the calib.txt of KITTI's "
                "data_odometry_calib.zip for this sequence"
            )
        return self.P[name]

    def camera(self, index: int, width: int, height: int) -> PinholeCamera:
        """PinholeCamera of camera ``index`` (0..3) for images of ``width`` x ``height`` pixels."""
        P = self._get(f"P{index}", f"camera {index}")
        return PinholeCamera(width=width, height=height, fx=P[0, 0], fy=P[1, 1], cx=P[0, 2], cy=P[1, 2])

    def offset(self, index: int) -> np.ndarray:
        """(3,) ``t_i = K^-1 Pi[:, 3]``: ``p_cam_i = p_cam0 + t_i`` (metres)."""
        P = self._get(f"P{index}", f"camera {index}")
        return np.linalg.solve(P[:, :3], P[:, 3])

    def baseline(self, left: int, right: int) -> float:
        """Stereo baseline in metres of the (left, right) pair, (0, 1) or (2, 3)."""
        Pl = self._get(f"P{left}", "stereo (the left camera)")
        Pr = self._get(f"P{right}", "stereo (the right camera)")
        return float((Pl[0, 3] - Pr[0, 3]) / Pr[0, 0])

    def cam_from_cam0(self, index: int) -> np.ndarray:
        """(4, 4) pure translation ``cam_i_from_cam0`` of the rectified camera ``index``."""
        out = np.eye(4)
        out[:3, 3] = self.offset(index)
        return out


def read_calib(path: PathLike) -> KITTICalib:
    """Parse KITTI ``calib.txt`` (lines ``Pn: 12 numbers``; Tr and other keys are ignored).

    Raises InputError naming the file and line for a malformed P line, or when P0 is absent.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: not found; every KITTI sequence folder needs calib.txt (from data_odometry_calib.zip)"
        )
    P: dict = {}
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        s = line.strip()
        if not s or ":" not in s:
            continue
        key, rest = s.split(":", 1)
        key = key.strip()
        if key not in ("P0", "P1", "P2", "P3"):
            continue
        try:
            values = [float(v) for v in rest.split()]
        except ValueError:
            raise InputError(f"{path}:{lineno}: {key} holds a value that is not a number; use KITTI's calib.txt") from None
        if len(values) != 12 or not np.all(np.isfinite(values)):
            raise InputError(
                f"{path}:{lineno}: {key} must hold 12 finite numbers (3x4 row-major), found {len(values)}; use KITTI's calib.txt"
            )
        m = np.asarray(values, dtype=np.float64).reshape(3, 4)
        if m[0, 0] <= 0 or m[1, 1] <= 0 or abs(m[2, 2] - 1.0) > 1e-6:
            raise InputError(f"{path}:{lineno}: {key} is not a rectified projection matrix K [I | t] (fx, fy > 0, P[2,2] = 1)")
        P[key] = m
    if "P0" not in P:
        raise InputError(f"{path}: has no 'P0:' line; use the calib.txt of KITTI's data_odometry_calib.zip")
    return KITTICalib(P, path)


def read_times(path: PathLike) -> np.ndarray:
    """(N,) float64 seconds of KITTI ``times.txt`` (one number per line, non-decreasing)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found; every KITTI sequence folder needs times.txt (from data_odometry_calib.zip)")
    out = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        try:
            t = float(s.split()[0])
        except ValueError:
            raise InputError(f"{path}:{lineno}: {s!r} is not a timestamp in seconds; fix or restore the file") from None
        out.append(t)
    ts = np.asarray(out, dtype=np.float64)
    if len(ts) == 0:
        raise InputError(f"{path}: holds no timestamps; restore it from data_odometry_calib.zip")
    if np.any(np.diff(ts) < 0):
        raise InputError(f"{path}: timestamps decrease at line {int(np.argmax(np.diff(ts) < 0)) + 2}; restore the file")
    return ts


def read_groundtruth(sequence_folder: PathLike, camera: int = 0) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Ground truth of a KITTI sequence -> (timestamps (N,) s from times.txt, world_from_cam (N, 4, 4)).

    ``poses/XX.txt`` beside ``sequences/`` holds world_from_cam0; ``camera`` 2 (colour left)
    moves it by cam2's offset from calib.txt. None when the file does not exist (sequences 11-21).
    Raises InputError when the pose and timestamp counts differ.
    """
    folder = Path(sequence_folder)
    path = poses_path(folder)
    if not path.is_file():
        return None
    world_from_cam0 = read_kitti(path)
    ts = read_times(folder / "times.txt")
    if len(world_from_cam0) != len(ts):
        raise InputError(
            f"{path}: holds {len(world_from_cam0)} poses but {folder / 'times.txt'} {len(ts)} timestamps; "
            "use the poses file of this sequence"
        )
    if camera == 0:
        return ts, world_from_cam0
    cam0_from_cam = np.linalg.inv(read_calib(folder / "calib.txt").cam_from_cam0(camera))
    return ts, world_from_cam0 @ cam0_from_cam


class KITTIReader(LockedReader):
    """Frames of a KITTI odometry sequence folder (``.../sequences/XX``).

    color:   read the colour pair (image_2/image_3, P2/P3) instead of the grey one (image_0/image_1).
    stereo:  also read the right image (``Frame.image_right``), paired by frame number.
    max_frames, start, stride: take frames ``start, start+stride, ...`` (0 = all).

    Attributes: ``calib`` (KITTICalib), ``camera`` (PinholeCamera of the left images, no
    distortion: KITTI is rectified), ``rig`` (rectified StereoRig when stereo, else None),
    ``left_index`` (0 or 2). Frames: ``index`` = position in the selection (the frame number
    when start=0 and stride=1), ``timestamp`` from times.txt (s), ``image``/``image_right``
    (H, W, 3) uint8 BGR, ``path`` the left file (whose name is the KITTI frame number).
    Raises InputError for a missing image folder, a calib.txt without P1 (P3) when stereo,
    a times.txt whose length differs from the number of images, or left/right images of
    different sizes.
    """

    def __init__(self, folder: PathLike, color: bool = False, stereo: bool = False, max_frames: int = 0,
                 start: int = 0, stride: int = 1) -> None:
        if stride < 1 or start < 0 or max_frames < 0:
            raise ValueError(f"need stride >= 1, start >= 0, max_frames >= 0; got {stride}, {start}, {max_frames}")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: KITTI sequence folder not found; pass .../dataset/sequences/XX")
        self.color = bool(color)
        self.stereo = bool(stereo)
        self.left_index = 2 if color else 0
        right_index = self.left_index + 1
        self.calib = read_calib(self.folder / "calib.txt")
        if stereo:
            self.calib._get(f"P{right_index}", "stereo (the right camera)")
        times = read_times(self.folder / "times.txt")
        left_dir = self.folder / f"image_{self.left_index}"
        right_dir = self.folder / f"image_{right_index}"
        for d in [left_dir] + ([right_dir] if stereo else []):
            if not d.is_dir():
                other = "image_2 (colour, --color)" if not color else "image_0 (grey)"
                raise InputError(
                    f"{d}: not found; unpack KITTI's data_odometry_{'color' if color else 'gray'}.zip here"
                    + ("" if d == right_dir else f", or read {other}")
                    + ("; or run monocular (--mode mono)" if d == right_dir else "")
                )
        files = sorted(p for p in left_dir.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise InputError(f"{left_dir}: holds no PNG images; unpack the sequence again")
        if len(files) != len(times):
            log.warning("%s: %d images but %s lists %d timestamps; frames beyond either are dropped",
                        left_dir, len(files), self.folder / "times.txt", len(times))
        n = min(len(files), len(times))
        idx = list(range(n))[start::stride]
        if max_frames > 0:
            idx = idx[:max_frames]
        if not idx:
            raise InputError(f"{self.folder}: no frames selected (start={start} of {n})")
        self._frames = [(i, float(times[i]), left_dir / files[i].name, (right_dir / files[i].name) if stereo else None)
                        for i in idx]
        first, why = read_image(self._frames[0][2], cv2.IMREAD_UNCHANGED)
        if first is None:
            raise InputError(f"{self._frames[0][2]}: the first image {why}; restore it from the archive")
        self.width, self.height = first.shape[1], first.shape[0]
        self.camera = self.calib.camera(self.left_index, self.width, self.height)
        self.rig: Optional[StereoRig] = None
        if stereo:
            rp = self._frames[0][3]
            right = read_image(rp, cv2.IMREAD_UNCHANGED)[0] if rp is not None else None
            if right is None:
                raise InputError(f"{rp}: missing or not an image; unpack the right camera's images, or run --mode mono")
            if right.shape[:2] != first.shape[:2]:
                raise InputError(
                    f"{rp}: image is {right.shape[1]}x{right.shape[0]} but the left image {self._frames[0][2]} is "
                    f"{self.width}x{self.height}; left and right images must come from the same KITTI sequence"
                )
            b = self.calib.baseline(self.left_index, right_index)
            right_from_left = np.eye(4)
            right_from_left[0, 3] = -b
            right_cam = self.calib.camera(right_index, self.width, self.height)
            try:
                self.rig = StereoRig(self.camera, right_cam, right_from_left, rectified=True)
            except ValueError as exc:
                raise InputError(f"{self.calib.path}: P{self.left_index}/P{right_index} do not describe a rectified pair ({exc})") from None
        self._lock = threading.Lock()
        self.n_skipped = 0
        self.skipped: list[tuple[int, str, str]] = []

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def timestamps(self) -> np.ndarray:
        """(N,) float64 seconds of the selected frames (times.txt)."""
        return np.array([t for _, t, _, _ in self._frames], dtype=np.float64)

    @property
    def groundtruth_path(self) -> Optional[Path]:
        p = poses_path(self.folder)
        return p if p.is_file() else None

    def groundtruth(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(timestamps (N,) s, world_from_cam (N, 4, 4)) of the left camera of this reader, or None."""
        return read_groundtruth(self.folder, self.left_index)

    def _skip(self, index: int, path: Path, reason: str) -> None:
        log.warning("skipping frame %d (%s): %s", index, path, reason)
        with self._lock:
            self.n_skipped += 1
            self.skipped.append((index, str(path), reason))

    def _load(self, index: int, path: Path) -> Optional[np.ndarray]:
        img, why = read_image(path, cv2.IMREAD_COLOR)
        if img is None:
            self._skip(index, path, f"image {why}")
            return None
        if img.shape[:2] != (self.height, self.width):
            self._skip(index, path, f"image is {img.shape[1]}x{img.shape[0]}, the sequence's first is {self.width}x{self.height}")
            return None
        return img

    def read(self, k: int) -> Optional[Frame]:
        """Load selected frame ``k`` (thread-safe); None (recorded in ``skipped``) when unusable."""
        _, t, lp, rp = self._frames[k]
        left = self._load(k, lp)
        if left is None:
            return None
        right = self._load(k, rp) if rp is not None else None
        if rp is not None and right is None:
            return None
        return Frame(index=k, timestamp=t, image=left, depth=None, path=str(lp), image_right=right)

    def __iter__(self) -> Iterator[Frame]:
        with self._lock:
            self.n_skipped = 0
            self.skipped = []
        for k in range(len(self._frames)):
            frame = self.read(k)
            if frame is not None:
                yield frame
        if self.n_skipped:
            log.warning("%s: skipped %d of %d frames", self.folder, self.n_skipped, len(self))

    def __repr__(self) -> str:
        return f"KITTIReader({str(self.folder)!r}, frames={len(self)}, color={self.color}, stereo={self.stereo})"
