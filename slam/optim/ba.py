"""Motion-only and full bundle adjustment with g2o (``import g2opy as g2o``), ORB-SLAM2 style.

Conventions
-----------
- Poses are (4, 4) float64 ``cam_from_world``; g2o ``VertexSE3Expmap`` estimates hold the same
  transform as an ``SE3Quat``. World points are (3,) float64 metres in ``VertexPointXYZ``.
- Observations are UNDISTORTED pixels (u, v) float64 with the pinhole K (3, 3) (fx, fy, cx, cy;
  zero skew).
- RGB-D / stereo observations add a virtual right-image coordinate ``ur = u - bf / depth``
  (pixels; ``bf = fx * baseline`` in pixel-metres, e.g. 40 for a virtual 7.6 cm baseline at
  fx=525), giving a 3-vector residual ``(u, v, ur)`` as in ORB-SLAM2. ``NaN`` in ``ur``
  marks a monocular observation.
- ``inv_sigma2`` is the information weight of an observation (1 / sigma_px^2, e.g. 1/scale^(2*level));
  chi2 = inv_sigma2 * |residual|^2, compared with the chi2 95% quantiles 5.991 (2 dof,
  monocular) and 7.815 (3 dof, stereo).

Solver: BlockSolverSE3 + LinearSolverEigenSE3 (sparse Cholesky, Schur complement on the
marginalised points), Levenberg-Marquardt. ``SparseOptimizer.optimize`` releases the GIL.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

try:  # g2opy is a hard dependency of the optimiser, but keep the import error readable
    import g2opy as g2o
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError("slam.optim.ba needs g2opy (pip install g2opy>=2.3)") from exc

from slam.geometry.se3 import so3_exp

CHI2_MONO = 5.991
CHI2_STEREO = 7.815
HUBER_MONO = float(np.sqrt(CHI2_MONO))
HUBER_STEREO = float(np.sqrt(CHI2_STEREO))
_NO_ROBUST_DELTA = 1e12  # Huber with this delta is plain least squares for any realistic residual


def _new_optimizer(verbose: bool = False) -> "g2o.SparseOptimizer":
    opt = g2o.SparseOptimizer()
    solver = g2o.BlockSolverSE3(g2o.LinearSolverEigenSE3())
    opt.set_algorithm(g2o.OptimizationAlgorithmLevenberg(solver))
    opt.set_verbose(bool(verbose))
    return opt


class _EdgeAdder:
    """Adds edges to a SparseOptimizer through small staging graphs, numbered as if added one by one.

    Every ``add_edge``/``add_vertex`` call of the g2opy binding registers a nanobind keep-alive
    on the graph whose duplicate check walks a list of everything added so far, so adding M
    edges one by one costs O(M^2) (about 1.6 s for 15k edges). Instead, consecutive blocks of
    ``chunk`` edges are staged in fresh graphs and moved into the optimizer with ``add_graph``
    (g2o >= 2.x moves edges and leaves the staging graph empty).

    g2o gives each edge the internal id of its graph's edge counter, orders the active edges by
    that id, and breaks ties by heap address; so ids must be unique for a solve to be
    repeatable bit for bit. A staging graph numbers from 0, so before its first edge the graph's
    counter is advanced to the number of edges staged before it (adding and removing one edge
    costs ~2 us per id, and needs no keep-alive growth). Every edge thus gets the id it would
    have had if added directly, in insertion order. ``chunk`` trades the in-graph walk
    (O(chunk) per edge) against the counter advance (O(M / chunk) per edge); ~1000 is near the
    optimum for 5k-15k edges. ``chunk=0`` adds edges one by one. Vertices are always added directly.
    """

    def __init__(self, opt: "g2o.SparseOptimizer", n_total: int, chunk: int = 1024) -> None:
        self.opt = opt
        self.direct = chunk <= 0 or n_total <= chunk
        self.chunk = int(chunk)
        self.graph: Optional["g2o.OptimizableGraph"] = None
        self.i = 0

    def add(self, e) -> None:
        if self.direct:
            ok = self.opt.add_edge(e)
        else:
            if self.i % self.chunk == 0:
                self._next_graph(e)
            ok = self.graph.add_edge(e)
        if not ok:
            raise RuntimeError("g2o rejected an edge (duplicate or undefined vertex)")
        self.i += 1

    def _next_graph(self, e) -> None:
        self._move()
        self.graph = g2o.OptimizableGraph()
        for _ in range(self.i):  # advance the new graph's edge counter to the edges staged so far
            self.graph.add_edge(e)
            self.graph.remove_edge(e)

    def _move(self) -> None:
        if self.graph is None:
            return
        n = len(self.graph.edges())
        self.opt.add_graph(self.graph)
        if n and len(self.graph.edges()) != 0:
            raise RuntimeError("this g2opy's add_graph does not move edges; pass edge_chunk=0 "
                               "(slam.optim.ba needs g2opy >= 2.3)")
        self.graph = None

    def flush(self) -> None:
        self._move()


def edge_ids_are_unique(n_edges: int = 600) -> bool:
    """Whether _EdgeAdder gives every g2o edge a unique internal id (a diagnostic for tests).

    g2o sorts the active edges by internal id; with duplicated ids ties are ordered by heap
    address, so sums in the Hessian, and therefore the results of bundle_adjust /
    optimize_pose, would change at the 1e-12 level from run to run.
    """
    opt = _new_optimizer()
    v = g2o.VertexSE3Expmap()
    v.set_id(0)
    opt.add_vertex(v)
    adder = _EdgeAdder(opt, n_edges, chunk=64)  # several staging graphs
    edges = []
    for _ in range(n_edges):
        e = g2o.EdgeSE3ProjectXYZOnlyPose()
        e.set_vertex(0, v)
        e.set_measurement(np.zeros(2))
        e.set_information(np.eye(2))
        e.Xw = np.ones(3)
        adder.add(e)
        edges.append(e)
    adder.flush()
    ids = [e.internal_id() if callable(e.internal_id) else e.internal_id for e in edges]
    return len(set(ids)) == len(ids)


def _se3quat(cam_from_world: np.ndarray) -> "g2o.SE3Quat":
    return g2o.SE3Quat(np.ascontiguousarray(cam_from_world[:3, :3], dtype=np.float64),
                       np.ascontiguousarray(cam_from_world[:3, 3], dtype=np.float64))


def _matrix(se3quat: "g2o.SE3Quat") -> np.ndarray:
    return np.asarray(se3quat.to_homogeneous_matrix(), dtype=np.float64).copy()


def residual_chi2(R: np.ndarray, t: np.ndarray, pts_world: np.ndarray, uv: np.ndarray,
                  ur: Optional[np.ndarray], inv_sigma2: np.ndarray, K: np.ndarray,
                  bf: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ORB-SLAM chi2 of M observations.

    R: (M, 3, 3) or (3, 3), t: (M, 3) or (3,) ``cam_from_world`` per observation;
    pts_world (M, 3); uv (M, 2) undistorted px; ur (M,) virtual right px (NaN = mono) or None;
    inv_sigma2 (M,). Returns (chi2 (M,), depth_positive (M,) bool); chi2 = inf where depth <= 0.
    """
    if R.ndim == 2:
        pc = pts_world @ R.T + t
    else:
        pc = np.einsum("mij,mj->mi", R, pts_world) + t
    z = pc[:, 2]
    ok = z > 1e-9
    inv_z = 1.0 / np.where(ok, z, 1.0)
    u = K[0, 0] * pc[:, 0] * inv_z + K[0, 2]
    v = K[1, 1] * pc[:, 1] * inv_z + K[1, 2]
    e2 = (uv[:, 0] - u) ** 2 + (uv[:, 1] - v) ** 2
    if ur is not None:
        st = np.isfinite(ur)
        if st.any():
            e2 = e2 + np.where(st, (np.where(st, ur, 0.0) - (u - bf * inv_z)) ** 2, 0.0)
    chi2 = inv_sigma2 * e2
    return np.where(ok, chi2, np.inf), ok


