"""SuperGlue feature matching middle-end (Sarlin, DeTone, Malisiewicz, Rabinovich, CVPR 2020).

Written from the paper; the module tree reproduces the state-dict key names of Magic Leap's
reference implementation (magicleap/SuperGluePretrainedNetwork, ``models/superglue.py``) so that
their ``superglue_indoor.pth`` / ``superglue_outdoor.pth`` load unchanged and give the same
outputs, and our own checkpoints (possibly smaller: the layer count comes from the checkpoint)
load the same way.

Pipeline for an image pair (A = image 0 with N keypoints, B = image 1 with M keypoints):

1. Keypoint encoder: positions normalised by the image size (centre at 0, unit = 0.7 * the longer
   side) and detection scores go through an MLP (Conv1d k=1 + BatchNorm + ReLU, like the
   reference) whose output is added to the visual descriptors.
2. Attentional graph network: ``2 * n_layers`` residual layers alternating self-attention (within
   an image) and cross-attention (to the other image). Each layer computes a message by multi-head
   attention (``torch.nn.functional.scaled_dot_product_attention``, scale 1/sqrt(head dim)) and
   updates ``x <- x + MLP([x | message])``.
3. Final linear projection, score matrix ``S = <f0_i, f1_j> / sqrt(D)``.
4. Optimal matching layer: S augmented with a learnable dustbin row and column (``bin_score``),
   Sinkhorn iterations in log space with marginals ``1/(N+M)`` per keypoint, ``M/(N+M)`` for
   the dustbin row and ``N/(N+M)`` for the dustbin column (``norm = -log(N+M)``); the result is
   shifted by ``-norm`` so ``exp(log_assignment)`` sums to 1 over each real row and column.
5. Mutual argmax over the real part with a confidence threshold; ``-1`` = unmatched.

Batches of pairs with different keypoint counts are padded and carry boolean masks: padded keys
are excluded from attention (``attn_mask``) and padded rows / columns get zero marginal mass in
Sinkhorn, so a padded result equals the unpadded one (up to float rounding).

Layout: all tensors are (B, N, C) ("points, channels last") internally; Conv1d weights (C_out,
C_in, 1) of the checkpoint are used as linear maps. The reference splits channels into heads
interleaved (channel ``c = d * num_heads + h``); we permute the projection weights to head-major
order at run time so the state dict stays the reference one.

Inference (module in eval mode and autograd off) runs a fused path: BatchNorm folded into the
preceding linear layer, the attention merge folded into the message MLP, one QKV projection per
image and layer, both images through each layer as one batch when their sizes match (on CUDA the
smaller set is padded to match), the compute dtype of ``SuperGlueConfig.precision`` with the
residual stream, final projection and score matrix in fp32; the prepared weights are cached and
rebuilt whenever a parameter changes. Its Sinkhorn computes the same iterates in the scaling
domain in float64 (two matrix-vector products per iteration), falling back to the log-space loop
for extreme logits. Training (or autograd on) runs the plain, differentiable path with the
checkpoint's modules and the log-space loop; with masks, BatchNorm statistics in training use
only real keypoints.

Equivalence with the reference is tested against a direct re-statement of the published maths
(reference layout, interleaved heads, unfused BatchNorm) with random weights in the official
key layout; Magic Leap's weight files themselves were not available when this was written.

Weights: never bundled. ``superglue_indoor`` / ``superglue_outdoor`` are Magic Leap's
(non-commercial licence, download them yourself); ``superglue_ours`` is trained with
``python tools/train_superglue.py``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slam.errors import WeightsError
from slam.matching.config import SuperGlueConfig
from slam.types import Features, Matches

log = logging.getLogger(__name__)

OFFICIAL_WEIGHTS = ("superglue_indoor", "superglue_outdoor")
OFFICIAL_URL = "https://github.com/magicleap/SuperGluePretrainedNetwork"


# ----------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------


def _conv_mlp(channels: Sequence[int]) -> nn.Sequential:
    """Conv1d(k=1) layers with BatchNorm1d + ReLU between them, indexed like the reference MLP."""
    layers: list[nn.Module] = []
    for i in range(1, len(channels)):
        layers.append(nn.Conv1d(channels[i - 1], channels[i], kernel_size=1, bias=True))
        if i < len(channels) - 1:
            layers.append(nn.BatchNorm1d(channels[i]))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """BatchNorm over the points of x (B, N, C); in training only the points where mask is True
    enter the statistics (padded points would bias them) and padded outputs are 0."""
    b, n, c = x.shape
    if bn.training and mask is not None and not bool(mask.all()):
        out = x.new_zeros(x.shape)
        out[mask] = bn(x[mask])
        return out
    return bn(x.reshape(b * n, c)).view(b, n, c)


def _run_mlp(seq: nn.Sequential, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Apply a reference-layout Conv1d MLP to x (B, N, C_in) -> (B, N, C_out), differentiably."""
    for layer in seq:
        if isinstance(layer, nn.Conv1d):
            x = F.linear(x, layer.weight.squeeze(-1), layer.bias)
        elif isinstance(layer, nn.BatchNorm1d):
            x = _batch_norm(layer, x, mask)
        else:
            x = torch.relu(x)
    return x


