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

    Pairs that involve a padded cell get 0 (the softmaxes run over real cells only). ``sim`` is
    left unchanged; :func:`dual_softmax_from_features` avoids that copy.
    """
    return _dual_softmax_(sim.float() / temperature, mask0, mask1)


def dual_softmax_from_features(feat0: torch.Tensor, feat1: torch.Tensor, temperature: float,
                               mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None,
                               best: bool = False):
    """dual_softmax(similarity(feat0, feat1), temperature, ...) with one (B, L, S) allocation:
    the scale 1 / (C t) goes on feat0 (L x C) instead of the L x S matrix.

    With ``best=True`` returns (conf, best) where best = (row_max (B, L) float32, j_best (B, L)
    int64, i_best (B, S) int64) are conf.max(dim=2) and conf.argmax(dim=1), taken block by block
    while the blocks are in cache (what :func:`mutual_matches` needs)."""
    c = feat0.shape[-1]
    s = torch.matmul(feat0.float() * (1.0 / (c * temperature)), feat1.float().transpose(1, 2))
    return _dual_softmax_(s, mask0, mask1, best)


#: rows (or columns) per block in _dual_softmax_ on the CPU: a block of a 640 x 480 image's
#: 4800 x 4800 matrix (1.2 MB) stays in cache between its reduction and its update. On a GPU the
#: whole matrix is one block.
_BLOCK = 64


def _dual_softmax_(s: torch.Tensor, mask0: Optional[torch.Tensor], mask1: Optional[torch.Tensor],
                   best: bool = False):
    """Dual softmax of logits s (B, L, S) float32, computed in place in s (which the caller owns).

    P_ij = exp(2 s_ij - lse_row_i - lse_col_j), exact (log-sum-exp on both axes, no overflow or
    underflow whatever the logits' range). The column log-sum-exps are taken over blocks of
    columns, then each block of rows gets its own log-sum-exp and its update while it is in
    cache: one read pass and one read-write pass over the matrix and no full-size temporary.
    On a 4800 x 4800 matrix (640 x 480 images) the temporaries of the plain formula cost more
    than its arithmetic. ``best``: see :func:`dual_softmax_from_features`.
    """
    valid = _pair_mask(mask0, mask1)
    if valid is not None:
        s.masked_fill_(~valid, float("-inf"))
    b, n, m = s.shape
    step = _BLOCK if s.device.type == "cpu" else max(n, m, 1)  # GPUs: one block, no Python loop
    lse_col = torch.cat([torch.logsumexp(s[:, :, c:c + step], dim=1) for c in range(0, m, step)], dim=1)
    if best:
        row_max = s.new_zeros(b, n)
        j_best = torch.zeros(b, n, dtype=torch.long, device=s.device)
        col_max = s.new_full((b, m), -1.0)
        i_best = torch.zeros(b, m, dtype=torch.long, device=s.device)
    for r in range(0, n, step):
        blk = s[:, r:r + step]
        lse_row = torch.logsumexp(blk, dim=2, keepdim=True)
        blk.mul_(2.0).sub_(lse_row).sub_(lse_col[:, None, :]).exp_()
        if valid is not None:
            blk.masked_fill_(~valid[:, r:r + step], 0.0)  # also the NaN of rows / columns with no real cell
        if best:
            torch.max(blk, dim=2, out=(row_max[:, r:r + step], j_best[:, r:r + step]))
            v, i = blk.max(dim=1)
            better = v > col_max  # strict: the first row wins ties, as argmax
            col_max = torch.where(better, v, col_max)
            i_best = torch.where(better, i + r, i_best)
    return (s, (row_max, j_best, i_best)) if best else s


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


def mutual_matches(conf: torch.Tensor, threshold: float, ok0: torch.Tensor, ok1: torch.Tensor,
                   best: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matches (b, i, j) where P_ij is the maximum of its row and of its column, exceeds the
    threshold, and both cells pass the border test (ok0 (B, L), ok1 (B, S) bool).

    Returns b_ids, i_ids, j_ids (M,) int64 and their confidences (M,) float32, on conf's device,
    sorted by (b, i). The one-to-one property makes a row search followed by a column check
    enough: no (B, L, S) boolean masks are built. ``best``: (row max, its column, each column's
    argmax row) of conf when already known (see :func:`dual_softmax_from_features`).
    """
    b, n, m = conf.shape
    if n == 0 or m == 0:
        empty = torch.zeros(0, dtype=torch.long, device=conf.device)
        return empty, empty, empty, conf.new_zeros(0)
    if best is None:
        row_max, j_best = conf.max(dim=2)  # (B, L)
        i_best = conf.argmax(dim=1)  # (B, S)
    else:
        row_max, j_best, i_best = best
    mutual = i_best.gather(1, j_best) == torch.arange(n, device=conf.device)[None]
    keep = mutual & (row_max > threshold) & ok0 & ok1.gather(1, j_best)
    b_ids, i_ids = torch.nonzero(keep, as_tuple=True)
    return b_ids, i_ids, j_best[b_ids, i_ids], row_max[b_ids, i_ids]
