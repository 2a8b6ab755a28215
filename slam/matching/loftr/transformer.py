"""LoFTR's positional encoding and linear-attention transformer.

Shapes: token sequences are (B, N, C); masks are (B, N) bool, True = a real token (False =
padding, which neither sends messages nor receives a meaningful one). Parameter names are those
of the official checkpoints (``loftr_coarse.layers.{i}.{q_proj,k_proj,v_proj,merge,mlp.0,mlp.2,
norm1,norm2}``, the same under ``loftr_fine``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def sine_position_encoding(d_model: int, h: int, w: int, temp_bug_fix: bool,
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, d_model, h, w) float32 2-D sinusoidal encoding of the cells of an h x w grid.

    Channel 4k holds sin(x f_k), 4k+1 cos(x f_k), 4k+2 sin(y f_k), 4k+3 cos(y f_k) with x, y the
    1-based column and row and f_k = exp(-2k ln(10000) / (d/2)), k < d/4. ``temp_bug_fix=False``
    reproduces the released code before its fix (zju3dv/LoFTR issue 41), where operator
    precedence turned the exponent into ``floor(-ln(10000) / d / 2) = -1``, i.e. f_k = exp(-2k);
    the older checkpoints were trained with it, indoor_ds_new.ckpt with the corrected one.
    """
    steps = torch.arange(0, d_model // 2, 2, device=device).float()
    if temp_bug_fix:
        freq = torch.exp(steps * (-math.log(10000.0) / (d_model // 2)))
    else:
        freq = torch.exp(steps * float(math.floor(-math.log(10000.0) / d_model / 2)))
    freq = freq[:, None, None]
    ys = torch.arange(1, h + 1, device=device, dtype=torch.float32)[None, :, None].expand(1, h, w)
    xs = torch.arange(1, w + 1, device=device, dtype=torch.float32)[None, None, :].expand(1, h, w)
    pe = torch.stack([torch.sin(xs * freq), torch.cos(xs * freq), torch.sin(ys * freq), torch.cos(ys * freq)], dim=1)
    return pe.reshape(1, d_model, h, w)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_mask: Optional[torch.Tensor],
                     kv_mask: Optional[torch.Tensor], eps: float = 1e-6) -> torch.Tensor:
    """Multi-head linear attention (Katharopoulos et al. 2020) with the feature map elu + 1.

    q (B, L, H, D), k and v (B, S, H, D), masks (B, L) / (B, S) or None. Returns (B, L, H, D):
    out_l = phi(q_l) (sum_s phi(k_s) v_s^T) / (phi(q_l) . sum_s phi(k_s) + eps), padded keys
    excluded, padded queries set to zero. In half precision the values are divided by S before
    the sums and the result multiplied back (as the reference does against fp16 overflow).
    """
    q = F.elu(q).add_(1.0)
    k = F.elu(k).add_(1.0)
    if q_mask is not None:
        q = q * q_mask[:, :, None, None].to(q.dtype)
    if kv_mask is not None:
        k = k * kv_mask[:, :, None, None].to(k.dtype)
        v = v * kv_mask[:, :, None, None].to(v.dtype)
    n_v = v.shape[1]
    half = v.dtype in (torch.float16, torch.bfloat16)
    if half:
        v = v / n_v
    qh = q.permute(0, 2, 1, 3)  # (B, H, L, D)
    kv = torch.matmul(k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3))  # (B, H, D, D)
    z = 1.0 / (torch.matmul(qh, k.sum(dim=1).unsqueeze(-1)) + eps)  # (B, H, L, 1)
    out = torch.matmul(qh, kv) * z
    if half:
        out = out * n_v
    return out.permute(0, 2, 1, 3)


class EncoderLayer(nn.Module):
    """x + norm2(mlp([x | norm1(merge(attention(x -> source)))]))."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.nhead = nhead
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.merge = nn.Linear(d_model, d_model, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * d_model, 2 * d_model, bias=False), nn.ReLU(True),
                                 nn.Linear(2 * d_model, d_model, bias=False))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, source: Optional[torch.Tensor] = None, x_mask: Optional[torch.Tensor] = None,
                source_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, C), source (B, S, C) or None for self-attention (source = x, source_mask = x_mask)."""
        b, n, c = x.shape
        if source is None:  # one product for the three projections
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight], 0)
            q, k, v = F.linear(x, w).chunk(3, dim=-1)
            source_mask = x_mask
        else:
            q = self.q_proj(x)
            k, v = F.linear(source, torch.cat([self.k_proj.weight, self.v_proj.weight], 0)).chunk(2, dim=-1)
        h = self.nhead
        msg = linear_attention(q.reshape(b, n, h, -1), k.reshape(b, k.shape[1], h, -1), v.reshape(b, v.shape[1], h, -1),
                               x_mask, source_mask)
        msg = self.norm1(self.merge(msg.reshape(b, n, c)))
        return x + self.norm2(self.mlp(torch.cat([x, msg], dim=-1)))


class LocalFeatureTransformer(nn.Module):
    """Alternating self- and cross-attention layers (``layers.{i}``) over two token sets.

    A self layer updates both sets from themselves (one batched call when their shapes agree); a
    cross layer updates set 0 from set 1, then set 1 from the *updated* set 0, as the reference.
    """

    def __init__(self, d_model: int, nhead: int, layer_names: Sequence[str]) -> None:
        super().__init__()
        self.d_model = d_model
        self.layer_names = tuple(layer_names)
        self.layers = nn.ModuleList([EncoderLayer(d_model, nhead) for _ in self.layer_names])
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, feat0: torch.Tensor, feat1: torch.Tensor, mask0: Optional[torch.Tensor] = None,
                mask1: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feat0 (B, L, C), feat1 (B, S, C), masks (B, L) / (B, S) bool or None -> updated feat0, feat1."""
        if feat0.shape[-1] != self.d_model or feat1.shape[-1] != self.d_model:
            raise ValueError(f"expected {self.d_model}-channel tokens, got {feat0.shape[-1]} and {feat1.shape[-1]}")
        stack = feat0.shape == feat1.shape and (mask0 is None) == (mask1 is None)
        both_mask = torch.cat([mask0, mask1], 0) if stack and mask0 is not None else None
        for layer, name in zip(self.layers, self.layer_names):
            if name == "self" and stack:
                feat0, feat1 = layer(torch.cat([feat0, feat1], 0), None, both_mask).chunk(2, dim=0)
            elif name == "self":
                feat0, feat1 = layer(feat0, None, mask0), layer(feat1, None, mask1)
            elif name == "cross":
                feat0 = layer(feat0, feat1, mask0, mask1)
                feat1 = layer(feat1, feat0, mask1, mask0)
            else:
                raise ValueError(f"unknown transformer layer type {name!r}; expected 'self' or 'cross'")
        return feat0, feat1
