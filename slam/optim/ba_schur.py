"""Local bundle adjustment in numpy: Levenberg-Marquardt on the Schur complement.

Same problem, model, robust scheme and result as :func:`slam.optim.ba.bundle_adjust` (g2o):
monocular reprojection edges and RGB-D/stereo edges with ORB-SLAM's virtual right coordinate
``ur = u - bf / z``; Huber kernels (deltas sqrt(5.991) / sqrt(7.815)) in a first stage of
``iterations`` Levenberg-Marquardt steps; then the observations with chi2 above 5.991 / 7.815
(or behind the camera) are dropped and ``iterations`` more steps run without the kernel. The
damping follows g2o's ``OptimizationAlgorithmLevenberg`` (initial lambda 1e-5 x the largest
diagonal entry, gain ratio, at most 10 tries per step), so both solvers reach the same optimum.

Why a second solver: a local BA is small (about 6 free keyframes, 1-3k points, 5-10k
observations), and g2opy spends about as long building its graph in Python, one edge object
at a time with the GIL held, as it does optimising. Here every step is a handful of
vectorised operations: Jacobians for all observations at once, the 3x3 point blocks inverted
together (closed form), and the reduced camera system (6n x 6n for n free keyframes, dense)
formed from a dense coupling matrix between the free keyframes and the points (6n x 3p).
That matrix grows with keyframes times points, so this solver is meant for local windows;
:func:`dense_size` lets a caller send a large (global) problem to g2o instead.

Parametrisation: poses are updated on the left, ``cam_from_world <- exp(xi) @ cam_from_world``
with ``xi = [rho (3, translation), phi (3, rotation)]``; points additively.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from slam.geometry.se3 import se3_exp
from slam.optim.ba import (CHI2_MONO, CHI2_STEREO, BAProblem, BAResult, BAStop,
                           _index_of, _validate, residual_chi2)

__all__ = ["bundle_adjust_schur", "dense_size", "MAX_DENSE"]

MAX_TRIES = 10  # damping increases per step before giving up (g2o's maxTrialsAfterFailure)
TAU = 1e-5  # initial lambda = TAU * largest diagonal entry of the Hessian (g2o)
MAX_DENSE = 4_000_000  # largest dense coupling matrix (entries, 32 MB) a caller should give this solver


def dense_size(problem: BAProblem) -> int:
    """Entries of the dense (6 x free keyframes, 3 x points) coupling matrix this solver builds
    (8 bytes each, three such matrices alive at a time): small for a local window, large for a
    global adjustment, which should go to g2o (:func:`slam.optim.ba.bundle_adjust`)."""
    kf_ids = np.asarray(problem.kf_ids, dtype=np.int64).reshape(-1)
    fixed = np.asarray(problem.fixed, dtype=bool).reshape(-1)
    obs_kf = np.asarray(problem.obs_kf, dtype=np.int64).reshape(-1)
    if obs_kf.size == 0:
        return 0
    used = np.zeros(kf_ids.size, dtype=bool)
    used[_index_of(kf_ids, obs_kf, "keyframe")] = True
    pts = np.sort(np.asarray(problem.obs_pt, dtype=np.int64).reshape(-1))
    n_pts = 1 + int(np.count_nonzero(np.diff(pts)))
    return int(18 * np.count_nonzero(used & ~fixed) * n_pts)


class _Graph:
    """Index structures of one problem, fixed for the whole solve. The observations are given
    sorted by point (so per-point sums are contiguous ``reduceat`` segments)."""

    def __init__(self, kf_idx: np.ndarray, pt_idx: np.ndarray, fixed: np.ndarray, nk: int, npt: int) -> None:
        used_kf = np.zeros(nk, dtype=bool)
        used_kf[kf_idx] = True
        self.free_kf = np.flatnonzero(used_kf & ~fixed)  # problem index of each free slot
        slot = np.full(nk, -1, dtype=np.int64)
        slot[self.free_kf] = np.arange(self.free_kf.size)
        self.n = int(self.free_kf.size)
        first = np.flatnonzero(np.r_[True, np.diff(pt_idx) != 0])  # pt_idx is sorted (np.unique hashes: slower)
        self.used_pt = pt_idx[first]  # problem index of each point slot
        pslot = np.full(npt, -1, dtype=np.int64)
        pslot[self.used_pt] = np.arange(self.used_pt.size)
        self.p = int(self.used_pt.size)
        self.obs_slot = slot[kf_idx]  # (M,) free keyframe slot, -1 = fixed keyframe
        self.obs_pslot = pslot[pt_idx]  # (M,) non-decreasing
        self.pt_starts = first
        f = self.free_obs = np.flatnonzero(self.obs_slot >= 0)
        self.free_pslot = self.obs_pslot[f]
        # (F, n) one-hot of each free observation's keyframe: per-keyframe sums are one product
        self.onehot = np.zeros((f.size, self.n))
        self.onehot[np.arange(f.size), self.obs_slot[f]] = 1.0
        # flat index into the dense (6n, 3p) coupling matrix of entry (i, j) of free observation o,
        # in the (F, 6, 3) layout of the per-observation blocks
        rows = self.obs_slot[f][:, None, None] * 6 + np.arange(6)[None, :, None]
        cols = self.free_pslot[:, None, None] * 3 + np.arange(3)[None, None, :]
        self.w_index = (rows * (3 * self.p) + cols).ravel()
        self.w_size = 18 * self.n * self.p


class _Model:
    """Residuals, robust weights and Jacobians of all observations (sorted by point) at one
    estimate."""

    def __init__(self, uv, ur, w, K, bf, g: _Graph, kf_idx: np.ndarray, nk: int) -> None:
        self.stereo = np.isfinite(ur)
        self.st = self.stereo.astype(np.float64)
        self.meas = np.ascontiguousarray(np.c_[uv, np.where(self.stereo, ur, 0.0)].T)  # (3, M)
        self.w = w
        self.fx, self.fy, self.cx, self.cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
        self.bf = float(bf)
        self.delta2 = np.where(self.stereo, CHI2_STEREO, CHI2_MONO)  # Huber delta^2
        self.used_pt, self.nk, self.kf_idx = g.used_pt, nk, kf_idx
        self.flat = g.obs_pslot * nk + kf_idx  # row of each observation in the (p * nk, 3) all-pairs array

    def project(self, poses, pts):
        """-> (pc (3,M) camera-frame points, e (3,M) measurement - projection, ok (M,) depth > 0)."""
        # every used point in every keyframe (few keyframes: one matrix product), then each observation's pair
        Rt = poses[:, :3, :3].transpose(2, 0, 1).reshape(3, 3 * self.nk)  # [R_0^T | R_1^T | ...]
        pc = ((pts[self.used_pt] @ Rt).reshape(-1, self.nk, 3) + poses[None, :, :3, 3]).reshape(-1, 3)[self.flat].T
        z = pc[2]
        ok = z > 1e-9
        iz = 1.0 / np.where(ok, z, 1.0)
        e = np.empty_like(pc)
        e[0] = self.meas[0] - (self.fx * pc[0] * iz + self.cx)
        e[1] = self.meas[1] - (self.fy * pc[1] * iz + self.cy)
        e[2] = (self.meas[2] - (self.meas[0] - e[0]) + self.bf * iz) * self.st
        return pc, e, ok

    def chi2(self, e, ok):
        return np.where(ok, self.w * (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]), np.inf)

    def cost(self, chi2, active, robust: bool) -> float:
        """g2o's active robust chi2: sum of rho(chi2) over active edges."""
        c = chi2[active]
        if robust:
            d2 = self.delta2[active]
            c = np.where(c <= d2, c, 2.0 * np.sqrt(d2 * c) - d2)
        return float(np.sum(c))


