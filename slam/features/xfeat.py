"""XFeat keypoint detector and descriptor.

Potje, Cadar, Araujo, Martins, Nascimento: "XFeat: Accelerated Features for Lightweight Image
Matching", CVPR 2024. Written for this project from the paper and the published checkpoint
``xfeat.pt`` (Apache-2.0, verlab/accelerated_features); module names follow the checkpoint
(``block1.0.layer.0.weight``...) so it loads with ``strict=True``. The checkpoint's
``fine_matcher.*`` MLP belongs to the semi-dense XFeat* refinement, which this module does not
implement; those keys are dropped.

Network (input: grey image in [0, 1], sides multiples of 32):

- the image is instance-normalised (one channel, no affine);
- backbone of "basic layers" (conv without bias, BatchNorm without affine, ReLU): block1
  (4, 8, 8, 24 channels, strides 1, 2, 1, 2) plus a skip branch (4x4 average pool, 1x1 conv to
  24) at 1/4 resolution, block2 (24, 24), block3 (64, 64 and a 1x1 layer; 1/8), block4 (64 x 3;
  1/16), block5 (128 x 3 and a 1x1 layer to 64; 1/32);
- fusion: block4 and block5 upsampled bilinearly to 1/8 and added to block3, then two basic
  layers and a 1x1 conv: the dense 64-d descriptor map at 1/8 resolution;
- reliability head (two 1x1 basic layers, 1x1 conv, sigmoid) on the descriptor map: (B,1,H/8,W/8);
- keypoint head on the raw normalised image: each 8x8 pixel cell unfolded into 64 channels
  (space-to-depth), three 1x1 basic layers and a 1x1 conv to 65 logits (64 cell positions +
  a "no keypoint" dustbin).

Detection at inference (:func:`detect`):

1. the 65 logits get a softmax, the dustbin is dropped and each cell's 64 probabilities go back
   to their pixels (depth-to-space): a full-resolution keypoint heatmap;
   By default (``xfeat.shifted_grid``; not in the reference) the keypoint head also runs on the cell grid
   moved by half a cell (the normalised image reflect-padded by 4 px), and the heatmap is the
   geometric mean of the two grids' (:func:`two_grid_heatmap`). Each cell sees only its own 64
   pixels, so with one grid a keypoint moves when the grid cuts the image elsewhere (the camera
   moves by a few pixels); with two, a 4 px shift swaps the grids. On synthetic/loop_short the
   keypoints of frames 3 apart lie 0.59 px (median) from where the truth puts them, against
   0.92 px with one grid (``tools/keypoint_precision.py``; docs/benchmarks.md section 14);
2. a pixel is a keypoint candidate when it is the maximum of its ``nms_size`` x ``nms_size``
   window (ties keep every maximum) and above ``detection_threshold``;
3. its score is heatmap x reliability, both read at the keypoint with the sampling convention
   of the released model (below); candidates with a score <= 0 are dropped, and the
   ``max_keypoints`` highest scores are kept;
4. the descriptor is the bicubic interpolation of the L2-normalised descriptor map at the
   keypoint, L2-normalised again.

Sampling convention of the released model: a pixel position p (x or y, full resolution, image
side S) is mapped to ``g = 2 p / (S - 1) - 1`` and sampled with ``grid_sample(...,
align_corners=False)``, i.e. at ``p * s / (S - 1) - 0.5`` on a map of side s. This is what the
model was trained with, so it is kept exactly. For the full-resolution heatmap (s = S, nearest)
it reads pixel p itself, except on the last column or row, which fall outside: those
keypoints score 0 and are dropped.

The extractor runs :class:`XFeatInference`, the same function rearranged for speed (BatchNorm
folded, channels-last, 1x1 convolutions as matrix products, the first two layers on the 2x2
space-to-depth image); :class:`XFeatNet` keeps the checkpoint's layout and is the reference the
tests compare it with. On real images (TUM, EuRoC, KITTI, ScanNet, Oxford pairs) both give the
keypoints of the authors' implementation exactly, with descriptors within 3e-6, when the extractor
runs with ``shifted_grid=False, subpixel=False``.

Images whose sides are not multiples of 32 are resized (bilinear, as the released model does) to
the nearest smaller multiples and the keypoints scaled back to the original pixels. Colour images
are reduced to grey by the mean of R, G and B.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from slam.errors import ConfigError, InputError, WeightsError
from slam.device import autocast, resolve_precision
from slam.features.base import keypoint_repeatability, synthetic_image
from slam.features.config import XFeatConfig
from slam.types import Features
from slam.weights import load_weights

__all__ = ["XFeat", "XFeatConfig", "XFeatNet", "XFeatInference", "keypoint_heatmap", "two_grid_heatmap", "nms_candidates", "detect", "refine_subpixel",
           "sample_descriptors", "CELL", "DIVISOR"]

#: Pixels per side of a keypoint-head cell (three stride-2 convolutions).
CELL = 8
#: The shift of the second keypoint grid (``xfeat.shifted_grid``): half a cell.
HALF_CELL = CELL // 2
#: Image sides must be multiples of this (five stride-2 stages).
DIVISOR = 32
#: Descriptor dimension of the released model.
DIM = 64
#: Checkpoint prefixes dropped on load: the XFeat* refinement MLP, not used here.
_UNUSED_PREFIXES = ("fine_matcher.",)


# ----------------------------------------------------------------------------- network


class _BasicLayer(nn.Module):
    """Conv (no bias) -> BatchNorm (no affine) -> ReLU; keys ``layer.0.weight``, ``layer.1.running_*``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _layers(*spec: tuple) -> nn.Sequential:
    """(c_in, c_out[, kernel[, stride]]) per basic layer."""
    return nn.Sequential(*[_BasicLayer(*s) for s in spec])


