"""Similarity / rigid alignment of point sets (Umeyama 1991) and ATE."""
from __future__ import annotations

import numpy as np


def umeyama_alignment(src: np.ndarray, dst: np.ndarray, with_scale: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares (scale, R, t) with ``dst ~= scale * R @ src + t``.

    src, dst: (N, 3) float64 corresponding points (N >= 3, not collinear for a unique R).
    with_scale: estimate the scale (Sim(3)); otherwise scale = 1.0 (SE(3)).
    Returns (scale float, R (3, 3), t (3,)).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"src and dst must both be (N, 3), got {src.shape} and {dst.shape}")
    if src.shape[0] < 3:
        raise ValueError(f"need at least 3 point pairs for an alignment, got {src.shape[0]}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d
    n = src.shape[0]
    cov = dc.T @ sc / n
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0.0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    if with_scale:
        var_s = np.sum(sc * sc) / n
        if var_s < 1e-300:
            raise ValueError("source points are all identical; scale is undefined")
        scale = float(np.trace(np.diag(D) @ S) / var_s)
    else:
        scale = 1.0
    t = mu_d - scale * R @ mu_s
    return scale, R, t


def ate_rmse(est: np.ndarray, gt: np.ndarray, with_scale: bool) -> float:
    """Absolute trajectory error (metres): RMSE of ``gt - align(est)`` after Umeyama alignment
    of the (N, 3) estimated positions onto the (N, 3) ground-truth positions."""
    est = np.asarray(est, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    s, R, t = umeyama_alignment(est, gt, with_scale)
    aligned = s * est @ R.T + t
    return float(np.sqrt(np.mean(np.sum((aligned - gt) ** 2, axis=1))))
