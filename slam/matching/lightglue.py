"""LightGlue: adaptive attention-based feature matching (Lindenberger, Sarlin, Pollefeys, ICCV 2023).

An independent implementation of the published method that loads the cvg/LightGlue weight
files (``aliked_lightglue.pth``, ``disk_lightglue.pth``, both the old key layout
``self_attn.N.* / cross_attn.N.*`` and the new one ``transformers.N.*``), and LighterGlue,
the smaller LightGlue trained for XFeat (``xfeat_lighterglue``: d = 96, one head of size 96,
6 layers, input 64-D; published with early exit off and width confidence 0.95). The sizes are
read from the weights (:func:`architecture`); the adaptivity defaults follow the weights'
extractor (:data:`ADAPTIVITY`).

Architecture (LightGlue: d = 256, H = 4 heads, head size 64, L = 9 layers):

* input projection ``input_proj``: Linear(input_dim -> d) (absent when input_dim == d).
* positional encoding ``posenc.Wr``: keypoints normalised by the image size
  (``(p - size/2) / (max(size)/2)``) are projected to 32 frequencies; each frequency
  rotates one pair of channels of every head's query and key (rotary encoding), so the
  attention logits depend on *relative* positions within an image.
* every layer: self-attention (``Wqkv`` -> rotary -> softmax attention -> ``out_proj``),
  then bidirectional cross-attention (one shared projection ``to_qk`` for queries and keys,
  messages flow 0 -> 1 and 1 -> 0 with the same similarity matrix), each followed by the
  residual MLP ``x + ffn([x | message])`` with ffn = Linear(2d,2d) -> LayerNorm -> GELU -> Linear(2d,d).
  Attention uses ``torch.nn.functional.scaled_dot_product_attention``.
* after each layer but the last, a token confidence ``sigmoid(Linear(d -> 1))``.
* assignment after the layer where inference stops: ``final_proj`` then the dual-softmax of
  the similarity (row-wise and column-wise log-softmax summed) plus the log-sigmoid of each
  point's matchability ``Linear(d -> 1)``; matches are mutual arg-maxima whose probability
  exceeds ``filter_threshold``.

Adaptivity (per image pair):

* depth: after layer i the pair stops when the share of its points whose token confidence
  reaches ``lambda_i = clip(0.8 + 0.1 * exp(-4 i / L), 0, 1)`` exceeds ``depth_confidence``
  (points pruned earlier count as confident; the denominator is the pair's original count).
* width: after layer i, a point is pruned when its matchability is below
  ``1 - width_confidence`` unless its token confidence is still low (<= lambda_i). Pruned
  points take no further part in attention and come out unmatched.

Batches (one query frame against several keyframes) are handled per pair, exactly: a pair
that meets its exit test is assigned with that layer's head and leaves the batch (the
remaining pairs go on, so a batch costs as much as its hardest pair, no more); pruning is a
per-pair key mask, and after each layer every side is compacted to the longest kept set in
the batch so that attention really runs over fewer points. Padding is masked out of the
keys, so a pair's result does not depend on what else is in the batch.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slam.device import DTYPES, resolve_precision
from slam.errors import ConfigError, WeightsError
from slam.matching.lightglue_weights import architecture, check_is_lightglue, convert_state_dict, count_layers  # noqa: F401 (re-exported)
from slam.matching.config import LightGlueConfig
from slam.types import Features, Matches
from slam.weights import load_weights

#: features name -> (weights registry name, descriptor dimension).
FEATURE_WEIGHTS = {
    "aliked": ("aliked_lightglue", 128),
    "disk": ("disk_lightglue", 128),
    "superpoint": ("superpoint_lightglue", 256),
    "xfeat": ("xfeat_lighterglue", 64),
}
#: Published adaptivity (depth_confidence, width_confidence) per extractor; others use LightGlue's.
ADAPTIVITY = {"xfeat": (-1.0, 0.95)}
LIGHTGLUE_ADAPTIVITY = (0.95, 0.99)
#: Architecture of the released LightGlue files (used when nothing else says: random networks).
LIGHTGLUE_ARCH = {"n_layers": 9, "num_heads": 4, "descriptor_dim": 256}


def adaptivity(cfg: LightGlueConfig) -> tuple[float, float]:
    """(depth_confidence, width_confidence): the config's, or the defaults published with the
    weights of ``cfg.features`` where the config says None."""
    depth, width = ADAPTIVITY.get(cfg.features, LIGHTGLUE_ADAPTIVITY)
    return (depth if cfg.depth_confidence is None else float(cfg.depth_confidence),
            width if cfg.width_confidence is None else float(cfg.width_confidence))


# ----------------------------------------------------------------------------- layers


def normalize_keypoints(kpts: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """kpts (B,N,2) pixels, size (B,2) (w,h) pixels -> (B,N,2) roughly in [-1,1], float32.

    Centre on the image centre and divide by half the longer side (as cvg does).
    """
    size = size.to(torch.float32)
    shift = size / 2
    scale = size.max(-1).values / 2
    return (kpts.to(torch.float32) - shift[:, None, :]) / scale[:, None, None]


class RotaryEncoding(nn.Module):
    """Learned Fourier features used as rotary angles: Wr projects (x,y) to head_dim/2 angles."""

    def __init__(self, head_dim: int, in_dim: int = 2) -> None:
        super().__init__()
        self.Wr = nn.Linear(in_dim, head_dim // 2, bias=False)
        nn.init.normal_(self.Wr.weight, mean=0.0, std=1.0)

    def forward(self, kpts_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,N,2) normalised keypoints -> cos, sin each (B,1,N,head_dim), channel pairs repeated."""
        angles = F.linear(kpts_norm.float(), self.Wr.weight.float())
        cos = torch.cos(angles).repeat_interleave(2, dim=-1).unsqueeze(1)
        sin = torch.sin(angles).repeat_interleave(2, dim=-1).unsqueeze(1)
        return cos, sin


