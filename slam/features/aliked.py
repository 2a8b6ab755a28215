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

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from slam.device import autocast, resolve_precision
from slam.errors import WeightsError
from slam.features.base import group_by_size, images_to_tensor, nms
from slam.features.config import ALIKEDConfig
from slam.features.deform_conv import DeformableConv2d
from slam.types import Features
from slam.weights import load_weights

#: Names of the published checkpoints (see slam/weights.py).
ALIKED_MODELS = ("aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16")


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
        x = F.selu(self.bn1(self.conv1(x)), inplace=True)  # in place: fresh tensors, no page faults for a new map
        return F.selu(self.bn2(self.conv2(x)), inplace=True)


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
        y = F.selu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.selu(y.add_(self.downsample(x)), inplace=True)


def bilinear_sample_hwc(hwc: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of an (H, W, C) map at (P, 2) float pixel positions (x, y); pixels
    outside the map count as zero (same result as F.grid_sample with zero padding).
    Returns (P, C) float32. Gathering whole C-vectors is much faster on CPU than grid_sample
    on an NCHW map."""
    return bilinear_sample(DenseMap(hwc), pts)


def bilinear_sample(fmap: "DenseMap | AggregatedMap", pts: torch.Tensor) -> torch.Tensor:
    """bilinear_sample_hwc for any map with ``hw`` and ``pixels(yi, xi)``: (P, C) float32."""
    h, w = fmap.hw
    n = pts.shape[0]
    x, y = pts[:, 0].float(), pts[:, 1].float()
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    xs, ys, wgts = [], [], []
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            xs.append(xi.clamp(0, w - 1))
            ys.append(yi.clamp(0, h - 1))
            wgts.append(wx * wy * inside)
    # the four neighbours of every point in one lookup
    vals = fmap.pixels(torch.cat(ys), torch.cat(xs)).float().view(4, n, -1)
    out = wgts[0].unsqueeze(1) * vals[0]
    for k in range(1, 4):
        out.add_(wgts[k].unsqueeze(1) * vals[k])
    return out


class DenseMap:
    """An (H, W, C) feature map behind the pixel lookup that SDDH uses."""

    def __init__(self, hwc: torch.Tensor) -> None:
        self.hwc = hwc
        self.hw = (hwc.shape[0], hwc.shape[1])
        self.dim = hwc.shape[2]

    def pixels(self, yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """yi, xi: (P,) int64 inside the map -> (P, C) feature vectors."""
        h, w, c = self.hwc.shape
        return self.hwc.reshape(h * w, c).index_select(0, yi * w + xi)


def _upsample_taps(n_in: int, n_out: int, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source rows (i0, i1) and weights (l0, l1) of bilinear upsampling with align_corners=True
    from n_in to n_out samples at the output indices dst (P,) int64, computed as
    F.interpolate does (float32 scale (n_in-1)/(n_out-1), truncation, clamped neighbour)."""
    scale = torch.tensor((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0, dtype=torch.float32)
    src = scale * dst.float()
    i0 = src.long()
    i1 = i0 + (i0 < n_in - 1).long()
    l1 = src - i0.float()
    return i0, i1, 1.0 - l1, l1


class AggregatedMap:
    """ALIKED's aggregated feature map (dim, H, W), L2-normalised over channels, built only at
    the pixels asked for.

    The dense map is the concatenation of four dim/4-channel branches, three of them bilinearly
    upsampled (align_corners=True) from 1/2, 1/8 and 1/32 resolution, then normalised per pixel.
    SDDH reads about 75 pixels per keypoint (a KxK patch and the 4 neighbours of each of its M
    samples), so for 1024 keypoints a quarter of a 640x480 map; materialising all of it (157 MB in
    float32, written three times: upsampling, concatenation, normalisation) cost more than the
    encoder. pixels() does the same arithmetic per pixel, equal to the dense map up to float
    rounding (tests/test_aliked.py checks it against dense()).

    full: (Hp, Wp, C4) first branch at the padded full resolution; lows: the other branches at
    their own resolution, (h_k, w_k, C4); top, left: the padding above and left of the image;
    (h, w): the image size. Coordinates given to pixels() are in the image (unpadded).
    """

    def __init__(self, full: torch.Tensor, lows: list[torch.Tensor], top: int, left: int, h: int, w: int) -> None:
        self.full = full
        self.lows = lows
        self.top, self.left = top, left
        self.hw = (h, w)
        self.dim = full.shape[2] * (1 + len(lows))

    def pixels(self, yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """yi, xi: (P,) int64 inside the image -> (P, dim) float32 unit vectors."""
        hp, wp, c = self.full.shape
        yy, xx = yi + self.top, xi + self.left
        parts = [self.full.reshape(hp * wp, c).index_select(0, yy * wp + xx).float()]
        p = yy.shape[0]
        for low in self.lows:
            hl, wl, _ = low.shape
            y0, y1, ly0, ly1 = _upsample_taps(hl, hp, yy)
            x0, x1, lx0, lx1 = _upsample_taps(wl, wp, xx)
            idx = torch.cat((y0 * wl + x0, y0 * wl + x1, y1 * wl + x0, y1 * wl + x1))
            t = low.reshape(hl * wl, c).index_select(0, idx).float().view(4, p, c)  # the 4 taps
            lx0, lx1 = lx0[:, None], lx1[:, None]
            parts.append(ly0[:, None] * (lx0 * t[0] + lx1 * t[1]) + ly1[:, None] * (lx0 * t[2] + lx1 * t[3]))
        f = torch.cat(parts, dim=1)
        return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def dense(self) -> torch.Tensor:
        """The whole map, (dim, H, W) float32 (for tests and inspection)."""
        h, w = self.hw
        yi, xi = torch.meshgrid(torch.arange(h, device=self.full.device), torch.arange(w, device=self.full.device), indexing="ij")
        return self.pixels(yi.reshape(-1), xi.reshape(-1)).reshape(h, w, self.dim).permute(2, 0, 1)


class SDDH(nn.Module):
    """Sparse deformable descriptor head.

    forward(feature map of one image: a (C,H,W) tensor, a DenseMap or an AggregatedMap;
    keypoints (N,2) float pixels (x,y) of that map) -> (N, C) L2-normalised descriptors.
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

    def forward(self, fmap: "torch.Tensor | DenseMap | AggregatedMap", kpts: torch.Tensor) -> torch.Tensor:
        if isinstance(fmap, torch.Tensor):  # (C, H, W); the (H, W, C) view is free when channels-last
            fmap = DenseMap(fmap.permute(1, 2, 0))
        (h, w), c = fmap.hw, fmap.dim
        n = kpts.shape[0]
        if n == 0:
            return kpts.new_zeros((0, c))
        ks = self.kernel_size
        # KxK patch whose top-left corner is floor(kp) - K/2 + 1 (truncated), kept inside the map.
        corner = torch.floor(torch.floor(kpts) - ks / 2.0 + 1.0).long()
        corner[:, 0] = corner[:, 0].clamp(min=0, max=max(w - 1 - ks, 0))
        corner[:, 1] = corner[:, 1].clamp(min=0, max=max(h - 1 - ks, 0))
        steps = torch.arange(ks, device=kpts.device)
        rows = (corner[:, 1:2] + steps).clamp(max=h - 1)  # (N, K)
        cols = (corner[:, 0:1] + steps).clamp(max=w - 1)  # (N, K)
        rr, cc = torch.broadcast_tensors(rows[:, :, None], cols[:, None, :])
        patch = fmap.pixels(rr.reshape(-1), cc.reshape(-1)).view(n, ks, ks, c).permute(0, 3, 1, 2)  # (N, C, K, K)

        max_offset = max(h, w) / 4.0
        off = self.offset_conv(patch.to(self.sf_conv.weight.dtype)).clamp(-max_offset, max_offset)  # (N, 2M, 1, 1)
        off = off.reshape(n, 2, self.n_pos).transpose(1, 2)  # (N, M, 2): first M = dx, next M = dy
        pos = kpts[:, None, :].float() + off.float()  # (N, M, 2) pixels (x, y)
        samples = bilinear_sample(fmap, pos.reshape(-1, 2)).view(n, self.n_pos, c)  # (N, M, C)
        samples = samples.permute(0, 2, 1).unsqueeze(-1)  # (N, C, M, 1)
        samples = F.selu(self.sf_conv(samples.to(self.sf_conv.weight.dtype))).squeeze(-1)  # (N, C, M)
        desc = torch.einsum("ncp,pcd->nd", samples, self.agg_weights.to(samples.dtype))
        return F.normalize(desc.float(), p=2.0, dim=1)


class ALIKEDNet(nn.Module):
    """The dense part of ALIKED plus the descriptor head (parameters as in the checkpoints).

    dense(images (B,3,H,W) float RGB in [0,1]) -> (per image the feature map (dim,H,W)
    L2-normalised over channels, as an AggregatedMap; score_map (B,1,H,W) in (0,1)).
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
            raise WeightsError(f"{source} is not an ALIKED checkpoint (missing key {exc}); expected one of "
                               f"{', '.join(ALIKED_MODELS)}") from None
        if "desc_head.convM.weight" in sd or sd["desc_head.offset_conv.0.weight"].shape[0] != 2 * n_pos:
            raise WeightsError(f"{source}: ALIKED variants with conv2D/masked SDDH heads are not supported")
        net = cls(c1, c2, c3, c4, dim, ks, n_pos, dcn_mask)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{source} does not match the ALIKED architecture: {exc}") from None
        return net

    @torch.no_grad()
    def fold_batchnorm(self) -> "ALIKEDNet":
        """For inference: fold each batch norm of the plain-convolution blocks (block1 at full
        resolution, block2 at 1/2, where the normalisation passes cost most) into the
        convolution before it (weight * gamma / sigma, bias beta - mu * gamma / sigma), and
        replace it by the identity. Eval-mode outputs are unchanged up to float rounding; the
        net cannot be trained or saved in the checkpoint layout afterwards. Returns self."""
        for block in (self.block1, self.block2):
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
                conv, bn = getattr(block, conv_name), getattr(block, bn_name)
                if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                    continue
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                                  padding=conv.padding, bias=True).to(conv.weight.device, conv.weight.dtype)
                fused.weight.copy_(conv.weight * scale[:, None, None, None])
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
                setattr(block, conv_name, fused)
                setattr(block, bn_name, nn.Identity())
        return self

    def dense(self, images: torch.Tensor) -> tuple[list[AggregatedMap], torch.Tensor]:
        """images (B,3,H,W) float RGB in [0,1] -> (per image an AggregatedMap: the (dim,H,W)
        L2-normalised feature map, evaluated on demand; score_map (B,1,H,W) in (0,1)).

        The score head's first layer, a 1x1 convolution of the concatenated branches, is applied
        to each branch at its own resolution before upsampling (both are linear, so they
        commute): 8 channels are upsampled instead of dim."""
        h, w = images.shape[-2:]
        pad_h, pad_w = (-h) % 32, (-w) % 32
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(images, (left, pad_w - left, top, pad_h - top), mode="replicate") if pad_h or pad_w else images
        x1 = self.block1(x)
        x2 = self.block2(F.avg_pool2d(x1, 2))
        x3 = self.block3(F.avg_pool2d(x2, 4))
        x4 = self.block4(F.avg_pool2d(x3, 4))
        full = x1.shape[-2:]
        branches = [F.selu(conv(xk), inplace=True) for conv, xk in
                    ((self.conv1, x1), (self.conv2, x2), (self.conv3, x3), (self.conv4, x4))]
        c4 = branches[0].shape[1]
        w_score = self.score_head[0].weight  # (8, dim, 1, 1)
        s = F.conv2d(branches[0], w_score[:, :c4])
        for k, b in enumerate(branches[1:], start=1):
            s += F.interpolate(F.conv2d(b, w_score[:, k * c4:(k + 1) * c4]), size=full, mode="bilinear", align_corners=True)
        score_map = torch.sigmoid(self.score_head[1:](s))
        hwc = [b.permute(0, 2, 3, 1) for b in branches]  # views when channels-last
        maps = [AggregatedMap(hwc[0][i], [t[i] for t in hwc[1:]], top, left, h, w) for i in range(images.shape[0])]
        return maps, score_map[:, :, top:top + h, left:left + w]


# ----------------------------------------------------------------------------- detection


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
    maxima = nms(score_map[:, 0], radius)
    if radius > 0:
        maxima[:, :radius, :] = 0
        maxima[:, :, :radius] = 0
        maxima[:, h - radius:, :] = 0
        maxima[:, :, w - radius:] = 0
    ksz = 2 * radius + 1
    steps = torch.arange(-radius, radius + 1, device=score_map.device, dtype=score_map.dtype)
    grid_dy, grid_dx = torch.meshgrid(steps, steps, indexing="ij")
    window_xy = torch.stack((grid_dx.reshape(-1), grid_dy.reshape(-1)), dim=1)  # (k*k, 2) row-major
    padded = F.pad(score_map, (radius, radius, radius, radius))  # zeros outside, as nn.Unfold does
    out = []
    for i in range(b):
        flat = maxima[i].reshape(-1)
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
        self.precision = resolve_precision(self.cfg.precision, self.device, "aliked")
        if state_dict is None:
            state_dict, path = load_weights(self.cfg.model, "aliked", "ALIKED weights")
            source = str(path)
        else:
            source = "the given state_dict"
        if not isinstance(state_dict, dict):
            raise WeightsError(f"{source} holds a {type(state_dict).__name__}, not an ALIKED state dict")
        if all(k.startswith("module.") for k in state_dict):
            state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        self.net = ALIKEDNet.from_state_dict(state_dict, source).to(self.device).eval().fold_batchnorm()
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
            with autocast(self.device, self.precision):
                feature_maps, score_map = self.net.dense(batch)
            detections = dkd_detect(score_map.float(), self.cfg.nms_radius, self.cfg.detection_threshold,
                                    self.cfg.max_keypoints)
            for k, i in enumerate(idxs):
                kpts, scores = detections[k]
                with autocast(self.device, self.precision):
                    desc = self.net.desc_head(feature_maps[k], kpts)
                results[i] = Features(kpts, scores, desc.float().contiguous(), (w, h))
        return results  # type: ignore[return-value]

    def extract(self, image: np.ndarray) -> Features:
        return self.extract_batch([image])[0]

    def __repr__(self) -> str:
        return f"ALIKED(model={self.cfg.model!r}, dim={self.descriptor_dim}, device={self.device})"