def _linearise(model: _Model, g: _Graph, poses, pts, active, robust: bool):
    """Blocks of the normal equations at the current estimate, active observations only.
    -> (U (n,6,6), bc (n,6), V (p,3,3), bp (p,3), Wo (F,6,3) per free observation, Wd (6n,3p) dense)."""
    pc, e3, ok = model.project(poses, pts)
    chi2 = model.chi2(e3, ok)
    om = np.where(active & ok, model.w, 0.0)
    if robust:
        big = chi2 > model.delta2
        om = np.where(big, om * np.sqrt(model.delta2 / np.where(big, chi2, 1.0)), om)
    px, py, pz = pc
    iz = 1.0 / np.where(ok, pz, 1.0)
    iz2 = iz * iz
    m = iz.size
    st = model.stereo
    Jp = np.zeros((m, 3, 3))  # d projection / d camera point
    Jp[:, 0, 0] = model.fx * iz
    Jp[:, 0, 2] = -model.fx * px * iz2
    Jp[:, 1, 1] = model.fy * iz
    Jp[:, 1, 2] = -model.fy * py * iz2
    Jp[st, 2, 0] = Jp[st, 0, 0]
    Jp[st, 2, 2] = Jp[st, 0, 2] + model.bf * iz2[st]
    # d camera point / d xi = [I | -[pc]x] (column k of -[pc]x is e_k x pc); d camera point / d X = R
    Jc = np.empty((m, 3, 6))
    Jc[:, :, :3] = Jp
    x, y, z = px[:, None], py[:, None], pz[:, None]
    Jc[:, :, 3] = Jp[:, :, 2] * y - Jp[:, :, 1] * z
    Jc[:, :, 4] = Jp[:, :, 0] * z - Jp[:, :, 2] * x
    Jc[:, :, 5] = Jp[:, :, 1] * x - Jp[:, :, 0] * y
    Jx = np.matmul(Jp, poses[model.kf_idx, :3, :3])
    e = e3.T[:, :, None]  # (M,3,1)
    oJxT = (Jx * om[:, None, None]).transpose(0, 2, 1)
    V = np.add.reduceat(np.matmul(oJxT, Jx), g.pt_starts, axis=0)
    bp = np.add.reduceat(np.matmul(oJxT, e)[:, :, 0], g.pt_starts, axis=0)
    f = g.free_obs
    oJcT = (Jc[f] * om[f, None, None]).transpose(0, 2, 1)
    H = g.onehot.T
    U = (H @ np.matmul(oJcT, Jc[f]).reshape(-1, 36)).reshape(g.n, 6, 6)
    bc = H @ np.matmul(oJcT, e[f])[:, :, 0]
    Wo = np.matmul(oJcT, Jx[f])  # (F,6,3) coupling block of each free observation
    Wd = np.bincount(g.w_index, weights=Wo.ravel(), minlength=g.w_size).reshape(6 * g.n, 3 * g.p)
    return U, bc, V, bp, Wo, Wd


