"""Detector-free (dense) matching where two images are compared: monocular initialisation,
relocalisation and loop verification (``tracking.mono_init_matcher=loftr``,
``tracking.reloc_matcher=loftr``, ``loop_closing.matcher=loftr``).

A detector-free matcher (LoFTR) gives 2D-2D matches between two *images*, not keypoint indices.
Tracking keeps the frame's own extractor and matcher, so the map must stay made of keypoints
with descriptors. The matches are therefore tied to keypoints by **snapping**: a match point is
attached to the nearest keypoint within ``tracking.dense_snap_px`` pixels.

Why snap rather than add keypoints at the matched locations: a map point is only useful to the
tracker if it can be matched again by the frame's own matcher, which needs a descriptor of the
frame's extractor at that point (ORB, SuperPoint, ...). LoFTR has no per-point descriptor, and
not every extractor can describe arbitrary locations. Snapping keeps every map point on a
detected keypoint with its own descriptor.

Snapping one side of a match moves the point by ``d = kp - p`` (at most ``dense_snap_px``); the
other side is moved by the same ``d`` (the match is locally a translation), and the result is
snapped in its turn (init, within 2 x tracking.mono_init_threshold_px: the error that
triangulation accepts) or used as is (relocalisation: the frame side is the 2D observation).
Errors of this first-order transfer are caught by the geometry: triangulation checks at
initialisation, PnP + RANSAC at relocalisation.

- **Initialisation** (:meth:`DenseMatching.initialise`): the two-view geometry from *all* matches
  (MonoInitializer.initialise: model selection, triangulation, scale), then map points at the
  matched keypoint pairs, triangulated with that pose and checked (depth, reprojection error
  below 2 x tracking.mono_init_threshold_px, parallax).
- **Relocalisation** (:meth:`DenseMatching.match_keyframes` without the map lock, then
  :meth:`DenseMatching.relocalise` with it): matches to the first
  ``tracking.reloc_dense_candidates`` candidate keyframes; keyframe keypoints within the radius
  that carry live map points give 2D-3D correspondences (2D: the refined match point in the
  frame); PnP + RANSAC; the inliers seed the frame's keypoints, then local-map tracking as the
  keypoint path does.

The matcher: any object with ``match_images(image0, image1) -> m`` and
``match_image_pairs(images0, images1) -> [m]`` where ``m.pts0`` / ``m.pts1`` are (M, 2) float
pixel coordinates in the images as given (distorted, as captured) and ``m.confidence`` is (M,)
(slam.matching.loftr.matcher.LoFTR). Images are FrameFeatures.image / Keyframe.image ((H, W)
uint8 grey copies of the frames as read; the feature stage keeps them when a dense path is on).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

from slam.geometry.camera import PinholeCamera
from slam.geometry.epipolar import TwoViewResult, triangulate, triangulation_mask
from slam.geometry.pnp import solve_pnp_ransac
from slam.mapping.map import Keyframe, Map
from slam.matching.guided import search_by_projection
from slam.tracking.config import TrackingConfig
from slam.types import FrameFeatures

log = logging.getLogger(__name__)

MIN_PNP = 15  # 2D-3D inliers needed before local-map tracking is tried (as the keypoint path)


def snap(points: np.ndarray, keypoints: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest keypoint of each point within radius.

    points (M, 2), keypoints (N, 2) float pixels (same image, same distortion convention);
    radius in pixels (inclusive). Returns (index (M,) int64 into keypoints, -1 = none within radius;
    offset (M, 2) float64 = keypoint - point, 0 where none)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    kps = np.asarray(keypoints, np.float64).reshape(-1, 2)
    idx = np.full(len(pts), -1, dtype=np.int64)
    off = np.zeros((len(pts), 2))
    if len(pts) == 0 or len(kps) == 0:
        return idx, off
    dist, j = cKDTree(kps).query(pts, k=1, distance_upper_bound=np.nextafter(radius, np.inf))  # within: <= radius
    ok = np.isfinite(dist)
    idx[ok] = j[ok]
    off[ok] = kps[j[ok]] - pts[ok]
    return idx, off


def unique_best(keys: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices (into keys) of the lowest-cost row per distinct key, keys (K,) int64 (or (K, c))."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(cost, kind="stable")
    _, first = np.unique(keys[order], axis=0, return_index=True)
    return np.sort(order[first])


@dataclass
class DenseMatches:
    """One image pair's matches in undistorted pixels: x0 (M, 2), x1 (M, 2) float64, confidence (M,)."""

    x0: np.ndarray
    x1: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.x0)


