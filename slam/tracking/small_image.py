"""The camera's rotation between two frames from small blurred images (PTAM's "small blurry image").

Fast hand-held turns defeat the constant-velocity prediction, and the motion blur that comes with
them thins out the keypoints that the descriptor check of the prediction relies on. A whole image
shrunk to about 80 px wide hardly sees the blur, and between two frames at video rate the change
of such an image is almost all rotation. So the rotation is found by aligning the two small
images directly:

- :class:`SmallImageMaker` (feature stage): the grey image, shrunk by area averaging and
  resampled onto an undistorted pinhole grid (``K_small``: the camera's K scaled), then blurred
  with a Gaussian of ``sigma`` px. float32 in [0, 1], NaN where the grid falls outside the image.
- :class:`RotationAligner` (tracking): the rotation R that makes ``I_cur(pi(K R K^-1 x))`` equal
  ``I_last(x)`` up to a brightness gain and offset (solved in closed form at each step), over the
  last image's pixels x: Gauss-Newton on SO(3) in the inverse-compositional form (the
  template's Jacobian is computed once), Huber-weighted, coarse to fine over three levels
  (80, 40 and 20 px wide), from the best of several starting rotations. The finest level uses
  the half of its pixels with the strongest gradients. Translation is not modelled: at video
  rate its image motion is small next to a turn's. About 2 ms of CPU per frame pair.

The result is ``cam_cur_from_cam_last``'s rotation (3,3) with its residual; the tracker uses it in
place of the constant-velocity prediction's rotation (``tracking.rotation_prior``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import so3_exp

MIN_PIXELS = 100  # valid pixels a level needs to be aligned
STOP_PX = 0.05  # a level's iterations stop when a step moves the image by less than this (px of that level)
HUBER = 0.04  # residual (grey level / 255, after gain) beyond which a pixel is down-weighted: occlusion, parallax, specularity


def small_camera_matrix(camera: PinholeCamera, width: int) -> np.ndarray:
    """(3,3) pinhole K of the small images ``width`` px wide: the camera's K scaled, with pixel
    centres kept at pixel centres (:meth:`PinholeCamera.scaled`)."""
    s = float(width) / float(camera.width)
    return np.asarray(camera.scaled(s, s).K, dtype=np.float64)


class SmallImageMaker:
    """make((H, W) or (H, W, 3) uint8 image) -> (h, w) float32 small, undistorted, blurred grey
    image in [0, 1] (pixels outside the source image: NaN). ``K_small`` (3,3) is its pinhole
    camera: the camera's K scaled by ``scale``."""

    def __init__(self, camera: PinholeCamera, width: int = 80, sigma: float = 0.75) -> None:
        self.scale = float(width) / float(camera.width)
        self.size = (int(width), max(8, int(round(camera.height * self.scale))))
        s = self.scale
        self.K_small = small_camera_matrix(camera, width)
        w, h = self.size
        # each small-grid pixel centre -> undistorted full-res pixel -> distorted full-res pixel
        # -> the area-shrunk image's pixel (its centres sit at (x + 0.5) / s - 0.5)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        uv_small = np.stack([gx.ravel(), gy.ravel()], axis=1)
        uv_full = (uv_small + 0.5) / s - 0.5
        dist = camera.distort_points(uv_full) if camera.has_distortion else uv_full
        src = (dist + 0.5) * s - 0.5
        self._map_x = src[:, 0].reshape(h, w).astype(np.float32)
        self._map_y = src[:, 1].reshape(h, w).astype(np.float32)
        self.sigma = float(sigma)

    def make(self, image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        w, h = self.size
        sw = int(round(grey.shape[1] * self.scale))
        sh = int(round(grey.shape[0] * self.scale))
        shrunk = cv2.resize(grey, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32) * (1.0 / 255.0)
        out = cv2.remap(shrunk, self._map_x, self._map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
        if self.sigma > 0:
            valid = np.isfinite(out)
            filled = np.where(valid, out, 0.0).astype(np.float32)
            num = cv2.GaussianBlur(filled, (0, 0), self.sigma)
            den = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), self.sigma)
            out = np.where(valid & (den > 1e-3), num / np.maximum(den, 1e-3), np.nan).astype(np.float32)
        return out


@dataclass
class RotationAlignment:
    """cur_from_last: (3,3) float64 rotation of the current camera from the last one.
    residual: RMS photometric residual (grey / 255) at the end, over the pixels seen by both.
    start_residual: the same at the best starting rotation before any step.
    overlap: share of the last image's pixels that land inside the current image."""

    cur_from_last: np.ndarray
    residual: float
    start_residual: float
    overlap: float