def _rotate_pairs(t: torch.Tensor) -> torch.Tensor:
    """(..., 2k) -> each channel pair (a, b) becomes (-b, a)."""
    pairs = t.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rotary(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return t * cos.to(t.dtype) + _rotate_pairs(t) * sin.to(t.dtype)


def _ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


def _message_update(ffn: nn.Sequential, proj: nn.Linear, x: torch.Tensor, ctx: torch.Tensor,
                    cache: dict) -> torch.Tensor:
    """x + ffn([x | proj(ctx)]): x (B,N,d) tokens, ctx (B,N,d) attention output before its
    output projection ``proj``.

    Without gradients the projection is folded into the MLP's first layer, W [x | P c + p] + w =
    [W_x | W_m P] [x | c] + (W_m p + w), one (2d -> 2d) product instead of two: 8 % of
    LighterGlue's time on a CPU, the same matches. The folded weights are kept in ``cache`` and
    made again when any of the four tensors changes (their in-place version counters)."""
    first = ffn[0]
    if torch.is_grad_enabled() and (x.requires_grad or first.weight.requires_grad):
        h = first(torch.cat([x, proj(ctx)], -1))
    else:
        src = (first.weight, first.bias, proj.weight, proj.bias)
        key = tuple((t.data_ptr(), t._version) for t in src)
        if cache.get("key") != key:
            with torch.no_grad():
                d = proj.weight.shape[0]
                w_m = first.weight[:, d:]
                cache["w"] = torch.cat([first.weight[:, :d], w_m @ proj.weight], 1)
                cache["b"] = first.bias + w_m @ proj.bias
            cache["key"] = key
        h = F.linear(torch.cat([x, ctx], -1), cache["w"], cache["b"])
    return x + ffn[3](ffn[2](ffn[1](h)))


def _attend(q, k, v, key_mask: Optional[torch.Tensor], use_sdpa: bool) -> torch.Tensor:
    """q (B,H,Nq,c), k/v (B,H,Nk,c), key_mask (B,Nk) bool True = valid (or None) -> (B,H,Nq,c).

    Every row must have at least one valid key (the caller guarantees it).
    """
    if use_sdpa:
        mask = None if key_mask is None else key_mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    sim = torch.einsum("bhic,bhjc->bhij", q, k) * q.shape[-1] ** -0.5
    if key_mask is not None:
        sim = sim.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.einsum("bhij,bhjc->bhic", sim.softmax(-1), v)


class SelfAttentionBlock(nn.Module):
    """Self-attention with rotary positions; parameter names follow cvg (Wqkv, out_proj, ffn)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn = _ffn(dim)
        self._folded: dict = {}  # out_proj folded into ffn[0] (_message_update)

    def forward(self, x, cos, sin, key_mask: Optional[torch.Tensor], use_sdpa: bool) -> torch.Tensor:
        b, n, _ = x.shape
        # the released weights interleave q, k, v per channel: column = head*3c + channel*3 + {0,1,2}
        qkv = self.Wqkv(x).view(b, n, self.heads, -1, 3).transpose(1, 2)
        q = apply_rotary(qkv[..., 0], cos, sin)
        k = apply_rotary(qkv[..., 1], cos, sin)
        v = qkv[..., 2].contiguous()
        ctx = _attend(q, k, v, key_mask, use_sdpa)
        return _message_update(self.ffn, self.out_proj, x, ctx.transpose(1, 2).reshape(b, n, -1), self._folded)


class CrossAttentionBlock(nn.Module):
    """Bidirectional cross-attention: shared query/key projection, messages both ways."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qk = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = _ffn(dim)
        self._folded: dict = {}  # to_out folded into ffn[0] (_message_update)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x0, x1, mask0, mask1, use_sdpa: bool):
        qk0, qk1 = self._split(self.to_qk(x0)), self._split(self.to_qk(x1))
        v0, v1 = self._split(self.to_v(x0)), self._split(self.to_v(x1))
        if use_sdpa:
            m0 = _attend(qk0, qk1, v1, mask1, True)
            m1 = _attend(qk1, qk0, v0, mask0, True)
        else:  # one similarity matrix, softmax along each axis
            sim = torch.einsum("bhic,bhjc->bhij", qk0, qk1) * qk0.shape[-1] ** -0.5
            s01 = sim if mask1 is None else sim.masked_fill(~mask1[:, None, None, :], float("-inf"))
            s10 = sim if mask0 is None else sim.masked_fill(~mask0[:, None, :, None], float("-inf"))
            m0 = torch.einsum("bhij,bhjc->bhic", s01.softmax(-1), v1)
            m1 = torch.einsum("bhij,bhic->bhjc", s10.softmax(-2), v0)
        return (_message_update(self.ffn, self.to_out, x0, m0.transpose(1, 2).flatten(-2), self._folded),
                _message_update(self.ffn, self.to_out, x1, m1.transpose(1, 2).flatten(-2), self._folded))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = SelfAttentionBlock(dim, heads)
        self.cross_attn = CrossAttentionBlock(dim, heads)

    def forward(self, x0, x1, enc0, enc1, mask0, mask1, use_sdpa: bool):
        x0 = self.self_attn(x0, *enc0, mask0, use_sdpa)
        x1 = self.self_attn(x1, *enc1, mask1, use_sdpa)
        return self.cross_attn(x0, x1, mask0, mask1, use_sdpa)


class TokenConfidence(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Linear(dim, 1))  # key "token.0" as in the released files

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,N,d) -> (B,N) confidence in [0,1] that the point's assignment will not change."""
        return torch.sigmoid(self.token(x.detach()).squeeze(-1)).float()


