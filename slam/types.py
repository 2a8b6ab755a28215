"""Plain data types that cross module boundaries.

Conventions (see README "Conventions"):
- Poses are 4x4 float64 matrices named ``dst_from_src``; ``p_dst = dst_from_src @ p_src``.
- Pixel coordinates are (x, y) with the centre of the top-left pixel at (0, 0), as in OpenCV.
- Objects refer to each other by integer id. Matches use ``-1`` for "unmatched".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch


DEPTH_MODES = ("rgbd", "stereo")  # modes whose frames carry per-keypoint depth


def has_depth(mode: str) -> bool:
    """True for the modes whose keypoints carry metric depth: "rgbd" (depth image) and "stereo"
    (disparity of a rectified pair); they share initialisation from one frame, depth points in
    keyframes and 3-row (u, v, u_right) reprojection edges."""
    return mode in DEPTH_MODES


@dataclass
class Features:
    """Local features of one image.

    keypoints:   (N, 2) float32 torch tensor, pixels (x, y) in the ORIGINAL image, on the
                 extractor's device.
    scores:      (N,) float32 torch tensor, detection confidence (higher is better).
    descriptors: (N, D) torch tensor. float32 and L2-normalised for learned features;
                 uint8 packed bits (D = 32 bytes) for binary ORB descriptors.
    image_size:  (width, height) of the original image in pixels.
    extra:       optional per-keypoint tensors a specific matcher may want (e.g. ORB octave
                 as ``{"octave": (N,) int}``); never required by the SLAM core.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor
    image_size: tuple[int, int]
    extra: dict = field(default_factory=dict)
    _kp_np: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.keypoints.shape[0]
        if self.keypoints.ndim != 2 or self.keypoints.shape[1] != 2:
            raise ValueError(f"keypoints must be (N,2), got {tuple(self.keypoints.shape)}")
        if self.scores.shape != (n,):
            raise ValueError(f"scores must be ({n},), got {tuple(self.scores.shape)}")
        if self.descriptors.ndim != 2 or self.descriptors.shape[0] != n:
            raise ValueError(f"descriptors must be ({n},D), got {tuple(self.descriptors.shape)}")

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def binary(self) -> bool:
        return self.descriptors.dtype == torch.uint8

    @property
    def keypoints_np(self) -> np.ndarray:
        """(N, 2) float64 numpy copy of the keypoints, pixels; computed once and cached."""
        if self._kp_np is None:
            self._kp_np = self.keypoints.detach().cpu().double().numpy()
        return self._kp_np

    def to(self, device: torch.device | str) -> "Features":
        return Features(
            self.keypoints.to(device),
            self.scores.to(device),
            self.descriptors.to(device),
            self.image_size,
            {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.extra.items()},
        )

    def subset(self, idx: np.ndarray | torch.Tensor) -> "Features":
        idx_t = torch.as_tensor(idx, dtype=torch.long, device=self.keypoints.device)
        return Features(
            self.keypoints[idx_t],
            self.scores[idx_t],
            self.descriptors[idx_t],
            self.image_size,
            {k: v[idx_t] if isinstance(v, torch.Tensor) else v for k, v in self.extra.items()},
        )

    @staticmethod
    def empty(dim: int = 256, image_size: tuple[int, int] = (0, 0), binary: bool = False) -> "Features":
        dtype = torch.uint8 if binary else torch.float32
        return Features(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dim, dtype=dtype), image_size)


@dataclass
class Matches:
    """Matches from image 0 to image 1.

    matches0: (N0,) int64 numpy, index into image 1's keypoints, -1 = unmatched.
    scores0:  (N0,) float32 numpy, confidence in [0, 1]; 0 where unmatched.
    """

    matches0: np.ndarray
    scores0: np.ndarray

    def __post_init__(self) -> None:
        self.matches0 = np.asarray(self.matches0, dtype=np.int64)
        self.scores0 = np.asarray(self.scores0, dtype=np.float32)
        if self.matches0.shape != self.scores0.shape:
            raise ValueError("matches0 and scores0 must have the same shape")

    def pairs(self) -> np.ndarray:
        """(M, 2) int64 array of (index0, index1) for every match."""
        i0 = np.nonzero(self.matches0 >= 0)[0]
        return np.stack([i0, self.matches0[i0]], axis=1)

    def __len__(self) -> int:
        return int((self.matches0 >= 0).sum())


@dataclass
class Frame:
    """One input frame as a reader yields it.

    index:       0-based position in the stream (frames skipped as corrupt keep their index gap).
    timestamp:   seconds (sensor clock of the dataset, or wall clock for a camera).
    image:       (H, W, 3) uint8 BGR; for a stereo pair the LEFT image.
    depth:       (H, W) float32 metres, 0 where invalid; None for monocular and stereo input.
    path:        file the (left) image came from, if any.
    image_right: (H, W, 3) uint8 BGR right image of a stereo pair, the same size as ``image``,
                 taken at the same time (the reader pairs left and right by timestamp); None
                 for monocular and RGB-D input. The reader says whether the pair is rectified
                 (``reader.rig.rectified``, :class:`slam.geometry.stereo.StereoRig`).
    """

    index: int
    timestamp: float
    image: np.ndarray
    depth: Optional[np.ndarray] = None
    path: Optional[str] = None
    features: Optional[Features] = None
    image_right: Optional[np.ndarray] = None


@dataclass
class TrackResult:
    """What the tracker reports for one frame."""

    index: int
    timestamp: float
    state: str  # "INIT", "OK", "LOST"
    world_from_cam: Optional[np.ndarray]  # (4,4) float64, None when not tracked
    n_inliers: int = 0
    is_keyframe: bool = False
    timings_ms: dict = field(default_factory=dict)


class EndOfStream:
    """Typed end-of-stream marker passed through pipeline queues."""

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return "EndOfStream()"


@dataclass
class FrameFeatures:
    """A frame after the feature stage: what tracking consumes.

    features:  Features on the extractor's device (keypoints in DISTORTED pixels, as detected).
    kp_uv:     (N,2) float64 UNDISTORTED pixel coordinates (ideal pinhole with the camera's K).
    kp_depth:  (N,) float64 metres sampled from the depth image (RGB-D) or bf / disparity of the
               stereo match (stereo; then u - bf / depth is the matched right-image u), 0 = none
               (always 0 in mono).
    kp_sigma2: (N,) float64 variance factor of each keypoint position (1 for single-scale).
    kp_color:  (N,3) uint8 RGB of the image at each keypoint.
    desc:      (N,D) numpy copy of the descriptors (uint8 bits or float32).
    image:     (H,W) uint8 grey, kept when patch alignment (tracking.patch_align) or a
               detector-free matcher (LoFTR) needs it.
    t_read:    perf_counter() seconds when the reader produced the frame (latency metrics).
    kp_uv_detected: (N,2) float64 undistorted pixels as detected, set by tracking when patch
               alignment (slam.tracking.patch_align) replaced kp_uv; None before.
    small_image: (h,w) float32 grey in [0, 1], the image shrunk to about 80 px wide, undistorted
               onto the pinhole grid of slam.tracking.small_image.SmallImageMaker.K_small and
               blurred (NaN outside the image); None unless tracking.rotation_prior is on.
    """

    index: int
    timestamp: float
    features: Features
    kp_uv: np.ndarray
    kp_depth: np.ndarray
    kp_sigma2: np.ndarray
    kp_color: np.ndarray
    desc: np.ndarray
    image: Optional[np.ndarray] = None
    t_read: float = 0.0
    kp_uv_detected: Optional[np.ndarray] = None
    small_image: Optional[np.ndarray] = None
