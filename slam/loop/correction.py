"""Loop correction (ORB-SLAM's ``CorrectLoop``) and the global bundle adjustment after it.

Loop correction (:class:`LoopCorrection`):

1. the corrected Sim(3) of the current keyframe (``cur_from_loop @ loop pose``) is propagated
   to its covisible neighbourhood, and their map points move with them;
2. duplicated map points are fused: the verified matches replace the current side's points by
   the loop side's, and the loop neighbourhood's points are projected into every corrected
   keyframe (the local mapper's fusion);
3. the essential graph (spanning tree: each keyframe's parent is the older keyframe it shares
   most points with; covisibility edges with >= 100 shared points; earlier and new loop edges)
   is optimised, Sim(3) for monocular maps, SE(3) for RGB-D and stereo; the map's first
   keyframe stays fixed;
4. every keyframe takes its optimised (rigid) pose and every map point moves with its
   reference keyframe (the one that corrected it in step 1, else the keyframe that created it,
   else one that observes it).

:class:`LoopCorrection` runs steps 1-2 in the tracking thread at the loop, step 3 on a copy in
the loop-closing stage, and step 4 back in the tracking thread (see its docstring). Phases 1 and 4
return ``world_new_from_old`` per keyframe, (4, 4) similarities, so that the tracker can move its
last frame with its reference keyframe (``Tracker.apply_world_correction``).

:class:`GlobalBA` is the background global bundle adjustment: :meth:`GlobalBA.gather` copies
the problem (under the lock), :meth:`GlobalBA.run` optimises the copy (no lock; with the solver
of ``mapping.global_ba_solver``: numpy's large operations and g2o's optimisation release the GIL;
a :class:`slam.optim.ba.BAStop` ends it), :meth:`GlobalBA.apply` writes it back and
moves what was added meanwhile with the nearest optimised keyframe (under the lock).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from slam.geometry.sim3 import se3_from_sim3, sim3_decompose, sim3_inverse
from slam.loop.detection import Covisibility, covisibility
from slam.loop.verification import LoopMatch
from slam.mapping.map import Map
from slam.optim.ba import BAProblem, BAStop
from slam.optim.essential_graph import MIN_COVIS_WEIGHT, essential_graph_edges, optimize_essential_graph


@dataclass
class Correction:
    """What a loop correction did (filled in as its phases run).

    loop_edges: (L, 2) int64 new loop edges of the essential graph.
    rotation_deg / translation / scale: the current keyframe's correction (its pose before vs after
    the essential graph). n_fused: map points merged. timings: ms per step (``propagate``,
    ``fuse``, ``prepare`` in the tracking thread at the loop; ``essential_graph`` in the
    loop-closing stage; ``apply`` in the tracking thread when it is written back).
    """

    loop_edges: np.ndarray
    rotation_deg: float = 0.0
    translation: float = 0.0
    scale: float = 1.0
    n_fused: int = 0
    n_edges: int = 0
    iterations: int = 0
    n_late_keyframes: int = 0
    timings: dict = field(default_factory=dict)


def spanning_parents(cov: Covisibility) -> np.ndarray:
    """(K,) parent id of each keyframe (ascending ids): the older keyframe sharing most points,
    the previous keyframe when it shares none, -1 for the first."""
    K = len(cov.kf_ids)
    parents = np.full(K, -1, dtype=np.int64)
    if K < 2:
        return parents
    low = np.tril(cov.shared, k=-1)  # row i: keyframes older than i
    best = low.argmax(axis=1)
    has = low[np.arange(K), best] > 0
    parents[1:] = np.where(has[1:], cov.kf_ids[best[1:]], cov.kf_ids[:-1])
    return parents


def _point_refs(m: Map, pts: np.ndarray, corrected_ref: np.ndarray, kf_set: np.ndarray) -> np.ndarray:
    """(P,) reference keyframe of each point: corrected_ref (-1 = none), else its creator when it
    lives, else the oldest live keyframe observing it, else -1."""
    ref = corrected_ref.copy()
    todo = ref < 0
    first = m.pts_first_kf[pts]
    ok = todo & np.isin(first, kf_set)
    ref[ok] = first[ok]
    todo = ref < 0
    if todo.any():
        rows = m.observation_rows(point_ids=pts[todo])
        rows = rows[np.isin(m.obs_kf[rows], kf_set)]
        best = np.full(m.n_points, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, m.obs_pt[rows], m.obs_kf[rows])
        cand = best[pts]
        fill = todo & (cand != np.iinfo(np.int64).max)
        ref[fill] = cand[fill]
    return ref


def fuse_common_place(m: Map, match: LoopMatch, fuse, directions: list[tuple[list[int], list[int]]]) -> None:
    """Join the duplicated points of a verified common place (caller holds ``m.lock``): the
    verified matches first (a keypoint of match.cur_kf without a point observes its loop point;
    one with a point has it replaced by the loop point), then for each (targets, sources) of
    ``directions`` in turn, the live points of the source keyframes are projected into every
    target keyframe by ``fuse`` (callable(keyframe, point_ids (P,) int64): the local mapper's
    fusion). Loop correction fuses one way (the loop's neighbourhood into the current one); a
    map merge both ways."""
    have = m.keyframes[match.cur_kf].point_ids[match.cur_kp]
    ok = m.pts_alive[match.loop_pt]
    free = ok & (have < 0)
    m.add_observations(match.cur_kf, match.cur_kp[free], match.loop_pt[free])
    dup = ok & (have >= 0)
    m.replace_points(have[dup], match.loop_pt[dup])
    for targets, sources in directions:
        src = np.unique(np.concatenate([m.keyframes[k].point_ids for k in sources if k in m.keyframes]))
        src = src[src >= 0]
        for k in targets:
            if k in m.keyframes:
                p = src[m.pts_alive[src]]
                fuse(m.keyframes[k], np.setdiff1d(p, m.keyframes[k].point_ids))


class LoopCorrection:
    """ORB-SLAM's ``CorrectLoop`` in three phases, so that only the first two touch the map and
    the essential graph runs on a copy of its inputs while tracking goes on.

    1. :meth:`start` (tracking thread, map lock held, at the loop's frame): propagation and
       fusion (steps 1-2 of the module docstring), then a copy of the essential graph's inputs
       (poses, edges, new loop edges). Returns ``world_new_from_old`` of the corrected
       neighbourhood, for the tracker.
    2. :meth:`run` (loop-closing stage, no lock; g2o releases the GIL): the essential graph.
    3. :meth:`apply` (tracking thread, map lock held, at a frame fixed by the sequence in dataset
       runs): every keyframe of the copy takes the graph's correction, applied to its pose of now
       (so local BA results committed meanwhile are kept); keyframes created meanwhile take their
       parent's correction (the copied keyframe they share most points with, ORB-SLAM's rule
       after global BA); every map point moves with its reference keyframe.
    """

    def __init__(self, fix_scale: bool, neighbourhood: int, loop_edge_min_shared: int, iterations: int) -> None:
        self.fix_scale = bool(fix_scale)
        self.neighbourhood = int(neighbourhood)
        self.loop_edge_min_shared = int(loop_edge_min_shared)
        self.iterations = int(iterations)
        self.info = Correction(np.zeros((0, 2), dtype=np.int64))
        self.ms = 0.0
        self.result = None
        self._job: Optional[dict] = None
        self._corrected_ref = np.zeros(0, dtype=np.int64)
        self._cur = -1

    def start(self, m: Map, loop: LoopMatch, fuse, previous_loop_edges: np.ndarray) -> dict:
        """Phases 1-2 (caller holds ``m.lock``). fuse: callable(keyframe, point_ids (P,) int64)
        projecting points into a keyframe and merging duplicates (the local mapper's fusion).
        previous_loop_edges: (L, 2) int64 loop edges closed before (kept in the graph).
        Returns {kf_id: (4, 4) Sim(3) world_new <- world_old} of the corrected neighbourhood."""
        t0 = time.perf_counter()
        tm = self.info.timings
        cov = covisibility(m)
        ids = cov.kf_ids
        before = np.stack([m.keyframes[k].cam_from_world for k in ids.tolist()])  # rigid, uncorrected
        pos = {k: i for i, k in enumerate(ids.tolist())}
        cur, lp = loop.cur_kf, loop.loop_kf
        cur_group = [cur] + [k for k in cov.neighbours(cur, 1, self.neighbourhood) if k != lp]
        loop_group = [lp] + cov.neighbours(lp, 1, self.neighbourhood)
        cur_group = [k for k in cur_group if k not in loop_group or k == cur]
        S_cur = loop.cur_from_loop @ before[pos[lp]]
        T_cur_inv = sim3_inverse(before[pos[cur]])
        corrected = {k: before[pos[k]] @ T_cur_inv @ S_cur for k in cur_group}
        # 1. the neighbourhood's points move with it (each point once, with the first keyframe that holds it)
        n_pts = m.n_points
        corrected_ref = np.full(n_pts, -1, dtype=np.int64)
        for k in cur_group:
            p = m.keyframes[k].point_ids
            p = p[p >= 0]
            p = p[m.pts_alive[p] & (corrected_ref[p] < 0)]
            W = sim3_inverse(corrected[k]) @ before[pos[k]]
            m.pts_xyz[p] = m.pts_xyz[p] @ W[:3, :3].T + W[:3, 3]
            corrected_ref[p] = k
        for k in cur_group:
            m.keyframes[k].cam_from_world = se3_from_sim3(corrected[k])
        m.version += 1  # (normals are updated with every point's at the write-back)
        tm["propagate"] = (time.perf_counter() - t0) * 1e3
        # 2. fuse duplicates
        t = time.perf_counter()
        alive_before = int(m.pts_alive[:n_pts].sum())
        fuse_common_place(m, loop, fuse, [(cur_group, loop_group)])
        self.info.n_fused = alive_before - int(m.pts_alive[:n_pts].sum())
        tm["fuse"] = (time.perf_counter() - t) * 1e3
        # 3. the essential graph's inputs (copies; its edges are built in run())
        t = time.perf_counter()
        pts_of = {k: np.unique(m.keyframes[k].point_ids[m.keyframes[k].point_ids >= 0]) for k in set(cur_group) | set(loop_group)}
        new_edges = [(cur, lp)]
        for a in cur_group:  # the loop connections fusion made (ORB-SLAM's LoopConnections)
            for b in loop_group:
                if (a, b) != (cur, lp) and len(np.intersect1d(pts_of[a], pts_of[b], assume_unique=True)) >= self.loop_edge_min_shared:
                    new_edges.append((a, b))
        new_edges = np.array(new_edges, dtype=np.int64)
        prev = previous_loop_edges[np.isin(previous_loop_edges, ids).all(axis=1)] if len(previous_loop_edges) else previous_loop_edges
        self._job = {"ids": ids, "before": before, "c_ids": np.array(cur_group, dtype=np.int64),
                     "corrected": np.stack([corrected[k] for k in cur_group]), "cov": cov, "prev": prev.reshape(-1, 2),
                     "new_edges": new_edges}
        self._corrected_ref = corrected_ref
        self._cur = cur
        self.info.loop_edges = new_edges
        tm["prepare"] = (time.perf_counter() - t) * 1e3
        return {k: sim3_inverse(corrected[k]) @ before[pos[k]] for k in cur_group}

    def run(self) -> None:
        """Phase 3's optimisation, on the copy (no lock)."""
        t = time.perf_counter()
        j = self._job
        cov, ids = j["cov"], j["ids"]
        iu = np.triu_indices(len(ids), 1)
        w = cov.shared[iu]
        strong = w >= MIN_COVIS_WEIGHT
        covis_pairs = np.stack([ids[iu[0][strong]], ids[iu[1][strong]]], axis=1)
        edges = essential_graph_edges(ids, spanning_parents(cov), covis_pairs, w[strong], j["prev"])
        self.result = optimize_essential_graph(j["ids"], j["before"], j["c_ids"], j["corrected"], edges, j["new_edges"],
                                               j["ids"][:1], fix_scale=self.fix_scale, iterations=self.iterations)
        self.ms = (time.perf_counter() - t) * 1e3
        self.info.timings["essential_graph"] = self.ms
        self.info.n_edges, self.info.iterations = int(self.result.n_edges), int(self.result.iterations)

    def apply(self, m: Map) -> dict:
        """Write the graph's correction back (caller holds ``m.lock``); returns
        {kf_id: (4, 4) Sim(3) world_new <- world_old} for every keyframe."""
        t = time.perf_counter()
        res = self.result
        W_snap = sim3_inverse(res.sim3_after) @ res.sim3_before  # world' <- world per copied keyframe (map after phase 1)
        W = {k: W_snap[i] for i, k in enumerate(res.kf_ids.tolist()) if k in m.keyframes}
        late = [k for k in sorted(m.keyframes) if k not in W]
        for k in late:  # created meanwhile: the parent's correction
            parent = next((j for j, _ in m.keyframe_covisibility(k, 1) if j in W), None)
            W[k] = W[parent] if parent is not None else W[max(W)]
        for k, Wk in W.items():
            kf = m.keyframes[k]
            kf.cam_from_world = se3_from_sim3(kf.cam_from_world @ sim3_inverse(Wk))
        pts = m.alive_point_ids()
        cref = np.full(len(pts), -1, dtype=np.int64)
        old = pts < len(self._corrected_ref)
        cref[old] = self._corrected_ref[pts[old]]
        cref[(cref >= 0) & ~np.isin(cref, np.fromiter(W, dtype=np.int64))] = -1
        kf_arr = np.array(sorted(W), dtype=np.int64)
        ref = _point_refs(m, pts, cref, kf_arr)
        has = ref >= 0
        Ws = np.stack([W[k] for k in kf_arr.tolist()])
        r = np.searchsorted(kf_arr, ref[has])
        p = pts[has]
        m.pts_xyz[p] = np.einsum("pij,pj->pi", Ws[r, :3, :3], m.pts_xyz[p]) + Ws[r, :3, 3]
        m.update_normals(pts)
        m.version += 1
        i_cur = int(np.searchsorted(res.kf_ids, self._cur)) if self._cur in res.kf_ids else -1
        if i_cur >= 0:  # the current keyframe's whole correction: before the loop -> after the graph
            dc = res.cam_from_world[i_cur] @ sim3_inverse(self._job["before"][i_cur])
            self.info.scale = float(sim3_decompose(res.sim3_after[i_cur])[0])
            self.info.rotation_deg = float(np.degrees(np.arccos(np.clip((np.trace(dc[:3, :3]) - 1) / 2, -1, 1))))
            self.info.translation = float(np.linalg.norm(res.cam_from_world[i_cur][:3, 3] - self._job["before"][i_cur][:3, 3]))
        self.info.n_late_keyframes = len(late)
        self.info.timings["apply"] = (time.perf_counter() - t) * 1e3
        return W


class GlobalBA:
    """Global bundle adjustment in three phases (see the module docstring)."""

    def __init__(self, mapper, iterations: int) -> None:
        self.mapper = mapper
        self.iterations = int(iterations)
        self.stop = BAStop()
        self.problem: Optional[BAProblem] = None
        self.result = None
        self.ms = 0.0

    def gather(self) -> bool:
        """Copy the whole map's BA problem (caller holds the map lock). False when too small."""
        m = self.mapper.map
        window = sorted(m.keyframes)
        if len(window) < 2:
            return False
        prob = self.mapper._gather(window, 0)
        if prob is None:
            return False
        prob.fixed[:] = False
        prob.fixed[0] = True  # gauge: the first keyframe
        self.problem = prob
        return True

    def run(self, pause=None) -> None:
        """Optimise the copy (no lock). pause: called between pieces of the solver's work (the
        loop-closing stage waits there for the frame path, see LoopClosing)."""
        t = time.perf_counter()
        self.stop.reset()
        self.result = self.mapper.solve_global(self.problem, self.iterations, stop=self.stop, pause=pause)
        self.ms = (time.perf_counter() - t) * 1e3

    def apply(self) -> dict:
        """Write the result back (caller holds the map lock); returns world_new_from_old per keyframe."""
        m, prob, res = self.mapper.map, self.problem, self.result
        if res is None or (res.aborted and res.iterations == 0):
            return {}
        before = {k: m.keyframes[k].cam_from_world.copy() for k in prob.kf_ids.tolist() if k in m.keyframes}
        in_prob = np.zeros(m.n_points, dtype=bool)
        in_prob[prob.point_ids] = True
        self.mapper._apply(prob, res)
        W = {k: sim3_inverse(m.keyframes[k].cam_from_world) @ before[k] for k in before if k in m.keyframes}
        if not W:
            return {}
        newest = max(W)
        # keyframes added while it ran move with the newest optimised keyframe
        for k, kf in m.keyframes.items():
            if k not in W:
                kf.cam_from_world = kf.cam_from_world @ sim3_inverse(W[newest])
                W[k] = W[newest]
        pts = m.alive_point_ids()
        pts = pts[~in_prob[pts]]
        if len(pts):
            ref = _point_refs(m, pts, np.full(len(pts), -1, dtype=np.int64), np.array(sorted(W), dtype=np.int64))
            for k in np.unique(ref[ref >= 0]).tolist():
                sel = pts[ref == k]
                Wk = W[k]
                m.pts_xyz[sel] = m.pts_xyz[sel] @ Wk[:3, :3].T + Wk[:3, 3]
            m.update_normals(pts)
        m.version += 1
        return W
