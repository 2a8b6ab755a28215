"""The extractor protocol every feature front-end implements, and the helpers the learned
extractors share: image batches (:func:`to_gray`, :func:`images_to_tensor`,
:func:`group_by_size`), non-maximum suppression on score maps (:func:`nms`), and the
procedural test image (:func:`synthetic_image`, used by SuperPoint's bf16 probe and the tests).

Coordinates: pixels (x, y), centre of the top-left pixel at (0, 0) (OpenCV convention).
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from slam.errors import InputError
from slam.types import Features


@runtime_checkable
class Extractor(Protocol):
    """Turns images into Features.

    name:            short name used in configs ("orb", "superpoint", ...).
    descriptor_dim:  D of Features.descriptors (bytes for binary descriptors).
    binary:          True for packed-bit descriptors compared by Hamming distance.
    device:          torch device the returned Features live on.
    """

    name: str
    descriptor_dim: int
    binary: bool
    device: torch.device

    def extract(self, image: np.ndarray) -> Features:
        """image: (H, W, 3) uint8 BGR or (H, W) uint8 grey. Returns Features in pixels."""
        ...

    def extract_batch(self, images: Sequence[np.ndarray]) -> list[Features]:
        """Same as extract() on each image; learned extractors run one batched forward pass."""
        ...


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H,W,3) BGR or (H,W) uint8 -> (H,W) uint8 grey."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise InputError(f"expected an (H,W,3) BGR or (H,W) grey image, got shape {image.shape}")


def images_to_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Same-size (H,W,3) BGR or (H,W) grey uint8 images -> (B,3,H,W) float32 RGB in [0,1]."""
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise InputError(f"image {i}: expected a uint8 numpy array, got {type(img).__name__} "
                             f"{getattr(img, 'dtype', '')}")
        if img.ndim == 2:
            rgb = np.repeat(img[:, :, None], 3, axis=2)
        elif img.ndim == 3 and img.shape[2] == 3:
            rgb = img[:, :, ::-1]
        elif img.ndim == 3 and img.shape[2] == 1:
            rgb = np.repeat(img, 3, axis=2)
        else:
            raise InputError(f"image {i}: expected (H,W,3) BGR or (H,W) grey, got shape {img.shape}")
        out.append(np.ascontiguousarray(rgb))
    batch = torch.from_numpy(np.stack(out)).to(device)
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def group_by_size(images: Sequence[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Indices of the images, grouped by (H, W), in first-seen order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape[:2]), []).append(i)
    return groups


def _sliding_max(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Max over windows of k consecutive entries along ``dim`` (output shorter by k - 1).
    Doubling: after step s each entry holds the max of 2^s entries; ~log2(k) + 1 elementwise
    maxima, much faster than a k-tap max-pool on CPU and exact (max is associative)."""
    out_len = x.shape[dim] - k + 1
    width = 1
    while 2 * width <= k:
        n = x.shape[dim] - width
        x = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, width, n))
        width *= 2
    if width < k:
        return torch.maximum(x.narrow(dim, 0, out_len), x.narrow(dim, k - width, out_len))
    return x.narrow(dim, 0, out_len)


def _max_filter(x: torch.Tensor, radius: int, use_pool: Optional[bool] = None) -> torch.Tensor:
    """(B,H,W) -> max over the (2r+1)x(2r+1) window around each pixel, the window clipped at
    the map edge (same as max_pool2d(kernel 2r+1, stride 1, padding r)). Separable: a row
    pass then a column pass. On CPU by doubling (:func:`_sliding_max`), on GPU by max-pool."""
    k = 2 * radius + 1
    if use_pool is None:
        use_pool = x.device.type != "cpu"  # GPU: two max-pool kernels beat ~8 elementwise maxima
    if use_pool:
        xf = x if x.is_floating_point() else x.to(torch.float16)  # no integer max-pool on CUDA
        y = F.max_pool2d(xf[:, None], (1, k), stride=1, padding=(0, radius))
        return F.max_pool2d(y, (k, 1), stride=1, padding=(radius, 0))[:, 0].to(x.dtype)
    fill = torch.finfo(x.dtype).min if x.is_floating_point() else 0
    x = F.pad(x, (radius, radius, radius, radius), value=fill)
    return _sliding_max(_sliding_max(x, k, 2), k, 1)


def nms(scores: torch.Tensor, radius: int, use_pool: Optional[bool] = None) -> torch.Tensor:
    """Non-maximum suppression in max-pool form; (B, H, W) -> (B, H, W), non-maxima set to 0.

    Same rule as the reference SuperPoint implementation: a pixel is a maximum when it equals
    the maximum of its (2r+1)x(2r+1) window (ties all survive). Then, twice: pixels within r
    (Chebyshev distance) of a kept maximum are suppressed, and a pixel that is not suppressed
    and is the maximum of its window among the non-suppressed scores (suppressed ones count
    as 0) is kept too. This recovers points whose only larger neighbours were themselves
    suppressed. radius 0 returns the scores unchanged. use_pool picks the max-filter
    implementation (None: max-pool kernels on GPU, elementwise doubling on CPU; same result).
    """
    if radius < 0:
        raise ValueError(f"nms radius must be >= 0, got {radius}")
    if radius == 0:
        return scores
    keep = scores == _max_filter(scores, radius, use_pool)
    for _ in range(2):
        suppressed = _max_filter(keep.to(torch.uint8), radius, use_pool) > 0  # dilation of the kept set
        rest = scores.masked_fill(suppressed, 0.0)
        keep = keep | ((rest == _max_filter(rest, radius, use_pool)) & ~suppressed)
    return scores * keep


def synthetic_image(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 grey test image with corners and edges: random filled rectangles,
    circles, polygons and lines on a smooth gradient, lightly blurred, plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = 60 + 60 * (xx / max(width - 1, 1)) + 30 * (yy / max(height - 1, 1))
    img = img.astype(np.uint8)
    area = height * width
    for _ in range(max(8, area // 6000)):
        col = int(rng.integers(0, 256))
        kind = rng.integers(0, 4)
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(6, max(8, min(height, width) // 5)))
        if kind == 0:
            cv2.rectangle(img, (x0, y0), (x0 + size, y0 + int(size * rng.uniform(0.5, 1.5))), col, -1)
        elif kind == 1:
            cv2.circle(img, (x0, y0), size // 2, col, -1)
        elif kind == 2:
            pts = np.stack([x0 + rng.integers(-size, size, 3), y0 + rng.integers(-size, size, 3)], 1)
            cv2.fillPoly(img, [pts.astype(np.int32)], col)
        else:
            cv2.line(img, (x0, y0), (x0 + int(rng.integers(-size, size)), y0 + int(rng.integers(-size, size))),
                     col, int(rng.integers(1, 4)))
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    noise = rng.normal(0, 2.0, img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def keypoint_repeatability(reference: torch.Tensor, other: torch.Tensor, radius: float = 1.0) -> float:
    """Share of ``reference`` keypoints (N, 2) px with an ``other`` keypoint (M, 2) within
    ``radius`` px (Euclidean). 1.0 when reference is empty."""
    if reference.shape[0] == 0:
        return 1.0
    if other.shape[0] == 0:
        return 0.0
    dist = torch.cdist(reference.double(), other.double().to(reference.device))
    return float((dist.min(dim=1).values <= radius).double().mean())
