"""LoFTR's fine level: a W x W window (W = 5) of 1/2-resolution features around each coarse
match in both images, one (self, cross) transformer layer over the windows, then the position
of image 0's window centre in image 1's window as the expectation of a softmax heatmap.

Only the windows of the matched cells are gathered (one index_select over all images of the
batch); the reference unfolds every cell of both images first.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

WINDOW = 5  # fine window size (odd); the official checkpoints use 5
STRIDE = 4  # fine cells per coarse cell along each axis (1/2 vs 1/8 resolution)


class FinePreprocess(nn.Module):
    """Window tokens + the coarse (transformer) feature of their cell: merge_feat([f | down_proj(c)]).

    Parameter names are those of the checkpoints: ``fine_preprocess.down_proj`` (256 -> 128) and
    ``fine_preprocess.merge_feat`` (256 -> 128), both with bias.
    """

    def __init__(self, d_coarse: int = 256, d_fine: int = 128) -> None:
        super().__init__()
        self.d_fine = d_fine
        self.down_proj = nn.Linear(d_coarse, d_fine, bias=True)
        self.merge_feat = nn.Linear(2 * d_fine, d_fine, bias=True)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")

    def forward(self, windows: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """windows (M, WW, d_fine), coarse (M, d_coarse) -> (M, WW, d_fine).

        merge_feat is split into its window half and its coarse half, so the coarse part is
        projected once per match instead of once per window position (same sum)."""
        w = self.merge_feat.weight
        ctx = F.linear(self.down_proj(coarse), w[:, self.d_fine:], self.merge_feat.bias)
        return F.linear(windows, w[:, :self.d_fine]) + ctx[:, None, :]


def gather_windows(fine_maps: Sequence[torch.Tensor], b_ids: torch.Tensor, cell_xy: torch.Tensor) -> torch.Tensor:
    """W x W windows of fine features centred on coarse cells.

    fine_maps: one (C, Hf, Wf) map per image (sizes may differ). b_ids (M,) int64: which map;
    cell_xy (M, 2) int64: the coarse cell (column, row), whose window centre is the fine cell
    (STRIDE x, STRIDE y). Positions outside the map read 0 (as zero padding). Returns
    (M, W*W, C) in the maps' dtype, window positions row-major.
    """
    r = WINDOW // 2
    if not fine_maps:
        raise ValueError("no fine feature maps")
    c = fine_maps[0].shape[0]
    flats, bases, widths = [], [], []
    base = 0
    for fm in fine_maps:
        padded = F.pad(fm[None], (r, r, r, r))[0]  # (C, Hf + 2r, Wf + 2r)
        flats.append(padded.permute(1, 2, 0).reshape(-1, c))
        bases.append(base)
        widths.append(padded.shape[2])
        base += padded.shape[1] * padded.shape[2]
    flat = flats[0] if len(flats) == 1 else torch.cat(flats, 0)
    dev = b_ids.device
    base_t = torch.tensor(bases, dtype=torch.long, device=dev)[b_ids]
    width_t = torch.tensor(widths, dtype=torch.long, device=dev)[b_ids]
    offs = torch.arange(WINDOW, device=dev)
    # top-left of the window in padded coordinates is (STRIDE x, STRIDE y)
    rows = cell_xy[:, 1:2] * STRIDE + offs[None]  # (M, W)
    cols = cell_xy[:, 0:1] * STRIDE + offs[None]
    index = base_t[:, None, None] + rows[:, :, None] * width_t[:, None, None] + cols[:, None, :]
    return flat.index_select(0, index.reshape(-1)).reshape(len(b_ids), WINDOW * WINDOW, c)


def expectation(feat0: torch.Tensor, feat1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel position of image 0's window centre inside image 1's window.

    feat0, feat1 (M, WW, C) window tokens after the fine transformer. The heatmap is
    softmax_r(<f0_centre, f1_r> / sqrt(C)) over the WW positions; returns its expectation
    (M, 2) float32 (x, y) in [-1, 1] (window edges at +-1) and the spread (M,) float32, the sum
    of the standard deviations along x and along y in the same units (variance clamped at 1e-10).
    """
    m, ww, c = feat0.shape
    w = int(round(ww ** 0.5))
    centre = feat0[:, ww // 2, :].float()
    logits = torch.einsum("mc,mrc->mr", centre, feat1.float()) / c ** 0.5
    heat = torch.softmax(logits, dim=1)  # (M, WW)
    g = torch.linspace(-1.0, 1.0, w, device=feat0.device)
    gx, gy = g.repeat(w), g.repeat_interleave(w)  # row-major positions
    grid = torch.stack([gx, gy], dim=1)  # (WW, 2)
    coords = heat @ grid
    var = heat @ (grid * grid) - coords * coords
    std = torch.sqrt(var.clamp_min(1e-10)).sum(dim=1)
    return coords, std
