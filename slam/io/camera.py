"""Live camera input through OpenCV ``VideoCapture``: a device index, a video file or a stream URL.

``CameraSource`` opens the input at construction, so every problem surfaces early as a
:class:`InputError` whose message names the input and the fix:

- a device that cannot be opened (names ``/dev/videoN``, lists the devices that exist, and
  suggests checking permissions / another program using it / passing a file path);
- an input that delivers no frame within ``frame_timeout_s`` seconds;
- a frame size that disagrees with the calibration (says both sizes, and to recalibrate or to
  pass ``--resize WxH``);
- a calibration file that is missing or invalid (points at ``python -m slam calibrate``).

Iterating yields :class:`slam.types.Frame` objects: ``index`` counts yielded frames from 0,
``image`` is (H, W, 3) uint8 BGR, ``depth`` is None, ``timestamp`` is in seconds:

- device or URL: wall-clock time (``time.time()``) when the frame was read;
- video file: ``frame position / fps`` (deterministic), or with ``realtime=True`` wall-clock time
  with reading paced at the file's frame rate, so a video file stands in for a live camera.
"""
from __future__ import annotations

import functools
import glob
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import cv2
import numpy as np

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera
from slam.types import Frame

LOG = logging.getLogger(__name__)

__all__ = ["InputError", "CameraSource", "parse_camera_spec", "parse_size", "load_calibration"]