def _fold_mlp(seq: nn.Sequential) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Eval-mode MLP as a list of (weight (C_out, C_in), bias) with BatchNorm folded in; a ReLU
    follows every entry but the last. fp32."""
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


def normalize_keypoints(kpts: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """kpts (B, N, 2) pixels (x, y), image_size (B, 2) (width, height) pixels -> (B, N, 2)
    centred on the image centre and divided by 0.7 * max(width, height), as the reference."""
    size = image_size.to(kpts)
    center = size / 2
    scaling = size.max(dim=1, keepdim=True).values * 0.7
    return (kpts - center[:, None, :]) / scaling[:, None, :]


class KeypointEncoder(nn.Module):
    """MLP([3] + layers + [D]) on (x_norm, y_norm, score); its output is added to the descriptor."""

    def __init__(self, feature_dim: int, layers: Sequence[int]):
        super().__init__()
        self.encoder = _conv_mlp([3, *layers, feature_dim])
        nn.init.constant_(self.encoder[-1].bias, 0.0)

    def forward(self, kpts: torch.Tensor, scores: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """kpts (B, N, 2) normalised, scores (B, N) -> (B, N, D)."""
        inputs = torch.cat([kpts, scores.unsqueeze(-1).to(kpts)], dim=-1)
        return _run_mlp(self.encoder, inputs, mask)


class MultiHeadedAttention(nn.Module):
    """Holds the reference parameters: proj.0/1/2 = query/key/value, merge = output (Conv1d k=1)."""

    def __init__(self, num_heads: int, d_model: int):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"descriptor_dim {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dim = d_model // num_heads
        self.merge = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.proj = nn.ModuleList([nn.Conv1d(d_model, d_model, kernel_size=1) for _ in range(3)])


class AttentionalPropagation(nn.Module):
    def __init__(self, feature_dim: int, num_heads: int):
        super().__init__()
        self.attn = MultiHeadedAttention(num_heads, feature_dim)
        self.mlp = _conv_mlp([feature_dim * 2, feature_dim * 2, feature_dim])
        nn.init.constant_(self.mlp[-1].bias, 0.0)


class AttentionalGNN(nn.Module):
    """``2 * n_layers`` layers; even indices are self-attention, odd ones cross-attention."""

    def __init__(self, feature_dim: int, num_heads: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([AttentionalPropagation(feature_dim, num_heads) for _ in range(2 * n_layers)])
        self.names = ["self", "cross"] * n_layers


def _head_major(dim: int, num_heads: int, device: torch.device) -> torch.Tensor:
    """perm with perm[h * head_dim + d] = d * num_heads + h: reference (interleaved) channel of
    each head-major channel."""
    head_dim = dim // num_heads
    return torch.arange(dim, device=device).view(head_dim, num_heads).t().reshape(-1)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: Optional[torch.Tensor], num_heads: int) -> torch.Tensor:
    """Multi-head attention. q (B, N, D), k/v (B, M, D) with head-major channels, key_mask (B, M)
    bool (True = real key) or None -> (B, N, D) head-major. Scale 1/sqrt(D / num_heads)."""
    b, n, d = q.shape
    m = k.shape[1]
    hd = d // num_heads
    q = q.view(b, n, num_heads, hd).transpose(1, 2)
    k = k.view(b, m, num_heads, hd).transpose(1, 2)
    v = v.view(b, m, num_heads, hd).transpose(1, 2)
    attn_mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return out.transpose(1, 2).reshape(b, n, d)


def _sinkhorn_marginals(b: int, n: int, m: int, mask0: Optional[torch.Tensor], mask1: Optional[torch.Tensor],
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log_mu (B, N+1), log_nu (B, M+1), norm (B,) for per-sample keypoint counts; padded rows and
    columns get log-mass -inf (zero mass)."""
    f32 = torch.float32
    valid0 = torch.ones(b, n, dtype=torch.bool, device=device) if mask0 is None else mask0
    valid1 = torch.ones(b, m, dtype=torch.bool, device=device) if mask1 is None else mask1
    n_real = valid0.sum(1).to(f32)
    m_real = valid1.sum(1).to(f32)
    total = n_real + m_real
    norm = -torch.log(total.clamp_min(1.0))
    neg_inf = torch.tensor(float("-inf"), device=device, dtype=f32)
    # a sample with no keypoint at all keeps its (only) mass on the dustbin-dustbin corner
    log_m = torch.where(total > 0, torch.log(m_real), torch.zeros_like(m_real))
    log_n = torch.where(total > 0, torch.log(n_real), torch.zeros_like(n_real))
    log_mu = torch.cat([torch.where(valid0, norm[:, None], neg_inf), (log_m + norm)[:, None]], dim=1)
    log_nu = torch.cat([torch.where(valid1, norm[:, None], neg_inf), (log_n + norm)[:, None]], dim=1)
    return log_mu, log_nu, norm


