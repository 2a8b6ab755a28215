"""ALIKED keypoint detector and descriptor.

Zhao, Wu, Chen, Chen, Xu, Li: "ALIKED: A Lighter Keypoint and Descriptor Extraction Network
via Deformable Transformation", IEEE TIM 2023. Written for this project from the paper and the
published checkpoints (BSD-3-Clause, https://github.com/Shiaoming/ALIKED); module and parameter
names follow the checkpoints so that they load with ``strict=True``.

Network (c1..c4, dim, K, M read from the checkpoint, e.g. aliked-n16: 16, 32, 64, 128, 128, 3, 16):

- encoder: block1 (two 3x3 conv+BN+SELU, full resolution), avg-pool 2, block2 (residual,
  3x3 convs, 1/2), avg-pool 4, block3 (residual, deformable 3x3 convs, 1/8), avg-pool 4,
  block4 (residual, deformable 3x3 convs, 1/32);
- aggregation: a 1x1 conv + SELU per scale to dim/4 channels, bilinear upsampling
  (align_corners=True) to full resolution, concatenation -> (B, dim, H, W), L2-normalised;
- score head: 1x1 conv (dim->8), SELU, 3x3 (8->4), SELU, 3x3 (4->4), SELU, 3x3 (4->1), sigmoid;
- DKD (differentiable keypoint detection): NMS on the score map, threshold / top-k, then a
  soft-argmax (temperature 0.1) in the (2r+1)^2 window for sub-pixel positions;
- SDDH (sparse deformable descriptor head): for each keypoint a KxK patch of the feature map
  predicts M sampling offsets; the M bilinear samples go through a 1x1 conv + SELU and are
  aggregated by M learned (dim x dim) matrices; the result is L2-normalised.

Images are padded (edge replication) to a multiple of 32 for the encoder; the maps are cropped
back, so keypoints are in pixels of the ORIGINAL image (x, y), centre of the top-left pixel at
(0, 0).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from slam.features.config import ALIKEDConfig
from slam.features.deform_conv import DeformableConv2d
from slam.types import Features
from slam.weights import resolve_weights

#: Names of the published checkpoints (see slam/weights.py).
ALIKED_MODELS = ("aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16")


# ----------------------------------------------------------------------------- shared helpers


def images_to_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Same-size (H,W,3) BGR or (H,W) grey uint8 images -> (B,3,H,W) float32 RGB in [0,1]."""
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError(f"image {i}: expected a uint8 numpy array, got {type(img).__name__} "
                             f"{getattr(img, 'dtype', '')}")
        if img.ndim == 2:
            rgb = np.repeat(img[:, :, None], 3, axis=2)
        elif img.ndim == 3 and img.shape[2] == 3:
            rgb = img[:, :, ::-1]
        elif img.ndim == 3 and img.shape[2] == 1:
            rgb = np.repeat(img, 3, axis=2)
        else:
            raise ValueError(f"image {i}: expected (H,W,3) BGR or (H,W) grey, got shape {img.shape}")
        out.append(np.ascontiguousarray(rgb))
    batch = torch.from_numpy(np.stack(out)).to(device)
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def autocast_context(device: torch.device, precision: str, owner: str):
    """Context manager for the network forward pass under the requested precision."""
    p = resolve_precision(device, precision, owner)
    if p == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if p == "fp16" else torch.bfloat16)


def resolve_precision(device: torch.device, precision: str, owner: str) -> str:
    """'auto' -> 'fp16' on CUDA, 'fp32' elsewhere; validates the value."""
    p = str(precision).lower()
    if p == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if p not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"{owner}.precision={precision!r} is not valid; choose auto, fp32, fp16 or bf16")
    if p == "fp16" and device.type != "cuda":
        raise ValueError(f"{owner}.precision=fp16 needs a CUDA device (got {device}); use fp32 or bf16 on CPU")
    return p


def group_by_size(images: Sequence[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Indices of the images, grouped by (H, W), in first-seen order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape[:2]), []).append(i)
    return groups