class XFeatNet(nn.Module):
    """The XFeat network (parameters as in ``xfeat.pt``).

    forward(grey (B,1,H,W) float in [0,1], H and W multiples of 32) ->
      feats (B,64,H/8,W/8) float dense descriptors (not normalised),
      logits (B,65,H/8,W/8) float keypoint logits (channel 8*i + j = pixel (row i, col j) of the
      8x8 cell, channel 64 = dustbin),
      reliability (B,1,H/8,W/8) float in (0,1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(1)
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1))
        self.block1 = _layers((1, 4), (4, 8, 3, 2), (8, 8), (8, 24, 3, 2))
        self.block2 = _layers((24, 24), (24, 24))
        self.block3 = _layers((24, 64, 3, 2), (64, 64), (64, 64, 1))
        self.block4 = _layers((64, 64, 3, 2), (64, 64), (64, 64))
        self.block5 = _layers((64, 128, 3, 2), (128, 128), (128, 128), (128, 64, 1))
        self.block_fusion = nn.Sequential(_BasicLayer(64, 64), _BasicLayer(64, 64), nn.Conv2d(64, 64, 1))
        self.heatmap_head = nn.Sequential(_BasicLayer(64, 64, 1), _BasicLayer(64, 64, 1), nn.Conv2d(64, 1, 1),
                                          nn.Sigmoid())
        self.keypoint_head = nn.Sequential(_BasicLayer(64, 64, 1), _BasicLayer(64, 64, 1), _BasicLayer(64, 64, 1),
                                           nn.Conv2d(64, CELL * CELL + 1, 1))

    @classmethod
    def from_state_dict(cls, sd: dict, source: str = "state_dict") -> "XFeatNet":
        """Build and load strictly (the XFeat* ``fine_matcher.*`` keys are dropped)."""
        if not isinstance(sd, dict):
            raise WeightsError(f"{source} does not hold a state dict")
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
        if "keypoint_head.3.weight" not in sd:
            raise WeightsError(f"{source} is not an XFeat checkpoint (no 'keypoint_head.3.weight'; expected the "
                               f"xfeat.pt layout). Install it with `python -m slam weights install xfeat`")
        sd = {k: v for k, v in sd.items() if not k.startswith(_UNUSED_PREFIXES)}
        net = cls()
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            msg = " ".join(str(exc).split())
            raise WeightsError(f"{source} does not match the XFeat architecture: {msg}") from None
        return net

    def forward(self, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = grey.shape[-2:]
        if grey.shape[1] != 1 or h % DIVISOR or w % DIVISOR:
            raise InputError(f"XFeatNet needs (B,1,H,W) input with sides multiples of {DIVISOR}, "
                             f"got {tuple(grey.shape)}")
        x = self.norm(grey)
        x1 = self.block1(x)
        x2 = self.block2(x1 + self.skip1(x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        x4 = F.interpolate(x4, size, mode="bilinear", align_corners=False)
        x5 = F.interpolate(x5, size, mode="bilinear", align_corners=False)
        feats = self.block_fusion(x3 + x4 + x5)
        reliability = self.heatmap_head(feats)
        logits = self.keypoint_head(F.pixel_unshuffle(x, CELL))
        return feats, logits, reliability


class _FoldedConv(nn.Module):
    """A basic layer (or plain conv) with BatchNorm folded in: conv(x, W * s, -mean * s) [+ ReLU],
    s = 1 / sqrt(var + eps). Inputs and outputs are NCHW tensors (channels-last memory)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int, relu: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone().contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias.detach().clone())
        self.stride, self.padding, self.relu = stride, padding, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return F.relu_(y) if self.relu else y


