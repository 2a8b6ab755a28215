"""Pinhole camera with OpenCV (Brown-Conrady) distortion ``(k1, k2, p1, p2, k3)``.

Pixel convention: (x, y), the centre of the top-left pixel is (0, 0) (OpenCV).
"Distorted" pixels are what the sensor sees; "undistorted" pixels are ideal pinhole pixels
with the same K. The SLAM core undistorts keypoints once and then works with ``K`` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import yaml

from slam.errors import InputError

_KEYS = ("width", "height", "fx", "fy", "cx", "cy")


def _points2(uv, name: str = "uv") -> np.ndarray:
    arr = np.asarray(uv, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2) pixels, got shape {arr.shape}")
    return arr


@dataclass(kw_only=True)
class PinholeCamera:
    """Intrinsics of one camera; keyword arguments only (``PinholeCamera(width=640, height=480,
    fx=..., fy=..., cx=..., cy=...)``), so no two of them can be swapped unnoticed.

    width, height: image size in pixels.
    fx, fy, cx, cy: pinhole intrinsics in pixels; ``0 < cx < width``, ``0 < cy < height``.
    dist: OpenCV distortion ``(k1, k2, p1, p2, k3)`` (dimensionless), zeros = no distortion.
    Bad values raise :class:`slam.errors.InputError`.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple = field(default=(0.0, 0.0, 0.0, 0.0, 0.0))

    def __post_init__(self) -> None:
        try:
            d = tuple(float(x) for x in np.asarray(self.dist, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise InputError(f"dist must be 4 or 5 numbers (k1, k2, p1, p2[, k3]), got {self.dist!r}") from None
        if len(d) == 4:
            d = d + (0.0,)
        if len(d) != 5:
            raise InputError(f"dist must hold 4 or 5 coefficients (k1, k2, p1, p2[, k3]), got {len(d)}")
        self.dist = d
        for key in _KEYS:
            value = getattr(self, key)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InputError(f"camera {key} must be a number, got {value!r}") from None
            if not np.isfinite(number):
                raise InputError(f"camera {key} must be finite, got {value!r}")
            if key in ("width", "height"):
                if not number.is_integer():
                    raise InputError(f"camera {key} must be a whole number of pixels, got {value!r}")
                number = int(number)
            setattr(self, key, number)
        for key in ("width", "height", "fx", "fy"):
            if getattr(self, key) <= 0:
                raise InputError(f"camera {key} must be positive, got {getattr(self, key)}")
        if not 0 < self.cx < self.width:
            raise InputError(f"camera cx={self.cx} must lie inside the image (0 < cx < width={self.width}); "
                             "are width/height and cx/cy swapped?")
        if not 0 < self.cy < self.height:
            raise InputError(f"camera cy={self.cy} must lie inside the image (0 < cy < height={self.height}); "
                             "are width/height and cx/cy swapped?")

    # ------------------------------------------------------------------ properties
    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 pinhole matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_array(self) -> np.ndarray:
        """(5,) float64 ``(k1, k2, p1, p2, k3)``."""
        return np.asarray(self.dist, dtype=np.float64)

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist_array != 0.0))

    # ------------------------------------------------------------------ distortion model
    def _distort_normalized(self, xn: np.ndarray) -> np.ndarray:
        """Apply the distortion to (N, 2) normalised coordinates."""
        k1, k2, p1, p2, k3 = self.dist
        x, y = xn[:, 0], xn[:, 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xy = x * y
        xd = x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * xy
        return np.stack([xd, yd], axis=1)

    def _distort_jacobian(self, xn: np.ndarray) -> np.ndarray:
        """(N, 2, 2) Jacobian of :meth:`_distort_normalized`."""
        k1, k2, p1, p2, k3 = self.dist
        x, y = xn[:, 0], xn[:, 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dradial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)  # d radial / d r2
        J = np.empty((xn.shape[0], 2, 2))
        J[:, 0, 0] = radial + 2.0 * x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x
        J[:, 0, 1] = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
        J[:, 1, 0] = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
        J[:, 1, 1] = radial + 2.0 * y * y * dradial + 6.0 * p1 * y + 2.0 * p2 * x
        return J

    def _to_normalized(self, uv: np.ndarray) -> np.ndarray:
        return np.stack([(uv[:, 0] - self.cx) / self.fx, (uv[:, 1] - self.cy) / self.fy], axis=1)

    def _to_pixels(self, xn: np.ndarray) -> np.ndarray:
        return np.stack([xn[:, 0] * self.fx + self.cx, xn[:, 1] * self.fy + self.cy], axis=1)

    # ------------------------------------------------------------------ projection
    def project_undistorted(self, pts_cam: np.ndarray) -> np.ndarray:
        """(N, 3) camera-frame points (metres) -> (N, 2) ideal pinhole pixels (no validity check;
        points with z <= 0 give meaningless values)."""
        pts_cam = np.asarray(pts_cam, dtype=np.float64)
        if pts_cam.ndim != 2 or pts_cam.shape[1] != 3:
            raise ValueError(f"pts_cam must be (N, 3), got {pts_cam.shape}")
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = pts_cam[:, :2] / pts_cam[:, 2:3]
        return self._to_pixels(xn)

    def project(self, pts_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) camera-frame points -> ((N, 2) DISTORTED pixels, (N,) bool valid = z > 1e-6)."""
        pts_cam = np.asarray(pts_cam, dtype=np.float64)
        if pts_cam.ndim != 2 or pts_cam.shape[1] != 3:
            raise ValueError(f"pts_cam must be (N, 3), got {pts_cam.shape}")
        valid = pts_cam[:, 2] > 1e-6
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = pts_cam[:, :2] / pts_cam[:, 2:3]
        if self.has_distortion:
            xn = self._distort_normalized(xn)
        return self._to_pixels(xn), valid

    def distort_points(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) undistorted (ideal pinhole) pixels -> (N, 2) distorted pixels."""
        uv = _points2(uv)
        if not self.has_distortion or uv.shape[0] == 0:
            return uv.copy()
        return self._to_pixels(self._distort_normalized(self._to_normalized(uv)))

    def distortion_jacobian(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2, 2) d(distorted pixels) / d(undistorted pixels) at (N, 2) undistorted pixels uv
        (the identity without distortion)."""
        uv = _points2(uv)
        if not self.has_distortion:
            return np.tile(np.eye(2), (uv.shape[0], 1, 1))
        J = self._distort_jacobian(self._to_normalized(uv))
        f = np.array([self.fx, self.fy])
        return J * (f[:, None] / f[None, :])[None]

    def undistort_points(self, uv: np.ndarray, newton_steps: int = 3) -> np.ndarray:
        """(N, 2) distorted pixels -> (N, 2) undistorted pixels with the same K.

        cv2.undistortPoints (iterative, tight TermCriteria) followed by ``newton_steps``
        vectorised Newton steps on the exact distortion model, so the round trip
        ``distort_points(undistort_points(uv))`` is accurate to ~1e-6 px over the whole image even
        for strong distortion (TUM fr1).
        """
        uv = _points2(uv)
        if not self.has_distortion or uv.shape[0] == 0:
            return uv.copy()
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        xn = cv2.undistortPoints(np.ascontiguousarray(uv.reshape(-1, 1, 2)), self.K, self.dist_array,
                                 criteria=criteria).reshape(-1, 2).astype(np.float64)
        target = self._to_normalized(uv)
        for _ in range(newton_steps):
            r = self._distort_normalized(xn) - target
            J = self._distort_jacobian(xn)
            det = J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
            ok = np.abs(det) > 1e-12
            safe = np.where(ok, det, 1.0)
            dx = (J[:, 1, 1] * r[:, 0] - J[:, 0, 1] * r[:, 1]) / safe
            dy = (-J[:, 1, 0] * r[:, 0] + J[:, 0, 0] * r[:, 1]) / safe
            step = np.stack([np.where(ok, dx, 0.0), np.where(ok, dy, 0.0)], axis=1)
            xn = xn - step
        return self._to_pixels(xn)

    def unproject(self, uv_undistorted: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(N, 2) undistorted pixels and (N,) depths (metres, along z) -> (N, 3) camera-frame points."""
        uv = _points2(uv_undistorted, "uv_undistorted")
        depth = np.asarray(depth, dtype=np.float64).reshape(-1)
        if depth.shape[0] != uv.shape[0]:
            raise ValueError(f"depth must be ({uv.shape[0]},), got {depth.shape}")
        xn = self._to_normalized(uv)
        return np.stack([xn[:, 0] * depth, xn[:, 1] * depth, depth], axis=1)

    def in_image(self, uv: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(N,) bool: pixel inside [margin, width-1-margin] x [margin, height-1-margin]."""
        uv = _points2(uv)
        return ((uv[:, 0] >= margin) & (uv[:, 0] <= self.width - 1 - margin)
                & (uv[:, 1] >= margin) & (uv[:, 1] <= self.height - 1 - margin))

    def scaled(self, sx: float, sy: float) -> "PinholeCamera":
        """Camera for an image resized by (sx, sy). Uses the pixel-centre convention
        ``c' = (c + 0.5) * s - 0.5``; distortion (in normalised coordinates) is unchanged."""
        if sx <= 0 or sy <= 0:
            raise InputError(f"scale factors must be positive, got ({sx}, {sy})")
        return PinholeCamera(
            width=int(round(self.width * sx)), height=int(round(self.height * sy)),
            fx=self.fx * sx, fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5, dist=self.dist)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy,
                "cx": self.cx, "cy": self.cy, "dist": [float(x) for x in self.dist]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "PinholeCamera":
        """Build from a mapping with keys width, height, fx, fy, cx, cy and optional dist (4 or 5
        numbers), either at the top level or nested under ``camera:`` (with ``dist`` beside or
        inside it: the layout of the manifests in ``sequences/``). InputError naming ``source``."""
        if isinstance(d, dict) and isinstance(d.get("camera"), dict):
            nested = dict(d["camera"])
            if "dist" not in nested and "dist" in d:
                nested["dist"] = d["dist"]
            d = nested
        if not isinstance(d, dict):
            raise InputError(f"{source}: expected a mapping with keys {', '.join(_KEYS)} and optional dist, "
                             f"got {type(d).__name__}")
        missing = [k for k in _KEYS if k not in d]
        if missing:
            raise InputError(f"{source}: missing camera key(s) {', '.join(missing)}; required keys are "
                             f"{', '.join(_KEYS)} (+ optional dist: [k1, k2, p1, p2, k3])")
        try:
            return cls(**{k: d[k] for k in _KEYS}, dist=d.get("dist") or (0.0, 0.0, 0.0, 0.0, 0.0))
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None

    def to_yaml(self, path: Union[str, Path]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "PinholeCamera":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"camera file {path} does not exist; pass an existing calibration YAML "
                             "(make one with `python -m slam calibrate`)")
        try:
            d = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"camera file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(d, source=f"camera file {path}")


def as_pinhole_camera(camera) -> PinholeCamera:
    """``camera`` as a :class:`PinholeCamera`: itself, one built from a dict (``from_dict`` keys),
    or from any object with width/height/fx/fy/cx/cy (and optional dist) attributes.
    Raises TypeError for anything else."""
    if isinstance(camera, PinholeCamera):
        return camera
    if isinstance(camera, dict):
        return PinholeCamera.from_dict(camera)
    try:
        return PinholeCamera(width=camera.width, height=camera.height, fx=camera.fx, fy=camera.fy, cx=camera.cx,
                             cy=camera.cy, dist=tuple(getattr(camera, "dist", (0.0,) * 5)))
    except AttributeError as exc:
        raise TypeError(f"camera must be a PinholeCamera, a dict or have width/height/fx/fy/cx/cy/dist: {exc}") from None