def _half(img: np.ndarray) -> np.ndarray:
    """2x2 means ignoring NaN (a pixel stays NaN when all four are)."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    blocks = img[:h, :w].reshape(h // 2, 2, w // 2, 2)
    valid = np.isfinite(blocks)
    n = valid.sum(axis=(1, 3))
    s = np.where(valid, blocks, 0.0).sum(axis=(1, 3))
    return np.where(n > 0, s / np.maximum(n, 1), np.nan).astype(np.float32)


def _half_camera(K: np.ndarray) -> np.ndarray:
    """K (3,3) of the image made by :func:`_half` (pixel centres kept at pixel centres)."""
    Kh = K.copy()
    Kh[:2, :2] *= 0.5
    Kh[:2, 2] = (K[:2, 2] + 0.5) * 0.5 - 0.5
    return Kh


class _Template:
    """One pyramid level of the last image, for inverse-compositional alignment: its pixels
    with a valid value and gradient, their rays (K^-1 x, z = 1) and the constant Jacobian of the
    template's value in the rotation (J (P, 3): the image change for R <- R exp(delta)^-1).
    rays: (h*w, 3) the rays of every pixel of the level (row-major), shared between calls."""

    def __init__(self, last: np.ndarray, K: np.ndarray, rays: np.ndarray, keep: float = 1.0) -> None:
        gy, gx = np.gradient(last)
        gx, gy = gx.ravel(), gy.ravel()
        ok = ~np.isnan(last.ravel()) & ~np.isnan(gx) & ~np.isnan(gy)
        if keep < 1.0 and ok.sum() > 2 * MIN_PIXELS:  # the pixels with the strongest gradients carry the alignment
            mag = gx * gx + gy * gy
            ok &= mag >= np.quantile(mag[ok], 1.0 - keep)
        self.K = K
        r = rays[ok]
        self.rays = r  # (P, 3)
        self.values = last.ravel()[ok].astype(np.float64)
        fgx, fgy = gx[ok] * K[0, 0], gy[ok] * K[1, 1]
        gz = -(fgx * r[:, 0] + fgy * r[:, 1])  # dT/dp at z = 1: (fgx, fgy, gz)
        # dT/ddelta for p <- exp(delta) p: the cross product p x g
        self.J = np.stack([r[:, 1] * gz - fgy, fgx - r[:, 0] * gz, r[:, 0] * fgy - r[:, 1] * fgx], axis=1)
        self.n = len(self.values)

    def warp_sample(self, cur: np.ndarray, R: np.ndarray, shift: Optional[np.ndarray] = None) -> np.ndarray:
        """(P,) float64 values of cur at the template's pixels turned by R and moved by shift
        (3,) (the camera's translation over the scene depth; None = 0), NaN outside."""
        p = self.rays @ R.T
        if shift is not None:
            p += shift
        z = p[:, 2]
        bad = z <= 1e-6
        if bad.any():  # behind the camera (a turn of over 60 degrees): sampled outside the image
            p[bad] = (-1e4, -1e4, 1.0)
            z = p[:, 2]
        K = self.K
        u = (p[:, 0] / z * K[0, 0] + K[0, 2]).astype(np.float32)
        v = (p[:, 1] / z * K[1, 1] + K[1, 2]).astype(np.float32)
        return cv2.remap(cur, u[None], v[None], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=np.nan)[0].astype(np.float64)


def _photometric(tpl: _Template, warped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(residual (P',) of the template against the warped samples after the best brightness gain
    and offset, valid mask (P,)). Residuals in the template's grey levels."""
    ok = ~np.isnan(warped)
    a, b = warped[ok], tpl.values[ok]
    n = len(a)
    if n < 10:
        return np.zeros(0), ok
    ma, mb = a.sum() / n, b.sum() / n
    a = a - ma
    va = float(a @ a)
    gain = min(max(float(a @ (b - mb)) / va, 0.5), 2.0) if va > 1e-10 * n else 1.0
    return gain * a + (mb - b), ok


def _rms(r: np.ndarray) -> float:
    return float(np.sqrt(r @ r / len(r))) if len(r) else np.inf


def _inverse_compositional(tpl: _Template, cur: np.ndarray, R: np.ndarray, iterations: int,
                           shift: Optional[np.ndarray] = None) -> tuple[np.ndarray, float]:
    """Gauss-Newton (Huber weights) of cur(w(x; R)) ~ T(x) over the rotation; -> (R, RMS residual)."""
    best_R, best = R, np.inf
    for _ in range(iterations + 1):
        r, ok = _photometric(tpl, tpl.warp_sample(cur, R, shift))
        if len(r) < 20:
            break
        res = _rms(r)
        if res < best:
            best_R, best = R, res
        elif res > 1.5 * best:
            break
        a = np.abs(r)
        w = np.where(a <= HUBER, 1.0, HUBER / np.maximum(a, 1e-12))
        J = tpl.J[ok]
        Jw = J * w[:, None]
        step = np.linalg.solve(Jw.T @ J + 1e-9 * np.eye(3), Jw.T @ r)
        R = R @ so3_exp(-step)
        if float(np.linalg.norm(step)) * tpl.K[0, 0] < STOP_PX:
            break
    return best_R, best


def _rays(shape: tuple, K: np.ndarray) -> np.ndarray:
    """(h*w, 3) rays K^-1 (x, y, 1) of every pixel of an image of shape (h, w), row-major."""
    h, w = shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.stack([((gx - K[0, 2]) / K[0, 0]).ravel(), ((gy - K[1, 2]) / K[1, 1]).ravel(), np.ones(h * w)], axis=1)


class RotationAligner:
    """align(last, cur, starts) -> RotationAlignment or None: the rotation cur_from_last (3,3)
    that best aligns two small images (h, w) float32 made by :class:`SmallImageMaker` with the
    pinhole K_small (3,3), from the best of ``starts`` (rotations (3,3), e.g. no turn and the
    constant-velocity one); coarse to fine over ``levels`` (each a 2x2 halving), inverse
    compositional; the finest level uses the share ``keep`` of its pixels with the strongest
    gradients. None when the last image has too few valid pixels. Keeps the pixel rays of each
    level between calls."""

    def __init__(self, K_small: np.ndarray, iterations: int = 8, levels: int = 3, keep: float = 0.5) -> None:
        self.Ks = [np.asarray(K_small, dtype=np.float64)]
        for _ in range(levels - 1):
            self.Ks.append(_half_camera(self.Ks[-1]))
        self.iterations = iterations
        self.keep = keep
        self._rays: dict = {}  # (level, shape) -> rays

    def _level_rays(self, lv: int, shape: tuple) -> np.ndarray:
        key = (lv, shape)
        if key not in self._rays:
            self._rays[key] = _rays(shape, self.Ks[lv])
        return self._rays[key]

    def align(self, last: np.ndarray, cur: np.ndarray, starts: Sequence[np.ndarray],
              shift: Optional[np.ndarray] = None) -> Optional[RotationAlignment]:
        """shift: (3,) the camera's expected translation (cam_cur_from_cam_last's t) divided by
        the scene's depth, or None: the last image is taken as a plane at that depth, so a
        camera that moves as expected does not read as a turn."""
        sh = None if shift is None else np.asarray(shift, dtype=np.float64)
        images = [(last, cur)]
        for _ in range(len(self.Ks) - 1):
            images.append((_half(images[-1][0]), _half(images[-1][1])))
        templates = [_Template(li.astype(np.float64), K, self._level_rays(lv, li.shape), self.keep if lv == 0 else 1.0)
                     for lv, ((li, _), K) in enumerate(zip(images, self.Ks))]
        if templates[0].n < MIN_PIXELS:
            return None
        top, cur_top = templates[-1], images[-1][1]
        scored = [(_rms(_photometric(top, top.warp_sample(cur_top, np.asarray(R0, dtype=np.float64), sh))[0]), i)
                  for i, R0 in enumerate(starts)]
        R = np.asarray(starts[min(scored)[1]], dtype=np.float64)
        start_res = _rms(_photometric(templates[0], templates[0].warp_sample(cur, R, sh))[0])
        for tpl, (_, ci) in zip(templates[::-1], images[::-1]):
            R, _ = _inverse_compositional(tpl, ci, R, self.iterations, sh)
        r, ok = _photometric(templates[0], templates[0].warp_sample(cur, R, sh))
        return RotationAlignment(R, _rms(r), start_res, float(ok.sum()) / templates[0].n)


def align_rotation(last: np.ndarray, cur: np.ndarray, K_small: np.ndarray, starts: Sequence[np.ndarray],
                   **kwargs) -> Optional[RotationAlignment]:
    """One alignment with a fresh :class:`RotationAligner` (keyword arguments: its settings)."""
    return RotationAligner(K_small, **kwargs).align(last, cur, starts)