class _Pointwise(nn.Module):
    """A 1x1 basic layer (or conv) as a matrix product over the channels of an NHWC tensor."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, relu: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().reshape(weight.shape[0], -1).clone())
        self.register_buffer("bias", bias.detach().clone())
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        return F.relu_(y) if self.relu else y


def _fold(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, int, int, bool]:
    """(weight, bias, stride, padding, relu) of a basic layer with its BatchNorm folded, or of a plain conv."""
    if isinstance(module, _BasicLayer):
        conv, bn = module.layer[0], module.layer[1]
        s = torch.rsqrt(bn.running_var + bn.eps)
        return conv.weight * s[:, None, None, None], -bn.running_mean * s, conv.stride[0], conv.padding[0], True
    assert isinstance(module, nn.Conv2d)
    return module.weight, module.bias, module.stride[0], module.padding[0], False


class _SpaceToDepthStem(nn.Module):
    """The first two layers of block1 (3x3 conv 1->4 at full resolution, 3x3 stride-2 conv 4->8)
    computed on the 2x2 space-to-depth image: pixel (2Y + py, 2X + px) of the full-resolution map
    is channel 4c + 2py + px at (Y, X) of the half-resolution one. Both become 3x3 convolutions
    at half resolution (1->4 at full resolution = 4->16 phases; the stride-2 conv reads phases
    at offsets -1 and 0), which oneDNN runs far faster than a one-channel full-resolution conv.
    Same sums, other rounding order."""

    def __init__(self, first: tuple, second: tuple) -> None:
        super().__init__()
        w1, b1, _, _, _ = first
        w2, b2, _, _, _ = second
        c1 = w1.shape[0]
        k1 = w1.new_zeros(4 * c1, 4, 3, 3)
        k2 = w2.new_zeros(w2.shape[0], 4 * c1, 3, 3)
        for ky in range(3):
            for kx in range(3):
                for qy in range(2):
                    for qx in range(2):  # output phase (qy, qx) reads full-res offset (qy+ky-1, qx+kx-1)
                        ty, tx = qy + ky - 1, qx + kx - 1
                        k1[qy * 2 + qx::4, 2 * (ty % 2) + tx % 2, ty // 2 + 1, tx // 2 + 1] += w1[:, 0, ky, kx]
                ty, tx = ky - 1, kx - 1  # stride 2: output (Y, X) reads full-res (2Y+ty, 2X+tx)
                k2[:, 2 * (ty % 2) + tx % 2::4, ty // 2 + 1, tx // 2 + 1] = w2[:, :, ky, kx]
        self.first = _FoldedConv(k1, b1.repeat_interleave(4), 1, 1, relu=True)
        self.second = _FoldedConv(k2, b2, 1, 1, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) -> block1's second layer output (B,8,H/2,W/2)."""
        phases = F.pixel_unshuffle(x, 2).contiguous(memory_format=torch.channels_last)
        return self.second(self.first(phases))


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


