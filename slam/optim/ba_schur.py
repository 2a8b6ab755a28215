"""Local bundle adjustment in numpy: Levenberg-Marquardt on the Schur complement.

Same problem, model, robust scheme and result as :func:`slam.optim.ba.bundle_adjust` (g2o):
monocular reprojection edges and RGB-D/stereo edges with ORB-SLAM's virtual right coordinate
``ur = u - bf / z``; Huber kernels (deltas sqrt(5.991) / sqrt(7.815)) in a first stage of
``iterations`` Levenberg-Marquardt steps; then the observations with chi2 above 5.991 / 7.815
(or behind the camera) are dropped and ``iterations`` more steps run without the kernel. The
damping follows g2o's ``OptimizationAlgorithmLevenberg`` (initial lambda 1e-5 x the largest
diagonal entry, gain ratio, at most 10 tries per step), so both solvers reach the same optimum.
The initial damping can be set (``tau``, ``mapping.ba_tau``): g2o's 1e-5 x the largest diagonal
entry (the default, ``TAU``) damps the weakly constrained points so much (the largest entry is a
keyframe's, summed over thousands of observations) that 5 + 5 steps leave the free keyframes of a
monocular KITTI window 0.8 cm (median) from the optimum; 1e-8 gets within 0.01 cm in the same
steps. Converged windows are not better everywhere (docs/benchmarks.md section 13, "the local
BA's initial damping"), so g2o's value stays the default.

Why a second solver: a local BA is small (about 6 free keyframes, 1-3k points, 5-10k
observations), and g2opy spends about as long building its graph in Python, one edge object
at a time with the GIL held, as it does optimising. Here every step is a handful of
vectorised operations: Jacobians for all observations at once (laid out component first,
observations last, so each operation runs over every observation), the damped 3x3 point
blocks factored together in closed form ((V + lam)^-1 = M^T M), and the reduced camera system
(6n x 6n for n free keyframes, dense) formed as U - Z Z^T by one symmetric rank-k update, where
Z = W M^T is the dense coupling matrix between the free keyframes and the points (6n x 3p).
That matrix grows with keyframes times points, so a global problem instead forms the reduced
system in chunks of points (``layout="chunked"``, which the global BAs ask for; ``"auto"`` picks
it above ``MAX_DENSE`` entries, so local windows keep the dense layout): the points are grouped
by the keyframes that see them, and each group's coupling matrix is dense over those keyframes
only, so its rank-k update touches their block of the reduced system alone. On a global BA of 49
keyframes and 7k points this forms the reduced system 4x faster than the dense layout and 6x
faster than scipy's sparse product; the result is the same to rounding. The reduced system
itself stays dense (6n x 6n): :func:`fits` says whether a problem is small enough for it
(``MAX_REDUCED_KEYFRAMES``); a larger one should go to g2o.

Parametrisation: poses are updated on the left, ``cam_from_world <- exp(xi) @ cam_from_world``
with ``xi = [rho (3, translation), phi (3, rotation)]``; points additively.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dsyrk

from slam.geometry.se3 import se3_exp
from slam.optim.ba import (CHI2_MONO, CHI2_STEREO, BAProblem, BAResult, BAStop,
                           _index_of, _validate, residual_chi2)

__all__ = ["bundle_adjust_schur", "dense_size", "fits", "MAX_DENSE", "MAX_REDUCED_KEYFRAMES", "TAU"]

MAX_TRIES = 10  # damping increases per step before giving up (g2o's maxTrialsAfterFailure)
TAU = 1e-5  # initial lambda = TAU * largest diagonal entry of the Hessian (g2o's)
MAX_DENSE = 4_000_000  # largest dense coupling matrix (entries, 32 MB); above it the reduced system is formed in chunks
MAX_REDUCED_KEYFRAMES = 600  # most free keyframes for the dense reduced system (3600^2 entries, 104 MB; one Cholesky took 49 ms at 300 keyframes on a 2-core AMD EPYC, and grows as the cube)
CHUNK_POINTS = 128  # points per chunk in the chunked layout (a cost setting: the result is the same to rounding)
CHUNKS_PER_PAUSE = 8  # a pause (the background global BA's wait for the frame path) between groups of this many chunks
KF_PER_PAUSE = 16  # and between groups of this many keyframes' Hessian blocks
LONG_SPAN = 8  # points seen by keyframes more than this many free slots apart are chunked apart from the others


def dense_size(problem: BAProblem) -> int:
    """Entries of the dense (6 x free keyframes, 3 x points) coupling matrix this solver builds
    (8 bytes each, one such matrix alive at a time, per damping try): small for a local window, large for a
    global adjustment, which should go to g2o (:func:`slam.optim.ba.bundle_adjust`)."""
    n_free = _n_free_keyframes(problem)
    if n_free == 0:
        return 0
    pts = np.sort(np.asarray(problem.obs_pt, dtype=np.int64).reshape(-1))
    n_pts = 1 + int(np.count_nonzero(np.diff(pts)))
    return int(18 * n_free * n_pts)


def fits(problem: BAProblem) -> bool:
    """Whether this solver takes the problem: at most ``MAX_REDUCED_KEYFRAMES`` free keyframes
    with observations (the reduced system is dense)."""
    return _n_free_keyframes(problem) <= MAX_REDUCED_KEYFRAMES


def _n_free_keyframes(problem: BAProblem) -> int:
    """Keyframes of problem that are not fixed and have at least one observation."""
    obs_kf = np.asarray(problem.obs_kf, dtype=np.int64).reshape(-1)
    if obs_kf.size == 0:
        return 0
    kf_ids = np.asarray(problem.kf_ids, dtype=np.int64).reshape(-1)
    used = np.zeros(kf_ids.size, dtype=bool)
    used[_index_of(kf_ids, obs_kf, "keyframe")] = True
    return int(np.count_nonzero(used & ~np.asarray(problem.fixed, dtype=bool).reshape(-1)))


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
        # the free observations grouped by keyframe: each keyframe's Hessian block is one product
        free_slot = self.free_slot = self.obs_slot[f]  # (F,) keyframe slot of each free observation
        self.kf_order = np.argsort(free_slot, kind="stable")  # (F,) into the free observations
        self.kf_bounds = np.searchsorted(free_slot[self.kf_order], np.arange(self.n + 1))
        # flat index into the dense (6n, 3p) coupling matrix of entry (i, j) of free observation o,
        # in the (6, 3, F) layout of the per-observation blocks
        rows = free_slot[None, None, :] * 6 + np.arange(6)[:, None, None]
        cols = self.free_pslot[None, None, :] * 3 + np.arange(3)[None, :, None]
        self.w_index = (rows * (3 * self.p) + cols).ravel()
        self.w_size = 18 * self.n * self.p
        # one observation per (keyframe, point): the blocks can be written, not summed
        key = free_slot * max(self.p, 1) + self.free_pslot
        self.unique_blocks = bool(np.unique(key).size == key.size)
        self.chunks: Optional[list] = None

    def chunk(self, pause: Callable[[], None]) -> None:
        """Build the chunked layout of the reduced system (once per problem). The points with free
        observations are ordered by whether their observers span more than LONG_SPAN slots, then by
        their first and last observer, and cut into CHUNK_POINTS-point chunks; each chunk keeps its
        dense (6 r, 3 q) coupling matrix (r keyframes, q points) in one buffer (``chunk_index``: where
        each free observation's (6, 3) block goes, in ``chunk_obs`` order), and where each entry of
        its (6 r, 6 r) product goes in the reduced system (``chunk_s_index``). ``pause`` is called
        every ``CHUNKS_PER_PAUSE`` chunks."""
        slot = self.free_slot
        ps = self.free_pslot  # (F,) non-decreasing point slot
        first = np.flatnonzero(np.r_[True, np.diff(ps) != 0]) if ps.size else np.zeros(0, dtype=np.int64)
        self.free_pt_first = first  # segment starts of the free observations per point
        self.free_pt = ps[first]  # point slot of each segment
        self.free_rows = (slot[None, :] * 6 + np.arange(6)[:, None]).ravel()  # (6F,) reduced-system row of each (6, F) entry
        self.chunks = []
        if ps.size == 0:
            return
        lo, hi = np.minimum.reduceat(slot, first), np.maximum.reduceat(slot, first)
        order = np.lexsort((hi, lo, hi - lo > LONG_SPAN))  # segments, in chunk order
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        seg_of_obs = np.repeat(np.arange(first.size), np.diff(np.r_[first, ps.size]))
        obs_order = np.argsort(rank[seg_of_obs], kind="stable")
        obs_rank = rank[seg_of_obs][obs_order]
        bounds = np.searchsorted(obs_rank, np.arange(0, order.size + CHUNK_POINTS, CHUNK_POINTS))
        self.chunk_obs = obs_order  # free observations, chunk after chunk
        index = np.empty((6, 3, obs_order.size), dtype=np.int64)  # where each entry goes in the chunks' buffer
        s_index = []  # where each entry of each chunk's (6r, 6r) product goes in the (6n, 6n) reduced system
        offset = 0
        for c in range(bounds.size - 1):
            if c and c % CHUNKS_PER_PAUSE == 0:
                pause()
            a, b = bounds[c], bounds[c + 1]
            if a == b:
                continue
            kfs, loc = np.unique(slot[obs_order[a:b]], return_inverse=True)
            r, q = kfs.size, int(min(CHUNK_POINTS, order.size - c * CHUNK_POINTS))
            pl = obs_rank[a:b] - c * CHUNK_POINTS  # local point index
            rows = loc[None, None, :] * 6 + np.arange(6)[:, None, None]
            cols = pl[None, None, :] * 3 + np.arange(3)[None, :, None]
            index[:, :, a:b] = offset + rows * (3 * q) + cols
            rs = (kfs[:, None] * 6 + np.arange(6)).ravel()
            s_index.append((rs[:, None] * (6 * self.n) + rs[None, :]).ravel())
            self.chunks.append((offset, r, q))
            offset += 18 * r * q
        self.chunk_index = index.ravel()
        self.chunk_size = offset
        self.chunk_s_index = np.concatenate(s_index)

    def dense(self, blocks: np.ndarray) -> np.ndarray:
        """(6, 3, F) per free observation -> the dense (6n, 3p) coupling matrix."""
        if self.unique_blocks:
            out = np.zeros(self.w_size)
            out[self.w_index] = blocks.ravel()
        else:
            out = np.bincount(self.w_index, weights=blocks.ravel(), minlength=self.w_size)
        return out.reshape(6 * self.n, 3 * self.p)


class _Model:
    """Residuals, robust weights and Jacobians of all observations (sorted by point) at one
    estimate. Arrays are laid out component first, observations last ((3, M), (3, 3, M)), so
    every elementwise operation runs over all observations at once."""

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
        # global problems (chunked layout): each observation's own product, O(M) instead of O(p nk)
        self.obs_pt = g.used_pt[g.obs_pslot] if g.chunks is not None else None

    def project(self, poses, pts):
        """-> (pc (3,M) camera-frame points, e (3,M) measurement - projection, ok (M,) depth > 0)."""
        if self.obs_pt is None:
            # every used point in every keyframe (one matrix product), then each observation's pair
            Rt = poses[:, :3, :3].transpose(2, 0, 1).reshape(3, 3 * self.nk)  # [R_0^T | R_1^T | ...]
            pc = ((pts[self.used_pt] @ Rt).reshape(-1, self.nk, 3) + poses[None, :, :3, 3]).reshape(-1, 3)[self.flat].T
        else:
            R = np.take(poses[:, :3, :3].transpose(1, 2, 0), self.kf_idx, axis=2)  # (3,3,M)
            X = np.take(pts.T, self.obs_pt, axis=1)  # (3,M)
            pc = np.take(poses[:, :3, 3].T, self.kf_idx, axis=1) + R[:, 0] * X[0] + R[:, 1] * X[1] + R[:, 2] * X[2]
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


def _outer_sum(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """sum_r A[r, :, None] * B[r, None, :]: (R,a,N), (R,b,N) -> (a,b,N), A^T B per observation
    (einsum: several times faster here than broadcasting, which loops over the small axes)."""
    return np.einsum("rin,rjn->ijn", A, B)


def _linearise(model: _Model, g: _Graph, poses, pts, active, robust: bool, proj, pause: Callable[[], None]):
    """Blocks of the normal equations at the current estimate, active observations only.
    proj: model.project at this estimate, if already computed (else None); pause: called between
    its pieces (after the point Jacobians, after the point blocks, after the keyframe Jacobians,
    after the coupling blocks, after their regrouping by keyframe and every KF_PER_PAUSE
    keyframes' Hessian blocks).
    -> (U (n,6,6), bc (n,6), V (3,3,p), bp (p,3), Wo (6,3,F) per free observation)."""
    pc, e3, ok = model.project(poses, pts) if proj is None else proj
    chi2 = model.chi2(e3, ok)
    om = np.where(active & ok, model.w, 0.0)
    if robust:
        big = chi2 > model.delta2
        om = np.where(big, om * np.sqrt(model.delta2 / np.where(big, chi2, 1.0)), om)
    so = np.sqrt(om)  # every Jacobian row and residual below is scaled by sqrt(weight)
    px, py, pz = pc
    iz = 1.0 / np.where(ok, pz, 1.0)
    iz2 = iz * iz
    st = model.st
    # rows of d projection / d camera point: [a, 0, c0], [0, b, c1], stereo [a2, 0, c2]
    a = so * model.fx * iz
    b = so * model.fy * iz
    c0 = -so * model.fx * px * iz2
    c1 = -so * model.fy * py * iz2
    a2 = a * st
    c2 = (c0 + so * model.bf * iz2) * st
    # (3,3,M) each observation's rotation (np.take keeps the observation axis contiguous; fancy
    # indexing on the last axis would not, and einsum is then ten times slower)
    R = np.take(poses[:, :3, :3].transpose(1, 2, 0), model.kf_idx, axis=2)
    Bx = np.empty((3, 3, iz.size))  # d residual / d point = Jp R, (row, coordinate, observation)
    np.multiply(a, R[0], out=Bx[0])
    Bx[0] += c0 * R[2]
    np.multiply(b, R[1], out=Bx[1])
    Bx[1] += c1 * R[2]
    np.multiply(a2, R[0], out=Bx[2])
    Bx[2] += c2 * R[2]
    se = e3 * so  # (3,M)
    pause()
    V = np.add.reduceat(_outer_sum(Bx, Bx), g.pt_starts, axis=2)  # (3,3,p)
    bp = np.add.reduceat(np.einsum("rin,rn->in", Bx, se), g.pt_starts, axis=1).T  # (p,3)
    pause()
    # d residual / d xi = Jp [I | -[pc]x], free observations only
    f = g.free_obs
    a, b, c0, c1, a2, c2 = a[f], b[f], c0[f], c1[f], a2[f], c2[f]
    x, y, z = px[f], py[f], pz[f]
    Ac = np.zeros((3, 6, f.size))
    Ac[0, 0], Ac[0, 2], Ac[0, 3], Ac[0, 4], Ac[0, 5] = a, c0, c0 * y, a * z - c0 * x, -a * y
    Ac[1, 1], Ac[1, 2], Ac[1, 3], Ac[1, 4], Ac[1, 5] = b, c1, c1 * y - b * z, -c1 * x, b * x
    Ac[2, 0], Ac[2, 2], Ac[2, 3], Ac[2, 4], Ac[2, 5] = a2, c2, c2 * y, a2 * z - c2 * x, -a2 * y
    pause()
    Wo = _outer_sum(Ac, np.take(Bx, f, axis=2))  # (6,3,F) coupling block of each free observation
    pause()
    # per keyframe: U_k = A_k A_k^T, A_k (6, 3 F_k), its observations' rows side by side
    order = g.kf_order
    As = np.take(Ac, order, axis=2).transpose(1, 2, 0).reshape(6, -1)
    pause()
    es = np.take(se, f[order], axis=1).T.reshape(-1)
    U = np.empty((g.n, 6, 6))
    bc = np.empty((g.n, 6))
    for k in range(g.n):
        if k % KF_PER_PAUSE == 0:
            pause()
        s, t = 3 * g.kf_bounds[k], 3 * g.kf_bounds[k + 1]
        Ak = As[:, s:t]
        U[k] = Ak @ Ak.T
        bc[k] = Ak @ es[s:t]
    return U, bc, V, bp, Wo


def _solve(g: _Graph, U, bc, V, bp, Wo, lam: float, pause: Callable[[], None]):
    """Damped step (dc (n,6), dp (p,3)) or None where the system is not positive definite.
    With (V + lam)^-1 = M^T M per point (M lower triangular) and Z = W M^T (dense (6n, 3p):
    local windows keep it small), the reduced system is (U + lam - Z Z^T) dc = bc - Z M bp
    (Z Z^T by a symmetric rank-k update), and dp = M^T (M bp - Z^T dc). With ``g.chunks`` set,
    Z is never formed: Z Z^T is summed over the chunks, and Z times a vector per observation;
    ``pause`` is then called every ``CHUNKS_PER_PAUSE`` chunks."""
    M = _chol_inv3(V, lam)
    if M is None:
        return None
    n, p = g.n, g.p
    Mbp = np.einsum("ijp,pj->pi", M, bp)  # (p,3)
    if n == 0:
        return np.zeros((0, 6)), np.einsum("jip,pj->pi", M, Mbp)
    Mf = np.take(M, g.free_pslot, axis=2)  # (3,3,F)
    Zo = np.einsum("ijf,kjf->ikf", Wo, Mf)  # W M^T per free observation
    pause()
    S = _block_diag(U)
    S[np.diag_indices(6 * n)] += lam
    if g.chunks is not None:
        return _solve_chunked(g, S, bc, M, Mbp, Zo, pause)
    Z = g.dense(Zo)
    S = dsyrk(-1.0, Z.T, beta=1.0, c=S, trans=1, lower=0, overwrite_c=1)  # upper triangle of S - Z Z^T
    rhs = bc.reshape(-1) - Z @ Mbp.reshape(-1)
    dc = _factor_solve(S, rhs)
    if dc is None:
        return None
    r = Mbp - (Z.T @ dc).reshape(p, 3)
    return dc.reshape(n, 6), np.einsum("jip,pj->pi", M, r)


def _factor_solve(S: np.ndarray, rhs: np.ndarray) -> Optional[np.ndarray]:
    """S^-1 rhs by Cholesky of S's upper triangle (S is overwritten); None if S is not positive
    definite or the solution is not finite."""
    try:
        cf = cho_factor(S, lower=False, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    dc = cho_solve(cf, rhs, check_finite=False)
    return dc if np.all(np.isfinite(dc)) else None


def _solve_chunked(g: _Graph, S, bc, M, Mbp, Zo, pause: Callable[[], None]):
    """_solve's reduced system in the chunked layout (S: the damped block diagonal (6n, 6n))."""
    n, p = g.n, g.p
    if g.chunks:  # else no free observation: S is the damped block diagonal
        blocks = np.take(Zo, g.chunk_obs, axis=2).ravel()
        if g.unique_blocks:
            buf = np.zeros(g.chunk_size)
            buf[g.chunk_index] = blocks
        else:
            buf = np.bincount(g.chunk_index, weights=blocks, minlength=g.chunk_size)
        products = []
        for c, (offset, r, q) in enumerate(g.chunks):
            if c % CHUNKS_PER_PAUSE == 0:
                pause()
            Zc = buf[offset:offset + 18 * r * q].reshape(6 * r, 3 * q)
            products.append(dsyrk(1.0, Zc.T, trans=1, lower=0).ravel())  # upper triangle (the keyframe rows increase)
        pause()
        S -= np.bincount(g.chunk_s_index, weights=np.concatenate(products), minlength=S.size).reshape(S.shape)
        pause()
    zm = np.einsum("ikf,fk->if", Zo, Mbp[g.free_pslot])  # (6,F) Z M bp per free observation
    rhs = bc.reshape(-1) - np.bincount(g.free_rows, weights=zm.ravel(), minlength=6 * n)
    dc = _factor_solve(S, rhs)
    if dc is None:
        return None
    pause()
    dcr = dc.reshape(n, 6)
    zt = np.einsum("ikf,fi->kf", Zo, dcr[g.free_slot])  # (3,F) Z^T dc per free observation
    ztp = np.zeros((p, 3))
    if g.free_pt_first.size:
        ztp[g.free_pt] = np.add.reduceat(zt, g.free_pt_first, axis=1).T
    return dcr, np.einsum("jip,pj->pi", M, Mbp - ztp)


def _chol_inv3(V: np.ndarray, lam: float) -> Optional[np.ndarray]:
    """M (3,3,p) lower triangular with (V + lam I)^-1 = M^T M, M = L^-1 for the Cholesky factor L
    of each damped symmetric 3x3 block of V (3,3,p) (closed form); None if a block is not positive
    definite."""
    a, b, c = V[0, 0] + lam, V[0, 1], V[0, 2]
    d, e, f = V[1, 1] + lam, V[1, 2], V[2, 2] + lam
    if not np.all(a > 0):
        return None
    l00 = np.sqrt(a)
    l10, l20 = b / l00, c / l00
    t11 = d - l10 * l10
    if not np.all(t11 > 0):
        return None
    l11 = np.sqrt(t11)
    l21 = (e - l20 * l10) / l11
    t22 = f - l20 * l20 - l21 * l21
    if not np.all(t22 > 0):
        return None
    l22 = np.sqrt(t22)
    out = np.zeros_like(V)
    m00, m11, m22 = 1.0 / l00, 1.0 / l11, 1.0 / l22
    m10 = -l10 * m00 * m11
    out[0, 0], out[1, 1], out[2, 2], out[1, 0] = m00, m11, m22, m10
    out[2, 1] = -l21 * m11 * m22
    out[2, 0] = -(l20 * m00 + l21 * m10) * m22
    return out


def _block_diag(U: np.ndarray) -> np.ndarray:
    n = U.shape[0]
    out = np.zeros((6 * n, 6 * n), order="F")
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


def _no_pause() -> None:
    """The pause of a bundle adjustment that nobody waits in."""


def _levenberg(model, g, poses, pts, active, robust, iterations, pause, stop, tau, ftol=0.0):
    """``iterations`` g2o-style Levenberg steps, initial lambda ``tau`` x the largest diagonal
    entry; fewer when an accepted step lowers the cost by at most ``ftol`` of it (0: never).
    -> (poses, pts, iterations run)."""
    proj = model.project(poses, pts)
    pause()
    cost = model.cost(model.chi2(proj[1], proj[2]), active & proj[2], robust)
    lam, ni, run = None, 2.0, 0
    for _ in range(int(iterations)):
        if stop is not None and stop.requested:
            break
        pause()
        U, bc, V, bp, Wo = _linearise(model, g, poses, pts, active, robust, proj, pause)
        if lam is None:
            diag = np.r_[np.einsum("kii->ki", U).ravel(), np.einsum("iip->pi", V).ravel()]
            lam = tau * float(diag.max()) if diag.size else tau
        run += 1
        accepted = converged = False
        for _try in range(MAX_TRIES):
            pause()
            step = _solve(g, U, bc, V, bp, Wo, lam, pause)
            if step is not None:
                dc, dp = step
                pause()
                new_poses, new_pts = _apply(g, poses, pts, dc, dp)
                pause()
                new_proj = model.project(new_poses, new_pts)
                new_cost = model.cost(model.chi2(new_proj[1], new_proj[2]), active & new_proj[2], robust)
                dx = np.r_[dc.ravel(), dp.ravel()]
                scale = float(dx @ (lam * dx + np.r_[bc.ravel(), bp.ravel()])) + 1e-3
                rho = (cost - new_cost) / scale
                if np.isfinite(new_cost) and rho > 0:
                    lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                    ni = 2.0
                    converged = cost - new_cost <= ftol * cost
                    poses, pts, cost, proj, accepted = new_poses, new_pts, new_cost, new_proj, True
                    break
            lam *= ni
            ni *= 2.0
        if not accepted or converged:
            break
    return poses, pts, run


def bundle_adjust_schur(problem: BAProblem, iterations: int = 10, robust: bool = True, two_stage: bool = True,
                        pause: Optional[Callable[[], None]] = None, stop: Optional[BAStop] = None,
                        tau: float = TAU, layout: str = "auto", ftol: float = 0.0) -> BAResult:
    """:func:`slam.optim.ba.bundle_adjust`'s contract (same arguments but ``edge_chunk`` and
    ``verbose``, same :class:`BAResult`), solved in numpy. ``pause`` is called between pieces of
    work of a few ms at a few thousand points (the background global BA waits there for the frame
    path; 49 keyframes and 7000 points: 4.2 ms of CPU at p90, 13 ms at most, on this CPU):
    between the steps of the setup, before each Levenberg step, five times within its linearisation
    and before every ``KF_PER_PAUSE`` keyframes' Hessian blocks, within each solve of the damped system
    (and every ``CHUNKS_PER_PAUSE`` chunks in the chunked layout), around the step's update and
    before its cost; ``stop`` is polled between steps (an abort after stage 1 skips stage 2).
    ``tau``: the initial damping relative to the largest diagonal entry of the Hessian (the
    default, ``TAU``, takes g2o's steps). ``layout``: how the reduced system is formed, "dense"
    (one coupling matrix), "chunked" (by groups of points) or "auto" (dense up to ``MAX_DENSE``
    entries); the step is the same to rounding. ``ftol``: a stage ends early once an accepted step
    lowers its cost by at most this fraction (Ceres' function tolerance; 0, g2o's way and the
    default: every step runs)."""
    if layout not in ("auto", "dense", "chunked"):
        raise ValueError(f"layout must be auto, dense or chunked, not {layout!r}")
    t_start, c_start = time.perf_counter(), time.process_time()
    if pause is None:
        pause = _no_pause
    pause()
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
    pause()
    srt = np.argsort(pt_idx, kind="stable")  # the solver works on the observations sorted by point
    ks, ps = kf_idx[srt], pt_idx[srt]
    g = _Graph(ks, ps, fixed, nk, npt)
    if layout == "chunked" or (layout == "auto" and 18 * g.n * g.p > MAX_DENSE):
        pause()
        g.chunk(pause)
    pause()
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
                                            pause, stop, tau, ftol)
    aborted = stop is not None and stop.requested
    if two_stage and not aborted:
        chi2, _ = residual_chi2(out_poses[kf_idx, :3, :3], out_poses[kf_idx, :3, 3], out_pts[pt_idx], uv, ur, w, K, bf)
        active = chi2 <= thr
        if active.any():
            out_poses, out_pts, n2 = _levenberg(model, g, out_poses, out_pts, active[srt], False,
                                                iterations, pause, stop, tau, ftol)
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
