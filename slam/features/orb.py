"""ORB baseline extractor (OpenCV), with grid bucketing for an even spread of keypoints."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from slam.features.base import to_gray
from slam.features.config import ORBConfig
from slam.types import Features


class ORBExtractor:
    """OpenCV ORB with per-cell selection by response, like ORB-SLAM's distributed extraction.

    Features: keypoints (N,2) float32 px, scores = FAST/Harris response, descriptors (N,32)
    uint8 packed bits, extra["octave"] (N,) int64 pyramid level.
    """

    name = "orb"
    descriptor_dim = 32
    binary = True

    def __init__(self, cfg: ORBConfig | None = None, device: torch.device | str = "cpu"):
        self.cfg = cfg or ORBConfig()
        self.device = torch.device(device)
        self._orb = self._create()
        self._orb_second = None  # a second detector for the other image of a stereo pair (extract_batch)
        self._pool = None  # one worker thread for it, made on first use

    def _create(self):
        c = self.cfg
        return cv2.ORB_create(
            nfeatures=int(c.n_features * c.oversample),
            scaleFactor=c.scale_factor,
            nlevels=c.n_levels,
            edgeThreshold=c.edge_threshold,
            fastThreshold=c.fast_threshold,
            patchSize=31,
        )

    @property
    def sigma2_per_level(self) -> np.ndarray:
        """(n_levels,) variance factor of a keypoint's position per octave (scale^2)."""
        return self.cfg.scale_factor ** (2 * np.arange(self.cfg.n_levels))

    def _select(self, kps: Sequence[cv2.KeyPoint], width: int, height: int) -> list[cv2.KeyPoint]:
        c = self.cfg
        if len(kps) <= c.n_features:
            return list(kps)
        xy = cv2.KeyPoint_convert(kps).reshape(-1, 2)
        resp = np.fromiter((k.response for k in kps), dtype=np.float32, count=len(kps))
        cx = np.clip((xy[:, 0] * c.grid_cols / width).astype(np.int64), 0, c.grid_cols - 1)
        cy = np.clip((xy[:, 1] * c.grid_rows / height).astype(np.int64), 0, c.grid_rows - 1)
        cell = cy * c.grid_cols + cx
        # rank within each cell by response (descending)
        order = np.lexsort((-resp, cell))
        cell_sorted = cell[order]
        first = np.searchsorted(cell_sorted, cell_sorted, side="left")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order)) - first
        # take round-robin by rank: all rank-0, then rank-1, ... until n_features, best response first
        key = rank.astype(np.float64) * 1e9 - resp
        keep = np.argsort(key, kind="stable")[: c.n_features]
        return [kps[i] for i in keep]

    def extract(self, image: np.ndarray) -> Features:
        return self._extract(self._orb, image)

    def _extract(self, orb, image: np.ndarray) -> Features:
        gray = to_gray(image)
        h, w = gray.shape
        kps = orb.detect(gray, None)
        kps = self._select(kps, w, h)
        kps, desc = orb.compute(gray, kps)
        if desc is None or len(kps) == 0:
            return Features.empty(32, (w, h), binary=True)
        xy = cv2.KeyPoint_convert(kps).reshape(-1, 2).astype(np.float32)
        resp = np.fromiter((k.response for k in kps), dtype=np.float32, count=len(kps))
        octave = np.fromiter((k.octave & 0xFF for k in kps), dtype=np.int64, count=len(kps))
        return Features(
            torch.from_numpy(xy).to(self.device),
            torch.from_numpy(resp).to(self.device),
            torch.from_numpy(np.ascontiguousarray(desc)).to(self.device),
            (w, h),
            {"octave": torch.from_numpy(octave).to(self.device)},
        )

    def extract_batch(self, images: Sequence[np.ndarray]) -> list[Features]:
        """A pair (stereo) is extracted by two detectors at once: OpenCV releases the GIL, so
        the right image costs no extra wall time when a core is free. Same output as one by one."""
        if len(images) != 2:
            return [self.extract(im) for im in images]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._orb_second = self._create()
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orb-second")
        second = self._pool.submit(self._extract, self._orb_second, images[1])
        return [self._extract(self._orb, images[0]), second.result()]
