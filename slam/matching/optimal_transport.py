"""SuperGlue's optimal matching layer: Sinkhorn on a score matrix with dustbins, and mutual matches.

Tensors: scores (B, N, M) float (image 0 has N keypoints, image 1 has M), masks (B, N) / (B, M)
bool (True = real keypoint, padded ones get no mass), log assignment (B, N+1, M+1) float32 with
the dustbin row and column last.
"""
from __future__ import annotations

from typing import Optional

import torch


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
    Padded rows / columns are -inf. Differentiable (see :func:`sinkhorn`).
    """
    b, n, m = scores.shape
    scores = scores.float()
    alpha = bin_score.float().reshape(())
    couplings = torch.cat([
        torch.cat([scores, alpha.expand(b, n, 1)], dim=2),
        torch.cat([alpha.expand(b, 1, m), alpha.expand(b, 1, 1)], dim=2),
    ], dim=1)
    log_mu, log_nu, norm = _sinkhorn_marginals(b, n, m, mask0, mask1, scores.device)
    u, v = sinkhorn(couplings, log_mu, log_nu, iters)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm[:, None, None]


#: Scalings beyond exp(+-ABSORB) are folded into the log duals (the kernel is then recomputed).
_ABSORB = 20.0
#: A scaled row / column sum below this has lost float32 range: that iteration runs in log space.
_TINY = 1e-30


def sinkhorn(z: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor,
             iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-domain Sinkhorn duals: from u = v = 0 (-inf where the marginal is 0), ``iters`` times
    u = log_mu - LSE_j(z_ij + v_j), then v = log_nu - LSE_i(z_ij + u_i).

    z (B, R, C) float32 couplings; log_mu (B, R), log_nu (B, C) log marginals (-inf = no mass).
    Returns u (B, R), v (B, C) float32.

    The first iteration runs in log space. The others run in the scaling domain, stabilised by
    absorption: with K = exp(z + u + v) for the current duals, a = mu / (K b), b = nu / (K^T a)
    (two matrix-vector products per iteration instead of two log-sum-exps over the matrix);
    when a scaling leaves [e^-20, e^20] it is folded into u, v and K is recomputed, and an
    iteration whose scaled sums underflow runs in log space. So the iterates are the log-space
    ones up to float rounding for any logits. Differentiable; one host sync per iteration.
    """
    live_r, live_c = torch.isfinite(log_mu), torch.isfinite(log_nu)
    u = torch.zeros_like(log_mu).masked_fill(~live_r, float("-inf"))
    v = torch.zeros_like(log_nu).masked_fill(~live_c, float("-inf"))
    if iters <= 0:
        return u, v

    def log_step(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = log_mu - torch.logsumexp(z + v.unsqueeze(1), dim=2)
        return u, log_nu - torch.logsumexp(z + u.unsqueeze(2), dim=1)

    u, v = log_step(u, v)
    mu, nu = log_mu.exp(), log_nu.exp()
    k: Optional[torch.Tensor] = None
    a = b = None
    for _ in range(iters - 1):
        if k is None:  # absorbed: K is the current plan, scalings start at 1
            k = torch.exp(z + u.unsqueeze(2) + v.unsqueeze(1))
            b = torch.ones_like(v)
        kb = torch.bmm(k, b.unsqueeze(2)).squeeze(2)
        a_new = mu / kb.clamp_min(_TINY)
        ka = torch.bmm(a_new.unsqueeze(1), k).squeeze(1)
        b_new = nu / ka.clamp_min(_TINY)
        lost = ((kb < _TINY) & live_r).any() | ((ka < _TINY) & live_c).any()
        big = torch.maximum(torch.where(live_r, a_new.log().abs(), 0.0).amax(),
                            torch.where(live_c, b_new.log().abs(), 0.0).amax()) > _ABSORB
        state = int(lost) * 2 + int(big)  # the host sync
        if state >= 2:  # float32 range lost: this iteration in log space, from the duals before it
            if a is not None:
                u = u + a.log()
            u, v = log_step(u, v + b.log())
            k, a = None, None
            continue
        a, b = a_new, b_new
        if state == 1:
            u, v, k, a = u + a.log(), v + b.log(), None, None
    if a is not None:
        u, v = u + a.log(), v + b.log()
    return u, v


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