# ============================================================================ motion-only BA
def optimize_pose(cam_from_world_init: np.ndarray, pts_world: np.ndarray, uv: np.ndarray,
                  K: np.ndarray, inv_sigma2: Optional[np.ndarray] = None,
                  ur: Optional[np.ndarray] = None, bf: float = 0.0, rounds: int = 4,
                  iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Motion-only BA of one camera against fixed map points (ORB-SLAM2 ``PoseOptimization``).

    cam_from_world_init: (4, 4) initial pose. pts_world: (N, 3) metres. uv: (N, 2) undistorted px.
    K: (3, 3). inv_sigma2: (N,) information weights (default 1). ur: (N,) virtual right
    coordinates (px, NaN = monocular); used only when ``bf > 0``.
    Each of ``rounds`` rounds restarts from the initial pose, runs ``iterations`` LM iterations
    on the current inliers, then classifies ALL observations: chi2 > 5.991 (mono) / 7.815
    (stereo) or negative depth -> outlier (edge level 1, excluded from the next round). The
    Huber kernel (delta sqrt(5.991) / sqrt(7.815)) is dropped from the third round on.
    Returns (cam_from_world (4, 4), inliers (N,) bool) — the final classification.
    """
    init = np.asarray(cam_from_world_init, dtype=np.float64)
    if init.shape != (4, 4):
        raise ValueError(f"cam_from_world_init must be (4, 4), got {init.shape}")
    pts = np.ascontiguousarray(np.asarray(pts_world, dtype=np.float64))
    uv = np.ascontiguousarray(np.asarray(uv, dtype=np.float64))
    n = pts.shape[0]
    if pts.shape != (n, 3) or uv.shape != (n, 2):
        raise ValueError(f"pts_world must be (N, 3) and uv (N, 2), got {pts.shape} and {uv.shape}")
    K = np.asarray(K, dtype=np.float64)
    w = np.ones(n) if inv_sigma2 is None else np.asarray(inv_sigma2, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"inv_sigma2 must be ({n},), got {w.shape}")
    if ur is None or bf <= 0.0:
        ur_arr = np.full(n, np.nan)
    else:
        ur_arr = np.asarray(ur, dtype=np.float64).reshape(-1)
        if ur_arr.shape != (n,):
            raise ValueError(f"ur must be ({n},), got {ur_arr.shape}")
    stereo = np.isfinite(ur_arr)
    if n == 0:
        return init.copy(), np.zeros(0, dtype=bool)

    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    opt = _new_optimizer()
    pose_v = g2o.VertexSE3Expmap()
    pose_v.set_id(0)
    pose_v.set_estimate(_se3quat(init))
    pose_v.set_fixed(False)
    opt.add_vertex(pose_v)

    k_mono = g2o.RobustKernelHuber(HUBER_MONO)
    k_stereo = g2o.RobustKernelHuber(HUBER_STEREO)
    I2, I3 = np.eye(2), np.eye(3)
    edges = []
    adder = _EdgeAdder(opt, n)
    meas3 = np.c_[uv, np.where(stereo, ur_arr, 0.0)]
    for i, (is_st, wi) in enumerate(zip(stereo.tolist(), w.tolist())):
        if is_st:
            # The binding of EdgeStereoSE3ProjectXYZOnlyPose exposes no fx/fy/cx/cy/bf/Xw, so the
            # stereo term uses the binary edge against a FIXED point vertex (same Jacobian wrt pose).
            pv = g2o.VertexPointXYZ()
            pv.set_id(1 + i)
            pv.set_estimate(pts[i])
            pv.set_fixed(True)
            opt.add_vertex(pv)
            e = g2o.EdgeStereoSE3ProjectXYZ()
            e.set_vertex(0, pv)
            e.set_vertex(1, pose_v)
            e.set_measurement(meas3[i])
            e.set_information(I3 * wi)
            e.set_robust_kernel(k_stereo)
            e.bf = float(bf)
        else:
            e = g2o.EdgeSE3ProjectXYZOnlyPose()
            e.set_vertex(0, pose_v)
            e.set_measurement(uv[i])
            e.set_information(I2 * wi)
            e.set_robust_kernel(k_mono)
            e.Xw = pts[i]
        e.fx = fx
        e.fy = fy
        e.cx = cx
        e.cy = cy
        adder.add(e)
        edges.append(e)
    adder.flush()

    thr = np.where(stereo, CHI2_STEREO, CHI2_MONO)
    outlier = np.zeros(n, dtype=bool)
    init_q = _se3quat(init)
    current = init.copy()
    for r in range(rounds):
        pose_v.set_estimate(init_q)
        if r == 2:
            k_mono.set_delta(_NO_ROBUST_DELTA)
            k_stereo.set_delta(_NO_ROBUST_DELTA)
        opt.initialize_optimization(0)
        opt.optimize(int(iterations))
        current = _matrix(pose_v.estimate())
        chi2, _ = residual_chi2(current[:3, :3], current[:3, 3], pts, uv, ur_arr, w, K, bf)
        new_outlier = ~(chi2 <= thr)
        for i in np.flatnonzero(new_outlier != outlier).tolist():
            edges[i].set_level(1 if new_outlier[i] else 0)
        outlier = new_outlier
        if n - int(outlier.sum()) < 10:
            break
    return current, ~outlier


# ============================================================================ full BA
@dataclass
class BAProblem:
    """A (local or global) bundle-adjustment problem.

    kf_ids: (K,) int64 keyframe ids.
    cam_from_world: (K, 4, 4) float64 initial poses.
    fixed: (K,) bool, keyframes held constant (gauge; ORB-SLAM's fixed covisible keyframes).
    point_ids: (P,) int64 map-point ids.
    points_world: (P, 3) float64 initial positions, metres.
    obs_kf: (M,) int64 keyframe id of each observation.
    obs_pt: (M,) int64 point id of each observation.
    obs_uv: (M, 2) float64 undistorted pixels.
    obs_inv_sigma2: (M,) float64 information weights (1 / sigma_px^2).
    obs_ur: (M,) float64 virtual right coordinate (px), NaN = monocular edge.
    bf: float, fx * baseline (px * m) for stereo edges.
    K: (3, 3) float64 pinhole matrix.
    """

    kf_ids: np.ndarray
    cam_from_world: np.ndarray
    fixed: np.ndarray
    point_ids: np.ndarray
    points_world: np.ndarray
    obs_kf: np.ndarray
    obs_pt: np.ndarray
    obs_uv: np.ndarray
    obs_inv_sigma2: np.ndarray
    obs_ur: np.ndarray
    bf: float
    K: np.ndarray


@dataclass
class BAResult:
    """Output of :func:`bundle_adjust`.

    cam_from_world: (K, 4, 4) optimised poses; fixed ones (and keyframes without observations)
        are bit-for-bit the input.
    points_world: (P, 3) optimised points; points without observations are unchanged.
    obs_outlier: (M,) bool, chi2 above 5.991 / 7.815 or negative depth after optimisation.
    chi2_before / chi2_after: sum of (non-robust) chi2 over the observations that are inliers in
        the final result, at the initial and at the optimised estimate (same edge set).
    iterations: LM iterations actually run (both stages).
    aborted: a :class:`BAStop` ended the optimisation early (after stage 1, or within an
        iteration: g2o keeps the state of the last accepted step, so the result is consistent).
    timings: wall-clock seconds ``build`` (graph construction, the Python per-edge loop),
        ``optimize`` (g2o, GIL released), ``total``; and the same as process CPU seconds
        (``build_cpu``, ``optimize_cpu``, ``total_cpu``; all threads of the process).
    """

    cam_from_world: np.ndarray
    points_world: np.ndarray
    obs_outlier: np.ndarray
    chi2_before: float
    chi2_after: float
    iterations: int
    timings: dict = field(default_factory=dict)
    aborted: bool = False


class BAStop:
    """Ends a running :func:`bundle_adjust` early, from another thread (ORB-SLAM's abort of
    local BA when tracking inserts a keyframe).

    ``request()`` sets g2o's force-stop flag of the optimiser in use (checked by g2o between
    and within LM iterations, while the GIL is released) and is remembered until ``reset()``:
    the graph building loop stops at its next pause point, and a second stage is not started.
    One handle serves one bundle adjustment at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._opt = None

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self) -> None:
        with self._lock:
            self._requested = True
            if self._opt is not None:
                self._opt.set_force_stop_flag(True)

    def reset(self) -> None:
        with self._lock:
            self._requested = False

    def _attach(self, opt) -> None:
        with self._lock:
            self._opt = opt
            if self._requested:
                opt.set_force_stop_flag(True)

    def _detach(self) -> None:
        with self._lock:
            self._opt = None