class MatchAssignment(nn.Module):
    """Dual-softmax similarity plus sigmoid matchability."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.matchability = nn.Linear(dim, 1)
        self.final_proj = nn.Linear(dim, dim)

    def matchability_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,N,d) -> (B,N) probability that a point has a match."""
        return torch.sigmoid(self.matchability(x).squeeze(-1)).float()

    def log_assignment(self, x0, x1, mask0, mask1) -> torch.Tensor:
        """(B,M,d), (B,N,d), masks (B,M)/(B,N) bool -> (B,M,N) float32 log match probabilities.

        log P_ij = log softmax_j(S)_ij + log softmax_i(S)_ij + log sigma(z0_i) + log sigma(z1_j),
        with S = <W x0_i, W x1_j> / sqrt(d). Pairs touching a masked point are -inf.
        """
        x0, x1 = x0.float(), x1.float()
        w, bias = self.final_proj.weight.float(), self.final_proj.bias.float()
        d = x0.shape[-1]
        f0 = F.linear(x0, w, bias) / d ** 0.25
        f1 = F.linear(x1, w, bias) / d ** 0.25
        sim = f0 @ f1.transpose(1, 2)
        valid = mask0[:, :, None] & mask1[:, None, :]
        sim = sim.masked_fill(~valid, torch.finfo(sim.dtype).min)
        mw, mb = self.matchability.weight.float(), self.matchability.bias.float()
        z0 = F.logsigmoid(F.linear(x0, mw, mb))  # (B,M,1)
        z1 = F.logsigmoid(F.linear(x1, mw, mb)).transpose(1, 2)  # (B,1,N)
        scores = sim.log_softmax(2) + sim.log_softmax(1) + z0 + z1
        return scores.masked_fill(~valid, float("-inf"))


