"""The extractor protocol every feature front-end implements."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import cv2
import numpy as np
import torch

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
    raise ValueError(f"expected an (H,W,3) BGR or (H,W) grey image, got shape {image.shape}")