def _index_of(ids: np.ndarray, query: np.ndarray, what: str) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if sorted_ids.size > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise ValueError(f"BAProblem: duplicate {what} ids")
    pos = np.searchsorted(sorted_ids, query)
    pos_c = np.minimum(pos, max(sorted_ids.size - 1, 0))
    if sorted_ids.size == 0 or np.any(sorted_ids[pos_c] != query):
        bad = query[(sorted_ids.size == 0) | (sorted_ids[pos_c] != query)] if sorted_ids.size else query
        raise ValueError(f"BAProblem: observation references unknown {what} id(s) {np.unique(bad)[:10].tolist()}")
    return order[pos_c]


def _validate(p: BAProblem):
    kf_ids = np.asarray(p.kf_ids, dtype=np.int64).reshape(-1)
    nk = kf_ids.size
    poses = np.asarray(p.cam_from_world, dtype=np.float64)
    fixed = np.asarray(p.fixed, dtype=bool).reshape(-1)
    point_ids = np.asarray(p.point_ids, dtype=np.int64).reshape(-1)
    npt = point_ids.size
    pts = np.asarray(p.points_world, dtype=np.float64)
    obs_kf = np.asarray(p.obs_kf, dtype=np.int64).reshape(-1)
    m = obs_kf.size
    obs_pt = np.asarray(p.obs_pt, dtype=np.int64).reshape(-1)
    uv = np.ascontiguousarray(np.asarray(p.obs_uv, dtype=np.float64))
    w = np.asarray(p.obs_inv_sigma2, dtype=np.float64).reshape(-1)
    ur = np.asarray(p.obs_ur, dtype=np.float64).reshape(-1)
    K = np.asarray(p.K, dtype=np.float64)
    checks = [("cam_from_world", poses.shape, (nk, 4, 4)), ("fixed", fixed.shape, (nk,)),
              ("points_world", pts.shape, (npt, 3)), ("obs_pt", obs_pt.shape, (m,)),
              ("obs_uv", uv.shape, (m, 2)), ("obs_inv_sigma2", w.shape, (m,)),
              ("obs_ur", ur.shape, (m,)), ("K", K.shape, (3, 3))]
    for name, got, want in checks:
        if got != want:
            raise ValueError(f"BAProblem.{name} must have shape {want}, got {got}")
    if np.any(np.isfinite(ur)) and not p.bf > 0:
        raise ValueError("BAProblem.obs_ur has stereo observations but bf <= 0; set bf = fx * baseline")
    return kf_ids, poses, fixed, point_ids, pts, obs_kf, obs_pt, uv, w, ur, K