def filter_matches(scores: torch.Tensor, threshold: float):
    """Mutual nearest neighbours of a (B,M,N) log-assignment whose probability > threshold.

    Returns m0 (B,M) long (-1 unmatched), m1 (B,N) long, p0 (B,M) float, p1 (B,N) float
    (probabilities of mutual matches, 0 elsewhere).
    """
    b, m, n = scores.shape
    if m == 0 or n == 0:
        return (scores.new_full((b, m), -1, dtype=torch.long), scores.new_full((b, n), -1, dtype=torch.long),
                scores.new_zeros((b, m)), scores.new_zeros((b, n)))
    max0, arg0 = scores.max(2)
    _, arg1 = scores.max(1)
    mutual0 = torch.arange(m, device=scores.device)[None] == arg1.gather(1, arg0)
    mutual1 = torch.arange(n, device=scores.device)[None] == arg0.gather(1, arg1)
    p0 = torch.where(mutual0, max0.exp(), torch.zeros_like(max0))
    p1 = torch.where(mutual1, p0.gather(1, arg1), torch.zeros_like(max0[:, :1]).expand(b, n))
    valid0 = mutual0 & (p0 > threshold)
    valid1 = mutual1 & valid0.gather(1, arg1)
    m0 = torch.where(valid0, arg0, torch.full_like(arg0, -1))
    m1 = torch.where(valid1, arg1, torch.full_like(arg1, -1))
    return m0, m1, torch.where(valid0, p0, 0.0), torch.where(valid1, p1, 0.0)


def confidence_threshold(layer: int, n_layers: int) -> float:
    """lambda_i = clip(0.8 + 0.1 exp(-4 i / L), 0, 1): strict early, looser in later layers."""
    return float(np.clip(0.8 + 0.1 * math.exp(-4.0 * layer / n_layers), 0.0, 1.0))


# ----------------------------------------------------------------------------- network


