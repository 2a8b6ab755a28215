"""LoFTR's coarse matching: a confidence matrix over all pairs of 1/8-resolution cells, then
mutual nearest neighbours above a threshold, away from the image borders.

Cells are indexed row-major in a (possibly padded) grid of width ``wc``: cell ``i`` is at
column ``i % wc`` and row ``i // wc``. Masks are (B, N) bool, True = a real cell. Everything
here runs in float32, also under autocast: a bf16 similarity would move the dual-softmax
probabilities by several percent.
"""
from __future__ import annotations

from typing import Optional

import torch

from slam.matching.superglue import log_optimal_transport


def similarity(feat0: torch.Tensor, feat1: torch.Tensor) -> torch.Tensor:
    """(B, L, C), (B, S, C) -> (B, L, S) float32 scaled dot products <f0, f1> / C."""
    c = feat0.shape[-1]
    return torch.matmul(feat0.float(), feat1.float().transpose(1, 2)) / c


def _pair_mask(mask0: Optional[torch.Tensor], mask1: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if mask0 is None and mask1 is None:
        return None
    if mask0 is None or mask1 is None:
        raise ValueError("give both masks or neither")
    return mask0[:, :, None] & mask1[:, None, :]


def dual_softmax(sim: torch.Tensor, temperature: float, mask0: Optional[torch.Tensor] = None,
                 mask1: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Confidence P_ij = softmax_j(s_ij / t) * softmax_i(s_ij / t), (B, L, S) float32.

    Computed as exp(2 s - lse_row - lse_col): one exponential pass over the matrix. Pairs that
    involve a padded cell get 0 (the softmaxes run over real cells only).
    """
    s = sim / temperature
    valid = _pair_mask(mask0, mask1)
    if valid is not None:
        s = s.masked_fill(~valid, float("-inf"))
    lse_row = torch.logsumexp(s, dim=2, keepdim=True)
    lse_col = torch.logsumexp(s, dim=1, keepdim=True)
    conf = torch.exp(s.mul_(2.0).sub_(lse_row).sub_(lse_col)) if valid is None else torch.exp(2.0 * s - lse_row - lse_col)
    if valid is not None:
        conf = conf.masked_fill_(~valid, 0.0)  # also the NaN of rows / columns with no real cell
    return conf


def optimal_transport(sim: torch.Tensor, bin_score: torch.Tensor, iters: int, mask0: Optional[torch.Tensor] = None,
                      mask1: Optional[torch.Tensor] = None, prefilter: bool = False) -> torch.Tensor:
    """Sinkhorn with a dustbin (SuperGlue's optimal-transport layer) -> (B, L, S) float32 assignment
    probabilities, dustbins dropped. The marginals count each pair's real cells only, so padding
    has no influence. ``prefilter`` zeroes the rows and columns whose best entry is the dustbin.
    """
    log_assign = log_optimal_transport(sim.float(), bin_score, iters, mask0, mask1)
    full = log_assign.exp()
    conf = full[:, :-1, :-1]
    if prefilter:
        _, n, m = conf.shape
        to_bin0 = full[:, :-1, :].argmax(dim=2) == m  # (B, L)
        to_bin1 = full[:, :, :-1].argmax(dim=1) == n  # (B, S)
        conf = conf.masked_fill(to_bin0[:, :, None] | to_bin1[:, None, :], 0.0)
    return conf.contiguous()


def border_ok(n_cells: int, wc: int, valid_hw: torch.Tensor, border: int) -> torch.Tensor:
    """(B, n_cells) bool: cell inside the image's own (h, w) grid and at least ``border`` cells
    from each of its edges. valid_hw (B, 2) int64 (rows, columns) of real cells per image."""
    idx = torch.arange(n_cells, device=valid_hw.device)
    y, x = (idx // wc)[None], (idx % wc)[None]
    h, w = valid_hw[:, :1], valid_hw[:, 1:]
    return (y >= border) & (x >= border) & (y < h - border) & (x < w - border)


def mutual_matches(conf: torch.Tensor, threshold: float, ok0: torch.Tensor, ok1: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matches (b, i, j) where P_ij is the maximum of its row and of its column, exceeds the
    threshold, and both cells pass the border test (ok0 (B, L), ok1 (B, S) bool).

    Returns b_ids, i_ids, j_ids (M,) int64 and their confidences (M,) float32, on conf's device,
    sorted by (b, i). The one-to-one property makes a row search followed by a column check
    enough: no (B, L, S) boolean masks are built.
    """
    b, n, m = conf.shape
    if n == 0 or m == 0:
        empty = torch.zeros(0, dtype=torch.long, device=conf.device)
        return empty, empty, empty, conf.new_zeros(0)
    row_max, j_best = conf.max(dim=2)  # (B, L)
    i_best = conf.argmax(dim=1)  # (B, S)
    mutual = i_best.gather(1, j_best) == torch.arange(n, device=conf.device)[None]
    keep = mutual & (row_max > threshold) & ok0 & ok1.gather(1, j_best)
    b_ids, i_ids = torch.nonzero(keep, as_tuple=True)
    return b_ids, i_ids, j_best[b_ids, i_ids], row_max[b_ids, i_ids]