def log_optimal_transport(scores: torch.Tensor, bin_score: torch.Tensor, iters: int,
                          mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Optimal matching layer.

    scores (B, N, M) float, bin_score scalar tensor (the learnable dustbin score), mask0 (B, N) /
    mask1 (B, M) bool or None (True = real keypoint). Returns the log assignment (B, N+1, M+1)
    float32: log of the transport plan times (n + m) for each sample's real counts n, m, so each
    real row and column sums to 1 in probability, the dustbin row to m and the dustbin column to n.
    Padded rows / columns are -inf. Sinkhorn runs in log space in fp32 (differentiable); without
    autograd the same iterates are computed in the scaling domain in float64 (faster, see
    _log_sinkhorn_scaling), falling back to the log-space loop for extreme logits.
    """
    b, n, m = scores.shape
    scores = scores.float()
    alpha = bin_score.float().reshape(())
    couplings = torch.cat([
        torch.cat([scores, alpha.expand(b, n, 1)], dim=2),
        torch.cat([alpha.expand(b, 1, m), alpha.expand(b, 1, 1)], dim=2),
    ], dim=1)
    log_mu, log_nu, norm = _sinkhorn_marginals(b, n, m, mask0, mask1, scores.device)
    # duals start at 0, and at -inf for zero-mass (padded) rows / columns so that padding has
    # no influence even on the first iteration
    u = torch.zeros_like(log_mu).masked_fill_(torch.isneginf(log_mu), float("-inf"))
    v = torch.zeros_like(log_nu).masked_fill_(torch.isneginf(log_nu), float("-inf"))
    duals = None
    if not torch.is_grad_enabled():
        duals = _log_sinkhorn_scaling(couplings, log_mu, log_nu, u, v, iters)
    u, v = duals if duals is not None else _log_sinkhorn(couplings, log_mu, log_nu, u, v, iters)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm[:, None, None]


def _log_sinkhorn(z: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                  iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-space Sinkhorn: u = log_mu - LSE_j(z_ij + v_j), v = log_nu - LSE_i(z_ij + u_i).
    z (B, N+1, M+1); log_mu, u (B, N+1); log_nu, v (B, M+1). Differentiable."""
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(z + u.unsqueeze(2), dim=1)
    return u, v


def _log_sinkhorn_scaling(z: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                          iters: int) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The iterates of _log_sinkhorn in the scaling domain, float64, without autograd.

    With c_i = max_j z_ij, K = exp(z - c), a = exp(u + c), b = exp(v) the log-space updates are
    exactly a = mu / (K b) and b = nu / (K^T a): two matrix-vector products and two divisions per
    iteration, few kernels (this matters on CUDA). Returns (u, v) = (log a - c, log b), or None
    when a scaling left the range where float64 is exact to rounding (|log a|, |log b| > 300:
    terms of K that underflow, below e^-745, could then matter), in which case the caller runs
    the log-space loop. Realistic logits stay far inside that range.
    """
    if iters <= 0:
        return u, v
    zd = z.double()
    c = zd.amax(dim=2, keepdim=True)  # finite: every row has the finite dustbin entry
    k = zd.sub_(c).exp_()  # (B, N+1, M+1) in [0, 1], each row's max is 1
    mu, nu = log_mu.double().exp(), log_nu.double().exp()  # zero for padded rows / columns
    b = v.double().exp()
    tiny = 1e-300  # keeps 0 / 0 at padded entries from turning into NaN
    for _ in range(iters):
        a = mu / torch.bmm(k, b.unsqueeze(2)).squeeze(2).clamp_min_(tiny)
        b = nu / torch.bmm(a.unsqueeze(1), k).squeeze(1).clamp_min_(tiny)
    log_a, log_b = a.log(), b.log()
    live_r, live_c = mu > 0, nu > 0
    bad = ((log_a.abs() > 300) & live_r).any() | ((log_b.abs() > 300) & live_c).any()
    if bool(bad):
        return None
    return (log_a - c.squeeze(2)).float(), log_b.float()


def mutual_matches(log_assignment: torch.Tensor, threshold: float,
                   mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """Mutual argmax over the real part of log_assignment (B, N+1, M+1).

    Returns matches0 (B, N) int64 (index into image 1, -1 unmatched), matching_scores0 (B, N)
    float32 (exp of the assignment for mutual best matches, else 0 — as the reference, a mutual
    match below the threshold keeps its score but gets -1), matches1 (B, M), matching_scores1.
    """
    s = log_assignment[:, :-1, :-1]
    b, n, m = s.shape
    if n == 0 or m == 0:
        return {
            "matches0": torch.full((b, n), -1, dtype=torch.long, device=s.device),
            "matching_scores0": s.new_zeros((b, n)),
            "matches1": torch.full((b, m), -1, dtype=torch.long, device=s.device),
            "matching_scores1": s.new_zeros((b, m)),
        }
    max0, idx0 = s.max(dim=2)
    max1, idx1 = s.max(dim=1)
    mutual0 = torch.arange(n, device=s.device)[None] == idx1.gather(1, idx0)
    mutual1 = torch.arange(m, device=s.device)[None] == idx0.gather(1, idx1)
    if mask0 is not None:
        mutual0 = mutual0 & mask0
    if mask1 is not None:
        mutual1 = mutual1 & mask1
    zero = s.new_zeros(())
    mscores0 = torch.where(mutual0, max0.exp(), zero)
    mscores1 = torch.where(mutual1, mscores0.gather(1, idx1), zero)
    valid0 = mutual0 & (mscores0 > threshold)
    valid1 = mutual1 & valid0.gather(1, idx1)
    return {
        "matches0": torch.where(valid0, idx0, torch.full_like(idx0, -1)),
        "matching_scores0": mscores0,
        "matches1": torch.where(valid1, idx1, torch.full_like(idx1, -1)),
        "matching_scores1": mscores1,
    }


class SuperGlueNet(nn.Module):
    """The SuperGlue network. Attribute names give exactly the reference state-dict keys:
    ``kenc.encoder.{i}.*``, ``gnn.layers.{l}.attn.merge.*``, ``gnn.layers.{l}.attn.proj.{0,1,2}.*``,
    ``gnn.layers.{l}.mlp.{0,1,3}.*``, ``final_proj.*``, ``bin_score``.

    descriptor_dim: D; n_layers: pairs of self+cross layers (official 9); num_heads (official 4);
    keypoint_encoder: hidden widths (official [32, 64, 128, 256]).
    """

    def __init__(self, descriptor_dim: int = 256, n_layers: int = 9, num_heads: int = 4,
                 keypoint_encoder: Sequence[int] = (32, 64, 128, 256), sinkhorn_iterations: int = 20,
                 match_threshold: float = 0.2):
        super().__init__()
        self.descriptor_dim = int(descriptor_dim)
        self.n_layers = int(n_layers)
        self.num_heads = int(num_heads)
        self.keypoint_encoder = [int(c) for c in keypoint_encoder]
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.match_threshold = float(match_threshold)
        # dtype of the fused inference path (None = parameter dtype); Sinkhorn is always fp32
        self.compute_dtype: Optional[torch.dtype] = None

        self.kenc = KeypointEncoder(self.descriptor_dim, self.keypoint_encoder)
        self.gnn = AttentionalGNN(self.descriptor_dim, self.num_heads, self.n_layers)
        self.final_proj = nn.Conv1d(self.descriptor_dim, self.descriptor_dim, kernel_size=1, bias=True)
        self.register_parameter("bin_score", nn.Parameter(torch.tensor(1.0)))
        self._prepared: Optional[tuple[Any, dict]] = None
        self._tensors: Optional[list[torch.Tensor]] = None

    # -- configuration / checkpoints -----------------------------------------------------------

    def architecture(self) -> dict:
        """The constructor arguments that fix the parameter shapes (saved in our checkpoints)."""
        return {
            "descriptor_dim": self.descriptor_dim,
            "n_layers": self.n_layers,
            "num_heads": self.num_heads,
            "keypoint_encoder": list(self.keypoint_encoder),
        }

    def checkpoint(self, **extra: Any) -> dict:
        """Our checkpoint format: {"config": architecture(), "state_dict": ..., **extra}."""
        return {"config": self.architecture(), "state_dict": self.state_dict(), **extra}

    # -- forward -------------------------------------------------------------------------------

    def forward(self, data: dict) -> dict:
        """Match batched keypoint sets.

        data: kpts0 (B, N, 2) float pixels (x, y); scores0 (B, N) detection scores; desc0 (B, N, D)
        float descriptors (L2-normalised for SuperPoint); mask0 (B, N) bool, True = real keypoint
        (optional, default all real); image_size0 (B, 2) (width, height) pixels; the same with
        suffix 1 for the second image (M keypoints). Optional: sinkhorn_iterations (int),
        match_threshold (float) overriding the module's.

        Returns log_assignment (B, N+1, M+1) float32 (dustbins last; padded entries -inf),
        matches0 (B, N) int64 index into image 1 or -1, matching_scores0 (B, N) float32,
        matches1 (B, M) int64 index into image 0 or -1, matching_scores1 (B, M) float32.
        """
        kpts0, kpts1 = data["kpts0"], data["kpts1"]
        desc0, desc1 = data["desc0"], data["desc1"]
        b, n = kpts0.shape[:2]
        m = kpts1.shape[1]
        iters = int(data.get("sinkhorn_iterations", self.sinkhorn_iterations))
        threshold = float(data.get("match_threshold", self.match_threshold))
        if desc0.shape[-1] != self.descriptor_dim or desc1.shape[-1] != self.descriptor_dim:
            raise ValueError(f"SuperGlue expects descriptors of dim {self.descriptor_dim} in (B, N, D) layout, "
                             f"got desc0 {tuple(desc0.shape)} and desc1 {tuple(desc1.shape)}")
        mask0, mask1 = data.get("mask0"), data.get("mask1")
        mask0 = None if mask0 is None else mask0.to(torch.bool)
        mask1 = None if mask1 is None else mask1.to(torch.bool)

        if n == 0 or m == 0:  # nothing to attend to: all mass goes to the dustbins
            la = log_optimal_transport(desc0.new_zeros((b, n, m), dtype=torch.float32), self.bin_score, iters, mask0, mask1)
            return {"log_assignment": la, **mutual_matches(la, threshold)}

        # Attention masks: None when nothing is padded (fastest SDPA path). A sample whose other
        # image has no real keypoint would attend to nothing (NaN); it attends to its padding
        # instead — harmless, Sinkhorn's masks give it no mass.
        amask0 = self._attention_mask(mask0)
        amask1 = self._attention_mask(mask1)

        kn0 = normalize_keypoints(kpts0, data["image_size0"])
        kn1 = normalize_keypoints(kpts1, data["image_size1"])
        fast = not self.training and not torch.is_grad_enabled()
        if fast:
            scores = self._scores_fused(kn0, data["scores0"], desc0, amask0, kn1, data["scores1"], desc1, amask1)
        else:
            scores = self._scores_plain(kn0, data["scores0"], desc0, mask0, amask0, kn1, data["scores1"], desc1, mask1, amask1)

        la = log_optimal_transport(scores, self.bin_score, iters, mask0, mask1)
        return {"log_assignment": la, **mutual_matches(la, threshold, mask0, mask1)}

    @staticmethod
    def _attention_mask(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if mask is None or bool(mask.all()):
            return None
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            mask = mask | empty[:, None]
        return mask

    def _scores_plain(self, kn0, s0, desc0, mask0, amask0, kn1, s1, desc1, mask1, amask1) -> torch.Tensor:
        """Differentiable path (training): the checkpoint's modules as they are."""
        x0 = desc0 + self.kenc(kn0, s0, mask0)
        x1 = desc1 + self.kenc(kn1, s1, mask1)
        d, h = self.descriptor_dim, self.num_heads
        perm = _head_major(d, h, x0.device)
        for layer, name in zip(self.gnn.layers, self.gnn.names):
            attn = layer.attn
            w_qkv = torch.cat([p.weight.squeeze(-1)[perm] for p in attn.proj], dim=0)
            b_qkv = torch.cat([p.bias[perm] for p in attn.proj], dim=0)
            q0, k0, v0 = F.linear(x0, w_qkv, b_qkv).split(d, dim=-1)
            q1, k1, v1 = F.linear(x1, w_qkv, b_qkv).split(d, dim=-1)
            if name == "cross":
                a0 = _attend(q0, k1, v1, amask1, h)
                a1 = _attend(q1, k0, v0, amask0, h)
            else:
                a0 = _attend(q0, k0, v0, amask0, h)
                a1 = _attend(q1, k1, v1, amask1, h)
            w_merge = attn.merge.weight.squeeze(-1)[:, perm]
            msg0 = F.linear(a0, w_merge, attn.merge.bias)
            msg1 = F.linear(a1, w_merge, attn.merge.bias)
            delta0 = _run_mlp(layer.mlp, torch.cat([x0, msg0], dim=-1), mask0)
            delta1 = _run_mlp(layer.mlp, torch.cat([x1, msg1], dim=-1), mask1)
            x0, x1 = x0 + delta0, x1 + delta1
        w_f, b_f = self.final_proj.weight.squeeze(-1), self.final_proj.bias
        m0, m1 = F.linear(x0, w_f, b_f), F.linear(x1, w_f, b_f)
        return torch.matmul(m0, m1.transpose(1, 2)) / self.descriptor_dim ** 0.5

    # -- fused inference path ------------------------------------------------------------------

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .half(), ...: new tensors
        self._prepared = None
        self._tensors = None
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        self._prepared = None
        return super().train(mode)

    def _weights_version(self) -> int:
        """Changes whenever a parameter or buffer is modified in place (optimiser step,
        load_state_dict, manual edits): version counters only grow."""
        if self._tensors is None:
            self._tensors = list(self.parameters()) + list(self.buffers())
        try:
            return sum(t._version for t in self._tensors)
        except RuntimeError:  # inference tensors carry no version counter
            return -1

    def _prepare(self, device: torch.device, dtype: torch.dtype) -> dict:
        """Folded weights for inference, cached until a parameter/buffer changes."""
        key = (device, dtype, self._weights_version())
        if self._prepared is not None and self._prepared[0] == key:
            return self._prepared[1]
        d, h = self.descriptor_dim, self.num_heads
        perm = _head_major(d, h, device)
        cast = lambda t: t.to(device=device, dtype=dtype).contiguous()  # noqa: E731
        with torch.no_grad():
            kenc = [(cast(w), cast(bb)) for w, bb in _fold_mlp(self.kenc.encoder)]
            layers = []
            for layer in self.gnn.layers:
                attn = layer.attn
                w_qkv = torch.cat([p.weight.detach().squeeze(-1).float()[perm] for p in attn.proj], dim=0)
                b_qkv = torch.cat([p.bias.detach().float()[perm] for p in attn.proj], dim=0)
                (w1, b1), (w2, b2) = _fold_mlp(layer.mlp)
                w_merge = attn.merge.weight.detach().squeeze(-1).float()[:, perm]
                b_merge = attn.merge.bias.detach().float()
                # MLP([x | merge(a)]) first layer: W1x x + W1m (Wm a + bm) + b1 = [W1x | W1m Wm] [x | a] + b'
                w1x, w1m = w1[:, :d], w1[:, d:]
                w1_fused = torch.cat([w1x, w1m @ w_merge], dim=1)
                b1_fused = b1 + w1m @ b_merge
                layers.append((cast(w_qkv), cast(b_qkv), cast(w1_fused), cast(b1_fused), cast(w2), cast(b2)))
            # fold the 1/sqrt(D) score scaling into the final projection of both images; the
            # projection and the score matrix stay in fp32 (cheap, and the logits keep their precision)
            s = d ** -0.25
            f32 = lambda t: t.to(device=device, dtype=torch.float32).contiguous()  # noqa: E731
            final = (f32(self.final_proj.weight.detach().squeeze(-1).float() * s), f32(self.final_proj.bias.detach().float() * s))
        prepared = {"kenc": kenc, "layers": layers, "final": final}
        self._prepared = (key, prepared)
        return prepared

    def _resolve_compute_dtype(self, device: torch.device) -> torch.dtype:
        if self.compute_dtype is not None:
            return self.compute_dtype
        return self.final_proj.weight.dtype

    def _scores_fused(self, kn0, s0, desc0, amask0, kn1, s1, desc1, amask1) -> torch.Tensor:
        """Inference path -> scores (B, N, M) fp32 (already divided by sqrt(D))."""
        device = desc0.device
        dtype = self._resolve_compute_dtype(device)
        p = self._prepare(device, dtype)

        def encode(kn, s, desc):
            z = torch.cat([kn, s.unsqueeze(-1).to(kn)], dim=-1).to(dtype)
            last = len(p["kenc"]) - 1
            for i, (w, bb) in enumerate(p["kenc"]):
                z = F.linear(z, w, bb)
                if i < last:
                    z = z.relu_()
            return desc.float() + z.float()  # the residual stream stays fp32

        x0 = encode(kn0, s0, desc0)
        x1 = encode(kn1, s1, desc1)
        b, n, m = x0.shape[0], x0.shape[1], x1.shape[1]
        if n != m and self.pad_to_stack(device):
            size = max(n, m)
            x0, amask0 = _pad_points(x0, amask0, size)
            x1, amask1 = _pad_points(x1, amask1, size)
        if x0.shape[1] == x1.shape[1]:
            x0, x1 = self._gnn_stacked(p, torch.cat([x0, x1], dim=0), amask0, amask1, dtype)
        else:
            x0, x1 = self._gnn_two_streams(p, x0, x1, amask0, amask1, dtype)
        w_f, b_f = p["final"]
        m0 = F.linear(x0, w_f, b_f)
        m1 = F.linear(x1, w_f, b_f)
        return torch.matmul(m0, m1.transpose(1, 2))[:, :n, :m]

    @staticmethod
    def pad_to_stack(device: torch.device) -> bool:
        """Whether to pad two keypoint sets of different sizes to a common size so both images go
        through each layer as one batch: on CUDA (fewer, larger kernels), not on CPU (the padding
        would be computed for nothing)."""
        return device.type == "cuda"

    def _gnn_stacked(self, p: dict, x: torch.Tensor, amask0, amask1, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Both images in one batch x (2B, K, D) fp32: images 0 are x[:B], images 1 x[B:]."""
        d, h = self.descriptor_dim, self.num_heads
        hd = d // h
        b2, k = x.shape[:2]
        b = b2 // 2
        if amask0 is None and amask1 is None:
            self_mask = m0 = m1 = None
        else:
            full = torch.ones(b, k, dtype=torch.bool, device=x.device)
            a0 = full if amask0 is None else amask0
            a1 = full if amask1 is None else amask1
            self_mask = torch.cat([a0, a1], dim=0)[:, None, None, :]
            m0, m1 = a0[:, None, None, :], a1[:, None, None, :]
        buf = x.new_empty((b2, k, 2 * d), dtype=dtype)  # [x | attention output], the message-MLP input
        out = buf[..., d:].view(b2, k, h, hd)
        for (w_qkv, b_qkv, w1, b1, w2, b2_), name in zip(p["layers"], self.gnn.names):
            xc = x.to(dtype)
            buf[..., :d].copy_(xc)
            q, kk, v = F.linear(xc, w_qkv, b_qkv).view(b2, k, 3, h, hd).permute(2, 0, 3, 1, 4).contiguous()
            if name == "cross":
                out[:b].copy_(F.scaled_dot_product_attention(q[:b], kk[b:], v[b:], attn_mask=m1).transpose(1, 2))
                out[b:].copy_(F.scaled_dot_product_attention(q[b:], kk[:b], v[:b], attn_mask=m0).transpose(1, 2))
            else:
                out.copy_(F.scaled_dot_product_attention(q, kk, v, attn_mask=self_mask).transpose(1, 2))
            x = x.add_(F.linear(F.linear(buf, w1, b1).relu_(), w2, b2_))
        return x[:b], x[b:]

    def _gnn_two_streams(self, p: dict, x0: torch.Tensor, x1: torch.Tensor, amask0, amask1, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Images 0 (B, N, D) and 1 (B, M, D), fp32, N != M, through the layers side by side."""
        d, h = self.descriptor_dim, self.num_heads
        hd = d // h
        b, n, m = x0.shape[0], x0.shape[1], x1.shape[1]
        am0 = None if amask0 is None else amask0[:, None, None, :]
        am1 = None if amask1 is None else amask1[:, None, None, :]
        buf0 = x0.new_empty((b, n, 2 * d), dtype=dtype)
        buf1 = x1.new_empty((b, m, 2 * d), dtype=dtype)
        out0 = buf0[..., d:].view(b, n, h, hd)
        out1 = buf1[..., d:].view(b, m, h, hd)

        def qkv(xc, w, bias, k):
            # (B, K, 3D) -> (3, B, H, K, hd) contiguous, the layout SDPA is fastest on
            return F.linear(xc, w, bias).view(b, k, 3, h, hd).permute(2, 0, 3, 1, 4).contiguous()

        for (w_qkv, b_qkv, w1, b1, w2, b2), name in zip(p["layers"], self.gnn.names):
            xc0, xc1 = x0.to(dtype), x1.to(dtype)  # contiguous operands for the QKV GEMM
            buf0[..., :d].copy_(xc0)
            buf1[..., :d].copy_(xc1)
            q0, k0, v0 = qkv(xc0, w_qkv, b_qkv, n)
            q1, k1, v1 = qkv(xc1, w_qkv, b_qkv, m)
            if name == "cross":
                out0.copy_(F.scaled_dot_product_attention(q0, k1, v1, attn_mask=am1).transpose(1, 2))
                out1.copy_(F.scaled_dot_product_attention(q1, k0, v0, attn_mask=am0).transpose(1, 2))
            else:
                out0.copy_(F.scaled_dot_product_attention(q0, k0, v0, attn_mask=am0).transpose(1, 2))
                out1.copy_(F.scaled_dot_product_attention(q1, k1, v1, attn_mask=am1).transpose(1, 2))
            x0 = x0.add_(F.linear(F.linear(buf0, w1, b1).relu_(), w2, b2))
            x1 = x1.add_(F.linear(F.linear(buf1, w1, b1).relu_(), w2, b2))
        return x0, x1


def _pad_points(x: torch.Tensor, mask: Optional[torch.Tensor], size: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Pad x (B, K, C) with zero points to (B, size, C); the mask marks the real points."""
    b, k = x.shape[:2]
    if k == size:
        return x, mask
    real = torch.ones(b, k, dtype=torch.bool, device=x.device) if mask is None else mask
    pad = torch.zeros(b, size - k, dtype=torch.bool, device=x.device)
    return F.pad(x, (0, 0, 0, size - k)), torch.cat([real, pad], dim=1)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _strip_prefixes(sd: dict) -> dict:
    for prefix in ("module.", "superglue.", "matcher.", "net."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a SuperGlue checkpoint -> (state_dict, config).

    Accepted formats: a plain state dict (Magic Leap's .pth files) or our dict
    {"config": {descriptor_dim, n_layers, num_heads, keypoint_encoder, ...}, "state_dict": ...}
    ("model" is accepted for "state_dict"). A "module." prefix (DataParallel) is stripped.
    """
    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable/corrupt/not a torch file
        raise WeightsError(f"cannot read SuperGlue checkpoint {path}: {exc}. "
                                    f"Re-download or re-train it (python tools/train_superglue.py).") from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a SuperGlue state dict or checkpoint dict")
    cfg: dict = {}
    if "state_dict" in obj or "model" in obj:
        sd = obj.get("state_dict", obj.get("model"))
        cfg = dict(obj.get("config") or {})
    else:
        sd = obj
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: the state dict must map parameter names to tensors")
    return _strip_prefixes(dict(sd)), cfg


def architecture_from_state_dict(sd: dict, fallback: dict, source: str = "state dict") -> dict:
    """Infer descriptor_dim, n_layers and keypoint_encoder from parameter shapes; num_heads (not
    visible in shapes) comes from ``fallback``. Missing evidence falls back to ``fallback``."""
    arch = dict(fallback)
    w = sd.get("final_proj.weight")
    if isinstance(w, torch.Tensor) and w.ndim >= 2:
        arch["descriptor_dim"] = int(w.shape[0])
    layer_ids = {int(k.split(".")[2]) for k in sd if k.startswith("gnn.layers.") and k.split(".")[2].isdigit()}
    if layer_ids:
        count = max(layer_ids) + 1
        if count % 2:
            raise WeightsError(f"{source}: {count} GNN layers; SuperGlue needs pairs of self+cross layers (an even count)")
        arch["n_layers"] = count // 2
    conv_ids = sorted(int(k.split(".")[2]) for k in sd
                      if k.startswith("kenc.encoder.") and k.endswith(".weight") and sd[k].ndim == 3)
    if conv_ids:
        outs = [int(sd[f"kenc.encoder.{i}.weight"].shape[0]) for i in conv_ids]
        arch["keypoint_encoder"] = outs[:-1]
    return arch


def load_weights(net: SuperGlueNet, sd: dict, source: str = "state dict") -> None:
    """Load a state dict strictly with clear errors: missing keys, unexpected keys and shape
    mismatches are listed by name. BatchNorm ``num_batches_tracked`` may be absent."""
    sd = _strip_prefixes(dict(sd))
    expected = net.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)} vs network {tuple(expected[k].shape)}"
             for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): {'; '.join(wrong[:8])}{' ...' if len(wrong) > 8 else ''}")
    if problems:
        arch = net.architecture()
        raise WeightsError(
            f"{source} does not fit SuperGlue({', '.join(f'{k}={v}' for k, v in arch.items())}): "
            + " | ".join(problems)
            + ". Use a SuperGlue checkpoint (Magic Leap's superglue_indoor/outdoor.pth or one written by "
              "tools/train_superglue.py) and, for our own checkpoints, keep its 'config' entry.")
    net.load_state_dict(sd, strict=False)