@dataclass
class DenseInit:
    """A monocular initialisation from dense matches.

    result:   the two-view geometry from all dense matches (cam1_from_cam0 = cam_from_ref).
    pairs:    (P, 2) int64 keypoint indices (ref, cur) that become map points.
    pts_ref:  (P, 3) float64 their points in the reference camera (= world) frame, same scale.
    n_dense:  number of dense matches.
    """

    result: TwoViewResult
    pairs: np.ndarray
    pts_ref: np.ndarray
    n_dense: int


@dataclass
class DenseRelocalisation:
    """What relocalisation against one keyframe gives (see Relocalizer.attempt_dense).

    cam_from_world (4, 4) float64 from PnP; point_ids (N,) int64 map point per keypoint of the
    frame (PnP inliers snapped to keypoints), -1 = none; kf_id the keyframe; n_pnp PnP inliers."""

    cam_from_world: np.ndarray
    point_ids: np.ndarray
    kf_id: int
    n_pnp: int


class DenseMatching:
    """A detector-free matcher used at monocular initialisation, relocalisation and/or loop
    verification (init / reloc / loop say which)."""

    def __init__(self, matcher, camera: PinholeCamera, cfg: TrackingConfig, init: bool, reloc: bool, loop: bool = False) -> None:
        self.matcher = matcher
        self.camera = camera
        self.cfg = cfg
        self.init = init
        self.reloc = reloc
        self.loop = loop  # loop verification (and map merging) match keyframe images
        self._warned = False

    def usable(self, *images) -> bool:
        """True when every image is present (the feature stage keeps images only when asked)."""
        ok = all(im is not None for im in images)
        if not ok and not self._warned:
            log.warning("dense matching needs the frames' images, but a frame or keyframe has none; "
                        "falling back to keypoint matching there")
            self._warned = True
        return ok

    def _undistorted(self, m) -> DenseMatches:
        p0 = np.asarray(m.pts0, np.float64).reshape(-1, 2)
        p1 = np.asarray(m.pts1, np.float64).reshape(-1, 2)
        if self.camera.has_distortion and len(p0):
            p0, p1 = self.camera.undistort_points(p0), self.camera.undistort_points(p1)
        return DenseMatches(p0, p1, np.asarray(m.confidence, np.float64).reshape(-1))

    def match(self, image0: np.ndarray, image1: np.ndarray) -> DenseMatches:
        return self._undistorted(self.matcher.match_images(image0, image1))

    # ------------------------------------------------------------------ initialisation
    def initialise(self, mono_init, ref: FrameFeatures, cur: FrameFeatures) -> Optional[DenseInit]:
        """Monocular initialisation of ref (older) and cur from dense matches of their images.

        mono_init: the tracker's MonoInitializer (its reference bookkeeping and two-view
        geometry are used unchanged). Returns None when the geometry or the snapped points
        are not good enough (then ref stays the reference)."""
        c = self.cfg
        dm = self.match(ref.image, cur.image)
        res = mono_init.initialise(cur, dm.x0, dm.x1)
        if res is None:
            return None
        pairs, pts = self.keypoint_points(ref, cur, dm, res)
        need = c.mono_init_min_matches // 2
        if len(pairs) < need:
            log.debug("frame %d: dense init: %d of %d matches on keypoints (< %d)", cur.index, len(pairs), len(dm), need)
            mono_init.ref = ref  # the geometry was fine, the keypoints not: keep trying against ref
            return None
        return DenseInit(res, pairs, pts, len(dm))

    def _max_desc_dist(self, desc: np.ndarray) -> float:
        c = self.cfg
        return c.max_desc_dist_binary if desc.dtype == np.uint8 else c.max_desc_dist_float

    def keypoint_points(self, ref: FrameFeatures, cur: FrameFeatures, dm: DenseMatches,
                        res: TwoViewResult) -> tuple[np.ndarray, np.ndarray]:
        """Keypoint pairs (P, 2) int64 (ref, cur) near the dense matches that res marks valid,
        and their points (P, 3) in the reference camera, triangulated with res.cam1_from_cam0.

        Ref side: the nearest keypoint within dense_snap_px. Cur side: the transferred point
        searched like a projected map point (slam.matching.guided.search_by_projection): the
        keypoint with the closest descriptor within 2 x mono_init_threshold_px (the error
        triangulation accepts), under the tracking thresholds (max_desc_dist_*, match_ratio).
        The descriptor test rejects the wrong pairs that snapping makes near depth edges,
        which no reprojection test can see when they slide along the epipolar line."""
        c = self.cfg
        sel = np.nonzero(res.valid)[0]
        a, d0 = snap(dm.x0[sel], ref.kp_uv, c.dense_snap_px)
        ok = a >= 0
        a, pred = a[ok], dm.x1[sel][ok] + d0[ok]
        # one dense match per ref keypoint: the closest
        k = unique_best(a, np.linalg.norm(d0[ok], axis=1))
        a, pred = a[k], pred[k]
        b, _ = search_by_projection(pred, ref.desc[a], cur.kp_uv, cur.desc, min(c.dense_snap_px, 2.0 * c.mono_init_threshold_px),
                                    self._max_desc_dist(ref.desc), ratio=c.match_ratio)
        pairs = np.stack([a, b], axis=1)[b >= 0]
        if len(pairs) == 0:
            return np.zeros((0, 2), np.int64), np.zeros((0, 3))
        x0, x1 = ref.kp_uv[pairs[:, 0]], cur.kp_uv[pairs[:, 1]]
        K = self.camera.K
        pts = triangulate(np.eye(4), res.cam1_from_cam0, x0, x1, K)
        good = triangulation_mask(pts, np.eye(4), res.cam1_from_cam0, x0, x1, K,
                                  max_reproj_px=2.0 * c.mono_init_threshold_px, min_parallax_deg=c.mono_init_min_parallax_deg)
        return pairs[good], pts[good]

    # ------------------------------------------------------------------ relocalisation
    def match_keyframes(self, fr: FrameFeatures, kfs: Sequence[Keyframe]) -> tuple[list[int], list[DenseMatches]]:
        """Dense matches of each keyframe's image (image 0) with the frame's (image 1), for the
        first tracking.reloc_dense_candidates keyframes that have an image. Call WITHOUT the map
        lock (keyframe images never change). Returns (keyframe ids, matches)."""
        use = [kf for kf in kfs if kf.image is not None][: self.cfg.reloc_dense_candidates]
        if not use or not self.usable(fr.image):
            return [], []
        return [kf.id for kf in use], self.match_images([(kf.image, fr.image) for kf in use])

    def pnp(self, fr: FrameFeatures, kf: Keyframe, dm: DenseMatches, slam_map: Map) -> Optional[DenseRelocalisation]:
        """2D-3D from one keyframe's dense matches, then PnP + RANSAC. Caller holds the map lock.

        Keyframe keypoints within tracking.dense_snap_px of a match that carry a live point
        give its 3D position; the 2D observation is the match point in the frame moved by the
        same offset. The inliers seed the frame's keypoints: each inlier's point is searched
        around its observation like a projected map point (descriptor test, radius
        dense_snap_px). Returns None below MIN_PNP inliers."""
        c = self.cfg
        r = c.dense_snap_px
        a, d = snap(dm.x0, kf.kp_uv, r)
        ok = a >= 0
        pid = np.full(len(a), -1, dtype=np.int64)
        pid[ok] = kf.point_ids[a[ok]]
        ok &= pid >= 0
        ok[ok] = slam_map.pts_alive[pid[ok]]
        idx = np.nonzero(ok)[0]
        idx = idx[unique_best(pid[idx], np.linalg.norm(d[idx], axis=1))]
        if len(idx) < MIN_PNP:
            return None
        uv = dm.x1[idx] + d[idx]
        xyz = slam_map.pts_xyz[pid[idx]]
        cam_from_world, inl = solve_pnp_ransac(xyz, uv, self.camera.K, cam_from_world_init=kf.cam_from_world,
                                               threshold_px=c.pnp_threshold_px, min_inliers=MIN_PNP)
        if cam_from_world is None or inl.sum() < MIN_PNP:
            return None
        # seed the frame's keypoints with the inlier points
        point_ids = np.full(len(fr.kp_uv), -1, dtype=np.int64)
        pin = pid[idx][inl]
        j, _ = search_by_projection(uv[inl], slam_map.pts_desc[pin], fr.kp_uv, fr.desc, r, self._max_desc_dist(fr.desc),
                                    ratio=c.match_ratio)
        point_ids[j[j >= 0]] = pin[j >= 0]
        return DenseRelocalisation(cam_from_world, point_ids, kf.id, int(inl.sum()))

    # ------------------------------------------------------------------ loop verification
    def match_images(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Optional[DenseMatches]]:
        """Dense matches of each (image 0, image 1) pair in one batch, None where an image is
        missing. Call WITHOUT the map lock (keyframe images never change)."""
        use = [i for i, (a, b) in enumerate(pairs) if self.usable(a, b)]
        out: list[Optional[DenseMatches]] = [None] * len(pairs)
        if use:
            ms = self.matcher.match_image_pairs([pairs[i][0] for i in use], [pairs[i][1] for i in use])
            for i, mt in zip(use, ms):
                out[i] = self._undistorted(mt)
        return out

    def keyframe_pairs(self, kf0: Keyframe, kf1: Keyframe, dm: DenseMatches, i0: np.ndarray, i1: np.ndarray,
                       radius1: float) -> np.ndarray:
        """Keypoint pairs from the dense matches of kf0's image (image 0) with kf1's (image 1).

        i0 (N0,), i1 (N1,) int64: the keypoints of each keyframe that may take part (those with
        map points). Image 0's match point snaps to the nearest of kf0's keypoints i0 within
        tracking.dense_snap_px; the offset moves image 1's point, which snaps to the nearest of
        kf1's keypoints i1 within radius1 px. LoFTR's image-0 points lie on its 1/8 grid, so the
        first snap needs the wide radius; the moved point is where that same keypoint should be
        in image 1 (to the local motion's first order), so a tight radius1 keeps pairs of one
        physical point: a detector that missed it there must not pair it with a neighbour. One
        pair per keypoint on each side (the closest). Returns (M, 2) int64 positions (into i0,
        into i1)."""
        r = self.cfg.dense_snap_px
        if len(dm) == 0 or len(i0) == 0 or len(i1) == 0:
            return np.zeros((0, 2), np.int64)
        a, d0 = snap(dm.x0, kf0.kp_uv[i0], r)
        ok = a >= 0
        b, d1 = snap(dm.x1[ok] + d0[ok], kf1.kp_uv[i1], radius1)
        a, cost = a[ok], np.linalg.norm(d0[ok], axis=1) + np.linalg.norm(d1, axis=1)
        keep = b >= 0
        a, b, cost = a[keep], b[keep], cost[keep]
        k = unique_best(a, cost)
        a, b, cost = a[k], b[k], cost[k]
        k = unique_best(b, cost)
        return np.stack([a[k], b[k]], axis=1).astype(np.int64)


def wants_dense(cfg: TrackingConfig, mode: str) -> tuple[bool, bool]:
    """(dense initialisation, dense relocalisation) asked for by the settings; initialisation
    only in monocular mode (RGB-D starts from one frame)."""
    return cfg.mono_init_matcher == "loftr" and mode == "mono", cfg.reloc_matcher == "loftr"


__all__ = ["DenseMatching", "DenseMatches", "DenseInit", "DenseRelocalisation", "snap", "unique_best", "wants_dense"]
