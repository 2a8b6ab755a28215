"""Local mapping: new points, fusion, local bundle adjustment, culling (ORB-SLAM style).

process(KeyframeJob) runs once per keyframe the tracker inserted, in three phases that can
also be called one by one (slam.runtime.schedule.DatasetSchedule does, to overlap them with
tracking):

- prepare(job): cull recent points, triangulate (monocular), fuse, gather the local BA problem
  (a copy), under the map lock;
- optimize(task): bundle adjustment on that copy, WITHOUT the lock (g2opy releases the GIL);
- commit(task): write the result back and cull redundant keyframes, under the lock.

The mapper takes a :class:`slam.runtime.schedule.MappingSchedule`: it calls its
``yield_point()`` between pieces of Python work (never under the map lock), skips a job's
optional work (fusion, local BA) when ``backlog()`` says another job waits, and lets
``ba_stop`` end a running local BA. The default schedule does none of this, so a dataset run's
map depends on the frames alone.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.epipolar import epipolar_segment_mask, fundamental_from_poses, triangulate
from slam.geometry.se3 import se3_inverse, transform_points
from slam.mapping.config import MappingConfig, mono_local_ba
from slam.mapping.depth_weight import DepthWeight
from slam.mapping.map import Map
from slam.matching.guided import float_threshold, search_by_projection, search_epipolar
from slam.optim.ba import BAProblem, bundle_adjust
from slam.optim.ba_schur import MAX_DENSE, bundle_adjust_schur, dense_size, fits
from slam.runtime.schedule import MappingSchedule
from slam.types import has_depth

log = logging.getLogger(__name__)


@dataclass
class MappingTask:
    """One keyframe's local-mapping work between its phases (see LocalMapper.prepare)."""

    kf_id: int
    problem: Optional[BAProblem]  # local BA problem (copied arrays), None when BA is off/empty
    result: Any = None  # slam.optim.ba result after optimize()
    ms: float = 0.0  # prepare time
    ba_ms: float = 0.0  # optimize time


