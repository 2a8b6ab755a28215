"""DISK keypoint detector and descriptor.

Tyszkiewicz, Fua, Trulls: "DISK: Learning local features with policy gradient", NeurIPS 2020.
Written for this project from the paper and the published checkpoint layout (Apache-2.0,
https://github.com/cvlab-epfl/disk; kornia's port shows the same layout); module names follow
the checkpoint (``unet.path_down.*``, ``unet.path_up.*``) so it loads with ``strict=True``.

Network: a thin U-Net with 5x5 convolutions, encoder widths 16, 32, 64, 64, 64 (average-pool
/2 between levels) and decoder widths 64, 64, 64, 129 (bilinear x2 upsampling, concatenation
with the skip connection). Every conv except the first is preceded by InstanceNorm (no affine)
and a per-channel PReLU. The 129 output channels at full resolution are 128 dense descriptor
channels and one detection heatmap (logits).

Detection at inference: a heatmap pixel is a keypoint when it is the maximum of its
``nms_window_size`` x ``nms_window_size`` window and its logit exceeds ``detection_threshold``;
the ``max_keypoints`` highest are kept. Descriptors are the dense descriptors at the keypoint
pixels, L2-normalised. Inputs whose sides are not multiples of 16 are zero-padded at the
bottom/right (the U-Net needs it) and the outputs cropped back.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from slam.errors import WeightsError
from slam.features.aliked import autocast_context, group_by_size, images_to_tensor, load_checkpoint, resolve_precision
from slam.features.config import DISKConfig
from slam.types import Features
from slam.weights import get_spec, resolve_weights

#: Registry names the DISK 'depth' checkpoint may be listed under (first one known wins).
_DISK_DEPTH_ALIASES = ("disk-depth-save", "disk-depth")


# ----------------------------------------------------------------------------- network


class _ConvUnit(nn.Sequential):
    """[InstanceNorm, PReLU, (dropout slot), Conv 5x5 'same']; the first unit has no norm/gate."""

    def __init__(self, c_in: int, c_out: int, size: int, plain: bool = False) -> None:
        norm: nn.Module = nn.Identity() if plain else nn.InstanceNorm2d(c_in)
        gate: nn.Module = nn.Identity() if plain else nn.PReLU(c_in)
        super().__init__(norm, gate, nn.Identity(), nn.Conv2d(c_in, c_out, size, padding=size // 2, bias=True))


class _AvgPool2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2)


class _UpBlock(nn.Module):
    def __init__(self, c_bottom: int, c_skip: int, c_out: int, size: int) -> None:
        super().__init__()
        self.conv = _ConvUnit(c_bottom + c_skip, c_out, size)

    def forward(self, bottom: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(bottom, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([up, skip], dim=1))


class DISKUnet(nn.Module):
    """forward((B,C_in,H,W), H and W multiples of 2**len(up)) -> (B, up[-1], H, W)."""

    def __init__(self, in_features: int = 3, down: Sequence[int] = (16, 32, 64, 64, 64),
                 up: Sequence[int] = (64, 64, 64, 129), size: int = 5) -> None:
        super().__init__()
        if len(down) != len(up) + 1:
            raise ValueError("DISK U-Net: `down` must have one more level than `up`")
        self.divisor = 2 ** len(up)
        dims = [in_features, *down]
        self.path_down = nn.ModuleList(
            nn.Sequential(nn.Identity() if i == 0 else _AvgPool2(), _ConvUnit(dims[i], dims[i + 1], size, plain=i == 0))
            for i in range(len(down))
        )
        bottoms = [down[-1], *up[:-1]]
        skips = dims[-2::-1]
        self.path_up = nn.ModuleList(_UpBlock(b, s, o, size) for b, s, o in zip(bottoms, skips, up))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.divisor or w % self.divisor:
            raise ValueError(f"DISK U-Net input sides must be multiples of {self.divisor}, got {w}x{h}")
        levels = [x]
        for block in self.path_down:
            levels.append(block(levels[-1]))
        out = levels[-1]
        for block, skip in zip(self.path_up, levels[-2::-1]):
            out = block(out, skip)
        return out


class DISKNet(nn.Module):
    """dense(images (B,3,H,W) float RGB in [0,1], sides multiples of 16)
    -> (heatmap (B,1,H,W) logits, descriptors (B,128,H,W) unnormalised)."""

    def __init__(self, desc_dim: int = 128) -> None:
        super().__init__()
        self.desc_dim = desc_dim
        self.unet = DISKUnet(3, (16, 32, 64, 64, 64), (64, 64, 64, desc_dim + 1), 5)

    @classmethod
    def from_state_dict(cls, sd: dict, source: str = "state_dict") -> "DISKNet":
        if isinstance(sd, dict) and "extractor" in sd and isinstance(sd["extractor"], dict):
            sd = sd["extractor"]
        key = "unet.path_up.3.conv.3.weight"
        if not isinstance(sd, dict) or key not in sd:
            raise ValueError(f"{source} is not a DISK checkpoint (no '{key}'; expected the cvlab-epfl "
                             f"'depth-save.pth' layout, a dict with an 'extractor' state dict)")
        net = cls(int(sd[key].shape[0]) - 1)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{source} does not match the DISK architecture: {exc}") from None
        return net

    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.unet(images)
        return out[:, self.desc_dim:], out[:, :self.desc_dim]


# ----------------------------------------------------------------------------- detection


def heatmap_nms_topk(heatmap: torch.Tensor, window: int, threshold: float,
                     max_keypoints: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """heatmap (B,1,H,W) float32 logits -> per image (xy (N,2) int64 pixels, logits (N,) float32),
    sorted by decreasing logit. A pixel is kept when max-pooling picks it as its window's maximum
    (ties go to the first pixel in raster order) and its logit > threshold."""
    b, _, h, w = heatmap.shape
    _, arg = F.max_pool2d(heatmap, kernel_size=window, stride=1, padding=window // 2, return_indices=True)
    own = torch.arange(h * w, device=heatmap.device).view(1, 1, h, w)
    keep = (arg == own) & (heatmap > threshold)
    out = []
    for i in range(b):
        idx = torch.nonzero(keep[i, 0].reshape(-1))[:, 0]
        vals = heatmap[i, 0].reshape(-1)[idx]
        if max_keypoints > 0 and idx.numel() > max_keypoints:
            top = torch.topk(vals, max_keypoints)
            idx, vals = idx[top.indices], top.values
        else:
            order = torch.argsort(vals, descending=True)
            idx, vals = idx[order], vals[order]
        out.append((torch.stack((idx % w, idx // w), dim=1), vals))
    return out


# ----------------------------------------------------------------------------- extractor


def _resolve_disk_weights(name: str):
    """Registry name (either alias of the depth checkpoint) or path -> Path."""
    if name not in _DISK_DEPTH_ALIASES:
        return resolve_weights(name)
    for alias in (name, *[a for a in _DISK_DEPTH_ALIASES if a != name]):
        try:
            get_spec(alias)
        except WeightsError:
            continue  # not a registry name in this version of slam.weights
        return resolve_weights(alias)
    return resolve_weights(name)  # raises with the list of known names


class DISK:
    """DISK behind the Extractor protocol.

    DISK(cfg, device, state_dict=None): weights from ``state_dict`` (the checkpoint dict with
    an 'extractor' entry, or that entry itself) when given, else from ``cfg.weights``.

    extract(image (H,W,3) uint8 BGR or (H,W) uint8 grey) -> Features with keypoints (N,2)
    float32 integer pixel positions (x,y) in the original image, scores (N,) float32 heatmap
    logits, descriptors (N,128) float32 L2-normalised, on ``device``, sorted by decreasing score.
    """

    name = "disk"
    binary = False

    def __init__(self, cfg: Optional[DISKConfig] = None, device: torch.device | str = "cpu",
                 state_dict: Optional[dict] = None) -> None:
        self.cfg = cfg if cfg is not None else DISKConfig()
        self.device = torch.device(device)
        if self.cfg.nms_window_size < 1 or self.cfg.nms_window_size % 2 == 0:
            raise ValueError(f"disk.nms_window_size must be a positive odd number, got {self.cfg.nms_window_size}")
        self.precision = resolve_precision(self.device, self.cfg.precision, "disk")
        if state_dict is None:
            path = _resolve_disk_weights(self.cfg.weights)
            state_dict = load_checkpoint(path, "disk")
            source = str(path)
        else:
            source = "the given state_dict"
        self.net = DISKNet.from_state_dict(state_dict, source).to(self.device).eval()
        self.descriptor_dim = self.net.desc_dim

    @torch.inference_mode()
    def extract_batch(self, images: Sequence[np.ndarray]) -> list[Features]:
        """One forward pass per distinct image size; results in input order."""
        results: list[Optional[Features]] = [None] * len(images)
        div = self.net.unet.divisor
        for (h, w), idxs in group_by_size(images).items():
            pad_h, pad_w = (-h) % div, (-w) % div
            if (pad_h or pad_w) and not self.cfg.pad_if_not_divisible:
                raise ValueError(f"DISK needs image sides that are multiples of {div}, got {w}x{h}; "
                                 f"set disk.pad_if_not_divisible=true")
            batch = images_to_tensor([images[i] for i in idxs], self.device)
            if pad_h or pad_w:
                batch = F.pad(batch, (0, pad_w, 0, pad_h), value=0.0)
            with autocast_context(self.device, self.precision, "disk"):
                heatmap, dense_desc = self.net.dense(batch)
            heatmap = heatmap[..., :h, :w].float()
            dense_desc = dense_desc[..., :h, :w]
            detections = heatmap_nms_topk(heatmap, self.cfg.nms_window_size, self.cfg.detection_threshold,
                                          self.cfg.max_keypoints)
            for k, i in enumerate(idxs):
                xy, logits = detections[k]
                desc = dense_desc[k][:, xy[:, 1], xy[:, 0]].t().float()
                desc = F.normalize(desc, p=2.0, dim=1).contiguous()
                results[i] = Features(xy.float(), logits, desc, (w, h))
        return results  # type: ignore[return-value]

    def extract(self, image: np.ndarray) -> Features:
        return self.extract_batch([image])[0]

    def __repr__(self) -> str:
        return f"DISK(weights={self.cfg.weights!r}, device={self.device})"
