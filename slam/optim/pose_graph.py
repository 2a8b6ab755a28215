"""SE(3) pose-graph optimisation with g2o (``VertexSE3Expmap`` + ``EdgeSE3Expmap``).

Vertices hold ``cam_from_world`` (g2o's expmap convention); the public API speaks
``world_from_cam``. An edge (i, j, j_from_i, information) measures the relative pose
``j_from_i = cam_j_from_world @ world_from_cam_i``. Its residual is
``log(cam_j_from_world^-1 . j_from_i . cam_i_from_world)`` ordered ``[rotation (3), translation (3)]``
(g2o ``SE3Quat.log``), so ``information`` (6, 6) uses that order (rad^-2 then m^-2).
Note: SE(3) only — scale drift of monocular maps is not corrected here (no Sim(3)).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

import g2opy as g2o

from slam.geometry.se3 import se3_inverse


def _se3quat(m: np.ndarray) -> "g2o.SE3Quat":
    return g2o.SE3Quat(np.ascontiguousarray(m[:3, :3]), np.ascontiguousarray(m[:3, 3]))


def optimize_pose_graph(kf_ids: Sequence[int], world_from_cam: np.ndarray,
                        edges: Iterable[tuple[int, int, np.ndarray, np.ndarray]],
                        fixed_ids: Iterable[int], iterations: int = 20,
                        verbose: bool = False) -> np.ndarray:
    """Optimise keyframe poses given relative-pose constraints.

    kf_ids: (K,) keyframe ids. world_from_cam: (K, 4, 4) float64 initial poses.
    edges: (id_i, id_j, j_from_i (4, 4), information (6, 6)) — odometry / covisibility / loop edges.
    fixed_ids: ids held constant (at least one to fix the gauge; the first keyframe if empty).
    Returns (K, 4, 4) optimised ``world_from_cam``; fixed poses are returned bit-for-bit.
    """
    ids = [int(i) for i in np.asarray(kf_ids).reshape(-1)]
    poses = np.asarray(world_from_cam, dtype=np.float64)
    if poses.shape != (len(ids), 4, 4):
        raise ValueError(f"world_from_cam must be ({len(ids)}, 4, 4), got {poses.shape}")
    index = {kf: k for k, kf in enumerate(ids)}
    if len(index) != len(ids):
        raise ValueError("kf_ids contains duplicates")
    fixed = {int(f) for f in fixed_ids}
    unknown = fixed - set(index)
    if unknown:
        raise ValueError(f"fixed_ids {sorted(unknown)} are not in kf_ids")
    if not fixed and ids:
        fixed = {ids[0]}

    opt = g2o.SparseOptimizer()
    opt.set_algorithm(g2o.OptimizationAlgorithmLevenberg(g2o.BlockSolverSE3(g2o.LinearSolverEigenSE3())))
    opt.set_verbose(bool(verbose))
    vertices = []
    for k, kf in enumerate(ids):
        v = g2o.VertexSE3Expmap()
        v.set_id(k)
        v.set_estimate(_se3quat(se3_inverse(poses[k])))
        v.set_fixed(kf in fixed)
        opt.add_vertex(v)
        vertices.append(v)
    n_edges = 0
    for e_def in edges:
        i, j, j_from_i, info = e_def
        if int(i) not in index or int(j) not in index:
            raise ValueError(f"pose-graph edge ({i}, {j}) references an id not in kf_ids")
        j_from_i = np.asarray(j_from_i, dtype=np.float64)
        info = np.asarray(info, dtype=np.float64)
        if j_from_i.shape != (4, 4) or info.shape != (6, 6):
            raise ValueError(f"edge ({i}, {j}): j_from_i must be (4, 4) and information (6, 6), "
                             f"got {j_from_i.shape} and {info.shape}")
        e = g2o.EdgeSE3Expmap()
        e.set_vertex(0, vertices[index[int(i)]])
        e.set_vertex(1, vertices[index[int(j)]])
        e.set_measurement(_se3quat(j_from_i))
        e.set_information(np.ascontiguousarray(info))
        opt.add_edge(e)
        n_edges += 1
    out = poses.copy()
    if n_edges == 0:
        return out
    opt.initialize_optimization(0)
    opt.optimize(int(iterations))
    for k, kf in enumerate(ids):
        if kf not in fixed:
            cam_from_world = np.asarray(vertices[k].estimate().to_homogeneous_matrix(), dtype=np.float64)
            out[k] = se3_inverse(cam_from_world)
    return out