class XFeatInference(nn.Module):
    """The function of a loaded :class:`XFeatNet`, arranged for fast inference (same inputs and
    outputs, equal up to float rounding): BatchNorm folded into the convolutions, channels-last
    memory, and every 1x1 convolution at 1/8 resolution (the two heads, the 1x1 layers of blocks
    3 and 5 and of the fusion) as one matrix product over NHWC channels, so no layout copies.
    The outputs are NCHW views of channels-last memory."""

    def __init__(self, net: XFeatNet) -> None:
        super().__init__()
        self.norm = net.norm
        self.skip_pool = net.skip1[0]
        w, b, *_ = _fold(net.skip1[1])
        self.skip_conv = _Pointwise(w, b, relu=False)
        seq = {name: getattr(net, name) for name in ("block1", "block2", "block3", "block4", "block5", "block_fusion")}
        for name, block in seq.items():
            setattr(self, name, nn.ModuleList(self._stage(m) for m in block))
        self.block1 = nn.ModuleList([_SpaceToDepthStem(_fold(net.block1[0]), _fold(net.block1[1])),
                                     *[self._stage(m) for m in net.block1[2:]]])
        self.heatmap_head = nn.ModuleList(_Pointwise(*_fold(m)[:2], relu=_fold(m)[4]) for m in net.heatmap_head[:3])
        self.keypoint_head = nn.ModuleList(_Pointwise(*_fold(m)[:2], relu=_fold(m)[4]) for m in net.keypoint_head)

    @staticmethod
    def _stage(m: nn.Module) -> nn.Module:
        w, b, stride, pad, relu = _fold(m)
        return _Pointwise(w, b, relu) if w.shape[-1] == 1 else _FoldedConv(w, b, stride, pad, relu)

    @staticmethod
    def _run(stages: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        """The stages in order. A stage may return a quantized tensor (slam.features.xfeat_int8's
        int8 layers pass it on to the next one): it is dequantized before a 1x1 stage and at the end."""
        for m in stages:
            if isinstance(m, _Pointwise):
                x = _nchw(m(_nhwc(x.dequantize() if x.is_quantized else x)))
            else:
                x = m(x)
        return x.dequantize() if x.is_quantized else x

    def forward(self, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, _, h, w = grey.shape
        if grey.shape[1] != 1 or h % DIVISOR or w % DIVISOR:
            raise InputError(f"XFeat needs (B,1,H,W) input with sides multiples of {DIVISOR}, got {tuple(grey.shape)}")
        x = self.norm(grey)
        skip = _nchw(self.skip_conv(_nhwc(self.skip_pool(x))))
        x2 = self._run(self.block2, self._run(self.block1, x) + skip)
        x3 = self._run(self.block3, x2)
        x4 = self._run(self.block4, x3)
        x5 = self._run(self.block5, x4)
        size = x3.shape[-2:]
        x4 = F.interpolate(x4, size, mode="bilinear", align_corners=False)
        x5 = F.interpolate(x5, size, mode="bilinear", align_corners=False)
        feats = self._run(self.block_fusion, x3 + x4 + x5)
        r = _nhwc(feats)
        for m in self.heatmap_head:
            r = m(r)
        return feats, self.keypoint_logits(x), _nchw(torch.sigmoid(r))

    def keypoint_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The keypoint head: (B,1,H,W) float32 instance-normalised image, H and W multiples of 8 ->
        (B,65,H/8,W/8) float32 logits (NCHW view of channels-last memory), channels as in XFeatNet.

        Always float32, also under a bf16 / fp16 autocast: the logits alone place the keypoints
        (the heatmap, its non-maximum suppression and the sub-pixel parabola), the head is small
        (1x1 layers on the image's 8x8 cells, 2.1 ms per grid of a 640x480 frame on one CPU thread), and
        the second grid (:meth:`shifted_keypoint_logits`) is float32 too, so both grids of the
        two-grid heatmap have the same rounding. With bf16 logits no sub-pixel keypoint stayed on
        fp32's position (98-99 % within 1 px); with float32 logits 99.3-99.7 % do, the rest being
        top-k changes through the bf16 reliability (fr1_xyz and synthetic/fast frames;
        docs/benchmarks.md section 13, 2026-12-08)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._keypoint_logits(x.float())

    def _keypoint_logits(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k = x.reshape(b, h // CELL, CELL, w // CELL, CELL).permute(0, 1, 3, 2, 4).reshape(b, h // CELL, w // CELL, CELL * CELL)
        for m in self.keypoint_head:
            k = m(k)
        return _nchw(k)

    def shifted_keypoint_logits(self, grey: torch.Tensor) -> torch.Tensor:
        """The keypoint head on the cell grid moved by half a cell: (B,1,H,W) float32 grey in [0,1]
        (the network's input) -> (B,65,H/8+1,W/8+1) float32 logits whose cell (r, c) covers pixels
        [8r - 4, 8r + 4) x [8c - 4, 8c + 4) of the image (the normalised image reflect-padded by 4 px)."""
        return self.keypoint_logits(F.pad(self.norm(grey), (HALF_CELL,) * 4, mode="reflect"))


# ----------------------------------------------------------------------------- detection


def keypoint_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """(B,65,h,w) keypoint logits -> (B,1,8h,8w) float32 per-pixel keypoint probability.

    Softmax over the 65 channels, dustbin dropped, channel 8*i + j of cell (r, c) placed at
    pixel (row 8r + i, column 8c + j) (depth-to-space, as ``pixel_shuffle``)."""
    b, _, h, w = logits.shape
    prob = torch.softmax(_nhwc(logits).float(), dim=-1)[..., : CELL * CELL]  # (B,h,w,64)
    return prob.reshape(b, h, w, CELL, CELL).permute(0, 1, 3, 2, 4).reshape(b, 1, h * CELL, w * CELL)


def two_grid_heatmap(logits: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """The geometric mean of the heatmaps of two cell grids, so that a keypoint does not depend on
    where the 8x8 grid happens to cut the image. logits: (B,65,h,w) on the network's grid;
    shifted: (B,65,h+1,w+1) on the grid moved by half a cell (``XFeatInference.shifted_keypoint_logits``).
    Returns (B,1,8h,8w) float32, per pixel sqrt(p_grid * p_shifted)."""
    h, w = logits.shape[-2] * CELL, logits.shape[-1] * CELL
    moved = keypoint_heatmap(shifted)[..., HALF_CELL:HALF_CELL + h, HALF_CELL:HALF_CELL + w]
    return keypoint_heatmap(logits).mul_(moved).sqrt_()


def nms_candidates(heat: torch.Tensor, size: int, threshold: float) -> list[torch.Tensor]:
    """Local maxima of a (B,1,H,W) heatmap: per image an (N,) int64 tensor of flat pixel indices
    (row * W + column), ascending.

    A pixel is kept when its value exceeds ``threshold`` and is >= every value in its
    ``size`` x ``size`` window (pixels outside the image do not count; equal neighbours are all
    kept): the max-pool test ``heat == max_pool(heat)``, computed as a separable running maximum
    of shifted views (a row pass, then a column pass), which is much faster on CPU than
    ``max_pool2d`` on a one-channel map and gives the same maxima exactly."""
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"xfeat.nms_size must be a positive odd number, got {size}")
    b, _, h, w = heat.shape
    r = size // 2
    padded = F.pad(heat[:, 0], (r, r, r, r), value=float("-inf"))  # (B, H+2r, W+2r)
    rows = padded[:, :, :w].clone()
    for d in range(1, 2 * r + 1):
        torch.maximum(rows, padded[:, :, d:d + w], out=rows)
    local = rows[:, :h].clone()
    for d in range(1, 2 * r + 1):
        torch.maximum(local, rows[:, d:d + h], out=local)
    keep = (heat[:, 0] >= local) & (heat[:, 0] > threshold)
    return [torch.nonzero(keep[i].reshape(-1))[:, 0] for i in range(b)]


def _grid(xy: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """(N,2) float32 pixels -> (1,1,N,2) grid in the released model's convention (module doc)."""
    scale = torch.tensor([w - 1, h - 1], device=xy.device, dtype=xy.dtype)
    return (2.0 * (xy / scale) - 1.0)[None, None]


def detect(heat: torch.Tensor, reliability: torch.Tensor, nms_size: int, threshold: float,
           max_keypoints: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keypoints and scores of a batch.

    heat: (B,1,H,W) float32 keypoint heatmap (:func:`keypoint_heatmap`); reliability:
    (B,1,H/8,W/8) float32 in (0,1). Returns per image (xy (N,2) int64 pixels (x, y), scores (N,)
    float32 > 0), sorted by decreasing score, N <= max_keypoints (no limit when <= 0).

    score = heat at the keypoint x reliability bilinearly sampled there (positions mapped as in
    the module doc). As in the released model, keypoints on the last column or row score 0
    (their nearest-neighbour read of the heatmap falls outside) and the corner pixel (0, 0) is
    never a keypoint (the released model uses it as its padding marker)."""
    b, _, h, w = heat.shape
    out = []
    for i, idx in enumerate(nms_candidates(heat, nms_size, threshold)):
        ys, xs = idx // w, idx % w
        # nearest pixel of p * S / (S - 1) - 0.5 is p itself, except S - 0.5 for p = S - 1,
        # which rounds (half to even) to S: outside, so the last column / row reads 0.
        inside = (xs < w - 1) & (ys < h - 1) & (idx > 0)
        hv = heat[i, 0].reshape(-1)[idx] * inside
        xy = torch.stack((xs, ys), dim=1)
        rel = F.grid_sample(reliability[i:i + 1].float(), _grid(xy.float(), w, h), mode="bilinear",
                            padding_mode="zeros", align_corners=False).view(-1)
        scores = hv * rel
        keep = torch.nonzero(scores > 0)[:, 0]
        xy, scores = xy[keep], scores[keep]
        if max_keypoints > 0 and scores.numel() > max_keypoints:
            top = torch.topk(scores, max_keypoints)
        else:
            top = torch.sort(scores, descending=True)
        out.append((xy[top.indices], top.values))
    return out


def refine_subpixel(heat: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Sub-pixel keypoint positions: per axis, the vertex of the parabola through the (H,W)
    heatmap ``heat`` at the keypoint and its two neighbours (clamped to +-0.5 px; 0 where the
    peak is flat or at the border). xy: (N,2) int64 pixels (x, y). Returns (N,2) float32."""
    h, w = heat.shape
    x, y = xy[:, 0], xy[:, 1]
    out = xy.float().clone()
    for axis, (p, size) in enumerate(((x, w), (y, h))):
        lo, hi = (p - 1).clamp(min=0), (p + 1).clamp(max=size - 1)
        if axis == 0:
            c, a, b = heat[y, x], heat[y, lo], heat[y, hi]
        else:
            c, a, b = heat[y, x], heat[lo, x], heat[hi, x]
        curv = a + b - 2.0 * c  # < 0 at a strict maximum
        ok = (curv < 0) & (p > 0) & (p < size - 1)
        off = torch.where(ok, 0.5 * (a - b) / torch.where(ok, curv, torch.ones_like(curv)), torch.zeros_like(c))
        out[:, axis] += off.clamp(-0.5, 0.5)
    return out


def sample_descriptors(dense: torch.Tensor, xy: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Bicubic samples of an L2-normalised (C,h/8,w/8) descriptor map at (N,2) pixels (x, y) of
    a (w, h) image, in the released model's convention (module doc), zero outside the map.
    Returns (N,C) float32, L2-normalised."""
    if xy.shape[0] == 0:
        return dense.new_zeros((0, dense.shape[0]), dtype=torch.float32)
    desc = F.grid_sample(dense[None].float(), _grid(xy.float(), w, h), mode="bicubic", padding_mode="zeros",
                         align_corners=False)  # (1, C, 1, N)
    return F.normalize(desc[0, :, 0].t(), p=2.0, dim=1)


# ----------------------------------------------------------------------------- extractor


def _grey_batch(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Same-shape (H,W,3) BGR or (H,W)/(H,W,1) grey uint8 images -> (B,C,H,W) float32 in [0,1],
    C = 3 (RGB order) or 1."""
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise InputError(f"image {i}: expected a uint8 numpy array, got {type(img).__name__} "
                             f"{getattr(img, 'dtype', '')}")
        if img.ndim == 2:
            img = img[:, :, None]
        elif img.ndim == 3 and img.shape[2] == 3:
            img = img[:, :, ::-1]
        elif not (img.ndim == 3 and img.shape[2] == 1):
            raise InputError(f"image {i}: expected (H,W,3) BGR or (H,W) grey, got shape {img.shape}")
        out.append(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return torch.from_numpy(np.stack(out)).to(device).float().div_(255.0)


def network_input(images: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, tuple[int, int]]:
    """Images of one shape ((H,W,3) uint8 BGR or (H,W) uint8 grey) -> ((B,1,H',W') float32 grey in
    [0,1], sides H', W' the multiples of 32 below H, W (bilinear resize where they differ; the mean of
    B, G and R), (W, H)): what the network sees."""
    batch = _grey_batch(images, device)
    h, w = batch.shape[-2:]
    ht, wt = (h // DIVISOR) * DIVISOR, (w // DIVISOR) * DIVISOR
    if ht == 0 or wt == 0:
        raise InputError(f"XFeat needs images of at least {DIVISOR}x{DIVISOR} px, got {w}x{h}")
    if (ht, wt) != (h, w):
        batch = F.interpolate(batch, (ht, wt), mode="bilinear", align_corners=False)
    return (batch.mean(dim=1, keepdim=True) if batch.shape[1] > 1 else batch), (w, h)


class XFeat:
    """XFeat behind the Extractor protocol.

    XFeat(cfg, device, state_dict=None, depth_run=False): weights from ``state_dict`` when given,
    else from ``cfg.weights`` (registry name or path of ``xfeat.pt``). ``depth_run``: the run
    measures depth (RGB-D, stereo), where the feature process bounds the frame rate, so ``auto``
    also takes bf16 on AMD CPUs with AVX512-BF16 (see ``__init__``).

    extract(image (H,W,3) uint8 BGR or (H,W) uint8 grey, sides >= 32) -> Features with keypoints
    (N,2) float32 pixels (x, y) of the original image (integer positions unless the image was
    resized to multiples of 32, or with ``subpixel`` refined on the heatmap; descriptors are
    always read at the integer positions, as the released model does), scores (N,) float32 in (0,1) (keypoint probability x
    reliability), descriptors (N,64) float32 L2-normalised, on ``device``, sorted by decreasing
    score, N <= cfg.max_keypoints.
    """

    name = "xfeat"
    binary = False
    descriptor_dim = DIM

    def __init__(self, cfg: Optional[XFeatConfig] = None, device: torch.device | str = "cpu",
                 state_dict: Optional[dict] = None, depth_run: bool = False) -> None:
        self.cfg = cfg if cfg is not None else XFeatConfig()
        self.device = torch.device(device)
        if self.cfg.nms_size < 1 or self.cfg.nms_size % 2 == 0:
            raise ConfigError(f"xfeat.nms_size must be a positive odd number, got {self.cfg.nms_size}")
        if state_dict is None:
            state_dict, path = load_weights(self.cfg.weights, "xfeat", "XFeat weights")
            source = str(path)
        else:
            source = "the given state_dict"
        self.net = XFeatInference(XFeatNet.from_state_dict(state_dict, source)).to(self.device).eval()
        self.precision_check: dict[str, float] = {}
        # int8 (CPU, opt-in: slam.features.xfeat_int8) is never chosen by auto: it runs 1.7x faster but is not
        # the reference's function, and it cost synthetic/fast RGB-D 0.55 -> 0.61 cm (docs/benchmarks.md section 13)
        p = str(self.cfg.precision).lower()
        self._int8: Optional[nn.Module] = self._int8_net(state_dict) if p == "int8" else None
        # auto on a CPU with native bf16 (AMX, slam.device.native_bf16): bf16 when it keeps the keypoints
        # (fr1_xyz: 43 vs 76 ms of CPU per 640x480 frame, 98 % of the keypoints at the same pixel).
        # On AMD CPUs with AVX512-BF16 (25.9 vs 42.4 ms) only in runs with depth: there the feature
        # process bounds the frame rate (RGB-D fr1_xyz 1.26-1.33x); monocular runs are bound by the mapping
        # thread, gain nothing, and KITTI's monocular scale drift spread wider in bf16 (section 13)
        self.precision = "int8" if p == "int8" else resolve_precision(p, self.device, "xfeat", cpu_auto="bf16",
                                                                      probe=self._bf16_probe,
                                                                      min_quality=self.cfg.bf16_min_repeatability,
                                                                      amd_avx512_bf16=depth_run)

    def _int8_net(self, state_dict: dict) -> nn.Module:
        """The int8 network for these weights (slam.features.xfeat_int8); a ConfigError where int8
        cannot run: not a CPU with the x86 quantized engine, or no calibration for the weights."""
        from slam.features import xfeat_int8

        if self.device.type != "cpu":
            why = f"it runs on CPU only (device {self.device})"
        elif not xfeat_int8.int8_available():
            why = f"torch's quantized engine here is {torch.backends.quantized.engine!r}, not x86/fbgemm"
        else:
            ranges = xfeat_int8.load_calibration(xfeat_int8.weights_fingerprint(state_dict))
            if ranges is not None:
                return xfeat_int8.XFeatInt8(self.net, ranges).eval()
            why = "there is no int8 calibration for these weights (make one with tools/calibrate_xfeat_int8.py)"
        raise ConfigError(f"xfeat.precision=int8: {why}; use xfeat.precision=fp32")

    def _bf16_probe(self) -> float:
        """Repeatability of bf16 against fp32 on a synthetic 240x320 image (auto precision on CPU)."""
        self.precision_check = self.compare_precision("bf16")
        return self.precision_check["repeatability"]

    def compare_precision(self, precision: str, image: Optional[np.ndarray] = None) -> dict[str, float]:
        """Extract ``image`` (default: a synthetic 240x320 one) in fp32 and in ``precision``:
        repeatability (share of fp32 keypoints with a keypoint within 1 px), exact (same
        position) and the mean cosine of the descriptors of keypoints at the same position."""
        img = synthetic_image(240, 320, seed=1) if image is None else image
        ref = self._extract([img], "fp32")[0]
        test = self._extract([img], precision)[0]
        cos = 1.0
        if len(ref) and len(test):
            d, j = torch.cdist(ref.keypoints.double(), test.keypoints.double()).min(dim=1)
            same = d == 0
            if bool(same.any()):
                cos = float((ref.descriptors[same] * test.descriptors[j[same]]).sum(1).mean())
        return {"repeatability": keypoint_repeatability(ref.keypoints, test.keypoints, 1.0),
                "exact": keypoint_repeatability(ref.keypoints, test.keypoints, 0.0), "descriptor_cosine": cos,
                "n_fp32": float(len(ref)), "n_test": float(len(test))}

    def extract_batch(self, images: Sequence[np.ndarray]) -> list[Features]:
        """One forward pass per distinct image shape; results in input order."""
        return self._extract(images, self.precision)

    @torch.inference_mode()
    def _extract(self, images: Sequence[np.ndarray], precision: str) -> list[Features]:
        results: list[Optional[Features]] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(tuple(getattr(img, "shape", ())), []).append(i)
        for shape, idxs in groups.items():
            grey, (w, h) = network_input([images[i] for i in idxs], self.device)
            ht, wt = grey.shape[-2:]
            if precision == "int8":
                if self._int8 is None:
                    raise ConfigError("xfeat: int8 was not set up for this extractor (xfeat.precision=int8 builds it)")
                feats, logits, reliability = self._int8(grey.contiguous(memory_format=torch.channels_last))
            else:
                with autocast(self.device, precision):
                    feats, logits, reliability = self.net(grey.contiguous(memory_format=torch.channels_last))
            if self.cfg.shifted_grid:
                heat = two_grid_heatmap(logits, self.net.shifted_keypoint_logits(grey.float()))
            else:
                heat = keypoint_heatmap(logits)
            dense = F.normalize(feats.float(), p=2.0, dim=1)
            detections = detect(heat, reliability.float(), self.cfg.nms_size, self.cfg.detection_threshold,
                                self.cfg.max_keypoints)
            scale = torch.tensor([w / wt, h / ht], device=self.device, dtype=torch.float32)
            for k, i in enumerate(idxs):
                xy, scores = detections[k]
                desc = sample_descriptors(dense[k], xy, wt, ht)
                kpts = (refine_subpixel(heat[k, 0], xy) if self.cfg.subpixel else xy.float()) * scale
                results[i] = Features(kpts, scores.float(), desc.contiguous(), (w, h))
        return results  # type: ignore[return-value]

    def extract(self, image: np.ndarray) -> Features:
        return self.extract_batch([image])[0]

    def __repr__(self) -> str:
        return f"XFeat(weights={self.cfg.weights!r}, device={self.device}, precision={self.precision})"
