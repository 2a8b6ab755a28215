"""SuperGlue's inference path: the score matrix with the checkpoint's weights folded once.

:class:`FusedSuperGlue` is built once, when the matcher loads its weights, from a
:class:`~slam.matching.superglue.SuperGlueNet` in eval mode. It is a snapshot: later changes to
the network's parameters are not seen (build a new one). What is folded:

* BatchNorm (running statistics) into the preceding linear layer of every MLP;
* the attention merge (output projection) into the first layer of the message MLP:
  ``W1 [x | Wm a + bm] + b1 = [W1x | W1m Wm] [x | a] + (b1 + W1m bm)``;
* query, key and value projections into one (3D, D) matrix per layer, rows permuted from the
  reference's interleaved head layout (channel ``d * H + h``) to head-major order;
* the score scaling ``1 / sqrt(D)`` into the final projection of both images (``D^-1/4`` each).

The layers run in the compute dtype (bf16 / fp16 / fp32); the residual stream, the final
projection and the score matrix stay fp32. Both images go through each layer as one batch of
``2B`` sets, the smaller set zero-padded (and masked out of attention) when N != M; a
cross-attention layer is the same attention with the key/value halves swapped.

Tested equal to the differentiable path of SuperGlueNet (tests/test_superglue.py).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def head_major(dim: int, num_heads: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """perm with perm[h * head_dim + d] = d * num_heads + h: the reference (interleaved) channel
    of each head-major channel. (dim,) int64."""
    head_dim = dim // num_heads
    return torch.arange(dim, device=device).view(head_dim, num_heads).t().reshape(-1)


def fold_mlp(seq: nn.Sequential) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Eval-mode Conv1d(k=1)/BatchNorm1d/ReLU MLP -> [(weight (C_out, C_in), bias (C_out,))] fp32
    with each BatchNorm folded into the linear layer before it; a ReLU follows every entry but
    the last."""
    out: list[list[torch.Tensor]] = []
    for layer in seq:
        if isinstance(layer, nn.Conv1d):
            out.append([layer.weight.detach().squeeze(-1).float(), layer.bias.detach().float()])
        elif isinstance(layer, nn.BatchNorm1d):
            scale = layer.weight.detach().float() / torch.sqrt(layer.running_var.float() + layer.eps)
            shift = layer.bias.detach().float() - layer.running_mean.float() * scale
            w, b = out[-1]
            out[-1] = [w * scale[:, None], b * scale + shift]
    return [(w, b) for w, b in out]


