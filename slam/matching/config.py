"""Settings of the matchers (light: no torch; ``slam.config`` builds on them).

Each matcher module re-exports its own class (``from slam.matching.nn import NNConfig``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from slam.params import param

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class NNConfig:
    ratio: float = param(0.8, gt=0.0, le=1.0)  # Lowe ratio test (best/second best); 1.0 disables
    mutual: bool = True  # keep only mutual nearest neighbours
    max_distance_binary: float = param(64.0, ge=0.0)  # bits, for ORB
    max_distance_float: float = param(1.0, ge=0.0)  # L2 distance of unit vectors, for learned descriptors


@dataclass
class SuperGlueConfig:
    weights: str = "superglue_ours"  # checkpoint path or registered name: superglue_ours | superglue_indoor | superglue_outdoor
    sinkhorn_iterations: int = param(20, ge=1)  # log-space Sinkhorn iterations (Magic Leap demo: 20 at inference, paper: 100)
    match_threshold: float = param(0.2, ge=0.0, le=1.0)  # minimum confidence (assignment probability) of a mutual match
    descriptor_dim: int = param(256, ge=1)  # D of the input descriptors; the checkpoint's value wins
    n_layers: int = param(9, ge=1)  # pairs of self+cross attention layers; the checkpoint's value wins
    num_heads: int = param(4, ge=1)  # attention heads; the checkpoint's config wins (official: 4)
    keypoint_encoder: list[int] = param(factory=lambda: [32, 64, 128, 256], ge=1)  # hidden widths of the keypoint MLP; the checkpoint's value wins
    precision: str = param("auto", choices=PRECISIONS)  # auto: fp16 on CUDA, bf16 on CPUs with AMX or AVX512-BF16 on AMD (slam.device.fast_cpu_bf16_matmul), else fp32; Sinkhorn always fp32
    max_batch: int = param(0, ge=0)  # most pairs per forward pass in match_many/match_pairs; 0 = all in ONE pass


@dataclass
class LightGlueConfig:
    weights: str = ""  # registry name or .pth path; "" = chosen from `features` (aliked_lightglue / disk_lightglue / xfeat_lighterglue)
    features: str = "aliked"  # extractor the weights were trained for: aliked | disk | superpoint | xfeat (xfeat: LighterGlue)
    depth_confidence: Optional[float] = param(None, le=1.0)  # early exit when this share of points is confident; -1 disables; None = the model's default (LightGlue 0.95, LighterGlue -1)
    width_confidence: Optional[float] = param(None, le=1.0)  # prune points with matchability < 1 - this; -1 disables; None = the model's default (LightGlue 0.99, LighterGlue 0.95)
    filter_threshold: float = param(0.1, ge=0.0, le=1.0)  # minimum match probability
    n_layers: int = param(0, ge=0)  # transformer layers; 0 = from the weights (LightGlue 9, LighterGlue 6), else must match them
    num_heads: int = param(0, ge=0)  # attention heads; 0 = from the weights (LightGlue 4, LighterGlue 1), else must match them
    descriptor_dim: int = param(0, ge=0)  # internal feature width d; 0 = from the weights (LightGlue 256, LighterGlue 96), else must match them
    input_dim: int = param(128, ge=1)  # descriptor size of the extractor (taken from the weights when they have input_proj)
    flash: bool = True  # True: scaled_dot_product_attention (fused kernels); False: explicit softmax attention
    precision: str = param("auto", choices=PRECISIONS)  # auto (fp16 on cuda, fp32 on cpu)
    prune_min_keypoints: int = param(-1, ge=-1)  # prune a side only while it has more points than this; -1 = auto (cpu 0, cuda 1024)


@dataclass
class LoFTRConfig:
    """LoFTR (detector-free). The architecture is fixed by the official checkpoints; these
    settings choose the weights and the matching behaviour."""

    weights: str = "loftr_indoor"  # registry name (loftr_indoor | loftr_outdoor | loftr_indoor_ot) or a .ckpt/.pth path
    match_type: str = param("auto", choices=("auto", "dual_softmax", "sinkhorn"))  # auto: sinkhorn when the checkpoint has coarse_matching.bin_score
    temp_bug_fix: Optional[bool] = None  # positional-encoding variant; None = auto: true for loftr_indoor / *_new.ckpt, false for the other official files
    threshold: float = param(0.2, ge=0.0, le=1.0)  # minimum coarse confidence of a match
    border_rm: int = param(2, ge=0)  # coarse cells ignored at each image border (in the image's own, unpadded grid)
    dsmax_temperature: float = param(0.1, gt=0.0)  # dual-softmax temperature
    skh_iters: int = param(3, ge=0)  # Sinkhorn iterations (optimal-transport checkpoints)
    skh_prefilter: bool = False  # OT: drop rows/columns whose best assignment is the dustbin
    max_size: int = param(0, ge=0)  # shrink images whose longer side exceeds this (aspect kept); 0 = never resize
    precision: str = param("auto", choices=PRECISIONS)  # auto (fp16 on cuda, fp32 on cpu) | fp32 | bf16 | fp16 (cuda only)
    max_batch: int = param(0, ge=0)  # most pairs per forward pass in match_image_pairs; 0 = all in one pass
    backbone_layout: str = param("auto", choices=("auto", "channels_last", "blocked", "winograd"))  # CPU float32 conv layout: blocked = oneDNN, the reference's rounding; channels_last = NHWC; winograd = NHWC with the 3x3 stride-1 convs by Winograd's F(4x4, 3x3) (a quarter of the multiplications, about 5x a direct conv's float32 rounding; its matches differ from the reference's as channels_last's do: docs/benchmarks.md section 16); auto = winograd on the CPU in float32, channels_last otherwise
