"""Read a folder of images as a timestamped stream.

Files with the extensions png, jpg, jpeg, bmp (any case) are taken in natural order
(``img2.png`` before ``img10.png``). Timestamps: when every file name (without extension) is a
number it is the timestamp in seconds, or nanoseconds when it is an integer above 1e14 (EuRoC,
``1403636579763555584.png``); otherwise frame i gets ``i / fps``.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import cv2
import numpy as np

from slam.errors import InputError
from slam.io.base import LockedReader, read_image
from slam.types import Frame

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["ImageFolderReader", "natural_key", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_NS_THRESHOLD = 1e14  # integer names above this are nanoseconds


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically: ``a2`` < ``a10``."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r"(\d+)", name) if tok]


def _stamp_from_stem(stem: str) -> Optional[float]:
    try:
        value = float(stem)
    except ValueError:
        return None
    if not np.isfinite(value):
        return None
    if stem.isdigit() and value > _NS_THRESHOLD:
        return int(stem) * 1e-9
    return value


class ImageFolderReader(LockedReader):
    """Iterate over the images of a folder as monocular :class:`slam.types.Frame` objects.

    folder:      folder with the images (not recursive).
    fps:         frame rate used for timestamps when the file names are not numbers.
    extensions:  accepted file extensions (lower case, with the dot).
    max_frames, start, stride: select images ``start, start+stride, ...`` (max_frames 0 = all).

    Frames have ``index`` = position in the selection, ``timestamp`` in seconds, ``image`` (H, W, 3)
    uint8 BGR (grey images are converted), ``depth`` None and ``path``. Unreadable images are
    skipped with a warning and counted in ``n_skipped`` / ``skipped`` ((index, path, reason)).
    """

    def __init__(
        self,
        folder: PathLike,
        fps: float = 30.0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        max_frames: int = 0,
        start: int = 0,
        stride: int = 1,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: image folder not found; pass an existing folder of images")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if stride < 1 or start < 0 or max_frames < 0:
            raise ValueError(f"need stride >= 1, start >= 0, max_frames >= 0; got {stride}, {start}, {max_frames}")
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        files = [p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in exts]
        if not files:
            raise InputError(
                f"{self.folder}: no images with extension {', '.join(exts)}; "
                "point at the folder that directly contains the images"
            )
        files.sort(key=lambda p: natural_key(p.name))
        stamps = [_stamp_from_stem(p.stem) for p in files]
        if all(s is not None for s in stamps) and len(set(stamps)) == len(stamps):
            order = np.argsort(np.asarray(stamps), kind="stable")
            files = [files[i] for i in order]
            times = [float(stamps[i]) for i in order]
            self.timestamps_from_names = True
        else:
            times = [i / fps for i in range(len(files))]
            self.timestamps_from_names = False
        self.fps = float(fps)
        sel = list(zip(times, files))[start::stride]
        if max_frames > 0:
            sel = sel[:max_frames]
        self._entries = sel
        self._lock = threading.Lock()
        self.n_skipped = 0
        self.skipped: list[tuple[int, str, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def timestamps(self) -> np.ndarray:
        """(N,) float64 seconds of the selected frames."""
        return np.array([t for t, _ in self._entries], dtype=np.float64)

    @property
    def paths(self) -> list[Path]:
        return [p for _, p in self._entries]

    def read(self, index: int) -> Optional[Frame]:
        """Load selected frame ``index``; None (counted as skipped) when it cannot be decoded."""
        t, path = self._entries[index]
        image, reason = read_image(path, cv2.IMREAD_COLOR)
        if image is None:
            log.warning("skipping frame %d (%s): %s", index, path, reason)
            with self._lock:
                self.n_skipped += 1
                self.skipped.append((index, str(path), reason))
            return None
        return Frame(index=index, timestamp=float(t), image=image, depth=None, path=str(path))

    def __iter__(self) -> Iterator[Frame]:
        with self._lock:
            self.n_skipped = 0
            self.skipped = []
        for i in range(len(self._entries)):
            frame = self.read(i)
            if frame is not None:
                yield frame
        if self.n_skipped:
            log.warning("%s: skipped %d of %d images", self.folder, self.n_skipped, len(self))

    def __repr__(self) -> str:
        return f"ImageFolderReader({str(self.folder)!r}, frames={len(self)})"
