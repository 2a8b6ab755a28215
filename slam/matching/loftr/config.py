"""LoFTR settings (a light module: no torch import).

The architecture is fixed by the official checkpoints (ResNet-FPN 1/8 + 1/2, 4 x (self, cross)
linear-attention layers at d = 256 with 8 heads, a 5 x 5 fine window with 1 x (self, cross) at
d = 128); the settings below choose the weights and the matching behaviour only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MATCH_TYPES = ("auto", "dual_softmax", "sinkhorn")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class LoFTRConfig:
    weights: str = "loftr_indoor"  # registry name (loftr_indoor | loftr_outdoor | loftr_indoor_ot) or a .ckpt/.pth path
    match_type: str = "auto"  # auto (sinkhorn when the checkpoint has coarse_matching.bin_score) | dual_softmax | sinkhorn
    temp_bug_fix: Optional[bool] = None  # positional-encoding variant; None = auto: true for indoor_ds_new / loftr_indoor, else false
    threshold: float = 0.2  # minimum coarse confidence of a match
    border_rm: int = 2  # coarse cells ignored at each image border (in the image's own, unpadded grid)
    dsmax_temperature: float = 0.1  # dual-softmax temperature
    skh_iters: int = 3  # Sinkhorn iterations (optimal-transport checkpoints)
    skh_prefilter: bool = False  # OT: drop rows/columns whose best assignment is the dustbin
    max_size: int = 0  # resize so that the longer side is at most this many pixels (aspect kept); 0 = never resize
    precision: str = "auto"  # auto (fp16 on cuda, fp32 on cpu) | fp32 | bf16 | fp16 (cuda only)
    max_batch: int = 0  # most pairs per forward pass in match_image_pairs; 0 = all in one pass

    def validate(self) -> None:
        """ValueError naming the key and the valid values for a bad setting."""
        if self.match_type not in MATCH_TYPES:
            raise ValueError(f"loftr.match_type={self.match_type!r} is not valid; choose one of {', '.join(MATCH_TYPES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"loftr.precision={self.precision!r} is not valid; choose one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"loftr.threshold={self.threshold} must be in [0, 1]")
        for key in ("border_rm", "skh_iters", "max_size", "max_batch"):
            if getattr(self, key) < 0:
                raise ValueError(f"loftr.{key}={getattr(self, key)} must be >= 0")
        if 0 < self.max_size < 32:
            raise ValueError(f"loftr.max_size={self.max_size} is too small; use 0 (no resize) or at least 32 pixels")
        if self.dsmax_temperature <= 0:
            raise ValueError(f"loftr.dsmax_temperature={self.dsmax_temperature} must be > 0")
