"""3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3), for float32 on the CPU.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016. The image is cut
into 6x6 tiles that overlap by 2 (stride 4); each tile d and the filter g are transformed,
V = B^T d B and U = G g G^T, multiplied point by point and summed over the input channels, and
each tile's 4x4 output is Y = A^T M A. Per output the 3x3 filter's 9 multiplications become
36 / 16 = 2.25, so the sum over channels, a batch of 36 matrix products of (tiles, Cin) by
(Cin, Cout), does a quarter of a direct convolution's work. The two transforms are applied
along one tile axis at a time, with the common subexpressions of B^T and A^T (12 and 10
vectorised operations per axis over every tile of a chunk).

This CPU's direct float32 kernels run close to its peak, so only fewer multiplications make
LoFTR's backbone faster (docs/benchmarks.md section 16). The tiles are processed a few tile rows
at a time, so that the transformed tiles stay in cache.

Numerics: the transforms' interpolation points (0, +-1, +-2) amplify float32 rounding, about
5x a direct convolution's error (measured against float64 on LoFTR's layer sizes: 8e-6 to 1.1e-5
against oneDNN's 1.1e-6 to 2.3e-6, relative to the output's maximum). Float32 only; autocast and
other devices must not use it.
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


def _input_1d(d: list, out: list, tmp: list) -> None:
    """out[a] = sum_i B^T[a, i] d[i] for six equally shaped views d (one tile axis); tmp: 3 buffers."""
    t0, t1, u = tmp
    torch.add(d[4], d[2], alpha=-4, out=t0)
    torch.add(d[3], d[1], alpha=-4, out=t1)
    torch.add(t0, t1, out=out[1])
    torch.sub(t0, t1, out=out[2])
    torch.add(t0, d[0], alpha=4, out=out[0])
    out[0].sub_(d[2])
    torch.sub(d[4], d[2], out=t0)
    torch.sub(d[3], d[1], out=u)
    torch.add(t0, u, alpha=2, out=out[3])
    torch.add(t0, u, alpha=-2, out=out[4])
    torch.add(d[5], d[1], alpha=4, out=out[5])
    out[5].add_(d[3], alpha=-5)


def _output_1d(m: list, out: list, tmp: list) -> None:
    """out[i] = sum_a A^T[i, a] m[a] for six equally shaped views m (one tile axis); tmp: 3 buffers."""
    s12, d12, s34 = tmp
    torch.add(m[1], m[2], out=s12)
    torch.sub(m[1], m[2], out=d12)
    torch.add(m[3], m[4], out=s34)
    torch.add(s12, s34, out=out[0])
    out[0].add_(m[0])
    torch.add(s12, s34, alpha=4, out=out[2])
    torch.sub(m[3], m[4], out=s12)  # now m3 - m4
    torch.add(d12, s12, alpha=2, out=out[1])
    torch.add(d12, s12, alpha=8, out=out[3])
    out[3].add_(m[5])


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
        wp = OUT * tw + 2
        out = torch.empty(B, OUT * th, OUT * tw, co, dtype=torch.float32)
        # one chunk of zero-padded input: tile rows r0 .. r0+r need input rows 4 r0 - 1 .. 4 (r0+r) + 1
        pad = torch.zeros(B, OUT * rows + 2, wp, C, dtype=torch.float32)
        bufs: dict[int, tuple[torch.Tensor, ...]] = {}
        for r0 in range(0, th, rows):
            r = min(rows, th - r0)
            n = B * r * tw
            if r not in bufs:  # the last chunk may be shorter
                bufs[r] = (torch.empty(TILE, B, r, wp, C), torch.empty(3, B, r, wp, C),  # rows transformed
                           torch.empty(TILE, TILE, B, r, tw, C), torch.empty(3, TILE, B, r, tw, C),  # V
                           torch.empty(TILE * TILE, n, co),  # M
                           torch.empty(OUT, TILE, n, co), torch.empty(3, TILE, n, co), torch.empty(3, OUT, n, co))
            e, te, v, tv, m, z, tz, ty = bufs[r]
            lo, hi = OUT * r0 - 1, OUT * (r0 + r) + 1  # input rows of this chunk, [lo, hi)
            a, b = max(lo, 0), min(hi, H)
            pad[:, :a - lo].zero_()
            pad[:, b - lo:hi - lo].zero_()
            pad[:, a - lo:b - lo, 1:W + 1].copy_(xh[:, a:b])
            # V[a, b] = (B^T d B)[a, b] for every tile: along the tile rows, then along the columns
            _input_1d([pad[:, i:i + OUT * r:OUT] for i in range(TILE)], list(e), list(te))
            _input_1d([e[:, :, :, j:j + OUT * tw:OUT] for j in range(TILE)], [v[:, j] for j in range(TILE)], list(tv))
            torch.bmm(v.view(TILE * TILE, n, C), self.u, out=m)  # (36, tiles, Cout)
            # Y = A^T M A, the second pass written straight into the output's pixels
            _output_1d(list(m.view(TILE, TILE, n, co)), list(z), list(tz))
            dst = out[:, OUT * r0:OUT * (r0 + r)].view(B, r, OUT, tw, OUT, co).permute(2, 4, 0, 1, 3, 5)
            _output_1d([z[:, j].view(OUT, B, r, tw, co) for j in range(TILE)], [dst[:, j] for j in range(OUT)],
                       [t.view(OUT, B, r, tw, co) for t in ty])
        if self.bias is not None:
            out += self.bias
        if OUT * th != H or OUT * tw != W:
            out = out[:, :H, :W].contiguous()
        return out.permute(0, 3, 1, 2)