def bundle_adjust(problem: BAProblem, iterations: int = 10, robust: bool = True, two_stage: bool = True,
                  verbose: bool = False, edge_chunk: int = 1024,
                  pause: Optional[Callable[[], None]] = None, stop: Optional[BAStop] = None) -> BAResult:
    """Bundle adjustment of poses and points (ORB-SLAM2 ``LocalBundleAdjustment`` scheme).

    Stage 1: ``iterations`` LM iterations with Huber kernels (if ``robust``).
    Stage 2 (if ``two_stage``): observations with chi2 > 5.991 / 7.815 or negative depth are
    excluded (edge level 1), the robust kernel is dropped, and ``iterations`` more LM
    iterations run. Final outliers are re-classified on the optimised estimate.
    Points seen only by fixed keyframes are still optimised; points and keyframes without
    observations are passed through unchanged. ``edge_chunk``: see :class:`_EdgeAdder`
    (0 = add edges one by one, quadratic in the number of observations). ``pause``: called
    every 512 observations while the graph is built (the Python part, which holds the GIL) and
    before each g2o optimize; live runs use it to let tracking go first. ``stop``: a
    :class:`BAStop` that may end the adjustment early (``BAResult.aborted``); a stop requested
    while the graph is built returns the input unchanged with ``iterations`` 0.
    """
    t_start, c_start = time.perf_counter(), time.process_time()
    kf_ids, poses, fixed, point_ids, pts, obs_kf, obs_pt, uv, w, ur, K = _validate(problem)
    bf = float(problem.bf)
    nk, npt, m = kf_ids.size, point_ids.size, obs_kf.size
    out_poses = poses.copy()
    out_pts = pts.copy()
    if m == 0:
        return BAResult(out_poses, out_pts, np.zeros(0, dtype=bool), 0.0, 0.0, 0)

    kf_idx = _index_of(kf_ids, obs_kf, "keyframe")
    pt_idx = _index_of(point_ids, obs_pt, "point")
    stereo = np.isfinite(ur)
    thr = np.where(stereo, CHI2_STEREO, CHI2_MONO)

    chi2_init, _ = residual_chi2(poses[kf_idx, :3, :3], poses[kf_idx, :3, 3], pts[pt_idx], uv, ur, w, K, bf)

    opt = _new_optimizer(verbose)
    pose_used = np.zeros(nk, dtype=bool)
    pose_used[kf_idx] = True
    pt_used = np.zeros(npt, dtype=bool)
    pt_used[pt_idx] = True

    pose_vertices: dict[int, "g2o.VertexSE3Expmap"] = {}
    for k in np.flatnonzero(pose_used).tolist():
        v = g2o.VertexSE3Expmap()
        v.set_id(k)
        v.set_estimate(_se3quat(poses[k]))
        v.set_fixed(bool(fixed[k]))
        opt.add_vertex(v)
        pose_vertices[k] = v
    point_vertices: dict[int, "g2o.VertexPointXYZ"] = {}
    for j in np.flatnonzero(pt_used).tolist():
        v = g2o.VertexPointXYZ()
        v.set_id(nk + j)
        v.set_estimate(pts[j])
        v.set_marginalized(True)
        opt.add_vertex(v)
        point_vertices[j] = v

    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    k_mono = g2o.RobustKernelHuber(HUBER_MONO)
    k_stereo = g2o.RobustKernelHuber(HUBER_STEREO)
    meas3 = np.ascontiguousarray(np.c_[uv, np.where(stereo, ur, 0.0)])
    I2, I3 = np.eye(2), np.eye(3)
    edges = []
    append = edges.append
    infos: dict[tuple[bool, float], np.ndarray] = {}  # one information matrix per edge kind and weight (octave)
    adder = _EdgeAdder(opt, m, edge_chunk)
    add_edge = adder.add
    Mono, Stereo = g2o.EdgeSE3ProjectXYZ, g2o.EdgeStereoSE3ProjectXYZ
    # The only per-observation Python loop: g2o edges must be created one by one.
    for i, (ki, pj, is_st, wi) in enumerate(zip(kf_idx.tolist(), pt_idx.tolist(), stereo.tolist(), w.tolist())):
        if i % 512 == 511:
            if pause is not None:
                pause()
            if stop is not None and stop.requested:
                return _unchanged(poses, pts, thr, chi2_init, t_start, c_start)
        info = infos.get((is_st, wi))
        if info is None:
            info = infos[(is_st, wi)] = (I3 if is_st else I2) * wi
        if is_st:
            e = Stereo()
            e.set_measurement(meas3[i])
            e.bf = bf
            if robust:
                e.set_robust_kernel(k_stereo)
        else:
            e = Mono()
            e.set_measurement(uv[i])
            if robust:
                e.set_robust_kernel(k_mono)
        e.set_information(info)
        e.set_vertex(0, point_vertices[pj])
        e.set_vertex(1, pose_vertices[ki])
        e.fx = fx
        e.fy = fy
        e.cx = cx
        e.cy = cy
        add_edge(e)
        append(e)
    adder.flush()

    def read_back() -> None:
        for k, v in pose_vertices.items():
            if not fixed[k]:
                out_poses[k] = _matrix(v.estimate())
        for j, v in point_vertices.items():
            out_pts[j] = v.estimate()

    def classify() -> tuple[np.ndarray, np.ndarray]:
        chi2, _ = residual_chi2(out_poses[kf_idx, :3, :3], out_poses[kf_idx, :3, 3], out_pts[pt_idx],
                                uv, ur, w, K, bf)
        return chi2, ~(chi2 <= thr)

    t_built, c_built = time.perf_counter(), time.process_time()
    if pause is not None:
        pause()
    if stop is not None:
        if stop.requested:
            return _unchanged(poses, pts, thr, chi2_init, t_start, c_start)
        stop._attach(opt)
    try:
        opt.initialize_optimization(0)
        n_iter = max(int(opt.optimize(int(iterations))), 0)
        t_opt = time.perf_counter() - t_built
        c_opt = time.process_time() - c_built
        read_back()
        aborted = stop is not None and stop.requested
        if two_stage and not aborted:
            _, outlier = classify()
            for i in np.flatnonzero(outlier).tolist():
                edges[i].set_level(1)
            k_mono.set_delta(_NO_ROBUST_DELTA)
            k_stereo.set_delta(_NO_ROBUST_DELTA)
            if not outlier.all():
                if pause is not None:
                    pause()
                t0, c0 = time.perf_counter(), time.process_time()
                opt.initialize_optimization(0)
                n_iter += max(int(opt.optimize(int(iterations))), 0)
                t_opt += time.perf_counter() - t0
                c_opt += time.process_time() - c0
                read_back()
            aborted = stop is not None and stop.requested
    finally:
        if stop is not None:
            stop._detach()
    chi2_final, outlier = classify()
    inl = ~outlier
    return BAResult(cam_from_world=out_poses, points_world=out_pts, obs_outlier=outlier,
                    chi2_before=float(np.sum(chi2_init[inl])), chi2_after=float(np.sum(chi2_final[inl])),
                    iterations=n_iter, aborted=aborted,
                    timings={"build": t_built - t_start, "optimize": t_opt,
                             "total": time.perf_counter() - t_start,
                             "build_cpu": c_built - c_start, "optimize_cpu": c_opt,
                             "total_cpu": time.process_time() - c_start})