class LocalMapper:
    def __init__(self, cfg: MappingConfig, camera: PinholeCamera, slam_map: Map, matcher, mode: str = "rgbd", bf: float = 40.0,
                 schedule: Optional[MappingSchedule] = None, close_depth: float = 3.0,
                 triangulate_stereo: bool = False, depth_weight: Optional[DepthWeight] = None):
        """bf: fx * baseline (px * m) of the 3-row edges of depth modes (RGB-D: virtual; stereo:
        the rig's), fixed; depth_weight instead: the value shared with tracking, updated after
        each local BA when it is ``auto`` (slam.mapping.depth_weight). close_depth: metres;
        keyframe culling counts close points only (depth modes).
        triangulate_stereo: stereo keyframes also triangulate their keypoints without depth against
        covisible keyframes, as monocular ones do (ORB-SLAM2's CreateNewMapPoints)."""
        self.cfg = cfg
        self.camera = camera
        self.K = camera.K
        self.map = slam_map
        self.matcher = matcher
        self.mode = mode
        self.depth = depth_weight if depth_weight is not None else DepthWeight(bf)
        self.close_depth = close_depth
        self.triangulate_stereo = triangulate_stereo
        self.recent_points: list[np.ndarray] = []
        self.max_desc = cfg.max_desc_dist_binary if slam_map.binary else float_threshold(cfg.max_desc_dist_float)
        self.n_ba = 0
        self.n_ba_g2o = 0  # local BAs given to g2o (mapping.ba_solver; auto: the gauge-free monocular ones and windows too large for the numpy solver)
        self.n_culled_kfs = 0
        self.n_culled_points = 0
        self.n_rotation_points = 0  # points made by _rotation_points (monocular turns)
        self.n_gated_out = 0  # free keypoints the triangulation gate kept from the learned matcher (_gate)
        self.timings: dict[str, list[float]] = {"local_ba": [], "triangulate": [], "fuse": [], "cull": []}
        self.schedule = schedule if schedule is not None else MappingSchedule()
        self.n_skipped = 0  # jobs whose fusion and BA were skipped (backlog)
        self.n_ba_aborted = 0  # local BAs ended early (a new job arrived while they ran)

    # ------------------------------------------------------------------ entry point
    def process(self, job) -> Optional[dict]:
        """The whole job at once: prepare, optimise, commit."""
        task = self.prepare(job)
        if task is None:
            return None
        self.optimize(task)
        return self.commit(task)

    def prepare(self, job) -> Optional[MappingTask]:
        """Phase A, everything that reads and edits the map before bundle adjustment: cull recent
        points, triangulate (monocular), fuse, and gather the local BA problem (a copy)."""
        t0 = time.perf_counter()
        kf_id = job.kf_id
        self.schedule.yield_point()
        with self.map.lock:
            if kf_id not in self.map.keyframes:
                return None
            self._cull_points(kf_id)
        triangulate = self.mode == "mono" or (self.mode == "stereo" and self.triangulate_stereo)
        if triangulate and not job.is_initial:
            t = time.perf_counter()
            new = self._triangulate(kf_id)
            self.timings["triangulate"].append((time.perf_counter() - t) * 1e3)
        else:
            new = job.new_point_ids
        self.schedule.yield_point()
        with self.map.lock:
            self.recent_points.append(np.concatenate([new, job.new_point_ids]) if triangulate else new)
            self.recent_points = self.recent_points[-3:]
        if self.schedule.backlog():
            # the next keyframe is waiting: its new points matter more to tracking than this
            # keyframe's fusion and BA (the next job's BA window covers this keyframe)
            self.n_skipped += 1
            return MappingTask(kf_id=kf_id, problem=None, ms=(time.perf_counter() - t0) * 1e3)
        t = time.perf_counter()
        self._fuse(kf_id)
        if self.cfg.distinctive_descriptors:
            with self.map.lock:
                kf = self.map.keyframes.get(kf_id)
                if kf is not None:
                    self.map.update_descriptors(kf.point_ids[kf.point_ids >= 0])
        self.timings["fuse"].append((time.perf_counter() - t) * 1e3)
        prob = None
        if self.cfg.local_ba and len(self.map.keyframes) >= 2:
            self.schedule.yield_point()
            with self.map.lock:
                prob = self._local_problem(kf_id)
        return MappingTask(kf_id=kf_id, problem=prob, ms=(time.perf_counter() - t0) * 1e3)

    def uses_schur(self, problem: Optional[BAProblem] = None) -> bool:
        """Whether local BA runs the numpy Schur solver (mapping.ba_solver; auto = depth modes,
        and monocular problems with at least two fixed keyframes)."""
        solver = self.cfg.ba_solver
        if solver == "schur" or (solver == "auto" and has_depth(self.mode)):
            return True
        return solver == "auto" and problem is not None and int(np.count_nonzero(problem.fixed)) >= 2

    def optimize(self, task: MappingTask) -> None:
        """Phase B: local bundle adjustment on the task's own copy; touches no map state, holds
        no lock, so tracking runs meanwhile (mapping.ba_solver: numpy, whose large array
        operations release the GIL, or g2o, whose optimize() does)."""
        if task.problem is None:
            return
        t = time.perf_counter()
        stop = self.schedule.ba_stop
        if stop is not None:
            stop.reset()
            if self.schedule.backlog():  # a job arrived after prepare(), before the stop was armed
                self.n_ba_aborted += 1
                return
        iterations = mono_local_ba(self.cfg)[1] if self.mode == "mono" else self.cfg.ba_iterations
        solve = bundle_adjust_schur
        if not (self.uses_schur(task.problem) and dense_size(task.problem) <= MAX_DENSE):
            solve = bundle_adjust
            self.n_ba_g2o += 1
        kw = {"tau": self.cfg.ba_tau} if solve is bundle_adjust_schur else {}
        res = solve(task.problem, iterations=iterations, pause=self.schedule.yield_point, stop=stop, **kw)
        if res.aborted:
            self.n_ba_aborted += 1
        # a BA stopped before g2o ran changed nothing: nothing to write back
        task.result = None if res.aborted and res.iterations == 0 else res
        task.ba_ms = (time.perf_counter() - t) * 1e3

    def commit(self, task: MappingTask) -> dict:
        """Phase C: write the BA result back and cull redundant keyframes (takes the lock)."""
        self.schedule.yield_point()
        t = time.perf_counter()
        with self.map.lock:
            if task.result is not None:
                self.depth.observe(task.problem, task.result)
                self._apply(task.problem, task.result)
                self.n_ba += 1
            if self.cfg.cull_keyframes:
                self._cull_keyframes(task.kf_id)
        commit_ms = (time.perf_counter() - t) * 1e3
        if task.problem is not None:
            self.timings["local_ba"].append(task.ba_ms + commit_ms)
        self.timings["cull"].append(commit_ms)
        return {"kf_id": task.kf_id, "ms": task.ms + task.ba_ms + commit_ms}

    # ------------------------------------------------------------------ culling
    def _cull_points(self, current_kf: int) -> None:
        m = self.map
        if not self.recent_points:
            return
        pts = np.unique(np.concatenate(self.recent_points))
        pts = pts[m.pts_alive[pts]]
        ratio = m.pts_found[pts] / np.maximum(m.pts_visible[pts], 1)
        age = current_kf - m.pts_first_kf[pts]
        min_obs = 2 if self.mode == "mono" else 1
        bad = (ratio < self.cfg.min_found_ratio) | ((age >= 2) & (m.pts_n_obs[pts] <= min_obs))
        m.remove_points(pts[bad])
        self.n_culled_points += int(bad.sum())

    def _cull_keyframes(self, current_kf: int) -> None:
        m = self.map
        if current_kf not in m.keyframes:  # gone meanwhile (tracking discarded its young map)
            return
        for kid, _ in m.keyframe_covisibility(current_kf, min_shared=15):
            if kid == 0 or kid == current_kf or kid not in m.keyframes:
                continue
            kf = m.keyframes[kid]
            kp = np.nonzero(kf.point_ids >= 0)[0]
            if len(kp) == 0:
                continue
            if has_depth(self.mode):
                d = kf.kp_depth[kp]
                kp = kp[(d > 0) & (d < self.close_depth)]
                if len(kp) == 0:
                    continue
            pids = kf.point_ids[kp]
            redundant = (m.pts_n_obs[pids] - 1) >= 3
            if redundant.mean() > self.cfg.redundant_ratio:
                cov = m.keyframe_covisibility(kid, min_shared=1)
                parent = next((k for k, _ in cov if k != kid), None)
                if parent is None:
                    continue
                m.remove_keyframe(kid, parent_id=parent)
                self.n_culled_kfs += 1

    # ------------------------------------------------------------------ new points (monocular)
    def _triangulate(self, kf_id: int) -> np.ndarray:
        c = self.cfg
        with self.map.lock:
            kf = self.map.keyframes.get(kf_id)
            if kf is None:
                return np.zeros(0, dtype=np.int64)
            neigh = [self.map.keyframes[k] for k, _ in self.map.keyframe_covisibility(kf_id, min_shared=10)[: c.n_triangulation_neighbours]]
            kf_pose = kf.cam_from_world.copy()
            kf_free = kf.point_ids < 0
            kf_depths = None  # depths of the keyframe's points, for the gate only
            if c.triangulation_gate:
                own = kf.point_ids[kf.point_ids >= 0]
                kf_depths = transform_points(kf_pose, self.map.pts_xyz[own[self.map.pts_alive[own]]])[:, 2]
        if not neigh:
            return np.zeros(0, dtype=np.int64)
        new_ids = []
        short = []  # neighbours too close for triangulation (baseline < 1 % of the depth)
        K = self.K
        c1 = se3_inverse(kf_pose)[:3, 3]
        descriptor_only = hasattr(self.matcher, "match_descriptors")
        n_learned = 0  # neighbours matched by the learned matcher so far
        for nb in neigh:
            self.schedule.yield_point()
            with self.map.lock:
                if nb.id not in self.map.keyframes or kf_id not in self.map.keyframes:
                    continue
                nb_pose = nb.cam_from_world.copy()
                nb_free = nb.point_ids < 0
                pid_nb = nb.point_ids[nb.point_ids >= 0]
                depths = transform_points(nb_pose, self.map.pts_xyz[pid_nb[self.map.pts_alive[pid_nb]]])[:, 2]
            c2 = se3_inverse(nb_pose)[:3, 3]
            baseline = np.linalg.norm(c2 - c1)
            if len(depths) == 0:
                continue
            if baseline / max(np.median(depths), 1e-6) < 0.01:
                short.append(nb)
                continue
            i_kf = np.nonzero(kf_free)[0]
            i_nb = np.nonzero(nb_free)[0]
            if len(i_kf) < 10 or len(i_nb) < 10:
                continue
            learned_left = c.triangulation_learned_neighbours < 0 or n_learned < c.triangulation_learned_neighbours
            epipolar = c.triangulation_match == "epipolar" and (descriptor_only or not learned_left)
            if epipolar:
                F = fundamental_from_poses(nb_pose @ se3_inverse(kf_pose), K)
                m0, _ = search_epipolar(kf.kp_uv[i_kf], kf.desc[i_kf], nb.kp_uv[i_nb], nb.desc[i_nb], F,
                                        self.max_desc, c.triangulation_ratio, sigma2_1=nb.kp_sigma2[i_nb])
                pr = np.c_[np.nonzero(m0 >= 0)[0], m0[m0 >= 0]]
            elif descriptor_only:  # skip building Features
                pr = self.matcher.match_descriptors(kf.desc[i_kf], nb.desc[i_nb]).pairs()
            else:
                n_learned += 1
                if c.triangulation_gate:
                    i_kf, i_nb = self._gate(kf, nb, i_kf, i_nb, kf_pose, nb_pose, kf_depths, depths)
                    if len(i_kf) < 10 or len(i_nb) < 10:
                        continue
                pr = self.matcher.match(kf.features.subset(i_kf), nb.features.subset(i_nb)).pairs()
            if len(pr) == 0:
                continue
            a, b = i_kf[pr[:, 0]], i_nb[pr[:, 1]]
            # epipolar check with the fundamental matrix from the two poses
            x0, x1 = kf.kp_uv[a], nb.kp_uv[b]
            pts = triangulate(kf_pose, nb_pose, x0, x1, K)
            ok = self._check_points(pts, kf_pose, nb_pose, x0, x1, kf.kp_sigma2[a], nb.kp_sigma2[b], c1, c2)
            if not ok.any():
                continue
            a, b, pts = a[ok], b[ok], pts[ok]
            with self.map.lock:
                if kf_id not in self.map.keyframes or nb.id not in self.map.keyframes:
                    continue
                free = (kf.point_ids[a] < 0) & (nb.point_ids[b] < 0)
                a, b, pts = a[free], b[free], pts[free]
                _, u = np.unique(a, return_index=True)
                a, b, pts = a[u], b[u], pts[u]
                _, u = np.unique(b, return_index=True)
                a, b, pts = a[u], b[u], pts[u]
                if len(a) == 0:
                    continue
                ids = self.map.add_points(pts, kf.desc[a], kf.kp_color[a], kf_id)
                self.map.add_observations(kf_id, a, ids)
                self.map.add_observations(nb.id, b, ids)
                self.map.update_normals(ids)
                kf_free = kf.point_ids < 0
                new_ids.append(ids)
        if c.rotation_points_below > 0 and self.mode == "mono":
            # the latest keyframes first: in a turn they share the most of the view
            for nb in sorted(short, key=lambda k: -k.id)[:2]:
                ids = self._rotation_points(kf_id, nb)
                if len(ids):
                    new_ids.append(ids)
        return np.concatenate(new_ids) if new_ids else np.zeros(0, dtype=np.int64)

    def _gate(self, kf, nb, i_kf, i_nb, kf_pose, nb_pose, kf_depths, nb_depths) -> tuple[np.ndarray, np.ndarray]:
        """The free keypoints of a keyframe and a neighbour that could make a point, before the
        learned matcher sees them (``mapping.triangulation_gate``).

        A pair passes the triangulation check (:meth:`_check_points`) only when the neighbour's
        keypoint lies near the epipolar segment of the keyframe's (within both keypoints' check
        tolerances, give or take how the geometry carries the keyframe keypoint's error into the
        neighbour): the image in the neighbour of the keyframe's ray between the depths the two
        keyframes' tracked points span (their 2nd to 98th percentiles, widened
        ``triangulation_gate_depth`` times each way). The tolerance
        is 1.25 sqrt(max_reproj_chi2 sigma^2) per keypoint, added for the pair. Keypoints with no
        such partner (outside the shared view, or off every partner's segment) are left out.
        (The same test the other way round leaves out 1.5 % more tokens; not worth its time.)
        Returns the kept (i_kf, i_nb); both unchanged where the depths are unknown."""
        zk, zn = kf_depths[kf_depths > 0], nb_depths[nb_depths > 0]
        if len(zk) < 5 or len(zn) < 5:
            return i_kf, i_nb
        f = self.cfg.triangulation_gate_depth
        lo = min(np.percentile(zk, 2), np.percentile(zn, 2)) / f
        hi = max(np.percentile(zk, 98), np.percentile(zn, 98)) * f
        tol = 1.25 * np.sqrt(self.cfg.max_reproj_chi2)
        r_kf = tol * np.sqrt(kf.kp_sigma2[i_kf])
        r_nb = tol * np.sqrt(nb.kp_sigma2[i_nb])
        nb_from_kf = nb_pose @ se3_inverse(kf_pose)
        keep = epipolar_segment_mask(kf.kp_uv[i_kf], nb.kp_uv[i_nb], self.K, nb_from_kf, (lo, hi), r_kf, r_nb)
        self.n_gated_out += int((~keep.any(1)).sum() + (~keep.any(0)).sum())
        return i_kf[keep.any(1)], i_nb[keep.any(0)]

    def _rotation_points(self, kf_id: int, nb) -> np.ndarray:
        """Points for a keyframe that a turn on the spot has starved (monocular).

        When the camera turns with almost no translation, no covisible keyframe has the baseline
        that triangulation needs, no new point is made, and the map runs out of view within a
        few frames. If the keyframe tracks fewer than ``rotation_points_below`` map points, its
        free keypoints matched in the two latest such keyframes, whose rays agree (the
        rotation-only prediction K R K^-1 x within the parallax the baseline allows) become
        points on the keyframe's rays at the median depth of its tracked points. Their bearings
        constrain the rotation exactly; their depth is a prior that local BA corrects once the
        camera translates (the depth direction carries no gradient until then). Returns the
        new point ids (int64)."""
        c = self.cfg
        m = self.map
        with m.lock:
            kf = m.keyframes.get(kf_id)
            if kf is None or nb.id not in m.keyframes:
                return np.zeros(0, dtype=np.int64)
            own = kf.point_ids[kf.point_ids >= 0]
            own = own[m.pts_alive[own]]
            if len(own) >= c.rotation_points_below:
                return np.zeros(0, dtype=np.int64)
            kf_pose, nb_pose = kf.cam_from_world.copy(), nb.cam_from_world.copy()
            z = transform_points(kf_pose, m.pts_xyz[own])[:, 2]
            i_kf = np.nonzero(kf.point_ids < 0)[0]
            i_nb = np.nonzero(nb.point_ids < 0)[0]
        z = z[z > 0]
        if len(z) < 10 or len(i_kf) < 10 or len(i_nb) < 10:
            return np.zeros(0, dtype=np.int64)
        z_med = float(np.median(z))
        K = self.K
        nb_from_kf = nb_pose @ se3_inverse(kf_pose)
        baseline = float(np.linalg.norm(nb_from_kf[:3, 3]))
        # the parallax a point at half the median depth can show, plus the keypoints' noise
        radius = K[0, 0] * baseline / (0.5 * z_med) + 3.0 * np.sqrt(np.maximum(nb.kp_sigma2[i_nb].max(), 1.0))
        r0 = self.camera.unproject(kf.kp_uv[i_kf], np.ones(len(i_kf)))  # kf-camera rays, z = 1
        pred = (r0 @ nb_from_kf[:3, :3].T) @ K.T
        front = pred[:, 2] > 0
        pred_uv = pred[:, :2] / np.where(front, pred[:, 2], 1.0)[:, None]
        if hasattr(self.matcher, "match_descriptors"):
            ok = front & self.camera.in_image(pred_uv)
            sel = np.nonzero(ok)[0]
            mt, _ = search_by_projection(pred_uv[sel], kf.desc[i_kf[sel]], nb.kp_uv[i_nb], nb.desc[i_nb], radius,
                                         self.max_desc, c.triangulation_ratio)
            a = sel[mt >= 0]
            b = mt[mt >= 0]
        else:
            pr = self.matcher.match(kf.features.subset(i_kf), nb.features.subset(i_nb)).pairs()
            if len(pr) == 0:
                return np.zeros(0, dtype=np.int64)
            a, b = pr[:, 0], pr[:, 1]
            ok = front[a] & (np.linalg.norm(pred_uv[a] - nb.kp_uv[i_nb[b]], axis=1) < radius)
            a, b = a[ok], b[ok]
        if len(a) == 0:
            return np.zeros(0, dtype=np.int64)
        a, b = i_kf[a], i_nb[b]
        pts = transform_points(se3_inverse(kf_pose), self.camera.unproject(kf.kp_uv[a], np.full(len(a), z_med)))
        with m.lock:
            if kf_id not in m.keyframes or nb.id not in m.keyframes:
                return np.zeros(0, dtype=np.int64)
            free = (kf.point_ids[a] < 0) & (nb.point_ids[b] < 0)
            a, b, pts = a[free], b[free], pts[free]
            _, u = np.unique(b, return_index=True)
            a, b, pts = a[u], b[u], pts[u]
            if len(a) == 0:
                return np.zeros(0, dtype=np.int64)
            ids = m.add_points(pts, kf.desc[a], kf.kp_color[a], kf_id)
            m.add_observations(kf_id, a, ids)
            m.add_observations(nb.id, b, ids)
            m.update_normals(ids)
        self.n_rotation_points += len(ids)
        log.debug("keyframe %d: %d rotation points at depth %.2f (baseline %.3f to keyframe %d, %d tracked)",
                  kf_id, len(ids), z_med, baseline, nb.id, len(own))
        return ids

    def _check_points(self, pts, pose0, pose1, x0, x1, s0, s1, c0, c1) -> np.ndarray:
        c = self.cfg
        p0 = transform_points(pose0, pts)
        p1 = transform_points(pose1, pts)
        ok = (p0[:, 2] > 0) & (p1[:, 2] > 0) & np.isfinite(pts).all(1)
        u0 = self.camera.project_undistorted(np.where(ok[:, None], p0, 1.0))
        u1 = self.camera.project_undistorted(np.where(ok[:, None], p1, 1.0))
        e0 = ((u0 - x0) ** 2).sum(1) / s0
        e1 = ((u1 - x1) ** 2).sum(1) / s1
        ok &= (e0 < c.max_reproj_chi2) & (e1 < c.max_reproj_chi2)
        r0 = pts - c0
        r1 = pts - c1
        cos = (r0 * r1).sum(1) / np.maximum(np.linalg.norm(r0, axis=1) * np.linalg.norm(r1, axis=1), 1e-12)
        ok &= cos < c.min_parallax_cos
        if c.min_parallax_sigmas > 0:
            # the parallax against its own noise (radians: the two rays' pixel sigmas over fx)
            parallax = np.arccos(np.clip(cos, -1.0, 1.0))
            ok &= parallax >= c.min_parallax_sigmas * np.sqrt(s0 + s1) / self.camera.fx
        return ok

    # ------------------------------------------------------------------ fusion
    def _fuse(self, kf_id: int) -> None:
        """Project neighbours' points into the new keyframe and the new keyframe's points into
        the neighbours; fill free keypoints, merge duplicates. Takes the map lock once per
        keyframe fused into (with a yield point in between), not for the whole fusion."""
        m = self.map
        with m.lock:
            kf = m.keyframes.get(kf_id)
            if kf is None:
                return
            neigh = [m.keyframes[k] for k, _ in m.keyframe_covisibility(kf_id, min_shared=5)[: self.cfg.n_fuse_neighbours]]
            if not neigh:
                return
            # neighbours' points -> new keyframe
            pts = np.unique(np.concatenate([nb.point_ids for nb in neigh]))
            pts = pts[(pts >= 0)]
            pts = pts[m.pts_alive[pts]]
            pts = np.setdiff1d(pts, kf.point_ids)
            self._fuse_into(kf, pts)
            own = kf.point_ids[kf.point_ids >= 0]
            own = own[m.pts_alive[own]]
        # new keyframe's points -> neighbours
        for nb in neigh:
            self.schedule.yield_point()
            with m.lock:
                if nb.id not in m.keyframes:
                    continue
                self._fuse_into(nb, np.setdiff1d(own, nb.point_ids))

    def _fuse_into(self, kf, pids: np.ndarray) -> None:
        m = self.map
        if len(pids) == 0:
            return
        pc = transform_points(kf.cam_from_world, m.pts_xyz[pids])
        front = pc[:, 2] > 0.05
        uv = self.camera.project_undistorted(np.where(front[:, None], pc, 1.0))
        ok = front & self.camera.in_image(uv)
        pids, uv = pids[ok], uv[ok]
        if len(pids) == 0:
            return
        match, _ = search_by_projection(uv, m.pts_desc[pids], kf.kp_uv, kf.desc, self.cfg.fuse_radius_px, self.max_desc, 1.0)
        sel = np.nonzero(match >= 0)[0]
        if len(sel) == 0:
            return
        kp = match[sel]
        cand = pids[sel]
        existing = kf.point_ids[kp]
        free = existing < 0
        m.add_observations(kf.id, kp[free], cand[free])
        # merge duplicates: keep the point with more observations
        a, b = existing[~free], cand[~free]
        swap = m.pts_n_obs[a] > m.pts_n_obs[b]
        old = np.where(swap, b, a)
        new = np.where(swap, a, b)
        m.replace_points(old, new)

    # ------------------------------------------------------------------ bundle adjustment
    def _gather(self, window: list[int], fixed_extra: Optional[int]) -> Optional[BAProblem]:
        """BA problem of the keyframes in window (free), their points, and as fixed keyframes
        the fixed_extra other observers with most observations of these points (None: all)."""
        m = self.map
        window = [k for k in window if k in m.keyframes]
        if not window:
            return None
        pts = np.unique(np.concatenate([m.keyframes[k].point_ids for k in window]))
        pts = pts[pts >= 0]
        pts = pts[m.pts_alive[pts]]
        if len(pts) == 0:
            return None
        rows = m.observation_rows(point_ids=pts)
        obs_kf = m.obs_kf[rows]
        others, counts = np.unique(obs_kf[~np.isin(obs_kf, window)], return_counts=True)
        others = others[np.argsort(-counts, kind="stable")][:fixed_extra].tolist()
        fixed_set = set(others)
        if 0 in window or 0 in fixed_set:
            fixed_set.add(0)
        if not fixed_set:
            # keep the gauge: fix the oldest keyframe of the window
            fixed_set.add(min(window))
        kf_ids = np.array(sorted(set(window) | fixed_set), dtype=np.int64)
        keep = np.isin(obs_kf, kf_ids)
        rows = rows[keep]
        obs_kf = m.obs_kf[rows]
        obs_kp = m.obs_kp[rows]
        obs_pt = m.obs_pt[rows]
        uv, sigma2, depth = m.observation_arrays(obs_kf, obs_kp)
        inv_s2 = 1.0 / sigma2
        ur = self.depth.virtual_right(uv[:, 0], depth) if has_depth(self.mode) else np.full(len(rows), np.nan)
        prob = BAProblem(
            kf_ids=kf_ids,
            cam_from_world=np.stack([m.keyframes[k].cam_from_world for k in kf_ids.tolist()]),
            fixed=np.array([k in fixed_set for k in kf_ids.tolist()]),
            point_ids=pts,
            points_world=m.pts_xyz[pts].copy(),
            obs_kf=obs_kf.copy(),
            obs_pt=obs_pt.copy(),
            obs_uv=uv,
            obs_inv_sigma2=inv_s2,
            obs_ur=ur,
            bf=self.depth.bf,
            K=self.K,
        )
        return prob

    def _apply(self, prob: BAProblem, res) -> None:
        m = self.map
        for i, k in enumerate(prob.kf_ids.tolist()):
            if not prob.fixed[i] and k in m.keyframes:
                m.keyframes[k].cam_from_world = res.cam_from_world[i]
        alive = m.pts_alive[prob.point_ids]
        m.pts_xyz[prob.point_ids[alive]] = res.points_world[alive]
        out = res.obs_outlier
        m.remove_observation_pairs(prob.obs_kf[out], prob.obs_pt[out])
        m.update_normals(prob.point_ids[m.pts_alive[prob.point_ids]])
        m.version += 1

    def _local_problem(self, kf_id: int) -> Optional[BAProblem]:
        """The local BA problem of keyframe kf_id (caller holds the lock): the keyframe and its
        best covisible ones free, other observers fixed."""
        c = self.cfg
        if kf_id not in self.map.keyframes:
            return None
        size = mono_local_ba(c)[0] if self.mode == "mono" else c.ba_window
        window = [kf_id] + [k for k, _ in self.map.keyframe_covisibility(kf_id, min_shared=15)[: size - 1]]
        # mapping.mono_fix_all_observers: every other observer of the local points is fixed
        # (ORB-SLAM): in mono nothing but them anchors the window's scale (7-DoF gauge)
        all_fixed = self.mode == "mono" and c.mono_fix_all_observers
        return self._gather(window, None if all_fixed else c.ba_max_fixed)

    def global_solver(self, problem: BAProblem) -> str:
        """Which solver a global BA of problem runs: "schur" or "g2o" (mapping.global_ba_solver)."""
        if self.cfg.global_ba_solver == "g2o" or not fits(problem):
            return "g2o"
        return "schur"

    def solve_global(self, problem: BAProblem, iterations: int, stop=None, pause=None):
        """A global BA of problem with the solver of :meth:`global_solver` (no lock needed: it
        works on the copy). stop: a slam.optim.ba.BAStop that ends it early; pause: called
        between pieces of work (the solvers' ``pause``)."""
        if self.global_solver(problem) == "schur":  # chunked: faster than dense from about 20 keyframes on
            return bundle_adjust_schur(problem, iterations=iterations, stop=stop, pause=pause, layout="chunked",
                                       ftol=self.cfg.global_ba_tolerance)
        return bundle_adjust(problem, iterations=iterations, stop=stop, pause=pause)

    def global_bundle_adjustment(self, fixed_ids=None) -> Optional[dict]:
        """Bundle adjustment of the whole map; the first keyframe is fixed, and fixed_ids (ids of
        the first keyframes of other, unmerged maps of the atlas) too."""
        with self.map.lock:
            window = sorted(self.map.keyframes)
            if len(window) < 2:
                return None
            prob = self._gather(window, 0)
        if prob is None:
            return None
        prob.fixed[:] = False
        prob.fixed[0] = True  # gauge: the first keyframe
        if fixed_ids:
            prob.fixed |= np.isin(prob.kf_ids, np.asarray(fixed_ids, dtype=np.int64))
        res = self.solve_global(prob, self.cfg.global_ba_iterations)
        with self.map.lock:
            self._apply(prob, res)
        return {"chi2_before": float(res.chi2_before), "chi2_after": float(res.chi2_after), "n_keyframes": len(window)}

    def stats(self) -> dict:
        """Figures for metrics.json: mean ms per phase, counts of BAs, culls and skipped work."""
        return {
            "mapping_ms": {k: (float(np.mean(v)) if v else 0.0) for k, v in self.timings.items()},
            "local_ba_count": self.n_ba,
            "local_ba_g2o_count": self.n_ba_g2o,
            "culled_keyframes": self.n_culled_kfs,
            "culled_points": self.n_culled_points,
            "mapping_jobs_skipped": self.n_skipped,
            "local_ba_aborted": self.n_ba_aborted,
            "triangulation_gated_keypoints": self.n_gated_out,
        }