def weights_search_dirs() -> list[Path]:
    """$SLAM_WEIGHTS_DIR, ~/.cache/slam/weights, then the package's slam/weights folder."""
    dirs = []
    env = os.environ.get("SLAM_WEIGHTS_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.home() / ".cache" / "slam" / "weights")
    dirs.append(Path(__file__).resolve().parents[1] / "weights")
    return dirs


def _missing_weights_message(spec: str, detail: str = "") -> str:
    looked = ", ".join(str(d) for d in weights_search_dirs())
    msg = f"SuperGlue weights '{spec}' not found (looked in {looked})."
    if detail:
        msg += f" ({detail})"
    if spec in OFFICIAL_WEIGHTS:
        msg += (f" The official weights are Magic Leap's (non-commercial licence, not bundled): download "
                f"models/weights/{spec}.pth from {OFFICIAL_URL} into ~/.cache/slam/weights/ (or $SLAM_WEIGHTS_DIR),"
                f" or pass superglue.weights=/path/to/{spec}.pth.")
    else:
        msg += (" Train our own with `python tools/train_superglue.py` (it writes superglue_ours.pth), or use "
                f"Magic Leap's superglue.weights=superglue_indoor|superglue_outdoor (non-commercial; download from {OFFICIAL_URL}).")
    return msg


def resolve_superglue_weights(spec: str) -> Path:
    """Weights name or path -> existing file path, else WeightsError saying where to get it.

    A spec that looks like a path (has a directory part or a .pth/.pt/.ckpt suffix) must exist.
    Names go through slam.weights.resolve_weights when that module exists, then through
    weights_search_dirs() as ``<name>.pth``.
    """
    if not spec:
        raise WeightsError("superglue.weights is empty; " + _missing_weights_message("superglue_ours"))
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    looks_like_path = path.suffix in (".pth", ".pt", ".ckpt", ".tar") or len(path.parts) > 1
    if looks_like_path:
        raise WeightsError(f"SuperGlue weights file {path} does not exist. " + _missing_weights_message(path.stem))
    detail = ""
    try:
        from slam.weights import resolve_weights  # written by another module; optional
    except ImportError:
        resolve_weights = None
    if resolve_weights is not None:
        try:
            found = resolve_weights(spec)
            if found is not None and Path(found).is_file():
                return Path(found)
        except (FileNotFoundError, KeyError, ValueError, RuntimeError) as exc:
            detail = str(exc)
    for d in weights_search_dirs():
        for suffix in (".pth", ".pt"):
            cand = d / f"{spec}{suffix}"
            if cand.is_file():
                return cand
    raise WeightsError(_missing_weights_message(spec, detail))


# ----------------------------------------------------------------------------------------------
# Matcher
# ----------------------------------------------------------------------------------------------


def _resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    p = (precision or "auto").lower()
    if p == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if p not in table:
        raise ValueError(f"superglue.precision={precision!r} is not valid; choose auto, fp32, fp16 or bf16")
    if table[p] == torch.float16 and device.type == "cpu":
        raise ValueError("superglue.precision=fp16 is for CUDA; on CPU use fp32 or bf16")
    return table[p]


class SuperGlue:
    """SuperGlue behind the Matcher protocol.

    SuperGlue(cfg, device, state_dict=None): with state_dict None the weights come from
    cfg.weights (path or registered name); a given state_dict (or a checkpoint dict with
    "config" and "state_dict") is used instead, e.g. for tests and benchmarks. The architecture
    (descriptor_dim, n_layers, keypoint_encoder, num_heads) is taken from the checkpoint where it
    says, else from cfg.
    """

    name = "superglue"

    def __init__(self, cfg: Optional[SuperGlueConfig] = None, device: torch.device | str = "cpu",
                 state_dict: Optional[dict] = None):
        self.cfg = cfg or SuperGlueConfig()
        self.device = torch.device(device)
        base = {"descriptor_dim": self.cfg.descriptor_dim, "n_layers": self.cfg.n_layers,
                "num_heads": self.cfg.num_heads, "keypoint_encoder": list(self.cfg.keypoint_encoder)}
        if state_dict is None:
            path = resolve_superglue_weights(self.cfg.weights)
            sd, ckpt_cfg = read_checkpoint(path)
            source = str(path)
        elif "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
            sd, ckpt_cfg, source = state_dict["state_dict"], dict(state_dict.get("config") or {}), "given checkpoint"
        else:
            sd, ckpt_cfg, source = state_dict, {}, "given state dict"
        sd = _strip_prefixes(dict(sd))
        arch = dict(base)
        arch.update({k: ckpt_cfg[k] for k in base if k in ckpt_cfg})
        arch = architecture_from_state_dict(sd, arch, source)
        if arch != base:
            log.info("SuperGlue architecture from %s: %s", source, arch)
        self.net = SuperGlueNet(**arch, sinkhorn_iterations=self.cfg.sinkhorn_iterations,
                                match_threshold=self.cfg.match_threshold)
        load_weights(self.net, sd, source)
        self.net.eval().to(self.device)
        self.net.compute_dtype = _resolve_dtype(self.cfg.precision, self.device)
        self.weights_source = source

    @property
    def descriptor_dim(self) -> int:
        return self.net.descriptor_dim

    # -- batching --------------------------------------------------------------------------------

    def _check(self, f: Features, which: str) -> None:
        if f.binary:
            raise ValueError(f"SuperGlue needs float descriptors of dim {self.descriptor_dim} (e.g. SuperPoint); {which} has "
                             "binary (ORB) descriptors — use matcher=nn for ORB")
        if f.descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(f"SuperGlue was loaded for {self.descriptor_dim}-dim descriptors; {which} has "
                             f"{f.descriptors.shape[1]}-dim ones (use features=superpoint or a matching checkpoint)")
        w, h = f.image_size
        if len(f) and (w <= 0 or h <= 0):
            raise ValueError(f"{which}.image_size={f.image_size} must be the (width, height) of the image in pixels")

    def _collate(self, feats: Sequence[Features]) -> tuple[torch.Tensor, ...]:
        """-> kpts (B, N, 2), scores (B, N), desc (B, N, D), mask (B, N) or None, image_size (B, 2)."""
        dev = self.device
        sizes = torch.tensor([list(f.image_size) for f in feats], dtype=torch.float32, device=dev)
        n = max(len(f) for f in feats)
        if all(len(f) == n for f in feats):
            kp = torch.stack([f.keypoints.to(dev, torch.float32) for f in feats])
            sc = torch.stack([f.scores.to(dev, torch.float32) for f in feats])
            de = torch.stack([f.descriptors.to(dev, torch.float32) for f in feats])
            return kp, sc, de, None, sizes
        b, d = len(feats), self.descriptor_dim
        kp = torch.zeros(b, n, 2, device=dev)
        sc = torch.zeros(b, n, device=dev)
        de = torch.zeros(b, n, d, device=dev)
        mask = torch.zeros(b, n, dtype=torch.bool, device=dev)
        for i, f in enumerate(feats):
            k = len(f)
            kp[i, :k] = f.keypoints.to(dev, torch.float32)
            sc[i, :k] = f.scores.to(dev, torch.float32)
            de[i, :k] = f.descriptors.to(dev, torch.float32)
            mask[i, :k] = True
        return kp, sc, de, mask, sizes

    @torch.inference_mode()
    def _run(self, feats0: Sequence[Features], feats1: Sequence[Features]) -> list[Matches]:
        kp0, sc0, de0, mk0, sz0 = self._collate(feats0)
        kp1, sc1, de1, mk1, sz1 = self._collate(feats1)
        out = self.net({"kpts0": kp0, "scores0": sc0, "desc0": de0, "mask0": mk0, "image_size0": sz0,
                        "kpts1": kp1, "scores1": sc1, "desc1": de1, "mask1": mk1, "image_size1": sz1})
        m0 = out["matches0"].cpu().numpy()
        s0 = out["matching_scores0"].float().cpu().numpy()
        results = []
        for i, f in enumerate(feats0):
            k = len(f)
            mi = m0[i, :k].astype(np.int64)
            si = np.where(mi >= 0, s0[i, :k], 0.0).astype(np.float32)
            results.append(Matches(mi, si))
        return results

    @staticmethod
    def _unmatched(f: Features) -> Matches:
        return Matches(np.full(len(f), -1, dtype=np.int64), np.zeros(len(f), dtype=np.float32))

    # -- Matcher protocol ------------------------------------------------------------------------

    def match(self, feats0: Features, feats1: Features) -> Matches:
        """Matches from feats0 to feats1: matches0 (N0,) int64 indices into feats1 or -1,
        scores0 (N0,) float32 confidence in [0, 1] (0 where unmatched)."""
        return self.match_pairs([(feats0, feats1)])[0]

    def match_many(self, query: Features, refs: Sequence[Features]) -> list[Matches]:
        """Match one query frame against several reference frames (keyframes) in ONE batched
        forward pass (the query repeated over the batch, refs padded with masks); cfg.max_batch
        > 0 splits it into chunks. Returns one Matches (query -> ref) per ref, in order."""
        return self.match_pairs([(query, r) for r in refs])

    def match_pairs(self, pairs: Sequence[tuple[Features, Features]]) -> list[Matches]:
        """Match arbitrary pairs in batched forward passes, padding both sides as needed."""
        results: list[Optional[Matches]] = [None] * len(pairs)
        todo = []
        for i, (f0, f1) in enumerate(pairs):
            self._check(f0, "feats0")
            self._check(f1, "feats1")
            if len(f0) == 0 or len(f1) == 0:
                results[i] = self._unmatched(f0)
            else:
                todo.append(i)
        chunk = self.cfg.max_batch if self.cfg.max_batch > 0 else max(len(todo), 1)
        for start in range(0, len(todo), chunk):
            idx = todo[start:start + chunk]
            out = self._run([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
            for i, res in zip(idx, out):
                results[i] = res
        return [r for r in results]  # type: ignore[misc]