class LightGlueNet(nn.Module):
    """The LightGlue network; parameter names load the cvg LightGlue weight files.

    forward() works on a padded batch of B image pairs; see its docstring.
    """

    def __init__(self, n_layers: int = 9, num_heads: int = 4, descriptor_dim: int = 256, input_dim: int = 128,
                 depth_confidence: float = 0.95, width_confidence: float = 0.99, filter_threshold: float = 0.1,
                 flash: bool = True, prune_min_keypoints: int = -1) -> None:
        super().__init__()
        if descriptor_dim % num_heads:
            raise ValueError(f"descriptor_dim {descriptor_dim} must be divisible by num_heads {num_heads}")
        self.n_layers = n_layers
        self.input_dim = input_dim
        self.depth_confidence = depth_confidence
        self.width_confidence = width_confidence
        self.filter_threshold = filter_threshold
        self.flash = flash
        self.prune_min_keypoints = prune_min_keypoints
        self.input_proj = nn.Linear(input_dim, descriptor_dim) if input_dim != descriptor_dim else nn.Identity()
        self.posenc = RotaryEncoding(descriptor_dim // num_heads)
        self.transformers = nn.ModuleList([TransformerLayer(descriptor_dim, num_heads) for _ in range(n_layers)])
        self.log_assignment = nn.ModuleList([MatchAssignment(descriptor_dim) for _ in range(n_layers)])
        self.token_confidence = nn.ModuleList([TokenConfidence(descriptor_dim) for _ in range(n_layers - 1)])
        self.thresholds = [confidence_threshold(i, n_layers) for i in range(n_layers)]

    @classmethod
    def from_cfg(cls, cfg: LightGlueConfig, input_dim: Optional[int] = None, n_layers: Optional[int] = None,
                 num_heads: Optional[int] = None, descriptor_dim: Optional[int] = None) -> "LightGlueNet":
        """Sizes: the arguments, else the config's non-zero values, else LightGlue's (9, 4, 256)."""
        depth, width = adaptivity(cfg)
        return cls(n_layers=n_layers or cfg.n_layers or LIGHTGLUE_ARCH["n_layers"],
                   num_heads=num_heads or cfg.num_heads or LIGHTGLUE_ARCH["num_heads"],
                   descriptor_dim=descriptor_dim or cfg.descriptor_dim or LIGHTGLUE_ARCH["descriptor_dim"],
                   input_dim=input_dim or cfg.input_dim, depth_confidence=depth, width_confidence=width,
                   filter_threshold=cfg.filter_threshold, flash=cfg.flash, prune_min_keypoints=cfg.prune_min_keypoints)

    def load_cvg_state_dict(self, state_dict: dict, source: str = "state dict") -> None:
        """Load either cvg key layout; a clear error names the file and what is wrong."""
        sd = convert_state_dict(state_dict)
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
            if shapes:
                parts.append("shape mismatch " + "; ".join(shapes[:3]))
            raise WeightsError(f"{source} is not a LightGlue checkpoint for this configuration "
                             f"(n_layers={self.n_layers}, input_dim={self.input_dim}): {'; '.join(parts)}. "
                             f"Check lightglue.weights / lightglue.features / lightglue.n_layers")
        self.load_state_dict(sd, strict=True)

    def _prune_threshold(self, device: torch.device) -> int:
        if self.prune_min_keypoints >= 0:
            return self.prune_min_keypoints
        return 1024 if device.type == "cuda" else 0

    @staticmethod
    def _compact(keep: torch.Tensor, *tensors_and_dims):
        """Reorder each row so kept points come first (original order kept), cut to the longest row.

        keep (B,N) bool; tensors_and_dims: (tensor, point_dim) pairs. Returns (new keep, tensors...).
        """
        length = int(keep.sum(1).max()) if keep.numel() else 0
        order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :length]
        out = [keep.gather(1, order)]
        for t, dim in tensors_and_dims:
            idx = order
            # broadcast the (B,L) index to t's shape along point dimension `dim`
            shape = [1] * t.dim()
            shape[0], shape[dim] = order.shape[0], length
            idx = order.view(shape).expand(*[t.shape[i] if i not in (0, dim) else shape[i] for i in range(t.dim())])
            out.append(t.gather(dim, idx))
        return out

    def forward(self, kpts0: torch.Tensor, kpts1: torch.Tensor, desc0: torch.Tensor, desc1: torch.Tensor,
                size0: torch.Tensor, size1: torch.Tensor, mask0: Optional[torch.Tensor] = None,
                mask1: Optional[torch.Tensor] = None, autocast_dtype: Optional[torch.dtype] = None) -> dict:
        """Match B padded image pairs.

        kpts0 (B,M,2), kpts1 (B,N,2): float pixels (x,y). desc0 (B,M,input_dim), desc1 (B,N,input_dim).
        size0, size1: (B,2) image (width, height) in pixels, used to normalise the keypoints.
        mask0 (B,M), mask1 (B,N): bool, True for real points (None = all real). Padding may be
        anywhere; a pair with no real point on a side gets no matches.
        autocast_dtype: torch.float16/bfloat16 to run the transformer in mixed precision, None = fp32.

        Returns a dict of tensors on the input device:
          matches0 (B,M) long: index into image 1 of each point of image 0, -1 = unmatched.
          matching_scores0 (B,M) float32: match probability (0 where unmatched).
          matches1 (B,N) long, matching_scores1 (B,N) float32: the same from image 1.
          stop (B,) long: number of transformer layers the pair went through (early exit < n_layers).
          prune0 (B,M), prune1 (B,N) long: number of layers each point took part in; a pruned
            point has prune < stop and is always unmatched; padding has 0.
        """
        device = kpts0.device
        b, m = kpts0.shape[:2]
        n = kpts1.shape[1]
        if desc0.shape[-1] != self.input_dim or desc1.shape[-1] != self.input_dim:
            raise ValueError(f"LightGlue weights expect {self.input_dim}-D descriptors, got "
                             f"{desc0.shape[-1]} and {desc1.shape[-1]}; use the weights trained for your extractor")
        mask0 = torch.ones(b, m, dtype=torch.bool, device=device) if mask0 is None else mask0.bool()
        mask1 = torch.ones(b, n, dtype=torch.bool, device=device) if mask1 is None else mask1.bool()

        out = {
            "matches0": torch.full((b, m), -1, dtype=torch.long, device=device),
            "matches1": torch.full((b, n), -1, dtype=torch.long, device=device),
            "matching_scores0": torch.zeros(b, m, device=device),
            "matching_scores1": torch.zeros(b, n, device=device),
            "stop": torch.zeros(b, dtype=torch.long, device=device),
            "prune0": torch.zeros(b, m, dtype=torch.long, device=device),
            "prune1": torch.zeros(b, n, dtype=torch.long, device=device),
        }
        count0, count1 = mask0.sum(1), mask1.sum(1)  # original real point counts per pair
        active = (count0 > 0) & (count1 > 0)
        if not bool(active.any()):
            return out
        rows = torch.nonzero(active).squeeze(1)  # original batch index of each active row

        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            enc0 = self.posenc(normalize_keypoints(kpts0[rows], size0[rows]))
            enc1 = self.posenc(normalize_keypoints(kpts1[rows], size1[rows]))
            x0 = self.input_proj(desc0[rows].detach())
            x1 = self.input_proj(desc1[rows].detach())
            mk0, mk1 = mask0[rows], mask1[rows]
            ind0 = torch.arange(m, device=device)[None].expand(len(rows), m)
            ind1 = torch.arange(n, device=device)[None].expand(len(rows), n)
            if m and not bool(mk0.all()):  # move padding to the end and cut it where possible
                mk0, x0, ind0, enc0c, enc0s = self._compact(mk0, (x0, 1), (ind0, 1), (enc0[0], 2), (enc0[1], 2))
                enc0 = (enc0c, enc0s)
            if n and not bool(mk1.all()):
                mk1, x1, ind1, enc1c, enc1s = self._compact(mk1, (x1, 1), (ind1, 1), (enc1[0], 2), (enc1[1], 2))
                enc1 = (enc1c, enc1s)
            n0, n1 = count0[rows], count1[rows]

            early = self.depth_confidence > 0
            prune = self.width_confidence > 0
            prune_th = self._prune_threshold(device)
            last = self.n_layers - 1
            for i in range(self.n_layers):
                km0 = None if bool(mk0.all()) else mk0
                km1 = None if bool(mk1.all()) else mk1
                x0, x1 = self.transformers[i](x0, x1, enc0, enc1, km0, km1, self.flash)
                out["prune0"][rows[:, None], ind0] += mk0.long()
                out["prune1"][rows[:, None], ind1] += mk1.long()
                if i == last:
                    break
                c0 = c1 = None
                done = torch.zeros(len(rows), dtype=torch.bool, device=device)
                th = self.thresholds[i]
                if early:
                    c0 = self.token_confidence[i](x0)
                    c1 = self.token_confidence[i](x1)
                    unsure = ((c0 < th) & mk0).sum(1) + ((c1 < th) & mk1).sum(1)
                    confident = 1.0 - unsure.float() / (n0 + n1).float()
                    done = confident > self.depth_confidence
                    if bool(done.any()):
                        self._finalize(i, done, x0, x1, mk0, mk1, ind0, ind1, rows, out)
                if prune:
                    if x0.shape[1] > prune_th:
                        keep0 = self.log_assignment[i].matchability_prob(x0) > (1 - self.width_confidence)
                        if c0 is not None:
                            keep0 |= c0 <= th
                        mk0 = mk0 & keep0
                    if x1.shape[1] > prune_th:
                        keep1 = self.log_assignment[i].matchability_prob(x1) > (1 - self.width_confidence)
                        if c1 is not None:
                            keep1 |= c1 <= th
                        mk1 = mk1 & keep1
                    # a pair with a side pruned empty is finished: it has no matches
                    emptied = ~done & ((mk0.sum(1) == 0) | (mk1.sum(1) == 0))
                    if bool(emptied.any()):
                        out["stop"][rows[emptied]] = i + 1
                        done = done | emptied
                if bool(done.any()):
                    live = ~done
                    if not bool(live.any()):
                        return out
                    sel = torch.nonzero(live).squeeze(1)
                    rows, x0, x1, mk0, mk1, ind0, ind1 = (t[sel] for t in (rows, x0, x1, mk0, mk1, ind0, ind1))
                    n0, n1 = n0[sel], n1[sel]
                    enc0 = (enc0[0][sel], enc0[1][sel])
                    enc1 = (enc1[0][sel], enc1[1][sel])
                if prune:
                    if not bool(mk0.all()):
                        mk0, x0, ind0, e0c, e0s = self._compact(mk0, (x0, 1), (ind0, 1), (enc0[0], 2), (enc0[1], 2))
                        enc0 = (e0c, e0s)
                    if not bool(mk1.all()):
                        mk1, x1, ind1, e1c, e1s = self._compact(mk1, (x1, 1), (ind1, 1), (enc1[0], 2), (enc1[1], 2))
                        enc1 = (e1c, e1s)
            self._finalize(last, torch.ones(len(rows), dtype=torch.bool, device=device),
                           x0, x1, mk0, mk1, ind0, ind1, rows, out)
        return out

    def _finalize(self, layer: int, sel: torch.Tensor, x0, x1, mk0, mk1, ind0, ind1, rows, out: dict) -> None:
        """Assign the rows `sel` with layer `layer`'s head; write results at original indices."""
        idx = torch.nonzero(sel).squeeze(1)
        with torch.autocast(x0.device.type, enabled=False):
            scores = self.log_assignment[layer].log_assignment(x0[idx], x1[idx], mk0[idx], mk1[idx])
        m0, m1, p0, p1 = filter_matches(scores, self.filter_threshold)
        m0 = torch.where(mk0[idx], m0, torch.full_like(m0, -1))  # padding never matches
        m1 = torch.where(mk1[idx], m1, torch.full_like(m1, -1))
        i0, i1 = ind0[idx], ind1[idx]
        r = rows[idx]
        g0 = torch.where(m0 >= 0, i1.gather(1, m0.clamp(min=0)), torch.full_like(m0, -1))
        g1 = torch.where(m1 >= 0, i0.gather(1, m1.clamp(min=0)), torch.full_like(m1, -1))
        # compacted rows end with pruned/padded slots: write back only the live points
        w0, w1 = mk0[idx], mk1[idx]
        rr0 = r[:, None].expand_as(i0)[w0]
        rr1 = r[:, None].expand_as(i1)[w1]
        out["matches0"][rr0, i0[w0]] = g0[w0]
        out["matching_scores0"][rr0, i0[w0]] = p0[w0].float()
        out["matches1"][rr1, i1[w1]] = g1[w1]
        out["matching_scores1"][rr1, i1[w1]] = p1[w1].float()
        out["stop"][r] = layer + 1


