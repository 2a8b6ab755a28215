"""g2o refinement of the relative Sim(3) between two keyframes (ORB-SLAM's ``OptimizeSim3``).

One ``VertexSim3Expmap`` holds ``dst_from_src`` (g2o's ``S12`` with keyframe 1 = dst, 2 = src).
Every match (p_src, p_dst) gives two edges against fixed ``VertexPointXYZ`` vertices:
``EdgeSim3ProjectXYZ`` projects ``p_src`` through ``dst_from_src`` into the dst image and
``EdgeInverseSim3ProjectXYZ`` projects ``p_dst`` through its inverse into the src image, each with
a Huber kernel. The g2opy binding does not expose the vertex's camera parameters
(``_focal_length``, ``_principle_point``: 1 and 0 by default), so measurements are normalised
image coordinates ``((u - cx) / fx, (v - cy) / fy)`` with information ``diag(fx^2, fy^2) /
sigma^2``: g2o's chi2 is then exactly the pixel chi2 ``|e_px|^2 / sigma^2``. Nor does it expose
``_fix_scale``: with ``fix_scale`` the log-scale is pinned by an ``EdgeSim3`` prior to a fixed
identity vertex that weighs only the scale component, with 10x the total information of the
projection edges (the scale stays within ~1e-6 of 1, and Levenberg-Marquardt, whose initial
damping follows the largest Hessian entry, still converges in 1-2 iterations; a much heavier
prior slows it down), and the returned matrix has scale exactly 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

import g2opy as g2o

from slam.geometry.sim3 import make_sim3, project_points, sim3_decompose, sim3_inverse
from slam.optim.ba import _EdgeAdder

__all__ = ["Sim3RefineResult", "optimize_sim3", "sim3_to_g2o", "sim3_from_g2o", "CHI2_SIM3"]

CHI2_SIM3 = 10.0  # ORB-SLAM's loop closing: th2 = 10 for OptimizeSim3
_SCALE_PRIOR_FACTOR = 10.0  # scale prior weight / total information of the projection edges


def sim3_to_g2o(dst_from_src: np.ndarray) -> "g2o.Sim3":
    """g2o ``Sim3`` of a (4, 4) similarity (its rotation part is re-orthonormalised by g2o's quaternion)."""
    s, R, t = sim3_decompose(dst_from_src)
    return g2o.Sim3(np.ascontiguousarray(R), np.ascontiguousarray(t), float(s))


def sim3_from_g2o(sim: "g2o.Sim3") -> np.ndarray:
    """(4, 4) float64 ``[[s R, t], [0, 1]]`` of a g2o ``Sim3``."""
    return make_sim3(float(sim.scale()), np.asarray(sim.rotation().matrix(), dtype=np.float64),
                     np.asarray(sim.translation(), dtype=np.float64))


@dataclass
class Sim3RefineResult:
    """Output of :func:`optimize_sim3`.

    dst_from_src: (4, 4) float64 refined similarity (scale exactly 1 with ``fix_scale``).
    inliers: (N,) bool, matches whose two reprojection chi2 are both <= the threshold (and in
        front of both cameras) after the last round.
    n_inliers: ``inliers.sum()``; ORB-SLAM accepts a loop with >= 20.
    chi2: (N,) float64 larger of the two pixel chi2 of each match at the returned estimate
        (inf behind a camera).
    rounds: optimisation rounds run (1 when fewer than ``min_inliers`` survived the first).
    """

    dst_from_src: np.ndarray
    inliers: np.ndarray
    n_inliers: int
    chi2: np.ndarray
    rounds: int


def _pair_chi2(dst_from_src, p_src, p_dst, uv_src, uv_dst, K_src, K_dst, w_src, w_dst) -> np.ndarray:
    """(N,) max of the dst-image and src-image chi2 of each match (inf behind a camera)."""
    A, t = dst_from_src[:3, :3], dst_from_src[:3, 3]
    inv = sim3_inverse(dst_from_src)
    uv1, f1 = project_points(K_dst, p_src @ A.T + t)
    uv2, f2 = project_points(K_src, p_dst @ inv[:3, :3].T + inv[:3, 3])
    c1 = w_dst * np.sum((uv1 - uv_dst) ** 2, axis=1)
    c2 = w_src * np.sum((uv2 - uv_src) ** 2, axis=1)
    return np.where(f1 & f2, np.maximum(c1, c2), np.inf)


def optimize_sim3(dst_from_src: np.ndarray, p_src: np.ndarray, p_dst: np.ndarray,
                  uv_src: np.ndarray, uv_dst: np.ndarray, K_src: np.ndarray,
                  K_dst: Optional[np.ndarray] = None, sigma2_src: Optional[np.ndarray] = None,
                  sigma2_dst: Optional[np.ndarray] = None, *, fix_scale: bool = False,
                  chi2_threshold: float = CHI2_SIM3, iterations: Sequence[int] = (5, 10, 5),
                  min_inliers: int = 10) -> Sim3RefineResult:
    """Refine the Sim(3) (or SE(3) with ``fix_scale``) between two keyframes on matched map points.

    dst_from_src: (4, 4) initial similarity (e.g. from :func:`slam.geometry.sim3.solve_sim3_ransac`),
        ``p_dst ~= s R p_src + t``.
    p_src, p_dst: (N, 3) float64 matched map points in the src / dst keyframe's camera frame.
    uv_src, uv_dst: (N, 2) float64 their keypoints in the src / dst image (undistorted px).
    K_src, K_dst: (3, 3) pinhole matrices (zero skew; K_dst defaults to K_src).
    sigma2_src, sigma2_dst: (N,) keypoint variances in px^2 (default 1).
    Rounds as ORB-SLAM: ``iterations[0]`` LM iterations with Huber kernels (delta
    sqrt(chi2_threshold)) on all matches; matches with either chi2 > ``chi2_threshold`` (or behind
    a camera) are dropped; if at least ``min_inliers`` remain, ``iterations[1]`` more iterations
    (``iterations[2]`` when nothing was dropped) and a final classification of the kept matches.
    Returns a :class:`Sim3RefineResult`.
    """
    init = np.asarray(dst_from_src, dtype=np.float64)
    if init.shape != (4, 4):
        raise ValueError(f"dst_from_src must be (4, 4), got {init.shape}")
    p_src = np.ascontiguousarray(np.asarray(p_src, dtype=np.float64))
    n = p_src.shape[0] if p_src.ndim == 2 else -1
    p_dst = np.ascontiguousarray(np.asarray(p_dst, dtype=np.float64))
    uv_src = np.asarray(uv_src, dtype=np.float64)
    uv_dst = np.asarray(uv_dst, dtype=np.float64)
    if n < 0 or p_src.shape != (n, 3) or p_dst.shape != (n, 3) or uv_src.shape != (n, 2) or uv_dst.shape != (n, 2):
        raise ValueError(f"p_src, p_dst must be (N, 3) and uv_src, uv_dst (N, 2), got {p_src.shape}, "
                         f"{p_dst.shape}, {uv_src.shape}, {uv_dst.shape}")
    K_src = np.asarray(K_src, dtype=np.float64)
    K_dst = K_src if K_dst is None else np.asarray(K_dst, dtype=np.float64)
    if K_src.shape != (3, 3) or K_dst.shape != (3, 3):
        raise ValueError(f"K_src and K_dst must be (3, 3), got {K_src.shape} and {K_dst.shape}")
    w_src = 1.0 / (np.ones(n) if sigma2_src is None else np.asarray(sigma2_src, dtype=np.float64).reshape(-1))
    w_dst = 1.0 / (np.ones(n) if sigma2_dst is None else np.asarray(sigma2_dst, dtype=np.float64).reshape(-1))
    if w_src.shape != (n,) or w_dst.shape != (n,):
        raise ValueError(f"sigma2_src and sigma2_dst must be ({n},)")
    it = [int(i) for i in iterations]
    if len(it) != 3 or min(it) < 1:
        raise ValueError(f"iterations must be three positive counts (first, after drops, no drops), got {iterations}")
    if fix_scale:
        s0, R0, t0 = sim3_decompose(init)
        init = make_sim3(1.0, R0, t0)
    args = (p_src, p_dst, uv_src, uv_dst, K_src, K_dst, w_src, w_dst)
    if n == 0:
        return Sim3RefineResult(init.copy(), np.zeros(0, dtype=bool), 0, np.zeros(0), 0)

    opt = g2o.SparseOptimizer()
    opt.set_algorithm(g2o.OptimizationAlgorithmLevenberg(g2o.BlockSolverX(g2o.LinearSolverDenseX())))
    vs = g2o.VertexSim3Expmap()
    vs.set_id(0)
    vs.set_estimate(sim3_to_g2o(init))
    opt.add_vertex(vs)
    # normalised measurements: residual_px = diag(fx, fy) @ residual_normalised
    m_dst = (uv_dst - K_dst[:2, 2]) / np.diag(K_dst)[:2]
    m_src = (uv_src - K_src[:2, 2]) / np.diag(K_src)[:2]
    info_dst = np.zeros((n, 2, 2))
    info_dst[:, [0, 1], [0, 1]] = w_dst[:, None] * np.diag(K_dst)[:2] ** 2
    info_src = np.zeros((n, 2, 2))
    info_src[:, [0, 1], [0, 1]] = w_src[:, None] * np.diag(K_src)[:2] ** 2
    kernel = g2o.RobustKernelHuber(float(np.sqrt(chi2_threshold)))
    adder = _EdgeAdder(opt, 2 * n + 1)
    edges = []
    # vertex 1 + 2i: p_src[i] (projected into dst), vertex 2 + 2i: p_dst[i] (projected into src)
    for i in range(2 * n):
        j = i >> 1
        pv = g2o.VertexPointXYZ()
        pv.set_id(1 + i)
        pv.set_fixed(True)
        if i & 1:
            pv.set_estimate(p_dst[j])
            e = g2o.EdgeInverseSim3ProjectXYZ()
            e.set_measurement(m_src[j])
            e.set_information(info_src[j])
        else:
            pv.set_estimate(p_src[j])
            e = g2o.EdgeSim3ProjectXYZ()
            e.set_measurement(m_dst[j])
            e.set_information(info_dst[j])
        opt.add_vertex(pv)
        e.set_vertex(0, pv)
        e.set_vertex(1, vs)
        e.set_robust_kernel(kernel)
        adder.add(e)
        edges.append(e)
    if fix_scale:  # prior on the log-scale only: error = log(I * I * S^-1), sigma component = -log(s)
        anchor = g2o.VertexSim3Expmap()
        anchor.set_id(2 * n + 1)
        anchor.set_fixed(True)
        opt.add_vertex(anchor)
        prior = g2o.EdgeSim3()
        prior.set_vertex(0, anchor)
        prior.set_vertex(1, vs)
        prior.set_measurement(g2o.Sim3())
        weight = _SCALE_PRIOR_FACTOR * float(np.trace(info_dst.sum(axis=0)) + np.trace(info_src.sum(axis=0)))
        prior.set_information(np.diag([0.0] * 6 + [weight]))
        adder.add(prior)
    adder.flush()

    def estimate() -> np.ndarray:
        est = sim3_from_g2o(vs.estimate())
        if fix_scale:
            _, R, t = sim3_decompose(est)
            est = make_sim3(1.0, R, t)
        return est

    opt.initialize_optimization(0)
    opt.optimize(it[0])
    current = estimate()
    chi2 = _pair_chi2(current, *args)
    kept = chi2 <= chi2_threshold
    for i in np.flatnonzero(~kept).tolist():
        edges[2 * i].set_level(1)
        edges[2 * i + 1].set_level(1)
    if int(kept.sum()) < min_inliers:
        return Sim3RefineResult(current, kept, int(kept.sum()), chi2, 1)
    opt.initialize_optimization(0)
    opt.optimize(it[1] if not kept.all() else it[2])
    current = estimate()
    chi2 = _pair_chi2(current, *args)
    inliers = kept & (chi2 <= chi2_threshold)
    return Sim3RefineResult(current, inliers, int(inliers.sum()), chi2, 2)
