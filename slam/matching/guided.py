"""Guided matching: match projected map points to keypoints inside a search radius.

Used by the tracker (projection of the local map with a pose prior) and the local mapper
(fusing map points into keyframes). Vectorised: a k-d tree radius query, then descriptor
distances only for the candidate pairs inside the radius.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from slam.matching.nn import pairwise_distance

#: L2 distance of unit float descriptors accepted by guided search when the config leaves it to
#: the extractor (``max_desc_dist_float: null``) and nothing resolved it; slam.system.resolve_config
#: sets each extractor's own value (slam.features.config.GUIDED_MAX_L2)
DEFAULT_MAX_L2 = 0.9


def float_threshold(value: float | None) -> float:
    """A configured max_desc_dist_float, or DEFAULT_MAX_L2 for None."""
    return DEFAULT_MAX_L2 if value is None else float(value)


def candidate_pairs(proj_uv: np.ndarray, kp_uv: np.ndarray, radius: np.ndarray | float, kp_available: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All (point, keypoint) pairs closer than radius (no P x N matrix).

    proj_uv (P,2), kp_uv (N,2) px; radius scalar or (P,) px; kp_available (N,) bool or None.
    Returns (pi, ki) int64 arrays, sorted by point then keypoint index. Two k-d trees and one
    sparse distance query at the largest radius (C code, no Python loop), then the per-point
    radius test.
    """
    P = len(proj_uv)
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (P,))
    kidx = np.arange(len(kp_uv)) if kp_available is None else np.nonzero(kp_available)[0]
    if len(kidx) == 0 or P == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rmax = float(r.max())
    if rmax <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    m = cKDTree(np.asarray(proj_uv, dtype=np.float64)).sparse_distance_matrix(
        cKDTree(np.asarray(kp_uv, dtype=np.float64)[kidx]), rmax, output_type="ndarray"
    )
    pi = m["i"].astype(np.int64)
    ki = kidx[m["j"]]
    keep = m["v"] <= r[pi]
    pi, ki = pi[keep], ki[keep]
    order = np.lexsort((ki, pi))
    return pi[order], ki[order]


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
    return select_candidates(pi, ki, dd, P, max_desc_dist, ratio)


def select_candidates(pi: np.ndarray, ki: np.ndarray, dd: np.ndarray, P: int, max_desc_dist: float,
                      ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """One keypoint for each of P queries from candidate pairs (pi, ki) with descriptor distances dd
    (K,): the nearest one per query if below ``max_desc_dist`` and, with ``ratio`` < 1, below
    ratio x the second nearest; then each keypoint goes to the query nearest to it.
    Returns (P,) int64 keypoint index or -1 and (P,) float32 distance (inf if none)."""
    out = np.full(P, -1, dtype=np.int64)
    out_d = np.full(P, np.inf, dtype=np.float32)
    if len(pi) == 0:
        return out, out_d
    # per query: best and second best (sorted by query, then distance)
    order = np.lexsort((dd, pi))  # stable: ties keep the keypoint order of the candidates
    pi, ki, dd = pi[order], ki[order], dd[order]
    first = np.ones(len(pi), dtype=bool)
    first[1:] = pi[1:] != pi[:-1]
    fidx = np.nonzero(first)[0]
    best_p, best_k, best_d = pi[fidx], ki[fidx], dd[fidx]
    # second best distance for each query (inf if only one candidate)
    nxt = fidx + 1
    has_second = (nxt < len(pi)) & (np.append(pi, -1)[np.minimum(nxt, len(pi))] == best_p)
    second = np.full(len(fidx), np.inf, dtype=np.float32)
    second[has_second] = dd[nxt[has_second]]
    ok = best_d <= max_desc_dist
    if ratio < 1.0:
        ok &= best_d <= ratio * second
    best_p, best_k, best_d = best_p[ok], best_k[ok], best_d[ok]
    # one query per keypoint: keep the smallest distance
    order = np.lexsort((best_d, best_k))
    best_p, best_k, best_d = best_p[order], best_k[order], best_d[order]
    uniq = np.ones(len(best_k), dtype=bool)
    uniq[1:] = best_k[1:] != best_k[:-1]
    out[best_p[uniq]] = best_k[uniq]
    out_d[best_p[uniq]] = best_d[uniq]
    return out, out_d


def epipolar_candidate_pairs(x0: np.ndarray, x1: np.ndarray, F: np.ndarray, sigma2_1: np.ndarray | float = 1.0,
                             chi2: float = 3.84, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with keypoint j of image 1 within the epipolar band of keypoint i of image 0.

    x0 (N,2), x1 (M,2): undistorted px. F (3,3): x1^T F x0 = 0. sigma2_1: scalar or (M,) position
    variance of image-1 keypoints (px^2, e.g. scale^(2*octave)); a pair is kept when the squared
    distance of x1_j to the line F x0_i is below chi2 * sigma2_1[j] (ORB-SLAM's
    SearchForTriangulation test, 3.84 = chi2 95 % with 1 dof). Returns (i, j) int64 sorted by i.
    Memory: chunk x M floats at a time.
    """
    N, M = len(x0), len(x1)
    if N == 0 or M == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lines = np.c_[x0, np.ones(N)] @ F.T  # (N, 3) lines a u + b v + c = 0 in image 1
    lines /= np.maximum(np.hypot(lines[:, 0], lines[:, 1]), 1e-12)[:, None]
    lines = lines.astype(np.float32)
    x1h = np.c_[x1, np.ones(M)].astype(np.float32).T  # (3, M)
    thr = (chi2 * np.broadcast_to(np.asarray(sigma2_1, dtype=np.float32), (M,)))[None, :]
    ii, jj = [], []
    for a in range(0, N, chunk):
        d = lines[a : a + chunk] @ x1h
        i, j = np.nonzero(d * d < thr)
        ii.append(i + a)
        jj.append(j)
    return np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64)


def search_epipolar(x0: np.ndarray, desc0: np.ndarray, x1: np.ndarray, desc1: np.ndarray, F: np.ndarray,
                    max_desc_dist: float, ratio: float = 0.9, sigma2_1: np.ndarray | float = 1.0,
                    chi2: float = 3.84) -> tuple[np.ndarray, np.ndarray]:
    """Match keypoints of image 0 to keypoints of image 1 along epipolar lines (poses known).

    x0 (N,2), x1 (M,2): undistorted px; desc0 (N,D), desc1 (M,D): uint8 bits or float32.
    F (3,3): x1^T F x0 = 0 (see :func:`slam.geometry.epipolar.fundamental_from_poses`). Candidates: the epipolar band
    (:func:`epipolar_candidate_pairs`); then nearest descriptor, ``max_desc_dist``, ratio test and
    one match per image-1 keypoint (:func:`select_candidates`). Descriptor distances are
    computed for the candidates only (a few percent of all pairs), not for an N x M matrix.
    Returns (N,) int64 index into image 1 or -1, and (N,) float32 descriptor distance.
    """
    i, j = epipolar_candidate_pairs(x0, x1, F, sigma2_1, chi2)
    dd = pairwise_distance(desc0[i], desc1[j]) if len(i) else np.zeros(0, dtype=np.float32)
    return select_candidates(i, j, dd, len(x0), max_desc_dist, ratio)
