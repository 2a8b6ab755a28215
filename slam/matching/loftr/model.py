"""The LoFTR network (Sun, Shen, Wang, Bao, Zhou, CVPR 2021) and the loading of its checkpoints.

An independent implementation that loads the official checkpoints (zju3dv/LoFTR, Apache-2.0):
Lightning ``.ckpt`` files holding a ``state_dict`` whose keys start with ``matcher.`` (also
accepted without the prefix, or a bare state dict). The module names below give exactly the
official keys: ``backbone.*``, ``loftr_coarse.layers.{0..7}.*``, ``coarse_matching.bin_score``
(optimal-transport checkpoints only), ``fine_preprocess.{down_proj,merge_feat}.*``,
``loftr_fine.layers.{0,1}.*``.

Pipeline of :meth:`LoFTRNet.match` for B image pairs (sizes may differ between images):

1. each grey image is zero-padded at the bottom/right to a multiple of 8; the backbone runs
   once per group of equally sized images (both images of a pair together when they agree);
2. coarse maps (256, H/8, W/8) + sinusoidal positions; image-0 maps of the batch are padded to
   a common grid (likewise image-1 maps) with masks, so a pair's result does not depend on the
   batch it is in;
3. 4 x (self, cross) linear-attention layers; confidence matrix (dual-softmax or optimal
   transport, float32); mutual nearest neighbours above the threshold, border cells excluded;
4. fine windows (5 x 5 at 1/2 resolution) of the matched cells, 1 x (self, cross) layer at
   d = 128, expectation of the heatmap -> sub-pixel offset in image 1.

Point convention (as the reference): a coarse cell (x, y) stands for the pixel (8x, 8y); image
0's points stay there, image 1's move by the expectation times 4 pixels (2 fine cells of 2 px).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slam.errors import WeightsError
from slam.matching.loftr.backbone import ResNetFPN
from slam.matching.loftr.coarse import (border_ok, dual_softmax_from_features, mutual_matches, optimal_transport,
                                        similarity)
from slam.matching.loftr.fine import STRIDE, WINDOW, FinePreprocess, expectation, gather_windows
from slam.matching.loftr.transformer import LocalFeatureTransformer, sine_position_encoding

D_COARSE, NHEAD_COARSE, D_FINE, NHEAD_FINE = 256, 8, 128, 8
COARSE_LAYERS = ("self", "cross") * 4
FINE_LAYERS = ("self", "cross")
FACTOR = 8  # input pixels per coarse cell
#: keys some exported files carry that the network does not use (the encoding is computed).
_IGNORED_KEYS = ("pos_encoding.pe",)


class CoarseMatching(nn.Module):
    """Holds the optimal-transport dustbin score ``bin_score`` (sinkhorn checkpoints only)."""

    def __init__(self, match_type: str) -> None:
        super().__init__()
        self.match_type = match_type
        if match_type == "sinkhorn":
            self.bin_score = nn.Parameter(torch.tensor(1.0))


class LoFTRNet(nn.Module):
    """LoFTR with the official module layout; ``match_type`` is dual_softmax or sinkhorn."""

    def __init__(self, match_type: str = "dual_softmax", temp_bug_fix: bool = True) -> None:
        super().__init__()
        if match_type not in ("dual_softmax", "sinkhorn"):
            raise ValueError(f"match_type must be dual_softmax or sinkhorn, got {match_type!r}")
        self.temp_bug_fix = bool(temp_bug_fix)
        self.backbone = ResNetFPN()
        self.loftr_coarse = LocalFeatureTransformer(D_COARSE, NHEAD_COARSE, COARSE_LAYERS)
        self.coarse_matching = CoarseMatching(match_type)
        self.fine_preprocess = FinePreprocess(D_COARSE, D_FINE)
        self.loftr_fine = LocalFeatureTransformer(D_FINE, NHEAD_FINE, FINE_LAYERS)

    @property
    def match_type(self) -> str:
        return self.coarse_matching.match_type

    # ------------------------------------------------------------------------------ loading

    def load_official_state_dict(self, state_dict: dict, source: str = "state dict") -> None:
        """Load an official LoFTR state dict (``matcher.`` prefix optional), strictly.

        Raises WeightsError naming the missing keys, unexpected keys and wrong shapes (first
        few of each). ``num_batches_tracked`` counters may be absent.
        """
        sd = strip_prefix(state_dict)
        own = self.state_dict()
        missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in sd if k not in own]
        wrong = [f"{k}: {tuple(sd[k].shape)} in the file, {tuple(own[k].shape)} expected"
                 for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
        problems = []
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
            if keys:
                problems.append(f"{what} ({len(keys)}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
        if "coarse_matching.bin_score" in unexpected and self.match_type == "dual_softmax":
            problems.append("the file is an optimal-transport (sinkhorn) checkpoint: use loftr.match_type=auto or sinkhorn")
        if "coarse_matching.bin_score" in missing:
            problems.append("the file is a dual-softmax checkpoint: use loftr.match_type=auto or dual_softmax")
        if problems:
            raise WeightsError(f"{source} does not fit LoFTR ({self.match_type}): " + "; ".join(problems))
        self.load_state_dict({k: v for k, v in sd.items()}, strict=False)

    def prepare_inference(self, device: torch.device | str, layout: str = "channels_last") -> "LoFTRNet":
        """eval(), BatchNorm folded into the convs, moved to device, backbone in ``layout``
        (channels_last; blocked = oneDNN with the reference's float32 numerics; winograd = the 3x3
        convs by F(4x4, 3x3); the last two CPU only, see backbone.py)."""
        self.eval()
        self.backbone.fold_batchnorm()
        self.to(device)
        if layout in ("blocked", "winograd") and torch.device(device).type != "cpu":
            raise ValueError(f"the {layout} backbone layout is for the CPU only")
        self.backbone.set_layout(layout)
        return self

    # ------------------------------------------------------------------------------ forward

    def _backbone(self, images: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the CNN once per group of equally sized (1, H, W) images -> per-image coarse
        (256, H/8, W/8) and fine (128, H/2, W/2) maps."""
        groups: dict[tuple[int, int], list[int]] = {}
        for k, im in enumerate(images):
            groups.setdefault(tuple(im.shape[-2:]), []).append(k)
        coarse: list[Optional[torch.Tensor]] = [None] * len(images)
        fine: list[Optional[torch.Tensor]] = [None] * len(images)
        for idx in groups.values():
            x = torch.stack([images[k] for k in idx])
            c, f = self.backbone(x)
            for n, k in enumerate(idx):
                coarse[k], fine[k] = c[n], f[n]
        return coarse, fine  # type: ignore[return-value]

    def _tokens(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor], int, torch.Tensor]:
        """Coarse maps (C, h, w) + positions, padded to a common grid and flattened:
        tokens (B, Hm*Wm, C), mask (B, Hm*Wm) or None when nothing is padded, Wm, valid (B, 2) (h, w)."""
        hm = max(m.shape[1] for m in maps)
        wm = max(m.shape[2] for m in maps)
        dev = maps[0].device
        pe = sine_position_encoding(D_COARSE, hm, wm, self.temp_bug_fix, dev)[0]
        out = []
        for m in maps:
            h, w = m.shape[1:]
            out.append(F.pad(m + pe[:, :h, :w], (0, wm - w, 0, hm - h)))
        tokens = torch.stack(out).flatten(2).transpose(1, 2)
        valid = torch.tensor([[m.shape[1], m.shape[2]] for m in maps], dtype=torch.long, device=dev)
        mask = None
        if bool((valid != torch.tensor([hm, wm], device=dev)).any()):
            idx = torch.arange(hm * wm, device=dev)
            mask = ((idx // wm)[None] < valid[:, :1]) & ((idx % wm)[None] < valid[:, 1:])
        return tokens, mask, wm, valid

    def match(self, images0: Sequence[torch.Tensor], images1: Sequence[torch.Tensor], threshold: float = 0.2,
              border_rm: int = 2, temperature: float = 0.1, skh_iters: int = 3, skh_prefilter: bool = False,
              return_conf: bool = False, half: Optional[torch.dtype] = None,
              half_stages: Sequence[str] = ("backbone", "coarse", "fine")) -> dict:
        """Match B pairs of grey images.

        images0, images1: B tensors each (1, H, W) float in [0, 1] on the network's device; H, W
        need not be multiples of 8 (zero-padded bottom/right here). Run under torch.no_grad /
        inference_mode. ``half`` (torch.float16 / torch.bfloat16, or None for float32) is the
        autocast dtype of the stages named in ``half_stages`` ("backbone", "coarse" transformer,
        "fine" transformer); the confidence matrix, the match selection and the fine expectation
        always run in float32.

        Returns a dict of tensors on the device:
          b_ids, i_ids, j_ids (M,) int64: pair index and the cells in each image's own coarse grid
            (row-major, width ceil(W/8));
          conf (M,) float32 coarse confidence; pts0, pts1 (M, 2) float32 pixels (x, y) in the
            padded images (equal to the given images' pixels); std (M,) float32 heatmap spread
            in window units (see fine.expectation);
          grid0, grid1: (B, 2) int64 (rows, cols) of each image's coarse grid;
          conf_matrix (B, L, S) float32 in the batch's padded grids, only with return_conf.
        """
        if len(images0) != len(images1) or not images0:
            raise ValueError(f"need equally many images0 and images1 (>= 1), got {len(images0)} and {len(images1)}")
        b = len(images0)
        padded = [_pad_to_multiple(im, FACTOR) for im in list(images0) + list(images1)]
        dev_type = padded[0].device.type

        def precision(stage: str):
            on = half is not None and stage in half_stages
            return torch.autocast(dev_type, dtype=half if on else torch.float32, enabled=on)

        with precision("backbone"):
            coarse, fine = self._backbone(padded)
        feat0, mask0, wm0, valid0 = self._tokens(coarse[:b])
        feat1, mask1, wm1, valid1 = self._tokens(coarse[b:])
        with precision("coarse"):
            feat0, feat1 = self.loftr_coarse(feat0, feat1, mask0, mask1)

        with torch.autocast(dev_type, enabled=False):
            best = None
            if self.match_type == "dual_softmax":
                conf, best = dual_softmax_from_features(feat0, feat1, temperature, mask0, mask1, best=True)
            else:
                conf = optimal_transport(similarity(feat0, feat1), self.coarse_matching.bin_score, skh_iters,
                                         mask0, mask1, skh_prefilter)
            ok0 = border_ok(feat0.shape[1], wm0, valid0, border_rm)
            ok1 = border_ok(feat1.shape[1], wm1, valid1, border_rm)
            b_ids, i_pad, j_pad, mconf = mutual_matches(conf, threshold, ok0, ok1, best)
        xy0 = torch.stack([i_pad % wm0, i_pad // wm0], dim=1)
        xy1 = torch.stack([j_pad % wm1, j_pad // wm1], dim=1)

        if len(b_ids):
            win0 = gather_windows(fine[:b], b_ids, xy0)
            win1 = gather_windows(fine[b:], b_ids, xy1)
            if half is None or "fine" not in half_stages:  # half-precision fine maps, float32 fine stage
                win0, win1 = win0.float(), win1.float()
            with precision("fine"):
                tok0 = self.fine_preprocess(win0, feat0[b_ids, i_pad])
                tok1 = self.fine_preprocess(win1, feat1[b_ids, j_pad])
                tok0, tok1 = self.loftr_fine(tok0, tok1)
            with torch.autocast(dev_type, enabled=False):
                offset, std = expectation(tok0, tok1)
        else:
            offset = torch.zeros(0, 2, device=feat0.device)
            std = torch.zeros(0, device=feat0.device)
        pts0 = (xy0 * FACTOR).float()
        pts1 = (xy1 * FACTOR).float() + offset * float(WINDOW // 2 * (FACTOR // STRIDE))
        out = {
            "b_ids": b_ids, "i_ids": xy0[:, 1] * valid0[b_ids, 1] + xy0[:, 0],
            "j_ids": xy1[:, 1] * valid1[b_ids, 1] + xy1[:, 0], "conf": mconf.float(),
            "pts0": pts0, "pts1": pts1, "std": std, "grid0": valid0, "grid1": valid1,
        }
        if return_conf:
            out["conf_matrix"] = conf
        return out


def _pad_to_multiple(image: torch.Tensor, k: int) -> torch.Tensor:
    """(1, H, W) -> (1, ceil(H/k) k, ceil(W/k) k), zeros added at the bottom and right."""
    h, w = image.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    return F.pad(image, (0, pw, 0, ph)) if ph or pw else image


def strip_prefix(state_dict: dict) -> dict:
    """Official key layout: drop a leading ``matcher.`` (Lightning) or ``module.`` (DataParallel)
    from every key, and the ignorable extras (``pos_encoding.pe``)."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("matcher.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key not in _IGNORED_KEYS:
            out[key] = value
    return out


def read_checkpoint(path: str | os.PathLike) -> dict:
    """torch.load (weights only, on cpu) a LoFTR checkpoint: a Lightning .ckpt with a
    ``state_dict``, or a bare state dict. Returns the state dict with the official keys.
    Raises WeightsError for unreadable files or other contents."""
    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable / corrupt / not a torch file
        raise WeightsError(f"cannot read LoFTR checkpoint {path}: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds no LoFTR state dict (expected a Lightning .ckpt with 'state_dict' "
                              f"or a dict of tensors)")
    return strip_prefix(obj)
