"""Guided matching: match projected map points to keypoints inside a search radius.

Used by the tracker (projection of the local map with a pose prior) and the local mapper
(fusing map points into keyframes). Vectorised: one dense pixel-distance test, then
descriptor distances only for the candidate pairs inside the radius.
"""
from __future__ import annotations

import numpy as np

from slam.matching.nn import pairwise_distance


def candidate_pairs(proj_uv: np.ndarray, kp_uv: np.ndarray, radius: np.ndarray | float, kp_available: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All (point, keypoint) pairs closer than radius, via a grid of cells (no P x N matrix).

    proj_uv (P,2), kp_uv (N,2) px; radius scalar or (P,). Returns (pi, ki) int64 arrays.
    """
    P = len(proj_uv)
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (P,))
    kidx = np.arange(len(kp_uv)) if kp_available is None else np.nonzero(kp_available)[0]
    if len(kidx) == 0 or P == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cs = max(float(r.max()), 1.0)
    kxy = kp_uv[kidx]
    origin = np.minimum(kxy.min(0), proj_uv.min(0)) - cs
    kc = np.floor((kxy - origin) / cs).astype(np.int64)
    ncols = int(kc[:, 0].max()) + 3
    key = kc[:, 1] * ncols + kc[:, 0]
    order = np.argsort(key, kind="stable")
    skey, sk = key[order], kidx[order]
    pc = np.floor((proj_uv - origin) / cs).astype(np.int64)
    pis, kis = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cx, cy = pc[:, 0] + dx, pc[:, 1] + dy
            valid = (cx >= 0) & (cx < ncols) & (cy >= 0)
            q = np.where(valid, cy * ncols + cx, -1)
            lo = np.searchsorted(skey, q, side="left")
            hi = np.searchsorted(skey, q, side="right")
            cnt = np.where(valid, hi - lo, 0)
            tot = int(cnt.sum())
            if tot == 0:
                continue
            p_rep = np.repeat(np.arange(P), cnt)
            starts = np.repeat(lo - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt)
            pos = starts + np.arange(tot)
            pis.append(p_rep)
            kis.append(sk[pos])
    if not pis:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pi = np.concatenate(pis)
    ki = np.concatenate(kis)
    d2 = ((proj_uv[pi] - kp_uv[ki]) ** 2).sum(1)
    keep = d2 <= r[pi] ** 2
    return pi[keep], ki[keep]


def search_by_projection(
    proj_uv: np.ndarray,
    point_desc: np.ndarray,
    kp_uv: np.ndarray,
    kp_desc: np.ndarray,
    radius: np.ndarray | float,
    max_desc_dist: float,
    ratio: float = 0.9,
    kp_available: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Match P projected points to N keypoints.

    proj_uv:      (P, 2) float, predicted pixel positions (undistorted px) of the points.
    point_desc:   (P, D) descriptors of the points (uint8 bits or float32).
    kp_uv:        (N, 2) float, undistorted keypoint positions in px.
    kp_desc:      (N, D) keypoint descriptors, same dtype as point_desc.
    radius:       scalar or (P,) search radius in px.
    max_desc_dist: accept only descriptor distances below this (bits or L2).
    ratio:        best/second-best ratio within the window (1.0 disables).
    kp_available: (N,) bool, keypoints that may still be matched (default all).
    Returns (P,) int64 keypoint index or -1, and (P,) float32 descriptor distance (inf if none).
    Each keypoint is given to at most one point (the one with the smallest distance).
    """
    P, N = len(proj_uv), len(kp_uv)
    out = np.full(P, -1, dtype=np.int64)
    out_d = np.full(P, np.inf, dtype=np.float32)
    if P == 0 or N == 0:
        return out, out_d
    pi, ki = candidate_pairs(proj_uv, kp_uv, radius, kp_available)
    if len(pi) == 0:
        return out, out_d
    dd = pairwise_distance(point_desc[pi], kp_desc[ki])
    # per point: best and second best (sorted by point, then distance)
    order = np.lexsort((dd, pi))
    pi, ki, dd = pi[order], ki[order], dd[order]
    first = np.ones(len(pi), dtype=bool)
    first[1:] = pi[1:] != pi[:-1]
    fidx = np.nonzero(first)[0]
    best_p, best_k, best_d = pi[fidx], ki[fidx], dd[fidx]
    # second best distance for each point (inf if only one candidate)
    nxt = fidx + 1
    has_second = (nxt < len(pi)) & (np.append(pi, -1)[np.minimum(nxt, len(pi))] == best_p)
    second = np.full(len(fidx), np.inf, dtype=np.float32)
    second[has_second] = dd[nxt[has_second]]
    ok = best_d <= max_desc_dist
    if ratio < 1.0:
        ok &= best_d <= ratio * second
    best_p, best_k, best_d = best_p[ok], best_k[ok], best_d[ok]
    # one point per keypoint: keep the smallest distance
    order = np.lexsort((best_d, best_k))
    best_p, best_k, best_d = best_p[order], best_k[order], best_d[order]
    uniq = np.ones(len(best_k), dtype=bool)
    uniq[1:] = best_k[1:] != best_k[:-1]
    out[best_p[uniq]] = best_k[uniq]
    out_d[best_p[uniq]] = best_d[uniq]
    return out, out_d
