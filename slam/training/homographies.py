"""Random homographies as in SuperPoint (DeTone et al., CVPR-W 2018, Sec. 5 and appendix).

A homography is built by composing simple transforms applied to a patch of the source
image: an initial centred crop (``patch_ratio``), a perspective distortion of the patch
corners, a scale change about the patch centre, a translation and an in-plane rotation about
the patch centre. Each transform is sampled from a truncated normal or uniform distribution.
With ``allow_artifacts=False`` (the default) every candidate that would take a patch corner
outside the source image is rejected, so the whole warped image is filled by source pixels.

Conventions
    Pixels (x, y), the centre of the top-left pixel is (0, 0) (OpenCV). A homography ``H``
    (3, 3) float64 named ``dst_from_src`` maps homogeneous source pixels to warped pixels:
    ``p_dst ~ H @ p_src``. ``cv2.warpPerspective(src, H, (w, h))`` then yields the warped image.
    The warped image's corners (0, 0), (w-1, 0), (w-1, h-1), (0, h-1) come from the sampled
    patch corners in the source image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

__all__ = [
    "HomographyParams", "sample_homography", "sample_patch", "warp_points", "warp_image",
    "warped_valid_mask", "scale_homography", "corner_error",
]


@dataclass
class HomographyParams:
    """Sampling parameters (defaults: the SuperPoint paper's homographic adaptation setup)."""

    translation: bool = True  # random shift of the patch inside the image
    rotation: bool = True  # in-plane rotation about the patch centre
    scaling: bool = True  # zoom about the patch centre
    perspective: bool = True  # perspective distortion of the patch corners
    scaling_amplitude: float = 0.2  # scale factor ~ 1 + truncated normal with std amplitude/2 (cut at 2 std)
    perspective_amplitude_x: float = 0.2  # horizontal perspective displacement (fraction of width, std/2)
    perspective_amplitude_y: float = 0.2  # vertical perspective displacement (fraction of height, std/2)
    patch_ratio: float = 0.85  # side of the initial centred patch (fraction of the image)
    max_angle: float = np.pi / 2  # rotation candidates in [-max_angle, max_angle] (radians)
    n_scales: int = 5  # number of scale candidates (1 is always one of them)
    n_angles: int = 25  # number of rotation candidates (0 is always one of them)
    allow_artifacts: bool = False  # False: the patch stays inside the source image (no black borders)
    translation_overflow: float = 0.0  # with allow_artifacts: extra shift allowed past the border (fraction)

    def validate(self) -> "HomographyParams":
        if not 0.0 < self.patch_ratio <= 1.0:
            raise ValueError(f"homography patch_ratio must be in (0, 1], got {self.patch_ratio}")
        if self.n_scales < 1 or self.n_angles < 1:
            raise ValueError("homography n_scales and n_angles must be >= 1")
        if min(self.scaling_amplitude, self.perspective_amplitude_x, self.perspective_amplitude_y) < 0:
            raise ValueError("homography amplitudes must be >= 0")
        return self


def _truncated_normal(rng: np.random.Generator, mean: float, std: float, size=None, cut: float = 2.0):
    """Normal(mean, std) re-sampled until within mean +- cut * std."""
    if std <= 0:
        return np.full(size, mean) if size is not None else float(mean)
    out = rng.normal(mean, std, size)
    bad = np.abs(out - mean) > cut * std
    while np.any(bad):
        redraw = rng.normal(mean, std, int(np.sum(bad)) if size is not None else None)
        if size is None:
            out = redraw
        else:
            out[bad] = redraw
        bad = np.abs(out - mean) > cut * std
    return out


def _inside(corners: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """(..., 4, 2) normalised corners -> (...) bool: all within [0, 1]^2."""
    return np.all((corners >= -eps) & (corners <= 1 + eps), axis=(-1, -2))


def sample_patch(rng: np.random.Generator, params: Optional[HomographyParams] = None) -> np.ndarray:
    """Patch corners (4, 2) in normalised source coordinates ([0, 1]^2 = the image), in the
    order top-left, top-right, bottom-right, bottom-left. They are the source positions of the
    warped image's corners."""
    p = (params or HomographyParams()).validate()
    margin = (1.0 - p.patch_ratio) / 2.0
    r = p.patch_ratio
    pts = margin + np.array([[0.0, 0.0], [r, 0.0], [r, r], [0.0, r]])
    allow = p.allow_artifacts

    if p.perspective:
        amp_x, amp_y = p.perspective_amplitude_x, p.perspective_amplitude_y
        if not allow:  # displacements larger than the margin would leave the image
            amp_x, amp_y = min(amp_x, margin), min(amp_y, margin)
        dx = float(_truncated_normal(rng, 0.0, amp_x / 2.0))
        dy_left = float(_truncated_normal(rng, 0.0, amp_y / 2.0))
        dy_right = float(_truncated_normal(rng, 0.0, amp_y / 2.0))
        # top edge narrows / widens (dx), left and right edges tilt (dy_left, dy_right)
        pts = pts + np.array([[dx, dy_left], [-dx, dy_right], [dx, -dy_right], [-dx, -dy_left]])

    if p.scaling:
        scales = np.concatenate([[1.0], _truncated_normal(rng, 1.0, p.scaling_amplitude / 2.0, size=p.n_scales - 1)])
        scales = np.clip(scales, 0.05, None)
        centre = pts.mean(axis=0)
        cands = (pts - centre)[None] * scales[:, None, None] + centre
        ok = np.arange(len(cands)) if allow else np.flatnonzero(_inside(cands))
        pts = cands[int(rng.choice(ok))]  # scale 1 is always valid (the patch is inside)

    if p.translation:
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        if allow:
            lo, hi = lo + p.translation_overflow, hi - p.translation_overflow
        tx = rng.uniform(-lo[0], 1.0 - hi[0]) if 1.0 - hi[0] > -lo[0] else 0.0
        ty = rng.uniform(-lo[1], 1.0 - hi[1]) if 1.0 - hi[1] > -lo[1] else 0.0
        pts = pts + np.array([tx, ty])

    if p.rotation:
        angles = np.concatenate([[0.0], np.linspace(-p.max_angle, p.max_angle, p.n_angles)])
        centre = pts.mean(axis=0)
        c, s = np.cos(angles), np.sin(angles)
        rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (A, 2, 2)
        cands = np.einsum("aij,kj->aki", rot, pts - centre) + centre
        ok = np.arange(len(cands)) if allow else np.flatnonzero(_inside(cands))
        pts = cands[int(rng.choice(ok))]  # angle 0 is always valid
    return pts


def sample_homography(height: int, width: int, rng: np.random.Generator,
                      params: Optional[HomographyParams] = None) -> np.ndarray:
    """Random homography ``dst_from_src`` (3, 3) float64 for images of (height, width) pixels:
    the sampled source patch (see :func:`sample_patch`) is mapped onto the whole warped image."""
    patch = sample_patch(rng, params)
    scale = np.array([width - 1.0, height - 1.0])
    src = (patch * scale).astype(np.float32)
    dst = (np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]) * scale).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def warp_points(points: np.ndarray, dst_from_src: np.ndarray) -> np.ndarray:
    """(N, 2) pixels -> (N, 2) float64 warped pixels. Points mapped to infinity become nan."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ np.asarray(dst_from_src, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = hom[:, :2] / hom[:, 2:3]
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


def warp_image(image: np.ndarray, dst_from_src: np.ndarray, out_hw: Optional[tuple[int, int]] = None,
               interpolation: int = cv2.INTER_LINEAR, border_value: float = 0.0) -> np.ndarray:
    """Warp an (H, W[, C]) image; out_hw (h, w) defaults to the input size."""
    h, w = out_hw if out_hw is not None else image.shape[:2]
    return cv2.warpPerspective(image, np.asarray(dst_from_src, np.float64), (int(w), int(h)),
                               flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def warped_valid_mask(src_hw: tuple[int, int], dst_from_src: np.ndarray, dst_hw: Optional[tuple[int, int]] = None,
                      erode: int = 0) -> np.ndarray:
    """(h, w) bool over the warped image: True where the pixel's source lies inside the source
    image (minus ``erode`` pixels at its border)."""
    ones = np.ones(src_hw, np.uint8)
    mask = warp_image(ones, dst_from_src, dst_hw or src_hw, interpolation=cv2.INTER_NEAREST) > 0
    if erode > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
        mask = cv2.erode(mask.astype(np.uint8), k, borderValue=0) > 0
    return mask


def scale_homography(dst_from_src: np.ndarray, scale_src: tuple[float, float], scale_dst: tuple[float, float]) -> np.ndarray:
    """Homography between resized images. scale_* = (sx, sy): new pixels per old pixel (with the
    pixel-centre convention: x_new = (x_old + 0.5) * sx - 0.5)."""
    def resize_mat(s):
        sx, sy = s
        return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return resize_mat(scale_dst) @ np.asarray(dst_from_src, np.float64) @ np.linalg.inv(resize_mat(scale_src))


def corner_error(h_est: np.ndarray, h_true: np.ndarray, width: int, height: int) -> float:
    """Mean distance (px) between the four source image corners warped by the two homographies
    (the homography accuracy measure of SuperPoint's evaluation)."""
    corners = np.array([[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]])
    a, b = warp_points(corners, h_est), warp_points(corners, h_true)
    err = np.linalg.norm(a - b, axis=1)
    return float(np.mean(err)) if np.all(np.isfinite(err)) else float("inf")
