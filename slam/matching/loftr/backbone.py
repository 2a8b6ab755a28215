"""LoFTR's local feature CNN: a ResNet-18-like encoder with a feature pyramid.

Input (B, 1, H, W) grey images in [0, 1] with H, W multiples of 8. Output: coarse features
(B, 256, H/8, W/8) and fine features (B, 128, H/2, W/2). Parameter names are those of the
official checkpoints (``backbone.conv1``, ``backbone.layer1.0.conv1``, ``backbone.layer2_outconv2.0`` ...).

Encoder: conv 7x7 stride 2 (1 -> 128) + BN + ReLU, then three stages of two basic residual
blocks at 1/2 (128), 1/4 (196) and 1/8 (256). Decoder: 1x1 lateral convs, bilinear x2
upsampling with ``align_corners=True`` (as the checkpoints were trained), and a conv-BN-LeakyReLU-
conv merge at 1/4 and at 1/2.

For inference, :meth:`ResNetFPN.fold_batchnorm` folds every BatchNorm into the preceding conv
(a conv with a bias instead of two passes over the feature map); it is irreversible and only
valid in eval mode, so the matcher calls it once after loading.

Memory layouts on the CPU (:meth:`ResNetFPN.set_layout`): ``channels_last`` (NHWC, the fastest
float32 convs here) or ``blocked`` (oneDNN's nChw16c tensors between layers, prepacked conv
weights). The two differ only in rounding: oneDNN's NHWC 3x3 kernels sum in another order and
carry about 3x the float32 error of the NCHW / blocked kernels (1e-6 against 3e-7 relative,
measured against float64 per conv); ``blocked`` gives the reference's (NCHW) numerics, about 10 %
faster than plain NCHW. ``winograd`` is channels-last with every 3x3 stride-1 conv computed by
Winograd's F(4x4, 3x3) (slam.matching.loftr.winograd): a quarter of the multiplications, about 5x
the float32 rounding of a direct conv. Set once, after fold_batchnorm; irreversible, CPU and
float32 only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.mkldnn import to_mkldnn

from slam.matching.loftr.winograd import WinogradConv3x3

LAYOUTS = ("contiguous", "channels_last", "blocked", "winograd")
BLOCK_DIMS = (128, 196, 256)  # channels at 1/2, 1/4, 1/8
INITIAL_DIM = 128


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(nn.Module):
    """relu(x' + bn2(conv2(relu(bn1(conv1(x)))))), x' = x or a strided 1x1 conv + BN of x."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, stride)
        self.conv2 = _conv(cout, cout, 3)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None if stride == 1 else nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(y.add_(x), inplace=True)  # in place: y is this block's own tensor

    def fold_batchnorm(self) -> None:
        self.conv1, self.bn1 = fuse_conv_bn_eval(self.conv1, self.bn1), nn.Identity()
        self.conv2, self.bn2 = fuse_conv_bn_eval(self.conv2, self.bn2), nn.Identity()
        if self.downsample is not None:
            self.downsample = nn.Sequential(fuse_conv_bn_eval(self.downsample[0], self.downsample[1]), nn.Identity())


class _LeakyReLU(nn.LeakyReLU):
    """LeakyReLU that also takes oneDNN tensors (no oneDNN kernel: through a dense tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_mkldnn:
            return super().forward(x.to_dense()).to_mkldnn()
        return super().forward(x)


def _merge(cin: int, cmid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cmid, 3), nn.BatchNorm2d(cmid), _LeakyReLU(inplace=True), _conv(cmid, cout, 3))


def _up2(x: torch.Tensor) -> torch.Tensor:
    if x.is_mkldnn:  # no oneDNN bilinear kernel: through a dense tensor
        return F.interpolate(x.to_dense(), scale_factor=2.0, mode="bilinear", align_corners=True).to_mkldnn()
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class ResNetFPN(nn.Module):
    """ResNet-FPN with outputs at 1/8 (coarse, 256 channels) and 1/2 (fine, 128 channels)."""

    def __init__(self) -> None:
        super().__init__()
        d1, d2, d3 = BLOCK_DIMS
        self.conv1 = nn.Conv2d(1, INITIAL_DIM, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(INITIAL_DIM)
        self.layer1 = nn.Sequential(BasicBlock(INITIAL_DIM, d1, 1), BasicBlock(d1, d1, 1))
        self.layer2 = nn.Sequential(BasicBlock(d1, d2, 2), BasicBlock(d2, d2, 1))
        self.layer3 = nn.Sequential(BasicBlock(d2, d3, 2), BasicBlock(d3, d3, 1))
        self.layer3_outconv = _conv(d3, d3, 1)
        self.layer2_outconv = _conv(d2, d3, 1)
        self.layer2_outconv2 = _merge(d3, d3, d2)
        self.layer1_outconv = _conv(d1, d2, 1)
        self.layer1_outconv2 = _merge(d2, d2, d1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.layout = "contiguous"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, H, W) float -> coarse (B, 256, H/8, W/8), fine (B, 128, H/2, W/2): dense tensors
        in the layout's memory format (contiguous for ``blocked``)."""
        if self.layout == "blocked":
            c3, c1 = self._forward(x.contiguous().to_mkldnn())
            return c3.to_dense(), c1.to_dense()
        return self._forward(x.contiguous(memory_format=self.memory_format))

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.layout in ("channels_last", "winograd") else torch.contiguous_format

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = self.layer1(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        c3 = self.layer3_outconv(x3)
        c2 = self.layer2_outconv2(self.layer2_outconv(x2).add_(_up2(c3)))
        c1 = self.layer1_outconv2(self.layer1_outconv(x1).add_(_up2(c2)))
        return c3, c1

    @torch.no_grad()
    def fold_batchnorm(self) -> None:
        """Fold every BatchNorm into its conv (eval-mode statistics). Irreversible."""
        if self.training:
            raise RuntimeError("fold_batchnorm needs eval mode: call .eval() first")
        self.conv1, self.bn1 = fuse_conv_bn_eval(self.conv1, self.bn1), nn.Identity()
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                block.fold_batchnorm()
        for seq in (self.layer2_outconv2, self.layer1_outconv2):
            seq[0], seq[1] = fuse_conv_bn_eval(seq[0], seq[1]), nn.Identity()

    @torch.no_grad()
    def set_layout(self, layout: str) -> None:
        """"contiguous", "channels_last", "blocked" (oneDNN) or "winograd" (channels-last, the 3x3
        stride-1 convs by F(4x4, 3x3)). blocked and winograd: after fold_batchnorm, CPU float32
        only, irreversible. See the module docstring."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if self.layout in ("blocked", "winograd") and layout != self.layout:
            raise RuntimeError(f"a {self.layout} backbone cannot change its layout")
        if layout in ("blocked", "winograd") and any(isinstance(m, nn.BatchNorm2d) for m in self.modules()):
            raise RuntimeError(f"the {layout} layout needs fold_batchnorm() first")
        if layout == "blocked":
            for name, child in list(self.named_children()):
                setattr(self, name, to_mkldnn(child))
        else:
            self.to(memory_format=torch.contiguous_format if layout == "contiguous" else torch.channels_last)
        if layout == "winograd" and self.layout != "winograd":
            for parent in list(self.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child.stride == (1, 1):
                        setattr(parent, name, WinogradConv3x3(child))
        self.layout = layout
