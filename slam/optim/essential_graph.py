"""Loop correction: Sim(3) pose graph over keyframes (ORB-SLAM's ``OptimizeEssentialGraph``).

Conventions
-----------
- Keyframe poses are (K, 4, 4) float64 ``cam_from_world``. Before a correction they are rigid
  (the map's SE(3) poses); a corrected pose is a similarity ``[[s R, t], [0, 1]]`` mapping world
  points into the camera frame in that keyframe's map scale (``slam.geometry.sim3``); the rigid
  pose after correction is ``[[R, t / s], [0, 1]]``.
- An edge ``(i, j)`` (keyframe ids) measures ``j_from_i = S_j @ S_i^-1``: g2o
  ``VertexSim3Expmap`` / ``EdgeSim3`` with the residual ``log(j_from_i @ S_i @ S_j^-1)``, a
  7-vector ``[omega (rad), upsilon (map units), sigma]`` in camera j's frame (independent of
  where the world origin is). Information: identity unless given (ORB-SLAM's choice).
- RGB-D / stereo (``fix_scale``): the same graph with every scale held at 1, i.e. an SE(3) pose
  graph. The g2opy binding hides ``VertexSim3Expmap::_fix_scale``, so this uses g2o's
  ``VertexSE3`` (holding ``world_from_cam``) and ``EdgeSE3`` (measuring ``i_from_j``), whose
  residual is the same transform ``j_from_i @ S_i @ S_j^-1`` in camera j's frame, parametrised
  as ``[t, q_xyz]``; the information is converted so that it weighs ``[omega, upsilon]`` as the
  Sim(3) graph does. (``EdgeSE3Expmap`` is no substitute: its residual is expressed in the world
  frame, so rotation errors would be weighted by the distance to the world origin.)
- Solver: Gauss-Newton on g2o's 7x3 (Sim(3)) or 6x3 (SE(3)) block solver with Eigen's sparse
  Cholesky, one iteration at a time, stopping when chi2 falls by less than ``CONVERGED`` (relative)
  or after ``iterations`` (20, ORB-SLAM's count). A pose graph started from odometry converges in
  2-4 Gauss-Newton steps to the optimum that ORB-SLAM's 20 Levenberg steps creep towards (on a
  300-keyframe loop, 20 LM steps are needed to reach it; see docs/benchmarks.md section 10). If a
  Gauss-Newton step multiplies chi2 by more than ``DIVERGED`` the graph is solved again from the start with Levenberg-Marquardt
  (``algorithm="levenberg"``, the full ``iterations``). ``optimize`` releases the GIL.

The loop closer (ORB-SLAM's ``CorrectLoop``) uses, in order:
1. :func:`propagate_correction`: the corrected Sim(3) of the current keyframe's neighbourhood;
2. :func:`move_points_with_keyframes`: their map points moved with it (uncorrected -> corrected);
3. :func:`essential_graph_edges`: spanning tree + strong covisibility (>= 100 shared points) +
   earlier loop edges;
4. :func:`optimize_essential_graph` with the new loop connections as ``loop_edges``;
5. :meth:`EssentialGraphResult.move_points`: every other map point moved with its reference
   keyframe; keyframe poses set from ``EssentialGraphResult.cam_from_world``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import g2opy as g2o

from slam.geometry.se3 import make_se3, so3_exp
from slam.geometry.sim3 import make_sim3, se3_from_sim3, sim3_decompose, sim3_inverse
from slam.optim.ba import _EdgeAdder
from slam.optim.sim3 import sim3_from_g2o

__all__ = ["PoseGraphResult", "optimize_sim3_pose_graph", "EssentialGraphResult", "optimize_essential_graph",
           "essential_graph_edges", "propagate_correction", "move_points_with_keyframes", "synthetic_loop",
           "MIN_COVIS_WEIGHT"]

MIN_COVIS_WEIGHT = 100  # ORB-SLAM: covisibility edges of the essential graph share >= 100 map points
EDGE_CHUNK = 1024  # edges staged per graph (slam.optim.ba._EdgeAdder); 0 = one by one
CONVERGED = 1e-3  # Gauss-Newton stops when an iteration lowers chi2 by less than this fraction
DIVERGED = 1.5  # a Gauss-Newton step that multiplies chi2 by more than this restarts with Levenberg-Marquardt
ALGORITHMS = ("gauss_newton", "levenberg")


def _ids(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer keyframe ids, got dtype {arr.dtype}")
    return arr.astype(np.int64).reshape(-1)


def _pairs(a, name: str) -> np.ndarray:
    arr = np.asarray(a if a is not None else np.zeros((0, 2), dtype=np.int64))
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an (E, 2) integer array of keyframe id pairs, got {arr.shape} {arr.dtype}")
    return arr.astype(np.int64)


def _index(kf_ids: np.ndarray, query: np.ndarray, name: str) -> np.ndarray:
    """Positions in ``kf_ids`` of the ids in ``query`` (any shape); ValueError naming unknown ids."""
    order = np.argsort(kf_ids, kind="stable")
    sorted_ids = kf_ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, query), max(sorted_ids.size - 1, 0))
    bad = (sorted_ids[pos] != query) if sorted_ids.size else np.ones(np.shape(query), dtype=bool)
    if np.any(bad):
        raise ValueError(f"{name} references keyframe id(s) not in kf_ids: {np.unique(np.asarray(query)[bad])[:10].tolist()}")
    return order[pos]


def _check_kfs(kf_ids, poses, name: str) -> tuple[np.ndarray, np.ndarray]:
    ids = _ids(kf_ids, "kf_ids")
    arr = np.asarray(poses, dtype=np.float64)
    if arr.shape != (ids.size, 4, 4):
        raise ValueError(f"{name} must be ({ids.size}, 4, 4) for {ids.size} keyframe ids, got {arr.shape}")
    if np.unique(ids).size != ids.size:
        raise ValueError("kf_ids contains duplicates")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite entries")
    return ids, arr


def _mqt_information(info: np.ndarray) -> np.ndarray:
    """(E, 7, 7) information on ``[omega, upsilon, sigma]`` -> (E, 6, 6) on g2o ``EdgeSE3``'s
    ``[t, q_xyz]`` residual (``omega ~= 2 q_xyz``, ``upsilon ~= t`` to first order)."""
    P = np.zeros((6, 6))
    P[:3, 3:] = 2.0 * np.eye(3)  # omega <- q
    P[3:, :3] = np.eye(3)  # upsilon <- t
    return P.T @ info[:, :6, :6] @ P


# ------------------------------------------------------------------------------ pose graph
@dataclass
class PoseGraphResult:
    """Output of :func:`optimize_sim3_pose_graph`.

    cam_from_world: (K, 4, 4) float64 optimised similarities (scale 1 with ``fix_scale``); fixed
        keyframes and keyframes without edges are bit-for-bit the initial values.
    chi2_before / chi2_after: sum over edges of ``r^T info r`` at the initial / final estimate.
    iterations: LM iterations run. n_edges: edges in the graph.
    timings: wall-clock seconds ``build`` (Python, GIL held), ``optimize`` (g2o, GIL released),
        ``total``, and the same as process CPU seconds (``build_cpu``, ``optimize_cpu``, ``total_cpu``).
    """

    cam_from_world: np.ndarray
    chi2_before: float
    chi2_after: float
    iterations: int
    n_edges: int
    timings: dict = field(default_factory=dict)


def optimize_sim3_pose_graph(kf_ids: np.ndarray, cam_from_world: np.ndarray, edges: np.ndarray,
                             j_from_i: np.ndarray, fixed_ids: np.ndarray, *, fix_scale: bool = False,
                             information: Optional[np.ndarray] = None, iterations: int = 20,
                             edge_chunk: int = EDGE_CHUNK, verbose: bool = False,
                             algorithm: str = "gauss_newton") -> PoseGraphResult:
    """Sim(3) (or, with ``fix_scale``, SE(3)) pose graph with explicit relative measurements.

    kf_ids: (K,) int keyframe ids (any order, unique).
    cam_from_world: (K, 4, 4) float64 initial similarities (rigid with ``fix_scale``).
    edges: (E, 2) int pairs ``(id_i, id_j)``; j_from_i: (E, 4, 4) measured ``S_j @ S_i^-1``.
    fixed_ids: ids held constant (at least one: the gauge; a monocular map needs one fixed
        keyframe to pin its scale too).
    information: None (identity), one (7, 7) / (6, 6) matrix for every edge, or (E, 7, 7) /
        (E, 6, 6) per edge; order ``[omega, upsilon, sigma]`` (drop sigma with ``fix_scale``).
    edge_chunk: see :class:`slam.optim.ba._EdgeAdder` (edges keep unique g2o ids either way, so
        results are bit-identical from run to run).
    algorithm: "gauss_newton" (stops at convergence, falls back to Levenberg-Marquardt if a step
        raises chi2) or "levenberg" (runs ``iterations`` LM steps, g2o's own stopping rule).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    t0, c0 = time.perf_counter(), time.process_time()
    ids, init = _check_kfs(kf_ids, cam_from_world, "cam_from_world")
    e_ids = _pairs(edges, "edges")
    meas = np.asarray(j_from_i, dtype=np.float64).reshape(-1, 4, 4)
    if meas.shape[0] != e_ids.shape[0]:
        raise ValueError(f"j_from_i must be ({e_ids.shape[0]}, 4, 4) for {e_ids.shape[0]} edges, got {np.shape(j_from_i)}")
    fixed_pos = _index(ids, _ids(fixed_ids, "fixed_ids"), "fixed_ids")
    if fixed_pos.size == 0:
        raise ValueError("fixed_ids is empty: fix at least one keyframe (the map origin) to pin the gauge")
    info = np.eye(7) if information is None else np.asarray(information, dtype=np.float64)
    if fix_scale and info.shape[-2:] == (6, 6):  # the scale residual is 0 with rigid poses and measurements
        info = np.pad(info, [(0, 0)] * (info.ndim - 2) + [(0, 1), (0, 1)])
    if info.shape == (7, 7):
        info = np.broadcast_to(info, (e_ids.shape[0], 7, 7))
    if info.shape != (e_ids.shape[0], 7, 7):
        raise ValueError(f"information must be (7, 7) or ({e_ids.shape[0]}, 7, 7) (or 6 x 6 with fix_scale), got {info.shape}")
    if fix_scale:
        for name, m in (("cam_from_world", init), ("j_from_i", meas)):
            s = sim3_decompose(m)[0] if m.size else np.ones(0)
            if np.any(np.abs(s - 1.0) > 1e-6):
                raise ValueError(f"fix_scale: {name} must be rigid (scale 1), got scales up to {float(np.max(np.abs(s - 1))) + 1:.6g}")
    pos = _index(ids, e_ids, "edges")
    keep = pos[:, 0] != pos[:, 1]
    pos, meas, info = pos[keep], meas[keep], info[keep]
    fixed = np.zeros(ids.size, dtype=bool)
    fixed[fixed_pos] = True
    out = init.copy()
    if pos.shape[0] == 0:
        return PoseGraphResult(out, 0.0, 0.0, 0, 0, {"build": 0.0, "optimize": 0.0, "total": time.perf_counter() - t0,
                                                      "build_cpu": 0.0, "optimize_cpu": 0.0,
                                                      "total_cpu": time.process_time() - c0})

    opt = g2o.SparseOptimizer()
    if fix_scale:
        solver = g2o.BlockSolverSE3(g2o.LinearSolverEigenSE3())
    else:
        solver = g2o.BlockSolverSim3(g2o.LinearSolverEigenSim3())
    gn = algorithm == "gauss_newton"
    opt.set_algorithm(g2o.OptimizationAlgorithmGaussNewton(solver) if gn else g2o.OptimizationAlgorithmLevenberg(solver))
    opt.set_verbose(bool(verbose))
    used = np.zeros(ids.size, dtype=bool)
    used[pos.reshape(-1)] = True
    if fix_scale:  # VertexSE3 holds world_from_cam; EdgeSE3 measures i_from_j = (j_from_i)^-1
        world_from_cam = sim3_inverse(init)
        world_from_cam[:, :3, :3] = sim3_decompose(world_from_cam)[1]
        meas_inv = sim3_inverse(meas)
        meas_inv[:, :3, :3] = sim3_decompose(meas_inv)[1]
        info = _mqt_information(info)
    else:
        s_all, R_all, t_all = sim3_decompose(init)
        s_m, R_m, t_m = sim3_decompose(meas)
    vertices: dict[int, object] = {}
    for k in np.flatnonzero(used).tolist():
        if fix_scale:
            v = g2o.VertexSE3()
            v.set_estimate(g2o.Isometry3d(world_from_cam[k]))
        else:
            v = g2o.VertexSim3Expmap()
            v.set_estimate(g2o.Sim3(R_all[k], t_all[k], float(s_all[k])))
        v.set_id(k)
        v.set_fixed(bool(fixed[k]))
        opt.add_vertex(v)
        vertices[k] = v
    adder = _EdgeAdder(opt, pos.shape[0], edge_chunk)
    info_c = np.ascontiguousarray(info)
    for e_i, (i, j) in enumerate(pos.tolist()):
        if fix_scale:
            e = g2o.EdgeSE3()
            e.set_measurement(g2o.Isometry3d(meas_inv[e_i]))
        else:
            e = g2o.EdgeSim3()
            e.set_measurement(g2o.Sim3(R_m[e_i], t_m[e_i], float(s_m[e_i])))
        e.set_vertex(0, vertices[i])
        e.set_vertex(1, vertices[j])
        e.set_information(info_c[e_i])
        adder.add(e)
    adder.flush()
    t_built, c_built = time.perf_counter(), time.process_time()
    opt.initialize_optimization(0)
    opt.compute_active_errors()
    chi2_before = float(opt.chi2())
    if gn:
        n_iter, chi2_after = 0, chi2_before
        while n_iter < int(iterations):
            opt.optimize(1)
            n_iter += 1
            opt.compute_active_errors()
            chi2 = float(opt.chi2())
            if not np.isfinite(chi2) or chi2 > DIVERGED * chi2_after + 1e-12:  # diverging: Levenberg from the start
                return optimize_sim3_pose_graph(kf_ids, cam_from_world, edges, j_from_i, fixed_ids, fix_scale=fix_scale,
                                                information=information, iterations=iterations, edge_chunk=edge_chunk,
                                                verbose=verbose, algorithm="levenberg")
            done = chi2_after - chi2 <= CONVERGED * chi2_after
            chi2_after = chi2
            if done:
                break
        t_opt, c_opt = time.perf_counter(), time.process_time()
    else:
        n_iter = max(int(opt.optimize(int(iterations))), 0)
        t_opt, c_opt = time.perf_counter(), time.process_time()
        opt.compute_active_errors()
        chi2_after = float(opt.chi2())
    for k, v in vertices.items():
        if fixed[k]:
            continue
        if fix_scale:
            out[k] = sim3_inverse(np.asarray(v.estimate().matrix(), dtype=np.float64))
            out[k, :3, :3] = sim3_decompose(out[k])[1]
        else:
            out[k] = sim3_from_g2o(v.estimate())
    return PoseGraphResult(out, chi2_before, chi2_after, n_iter, int(pos.shape[0]),
                           {"build": t_built - t0, "optimize": t_opt - t_built, "total": time.perf_counter() - t0,
                            "build_cpu": c_built - c0, "optimize_cpu": c_opt - c_built,
                            "total_cpu": time.process_time() - c0})


# --------------------------------------------------------------------------- essential graph
@dataclass
class EssentialGraphResult:
    """Output of :func:`optimize_essential_graph`; arrays follow ``kf_ids``.

    kf_ids: (K,) int64.
    sim3_before: (K, 4, 4) the initial Sim(3) ``cam_from_world`` (corrected neighbourhood,
        uncorrected elsewhere): the frame the map points are in before :meth:`move_points`.
    sim3_after: (K, 4, 4) optimised Sim(3) ``cam_from_world`` (scale 1 with ``fix_scale``).
    cam_from_world: (K, 4, 4) the rigid poses to store, ``[[R, t / s], [0, 1]]`` of ``sim3_after``.
    chi2_before / chi2_after / iterations / n_edges / timings: as :class:`PoseGraphResult`.
    """

    kf_ids: np.ndarray
    sim3_before: np.ndarray
    sim3_after: np.ndarray
    cam_from_world: np.ndarray
    chi2_before: float
    chi2_after: float
    iterations: int
    n_edges: int
    timings: dict = field(default_factory=dict)

    def move_points(self, points_world: np.ndarray, ref_kf_ids: np.ndarray) -> np.ndarray:
        """(P, 3) map points (world, map units) moved with their reference keyframe's correction
        (ORB-SLAM: a point corrected with the current keyframe's neighbourhood takes the current
        keyframe as reference); see :func:`move_points_with_keyframes`."""
        return move_points_with_keyframes(points_world, ref_kf_ids, self.kf_ids, self.sim3_before, self.sim3_after)


def optimize_essential_graph(kf_ids: np.ndarray, cam_from_world: np.ndarray, corrected_ids: np.ndarray,
                             corrected_cam_from_world: np.ndarray, edges: np.ndarray, loop_edges: np.ndarray,
                             fixed_ids: np.ndarray, *, fix_scale: bool, iterations: int = 20,
                             edge_chunk: int = EDGE_CHUNK, verbose: bool = False,
                             algorithm: str = "gauss_newton") -> EssentialGraphResult:
    """Distribute a loop correction over the map (ORB-SLAM's ``OptimizeEssentialGraph``).

    kf_ids: (K,) int keyframe ids of the map (unique, any order).
    cam_from_world: (K, 4, 4) float64 poses BEFORE the correction (the map's rigid poses).
    corrected_ids: (C,) ids of the current keyframe's neighbourhood (current keyframe included).
    corrected_cam_from_world: (C, 4, 4) their corrected Sim(3) ``cam_from_world``
        (:func:`propagate_correction`; rigid with ``fix_scale``): the initial values of those
        vertices; every other vertex starts at its uncorrected pose.
    edges: (E, 2) int id pairs, spanning tree + strong covisibility + earlier loop edges
        (:func:`essential_graph_edges`); measured on the UNCORRECTED poses.
    loop_edges: (L, 2) int id pairs, the new loop connections (neighbourhood of the current
        keyframe <-> neighbourhood of the loop keyframe, ORB-SLAM keeps those with >= 100 shared
        points plus the current-loop pair); measured on the corrected initial values. An
        ``edges`` pair that is also a loop edge (either order) is dropped from ``edges``.
    fixed_ids: keyframe(s) held fixed (ORB-SLAM3: the map's first keyframe); returned bit-for-bit.
    fix_scale: True for RGB-D / stereo (SE(3) graph), False for monocular (Sim(3) graph).
    iterations: the most iterations (ORB-SLAM: 20 LM); algorithm: see :func:`optimize_sim3_pose_graph`.
    Returns an :class:`EssentialGraphResult`.
    """
    ids, before = _check_kfs(kf_ids, cam_from_world, "cam_from_world")
    c_ids = _ids(corrected_ids, "corrected_ids")
    corrected = np.asarray(corrected_cam_from_world, dtype=np.float64).reshape(-1, 4, 4)
    if corrected.shape[0] != c_ids.size:
        raise ValueError(f"corrected_cam_from_world must be ({c_ids.size}, 4, 4), got {np.shape(corrected_cam_from_world)}")
    init = before.copy()
    init[_index(ids, c_ids, "corrected_ids")] = corrected
    loops = _pairs(loop_edges, "loop_edges")
    other = _pairs(edges, "edges")
    other = other[other[:, 0] != other[:, 1]]
    loops = loops[loops[:, 0] != loops[:, 1]]
    # de-duplicate unordered pairs; loop edges take precedence (ORB-SLAM's sInsertedEdges)
    _, first = np.unique(np.sort(loops, axis=1), axis=0, return_index=True)
    loops = loops[np.sort(first)]
    _, first = np.unique(np.sort(other, axis=1), axis=0, return_index=True)
    other = other[np.sort(first)]
    if loops.shape[0] and other.shape[0]:
        key = lambda p: np.sort(p, axis=1) @ np.array([1, 1 << 32], dtype=np.int64)  # noqa: E731
        other = other[~np.isin(key(other), key(loops))]
    p_loop = _index(ids, loops, "loop_edges")
    p_other = _index(ids, other, "edges")
    meas = np.concatenate([init[p_loop[:, 1]] @ sim3_inverse(init[p_loop[:, 0]]),
                           before[p_other[:, 1]] @ sim3_inverse(before[p_other[:, 0]])])
    if fix_scale:  # exact rigid measurements (the Sim(3) inverse divides by a scale of 1 +- 1e-16)
        meas[:, :3, :3] = sim3_decompose(meas)[1]
    pg = optimize_sim3_pose_graph(ids, init, np.concatenate([loops, other]), meas, fixed_ids,
                                  fix_scale=fix_scale, iterations=iterations, edge_chunk=edge_chunk,
                                  verbose=verbose, algorithm=algorithm)
    rigid = pg.cam_from_world.copy() if fix_scale else se3_from_sim3(pg.cam_from_world)
    return EssentialGraphResult(ids, init, pg.cam_from_world, rigid,
                                pg.chi2_before, pg.chi2_after, pg.iterations, pg.n_edges, pg.timings)


def essential_graph_edges(kf_ids: np.ndarray, parent_ids: np.ndarray, covis_pairs: Optional[np.ndarray] = None,
                          covis_weights: Optional[np.ndarray] = None, loop_pairs: Optional[np.ndarray] = None,
                          min_weight: int = MIN_COVIS_WEIGHT) -> np.ndarray:
    """The essential graph's edges as an (E, 2) int64 array of unordered id pairs (first
    occurrence kept): spanning tree ``(kf, parent)`` for every parent id >= 0, covisibility
    pairs sharing >= ``min_weight`` map points, and earlier loop edges.

    kf_ids, parent_ids: (K,) int, ``-1`` = no parent (the root). covis_pairs: (C, 2) int id pairs
    with covis_weights (C,) shared map points. loop_pairs: (L, 2) int id pairs of loops closed
    earlier (their measurement comes from the uncorrected poses, as the tree's).
    """
    ids = _ids(kf_ids, "kf_ids")
    parents = _ids(parent_ids, "parent_ids")
    if parents.size != ids.size:
        raise ValueError(f"parent_ids must be ({ids.size},), got {parents.size}")
    has = parents >= 0
    tree = np.stack([ids[has], parents[has]], axis=1)
    covis = _pairs(covis_pairs, "covis_pairs")
    w = np.zeros(covis.shape[0]) if covis_weights is None else np.asarray(covis_weights).reshape(-1)
    if w.shape != (covis.shape[0],):
        raise ValueError(f"covis_weights must be ({covis.shape[0]},), got {w.shape}")
    allp = np.concatenate([tree, covis[w >= min_weight], _pairs(loop_pairs, "loop_pairs")])
    allp = allp[allp[:, 0] != allp[:, 1]]
    _index(ids, allp, "essential graph edges")
    _, first = np.unique(np.sort(allp, axis=1), axis=0, return_index=True)
    return allp[np.sort(first)]


def propagate_correction(cur_cam_from_world: np.ndarray, cur_corrected: np.ndarray,
                         neighbours_cam_from_world: np.ndarray) -> np.ndarray:
    """Corrected Sim(3) ``cam_from_world`` (C, 4, 4) of the current keyframe's neighbours:
    ``S_i = (T_i @ T_cur^-1) @ S_cur`` (each keeps its uncorrected pose relative to the current
    keyframe). cur_cam_from_world: (4, 4) uncorrected pose of the current keyframe;
    cur_corrected: (4, 4) its corrected Sim(3) (``cur_from_loop @ loop_cam_from_world``);
    neighbours_cam_from_world: (C, 4, 4) their uncorrected poses."""
    cur = np.asarray(cur_cam_from_world, dtype=np.float64)
    cor = np.asarray(cur_corrected, dtype=np.float64)
    nb = np.asarray(neighbours_cam_from_world, dtype=np.float64)
    if cur.shape != (4, 4) or cor.shape != (4, 4) or nb.ndim != 3 or nb.shape[1:] != (4, 4):
        raise ValueError(f"expected (4, 4), (4, 4) and (C, 4, 4), got {cur.shape}, {cor.shape}, {nb.shape}")
    return nb @ (sim3_inverse(cur) @ cor)


def move_points_with_keyframes(points_world: np.ndarray, ref_kf_ids: np.ndarray, kf_ids: np.ndarray,
                               sim3_before: np.ndarray, sim3_after: np.ndarray) -> np.ndarray:
    """Move map points rigidly (with scale) with their reference keyframe, vectorised:
    ``p' = S_after[r]^-1 @ S_before[r] @ p`` (the point keeps its coordinates in that keyframe's
    camera frame, in its map units).

    points_world: (P, 3) float64 (world, map units before). ref_kf_ids: (P,) int reference
    keyframe id of each point (must be in kf_ids). kf_ids: (K,); sim3_before / sim3_after:
    (K, 4, 4) ``cam_from_world`` similarities. Returns (P, 3) float64.
    """
    pts = np.asarray(points_world, dtype=np.float64)
    ref = _ids(ref_kf_ids, "ref_kf_ids")
    if pts.ndim != 2 or pts.shape[1] != 3 or ref.size != pts.shape[0]:
        raise ValueError(f"points_world must be (P, 3) and ref_kf_ids (P,), got {pts.shape} and {ref.shape}")
    ids, before = _check_kfs(kf_ids, sim3_before, "sim3_before")
    after = np.asarray(sim3_after, dtype=np.float64)
    if after.shape != before.shape:
        raise ValueError(f"sim3_after must be {before.shape}, got {after.shape}")
    if pts.shape[0] == 0:
        return pts.copy()
    new_from_old = sim3_inverse(after) @ before  # (K, 4, 4) world' <- world per keyframe
    r = _index(ids, ref, "ref_kf_ids")
    return np.einsum("pij,pj->pi", new_from_old[r, :3, :3], pts) + new_from_old[r, :3, 3]


# ------------------------------------------------------------------------------- synthetic
def synthetic_loop(n_kf: int = 60, radius: float = 5.0, scale_drift: float = 0.01, yaw_drift_deg: float = 0.3,
                   noise_rot_deg: float = 0.05, noise_trans: float = 0.005, n_covis: int = 3,
                   n_neighbours: int = 4, n_loop_edges: int = 3, fix_scale: bool = False, seed: int = 0) -> dict:
    """A drifting loop with exact truth, for tests and benchmarks.

    Ground truth: ``n_kf`` keyframes on a circle of ``radius`` m (camera looking along the
    tangent, a little height wobble). Odometry (the uncorrected map) composes the true relative
    motions with a per-keyframe yaw bias ``yaw_drift_deg``, a growing map scale (each step's
    translation times ``(1 + scale_drift)^k``; none with ``fix_scale``) and noise. The loop is
    closed between the last keyframe (current) and keyframe 0 (loop keyframe, the fixed origin):
    ``cur_from_loop`` is the true relative Sim(3) in the current keyframe's map scale, as a Sim(3)
    solver would find it. Returns a dict of arrays: ``kf_ids`` (K,), ``truth`` (K, 4, 4) rigid
    cam_from_world, ``map_scale`` (K,) each keyframe's map scale, ``cam_from_world`` (K, 4, 4)
    uncorrected poses, ``cur_from_loop`` (4, 4), ``corrected_ids`` (C,), ``corrected`` (C, 4, 4)
    (the last ``n_neighbours + 1`` keyframes, :func:`propagate_correction`), ``edges`` (E, 2)
    (tree + ``n_covis`` covisibility edges per keyframe to the next ones), ``loop_edges``
    (``n_loop_edges`` <= 4, 2): (current, loop), (current, loop + 1), (current - 1, loop),
    (current - 1, loop + 1); ``fixed_ids`` (1,) = [0]. Step length ``2 pi radius / n_kf``.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(n_kf)
    ang = 2.0 * np.pi * k / n_kf
    truth = np.zeros((n_kf, 4, 4))
    for i in range(n_kf):  # world_from_cam: on the circle (x-z plane, y down), optical axis along the tangent
        c = np.array([radius * np.sin(ang[i]), 0.05 * radius * np.sin(3.0 * ang[i]), -radius * np.cos(ang[i])])
        truth[i] = sim3_inverse(make_se3(so3_exp([0.0, np.pi / 2.0 - ang[i], 0.0]), c))
    scale = np.ones(n_kf) if fix_scale else (1.0 + scale_drift) ** k
    est = [truth[0].copy()]
    for i in range(n_kf - 1):
        rel = truth[i + 1] @ sim3_inverse(truth[i])  # cam_{i+1} <- cam_i, metres
        R = so3_exp([0.0, np.radians(yaw_drift_deg), 0.0]) @ so3_exp(rng.normal(scale=np.radians(noise_rot_deg), size=3)) @ rel[:3, :3]
        t = scale[i + 1] * rel[:3, 3] + rng.normal(scale=noise_trans, size=3)
        est.append(make_se3(R, t) @ est[-1])
    est = np.stack(est)
    cur, loop = n_kf - 1, 0
    cur_from_loop = make_sim3(scale[cur], np.eye(3), np.zeros(3)) @ truth[cur] @ sim3_inverse(truth[loop])
    corrected_ids = np.arange(n_kf - 1 - n_neighbours, n_kf)
    corrected = propagate_correction(est[cur], cur_from_loop @ est[loop], est[corrected_ids])
    edges = [(i, i + 1) for i in range(n_kf - 1)]
    edges += [(i, i + d) for i in range(n_kf) for d in range(2, 2 + n_covis) if i + d < n_kf]
    loop_edges = [(cur, loop), (cur, loop + 1), (cur - 1, loop), (cur - 1, loop + 1)][:n_loop_edges]
    return {"kf_ids": k.astype(np.int64), "truth": truth, "map_scale": scale, "cam_from_world": est,
            "cur_from_loop": cur_from_loop, "corrected_ids": corrected_ids.astype(np.int64),
            "corrected": corrected, "edges": np.array(edges, dtype=np.int64),
            "loop_edges": np.array(loop_edges, dtype=np.int64).reshape(-1, 2), "fixed_ids": np.array([0], dtype=np.int64)}