def _unchanged(poses, pts, thr, chi2_init, t_start, c_start) -> BAResult:
    """The result of an adjustment stopped before g2o ran: the input, outliers classified on it."""
    outlier = ~(chi2_init <= thr)
    chi2 = float(np.sum(chi2_init[~outlier]))
    dt, dc = time.perf_counter() - t_start, time.process_time() - c_start
    return BAResult(cam_from_world=poses.copy(), points_world=pts.copy(), obs_outlier=outlier, chi2_before=chi2,
                    chi2_after=chi2, iterations=0, aborted=True,
                    timings={"build": dt, "optimize": 0.0, "total": dt, "build_cpu": dc, "optimize_cpu": 0.0, "total_cpu": dc})


def synthetic_ba_problem(n_kf: int = 10, n_points: int = 3000, obs_per_point: int = 5,
                         noise_px: float = 0.5, outlier_frac: float = 0.01, n_fixed: int = 2,
                         stereo_frac: float = 0.0, seed: int = 0, bf: float = 40.0,
                         noise_inv_depth: float = 0.0) -> BAProblem:
    """Random but well-posed BA problem for benchmarks: keyframes on a 1 m line looking at a
    3-8 m deep point cloud; each point observed by ``obs_per_point`` keyframes (M = n_points *
    obs_per_point), poses perturbed by ~1 deg / 3 cm and points by 5 cm. A ``stereo_frac`` of the
    observations carry a depth reading (``ur = u - bf / z``) whose inverse depth has Gaussian noise
    ``noise_inv_depth`` (1/m)."""
    rng = np.random.default_rng(seed)
    K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
    poses = np.tile(np.eye(4), (n_kf, 1, 1))
    poses[:, 0, 3] = -np.linspace(0.0, 1.0, n_kf)
    z = rng.uniform(3.0, 8.0, n_points)
    pts = np.c_[rng.uniform(-0.5, 0.5, (n_points, 2)) * z[:, None] + [0.5, 0.0], z]
    obs_kf = np.concatenate([rng.choice(n_kf, obs_per_point, replace=False) for _ in range(n_points)])
    obs_pt = np.repeat(np.arange(n_points), obs_per_point)
    pc = pts[obs_pt] + poses[obs_kf, :3, 3]
    uv = pc[:, :2] / pc[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
    m = uv.shape[0]
    uv += rng.normal(scale=noise_px, size=uv.shape)
    out = rng.random(m) < outlier_frac
    uv[out] += rng.uniform(20.0, 50.0, (int(out.sum()), 2))
    has_depth = rng.random(m) < stereo_frac
    inv_depth = 1.0 / pc[:, 2] + (rng.normal(scale=noise_inv_depth, size=m) if noise_inv_depth > 0 else 0.0)
    ur = np.where(has_depth, uv[:, 0] - bf * inv_depth, np.nan)
    fixed = np.arange(n_kf) < n_fixed
    init = poses.copy()
    for k in np.flatnonzero(~fixed):
        init[k, :3, :3] = so3_exp(rng.normal(scale=0.01, size=3))
        init[k, :3, 3] += rng.normal(scale=0.03, size=3)
    return BAProblem(kf_ids=np.arange(n_kf, dtype=np.int64), cam_from_world=init, fixed=fixed,
                     point_ids=np.arange(n_points, dtype=np.int64),
                     points_world=pts + rng.normal(scale=0.05, size=pts.shape),
                     obs_kf=obs_kf.astype(np.int64), obs_pt=obs_pt.astype(np.int64), obs_uv=uv,
                     obs_inv_sigma2=np.ones(m), obs_ur=ur, bf=bf, K=K)


def benchmark_bundle_adjust(n_kf: int = 10, n_points: int = 3000, obs_per_point: int = 5,
                            iterations: int = 10, repeats: int = 3, stereo_frac: float = 0.0,
                            edge_chunk: int = 1024) -> dict:
    """Time :func:`bundle_adjust` on :func:`synthetic_ba_problem`; returns median seconds per
    phase and problem size (for ``python -m slam bench``)."""
    problem = synthetic_ba_problem(n_kf, n_points, obs_per_point, stereo_frac=stereo_frac)
    runs = [bundle_adjust(problem, iterations=iterations, edge_chunk=edge_chunk) for _ in range(repeats)]
    med = {k: float(np.median([r.timings[k] for r in runs])) for k in runs[0].timings}
    last = runs[-1]
    return {"keyframes": n_kf, "points": n_points, "observations": int(problem.obs_kf.size),
            "iterations_per_stage": iterations, "lm_iterations_run": last.iterations,
            "build_s": med["build"], "optimize_s": med["optimize"], "total_s": med["total"],
            "build_cpu_s": med["build_cpu"], "optimize_cpu_s": med["optimize_cpu"],
            "total_cpu_s": med["total_cpu"],
            "chi2_before": last.chi2_before, "chi2_after": last.chi2_after,
            "outliers": int(last.obs_outlier.sum())}
