"""Frame tracker: the state machine INIT -> OK <-> LOST, delegating each step.

- INIT: the initialiser decides when the map can start (slam.tracking.initializer: one RGB-D
  frame with depth, or two monocular views from matched points); slam.tracking.keyframes
  builds the initial map.
- OK: constant-velocity prediction; 2D-3D candidates (slam.tracking.search: guided search of
  the last frame's points for descriptor matchers, falling back to matching the reference
  keyframe; with learned matchers, keyframe matching on every frame, or with
  ``tracking.learned_matching: keyframes`` guided search as for descriptor matchers, falling
  back to the learned matcher against the reference and its covisible keyframes);
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
from slam.geometry.se3 import project_to_so3, rotation_angle_deg, se3_inverse, transform_points
from slam.mapping.depth_weight import DepthWeight, inverse_depth
from slam.mapping.map import Keyframe, Map
from slam.matching.base import matcher_kind
from slam.runtime.schedule import MappingSchedule
from slam.tracking.config import TrackingConfig
from slam.tracking.dense_match import DenseMatching
from slam.tracking.initializer import DepthInitializer, MonoInitializer, keypoint_correspondences, refine_two_view
from slam.tracking.keyframe_policy import KeyframePolicy
from slam.tracking.keyframes import KeyframeFactory, KeyframeJob
from slam.tracking.local_map import LocalMapTracking, reference_keyframe
from slam.tracking.patch_align import PatchAligner, patch_align_on
from slam.tracking.pose import PoseEstimator
from slam.tracking.relocalizer import Relocalizer
from slam.tracking.search import CandidateSearch
from slam.tracking.small_image import RotationAligner, small_camera_matrix
from slam.tracking.trajectory import FrameTrajectory
from slam.types import FrameFeatures, TrackResult, has_depth

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
                 schedule: Optional[MappingSchedule] = None, dense: Optional[DenseMatching] = None,
                 depth_weight: Optional[DepthWeight] = None):
        self.cfg = cfg
        self.map = slam_map
        self.matcher = matcher
        self.mode = mode
        self.schedule = schedule if schedule is not None else MappingSchedule()
        self.pose = PoseEstimator(cfg, camera, slam_map, mode, depth_weight)
        self.search = CandidateSearch(cfg, camera, slam_map, matcher_kind(matcher))
        #: aligns tracked keypoints to their points' reference patches (tracking.patch_align), or None
        self.patch_aligner = (PatchAligner(camera, cfg.patch_align_max_px, cfg.patch_align_min_zncc, cfg.patch_align_iterations)
                              if patch_align_on(cfg.patch_align, mode) else None)
        self.local_map = LocalMapTracking(cfg, slam_map, self.search, self.pose, self.patch_aligner)
        self.relocalizer = Relocalizer(cfg, slam_map, self.pose, self.local_map)
        self.keyframes = KeyframeFactory(camera, slam_map, mode, close_depth=cfg.keyframes.close_depth)
        #: detector-free matcher for initialisation / relocalisation / loop verification
        #: (slam.tracking.dense_match), or None; keyframes keep their (grey) image for the last two
        self.dense = dense
        self.keyframes.keep_images = dense is not None and (dense.reloc or dense.loop)
        self.depth_init = DepthInitializer(cfg)
        self.mono_init = MonoInitializer(cfg, camera.K)
        self.policy = KeyframePolicy(cfg.keyframes, mode)
        self.frame_poses = FrameTrajectory(slam_map, max_obs=cfg.frame_refine_points)
        self.state = "INIT"
        self.last: Optional[_LastFrame] = None
        self.velocity: Optional[np.ndarray] = None  # cam_t_from_cam_{t-1}
        self.ref_kf_id: Optional[int] = None
        self.last_kf_frame = -1
        self.best_since_kf = 0  # most points tracked by one frame since the last keyframe (the keyframe policy's "weak" yardstick)
        self.n_lost = 0
        self.n_relocalised = 0
        self.n_matched_frames = 0  # tracked frames (after initialisation) for which the matcher ran
        self.n_predictions_replaced = 0  # frames whose motion-model prediction the descriptor check replaced
        #: aligns the frames' small images (tracking.rotation_prior), or None when off
        self._aligner = RotationAligner(small_camera_matrix(camera, cfg.rotation_prior_width)) if cfg.rotation_prior else None
        self._focal = float(max(camera.fx, camera.fy))
        self.n_rotation_priors = 0  # frames whose prediction took the small images' rotation
        self.rotation_prior_ms = 0.0  # total time of the small-image alignments
        self.n_rotation_alignments = 0
        #: slam.mapping.atlas.Atlas when lost tracking may start a new map (set by slam.system), else None
        self.atlas = None
        self.n_lost_run = 0  # frames lost in a row
        self._kept: Optional[tuple] = None  # (map id, last frame) of the map kept when a new one started, until it starts
        self.n_new_maps = 0
        self.n_young_resets = 0  # maps discarded because tracking was lost soon after they started
        self.n_wide_first_stage = 0  # wide searches that began with the last frame alone (tracking.wide_search_staged)
        self.n_wide_searches = 0  # wide searches that matched every candidate keyframe
        self.init_frame: Optional[int] = None  # frame index of the active map's initialisation

    # ================================================================== entry point
    def process(self, fr: FrameFeatures) -> tuple[TrackResult, Optional[KeyframeJob]]:
        t0 = time.perf_counter()
        job = None
        cam_from_world = None
        n_inl = 0
        back = self._relocalise_in_kept_map(fr) if self.state == "INIT" and self._kept is not None else None
        if back is not None:  # the images came back before the new map started: relocalised in the old one
            cam_from_world, point_ids, n_inl = back
            self.state, self.last = "OK", _LastFrame(fr, cam_from_world, point_ids)
            self.n_relocalised += 1
            log.info("frame %d: relocalised in map %d with %d inliers; the new map was not needed", fr.index, self.atlas.active, n_inl)
        elif self.state == "INIT":
            cam_from_world, job = self._init_rgbd(fr) if has_depth(self.mode) else self._init_mono(fr)
            if job is not None:
                self.state = "OK"
                self.init_frame = fr.index
                n_inl = int((self.map.keyframes[job.kf_id].point_ids >= 0).sum())
        else:
            cam_from_world, point_ids, n_inl = self._track(fr)
            if cam_from_world is None:
                if self.state == "OK":
                    log.info("frame %d: tracking lost", fr.index)
                self.state = "LOST"
                self.n_lost += 1
                self.n_lost_run += 1
                self.velocity = None
                self._maybe_new_map(fr)
            else:
                if self.state == "LOST":
                    self.n_relocalised += 1
                    log.info("frame %d: relocalised with %d inliers", fr.index, n_inl)
                self.state = "OK"
                self.n_lost_run = 0
                cam_from_world[:3, :3] = project_to_so3(cam_from_world[:3, :3])
                if self.last is not None and self.last.cam_from_world is not None:
                    self.velocity = cam_from_world @ se3_inverse(self.last.cam_from_world)
                    self.velocity[:3, :3] = project_to_so3(self.velocity[:3, :3])
                self.last = _LastFrame(fr, cam_from_world, point_ids)
                self.best_since_kf = max(self.best_since_kf, int((point_ids >= 0).sum()))
                with self.map.lock:
                    busy = self.schedule.mapping_busy()
                    if self.policy.need_keyframe(fr, point_ids, self._ref_tracked_count(), fr.index - self.last_kf_frame, self.map,
                                                 mapping_busy=busy, recent_best=self.best_since_kf):
                        job = self._insert_keyframe(fr, cam_from_world, point_ids)
        if cam_from_world is not None and self.ref_kf_id is not None:
            with self.map.lock:
                ref = self.map.keyframes.get(self.ref_kf_id)
                if ref is not None:
                    obs = None
                    if self.state == "OK" and self.last is not None and self.last.data is fr:
                        kp, _, uv, inv_s2, _ = self.pose.observations(fr, self.last.point_ids)
                        inv_d = inverse_depth(fr.kp_depth[kp]) if has_depth(self.mode) else np.full(len(kp), np.nan)
                        obs = (self.last.point_ids[kp], uv, inv_s2, inv_d)
                    self.frame_poses.add(fr.index, fr.timestamp, ref, cam_from_world, obs)
        res = TrackResult(fr.index, fr.timestamp, self.state, None if cam_from_world is None else se3_inverse(cam_from_world),
                          n_inl, job is not None, {"track": (time.perf_counter() - t0) * 1e3})
        return res, job

    def apply_world_correction(self, world_new_from_old: dict) -> None:
        """Loop closing moved the map: {kf_id: (4,4) Sim(3) world_new <- world_old}. The last
        frame moves with its reference keyframe; the velocity takes its scale."""
        W = world_new_from_old.get(self.ref_kf_id)
        if W is None or self.last is None or self.last.cam_from_world is None:
            return
        s = float(np.cbrt(np.linalg.det(W[:3, :3])))
        moved = self.last.cam_from_world @ np.linalg.inv(W)
        moved[:3, :] *= s  # the similarity has scale 1/s: the rigid pose in the new world
        moved[:3, :3] = project_to_so3(moved[:3, :3])
        self.last.cam_from_world = moved
        if self.velocity is not None:
            self.velocity = self.velocity.copy()
            self.velocity[:3, 3] *= s

    def trajectory(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices (F,), timestamps (F,), world_from_cam (F,4,4)) of every tracked frame,
        expressed relative to the (possibly optimised) reference keyframes."""
        return self.frame_poses.poses()

    def _maybe_new_map(self, fr: FrameFeatures) -> None:
        """Tracking was lost on fr. With the atlas, the tracker starts a new map and initialises
        again (fr is the next initialisation's first candidate) in two cases:
        - monocular, lost within tracking.reset_young_map_frames frames of the initialisation while
          the map has at most tracking.reset_young_map_keyframes keyframes: the map is taken for a
          wrong start and discarded (ORB-SLAM's reset; its keyframes go without a parent, so their
          points lose every observation and die, and the frames tracked in it leave the trajectory);
        - lost for tracking.new_map_after_lost_frames frames in a row (monocular, or any mode with
          tracking.new_map_in_depth_modes): the map is kept in the atlas."""
        c = self.cfg
        young = (c.reset_young_map_keyframes > 0 and not has_depth(self.mode) and self.init_frame is not None
                 and fr.index - self.init_frame <= c.reset_young_map_frames)
        long_loss = (c.new_map_after_lost_frames > 0 and self.n_lost_run >= c.new_map_after_lost_frames
                     and (not has_depth(self.mode) or c.new_map_in_depth_modes))
        if self.atlas is None or not (young or long_loss):
            return
        with self.map.lock:
            kfs = self.atlas.keyframes_of(self.atlas.active, self.map.keyframes)
            discard = young and 0 < len(kfs) <= c.reset_young_map_keyframes
            if not kfs or not (discard or long_loss):
                return
            for kf_id in kfs if discard else ():
                self.map.remove_keyframe(kf_id)
            old_id = self.atlas.active
            new_id = self.atlas.new_map(self.map.next_keyframe_id, fr.index)
        if discard:
            log.info("frame %d: tracking lost in map %d with %d keyframes, soon after its start: map discarded, new map %d",
                     fr.index, old_id, len(kfs), new_id)
            self._kept = None
            self.n_young_resets += 1
        else:
            log.info("frame %d: lost for %d frames, map %d kept, new map %d started", fr.index, self.n_lost_run, old_id, new_id)
            self._kept = (old_id, self.last)
            self.n_new_maps += 1
        self.state, self.last, self.velocity, self.ref_kf_id, self.last_kf_frame = "INIT", None, None, None, -1
        self.mono_init.ref, self.mono_init.waiting_since = None, None
        self.n_lost_run = 0

    def _relocalise_in_kept_map(self, fr: FrameFeatures) -> Optional[tuple]:
        """Until the new map has a keyframe, a frame is first relocalised in the map kept when it
        started (the old map becomes active again, the empty new one is dropped). -> (cam_from_world,
        point_ids, n_inliers) or None."""
        if len(fr.kp_uv) == 0:
            return None
        with self.map.lock:
            if self.atlas.keyframes_of(self.atlas.active, self.map.keyframes):
                self._kept = None  # the new map started
                return None
            new_id = self.atlas.active
            self.atlas.activate(self._kept[0])
        self.last = self._kept[1]
        found = self._relocalise(fr)
        self.last = None
        with self.map.lock:
            if found[0] is None:
                self.atlas.activate(new_id)
                return None
            self.atlas.drop_last_map()
        self._kept = None
        return found

    # ================================================================== initialisation
    def _init_rgbd(self, fr: FrameFeatures):
        if not self.depth_init.ready(fr):
            return None, None
        cam_from_world = np.eye(4)
        with self.map.lock:
            kf, new_ids = self.keyframes.insert(fr, cam_from_world, np.full(len(fr.kp_uv), -1, dtype=np.int64))
            self._became_keyframe(kf, fr.image)
        self.last = _LastFrame(fr, cam_from_world, kf.point_ids.copy())
        log.info("%s map initialised with %d points", "stereo" if self.mode == "stereo" else "RGB-D", len(new_ids))
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
            if self.cfg.mono_init_ba and res.model != "rotation":
                res = refine_two_view(res, x_ref, x_cur, self.mono_init.K, 1.0 / ref.kp_sigma2[pairs[:, 0]],
                                      1.0 / fr.kp_sigma2[pairs[:, 1]])
                if int(res.valid.sum()) < self.cfg.mono_init_min_matches:
                    log.debug("frame %d: mono init rejected: %d points after BA", fr.index, int(res.valid.sum()))
                    return None, None
            pairs, pts_ref = pairs[res.valid], res.pts_cam0[res.valid]
        cam_from_world = res.cam1_from_cam0  # the reference camera is the world frame
        with self.map.lock:
            kf0, kf1, ids = self.keyframes.insert_two_view(ref, fr, pairs, pts_ref, cam_from_world)
            if self.patch_aligner is not None:
                self.patch_aligner.on_keyframe(self.map, kf0, ref.image)
            self._became_keyframe(kf1, fr.image)
            self.frame_poses.add_relative(ref.index, ref.timestamp, kf0.id, np.eye(4))
        self.last = _LastFrame(fr, cam_from_world, kf1.point_ids.copy())
        if res.model == "rotation":
            log.info("monocular map initialised from frames %d-%d with %d points from a pure rotation (depth 1 on the "
                     "reference rays: no baseline after %d frames)", ref.index, fr.index, len(ids), self.cfg.mono_init_rotation_after)
        else:
            log.info("monocular map initialised from frames %d-%d with %d points (parallax %.1f deg)", ref.index, fr.index,
                     len(ids), res.median_parallax_deg)
        return cam_from_world, KeyframeJob(kf1.id, np.zeros(0, dtype=np.int64), is_initial=True)

    # ================================================================== keyframes
    def _became_keyframe(self, kf: Keyframe, image: Optional[np.ndarray] = None) -> None:
        """kf (made from a frame with grey image ``image``, or None) is the new reference keyframe.
        Caller holds the map lock."""
        if self.patch_aligner is not None:
            self.patch_aligner.on_keyframe(self.map, kf, image)
        self.ref_kf_id = kf.id
        self.last_kf_frame = kf.frame_index
        self.best_since_kf = 0

    def _insert_keyframe(self, fr: FrameFeatures, cam_from_world: np.ndarray, point_ids: np.ndarray) -> KeyframeJob:
        """Caller holds the map lock."""
        kf, new_ids = self.keyframes.insert(fr, cam_from_world, point_ids)
        self._became_keyframe(kf, fr.image)
        if self.last is not None and self.last.data is fr:
            self.last.point_ids = kf.point_ids.copy()
        return KeyframeJob(kf.id, new_ids)

    def _ref_tracked_count(self) -> int:
        """Points of the reference keyframe observed often enough (ORB-SLAM's TrackedMapPoints)."""
        ref = self.map.keyframes.get(self.ref_kf_id) if self.ref_kf_id is not None else None
        if ref is None:
            return 0
        pid = ref.point_ids[ref.point_ids >= 0]
        n_kfs = len(self.map.keyframes) if self.atlas is None else len(self.atlas.keyframes_of(self.atlas.active, self.map.keyframes))
        min_obs = 2 if n_kfs <= 2 else 3
        if has_depth(self.mode):  # a depth observation counts as two (ORB-SLAM's stereo convention)
            min_obs -= 1
        return int((self.map.pts_n_obs[pid] >= min_obs).sum())

    # ================================================================== tracking
    def _track(self, fr: FrameFeatures) -> tuple[Optional[np.ndarray], np.ndarray, int]:
        """-> (cam_from_world or None, point_ids (N,) int64, n_inliers).

        First the cheap path: guided search around the constant-velocity prediction, once a PnP
        pose from mutual nearest descriptors has checked it (descriptor matchers, and learned
        matchers with learned_matching=keyframes), or matches to the reference and covisible
        keyframes (learned matchers, every_frame). The
        result is checked: with fewer than tracking.min_inliers inliers the prediction is not
        trusted and :meth:`_track_wide` redoes the frame from more candidates."""
        n = len(fr.kp_uv)
        if n == 0:
            return None, np.zeros(0, dtype=np.int64), 0
        if self.state == "LOST" or self.last is None:
            return self._relocalise(fr)
        to_match: list[Keyframe] = []
        use_prior = False
        if self._aligner is not None:
            with self.map.lock:
                depth = self._last_depth()
            rot_pred = self._rotation_prediction(fr, depth)  # (4,4) or None; the alignment without the lock
        else:
            rot_pred = None
        with self.map.lock:
            if self.ref_kf_id not in self.map.keyframes:
                ref_kf_id = reference_keyframe(self.map, self.last.point_ids)
                self.ref_kf_id = ref_kf_id if ref_kf_id is not None else self.ref_kf_id
            pred = self.last.cam_from_world if self.velocity is None else self.velocity @ self.last.cam_from_world
            if rot_pred is not None:
                pred = rot_pred
                self.n_rotation_priors += 1
            point_ids = np.full(n, -1, dtype=np.int64)
            if self.search.guided:
                if self.cfg.predict_check_px > 0:
                    checked, _ = self.search.check_prediction(fr, pred, self.last.point_ids)
                    self.n_predictions_replaced += checked is not pred
                    pred = checked
                point_ids, use_prior = self.search.by_motion(fr, pred, self.last.point_ids)
                if not use_prior:  # guided search failed: the matcher against keyframes
                    to_match = self._fallback_keyframes()
            else:
                to_match = self.search.keyframes_to_match(self.ref_kf_id)
        if to_match:  # without the lock: mapping goes on while the matcher runs
            matches = self.matcher.match_many(fr.features, [kf.features for kf in to_match])
            self.n_matched_frames += 1
        with self.map.lock:
            if to_match:
                point_ids = self.search.from_keyframe_matches(n, [kf.id for kf in to_match], matches)
            if self.search.guided and not use_prior and not to_match:  # too few guided matches: straight to the wide search
                first = (None, point_ids, 0)
            else:
                first = self._pose_and_local_map(fr, point_ids, pred if use_prior else None, pred, "motion" if use_prior else "keyframes")
        if first[0] is not None and first[2] >= self.cfg.min_inliers:
            return first
        if self.cfg.wide_search:
            done = {kf.id: m for kf, m in zip(to_match, matches)} if to_match else None
            second = self._track_wide(fr, pred, matched=done)
        elif self.search.guided and not use_prior and not to_match:  # the plain fallback: PnP from matches to the reference keyframe
            second = self._track_wide(fr, pred, n_keyframes=1, with_last=False)
        else:
            second = (None, first[1], 0)
        best = second if second[2] > first[2] else first
        if best[0] is None or best[2] < self.cfg.min_inliers:
            return None, best[1], best[2]
        return best

    def _last_depth(self) -> Optional[float]:
        """Median depth (map units) of the last frame's live points in its camera, or None with
        fewer than 10. Caller holds the map lock."""
        pids = self.last.point_ids
        pids = pids[pids >= 0]
        pids = pids[self.map.pts_alive[pids]]
        if len(pids) < 10:
            return None
        z = transform_points(self.last.cam_from_world, self.map.pts_xyz[pids])[:, 2]
        z = z[z > 0]
        return float(np.median(z)) if len(z) >= 10 else None

    def _rotation_prediction(self, fr: FrameFeatures, depth: Optional[float] = None) -> Optional[np.ndarray]:
        """The constant-velocity prediction (4,4) cam_from_world with its rotation replaced by
        the one that aligns the last frame's small image with this frame's
        (slam.tracking.small_image; starts: no turn and the velocity's turn; the velocity's
        translation over depth, the last frame's median depth, moves the image as a plane), or
        None: rotation prior off, no small images, an alignment that overlaps less than half the
        image, or one within tracking.rotation_prior_min_px of the velocity's rotation."""
        last = self.last
        if self._aligner is None or fr.small_image is None or last is None or last.data.small_image is None:
            return None
        t0 = time.perf_counter()
        vel = self.velocity
        starts = [np.eye(3)] if vel is None else [np.eye(3), vel[:3, :3]]
        shift = vel[:3, 3] / depth if vel is not None and depth else None
        res = self._aligner.align(last.data.small_image, fr.small_image, starts, shift)
        self.rotation_prior_ms += (time.perf_counter() - t0) * 1e3
        self.n_rotation_alignments += 1
        if res is None or res.overlap < 0.5 or not res.residual <= res.start_residual:
            return None
        if vel is not None and rotation_angle_deg(res.cur_from_last @ vel[:3, :3].T) * np.pi / 180.0 * self._focal <= self.cfg.rotation_prior_min_px:
            return None  # the constant-velocity rotation agrees: no jerk
        step = np.eye(4)
        step[:3, :3] = res.cur_from_last
        if vel is not None:
            step[:3, 3] = vel[:3, 3]
        return step @ last.cam_from_world

    def _track_wide(self, fr: FrameFeatures, pred: np.ndarray, n_keyframes: Optional[int] = None,
                    with_last: bool = True, matched: Optional[dict] = None) -> tuple[Optional[np.ndarray], np.ndarray, int]:
        """The prediction failed (fast motion, blur): match the frame against the last frame and
        the reference keyframe with its best covisible ones (tracking.reloc_candidates in all),
        PnP + RANSAC on the union of the 2D-3D candidates, then the local map with twice the
        search radius. matched: {keyframe id: Matches} this frame already has (the first
        fallback's), which are not matched again. With tracking.wide_search_staged the last frame
        is matched first, alone, and the pose from it and ``matched`` is kept when it has
        tracking.min_inliers inliers after the local map; only otherwise are the other keyframes matched."""
        n = len(fr.kp_uv)
        matched = matched or {}
        with self.map.lock:
            kfs = self.search.keyframes_to_match(self.ref_kf_id, n_keyframes or self.cfg.reloc_candidates)
            todo = [kf for kf in kfs if kf.id not in matched]
            last_views = [self.last.data.features] if with_last else []
            last_pids = [self.last.point_ids.copy()] if with_last else []
        views = [kf.features for kf in todo]
        if with_last and todo and self.cfg.wide_search_staged:
            # first stage: the last frame, with the keyframes the first fallback matched (if it ran)
            last_matches = self.matcher.match_many(fr.features, last_views)  # without the lock
            self.n_wide_first_stage += 1
            with self.map.lock:
                done = [kf for kf in kfs if kf.id in matched]
                kf_pids = [kf.point_ids if kf.id in self.map.keyframes else None for kf in done]
                point_ids = self.search.from_matches(n, kf_pids + last_pids, [matched[kf.id] for kf in done] + last_matches)
                first = self._pose_and_local_map(fr, point_ids, None, pred, "wide, first stage", wide=True)
            if first[0] is not None and first[2] >= self.cfg.min_inliers:
                return first
            new = self.matcher.match_many(fr.features, views)  # without the lock
        else:
            new = self.matcher.match_many(fr.features, views + last_views)  # without the lock
            new, last_matches = new[:len(todo)], new[len(todo):]
        new = iter(new)
        matches = [matched[kf.id] if kf.id in matched else next(new) for kf in kfs] + list(last_matches)
        self.n_wide_searches += 1
        with self.map.lock:
            kf_pids = [kf.point_ids if kf.id in self.map.keyframes else None for kf in kfs]
            point_ids = self.search.from_matches(n, kf_pids + last_pids, matches)
            return self._pose_and_local_map(fr, point_ids, None, pred, "wide" if with_last else "reference", wide=with_last)

    def _pose_and_local_map(self, fr: FrameFeatures, point_ids: np.ndarray, prior: Optional[np.ndarray], pred: np.ndarray,
                            source: str, wide: bool = False) -> tuple[Optional[np.ndarray], np.ndarray, int]:
        """Pose from the candidates point_ids (N,) (refinement from prior (4,4), or PnP when None),
        then the local map. Caller holds the map lock. -> (cam_from_world or None, point_ids, n_inliers)."""
        n_cand = int((point_ids >= 0).sum())
        cam_from_world, inl = self.pose.estimate(fr, point_ids, prior, pred)
        if cam_from_world is None:
            log.debug("frame %d: no pose from %d candidates (%s)", fr.index, n_cand, source)
            return None, point_ids, 0
        point_ids[~inl] = -1
        ref_kf_id = self.ref_kf_id
        cam_from_world, point_ids, n_inl, ref_kf_id = self.local_map.track(fr, cam_from_world, point_ids, ref_kf_id, wide=wide)
        log.debug("frame %d: %d candidates (%s), %d inliers, %d after the local map", fr.index, n_cand, source, int(inl.sum()), n_inl)
        if n_inl >= self.cfg.min_inliers:
            self.ref_kf_id = ref_kf_id
        return cam_from_world, point_ids, n_inl

    def _fallback_keyframes(self) -> list[Keyframe]:
        """Keyframes to match a frame whose guided search failed: the reference keyframe for
        descriptor matchers; the reference and its best covisible keyframes for learned ones.
        Caller holds the map lock."""
        if self.search.learned:
            return self.search.keyframes_to_match(self.ref_kf_id)
        ref = self.map.keyframes.get(self.ref_kf_id) if self.ref_kf_id is not None else None
        return [] if ref is None else [ref]

    def _relocalise(self, fr: FrameFeatures) -> tuple[Optional[np.ndarray], np.ndarray, int]:
        lost = (None, np.full(len(fr.kp_uv), -1, dtype=np.int64), 0)
        with self.map.lock:
            cands = self.relocalizer.candidates(self.last.cam_from_world if self.last is not None else None, fr.desc)
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
        # learned matchers: in groups of tracking.n_match_keyframes, in the candidates' order, until one
        # is found (the first candidate that passes wins either way, and each pair costs); descriptor matchers: all at once
        step = self.cfg.n_match_keyframes if self.search.learned else len(cands)
        found = None
        for i in range(0, len(cands), step):
            group = cands[i:i + step]
            matches = self.matcher.match_many(fr.features, [kf.features for kf in group])  # without the lock
            with self.map.lock:
                found = self.relocalizer.attempt(fr, [kf.id for kf in group], matches, wide=self.n_relocalised > 0)
            if found is not None:
                break
        if found is None:
            return lost
        self.ref_kf_id = found.ref_kf_id
        return found.cam_from_world, found.point_ids, found.n_inliers
