"""Frame tracker: the state machine INIT -> OK <-> LOST, delegating each step.

- INIT: the initialiser decides when the map can start (slam.tracking.initializer: one RGB-D
  frame with depth, or two monocular views from matched points); slam.tracking.keyframes
  builds the initial map.
- OK: constant-velocity prediction; 2D-3D candidates (slam.tracking.search: guided search of
  the last frame's points for descriptor matchers, falling back to matching the reference
  keyframe; keyframe matching with learned matchers, as the matcher's declared kind says);
  the pose (slam.tracking.pose: pose-only refinement from the prediction, or PnP + RANSAC
  first); the local map (slam.tracking.local_map: projection, matching, final refinement);
  the keyframe policy, and a new keyframe (slam.tracking.keyframes).
- LOST: relocalisation (slam.tracking.relocalizer) until it succeeds.

The matcher runs outside ``map.lock``: the tracker takes the lock to choose the keyframes and
keep their features, matches without it, and takes it again to turn the matches into 2D-3D
candidates and update the pose. A keyframe culled in between is skipped. Frame poses are kept
relative to their reference keyframe (slam.tracking.trajectory).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import project_to_so3, se3_inverse
from slam.mapping.map import Keyframe, Map
from slam.matching.base import matcher_kind
from slam.runtime.schedule import MappingSchedule
from slam.tracking.config import TrackingConfig
from slam.tracking.dense_match import DenseMatching
from slam.tracking.initializer import DepthInitializer, MonoInitializer, keypoint_correspondences
from slam.tracking.keyframe_policy import KeyframePolicy
from slam.tracking.keyframes import KeyframeFactory, KeyframeJob
from slam.tracking.local_map import LocalMapTracking, reference_keyframe
from slam.tracking.pose import PoseEstimator
from slam.tracking.relocalizer import Relocalizer
from slam.tracking.search import CandidateSearch
from slam.tracking.trajectory import FrameTrajectory
from slam.types import FrameFeatures, TrackResult

__all__ = ["KeyframeJob", "Tracker"]

log = logging.getLogger(__name__)


@dataclass
class _LastFrame:
    data: FrameFeatures
    cam_from_world: np.ndarray  # (4,4) float64
    point_ids: np.ndarray  # (N,) int64 matched map point or -1


class Tracker:
    """process(FrameFeatures) -> (TrackResult, Optional[KeyframeJob]).

    schedule: tells whether local mapping still has work queued; a keyframe that is merely due
    (not needed to keep tracking) then waits, as in ORB-SLAM. The default never waits, so a
    dataset run's keyframes do not depend on timing.
    """

    def __init__(self, cfg: TrackingConfig, camera: PinholeCamera, slam_map: Map, matcher, mode: str = "rgbd",
                 schedule: Optional[MappingSchedule] = None, dense: Optional[DenseMatching] = None):
        self.cfg = cfg
        self.map = slam_map
        self.matcher = matcher
        self.mode = mode
        self.schedule = schedule if schedule is not None else MappingSchedule()
        self.pose = PoseEstimator(cfg, camera, slam_map, mode)
        self.search = CandidateSearch(cfg, camera, slam_map, matcher_kind(matcher))
        self.local_map = LocalMapTracking(cfg, slam_map, self.search, self.pose)
        self.relocalizer = Relocalizer(cfg, slam_map, self.pose, self.local_map)
        self.keyframes = KeyframeFactory(camera, slam_map, mode)
        #: detector-free matcher for initialisation / relocalisation (slam.tracking.dense_match), or None
        self.dense = dense
        self.keyframes.keep_images = dense is not None and dense.reloc
        self.depth_init = DepthInitializer(cfg)
        self.mono_init = MonoInitializer(cfg, camera.K)
        self.policy = KeyframePolicy(cfg.keyframes, mode)
        self.frame_poses = FrameTrajectory(slam_map)
        self.state = "INIT"
        self.last: Optional[_LastFrame] = None
        self.velocity: Optional[np.ndarray] = None  # cam_t_from_cam_{t-1}
        self.ref_kf_id: Optional[int] = None
        self.last_kf_frame = -1
        self.n_lost = 0
        self.n_relocalised = 0

    # ================================================================== entry point
    def process(self, fr: FrameFeatures) -> tuple[TrackResult, Optional[KeyframeJob]]:
        t0 = time.perf_counter()
        job = None
        cam_from_world = None
        n_inl = 0
        if self.state == "INIT":
            cam_from_world, job = self._init_rgbd(fr) if self.mode == "rgbd" else self._init_mono(fr)
            if job is not None:
                self.state = "OK"
                n_inl = int((self.map.keyframes[job.kf_id].point_ids >= 0).sum())
        else:
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
                    if self.policy.need_keyframe(fr, point_ids, self._ref_tracked_count(), fr.index - self.last_kf_frame, self.map,
                                                 mapping_busy=busy):
                        job = self._insert_keyframe(fr, cam_from_world, point_ids)
        if cam_from_world is not None and self.ref_kf_id is not None:
            with self.map.lock:
                ref = self.map.keyframes.get(self.ref_kf_id)
                if ref is not None:
                    self.frame_poses.add(fr.index, fr.timestamp, ref, cam_from_world)
        res = TrackResult(fr.index, fr.timestamp, self.state, None if cam_from_world is None else se3_inverse(cam_from_world),
                          n_inl, job is not None, {"track": (time.perf_counter() - t0) * 1e3})
        return res, job

    def trajectory(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices (F,), timestamps (F,), world_from_cam (F,4,4)) of every tracked frame,
        expressed relative to the (possibly optimised) reference keyframes."""
        return self.frame_poses.poses()

    # ================================================================== initialisation
    def _init_rgbd(self, fr: FrameFeatures):
        if not self.depth_init.ready(fr):
            return None, None
        cam_from_world = np.eye(4)
        with self.map.lock:
            kf, new_ids = self.keyframes.insert(fr, cam_from_world, np.full(len(fr.kp_uv), -1, dtype=np.int64))
            self._became_keyframe(kf)
        self.last = _LastFrame(fr, cam_from_world, kf.point_ids.copy())
        log.info("RGB-D map initialised with %d points", len(new_ids))
        return cam_from_world, KeyframeJob(kf.id, new_ids, is_initial=True)

    def _init_mono(self, fr: FrameFeatures):
        ref = self.mono_init.reference_for(fr)
        if ref is None:
            return None, None
        if self.dense is not None and self.dense.init and self.dense.usable(ref.image, fr.image):
            found = self.dense.initialise(self.mono_init, ref, fr)
            if found is None:
                return None, None
            res, pairs, pts_ref = found.result, found.pairs, found.pts_ref
        else:
            pairs, x_ref, x_cur = keypoint_correspondences(self.matcher, ref, fr)
            res = self.mono_init.initialise(fr, x_ref, x_cur)
            if res is None:
                return None, None
            pairs, pts_ref = pairs[res.valid], res.pts_cam0[res.valid]
        cam_from_world = res.cam1_from_cam0  # the reference camera is the world frame
        with self.map.lock:
            kf0, kf1, ids = self.keyframes.insert_two_view(ref, fr, pairs, pts_ref, cam_from_world)
            self._became_keyframe(kf1)
            self.frame_poses.add_relative(ref.index, ref.timestamp, kf0.id, np.eye(4))
        self.last = _LastFrame(fr, cam_from_world, kf1.point_ids.copy())
        log.info("monocular map initialised from frames %d-%d with %d points (parallax %.1f deg)", ref.index, fr.index, len(ids),
                 res.median_parallax_deg)
        return cam_from_world, KeyframeJob(kf1.id, np.zeros(0, dtype=np.int64), is_initial=True)

    # ================================================================== keyframes
    def _became_keyframe(self, kf: Keyframe) -> None:
        self.ref_kf_id = kf.id
        self.last_kf_frame = kf.frame_index

    def _insert_keyframe(self, fr: FrameFeatures, cam_from_world: np.ndarray, point_ids: np.ndarray) -> KeyframeJob:
        """Caller holds the map lock."""
        kf, new_ids = self.keyframes.insert(fr, cam_from_world, point_ids)
        self._became_keyframe(kf)
        if self.last is not None and self.last.data is fr:
            self.last.point_ids = kf.point_ids.copy()
        return KeyframeJob(kf.id, new_ids)

    def _ref_tracked_count(self) -> int:
        """Points of the reference keyframe observed often enough (ORB-SLAM's TrackedMapPoints)."""
        ref = self.map.keyframes.get(self.ref_kf_id) if self.ref_kf_id is not None else None
        if ref is None:
            return 0
        pid = ref.point_ids[ref.point_ids >= 0]
        min_obs = 2 if len(self.map.keyframes) <= 2 else 3
        if self.mode == "rgbd":  # a depth observation counts as two (ORB-SLAM's stereo convention)
            min_obs -= 1
        return int((self.map.pts_n_obs[pid] >= min_obs).sum())

    # ================================================================== tracking
    def _track(self, fr: FrameFeatures) -> tuple[Optional[np.ndarray], np.ndarray, int]:
        """-> (cam_from_world or None, point_ids (N,) int64, n_inliers)."""
        n = len(fr.kp_uv)
        if n == 0:
            return None, np.zeros(0, dtype=np.int64), 0
        if self.state == "LOST" or self.last is None:
            return self._relocalise(fr)
        to_match: list[Keyframe] = []
        use_prior = False
        with self.map.lock:
            if self.ref_kf_id not in self.map.keyframes:
                ref_kf_id = reference_keyframe(self.map, self.last.point_ids)
                self.ref_kf_id = ref_kf_id if ref_kf_id is not None else self.ref_kf_id
            pred = self.last.cam_from_world if self.velocity is None else self.velocity @ self.last.cam_from_world
            point_ids = np.full(n, -1, dtype=np.int64)
            if self.search.guided:
                point_ids, use_prior = self.search.by_motion(fr, pred, self.last.point_ids)
                ref = self.map.keyframes.get(self.ref_kf_id)
                if not use_prior and ref is not None:
                    to_match = [ref]
            else:
                to_match = self.search.keyframes_to_match(self.ref_kf_id)
        if to_match:  # without the lock: mapping goes on while the matcher runs
            matches = self.matcher.match_many(fr.features, [kf.features for kf in to_match])
        with self.map.lock:
            if to_match:
                point_ids = self.search.from_keyframe_matches(n, [kf.id for kf in to_match], matches)
            cam_from_world, inl = self.pose.estimate(fr, point_ids, pred if use_prior else None, pred)
            if cam_from_world is None:
                return None, point_ids, 0
            point_ids[~inl] = -1
            cam_from_world, point_ids, n_inl, self.ref_kf_id = self.local_map.track(fr, cam_from_world, point_ids, self.ref_kf_id)
        if n_inl < self.cfg.min_inliers:
            return None, point_ids, n_inl
        return cam_from_world, point_ids, n_inl

    def _relocalise(self, fr: FrameFeatures) -> tuple[Optional[np.ndarray], np.ndarray, int]:
        lost = (None, np.full(len(fr.kp_uv), -1, dtype=np.int64), 0)
        with self.map.lock:
            cands = self.relocalizer.candidates(self.last.cam_from_world if self.last is not None else None)
        if not cands:
            return lost
        if self.dense is not None and self.dense.reloc:
            kf_ids, dense_matches = self.dense.match_keyframes(fr, cands)  # without the lock
            if kf_ids:
                with self.map.lock:
                    found = self.relocalizer.attempt_dense(fr, self.dense, kf_ids, dense_matches, wide=self.n_relocalised > 0)
                if found is not None:
                    self.ref_kf_id = found.ref_kf_id
                    return found.cam_from_world, found.point_ids, found.n_inliers
        matches = self.matcher.match_many(fr.features, [kf.features for kf in cands])  # without the lock
        with self.map.lock:
            found = self.relocalizer.attempt(fr, [kf.id for kf in cands], matches, wide=self.n_relocalised > 0)
        if found is None:
            return lost
        self.ref_kf_id = found.ref_kf_id
        return found.cam_from_world, found.point_ids, found.n_inliers