def _solve(g: _Graph, U, bc, V, bp, Wo, Wd, lam: float):
    """Damped step (dc (n,6), dp (p,3)) or None where the system is not positive definite.
    Wo: (F,6,3) coupling block per free observation; Wd: the same as a dense (6n, 3p) matrix
    (local windows keep it small)."""
    Vi = _inv_sym3(V, lam)
    if Vi is None:
        return None
    n, p = g.n, g.p
    if n == 0:
        return np.zeros((0, 6)), np.matmul(Vi, bp[:, :, None])[:, :, 0]
    Yo = np.matmul(Wo, Vi[g.free_pslot])  # (F,6,3): W V^-1 per free observation
    Y = np.bincount(g.w_index, weights=Yo.ravel(), minlength=g.w_size).reshape(6 * n, 3 * p)
    S = _block_diag(U) - Y @ Wd.T
    S[np.diag_indices(6 * n)] += lam
    rhs = bc.reshape(-1) - Y @ bp.reshape(-1)
    try:
        L = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        return None
    dc = np.linalg.solve(L.T, np.linalg.solve(L, rhs))
    r = bp - (Wd.T @ dc).reshape(p, 3)
    return dc.reshape(n, 6), np.matmul(Vi, r[:, :, None])[:, :, 0]


def _inv_sym3(V: np.ndarray, lam: float) -> Optional[np.ndarray]:
    """Inverses of the damped symmetric 3x3 blocks V + lam I (adjugate), or None if one is singular."""
    a, b, c = V[:, 0, 0] + lam, V[:, 0, 1], V[:, 0, 2]
    d, e, f = V[:, 1, 1] + lam, V[:, 1, 2], V[:, 2, 2] + lam
    A, B, C = d * f - e * e, c * e - b * f, b * e - c * d
    det = a * A + b * B + c * C
    if not np.all(det > 0):
        return None
    out = np.empty_like(V)
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = A, B, C
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = B, a * f - c * c, b * c - a * e
    out[:, 2, 0], out[:, 2, 1], out[:, 2, 2] = C, b * c - a * e, a * d - b * b
    return out / det[:, None, None]


def _block_diag(U: np.ndarray) -> np.ndarray:
    n = U.shape[0]
    out = np.zeros((6 * n, 6 * n))
    for k in range(n):
        out[6 * k:6 * k + 6, 6 * k:6 * k + 6] = U[k]
    return out


def _apply(g: _Graph, poses, pts, dc, dp):
    new_poses = poses.copy()
    for s, k in enumerate(g.free_kf.tolist()):
        new_poses[k] = se3_exp(np.r_[dc[s, 3:], dc[s, :3]]) @ poses[k]  # se3_exp takes [phi, rho]
    new_pts = pts.copy()
    new_pts[g.used_pt] += dp
    return new_poses, new_pts


def _levenberg(model, g, poses, pts, active, robust, iterations, pause, stop):
    """``iterations`` g2o-style Levenberg steps. -> (poses, pts, iterations run)."""
    pc, e, ok = model.project(poses, pts)
    cost = model.cost(model.chi2(e, ok), active & ok, robust)
    lam, ni, run = None, 2.0, 0
    for _ in range(int(iterations)):
        if stop is not None and stop.requested:
            break
        if pause is not None:
            pause()
        U, bc, V, bp, Wo, Wd = _linearise(model, g, poses, pts, active, robust)
        if lam is None:
            diag = np.r_[np.einsum("kii->ki", U).ravel(), np.einsum("pii->pi", V).ravel()]
            lam = TAU * float(diag.max()) if diag.size else TAU
        run += 1
        accepted = False
        for _try in range(MAX_TRIES):
            step = _solve(g, U, bc, V, bp, Wo, Wd, lam)
            if step is not None:
                dc, dp = step
                new_poses, new_pts = _apply(g, poses, pts, dc, dp)
                pc, e, ok_new = model.project(new_poses, new_pts)
                new_cost = model.cost(model.chi2(e, ok_new), active & ok_new, robust)
                dx = np.r_[dc.ravel(), dp.ravel()]
                scale = float(dx @ (lam * dx + np.r_[bc.ravel(), bp.ravel()])) + 1e-3
                rho = (cost - new_cost) / scale
                if np.isfinite(new_cost) and rho > 0:
                    lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                    ni = 2.0
                    poses, pts, cost, accepted = new_poses, new_pts, new_cost, True
                    break
            lam *= ni
            ni *= 2.0
        if not accepted:
            break
    return poses, pts, run