def load_checkpoint(path: Path, owner: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / truncated / not a torch file
        raise ValueError(f"{owner}: cannot read weights file {path}: {exc}. Re-install it with "
                         f"`python -m slam weights install --force NAME` or pass a valid .pth") from exc


# ----------------------------------------------------------------------------- network


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + SELU (ALIKED block1)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.selu(self.bn1(self.conv1(x)))
        return F.selu(self.bn2(self.conv2(x)))


class ResBlock(nn.Module):
    """Residual block: (conv3x3 BN SELU conv3x3 BN) + 1x1 projection, SELU.

    ``deformable`` swaps the 3x3 convs for deformable ones (blocks 3 and 4)."""

    def __init__(self, c_in: int, c_out: int, deformable: bool, dcn_mask: bool = False) -> None:
        super().__init__()
        if deformable:
            self.conv1: nn.Module = DeformableConv2d(c_in, c_out, 3, padding=1, bias=False, mask=dcn_mask)
            self.conv2: nn.Module = DeformableConv2d(c_out, c_out, 3, padding=1, bias=False, mask=dcn_mask)
        else:
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = nn.Conv2d(c_in, c_out, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.selu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.selu(y + self.downsample(x))


def bilinear_sample_hwc(hwc: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of an (H, W, C) map at (P, 2) float pixel positions (x, y); pixels
    outside the map count as zero (same result as F.grid_sample with zero padding).
    Returns (P, C) float32. Gathering whole C-vectors is much faster on CPU than grid_sample
    on an NCHW map."""
    h, w, c = hwc.shape
    flat = hwc.reshape(h * w, c)
    x, y = pts[:, 0].float(), pts[:, 1].float()
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    out = torch.zeros(pts.shape[0], c, device=hwc.device, dtype=torch.float32)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))
            wgt = (wx * wy * inside).unsqueeze(1)
            out += wgt * flat.index_select(0, idx).float()
    return out


class SDDH(nn.Module):
    """Sparse deformable descriptor head.

    forward(feature_map (C,H,W) of one image, keypoints (N,2) float pixels (x,y) of that map)
    -> (N, C) L2-normalised descriptors.
    """

    def __init__(self, dim: int, kernel_size: int = 3, n_pos: int = 16) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.n_pos = n_pos
        self.offset_conv = nn.Sequential(
            nn.Conv2d(dim, 2 * n_pos, kernel_size, padding=0, bias=True),
            nn.SELU(),
            nn.Conv2d(2 * n_pos, 2 * n_pos, 1, bias=True),
        )
        self.sf_conv = nn.Conv2d(dim, dim, 1, bias=False)
        self.agg_weights = nn.Parameter(torch.rand(n_pos, dim, dim))

    def forward(self, fmap: torch.Tensor, kpts: torch.Tensor) -> torch.Tensor:
        c, h, w = fmap.shape
        n = kpts.shape[0]
        if n == 0:
            return fmap.new_zeros((0, c))
        ks = self.kernel_size
        # (H, W, C) view; free when the map is channels-last (as ALIKEDNet.dense returns it).
        hwc = fmap.permute(1, 2, 0)
        # KxK patch whose top-left corner is floor(kp) - K/2 + 1 (truncated), kept inside the map.
        corner = torch.floor(torch.floor(kpts) - ks / 2.0 + 1.0).long()
        corner[:, 0] = corner[:, 0].clamp(min=0, max=max(w - 1 - ks, 0))
        corner[:, 1] = corner[:, 1].clamp(min=0, max=max(h - 1 - ks, 0))
        steps = torch.arange(ks, device=fmap.device)
        rows = (corner[:, 1:2] + steps).clamp(max=h - 1)  # (N, K)
        cols = (corner[:, 0:1] + steps).clamp(max=w - 1)  # (N, K)
        patch = hwc[rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, C, K, K)

        max_offset = max(h, w) / 4.0
        off = self.offset_conv(patch.to(self.sf_conv.weight.dtype)).clamp(-max_offset, max_offset)  # (N, 2M, 1, 1)
        off = off.reshape(n, 2, self.n_pos).transpose(1, 2)  # (N, M, 2): first M = dx, next M = dy
        pos = kpts[:, None, :].float() + off.float()  # (N, M, 2) pixels (x, y)
        samples = bilinear_sample_hwc(hwc, pos.reshape(-1, 2)).view(n, self.n_pos, c)  # (N, M, C)
        samples = samples.permute(0, 2, 1).unsqueeze(-1)  # (N, C, M, 1)
        samples = F.selu(self.sf_conv(samples.to(self.sf_conv.weight.dtype))).squeeze(-1)  # (N, C, M)
        desc = torch.einsum("ncp,pcd->nd", samples, self.agg_weights.to(samples.dtype))
        return F.normalize(desc.float(), p=2.0, dim=1)


class ALIKEDNet(nn.Module):
    """The dense part of ALIKED plus the descriptor head (parameters as in the checkpoints).

    dense(images (B,3,H,W) float RGB in [0,1]) -> (feature_map (B,dim,H,W) L2-normalised
    over channels, score_map (B,1,H,W) in (0,1)).
    """

    def __init__(self, c1: int = 16, c2: int = 32, c3: int = 64, c4: int = 128, dim: int = 128,
                 kernel_size: int = 3, n_pos: int = 16, dcn_mask: bool = False) -> None:
        super().__init__()
        if c4 != dim:
            raise ValueError(f"ALIKED needs c4 == dim, got c4={c4}, dim={dim}")
        if dim % 4:
            raise ValueError(f"ALIKED dim must be divisible by 4, got {dim}")
        self.dims = (c1, c2, c3, c4, dim, kernel_size, n_pos)
        self.block1 = ConvBlock(3, c1)
        self.block2 = ResBlock(c1, c2, deformable=False)
        self.block3 = ResBlock(c2, c3, deformable=True, dcn_mask=dcn_mask)
        self.block4 = ResBlock(c3, c4, deformable=True, dcn_mask=dcn_mask)
        self.conv1 = nn.Conv2d(c1, dim // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(c2, dim // 4, 1, bias=False)
        self.conv3 = nn.Conv2d(c3, dim // 4, 1, bias=False)
        self.conv4 = nn.Conv2d(c4, dim // 4, 1, bias=False)
        self.score_head = nn.Sequential(
            nn.Conv2d(dim, 8, 1, bias=False), nn.SELU(),
            nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.SELU(),
            nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.SELU(),
            nn.Conv2d(4, 1, 3, padding=1, bias=False),
        )
        self.desc_head = SDDH(dim, kernel_size, n_pos)

    @classmethod
    def from_state_dict(cls, sd: dict, source: str = "state_dict") -> "ALIKEDNet":
        """Build with the layer sizes read from a checkpoint, then load it strictly."""
        try:
            c1 = sd["block1.conv1.weight"].shape[0]
            c2 = sd["block2.conv1.weight"].shape[0]
            c3 = sd["block3.conv1.regular_conv.weight"].shape[0]
            c4 = sd["block4.conv1.regular_conv.weight"].shape[0]
            dim = sd["desc_head.sf_conv.weight"].shape[0]
            n_pos = sd["desc_head.agg_weights"].shape[0]
            ks = sd["desc_head.offset_conv.0.weight"].shape[-1]
            dcn_mask = sd["block3.conv1.offset_conv.weight"].shape[0] == 27
        except KeyError as exc:
            raise ValueError(f"{source} is not an ALIKED checkpoint (missing key {exc}); expected one of "
                             f"{', '.join(ALIKED_MODELS)}") from None
        if "desc_head.convM.weight" in sd or sd["desc_head.offset_conv.0.weight"].shape[0] != 2 * n_pos:
            raise ValueError(f"{source}: ALIKED variants with conv2D/masked SDDH heads are not supported")
        net = cls(c1, c2, c3, c4, dim, ks, n_pos, dcn_mask)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{source} does not match the ALIKED architecture: {exc}") from None
        return net

    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = images.shape[-2:]
        pad_h, pad_w = (-h) % 32, (-w) % 32
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(images, (left, pad_w - left, top, pad_h - top), mode="replicate") if pad_h or pad_w else images
        x1 = self.block1(x)
        x2 = self.block2(F.avg_pool2d(x1, 2))
        x3 = self.block3(F.avg_pool2d(x2, 4))
        x4 = self.block4(F.avg_pool2d(x3, 4))
        full = x1.shape[-2:]
        feats = [
            F.selu(self.conv1(x1)),
            F.interpolate(F.selu(self.conv2(x2)), size=full, mode="bilinear", align_corners=True),
            F.interpolate(F.selu(self.conv3(x3)), size=full, mode="bilinear", align_corners=True),
            F.interpolate(F.selu(self.conv4(x4)), size=full, mode="bilinear", align_corners=True),
        ]
        x1234 = torch.cat(feats, dim=1)
        score_map = torch.sigmoid(self.score_head(x1234))
        feature_map = F.normalize(x1234, p=2, dim=1)
        crop = (slice(None), slice(None), slice(top, top + h), slice(left, left + w))
        return feature_map[crop], score_map[crop]


# ----------------------------------------------------------------------------- detection


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Non-maximum suppression on (B,1,H,W) scores: keep local maxima of the (2r+1)^2 window,
    then twice re-admit maxima that are not within reach of an already kept one. Suppressed
    entries are set to 0."""
    def pool(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t, kernel_size=2 * radius + 1, stride=1, padding=radius)

    zeros = torch.zeros_like(scores)
    keep = scores == pool(scores)
    for _ in range(2):
        near_kept = pool(keep.to(scores.dtype)) > 0
        rest = torch.where(near_kept, zeros, scores)
        keep = keep | ((rest == pool(rest)) & ~near_kept)
    return torch.where(keep, scores, zeros)


def dkd_detect(score_map: torch.Tensor, radius: int, threshold: float, max_keypoints: int,
               temperature: float = 0.1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ALIKED's DKD keypoint detection at inference.

    score_map: (B,1,H,W) float32 in (0,1).
    Selection per image: NMS maxima at least ``radius`` px from the border; with threshold > 0
    those above it (if none, those above the image's mean score), else all maxima; then the
    ``max_keypoints`` highest (no limit when <= 0).
    Sub-pixel position: soft-argmax of exp((s - max) / temperature) over the (2r+1)^2 window.
    Returns per image (keypoints (N,2) float32 pixels (x,y), scores (N,) float32 = score map
    bilinearly sampled at the refined position), sorted by decreasing score.
    """
    b, _, h, w = score_map.shape
    nms = simple_nms(score_map, radius)
    if radius > 0:
        nms[:, :, :radius, :] = 0
        nms[:, :, :, :radius] = 0
        nms[:, :, h - radius:, :] = 0
        nms[:, :, :, w - radius:] = 0
    ksz = 2 * radius + 1
    steps = torch.arange(-radius, radius + 1, device=score_map.device, dtype=score_map.dtype)
    grid_dy, grid_dx = torch.meshgrid(steps, steps, indexing="ij")
    window_xy = torch.stack((grid_dx.reshape(-1), grid_dy.reshape(-1)), dim=1)  # (k*k, 2) row-major
    padded = F.pad(score_map, (radius, radius, radius, radius))  # zeros outside, as nn.Unfold does
    out = []
    for i in range(b):
        flat = nms[i, 0].reshape(-1)
        if threshold > 0:
            idx = torch.nonzero(flat > threshold)[:, 0]
            if idx.numel() == 0:
                idx = torch.nonzero(flat > score_map[i].mean())[:, 0]
        else:
            idx = torch.nonzero(flat > 0)[:, 0]
        if max_keypoints > 0 and idx.numel() > max_keypoints:
            idx = idx[torch.topk(flat[idx], max_keypoints).indices]
        ys, xs = idx // w, idx % w
        # (N, k*k) window of scores around each maximum (indices into the padded map).
        rr = ys[:, None, None] + torch.arange(ksz, device=idx.device)[None, :, None]
        cc = xs[:, None, None] + torch.arange(ksz, device=idx.device)[None, None, :]
        patch = padded[i, 0][rr, cc].reshape(-1, ksz * ksz)
        wts = torch.exp((patch - patch.max(dim=1, keepdim=True).values) / temperature)
        residual = (wts @ window_xy) / wts.sum(dim=1, keepdim=True)
        kpts = torch.stack((xs, ys), dim=1).to(score_map.dtype) + residual
        grid = torch.stack(((2 * kpts[:, 0] + 1) / w - 1, (2 * kpts[:, 1] + 1) / h - 1), dim=-1)
        scores = F.grid_sample(score_map[i:i + 1], grid.view(1, 1, -1, 2), mode="bilinear",
                               padding_mode="zeros", align_corners=False).view(-1)
        order = torch.argsort(scores, descending=True)
        out.append((kpts[order].float(), scores[order].float()))
    return out


# ----------------------------------------------------------------------------- extractor


class ALIKED:
    """ALIKED behind the Extractor protocol.

    ALIKED(cfg, device, state_dict=None): the weights come from ``state_dict`` when given,
    else from ``cfg.model`` (a registry name resolved by slam.weights, or a .pth path).

    extract(image (H,W,3) uint8 BGR or (H,W) uint8 grey) -> Features with keypoints (N,2)
    float32 pixels (x,y) of the original image, scores (N,) float32 in (0,1), descriptors
    (N,D) float32 L2-normalised (D = 128, or 64 for aliked-t16), all on ``device``, sorted by
    decreasing score. Images must be at least 16x16 pixels.
    """

    name = "aliked"
    binary = False
    min_size = 16

    def __init__(self, cfg: Optional[ALIKEDConfig] = None, device: torch.device | str = "cpu",
                 state_dict: Optional[dict] = None) -> None:
        self.cfg = cfg if cfg is not None else ALIKEDConfig()
        self.device = torch.device(device)
        if self.cfg.nms_radius < 0:
            raise ValueError(f"aliked.nms_radius must be >= 0, got {self.cfg.nms_radius}")
        self.precision = resolve_precision(self.device, self.cfg.precision, "aliked")
        if state_dict is None:
            path = resolve_weights(self.cfg.model)
            state_dict = load_checkpoint(path, "aliked")
            source = str(path)
        else:
            source = "the given state_dict"
        if isinstance(state_dict, dict) and all(k.startswith("module.") for k in state_dict):
            state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        self.net = ALIKEDNet.from_state_dict(state_dict, source).to(self.device).eval()
        # channels-last: faster convolutions, and SDDH gathers whole descriptor vectors.
        self.net = self.net.to(memory_format=torch.channels_last)
        self.descriptor_dim = self.net.dims[4]

    @torch.inference_mode()
    def extract_batch(self, images: Sequence[np.ndarray]) -> list[Features]:
        """One forward pass per distinct image size; results in input order."""
        results: list[Optional[Features]] = [None] * len(images)
        for (h, w), idxs in group_by_size(images).items():
            if h < self.min_size or w < self.min_size:
                raise ValueError(f"ALIKED needs images of at least {self.min_size}x{self.min_size} px, got {w}x{h}")
            batch = images_to_tensor([images[i] for i in idxs], self.device)
            batch = batch.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.device, self.precision, "aliked"):
                feature_map, score_map = self.net.dense(batch)
            detections = dkd_detect(score_map.float(), self.cfg.nms_radius, self.cfg.detection_threshold,
                                    self.cfg.max_keypoints)
            for k, i in enumerate(idxs):
                kpts, scores = detections[k]
                with autocast_context(self.device, self.precision, "aliked"):
                    desc = self.net.desc_head(feature_map[k], kpts)
                results[i] = Features(kpts, scores, desc.float().contiguous(), (w, h))
        return results  # type: ignore[return-value]

    def extract(self, image: np.ndarray) -> Features:
        return self.extract_batch([image])[0]

    def __repr__(self) -> str:
        return f"ALIKED(model={self.cfg.model!r}, dim={self.descriptor_dim}, device={self.device})"
