"""The feature stage: image -> features, undistorted keypoints, depth and colour per keypoint.

Depth comes from the depth image (RGB-D) or, for a rectified stereo pair (``Frame.image_right``
with a :class:`slam.tracking.stereo.StereoMatcher`), from the disparity of each left keypoint
matched in the right image.
"""
from __future__ import annotations

import time
from typing import Optional

import cv2
import numpy as np

from slam.features.base import Extractor
from slam.geometry.camera import PinholeCamera
from slam.tracking.small_image import SmallImageMaker
from slam.types import Frame, FrameFeatures


class FeatureStage:
    """process(Frame) -> FrameFeatures. Runs everything that depends on one frame only."""

    def __init__(self, extractor: Extractor, camera: PinholeCamera, min_depth: float = 0.1, max_depth: float = 6.0, keep_image: bool = False,
                 stereo=None, small_image: Optional[SmallImageMaker] = None):
        """stereo: a slam.tracking.stereo.StereoMatcher (stereo mode; ``camera`` is then the
        rectified left camera), or None. small_image: makes each frame's small image (the
        tracker's rotation prior), or None."""
        self.extractor = extractor
        self.stereo = stereo
        self.camera = camera
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.keep_image = keep_image
        self.small_image = small_image
        sig = getattr(extractor, "sigma2_per_level", None)
        self._sigma2_per_level = None if sig is None else np.asarray(sig, dtype=np.float64)

    def process(self, frame: Frame) -> FrameFeatures:
        right = frame.image_right if self.stereo is not None else None
        if right is not None:
            feats, feats_r = self.extractor.extract_batch([frame.image, right])
        else:
            feats = self.extractor.extract(frame.image)
        kp = feats.keypoints_np  # (N,2) distorted px
        n = len(kp)
        uv = self.camera.undistort_points(kp) if n else np.zeros((0, 2))
        h, w = frame.image.shape[:2]
        xi = np.clip(np.rint(kp[:, 0]).astype(np.int64), 0, w - 1)
        yi = np.clip(np.rint(kp[:, 1]).astype(np.int64), 0, h - 1)
        if right is not None:
            d = self.stereo.match(feats, feats_r, frame.image, right).depth
        elif frame.depth is not None:
            d = frame.depth[yi, xi].astype(np.float64)
            d[(d < self.min_depth) | (d > self.max_depth) | ~np.isfinite(d)] = 0.0
        else:
            d = np.zeros(n)
        if self._sigma2_per_level is not None and "octave" in feats.extra:
            octave = feats.extra["octave"].cpu().numpy()
            sigma2 = self._sigma2_per_level[np.clip(octave, 0, len(self._sigma2_per_level) - 1)]
        else:
            sigma2 = np.ones(n)
        bgr = frame.image[yi, xi] if frame.image.ndim == 3 else np.repeat(frame.image[yi, xi][:, None], 3, axis=1)
        return FrameFeatures(
            index=frame.index,
            timestamp=frame.timestamp,
            features=feats,
            kp_uv=uv,
            kp_depth=d,
            kp_sigma2=sigma2,
            kp_color=np.ascontiguousarray(bgr[:, ::-1]).astype(np.uint8),
            desc=feats.descriptors.detach().cpu().numpy(),
            image=grey_copy(frame.image) if self.keep_image else None,
            t_read=getattr(frame, "t_read", time.perf_counter()),
            small_image=self.small_image.make(frame.image) if self.small_image is not None else None,
        )


def grey_copy(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grey copy of a (H, W, 3) BGR (or already grey) image: what a frame keeps for
    the detector-free matcher (LoFTR reads grey; a third of the memory of the colour image)."""
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.array(image[..., 0] if image.ndim == 3 else image, copy=True)
