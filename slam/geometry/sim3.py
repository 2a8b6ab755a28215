"""Similarity transforms Sim(3): algebra, closed-form alignment (Horn / Umeyama) and RANSAC.

Conventions
-----------
- A similarity is a (4, 4) float64 matrix ``dst_from_src = [[s * R, t], [0, 0, 0, 1]]`` with
  scale ``s > 0`` (unitless), rotation ``R`` (3, 3) and translation ``t`` (3,) in the units of
  the destination frame, so that ``p_dst = s * R @ p_src + t``. A rigid transform (SE(3)) is the
  special case ``s = 1``; :func:`slam.geometry.se3.transform_points` applies either.
- Composition is the matrix product (``a_from_c = a_from_b @ b_from_c``); functions marked
  "batched" take any leading shape ``(..., 4, 4)``.
- Tangent vectors are g2o's ``Sim3::log()`` order ``xi = [omega (3), upsilon (3), sigma]``:
  rotation (rad, axis-angle), translation part, log-scale (``s = exp(sigma)``), and
  ``exp(xi) = expm([[sigma * I + omega^, upsilon], [0, 0]])``, the matrix exponential of the
  group, evaluated in closed form (g2o's ``Sim3`` agrees to its own small-angle approximations,
  ~1e-9).
- A monocular SLAM map has a scale of its own; a keyframe pose as a Sim(3)
  ``cam_from_world = [[s R, t], [0, 1]]`` maps world points into a camera frame measured in that
  keyframe's map scale; the rigid camera pose is ``[[R, t / s], [0, 1]]``
  (:func:`se3_from_sim3`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from slam.geometry.se3 import skew, so3_exp, so3_log

__all__ = ["make_sim3", "sim3_decompose", "sim3_inverse", "sim3_exp", "sim3_log", "se3_from_sim3",
           "umeyama_alignment", "umeyama_batch", "ate_rmse", "project_points", "sim3_inlier_mask",
           "Sim3RansacResult", "solve_sim3_ransac", "CHI2_2DOF_99"]

CHI2_2DOF_99 = 9.210  # ORB-SLAM's Sim3Solver inlier threshold: |reprojection error|^2 < 9.21 sigma^2


def _as_mats(m, name: str) -> np.ndarray:
    arr = np.asarray(m, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must be (..., 4, 4) similarity matrices, got shape {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------- algebra
def make_sim3(scale: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) float64 ``dst_from_src`` from a scale > 0, a (3, 3) rotation and a (3,) translation."""
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f"R must be (3, 3) and t (3,), got {R.shape} and {t.shape}")
    if not (np.isfinite(scale) and scale > 0.0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    out = np.eye(4)
    out[:3, :3] = float(scale) * R
    out[:3, 3] = t
    return out


def sim3_decompose(dst_from_src: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched: ``(scale (...,), R (..., 3, 3), t (..., 3))`` of ``(..., 4, 4)`` similarities.

    The scale is the RMS column norm of the 3x3 block (exact for a valid Sim(3)); ``R`` is the
    block divided by it (not re-orthonormalised). Scalars come back as 0-d arrays for one matrix.
    """
    m = _as_mats(dst_from_src, "dst_from_src")
    A = m[..., :3, :3]
    s = np.sqrt(np.sum(A * A, axis=(-2, -1)) / 3.0)
    return s, A / s[..., None, None], m[..., :3, 3].copy()


def sim3_inverse(dst_from_src: np.ndarray) -> np.ndarray:
    """Batched exact inverse ``(..., 4, 4) src_from_dst = [[R^T / s, -R^T t / s], [0, 1]]``."""
    s, R, t = sim3_decompose(dst_from_src)
    Rt = np.swapaxes(R, -1, -2)
    out = np.zeros(R.shape[:-2] + (4, 4))
    out[..., :3, :3] = Rt / s[..., None, None]
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t) / s[..., None]
    out[..., 3, 3] = 1.0
    return out


def se3_from_sim3(cam_from_world: np.ndarray) -> np.ndarray:
    """Batched: the rigid camera pose ``[[R, t / s], [0, 1]]`` (..., 4, 4) of a Sim(3)
    ``cam_from_world = [[s R, t], [0, 1]]`` (ORB-SLAM's recovery of keyframe poses after a
    Sim(3) pose graph)."""
    s, R, t = sim3_decompose(cam_from_world)
    out = np.zeros(R.shape[:-2] + (4, 4))
    out[..., :3, :3] = R
    out[..., :3, 3] = t / s[..., None]
    out[..., 3, 3] = 1.0
    return out


def _left_jacobian_sim3(omega: np.ndarray, sigma: float) -> np.ndarray:
    """(3, 3) ``W = int_0^1 exp(tau * (sigma I + omega^)) d tau`` (the translation part of the
    Sim(3) exponential: ``t = W @ upsilon``): power series near the origin of (sigma, theta),
    closed form elsewhere (errors ~1e-16 / (sigma^2 + theta^2) stay below 1e-15)."""
    theta = float(np.linalg.norm(omega))
    Om = skew(omega)
    if np.hypot(sigma, theta) < 0.5:  # W = sum_n G^n / (n + 1)!, G = sigma I + omega^
        G = sigma * np.eye(3) + Om
        W = np.eye(3)
        term = np.eye(3)
        for n in range(1, 20):
            term = term @ G / (n + 1)
            W += term
        return W
    s = float(np.exp(sigma))
    c = float(np.expm1(sigma)) / sigma if sigma != 0.0 else 1.0
    if theta < 1e-6:  # |sigma| >= 0.5: the theta -> 0 limits of the closed forms
        a = (s * (sigma - 1.0) + 1.0) / sigma ** 2
        b = (s * (sigma * sigma - 2.0 * sigma + 2.0) - 2.0) / (2.0 * sigma ** 3)
    else:
        sin_t, cos_t, r2 = np.sin(theta), np.cos(theta), sigma * sigma + theta * theta
        a = (s * (sigma * sin_t - theta * cos_t) + theta) / (theta * r2)
        b = (c - (s * (sigma * cos_t + theta * sin_t) - sigma) / r2) / (theta * theta)
    return c * np.eye(3) + a * Om + b * (Om @ Om)


def sim3_exp(xi: np.ndarray) -> np.ndarray:
    """(4, 4) similarity ``exp(xi)`` of a (7,) tangent ``[omega, upsilon, sigma]`` (g2o order)."""
    xi = np.asarray(xi, dtype=np.float64).reshape(-1)
    if xi.shape != (7,) or not np.all(np.isfinite(xi)):
        raise ValueError(f"xi must be 7 finite numbers [omega(3), upsilon(3), sigma], got {xi}")
    return make_sim3(float(np.exp(xi[6])), so3_exp(xi[:3]), _left_jacobian_sim3(xi[:3], float(xi[6])) @ xi[3:6])


def sim3_log(dst_from_src: np.ndarray) -> np.ndarray:
    """(7,) tangent ``[omega, upsilon, sigma]`` of one (4, 4) similarity; inverse of :func:`sim3_exp`
    (``sigma = log(s)``, ``omega = log(R)``, ``upsilon = W^-1 t``)."""
    m = _as_mats(dst_from_src, "dst_from_src")
    if m.shape != (4, 4):
        raise ValueError(f"sim3_log takes one (4, 4) matrix, got {m.shape}")
    s, R, t = sim3_decompose(m)
    omega = so3_log(R)
    sigma = float(np.log(s))
    return np.concatenate([omega, np.linalg.solve(_left_jacobian_sim3(omega, sigma), t), [sigma]])


# ------------------------------------------------------------------------- closed-form alignment
def umeyama_batch(src: np.ndarray, dst: np.ndarray, with_scale: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares ``dst ~= s * R @ src + t`` for a batch of point sets (Umeyama 1991; Horn's
    closed form with the asymmetric scale of ORB-SLAM's Sim3Solver).

    src, dst: (B, N, 3) float64 corresponding points, N >= 3.
    with_scale: estimate the scale (Sim(3)); otherwise ``s = 1`` (SE(3)).
    Returns ``s (B,)``, ``R (B, 3, 3)``, ``t (B, 3)`` and ``ok (B,)`` bool: False where the source
    points are (nearly) collinear or coincident, or the scale is not positive (the other outputs
    are then finite but meaningless).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 3 or src.shape[2] != 3 or src.shape != dst.shape:
        raise ValueError(f"src and dst must both be (B, N, 3), got {src.shape} and {dst.shape}")
    n = src.shape[1]
    if n < 3:
        raise ValueError(f"need at least 3 point pairs for an alignment, got {n}")
    mu_s, mu_d = src.mean(axis=1), dst.mean(axis=1)
    sc, dc = src - mu_s[:, None], dst - mu_d[:, None]
    cov = np.einsum("bni,bnj->bij", dc, sc) / n
    U, D, Vt = np.linalg.svd(cov)
    d = np.where(np.linalg.det(U) * np.linalg.det(Vt) < 0.0, -1.0, 1.0)
    U[:, :, 2] *= d[:, None]
    R = U @ Vt
    var_s = np.sum(sc * sc, axis=(1, 2)) / n
    ok = (var_s > 1e-300) & (D[:, 1] > 1e-9 * np.maximum(D[:, 0], 1e-300))
    if with_scale:
        # the scale is defined for collinear points too (only the roll about their line is not),
        # so it is kept there: a straight-line trajectory still aligns with scale
        s = (D[:, 0] + D[:, 1] + d * D[:, 2]) / np.where(var_s > 1e-300, var_s, 1.0)
        ok &= s > 0.0
        s = np.where(s > 0.0, s, 1.0)
    else:
        s = np.ones(src.shape[0])
    t = mu_d - s[:, None] * np.einsum("bij,bj->bi", R, mu_s)
    return s, R, t, ok


def umeyama_alignment(src: np.ndarray, dst: np.ndarray, with_scale: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``(scale, R, t)`` with ``dst ~= scale * R @ src + t`` (Umeyama 1991).

    src, dst: (N, 3) float64 corresponding points (N >= 3, not collinear for a unique R).
    with_scale: estimate the scale (Sim(3)); otherwise scale = 1.0 (SE(3)).
    Returns (scale float, R (3, 3), t (3,)). ValueError for coincident source points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"src and dst must both be (N, 3), got {src.shape} and {dst.shape}")
    if src.shape[0] < 3:
        raise ValueError(f"need at least 3 point pairs for an alignment, got {src.shape[0]}")
    sc = src - src.mean(axis=0)
    if with_scale and np.sum(sc * sc) / src.shape[0] < 1e-300:
        raise ValueError("source points are all identical; scale is undefined")
    s, R, t, _ = umeyama_batch(src[None], dst[None], with_scale)
    return float(s[0]), R[0], t[0]


def ate_rmse(est: np.ndarray, gt: np.ndarray, with_scale: bool) -> float:
    """Absolute trajectory error (metres): RMSE of ``gt - align(est)`` after Umeyama alignment
    of the (N, 3) estimated positions onto the (N, 3) ground-truth positions."""
    est = np.asarray(est, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    s, R, t = umeyama_alignment(est, gt, with_scale)
    aligned = s * est @ R.T + t
    return float(np.sqrt(np.mean(np.sum((aligned - gt) ** 2, axis=1))))


# ---------------------------------------------------------------------------------- RANSAC
def project_points(K: np.ndarray, pts_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection (zero skew) of ``(..., 3)`` camera-frame points (metres) to
    ``(..., 2)`` pixels; returns ``(uv, in_front)`` where ``in_front`` (...,) is ``z > 0``
    (pixels of points behind the camera are finite but meaningless)."""
    z = pts_cam[..., 2]
    front = z > 1e-9
    inv_z = 1.0 / np.where(front, z, 1.0)
    uv = np.stack([K[0, 0] * pts_cam[..., 0] * inv_z + K[0, 2],
                   K[1, 1] * pts_cam[..., 1] * inv_z + K[1, 2]], axis=-1)
    return uv, front


def sim3_inlier_mask(dst_from_src: np.ndarray, p_src: np.ndarray, p_dst: np.ndarray,
                     uv_src: np.ndarray, uv_dst: np.ndarray, K_src: np.ndarray, K_dst: np.ndarray,
                     max_err2_src: np.ndarray, max_err2_dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched two-image reprojection check of ORB-SLAM's Sim3Solver.

    dst_from_src: (..., 4, 4) hypotheses; p_src / p_dst: (N, 3) matched points in the src / dst
    camera frames; uv_src / uv_dst: (N, 2) their keypoints (undistorted px); K_src / K_dst (3, 3);
    max_err2_src / max_err2_dst: (N,) squared pixel thresholds.
    A match is an inlier when ``p_src`` mapped into dst projects within ``max_err2_dst`` of
    ``uv_dst`` AND ``p_dst`` mapped back into src projects within ``max_err2_src`` of ``uv_src``,
    both in front of the camera. Returns ``(inliers (..., N) bool, err2 (..., N)``: the sum of the
    two squared errors in px^2, inf behind a camera).
    """
    s, R, t = sim3_decompose(dst_from_src)
    A = s[..., None, None] * R
    q_dst = np.einsum("...ij,nj->...ni", A, p_src) + t[..., None, :]
    Ainv = np.swapaxes(R, -1, -2) / s[..., None, None]
    q_src = np.einsum("...ij,...nj->...ni", Ainv, p_dst - t[..., None, :])
    uv1, f1 = project_points(K_dst, q_dst)
    uv2, f2 = project_points(K_src, q_src)
    e_dst = np.sum((uv1 - uv_dst) ** 2, axis=-1)
    e_src = np.sum((uv2 - uv_src) ** 2, axis=-1)
    front = f1 & f2
    inl = front & (e_dst < max_err2_dst) & (e_src < max_err2_src)
    return inl, np.where(front, e_dst + e_src, np.inf)


@dataclass
class Sim3RansacResult:
    """Output of :func:`solve_sim3_ransac`.

    dst_from_src: (4, 4) float64 similarity (scale exactly 1 with ``fix_scale``), or None when no
        hypothesis reached ``min_inliers``.
    inliers: (N,) bool inliers of the returned model (all False when it is None).
    n_inliers: ``inliers.sum()``.
    iterations: minimal-sample hypotheses drawn (degenerate samples included).
    """

    dst_from_src: Optional[np.ndarray]
    inliers: np.ndarray
    n_inliers: int
    iterations: int


def _shaped(name: str, a, shape: tuple) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr


def solve_sim3_ransac(p_src: np.ndarray, p_dst: np.ndarray, uv_src: np.ndarray, uv_dst: np.ndarray,
                      K_src: np.ndarray, K_dst: Optional[np.ndarray] = None,
                      sigma2_src: Optional[np.ndarray] = None, sigma2_dst: Optional[np.ndarray] = None,
                      *, fix_scale: bool = False, probability: float = 0.99, min_inliers: int = 20,
                      max_iterations: int = 300, chi2_threshold: float = CHI2_2DOF_99,
                      batch: int = 32, seed: int = 0) -> Sim3RansacResult:
    """Relative Sim(3) (or SE(3)) between two keyframes from 3D-3D map-point matches (ORB-SLAM's
    Sim3Solver): RANSAC on minimal 3-point samples, each solved in closed form, scored by the
    reprojection of the points into BOTH keyframes' images.

    p_src: (N, 3) float64 matched map points in the src keyframe's camera frame (its map units).
    p_dst: (N, 3) float64 the same points as mapped near the dst keyframe, in its camera frame.
    uv_src, uv_dst: (N, 2) float64 the keypoints (undistorted px) that observe them in each image.
    K_src, K_dst: (3, 3) pinhole matrices (K_dst defaults to K_src).
    sigma2_src, sigma2_dst: (N,) keypoint variances in px^2 (ORB: ``scale_factor^(2 * octave)``;
        default 1). A match is an inlier when both squared errors are below
        ``chi2_threshold * sigma2`` (9.21: chi2, 2 dof, 99 %).
    fix_scale: SE(3) for RGB-D / stereo maps (scale 1); Sim(3) for monocular maps.
    probability / min_inliers / max_iterations: RANSAC stops once the best model has at least
        ``min_inliers`` inliers and enough samples were drawn to find an all-inlier sample with
        ``probability`` given its inlier ratio, or after ``max_iterations`` samples.
    batch: hypotheses solved and scored together (vectorised); seed: the sampler's seed (the
        result is a deterministic function of the inputs and the seed).
    The best minimal model is then refitted on its inliers (least squares, twice) and the refit
    kept when it has at least as many inliers.
    Returns a :class:`Sim3RansacResult` with ``dst_from_src`` mapping src-camera points to the
    dst camera: ``p_dst ~= s R p_src + t``.
    """
    p_src = np.asarray(p_src, dtype=np.float64)
    N = p_src.shape[0] if p_src.ndim == 2 else -1
    if N < 0:
        raise ValueError(f"p_src must be (N, 3), got {p_src.shape}")
    K_src = np.asarray(K_src, dtype=np.float64)
    K_dst = K_src if K_dst is None else np.asarray(K_dst, dtype=np.float64)
    if K_src.shape != (3, 3) or K_dst.shape != (3, 3):
        raise ValueError(f"K_src and K_dst must be (3, 3), got {K_src.shape} and {K_dst.shape}")
    ps, pd = _shaped("p_src", p_src, (N, 3)), _shaped("p_dst", p_dst, (N, 3))
    uvs, uvd = _shaped("uv_src", uv_src, (N, 2)), _shaped("uv_dst", uv_dst, (N, 2))
    s2s = np.ones(N) if sigma2_src is None else _shaped("sigma2_src", sigma2_src, (N,))
    s2d = np.ones(N) if sigma2_dst is None else _shaped("sigma2_dst", sigma2_dst, (N,))
    if not (0.0 < probability < 1.0) or min_inliers < 3 or max_iterations < 1 or batch < 1:
        raise ValueError("need 0 < probability < 1, min_inliers >= 3, max_iterations >= 1 and batch >= 1")
    check = dict(p_src=ps, p_dst=pd, uv_src=uvs, uv_dst=uvd, K_src=K_src, K_dst=K_dst,
                 max_err2_src=chi2_threshold * s2s, max_err2_dst=chi2_threshold * s2d)
    if N < min_inliers:
        return Sim3RansacResult(None, np.zeros(N, dtype=bool), 0, 0)

    rng = np.random.default_rng(seed)
    best_n, best_cost, best_model, best_inl = -1, np.inf, None, None
    drawn, needed = 0, max_iterations
    while drawn < min(needed, max_iterations):
        b = min(batch, max_iterations - drawn)
        idx = np.argpartition(rng.random((b, N)), 3, axis=1)[:, :3]
        drawn += b
        s, R, t, ok = umeyama_batch(ps[idx], pd[idx], with_scale=not fix_scale)
        if not ok.any():
            continue
        models = np.zeros((int(ok.sum()), 4, 4))
        models[:, :3, :3] = s[ok, None, None] * R[ok]
        models[:, :3, 3] = t[ok]
        models[:, 3, 3] = 1.0
        inl, err2 = sim3_inlier_mask(models, **check)
        n_in = inl.sum(axis=1)
        cost = np.where(inl, err2, 0.0).sum(axis=1)
        k = int(np.lexsort((cost, -n_in))[0])  # most inliers, then the smallest error among them
        if n_in[k] > best_n or (n_in[k] == best_n and cost[k] < best_cost):
            best_n, best_cost, best_model, best_inl = int(n_in[k]), float(cost[k]), models[k], inl[k]
            if best_n >= min_inliers:
                w = best_n / N
                needed = 1 if w >= 1.0 else int(np.ceil(np.log(1.0 - probability) / np.log(1.0 - w ** 3)))
    if best_model is None or best_n < min_inliers:
        return Sim3RansacResult(None, np.zeros(N, dtype=bool), 0, drawn)

    for _ in range(2):  # least-squares refit on the inliers
        s, R, t, ok = umeyama_batch(ps[best_inl][None], pd[best_inl][None], with_scale=not fix_scale)
        if not ok[0]:
            break
        model = make_sim3(float(s[0]), R[0], t[0])
        inl, err2 = sim3_inlier_mask(model, **check)
        n_in, cost = int(inl.sum()), float(np.where(inl, err2, 0.0).sum())
        if n_in < best_n or (n_in == best_n and cost >= best_cost):
            break
        best_n, best_cost, best_model, best_inl = n_in, cost, model, inl
    return Sim3RansacResult(best_model.copy(), best_inl.copy(), best_n, drawn)
