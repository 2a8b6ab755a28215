"""Homographic adaptation (SuperPoint, Sec. 5): pseudo ground-truth interest points.

For one image I and a base detector f (a heat map of keypoint probabilities), sample N random
homographies H_i (the first one is the identity), run f on each warp I_i = warp(I, H_i), warp
each heat map back into I's frame and average them over the warps that see each pixel::

    F(I) = sum_i [ H_i^-1 f(H_i(I)) ] / sum_i [ H_i^-1 1_i ]

where 1_i is the (border-eroded) support of warp i. Non-maximum suppression and a threshold
on F give the pseudo labels. Running it again with the detector trained on these labels is
the "iterated" adaptation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from slam.device import autocast
from slam.features.superpoint import extract_keypoints, heatmap_from_logits, nms
from slam.training.homographies import HomographyParams, sample_homography, warp_image, warped_valid_mask

__all__ = ["AdaptationConfig", "homographic_adaptation", "pseudo_points", "network_detector"]

#: detector: (B, H, W) float32 images in [0, 1] -> (B, H, W) float32 keypoint probabilities
Detector = Callable[[np.ndarray], np.ndarray]


@dataclass
class AdaptationConfig:
    num_homographies: int = 100  # warps per image, identity included (paper: 100)
    aggregation: str = "mean"  # mean | max over the warps that see a pixel
    border: int = 3  # erode each warp's support by this many pixels (border responses are unreliable)
    batch: int = 16  # warps per detector call
    homography: HomographyParams = field(default_factory=HomographyParams)  # the paper's sampling
    nms_radius: int = 4  # NMS of the aggregated map (px)
    threshold: float = 0.015  # keep aggregated maxima above this probability
    top_k: int = 0  # keep at most this many points per image (0 = all above threshold)
    remove_borders: int = 4  # drop points closer than this to the image border (px)


def homographic_adaptation(image: np.ndarray, detector: Detector, rng: np.random.Generator,
                           cfg: Optional[AdaptationConfig] = None) -> dict:
    """Aggregate ``detector`` over random warps of ``image``.

    image: (H, W) uint8 grey or float32 in [0, 1]. Returns dict(prob (H, W) float32 aggregated
    map, count (H, W) float32 number of warps that saw each pixel (fractional at warp edges),
    homographies (N, 3, 3) float64 dst_from_src, identity first)."""
    c = cfg or AdaptationConfig()
    if c.aggregation not in ("mean", "max"):
        raise ValueError(f"aggregation must be 'mean' or 'max', got {c.aggregation!r}")
    if c.num_homographies < 1:
        raise ValueError("num_homographies must be >= 1")
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    h, w = img.shape
    homs = [np.eye(3)] + [sample_homography(h, w, rng, c.homography) for _ in range(c.num_homographies - 1)]
    acc = np.zeros((h, w), np.float64)
    cnt = np.zeros((h, w), np.float64)
    for start in range(0, len(homs), c.batch):
        chunk = homs[start:start + c.batch]
        warped = np.stack([warp_image(img, hm) for hm in chunk])
        heat = np.asarray(detector(warped), np.float32)
        if heat.shape != warped.shape:
            raise ValueError(f"detector returned {heat.shape}, expected {warped.shape}")
        for hm, ht in zip(chunk, heat):
            inv = np.linalg.inv(hm)
            support = warped_valid_mask((h, w), hm, erode=c.border).astype(np.float32)  # in the warped frame
            back = warp_image(ht * support, inv)  # values at source pixels
            seen = warp_image(support, inv)
            if c.aggregation == "mean":
                acc += back
                cnt += seen
            else:
                acc = np.maximum(acc, np.where(seen > 0.5, back / np.maximum(seen, 1e-6), 0.0))
                cnt += seen
    if c.aggregation == "mean":
        prob = np.where(cnt > 1e-6, acc / np.maximum(cnt, 1e-6), 0.0)
    else:
        prob = acc
    return {"prob": prob.astype(np.float32), "count": cnt.astype(np.float32), "homographies": np.stack(homs)}


def pseudo_points(prob: np.ndarray, cfg: Optional[AdaptationConfig] = None) -> np.ndarray:
    """Aggregated map (H, W) -> (N, 2) float32 (x, y) pseudo ground-truth points, by descending
    probability: NMS, threshold, border removal, optional top-k."""
    c = cfg or AdaptationConfig()
    t = torch.from_numpy(np.ascontiguousarray(prob, np.float32))[None]
    kept = nms(t, c.nms_radius) if c.nms_radius > 0 else t
    kpts, _, valid = extract_keypoints(kept, c.threshold, c.top_k, c.remove_borders)
    return kpts[0][valid[0]].numpy().astype(np.float32)


def network_detector(net: torch.nn.Module, device: torch.device, amp: str = "none") -> Detector:
    """Wrap a SuperPointNet-like module (forward -> {'logits': (B, 65, H/8, W/8)}) as a Detector."""
    def detect(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32))[:, None].to(device)
        with torch.inference_mode(), autocast(device, "bf16" if amp == "bf16" else "fp32"):
            logits = net(x.contiguous(memory_format=torch.channels_last))["logits"]
        return heatmap_from_logits(logits).float().cpu().numpy()
    return detect
