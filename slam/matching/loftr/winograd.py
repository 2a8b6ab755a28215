"""3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3), for float32 on the CPU.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016. The image is cut
into 6x6 tiles that overlap by 2 (stride 4); each tile d and the filter g are transformed,
V = B^T d B and U = G g G^T, multiplied point by point and summed over the input channels, and
each tile's 4x4 output is Y = A^T M A. Per output the 3x3 filter's 9 multiplications become
36 / 16 = 2.25, so the sum over channels, a batch of 36 matrix products of (tiles, Cin) by
(Cin, Cout), does a quarter of a direct convolution's work. The two transforms are small matrix
products over the tiles.

This CPU's direct float32 kernels run close to its peak, so only fewer multiplications make
LoFTR's backbone faster (docs/benchmarks.md section 16). The tiles are processed a few tile rows
at a time, so that the transformed tiles stay in cache.

Numerics: the transforms' interpolation points (0, +-1, +-2) amplify float32 rounding, about
4x a direct convolution's error (measured against float64: 6e-6 against 1.5e-6 relative to the
output's maximum). Float32 only; autocast and other devices must not use it.
"""
from __future__ import annotations

import torch
from torch import nn

# F(4x4, 3x3) with the points 0, 1, -1, 2, -2 and infinity (Lavin and Gray, section 4.3)
_BT = ((4, 0, -5, 0, 1, 0),
       (0, -4, -4, 1, 1, 0),
       (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0),
       (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0),
      (-1 / 6, -1 / 6, -1 / 6),
      (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0),
       (0, 1, -1, 2, -2, 0),
       (0, 1, 1, 4, 4, 0),
       (0, 1, -1, 8, -8, 1))
TILE = 6  # input tile side
OUT = 4  # output tile side (the tiles' stride)
TARGET_TILES = 160  # tiles per chunk (all images of the batch, whole tile rows): about 3 MB of transformed tiles at 128 channels; 40-640 within 10 % on this CPU


def filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, 3, 3) -> U (36, Cin, Cout) float32, U[6a+b] = (G g G^T)[a, b], computed in float64."""
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().to(torch.float64).cpu(), g)
    return u.reshape(TILE * TILE, weight.shape[1], weight.shape[0]).to(torch.float32).contiguous()


def _kron(m: tuple) -> torch.Tensor:
    t = torch.tensor(m, dtype=torch.float64)
    return torch.kron(t, t).to(torch.float32).contiguous()


class WinogradConv3x3(nn.Module):
    """Drop-in for a float32 nn.Conv2d with kernel 3, stride 1, padding 1, no dilation or groups.

    forward: x (B, Cin, H, W) float32 on the CPU, any memory format -> (B, Cout, H, W) float32,
    an NCHW view of channels-last memory. The filter is transformed once, here."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if (conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1)
                or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros"):
            raise ValueError(f"WinogradConv3x3 takes 3x3 convolutions with stride 1 and padding 1, got {conv}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.register_buffer("u", filter_transform(conv.weight))  # (36, Cin, Cout)
        bias = conv.bias.detach().to(torch.float32).clone() if conv.bias is not None else None
        self.register_buffer("bias", bias)
        self.register_buffer("bt", _kron(_BT))  # (36, 36): V = bt @ d over the flattened tile
        self.register_buffer("at", _kron(_AT))  # (16, 36): Y = at @ M

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, F(4x4, 3x3)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            raise RuntimeError("WinogradConv3x3 runs float32 on the CPU only (no autocast)")
        B, C, H, W = x.shape
        if C != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {C}")
        co = self.out_channels
        xh = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        if not xh.is_contiguous():
            xh = xh.contiguous()
        th, tw = -(-H // OUT), -(-W // OUT)
        rows = max(1, min(th, round(TARGET_TILES / (B * tw))))
        out = torch.empty(B, OUT * th, OUT * tw, co, dtype=torch.float32)
        # one chunk of zero-padded input: tile rows r0 .. r0+r need input rows 4 r0 - 1 .. 4 (r0+r) + 1
        pad = torch.zeros(B, OUT * rows + 2, OUT * tw + 2, C, dtype=torch.float32)
        bufs: dict[int, tuple[torch.Tensor, ...]] = {}
        for r0 in range(0, th, rows):
            r = min(rows, th - r0)
            if r not in bufs:  # the last chunk may be shorter
                n = B * r * tw
                bufs[r] = (torch.empty(TILE * TILE, B, r, tw, C), torch.empty(TILE * TILE, n, C),
                           torch.empty(TILE * TILE, n, co), torch.empty(OUT * OUT, n * co))
            d, v, m, y = bufs[r]
            lo, hi = OUT * r0 - 1, OUT * (r0 + r) + 1  # input rows of this chunk, [lo, hi)
            a, b = max(lo, 0), min(hi, H)
            pad[:, :a - lo].zero_()
            pad[:, b - lo:hi - lo].zero_()
            pad[:, a - lo:b - lo, 1:W + 1].copy_(xh[:, a:b])
            for i in range(TILE):
                for j in range(TILE):
                    d[TILE * i + j].copy_(pad[:, i:i + OUT * r:OUT, j:j + OUT * tw:OUT])
            torch.mm(self.bt, d.view(TILE * TILE, -1), out=v.view(TILE * TILE, -1))
            torch.bmm(v, self.u, out=m)
            torch.mm(self.at, m.view(TILE * TILE, -1), out=y)
            if self.bias is not None:
                y.view(-1, co).add_(self.bias)
            out[:, OUT * r0:OUT * (r0 + r)].view(B, r, OUT, tw, OUT, co).copy_(
                y.view(OUT, OUT, B, r, tw, co).permute(2, 3, 0, 4, 1, 5))
        if OUT * th != H or OUT * tw != W:
            out = out[:, :H, :W].contiguous()
        return out.permute(0, 3, 1, 2)
