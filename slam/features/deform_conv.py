"""Deformable convolution (DCNv1 / DCNv2) in plain torch.

torchvision is not a dependency of this project (it has no CPU wheel matching our torch), so
this module re-implements ``torchvision.ops.deform_conv2d`` with the same semantics:

- ``offset`` has shape (B, 2 * offset_groups * kh * kw, Ho, Wo). For offset group ``g`` and
  kernel tap ``k = i * kw + j`` (row ``i``, column ``j``) the channels
  ``g * 2 * kh * kw + 2 * k`` and ``... + 2 * k + 1`` hold (dy, dx) in input pixels.
- The tap (i, j) of output pixel (ho, wo) samples the input at
  ``y = ho * stride_h - pad_h + i * dilation_h + dy`` and
  ``x = wo * stride_w - pad_w + j * dilation_w + dx`` with bilinear interpolation; input
  pixels outside the image count as zero (so a sample at y <= -1 or y >= H is zero).
- ``mask`` (DCNv2, optional) has shape (B, offset_groups * kh * kw, Ho, Wo), channel
  ``g * kh * kw + k``; each sampled value is multiplied by it before the convolution.
- Input channels are split into ``offset_groups`` consecutive groups, each with its own
  offsets; the convolution itself may additionally be grouped (``groups`` is inferred from
  ``weight.shape[1]`` exactly as torchvision does).

All taps of all output pixels are sampled with ONE ``F.grid_sample`` call; the convolution is
then a single batched matrix product (im2col), so the cost is that of a regular im2col conv
plus one bilinear gather. Gradients flow to input, offset, mask, weight and bias by autograd.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

IntPair = Union[int, tuple[int, int]]


def _pair(v: IntPair, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return t  # type: ignore[return-value]


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Deformable 2-D convolution with ``torchvision.ops.deform_conv2d`` semantics.

    Args:
        input:  (B, C, H, W) float feature map.
        offset: (B, 2 * G * kh * kw, Ho, Wo) sampling offsets in input pixels, (dy, dx) per tap
                (see the module docstring for the channel layout); G = offset groups.
        weight: (O, C / groups, kh, kw) convolution weights.
        bias:   (O,) or None.
        stride, padding, dilation: ints or (h, w) pairs, as for ``F.conv2d``.
        mask:   (B, G * kh * kw, Ho, Wo) modulation scalars (DCNv2), or None for DCNv1.

    Returns:
        (B, O, Ho, Wo) with Ho = (H + 2 * pad_h - dilation_h * (kh - 1) - 1) // stride_h + 1
        (and likewise Wo), same dtype as ``input`` (computed in float32 for half input).
    """
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if input.ndim != 4 or weight.ndim != 4 or offset.ndim != 4:
        raise ValueError(
            f"deform_conv2d expects 4-D input/offset/weight, got {tuple(input.shape)}, "
            f"{tuple(offset.shape)}, {tuple(weight.shape)}"
        )
    b, c, h, w = input.shape
    o, c_per_group, kh, kw = weight.shape
    if c_per_group == 0 or c % c_per_group != 0:
        raise ValueError(f"input channels ({c}) must be a multiple of weight.shape[1] ({c_per_group})")
    groups = c // c_per_group
    if o % groups != 0:
        raise ValueError(f"output channels ({o}) must be divisible by groups ({groups})")
    k = kh * kw
    if offset.shape[1] % (2 * k) != 0 or offset.shape[1] == 0:
        raise ValueError(f"offset has {offset.shape[1]} channels; expected a positive multiple of 2*kh*kw = {2 * k}")
    n_off = offset.shape[1] // (2 * k)
    if c % n_off != 0:
        raise ValueError(f"input channels ({c}) must be divisible by the number of offset groups ({n_off})")
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"deform_conv2d output would be empty ({ho}x{wo}) for input {h}x{w}")
    if offset.shape[0] != b or tuple(offset.shape[2:]) != (ho, wo):
        raise ValueError(f"offset must be ({b}, {2 * k * n_off}, {ho}, {wo}), got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (b, n_off * k, ho, wo):
        raise ValueError(f"mask must be ({b}, {n_off * k}, {ho}, {wo}), got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"bias must be ({o},), got {tuple(bias.shape)}")
    if b == 0:
        return input.new_zeros((0, o, ho, wo))

    dev = input.device
    # Sampling positions and bilinear weights in float32 (float64 for float64 input) even for
    # half-precision input: fp16 cannot hold sub-pixel positions on large maps.
    dt = torch.float64 if input.dtype == torch.float64 else torch.float32
    # Regular (undeformed) sampling positions of every tap: (K, Ho, Wo).
    tap_y = (torch.arange(kh, device=dev, dtype=dt) * dh).repeat_interleave(kw)  # (K,)
    tap_x = (torch.arange(kw, device=dev, dtype=dt) * dw).repeat(kh)  # (K,)
    out_y = torch.arange(ho, device=dev, dtype=dt) * sh - ph  # (Ho,)
    out_x = torch.arange(wo, device=dev, dtype=dt) * sw - pw  # (Wo,)
    base_y = tap_y[:, None, None] + out_y[None, :, None]  # (K, Ho, 1)
    base_x = tap_x[:, None, None] + out_x[None, None, :]  # (K, 1, Wo)

    off = offset.to(dt).view(b, n_off, k, 2, ho, wo)
    pos_y = base_y + off[:, :, :, 0]  # (B, G, K, Ho, Wo) input pixel rows
    pos_x = base_x + off[:, :, :, 1]
    # Pixel -> grid_sample coordinates with align_corners=False (well defined for W=1 or H=1):
    # pixel x maps to (2x + 1) / W - 1. Zero padding reproduces torchvision's border rule.
    grid = torch.stack(((2.0 * pos_x + 1.0) / w - 1.0, (2.0 * pos_y + 1.0) / h - 1.0), dim=-1)
    grid = grid.view(b * n_off, k, ho * wo, 2)
    feats = input.to(dt).reshape(b * n_off, c // n_off, h, w)
    cols = F.grid_sample(feats, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # cols: (B*G, C/G, K, Ho*Wo)
    if mask is not None:
        cols = cols * mask.to(cols.dtype).view(b * n_off, 1, k, ho * wo)
    cols = cols.reshape(b, groups, c_per_group * k, ho * wo)
    wmat = weight.to(cols.dtype).reshape(groups, o // groups, c_per_group * k)
    out = torch.matmul(wmat.unsqueeze(0), cols)  # (B, groups, O/groups, L)
    out = out.reshape(b, o, ho, wo)
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, o, 1, 1)
    return out.to(input.dtype)


class DeformConv2d(nn.Module):
    """torchvision-style deformable convolution layer (parameters ``weight`` and ``bias``).

    forward(input (B,C,H,W), offset (B,2*G*kh*kw,Ho,Wo), mask=None) -> (B,O,Ho,Wo).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )


class DeformableConv2d(nn.Module):
    """Deformable conv that predicts its own offsets, as used by ALIKED.

    Parameters (names match the ALIKED checkpoints): ``offset_conv`` (a regular conv producing
    2*kh*kw offset channels, or 3*kh*kw with ``mask=True``) and ``regular_conv`` (whose weight
    and bias are the deformable kernel). Offsets are clamped to +-max(H, W) / 4 input pixels.
    With ``mask=True`` the offset_conv output is split into three equal chunks (o1, o2, m):
    offset = cat(o1, o2), mask = sigmoid(m).

    forward(x (B,C,H,W)) -> (B,out_channels,Ho,Wo).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        bias: bool = False,
        mask: bool = False,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.mask = mask
        n_off = (3 if mask else 2) * kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, n_off, kernel_size, stride=stride, padding=padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        max_offset = max(h, w) / 4.0
        out = self.offset_conv(x)
        if self.mask:
            o1, o2, m = torch.chunk(out, 3, dim=1)
            offset = torch.cat((o1, o2), dim=1)
            modulation: Optional[torch.Tensor] = torch.sigmoid(m)
        else:
            offset, modulation = out, None
        offset = offset.clamp(-max_offset, max_offset)
        return deform_conv2d(
            x, offset, self.regular_conv.weight, self.regular_conv.bias, self.stride, self.padding, 1, modulation
        )
