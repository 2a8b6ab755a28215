"""Sensor effects of synthetic sequences (the manifest's ``realism``), applied to clean renders.

Colour: motion blur along each pixel's true optical flow over the exposure (from the depth and
the poses at the start and end of the exposure), slow auto-exposure gain changes, vignetting,
optics blur (Gaussian PSF), read and shot noise. Depth: noise growing with z^2, holes at depth
discontinuities, at grazing angles and in random blobs, and range limits. Everything is
deterministic given the sequence seed and the frame index.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import cv2
import numpy as np

from slam.synth.config import Realism
from slam.synth.motion import SmoothNoise
from slam.synth.raycast import Renderer, RenderOutput

__all__ = ["SensorEffects", "to_u8"]


def to_u8(img: np.ndarray) -> np.ndarray:
    """float image -> uint8 with rounding and saturation."""
    return cv2.convertScaleAbs(np.maximum(img, np.float32(0.0)))


class SensorEffects:
    """Applies :class:`Realism` to rendered frames of one camera of a sequence (deterministic per
    frame). ``stream`` tells the cameras of a rig apart (0: the main camera, 1: the right camera of
    a stereo pair): they share the exposure gain but not the noise or the depth holes."""

    _BANK = 1 << 21  # size of the per-sequence bank of N(0, 1) samples

    def __init__(self, realism: Realism, renderer: Renderer, seed: int, fps: float, stream: int = 0) -> None:
        self.r = realism
        self.renderer = renderer
        self.seed = seed
        self.stream = int(stream)
        self.fps = fps
        self.gain = SmoothNoise(np.random.default_rng([seed, 3]), 1, 0.5 / max(realism.exposure_period, 1e-3),
                                 1.5 / max(realism.exposure_period, 1e-3), 4)
        self._bank: Optional[np.ndarray] = None

    def _entropy(self, what: int, i: int) -> list:
        """Seed of the random draws ``what`` of frame ``i`` (stream 0 keeps the single-camera seeds)."""
        return [self.seed, what, i] if self.stream == 0 else [self.seed, what, i, self.stream]

    def _normal(self, rng: np.random.Generator, shape: tuple) -> np.ndarray:
        """Standard normal samples: a random window of a per-sequence bank (much cheaper than
        drawing fresh samples every frame; windows differ per frame)."""
        n = int(np.prod(shape))
        if self._bank is None or self._bank.shape[0] < n + 1:
            size = max(self._BANK, 2 * n)
            self._bank = np.random.default_rng([self.seed, 6]).standard_normal(size, dtype=np.float32)
        off = int(rng.integers(0, self._bank.shape[0] - n))
        return self._bank[off:off + n].reshape(shape)

    def color(self, out: RenderOutput, i: int, pose_at: Optional[Callable], cam_from_world: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame ``i`` with motion blur (needs ``pose_at(t)`` ->
        world_from_cam), exposure gain, vignetting, optics blur and noise, as configured."""
        r = self.r
        rng = np.random.default_rng(self._entropy(2, i))
        if r.exposure_time > 0 and pose_at is not None:
            img = self._motion_blur(out.bgr, out.depth, i, pose_at, cam_from_world)
        else:
            img = out.bgr.astype(np.float32)
        gain = 1.0 + r.exposure_amplitude * float(self.gain(i / self.fps)[0])
        if r.vignetting > 0:
            fld = (np.float32(gain) * (np.float32(1.0) - np.float32(r.vignetting) * self.renderer.radius2))
            img *= fld[..., None]
        elif gain != 1.0:
            img *= np.float32(gain)
        if r.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), r.blur_sigma)
        if r.noise_sigma > 0 or r.noise_shot > 0:
            var = np.maximum(img, 0.0)
            var *= np.float32(r.noise_shot)
            var += np.float32(r.noise_sigma ** 2)
            np.sqrt(var, out=var)
            var *= self._normal(rng, img.shape)
            img += var
        return to_u8(img)

    def _motion_blur(self, img, depth, i, pose_at, cam_from_world) -> np.ndarray:
        """Average the image along each pixel's true optical flow over the exposure (flow from
        the depth and the poses at the start / end of the exposure, on a 1/4-resolution grid)."""
        cam = self.renderer.camera
        H, W = depth.shape
        t = i / self.fps
        half = 0.5 * self.r.exposure_time / self.fps
        step = 4
        ys, xs = np.mgrid[0:H:step, 0:W:step]
        z = depth[::step, ::step].astype(np.float64)
        z = np.where(z > 0, z, np.median(z[z > 0]) if np.any(z > 0) else 1.0)
        pc = np.stack([self.renderer.xn[::step, ::step] * z, self.renderer.yn[::step, ::step] * z, z], -1).reshape(-1, 3)
        world_from_cam = np.linalg.inv(cam_from_world)
        pw = pc @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]
        flows = []
        for ts in (t - half, t + half):
            c_from_w = np.linalg.inv(pose_at(ts))
            uv, ok = cam.project(pw @ c_from_w[:3, :3].T + c_from_w[:3, 3])
            f = uv - np.stack([xs.ravel(), ys.ravel()], 1)
            f[~ok] = 0.0
            flows.append(f.reshape(xs.shape + (2,)).astype(np.float32))
        span = flows[1] - flows[0]  # displacement over the exposure
        mid = 0.5 * (flows[1] + flows[0])
        length = float(np.percentile(np.linalg.norm(span, axis=-1), 99))
        n = int(min(15, math.ceil(length)))
        if n < 2:
            return img.astype(np.float32)
        span = cv2.resize(span, (W, H), interpolation=cv2.INTER_LINEAR)
        mid = cv2.resize(mid, (W, H), interpolation=cv2.INTER_LINEAR)
        gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
        acc = np.zeros(img.shape, np.float32)
        for s in np.linspace(-0.5, 0.5, n, dtype=np.float32):
            # the point seen at pixel x at time t_s came from x - flow_s(x) in the centre image
            fx = mid[..., 0] + s * span[..., 0]
            fy = mid[..., 1] + s * span[..., 1]
            acc += cv2.remap(img, gx - fx, gy - fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        acc *= np.float32(1.0 / n)
        return acc

    def depth(self, out: RenderOutput, i: int) -> np.ndarray:
        r = self.r
        z = out.depth.copy()
        rng = np.random.default_rng(self._entropy(4, i))
        valid = z > 0
        if r.depth_noise > 0:
            z = z + (np.float32(r.depth_noise) * z * z) * self._normal(rng, z.shape)
        if r.depth_edge_holes:
            rel = 0.04
            e = np.zeros(z.shape, bool)
            dxz = np.abs(np.diff(out.depth, axis=1)) > rel * np.minimum(out.depth[:, 1:], out.depth[:, :-1]) + 0.01
            dyz = np.abs(np.diff(out.depth, axis=0)) > rel * np.minimum(out.depth[1:], out.depth[:-1]) + 0.01
            e[:, 1:] |= dxz
            e[:, :-1] |= dxz
            e[1:] |= dyz
            e[:-1] |= dyz
            valid &= ~e
        if r.depth_grazing_cos > 0:
            valid &= out.cos_incidence >= r.depth_grazing_cos
        if r.depth_dropout > 0:
            H, W = z.shape
            field_ = rng.random((H // 16 + 2, W // 16 + 2), dtype=np.float32)
            field_ = cv2.resize(field_, (W + 32, H + 32), interpolation=cv2.INTER_CUBIC)[8:8 + H, 8:8 + W]
            thr = np.quantile(field_[::4, ::4], r.depth_dropout)
            valid &= field_ > thr
        if r.depth_min > 0:
            valid &= z >= r.depth_min
        if r.depth_max > 0:
            valid &= z <= r.depth_max
        return np.where(valid, z, np.float32(0.0)).astype(np.float32)