def parse_camera_spec(spec: Union[str, int, Path]) -> tuple[str, Union[int, str]]:
    """``0`` / ``"0"`` -> ("device", 0); ``"rtsp://..."`` -> ("url", spec); else ("file", path)."""
    if isinstance(spec, bool):
        raise InputError(f"camera spec must be a device index, file path or URL, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise InputError(f"camera index must be >= 0, got {spec}")
        return "device", spec
    text = str(spec).strip()
    if not text:
        raise InputError("empty camera spec: pass a device index (0), a video file path or a stream URL")
    if text.isdigit():
        return "device", int(text)
    if "://" in text:
        return "url", text
    return "file", text


def parse_size(text: Union[str, tuple, list, None]) -> Optional[tuple[int, int]]:
    """``"640x480"`` or ``(640, 480)`` -> (640, 480); None -> None."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise InputError(f"size must be (width, height), got {text!r}")
        w, h = int(text[0]), int(text[1])
    else:
        parts = str(text).lower().replace("*", "x").split("x")
        try:
            w, h = (int(p) for p in parts)
        except ValueError:
            raise InputError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 640x480") from None
    if w <= 0 or h <= 0:
        raise InputError(f"size must be positive, got {w}x{h}")
    return w, h


def load_calibration(calib: Union[None, PinholeCamera, dict, str, Path]) -> Optional[PinholeCamera]:
    """Calibration from a PinholeCamera, a dict (keys width, height, fx, fy, cx, cy, dist) or a
    YAML file written by ``python -m slam calibrate``; None stays None."""
    if calib is None or isinstance(calib, PinholeCamera):
        return calib
    if isinstance(calib, dict):
        try:
            return PinholeCamera.from_dict(calib, source="calibration")
        except ValueError as exc:
            raise InputError(str(exc)) from None
    path = Path(calib)
    if not path.is_file():
        raise InputError(
            f"calibration file {path} does not exist; create one with "
            f"`python -m slam calibrate --camera 0 --board 9x6 --square 0.025 --out {path}`"
        )
    try:
        return PinholeCamera.from_yaml(path)
    except ValueError as exc:
        raise InputError(
            f"{exc}. Expected keys width, height, fx, fy, cx, cy, dist; "
            f"`python -m slam calibrate ... --out {path}` writes such a file"
        ) from None


def _video_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*")) if sys.platform.startswith("linux") else []


class CameraSource:
    """Frames from a camera, a video file or a stream URL (see the module docstring).

    spec:            device index (int or digits), video file path, or URL (``rtsp://``, ``http://``).
    calib:           PinholeCamera, dict, or path of a camera YAML; the frame size must match it.
    max_frames:      stop after this many frames (0 = no limit).
    loop:            video files only: start again at the end (timestamps keep increasing).
    realtime:        video files only: pace reading at the file's fps and stamp wall-clock time.
    resize:          (width, height) or "WxH": resize every frame to this size (INTER_AREA)
                     before the calibration check.
    frame_timeout_s: seconds to wait for the first frame (InputError after), and for a frame
                     mid-stream before the stream ends with a warning.
    open_timeout_s:  URL inputs: FFmpeg open timeout.
    request_fps:     devices: frame rate to ask the driver for (0 = leave the default).
    """

    def __init__(
        self,
        spec: Union[str, int, Path],
        calib: Union[None, PinholeCamera, dict, str, Path] = None,
        max_frames: int = 0,
        loop: bool = False,
        realtime: bool = False,
        resize: Union[None, str, tuple] = None,
        frame_timeout_s: float = 5.0,
        open_timeout_s: float = 10.0,
        request_fps: float = 0.0,
    ) -> None:
        self._init_args = dict(spec=spec, calib=calib, max_frames=max_frames, loop=loop, realtime=realtime, resize=resize,
                               frame_timeout_s=frame_timeout_s, open_timeout_s=open_timeout_s, request_fps=request_fps)
        self.kind, self.target = parse_camera_spec(spec)
        self.name = self._describe()
        if max_frames < 0:
            raise InputError(f"max_frames must be >= 0, got {max_frames}")
        if (loop or realtime) and self.kind != "file":
            LOG.warning("%s: loop/realtime only apply to video files; ignored", self.name)
            loop = realtime = False
        self.camera = load_calibration(calib)
        self.max_frames = int(max_frames)
        self.loop = bool(loop)
        self.realtime = bool(realtime)
        self.resize = parse_size(resize)
        self.frame_timeout_s = float(frame_timeout_s)
        self._cap = self._open(open_timeout_s, request_fps)
        reported = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = reported if 0.0 < reported < 1000.0 else 30.0
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.kind == "file" else 0
        self.n_file_frames = max(n, 0)
        self._first = self._read_first()
        h, w = self._first.shape[:2]
        self.frame_size = (w, h)
        self._check_calibration()
        self._iterated = False
        self.n_read = 0
        self.n_failed_reads = 0

    # ------------------------------------------------------------------------------------------
    def _describe(self) -> str:
        if self.kind == "device":
            return f"camera {self.target}"
        if self.kind == "url":
            return f"stream {self.target}"
        return f"video file {self.target}"

    def _open(self, open_timeout_s: float, request_fps: float) -> cv2.VideoCapture:
        if self.kind == "file":
            path = Path(self.target)
            if not path.is_file():
                raise InputError(
                    f"{self.name}: no such file. Pass a device index (e.g. --camera 0), an existing "
                    "video file, or a stream URL (rtsp://..., http://...)"
                )
            cap = cv2.VideoCapture(str(path))
        elif self.kind == "url":
            ms = int(max(open_timeout_s, 0.1) * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.frame_timeout_s * 1000)]
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        else:
            idx = int(self.target)
            devices = _video_devices()
            if sys.platform.startswith("linux") and f"/dev/video{idx}" not in devices:
                raise InputError(
                    f"cannot open camera {idx}: /dev/video{idx} does not exist "
                    f"(video devices found: {', '.join(devices) if devices else 'none'}). Check that the "
                    "camera is plugged in (ls /dev/video*), or pass a video file path or stream URL instead"
                )
            cap = cv2.VideoCapture(idx)
        if not cap.isOpened():
            cap.release()
            if self.kind == "device":
                raise InputError(
                    f"cannot open camera {self.target} (/dev/video{self.target}): check that it exists "
                    "(ls /dev/video*), that you may read it (group 'video': ls -l /dev/video*), and that no "
                    "other program is using it; or pass a video file path or stream URL"
                )
            if self.kind == "url":
                raise InputError(
                    f"cannot open {self.name} within {open_timeout_s:.0f} s: check the URL, the network, "
                    "and that this OpenCV build has FFmpeg (cv2.getBuildInformation())"
                )
            raise InputError(
                f"cannot open {self.name}: not a video, truncated, or a codec this OpenCV build lacks. "
                "Re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4)"
            )
        if self.kind == "device":
            want = self.resize is None and self.camera is not None
            if want:  # ask for the calibrated resolution; checked on the first frame
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.camera.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.camera.height)
            if request_fps > 0:
                cap.set(cv2.CAP_PROP_FPS, request_fps)
        return cap

    def _read_first(self) -> np.ndarray:
        """First frame, read in a helper thread so a blocked driver cannot hang us."""
        box: dict[str, Any] = {}

        def grab() -> None:
            try:
                deadline = time.monotonic() + self.frame_timeout_s
                while True:
                    ok, img = self._cap.read()
                    if ok and img is not None and img.size:
                        box["img"] = img
                        return
                    if self.kind == "file" or time.monotonic() > deadline:
                        return
                    time.sleep(0.02)
            except Exception as exc:  # noqa: BLE001 - reported below
                box["exc"] = exc

        th = threading.Thread(target=grab, name="camera-first-frame", daemon=True)
        th.start()
        th.join(self.frame_timeout_s + 1.0)
        if th.is_alive():
            # the read is stuck inside the driver: do not release the capture under it
            raise InputError(
                f"{self.name}: no frame within {self.frame_timeout_s:.0f} s (the read is blocked). Check that "
                "the camera works (e.g. with another viewer) and is not used by another program"
            )
        if "img" not in box:
            self._cap.release()
            detail = f" ({box['exc']})" if "exc" in box else ""
            if self.kind == "file":
                raise InputError(
                    f"{self.name}: no frames could be decoded{detail}; the file is empty or its codec is "
                    "unsupported. Re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4)"
                )
            raise InputError(
                f"{self.name}: opened but delivered no frames within {self.frame_timeout_s:.0f} s{detail}. "
                "Check that the camera works and is not used by another program, or raise the timeout"
            )
        return self._prepare(box["img"])

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if self.resize is not None and (img.shape[1], img.shape[0]) != self.resize:
            img = cv2.resize(img, self.resize, interpolation=cv2.INTER_AREA)
        return img

    def _check_calibration(self) -> None:
        if self.camera is None:
            return
        want = (self.camera.width, self.camera.height)
        if self.frame_size != want:
            self.close()
            raw = "resized " if self.resize is not None else ""
            raise InputError(
                f"{self.name} gives {raw}{self.frame_size[0]}x{self.frame_size[1]} frames but the calibration is for "
                f"{want[0]}x{want[1]}. Recalibrate at this resolution (python -m slam calibrate --camera ...), "
                f"or pass --resize {want[0]}x{want[1]} if the calibration was made on a scaled image of "
                "the same field of view"
            )
        if self.resize is not None and self.raw_aspect_differs():
            LOG.warning("%s: --resize changes the aspect ratio; intrinsics will be wrong unless calibrated so", self.name)

    def raw_aspect_differs(self) -> bool:
        w = float(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        h = float(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w <= 0 or h <= 0 or self.resize is None:
            return False
        return abs(w / h - self.resize[0] / self.resize[1]) > 0.01

    # ------------------------------------------------------------------------------------------
    @property
    def total(self) -> Optional[int]:
        """Frames expected, when known (video file without loop), else None."""
        if self.kind != "file" or self.loop:
            return self.max_frames or None
        n = self.n_file_frames
        if n <= 0:
            return self.max_frames or None
        return min(n, self.max_frames) if self.max_frames else n

    def __len__(self) -> int:
        t = self.total
        if t is None:
            raise TypeError(f"{self.name}: length unknown (live input or looping video)")
        return t

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise InputError(f"{self.name}: a CameraSource can be iterated once; open a new one")
        self._iterated = True
        return self._frames()

    def _read_next(self) -> Optional[np.ndarray]:
        """Next decoded frame, None at the end of the stream."""
        if self._cap is None:
            return None
        t_last = time.monotonic()
        rewound = False
        while True:
            ok, img = self._cap.read()
            if ok and img is not None and img.size:
                return self._prepare(img)
            self.n_failed_reads += 1
            if self.kind == "file":
                if self.loop and not rewound:
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    rewound = True
                    continue
                return None
            if time.monotonic() - t_last > self.frame_timeout_s:
                LOG.warning("%s delivered no frame for %.0f s; ending the stream", self.name, self.frame_timeout_s)
                return None
            time.sleep(0.005)

    def _frames(self) -> Iterator[Frame]:
        index = 0
        t0 = time.perf_counter()
        img: Optional[np.ndarray] = self._first
        self._first = None
        while img is not None:
            if self.max_frames and index >= self.max_frames:
                break
            if self.kind == "file" and not self.realtime:
                stamp = index / self.fps
            else:
                if self.realtime:
                    delay = t0 + index / self.fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                stamp = time.time()
            self.n_read += 1
            yield Frame(index=index, timestamp=stamp, image=img, depth=None, path=None)
            index += 1
            if self.max_frames and index >= self.max_frames:
                break
            img = self._read_next()
            if img is not None and (img.shape[1], img.shape[0]) != self.frame_size:
                LOG.warning("%s changed frame size to %dx%d mid-stream; ending the stream", self.name, img.shape[1], img.shape[0])
                break

    def process_factory(self) -> "functools.partial[CameraSource]":
        """For a feature process (slam.runtime.process_frontend): releases this capture (a device
        can be open only once) and returns a picklable callable that reopens the same input, with
        the calibration already loaded, in the process that reads it."""
        if self._iterated:
            raise InputError(f"{self.name}: already being read; a feature process must reopen it before reading starts")
        self.close()
        args = dict(self._init_args)
        args["calib"] = self.camera
        return functools.partial(CameraSource, **args)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "CameraSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
