"""2D-3D candidate search: which map point each keypoint of a frame may show.

The result is always point_ids (N,) int64 aligned with the frame's keypoints: a map point id,
or -1. Three sources:

- :meth:`CandidateSearch.by_projection` (guided search): map points projected with a pose
  prior, matched by descriptor to free keypoints within a radius;
- :meth:`CandidateSearch.from_keyframe_matches`: keypoint matches between the frame and
  keyframes (from the matcher), read through the keyframes' point_ids;
- :meth:`CandidateSearch.in_local_map`: the local map projected with the frame's estimated
  pose (points in front, inside the image, seen from within 60 degrees of their normal).

Which one starts a frame depends on the matcher's declared kind (slam.matching.base) and, for
learned matchers, on ``tracking.learned_matching``: :attr:`CandidateSearch.guided` is True for
descriptor matchers and for learned matchers run only at keyframes (``keyframes``: frames are
tracked by guided search on the float descriptors, and the learned matcher only runs when that
fails). The matcher itself is never
called here: the tracker calls it outside the map lock and hands the matches in. Every method
reads the map: the caller holds ``map.lock``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import se3_inverse, transform_points
from slam.mapping.map import Keyframe, Map
from slam.errors import ConfigError
from slam.matching.base import DESCRIPTOR
from slam.geometry.pnp import solve_pnp_ransac
from slam.matching.guided import float_threshold, search_by_projection
from slam.matching.nn import mutual_nearest
from slam.tracking.config import EVERY_FRAME, KEYFRAMES, TrackingConfig
from slam.types import FrameFeatures, Matches

MIN_COS_VIEW = 0.5  # local-map points seen within 60 degrees of their mean viewing direction


class CandidateSearch:
    def __init__(self, cfg: TrackingConfig, camera: PinholeCamera, slam_map: Map, matcher_kind: str) -> None:
        self.cfg = cfg
        self.camera = camera
        self.map = slam_map
        if matcher_kind != DESCRIPTOR and cfg.learned_matching not in (EVERY_FRAME, KEYFRAMES):
            raise ConfigError(f"tracking.learned_matching={cfg.learned_matching!r} must be resolved to {EVERY_FRAME!r} or "
                              f"{KEYFRAMES!r} before tracking starts (slam.system.resolve_config does it)")
        #: guided search from the motion model, keyframe matching as fallback: descriptor matchers,
        #: and learned matchers with learned_matching=keyframes; else keyframe matching every frame
        self.guided = matcher_kind == DESCRIPTOR or cfg.learned_matching == KEYFRAMES
        #: the fallback matches the frame against the reference keyframe (descriptor matchers) or
        #: against tracking.n_match_keyframes keyframes (learned matchers)
        self.learned = matcher_kind != DESCRIPTOR
        self.max_desc = cfg.max_desc_dist_binary if slam_map.binary else float_threshold(cfg.max_desc_dist_float)

    # ------------------------------------------------------------------ guided search
    def by_projection(self, fr: FrameFeatures, cam_from_world: np.ndarray, pids: np.ndarray, point_ids: np.ndarray,
                      radius: float) -> int:
        """Project points pids ((P,) int64) with cam_from_world (4,4) and match them to the free
        keypoints of fr (point_ids < 0) within radius px; writes the matches into point_ids
        (in place). Returns the number of matches."""
        if len(pids) == 0:
            return 0
        pc = transform_points(cam_from_world, self.map.pts_xyz[pids])
        front = pc[:, 2] > self.cfg.min_depth
        pids, pc = pids[front], pc[front]
        uv = self.camera.project_undistorted(pc)
        cam = self.camera
        inside = (uv[:, 0] >= -radius) & (uv[:, 0] < cam.width + radius) & (uv[:, 1] >= -radius) & (uv[:, 1] < cam.height + radius)
        pids, uv = pids[inside], uv[inside]
        free = point_ids < 0
        m, _ = search_by_projection(uv, self.map.pts_desc[pids], fr.kp_uv, fr.desc, radius, self.max_desc, self.cfg.match_ratio,
                                    kp_available=free)
        ok = m >= 0
        point_ids[m[ok]] = pids[ok]
        return int(ok.sum())

    def by_motion(self, fr: FrameFeatures, cam_from_world_pred: np.ndarray, last_point_ids: np.ndarray) -> tuple[np.ndarray, bool]:
        """Guided search of the last frame's live points (last_point_ids (N_last,) int64) around
        the motion-model prediction (4,4), with tracking.search_radius_px and then twice it.
        Returns (point_ids (N,), enough): enough is False when both radii gave fewer than
        tracking.min_matches_motion matches (point_ids then holds those of the wider one)."""
        c = self.cfg
        pids = self._live(last_point_ids)
        point_ids = np.full(len(fr.kp_uv), -1, dtype=np.int64)
        for radius_scale in (1.0, 2.0):
            point_ids[:] = -1
            self.by_projection(fr, cam_from_world_pred, pids, point_ids, c.search_radius_px * radius_scale)
            if (point_ids >= 0).sum() >= c.min_matches_motion:
                return point_ids, True
        return point_ids, False

    def _live(self, point_ids: np.ndarray) -> np.ndarray:
        """The live map points among point_ids ((N,) int64, -1 = none), in order."""
        pids = point_ids[point_ids >= 0]
        return pids[self.map.pts_alive[pids]]

    def check_prediction(self, fr: FrameFeatures, cam_from_world_pred: np.ndarray,
                         last_point_ids: np.ndarray) -> tuple[np.ndarray, float]:
        """Check the motion model against the descriptors before guided search trusts it.

        Handheld cameras jerk: at 10-30 fps the constant-velocity prediction is often 10-40 px
        off, more than tracking.search_radius_px. Guided search then still finds a few dozen
        matches, some wrong, and the pose refined from them lands centimetres off without
        failing any test. Here the last frame's live points (last_point_ids (N_last,) int64)
        are matched to the frame's keypoints by mutual nearest descriptor (no geometry), and
        PnP + RANSAC (tracking.pnp_threshold_px, the prediction competing as a start) gives a
        pose from them.

        Returns (cam_from_world (4,4), shift px): the PnP pose when it has at least
        tracking.min_inliers inliers (what tracking itself accepts) and moves their projections by more than
        tracking.predict_check_px (median) from where the prediction puts them, else the
        prediction itself; shift is that median (0.0 when no PnP pose was found)."""
        c = self.cfg
        pids = self._live(last_point_ids)
        n_min = c.min_inliers
        if len(pids) < n_min or len(fr.kp_uv) < n_min:
            return cam_from_world_pred, 0.0
        j, dist = mutual_nearest(self.map.pts_desc[pids], fr.desc)
        ok = (j >= 0) & (dist <= self.max_desc)
        if ok.sum() < n_min:
            return cam_from_world_pred, 0.0
        pts, uv = self.map.pts_xyz[pids[ok]], fr.kp_uv[j[ok]]
        pose, inl = solve_pnp_ransac(pts, uv, self.camera.K, cam_from_world_init=cam_from_world_pred, threshold_px=c.pnp_threshold_px,
                                     min_inliers=n_min)
        if pose is None:
            return cam_from_world_pred, 0.0
        p = pts[inl]
        moved = self.camera.project_undistorted(transform_points(pose, p)) - self.camera.project_undistorted(
            transform_points(cam_from_world_pred, p))
        shift = float(np.median(np.linalg.norm(moved, axis=1)))
        return (pose if shift > c.predict_check_px else cam_from_world_pred), shift

    # ------------------------------------------------------------------ keyframe matches
    def keyframes_to_match(self, ref_kf_id: Optional[int], n: Optional[int] = None) -> list[Keyframe]:
        """The reference keyframe and its best covisible keyframes, n in all (default
        tracking.n_match_keyframes), or [] without a reference."""
        ref = self.map.keyframes.get(ref_kf_id) if ref_kf_id is not None else None
        if ref is None:
            return []
        n = self.cfg.n_match_keyframes if n is None else n
        kfs = [ref]
        for kid, _ in self.map.keyframe_covisibility(ref.id, min_shared=15)[: max(0, n - 1)]:
            kfs.append(self.map.keyframes[kid])
        return kfs

    def from_keyframe_matches(self, n_kp: int, kf_ids: Sequence[int], matches: Sequence[Matches]) -> np.ndarray:
        """Fuse the frame's matches to keyframes (matches[j].matches0 (n_kp,): keypoint of
        keyframe kf_ids[j] or -1) into point_ids (n_kp,): each keypoint takes the live point of
        its best-scoring match; a point matched by several keypoints keeps the best-scoring one.
        Keyframes culled since the matches were requested are skipped."""
        kfs = [self.map.keyframes.get(k) for k in kf_ids]
        return self.from_matches(n_kp, [None if kf is None else kf.point_ids for kf in kfs], matches)

    def from_matches(self, n_kp: int, others_point_ids: Sequence[Optional[np.ndarray]], matches: Sequence[Matches]) -> np.ndarray:
        """Like :meth:`from_keyframe_matches` for any views (keyframes or the last frame): the
        j-th view's keypoints show the points others_point_ids[j] ((N_j,) int64, -1 = none; None
        skips the view), and matches[j].matches0 (n_kp,) gives the view's keypoint per keypoint."""
        point_ids = np.full(n_kp, -1, dtype=np.int64)
        best = np.zeros(n_kp, dtype=np.float32)
        for other_pids, m in zip(others_point_ids, matches):
            pr = m.pairs()
            if other_pids is None or len(pr) == 0:
                continue
            pid = other_pids[pr[:, 1]]
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
        return point_ids

    # ------------------------------------------------------------------ local map
    def in_local_map(self, fr: FrameFeatures, cam_from_world: np.ndarray, point_ids: np.ndarray, local: np.ndarray,
                     radius: float) -> None:
        """Add matches of the local map's points local ((L,) int64) to point_ids (in place),
        for keypoints still free, with the frame at cam_from_world (4,4). Counts the points
        predicted in view (the candidates and those already matched) with Map.count_visible."""
        c = self.cfg
        cand = np.setdiff1d(local, point_ids[point_ids >= 0], assume_unique=False)
        if len(cand) == 0:
            return
        pc = transform_points(cam_from_world, self.map.pts_xyz[cand])
        front = pc[:, 2] > c.min_depth
        uv = self.camera.project_undistorted(pc)
        inside = front & self.camera.in_image(uv)
        center = se3_inverse(cam_from_world)[:3, 3]
        v = self.map.pts_xyz[cand] - center
        cosang = (v * self.map.pts_normal[cand]).sum(1) / np.maximum(np.linalg.norm(v, axis=1), 1e-9)
        inside &= cosang > MIN_COS_VIEW
        vis = cand[inside]
        self.map.count_visible(vis)
        self.map.count_visible(point_ids[point_ids >= 0])
        uv = uv[inside]
        free = point_ids < 0
        m, _ = search_by_projection(uv, self.map.pts_desc[vis], fr.kp_uv, fr.desc, radius, self.max_desc, c.match_ratio,
                                    kp_available=free)
        ok = m >= 0
        point_ids[m[ok]] = vis[ok]