# ----------------------------------------------------------------------------- matcher


def load_lightglue_state_dict(name_or_path: str) -> tuple[dict, Path]:
    """Resolve (registry name or path) and read a LightGlue state dict safely (slam.weights)."""
    sd, path = load_weights(name_or_path, "lightglue", "LightGlue weights")
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} holds a {type(sd).__name__}, not a LightGlue state dict")
    return sd, path


class LightGlue:
    """Matcher protocol implementation around LightGlueNet.

    LightGlue(cfg, device, state_dict=None): with state_dict None the weights come from
    cfg.weights (registry name or path), or from the extractor name cfg.features.
    After each call, ``last_info`` holds per-pair ``stop`` layers and pruned-point counts.
    """

    name = "lightglue"
    kind = "learned"  # slam.matching.base: how tracking obtains 2D-3D candidates

    def __init__(self, cfg: LightGlueConfig, device: torch.device | str = "cpu", state_dict: Optional[dict] = None) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        source = "state dict"
        if state_dict is None:
            weights = cfg.weights
            if not weights:
                if cfg.features == "orb":
                    raise ConfigError("LightGlue needs float descriptors and lightglue.features='orb' has binary ones: "
                                      "use --features aliked or disk (or superpoint), or --matcher nn for ORB")
                if cfg.features not in FEATURE_WEIGHTS:
                    raise ConfigError(f"lightglue.features={cfg.features!r} has no LightGlue weights; choose one of "
                                      f"{', '.join(FEATURE_WEIGHTS)} or set lightglue.weights to a .pth file")
                weights = FEATURE_WEIGHTS[cfg.features][0]
            state_dict, path = load_lightglue_state_dict(weights)
            source = str(path)
        sd = convert_state_dict(state_dict)
        check_is_lightglue(sd, source)
        arch = architecture(sd, source)
        for key, what in (("n_layers", "transformer layers"), ("num_heads", "attention heads"),
                          ("descriptor_dim", "feature channels")):
            want = getattr(cfg, key)
            if want and want != arch[key]:
                raise ConfigError(f"{source} has {arch[key]} {what} but lightglue.{key}={want}; "
                                  f"set lightglue.{key}={arch[key]} (or 0 to take it from the weights)")
        self.precision = resolve_precision(cfg.precision, self.device, "lightglue")
        self.autocast_dtype = None if self.precision == "fp32" else DTYPES[self.precision]
        self.net = LightGlueNet.from_cfg(cfg, **arch)
        self.net.load_cvg_state_dict(state_dict, source)
        self.net.eval().to(self.device)
        self.descriptor_dim = arch["input_dim"]
        self.last_info: dict = {}

    def _check(self, f: Features, what: str) -> None:
        if f.binary:
            raise ConfigError(f"LightGlue needs float descriptors and {what} are binary (ORB): use --features "
                              f"{', '.join(FEATURE_WEIGHTS)}, or --matcher nn for ORB")
        if f.descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(f"{what} has {f.descriptors.shape[1]}-D descriptors but these LightGlue weights expect "
                             f"{self.descriptor_dim}-D; set lightglue.features to the extractor in use")

    def _size(self, f: Features) -> torch.Tensor:
        w, h = f.image_size
        if w <= 0 or h <= 0:  # unknown size: use the keypoints' extent, as cvg does
            if len(f) == 0:
                return torch.tensor([1.0, 1.0])
            k = f.keypoints.detach().float().cpu()
            return 1 + k.max(0).values - k.min(0).values
        return torch.tensor([float(w), float(h)])

    def match(self, feats0: Features, feats1: Features) -> Matches:
        return self.match_many(feats0, [feats1])[0]

    @torch.inference_mode()
    def match_many(self, query: Features, refs: Sequence[Features]) -> list[Matches]:
        """Match `query` against every feature set in `refs` in ONE batched forward pass.

        Returns one Matches per ref: matches0 (len(query),) int64 indices into that ref, -1 unmatched.
        """
        refs = list(refs)
        if not refs:
            return []
        self._check(query, "query features")
        for j, r in enumerate(refs):
            self._check(r, f"reference features #{j}")
        b, m = len(refs), len(query)
        n = max(len(r) for r in refs)
        dev = self.device
        kpts0 = query.keypoints.to(dev, torch.float32)[None].expand(b, m, 2)
        desc0 = query.descriptors.to(dev, torch.float32)[None].expand(b, m, self.descriptor_dim)
        kpts1 = torch.zeros(b, n, 2, device=dev)
        desc1 = torch.zeros(b, n, self.descriptor_dim, device=dev)
        mask1 = torch.zeros(b, n, dtype=torch.bool, device=dev)
        for j, r in enumerate(refs):
            k = len(r)
            kpts1[j, :k] = r.keypoints.to(dev, torch.float32)
            desc1[j, :k] = r.descriptors.to(dev, torch.float32)
            mask1[j, :k] = True
        size0 = self._size(query)[None].expand(b, 2).to(dev)
        size1 = torch.stack([self._size(r) for r in refs]).to(dev)
        res = self.net(kpts0, kpts1, desc0, desc1, size0, size1, None, mask1, autocast_dtype=self.autocast_dtype)
        m0 = res["matches0"].cpu().numpy()
        s0 = res["matching_scores0"].float().cpu().numpy()
        stop = res["stop"].cpu().numpy()
        p0 = res["prune0"].cpu().numpy()
        p1 = res["prune1"].cpu().numpy()
        self.last_info = {
            "stop": stop.tolist(),
            "pruned0": [int((p0[j] < stop[j]).sum()) for j in range(b)],
            "pruned1": [int((p1[j, :len(refs[j])] < stop[j]).sum()) for j in range(b)],
        }
        return [Matches(m0[j], np.where(m0[j] >= 0, s0[j], 0.0).astype(np.float32)) for j in range(b)]