def bundle_adjust_schur(problem: BAProblem, iterations: int = 10, robust: bool = True, two_stage: bool = True,
                        pause: Optional[Callable[[], None]] = None, stop: Optional[BAStop] = None) -> BAResult:
    """:func:`slam.optim.ba.bundle_adjust`'s contract (same arguments but ``edge_chunk`` and
    ``verbose``, same :class:`BAResult`), solved in numpy. ``pause`` is called before each
    Levenberg step; ``stop`` is polled between steps (an abort after stage 1 skips stage 2)."""
    t_start, c_start = time.perf_counter(), time.process_time()
    kf_ids, poses, fixed, point_ids, pts, obs_kf, obs_pt, uv, w, ur, K = _validate(problem)
    bf = float(problem.bf)
    nk, npt, m = kf_ids.size, point_ids.size, obs_kf.size
    if m == 0:
        return BAResult(poses.copy(), pts.copy(), np.zeros(0, dtype=bool), 0.0, 0.0, 0)
    kf_idx = _index_of(kf_ids, obs_kf, "keyframe")
    pt_idx = _index_of(point_ids, obs_pt, "point")
    stereo = np.isfinite(ur)
    thr = np.where(stereo, CHI2_STEREO, CHI2_MONO)
    chi2_init, _ = residual_chi2(poses[kf_idx, :3, :3], poses[kf_idx, :3, 3], pts[pt_idx], uv, ur, w, K, bf)
    srt = np.argsort(pt_idx, kind="stable")  # the solver works on the observations sorted by point
    ks, ps = kf_idx[srt], pt_idx[srt]
    g = _Graph(ks, ps, fixed, nk, npt)
    model = _Model(uv[srt], ur[srt], w[srt], K, bf, g, ks, nk)
    t_built, c_built = time.perf_counter(), time.process_time()
    if stop is not None and stop.requested:
        outlier = ~(chi2_init <= thr)
        return BAResult(poses.copy(), pts.copy(), outlier, float(np.sum(chi2_init[~outlier])),
                        float(np.sum(chi2_init[~outlier])), 0, aborted=True,
                        timings=_timings(t_start, c_start, t_built, c_built, 0.0, 0.0))
    t0, c0 = time.perf_counter(), time.process_time()
    active = np.ones(m, dtype=bool)
    out_poses, out_pts, n_iter = _levenberg(model, g, poses, pts, active, robust, iterations,
                                            pause, stop)
    aborted = stop is not None and stop.requested
    if two_stage and not aborted:
        chi2, _ = residual_chi2(out_poses[kf_idx, :3, :3], out_poses[kf_idx, :3, 3], out_pts[pt_idx], uv, ur, w, K, bf)
        active = chi2 <= thr
        if active.any():
            out_poses, out_pts, n2 = _levenberg(model, g, out_poses, out_pts, active[srt], False,
                                                iterations, pause, stop)
            n_iter += n2
        aborted = stop is not None and stop.requested
    t_opt, c_opt = time.perf_counter() - t0, time.process_time() - c0
    out_poses[fixed] = poses[fixed]
    chi2_final, _ = residual_chi2(out_poses[kf_idx, :3, :3], out_poses[kf_idx, :3, 3], out_pts[pt_idx], uv, ur, w, K, bf)
    outlier = ~(chi2_final <= thr)
    inl = ~outlier
    return BAResult(cam_from_world=out_poses, points_world=out_pts, obs_outlier=outlier,
                    chi2_before=float(np.sum(chi2_init[inl])), chi2_after=float(np.sum(chi2_final[inl])),
                    iterations=n_iter, aborted=aborted,
                    timings=_timings(t_start, c_start, t_built, c_built, t_opt, c_opt))


def _timings(t_start, c_start, t_built, c_built, t_opt, c_opt) -> dict:
    return {"build": t_built - t_start, "optimize": t_opt, "total": time.perf_counter() - t_start,
            "build_cpu": c_built - c_start, "optimize_cpu": c_opt, "total_cpu": time.process_time() - c_start}