def _pad_points(x: torch.Tensor, mask: Optional[torch.Tensor], size: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """x (B, K, C) -> (B, size, C) with zero points appended; the mask (B, size) marks real points
    (None when nothing is padded and nothing was masked)."""
    b, k = x.shape[:2]
    if k == size:
        return x, mask
    real = torch.ones(b, k, dtype=torch.bool, device=x.device) if mask is None else mask
    pad = torch.zeros(b, size - k, dtype=torch.bool, device=x.device)
    return F.pad(x, (0, 0, 0, size - k)), torch.cat([real, pad], dim=1)


class FusedSuperGlue:
    """Score matrix of a SuperGlueNet for inference (no autograd), weights folded at construction.

    FusedSuperGlue(net, device, dtype): net in eval mode (BatchNorm running statistics are
    folded); dtype the compute dtype of the layers.
    Call with normalised keypoints kn0 (B, N, 2), scores s0 (B, N), descriptors desc0 (B, N, D),
    key mask mask0 (B, N) bool or None (True = real keypoint; None = all real), the same for
    image 1 (M points) -> scores (B, N, M) fp32, already divided by sqrt(D).
    """

    def __init__(self, net: nn.Module, device: torch.device, dtype: torch.dtype):
        if net.training:
            raise ValueError("FusedSuperGlue folds BatchNorm running statistics: build it from a network in eval mode")
        d, h = net.descriptor_dim, net.num_heads
        self.dim, self.num_heads, self.dtype, self.device = d, h, dtype, torch.device(device)
        self.kinds = list(net.gnn.names)
        perm = head_major(d, h)
        cast = lambda t: t.to(device=self.device, dtype=dtype).contiguous()  # noqa: E731
        with torch.no_grad():
            self.kenc = [(cast(w), cast(b)) for w, b in fold_mlp(net.kenc.encoder)]
            self.layers = []
            for layer in net.gnn.layers:
                attn = layer.attn
                w_qkv = torch.cat([p.weight.detach().squeeze(-1).float()[perm] for p in attn.proj], dim=0)
                b_qkv = torch.cat([p.bias.detach().float()[perm] for p in attn.proj], dim=0)
                (w1, b1), (w2, b2) = fold_mlp(layer.mlp)
                w_merge = attn.merge.weight.detach().squeeze(-1).float()[:, perm]
                w1x, w1m = w1[:, :d], w1[:, d:]
                w1_fused = torch.cat([w1x, w1m @ w_merge], dim=1)
                b1_fused = b1 + w1m @ attn.merge.bias.detach().float()
                self.layers.append(tuple(cast(t) for t in (w_qkv, b_qkv, w1_fused, b1_fused, w2, b2)))
            s = d ** -0.25
            fp = net.final_proj
            self.final = (fp.weight.detach().squeeze(-1).float().mul(s).to(self.device).contiguous(),
                          fp.bias.detach().float().mul(s).to(self.device).contiguous())

    def _encode(self, kn: torch.Tensor, s: torch.Tensor, desc: torch.Tensor) -> torch.Tensor:
        """desc + keypoint-encoder MLP(kn, s): (B, K, D) fp32."""
        z = torch.cat([kn, s.unsqueeze(-1).to(kn)], dim=-1).to(self.dtype)
        for i, (w, b) in enumerate(self.kenc):
            z = F.linear(z, w, b)
            if i < len(self.kenc) - 1:
                z = z.relu_()
        return desc.float() + z.float()

    @torch.no_grad()
    def __call__(self, kn0, s0, desc0, mask0, kn1, s1, desc1, mask1) -> torch.Tensor:
        d, h = self.dim, self.num_heads
        hd = d // h
        n, m = kn0.shape[1], kn1.shape[1]
        size = max(n, m)
        x0, mask0 = _pad_points(self._encode(kn0, s0, desc0), mask0, size)
        x1, mask1 = _pad_points(self._encode(kn1, s1, desc1), mask1, size)
        b = x0.shape[0]
        x = torch.cat([x0, x1], dim=0)  # (2B, K, D) fp32 residual stream: images 0, then images 1
        keys = swapped = None
        if mask0 is not None or mask1 is not None:
            full = torch.ones(b, size, dtype=torch.bool, device=x.device)
            a0 = full if mask0 is None else mask0
            a1 = full if mask1 is None else mask1
            keys = torch.cat([a0, a1])[:, None, None, :]
            swapped = torch.cat([a1, a0])[:, None, None, :]
        buf = x.new_empty((2 * b, size, 2 * d), dtype=self.dtype)  # [x | attention output]
        out = buf[..., d:].view(2 * b, size, h, hd)
        for (w_qkv, b_qkv, w1, b1, w2, b2), kind in zip(self.layers, self.kinds):
            xc = x.to(self.dtype)
            buf[..., :d].copy_(xc)
            q, k, v = F.linear(xc, w_qkv, b_qkv).view(2 * b, size, 3, h, hd).permute(2, 0, 3, 1, 4).contiguous()
            mask = keys
            if kind == "cross":  # each image attends to the other one
                k, v, mask = torch.cat([k[b:], k[:b]]), torch.cat([v[b:], v[:b]]), swapped
            out.copy_(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2))
            x = x.add_(F.linear(F.linear(buf, w1, b1).relu_(), w2, b2))
        w_f, b_f = self.final
        f0, f1 = F.linear(x[:b], w_f, b_f), F.linear(x[b:], w_f, b_f)
        return torch.matmul(f0, f1.transpose(1, 2))[:, :n, :m]
