"""Frame tracker: INIT -> OK -> LOST, with relocalisation.

Every frame: constant-velocity prediction, 2D-3D candidates (guided search of the last
frame's points for the nearest-neighbour baseline; one batched learned-matcher call against
the reference keyframe and its best covisible keyframes otherwise), PnP + RANSAC when no
reliable prior exists, pose-only g2o refinement, then projection of the local map and a
second refinement. A keyframe policy decides when the frame becomes a keyframe.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.epipolar import initialize_two_view
from slam.geometry.pnp import solve_pnp_ransac
from slam.geometry.se3 import project_to_so3, se3_inverse, transform_points
from slam.mapping.map import Keyframe, Map
from slam.matching.guided import search_by_projection
from slam.optim.ba import optimize_pose
from slam.optim.pose_gn import refine_pose_gn
from slam.runtime.schedule import MappingSchedule
from slam.tracking.config import TrackingConfig
from slam.tracking.keyframe_policy import KeyframePolicy, KeyframePolicyConfig
from slam.types import FrameFeatures, TrackResult

log = logging.getLogger(__name__)


@dataclass
class _LastFrame:
    data: FrameFeatures
    cam_from_world: np.ndarray
    point_ids: np.ndarray  # (N,) int64 matched map point or -1


@dataclass
class KeyframeJob:
    """Sent from tracking to mapping when a keyframe was inserted."""

    kf_id: int
    new_point_ids: np.ndarray  # points created from depth by the tracker (RGB-D)
    is_initial: bool = False


class Tracker:
    """process(FrameFeatures) -> (TrackResult, Optional[KeyframeJob])."""

    def __init__(self, cfg: TrackingConfig, camera: PinholeCamera, slam_map: Map, matcher, mode: str = "rgbd",
                 schedule: Optional[MappingSchedule] = None):
        self.cfg = cfg
        self.camera = camera
        self.K = camera.K
        self.map = slam_map
        self.matcher = matcher
        self.mode = mode
        self.learned_matcher = getattr(matcher, "name", "nn") != "nn"
        self.policy = KeyframePolicy(cfg.keyframes, mode)
        # live runs: while local mapping still has work queued, keyframes that are merely due
        # (not needed to keep tracking) wait, as in ORB-SLAM; the default schedule is never busy,
        # so dataset runs' keyframes do not depend on timing
        self.schedule = schedule if schedule is not None else MappingSchedule()
        self.state = "INIT"
        self.last: Optional[_LastFrame] = None
        self.velocity: Optional[np.ndarray] = None  # cam_t_from_cam_{t-1}
        self.ref_kf_id: Optional[int] = None
        self.last_kf_frame = -1
        self._init_ref: Optional[FrameFeatures] = None
        self.frames: list[tuple[int, float, int, np.ndarray]] = []  # (index, timestamp, ref_kf, cam_from_refkf)
        self.n_lost = 0
        self.n_relocalised = 0
        binary = slam_map.binary
        self.max_desc = cfg.max_desc_dist_binary if binary else cfg.max_desc_dist_float

    # ================================================================== entry point
    def process(self, fr: FrameFeatures) -> tuple[TrackResult, Optional[KeyframeJob]]:
        t0 = time.perf_counter()
        job = None
        cam_from_world = None
        n_inl = 0
        if self.state == "INIT":
            if self.mode == "rgbd":
                cam_from_world, job = self._init_rgbd(fr)
            else:
                cam_from_world, job = self._init_mono(fr)
            if job is not None:
                self.state = "OK"
                n_inl = int((self.map.keyframes[job.kf_id].point_ids >= 0).sum())
        else:
            with self.map.lock:
                cam_from_world, point_ids, n_inl = self._track(fr)
            if cam_from_world is None:
                if self.state == "OK":
                    log.info("frame %d: tracking lost", fr.index)
                self.state = "LOST"
                self.n_lost += 1
                self.velocity = None
            else:
                if self.state == "LOST":
                    self.n_relocalised += 1
                    log.info("frame %d: relocalised with %d inliers", fr.index, n_inl)
                self.state = "OK"
                cam_from_world[:3, :3] = project_to_so3(cam_from_world[:3, :3])
                if self.last is not None and self.last.cam_from_world is not None:
                    self.velocity = cam_from_world @ se3_inverse(self.last.cam_from_world)
                    self.velocity[:3, :3] = project_to_so3(self.velocity[:3, :3])
                self.last = _LastFrame(fr, cam_from_world, point_ids)
                with self.map.lock:
                    busy = self.schedule.mapping_busy()
                    if self.policy.need_keyframe(fr, point_ids, self._ref_tracked_count(), fr.index - self.last_kf_frame, self.map, mapping_busy=busy):
                        job = self._insert_keyframe(fr, cam_from_world, point_ids)
        if cam_from_world is not None and self.ref_kf_id is not None:
            with self.map.lock:
                ref = self.map.keyframes.get(self.ref_kf_id)
                if ref is not None:
                    self.frames.append((fr.index, fr.timestamp, ref.id, cam_from_world @ ref.world_from_cam))
        res = TrackResult(
            fr.index,
            fr.timestamp,
            self.state,
            None if cam_from_world is None else se3_inverse(cam_from_world),
            n_inl,
            job is not None,
            {"track": (time.perf_counter() - t0) * 1e3},
        )
        return res, job

    # ================================================================== initialisation
    def _init_rgbd(self, fr: FrameFeatures):
        valid = fr.kp_depth > 0
        if valid.sum() < max(50, self.cfg.min_inliers):
            return None, None
        cam_from_world = np.eye(4)
        with self.map.lock:
            kf, new_ids = self._make_keyframe(fr, cam_from_world, np.full(len(fr.kp_uv), -1, dtype=np.int64))
        self.last = _LastFrame(fr, cam_from_world, kf.point_ids.copy())
        log.info("RGB-D map initialised with %d points", len(new_ids))
        return cam_from_world, KeyframeJob(kf.id, new_ids, is_initial=True)

    def _init_mono(self, fr: FrameFeatures):
        c = self.cfg
        if len(fr.kp_uv) < c.mono_init_min_matches:
            return None, None
        ref = self._init_ref
        if ref is None or fr.index - ref.index > c.mono_init_max_gap:
            self._init_ref = fr
            return None, None
        m = self.matcher.match(ref.features, fr.features)
        pairs = m.pairs()
        if len(pairs) < c.mono_init_min_matches:
            if len(pairs) < c.mono_init_min_matches // 2:
                self._init_ref = fr
            return None, None
        x0, x1 = ref.kp_uv[pairs[:, 0]], fr.kp_uv[pairs[:, 1]]
        res, reason = initialize_two_view(
            x0, x1, self.K, threshold_px=c.mono_init_threshold_px, min_inliers=c.mono_init_min_matches // 2,
            min_parallax_deg=c.mono_init_min_parallax_deg, min_valid=c.mono_init_min_matches // 2,
        )
        if res is None:
            log.debug("frame %d: mono init rejected: %s", fr.index, reason)
            return None, None
        pairs = pairs[res.valid]
        pts = res.pts_cam0[res.valid]
        cam0_from_world = np.eye(4)
        cam1_from_world = res.cam1_from_cam0
        with self.map.lock:
            kf0, _ = self._make_keyframe(ref, cam0_from_world, np.full(len(ref.kp_uv), -1, dtype=np.int64), create_depth_points=False)
            desc = ref.desc[pairs[:, 0]]
            color = ref.kp_color[pairs[:, 0]]
            ids = self.map.add_points(pts, desc, color, kf0.id)
            self.map.add_observations(kf0.id, pairs[:, 0], ids)
            pid1 = np.full(len(fr.kp_uv), -1, dtype=np.int64)
            pid1[pairs[:, 1]] = ids
            kf1, _ = self._make_keyframe(fr, cam1_from_world, pid1, create_depth_points=False)
            self.frames.append((ref.index, ref.timestamp, kf0.id, np.eye(4)))
        self.last = _LastFrame(fr, cam1_from_world, pid1)
        log.info("monocular map initialised from frames %d-%d with %d points (parallax %.1f deg)", ref.index, fr.index, len(ids), res.median_parallax_deg)
        self._init_ref = None
        return cam1_from_world, KeyframeJob(kf1.id, np.zeros(0, dtype=np.int64), is_initial=True)

    # ================================================================== keyframes
    def _make_keyframe(self, fr: FrameFeatures, cam_from_world: np.ndarray, point_ids: np.ndarray, create_depth_points: bool = True):
        """Create and insert a keyframe (caller holds the lock). RGB-D: new points from depth."""
        kf = Keyframe(
            id=self.map.new_keyframe_id(), frame_index=fr.index, timestamp=fr.timestamp,
            cam_from_world=cam_from_world.copy(), features=fr.features, kp_uv=fr.kp_uv, kp_depth=fr.kp_depth,
            kp_sigma2=fr.kp_sigma2, kp_color=fr.kp_color, desc=fr.desc, point_ids=point_ids.copy(),
        )
        self.map.add_keyframe(kf)
        new_ids = np.zeros(0, dtype=np.int64)
        if create_depth_points and self.mode == "rgbd":
            sel = np.nonzero((kf.point_ids < 0) & (kf.kp_depth > 0))[0]
            if len(sel):
                pc = self.camera.unproject(kf.kp_uv[sel], kf.kp_depth[sel])
                pw = transform_points(kf.world_from_cam, pc)
                new_ids = self.map.add_points(pw, kf.desc[sel], kf.kp_color[sel], kf.id)
                self.map.add_observations(kf.id, sel, new_ids)
                self.map._update_normals(new_ids)
        self.ref_kf_id = kf.id
        self.last_kf_frame = fr.index
        return kf, new_ids

    def _insert_keyframe(self, fr, cam_from_world, point_ids) -> KeyframeJob:
        kf, new_ids = self._make_keyframe(fr, cam_from_world, point_ids)
        if self.last is not None and self.last.data is fr:
            self.last.point_ids = kf.point_ids.copy()
        return KeyframeJob(kf.id, new_ids)

    def _ref_tracked_count(self) -> int:
        ref = self.map.keyframes.get(self.ref_kf_id) if self.ref_kf_id is not None else None
        if ref is None:
            return 0
        pid = ref.point_ids[ref.point_ids >= 0]
        min_obs = 2 if len(self.map.keyframes) <= 2 else 3
        if self.mode == "rgbd":  # a depth observation counts as two (ORB-SLAM's stereo convention)
            min_obs -= 1
        return int((self.map.pts_n_obs[pid] >= min_obs).sum())

    # ================================================================== tracking
    def _track(self, fr: FrameFeatures):
        """Caller holds the map lock. Returns (cam_from_world or None, point_ids (N,), n_inliers)."""
        c = self.cfg
        n = len(fr.kp_uv)
        if n == 0:
            return None, np.zeros(0, dtype=np.int64), 0
        if self.state == "LOST" or self.last is None:
            return self._relocalise(fr)
        if self.ref_kf_id not in self.map.keyframes:
            self._choose_reference(self.last.point_ids)
        pred = self.last.cam_from_world if self.velocity is None else self.velocity @ self.last.cam_from_world
        point_ids = np.full(n, -1, dtype=np.int64)
        use_prior = False
        if self.learned_matcher:
            self._match_keyframes(fr, point_ids, self._matching_keyframes())
        else:
            lp = self.last.point_ids
            kp_last = np.nonzero((lp >= 0))[0]
            pids = lp[kp_last]
            alive = self.map.pts_alive[pids]
            pids = pids[alive]
            for radius_scale in (1.0, 2.0):
                point_ids[:] = -1
                self._guided(fr, pred, pids, point_ids, c.search_radius_px * radius_scale)
                if (point_ids >= 0).sum() >= c.min_matches_motion:
                    use_prior = True
                    break
            if not use_prior:
                ref = self.map.keyframes.get(self.ref_kf_id)
                if ref is not None:
                    point_ids[:] = -1
                    self._match_keyframes(fr, point_ids, [ref])
        cam_from_world, inl = self._estimate(fr, point_ids, pred if use_prior else None, pred)
        if cam_from_world is None:
            return None, point_ids, 0
        point_ids[~inl] = -1
        # local map
        cam_from_world, point_ids, n_inl = self._track_local_map(fr, cam_from_world, point_ids)
        if n_inl < c.min_inliers:
            return None, point_ids, n_inl
        return cam_from_world, point_ids, n_inl

    def _matching_keyframes(self) -> list[Keyframe]:
        ref = self.map.keyframes.get(self.ref_kf_id)
        if ref is None:
            return []
        kfs = [ref]
        for kid, _ in self.map.keyframe_covisibility(ref.id, min_shared=15)[: max(0, self.cfg.n_match_keyframes - 1)]:
            kfs.append(self.map.keyframes[kid])
        return kfs

    def _match_keyframes(self, fr: FrameFeatures, point_ids: np.ndarray, kfs: list[Keyframe]) -> None:
        """Match fr against keyframes (one batched call) and fuse into 2D-3D candidates."""
        if not kfs:
            return
        ms = self.matcher.match_many(fr.features, [kf.features for kf in kfs])
        best = np.zeros(len(point_ids), dtype=np.float32)
        for kf, m in zip(kfs, ms):
            pr = m.pairs()
            if len(pr) == 0:
                continue
            pid = kf.point_ids[pr[:, 1]]
            ok = pid >= 0
            pr, pid = pr[ok], pid[ok]
            ok = self.map.pts_alive[pid]
            pr, pid = pr[ok], pid[ok]
            sc = m.scores0[pr[:, 0]]
            better = sc > best[pr[:, 0]]
            point_ids[pr[better, 0]] = pid[better]
            best[pr[better, 0]] = sc[better]
        # one keypoint per point: keep the highest score
        sel = np.nonzero(point_ids >= 0)[0]
        order = np.lexsort((-best[sel], point_ids[sel]))
        s = sel[order]
        dup = np.zeros(len(s), dtype=bool)
        dup[1:] = point_ids[s[1:]] == point_ids[s[:-1]]
        point_ids[s[dup]] = -1

    def _guided(self, fr: FrameFeatures, cam_from_world: np.ndarray, pids: np.ndarray, point_ids: np.ndarray, radius: float) -> int:
        """Project points pids with cam_from_world and match them to free keypoints of fr."""
        if len(pids) == 0:
            return 0
        pc = transform_points(cam_from_world, self.map.pts_xyz[pids])
        front = pc[:, 2] > self.cfg.min_depth
        pids, pc = pids[front], pc[front]
        uv = self.camera.project_undistorted(pc)
        inside = (uv[:, 0] >= -radius) & (uv[:, 0] < self.camera.width + radius) & (uv[:, 1] >= -radius) & (uv[:, 1] < self.camera.height + radius)
        pids, uv = pids[inside], uv[inside]
        free = point_ids < 0
        m, _ = search_by_projection(uv, self.map.pts_desc[pids], fr.kp_uv, fr.desc, radius, self.max_desc, self.cfg.match_ratio, kp_available=free)
        ok = m >= 0
        point_ids[m[ok]] = pids[ok]
        return int(ok.sum())

    def _obs_arrays(self, fr: FrameFeatures, point_ids: np.ndarray):
        kp = np.nonzero(point_ids >= 0)[0]
        pts = self.map.pts_xyz[point_ids[kp]]
        uv = fr.kp_uv[kp]
        inv_s2 = 1.0 / fr.kp_sigma2[kp]
        ur = np.full(len(kp), np.nan)
        if self.mode == "rgbd":
            d = fr.kp_depth[kp]
            ok = d > 0
            ur[ok] = uv[ok, 0] - self.cfg.bf / d[ok]
        return kp, pts, uv, inv_s2, ur

    def _estimate(self, fr, point_ids, prior: Optional[np.ndarray], pred: np.ndarray):
        """Pose from 2D-3D candidates: pose-only BA from the prior, or PnP RANSAC first.
        Returns (cam_from_world or None, inlier mask (N,) over keypoints)."""
        c = self.cfg
        kp, pts, uv, inv_s2, ur = self._obs_arrays(fr, point_ids)
        inl_kp = np.zeros(len(point_ids), dtype=bool)
        if len(kp) < 10:
            return None, inl_kp
        if prior is None:
            cam_from_world, inl = solve_pnp_ransac(pts, uv, self.K, cam_from_world_init=pred, threshold_px=c.pnp_threshold_px, min_inliers=10)
            if cam_from_world is None:
                return None, inl_kp
            init = cam_from_world
        else:
            init = prior
        cam_from_world, inl = refine_pose_gn(init, pts, uv, self.K, inv_sigma2=inv_s2, ur=ur, bf=c.bf)
        if inl.sum() < 10:
            return None, inl_kp
        inl_kp[kp[inl]] = True
        return cam_from_world, inl_kp

    def _local_points(self, point_ids: np.ndarray) -> tuple[np.ndarray, list[int]]:
        tracked = point_ids[point_ids >= 0]
        cov = self.map.covisible_keyframes(tracked)
        kf_ids = [k for k, _ in cov[: self.cfg.n_local_keyframes]]
        if cov:
            # the keyframe sharing most points becomes the reference
            self.ref_kf_id = cov[0][0]
        if self.ref_kf_id is not None and self.ref_kf_id not in kf_ids and self.ref_kf_id in self.map.keyframes:
            kf_ids.append(self.ref_kf_id)
        # add neighbours of the best keyframes (ORB-SLAM's second ring), bounded
        for k, _ in cov[:2]:
            for k2, _ in self.map.keyframe_covisibility(k, min_shared=30)[:3]:
                if k2 not in kf_ids:
                    kf_ids.append(k2)
        pids = [self.map.keyframes[k].point_ids for k in kf_ids if k in self.map.keyframes]
        if not pids:
            return np.zeros(0, dtype=np.int64), kf_ids
        allp = np.unique(np.concatenate(pids))
        allp = allp[allp >= 0]
        allp = allp[self.map.pts_alive[allp]]
        return allp, kf_ids

    def _choose_reference(self, point_ids: np.ndarray) -> None:
        tracked = point_ids[point_ids >= 0]
        cov = self.map.covisible_keyframes(tracked[self.map.pts_alive[tracked]]) if len(tracked) else []
        if cov:
            self.ref_kf_id = cov[0][0]
        elif self.map.keyframes:
            self.ref_kf_id = max(self.map.keyframes)

    def _track_local_map(self, fr, cam_from_world, point_ids):
        c = self.cfg
        local, _ = self._local_points(point_ids)
        cand = np.setdiff1d(local, point_ids[point_ids >= 0], assume_unique=False)
        if len(cand):
            pc = transform_points(cam_from_world, self.map.pts_xyz[cand])
            front = pc[:, 2] > c.min_depth
            uv = self.camera.project_undistorted(pc)
            inside = front & self.camera.in_image(uv)
            # viewing angle within 60 degrees of the mean viewing direction
            center = se3_inverse(cam_from_world)[:3, 3]
            v = self.map.pts_xyz[cand] - center
            cosang = (v * self.map.pts_normal[cand]).sum(1) / np.maximum(np.linalg.norm(v, axis=1), 1e-9)
            inside &= cosang > 0.5
            vis = cand[inside]
            self.map.pts_visible[vis] += 1
            self.map.pts_visible[point_ids[point_ids >= 0]] += 1
            uv = uv[inside]
            free = point_ids < 0
            radius = c.local_search_radius_px * (2.0 if self.n_relocalised and self.state == "LOST" else 1.0)
            m, _ = search_by_projection(uv, self.map.pts_desc[vis], fr.kp_uv, fr.desc, radius, self.max_desc, c.match_ratio, kp_available=free)
            ok = m >= 0
            point_ids[m[ok]] = vis[ok]
        kp, pts, uv, inv_s2, ur = self._obs_arrays(fr, point_ids)
        if len(kp) < 10:
            return cam_from_world, point_ids, 0
        refine = optimize_pose if c.final_pose_refiner == "g2o" else refine_pose_gn
        cam_from_world, inl = refine(cam_from_world, pts, uv, self.K, inv_sigma2=inv_s2, ur=ur, bf=c.bf)
        point_ids[kp[~inl]] = -1
        found = point_ids[point_ids >= 0]
        self.map.pts_found[found] += 1
        return cam_from_world, point_ids, int(inl.sum())

    # ================================================================== relocalisation
    def _relocalise(self, fr: FrameFeatures):
        """Match against candidate keyframes (nearest to the last pose first, then others)."""
        c = self.cfg
        n = len(fr.kp_uv)
        kfs = list(self.map.keyframes.values())
        if not kfs:
            return None, np.full(n, -1, dtype=np.int64), 0
        if self.last is not None:
            center = se3_inverse(self.last.cam_from_world)[:3, 3]
            kfs.sort(key=lambda k: float(np.linalg.norm(k.center - center)))
        else:
            kfs.sort(key=lambda k: -k.id)
        cands = kfs[: c.reloc_candidates]
        if len(kfs) > c.reloc_candidates:  # a few spread over the rest of the map
            rest = kfs[c.reloc_candidates :]
            cands += rest[:: max(1, len(rest) // 4)][:4]
        ms = self.matcher.match_many(fr.features, [k.features for k in cands])
        for kf, m in zip(cands, ms):
            point_ids = np.full(n, -1, dtype=np.int64)
            pr = m.pairs()
            if len(pr) < 15:
                continue
            pid = kf.point_ids[pr[:, 1]]
            ok = (pid >= 0)
            ok[ok] = self.map.pts_alive[pid[ok]]
            pr, pid = pr[ok], pid[ok]
            _, first = np.unique(pid, return_index=True)
            point_ids[pr[first, 0]] = pid[first]
            cam_from_world, inl = self._estimate(fr, point_ids, None, kf.cam_from_world)
            if cam_from_world is None or inl.sum() < 15:
                continue
            point_ids[~inl] = -1
            self.ref_kf_id = kf.id
            cam_from_world, point_ids, n_inl = self._track_local_map(fr, cam_from_world, point_ids)
            if n_inl >= c.reloc_min_inliers:
                return cam_from_world, point_ids, n_inl
        return None, np.full(n, -1, dtype=np.int64), 0

    # ================================================================== trajectory
    def trajectory(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices (F,), timestamps (F,), world_from_cam (F,4,4)) of every tracked frame,
        expressed relative to the (possibly optimised) reference keyframes."""
        with self.map.lock:
            idx, ts, poses = [], [], []
            for index, t, kf_id, cam_from_ref in self.frames:
                ref_cam_from_world = self.map.keyframe_pose_or_ancestor(kf_id)
                if ref_cam_from_world is None:
                    continue
                idx.append(index)
                ts.append(t)
                poses.append(se3_inverse(cam_from_ref @ ref_cam_from_world))
        if not idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 4, 4))
        order = np.argsort(idx, kind="stable")
        return np.asarray(idx)[order], np.asarray(ts)[order], np.stack(poses)[order]
