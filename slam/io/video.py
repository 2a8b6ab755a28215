"""Read a video file as a timestamped stream of frames (OpenCV / FFmpeg backend)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Union

import cv2
import numpy as np

from slam.errors import InputError
from slam.types import Frame

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["VideoReader"]


class VideoReader:
    """Iterate over the frames of a video file.

    path:       video file (anything OpenCV's FFmpeg backend decodes: mp4, avi, mkv, mov, ...).
    max_frames: stop after this many yielded frames (0 = all).
    stride:     yield every ``stride``-th decoded frame (the others are grabbed, not decoded).
    start:      skip this many frames first.
    fps:        fallback frame rate when the container reports none.

    Frames have ``index`` = position of the frame in the video (0-based, counting every decoded
    frame, so the stride shows as gaps), ``timestamp`` = presentation time in seconds
    (``CAP_PROP_POS_MSEC``, or ``index / fps`` when the backend gives no times), ``image``
    (H, W, 3) uint8 BGR and ``depth`` None. A frame that fails to decode mid-stream is skipped
    with a warning and counted in ``n_skipped``; the stream ends after 10 consecutive failures or
    at the reported frame count.
    """

    def __init__(self, path: PathLike, max_frames: int = 0, stride: int = 1, start: int = 0, fps: float = 30.0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: video file not found; check the path")
        if stride < 1 or start < 0 or max_frames < 0:
            raise ValueError(f"need stride >= 1, start >= 0, max_frames >= 0; got {stride}, {start}, {max_frames}")
        self.max_frames = int(max_frames)
        self.stride = int(stride)
        self.start = int(start)
        cap = self._open()
        try:
            self.fps_reported = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.fps = self.fps_reported if self.fps_reported > 0 else float(fps)
            self.n_video_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            ok, first = cap.read()
        finally:
            cap.release()
        if not ok or first is None:
            raise InputError(
                f"{self.path}: OpenCV opened the file but cannot decode a frame; the codec is probably "
                "unsupported. Re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4) or extract the frames "
                "(ffmpeg -i IN frames/%06d.png) and read the folder instead"
            )
        self.n_skipped = 0

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise InputError(
                f"{self.path}: cannot be opened as a video (not a video, truncated, or a codec this "
                "OpenCV build lacks). Re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4) or extract the "
                "frames (ffmpeg -i IN frames/%06d.png) and read the folder instead"
            )
        return cap

    def __len__(self) -> int:
        """Expected number of yielded frames (from the container's frame count; may be approximate)."""
        n = max(self.n_video_frames - self.start, 0)
        n = (n + self.stride - 1) // self.stride
        return min(n, self.max_frames) if self.max_frames > 0 else n

    def __iter__(self) -> Iterator[Frame]:
        self.n_skipped = 0
        cap = self._open()
        try:
            index = -1
            yielded = 0
            failures = 0
            while self.max_frames <= 0 or yielded < self.max_frames:
                index += 1
                if self.n_video_frames > 0 and index >= self.n_video_frames:
                    break
                wanted = index >= self.start and (index - self.start) % self.stride == 0
                if not wanted:
                    if not cap.grab():
                        failures += 1
                        if failures >= 10 or self.n_video_frames <= 0:
                            break
                    continue
                ok, image = cap.read()
                if not ok or image is None:
                    failures += 1
                    if self.n_video_frames <= 0 or failures >= 10:
                        break
                    log.warning("%s: frame %d cannot be decoded; skipped", self.path, index)
                    self.n_skipped += 1
                    continue
                failures = 0
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                t = msec / 1000.0 if (msec > 0 or index == 0) and np.isfinite(msec) else index / self.fps
                if image.ndim == 2:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                yielded += 1
                yield Frame(index=index, timestamp=float(t), image=image, depth=None, path=str(self.path))
        finally:
            cap.release()

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, frames~{len(self)}, fps={self.fps:g})"
