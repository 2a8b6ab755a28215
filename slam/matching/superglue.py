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

Layout: tensors are (B, N, C) internally; the checkpoint's Conv1d weights (C_out, C_in, 1) are
used as linear maps, the projections permuted from the reference's interleaved heads (channel
``d * num_heads + h``) to head-major order, so the state dict stays the reference one.

Two paths compute the score matrix with the same maths: :meth:`SuperGlueNet.score_matrix`, the
checkpoint's modules as they are (differentiable; training, and the reference for tests), and
:class:`~slam.matching.superglue_fused.FusedSuperGlue`, the inference path the matcher builds
once at load time (BatchNorm and the attention merge folded into the MLPs, one QKV projection
per layer, both images through each layer as one batch, compute dtype from
``SuperGlueConfig.precision`` with the residual stream and the score matrix in fp32). Both end
in the same Sinkhorn (:func:`log_optimal_transport`). With masks, BatchNorm statistics in
training use only real keypoints.

Both are tested against a direct re-statement of the published maths with random weights in the
official key layout. Weights (resolved and read by slam.weights): Magic Leap's
``superglue_indoor`` / ``superglue_outdoor`` (non-commercial, not bundled) or ``superglue_ours``
(``python tools/train_superglue.py``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slam.device import DTYPES, resolve_precision
from slam.errors import ConfigError, InputError, WeightsError
from slam.matching.config import SuperGlueConfig
from slam.matching.optimal_transport import log_optimal_transport, mutual_matches, sinkhorn
from slam.matching.superglue_fused import FusedSuperGlue, head_major
from slam.types import Features, Matches
from slam.weights import load_weights as read_weights

log = logging.getLogger(__name__)

__all__ = ["SuperGlue", "SuperGlueConfig", "SuperGlueNet", "WeightsError", "log_optimal_transport", "mutual_matches",
           "sinkhorn", "read_checkpoint", "architecture_from_state_dict", "load_weights", "normalize_keypoints"]

#: What precision=auto runs on a CPU with fast bf16 products (AMX, or AVX512-BF16 on AMD:
#: slam.device.fast_cpu_bf16_matmul); elsewhere fp32. bf16 keeps >= 99 % of fp32's matches
#: (docs/benchmarks.md, section 4: 99.70 % and, on an AMD EPYC, 99.73 % of 30 real pairs) at ~3x
#: the speed with AMX and 1.33x on that AMD EPYC (2.19x Magic Leap's reference, fp32 1.64x).
CPU_AUTO = "bf16"


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

        self.kenc = KeypointEncoder(self.descriptor_dim, self.keypoint_encoder)
        self.gnn = AttentionalGNN(self.descriptor_dim, self.num_heads, self.n_layers)
        self.final_proj = nn.Conv1d(self.descriptor_dim, self.descriptor_dim, kernel_size=1, bias=True)
        self.register_parameter("bin_score", nn.Parameter(torch.tensor(1.0)))

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

    def forward(self, data: dict, scorer: Optional[Callable[..., torch.Tensor]] = None) -> dict:
        """Match batched keypoint sets.

        data: kpts0 (B, N, 2) float pixels (x, y); scores0 (B, N) detection scores; desc0 (B, N, D)
        float descriptors (L2-normalised for SuperPoint); mask0 (B, N) bool, True = real keypoint
        (optional, default all real); image_size0 (B, 2) (width, height) pixels; the same with
        suffix 1 for the second image (M keypoints). Optional: sinkhorn_iterations (int),
        match_threshold (float) overriding the module's.
        scorer: computes the score matrix instead of :meth:`score_matrix` (same arguments), e.g.
        the matcher's :class:`~slam.matching.superglue_fused.FusedSuperGlue`.

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
        if scorer is not None:
            scores = scorer(kn0, data["scores0"], desc0, amask0, kn1, data["scores1"], desc1, amask1)
        else:
            scores = self.score_matrix(kn0, data["scores0"], desc0, amask0, kn1, data["scores1"], desc1, amask1,
                                       mask0, mask1)

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

    def score_matrix(self, kn0: torch.Tensor, s0: torch.Tensor, desc0: torch.Tensor, amask0: Optional[torch.Tensor],
                     kn1: torch.Tensor, s1: torch.Tensor, desc1: torch.Tensor, amask1: Optional[torch.Tensor],
                     mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The checkpoint's modules as they are (differentiable): normalised keypoints kn (B, K, 2),
        scores s (B, K), descriptors desc (B, K, D), attention key masks amask (B, K) or None, real
        keypoint masks mask (BatchNorm statistics in training) -> scores (B, N, M), / sqrt(D)."""
        x0 = desc0 + self.kenc(kn0, s0, mask0)
        x1 = desc1 + self.kenc(kn1, s1, mask1)
        d, h = self.descriptor_dim, self.num_heads
        perm = head_major(d, h, x0.device)
        for layer, name in zip(self.gnn.layers, self.gnn.names):
            attn = layer.attn
            w_qkv = torch.cat([p.weight.squeeze(-1)[perm] for p in attn.proj], dim=0)
            b_qkv = torch.cat([p.bias[perm] for p in attn.proj], dim=0)
            q0, k0, v0 = F.linear(x0, w_qkv, b_qkv).split(d, dim=-1)
            q1, k1, v1 = F.linear(x1, w_qkv, b_qkv).split(d, dim=-1)
            if name == "cross":
                k0, v0, k1, v1, src0, src1 = k1, v1, k0, v0, amask1, amask0
            else:
                src0, src1 = amask0, amask1
            w_merge = attn.merge.weight.squeeze(-1)[:, perm]
            msg0 = F.linear(_attend(q0, k0, v0, src0, h), w_merge, attn.merge.bias)
            msg1 = F.linear(_attend(q1, k1, v1, src1, h), w_merge, attn.merge.bias)
            delta0 = _run_mlp(layer.mlp, torch.cat([x0, msg0], dim=-1), mask0)
            delta1 = _run_mlp(layer.mlp, torch.cat([x1, msg1], dim=-1), mask1)
            x0, x1 = x0 + delta0, x1 + delta1
        w_f, b_f = self.final_proj.weight.squeeze(-1), self.final_proj.bias
        m0, m1 = F.linear(x0, w_f, b_f), F.linear(x1, w_f, b_f)
        return torch.matmul(m0, m1.transpose(1, 2)) / self.descriptor_dim ** 0.5


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _strip_prefixes(sd: dict) -> dict:
    for prefix in ("module.", "superglue.", "matcher.", "net."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def read_checkpoint(name_or_path: str | os.PathLike) -> tuple[dict, dict, Path]:
    """Read a SuperGlue checkpoint (registry name or path, resolved and read by slam.weights)
    -> (state_dict, config, path).

    Accepted formats: a plain state dict (Magic Leap's .pth files) or our dict
    {"config": {descriptor_dim, n_layers, num_heads, keypoint_encoder, ...}, "state_dict": ...}
    ("model" is accepted for "state_dict"). A "module." prefix (DataParallel) is stripped.
    """
    obj, path = read_weights(name_or_path, "superglue", "SuperGlue weights")
    sd, cfg = _split_checkpoint(obj, str(path))
    return sd, cfg, path


def _split_checkpoint(obj: Any, source: str) -> tuple[dict, dict]:
    if not isinstance(obj, dict):
        raise WeightsError(f"{source} holds a {type(obj).__name__}, not a SuperGlue state dict or checkpoint dict")
    cfg: dict = {}
    sd = obj
    if isinstance(obj.get("state_dict", obj.get("model")), dict):
        sd = obj.get("state_dict", obj.get("model"))
        cfg = dict(obj.get("config") or {})
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{source}: not a SuperGlue checkpoint (expected a state dict mapping parameter names "
                           f"to tensors, or {{'config': ..., 'state_dict': ...}}); use Magic Leap's "
                           f"superglue_indoor/outdoor.pth or a file written by tools/train_superglue.py")
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


class SuperGlue:
    """SuperGlue behind the Matcher protocol.

    SuperGlue(cfg, device, state_dict=None): with state_dict None the weights come from
    cfg.weights (path or registered name); a given state_dict (or a checkpoint dict with
    "config" and "state_dict") is used instead, e.g. for tests and benchmarks. The architecture
    (descriptor_dim, n_layers, keypoint_encoder, num_heads) is taken from the checkpoint where it
    says, else from cfg.
    """

    name = "superglue"
    kind = "learned"  # slam.matching.base: how tracking obtains 2D-3D candidates

    def __init__(self, cfg: Optional[SuperGlueConfig] = None, device: torch.device | str = "cpu",
                 state_dict: Optional[dict] = None):
        self.cfg = cfg or SuperGlueConfig()
        self.device = torch.device(device)
        base = {"descriptor_dim": self.cfg.descriptor_dim, "n_layers": self.cfg.n_layers,
                "num_heads": self.cfg.num_heads, "keypoint_encoder": list(self.cfg.keypoint_encoder)}
        precision = resolve_precision(self.cfg.precision, self.device, "superglue", cpu_auto=CPU_AUTO,
                                      amd_avx512_bf16=True)
        if state_dict is None:
            sd, ckpt_cfg, path = read_checkpoint(self.cfg.weights)
            source = str(path)
        else:
            source = "given checkpoint" if isinstance(state_dict.get("state_dict"), dict) else "given state dict"
            sd, ckpt_cfg = _split_checkpoint(state_dict, source)
        arch = dict(base)
        arch.update({k: ckpt_cfg[k] for k in base if k in ckpt_cfg})
        arch = architecture_from_state_dict(sd, arch, source)
        if arch != base:
            log.info("SuperGlue architecture from %s: %s", source, arch)
        self.net = SuperGlueNet(**arch, sinkhorn_iterations=self.cfg.sinkhorn_iterations,
                                match_threshold=self.cfg.match_threshold)
        load_weights(self.net, sd, source)
        self.net.eval().to(self.device)
        self.precision = precision
        #: the inference path, folded once from the loaded weights (a snapshot of self.net)
        self.fused = FusedSuperGlue(self.net, self.device, DTYPES[precision])
        self.weights_source = source

    @property
    def descriptor_dim(self) -> int:
        return self.net.descriptor_dim

    # -- batching --------------------------------------------------------------------------------

    def _check(self, f: Features, which: str) -> None:
        if f.binary:
            raise ConfigError(f"SuperGlue needs float descriptors of dim {self.descriptor_dim} (e.g. SuperPoint); {which} has "
                              "binary (ORB) descriptors: use --features superpoint, or --matcher nn for ORB")
        if f.descriptors.shape[1] != self.descriptor_dim:
            raise ConfigError(f"SuperGlue was loaded for {self.descriptor_dim}-dim descriptors; {which} has "
                              f"{f.descriptors.shape[1]}-dim ones (use features=superpoint or a matching checkpoint)")
        w, h = f.image_size
        if len(f) and (w <= 0 or h <= 0):
            raise InputError(f"{which}.image_size={f.image_size} must be the (width, height) of the image in pixels")

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
                        "kpts1": kp1, "scores1": sc1, "desc1": de1, "mask1": mk1, "image_size1": sz1}, self.fused)
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
