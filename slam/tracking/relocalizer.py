"""Relocalisation: find the pose of a frame after tracking was lost, from keyframe matches.

Two steps around the matcher, which the tracker calls between them outside the map lock:

1. :meth:`Relocalizer.candidates` picks keyframes to match against: those the keyframe database
   finds for the frame's descriptors first (``place``, set by loop closing; a lost frame can come
   back anywhere in the map), then the nearest to the last known camera centre, then a few
   spread over the rest of the map;
2. :meth:`Relocalizer.attempt` takes the frame's matches to each candidate in turn: 2D-3D
   candidates through the keyframe's point_ids, PnP + RANSAC, then tracking of the local map;
   the first candidate with tracking.reloc_min_inliers inliers wins.

Both read the map: the caller holds ``map.lock``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from slam.geometry.se3 import se3_inverse
from slam.mapping.map import Keyframe, Map
from slam.tracking.config import TrackingConfig
from slam.tracking.local_map import LocalMapTracking
from slam.tracking.pose import PoseEstimator
from slam.types import FrameFeatures, Matches

MIN_MATCHES = 15  # keypoint matches, and then PnP inliers, needed to try a candidate keyframe
N_SPREAD = 4  # extra candidates spread over the keyframes beyond the nearest ones


@dataclass
class Relocalisation:
    """A successful relocalisation.

    cam_from_world: (4,4) float64.
    point_ids:      (N,) int64 map point per keypoint of the frame, -1 = none (inliers only).
    n_inliers:      inliers of the final pose refinement.
    ref_kf_id:      the new reference keyframe.
    """

    cam_from_world: np.ndarray
    point_ids: np.ndarray
    n_inliers: int
    ref_kf_id: int


class Relocalizer:
    def __init__(self, cfg: TrackingConfig, slam_map: Map, pose: PoseEstimator, local_map: LocalMapTracking) -> None:
        self.cfg = cfg
        self.map = slam_map
        self.pose = pose
        self.local_map = local_map
        # (N, D) frame descriptors, n -> up to n keyframe ids from the keyframe database (None: none)
        self.place: Optional[Callable[[np.ndarray, int], list[int]]] = None
        # keyframe id -> whether relocalisation may use it (the atlas's active map; None: every keyframe)
        self.usable: Optional[Callable[[int], bool]] = None

    def candidates(self, last_cam_from_world: Optional[np.ndarray], desc: Optional[np.ndarray] = None) -> list[Keyframe]:
        """Keyframes to match against: the keyframe database's candidates for the frame's
        descriptors desc (N, D) when ``place`` is set, then the nearest to the camera centre of
        last_cam_from_world (4,4) (newest first when None): tracking.reloc_candidates of them,
        then N_SPREAD spread over the others."""
        placed = []
        if self.place is not None and desc is not None:
            placed = [self.map.keyframes[k] for k in self.place(desc, self.cfg.reloc_candidates) if k in self.map.keyframes]
        if self.usable is not None:
            placed = [kf for kf in placed if self.usable(kf.id)]
        kfs = [kf for kf in self.map.keyframes.values() if all(kf is not p for p in placed)
               and (self.usable is None or self.usable(kf.id))]
        if last_cam_from_world is not None:
            center = se3_inverse(last_cam_from_world)[:3, 3]
            kfs.sort(key=lambda k: float(np.linalg.norm(k.center - center)))
        else:
            kfs.sort(key=lambda k: -k.id)
        n = self.cfg.reloc_candidates
        cands = kfs[:n]
        if len(kfs) > n:
            rest = kfs[n:]
            cands += rest[:: max(1, len(rest) // N_SPREAD)][:N_SPREAD]
        return placed + cands

    def attempt(self, fr: FrameFeatures, kf_ids: Sequence[int], matches: Sequence[Matches], wide: bool = False) -> Optional[Relocalisation]:
        """Try the candidates kf_ids in order with the frame's matches to them (matches[j].matches0
        (N,): keypoint of keyframe kf_ids[j] or -1). wide: search the local map with twice the
        radius. Returns the first success, or None."""
        n = len(fr.kp_uv)
        for kf_id, m in zip(kf_ids, matches):
            kf = self.map.keyframes.get(kf_id)
            pr = m.pairs()
            if kf is None or len(pr) < MIN_MATCHES:
                continue
            point_ids = np.full(n, -1, dtype=np.int64)
            pid = kf.point_ids[pr[:, 1]]
            ok = pid >= 0
            ok[ok] = self.map.pts_alive[pid[ok]]
            pr, pid = pr[ok], pid[ok]
            _, first = np.unique(pid, return_index=True)
            point_ids[pr[first, 0]] = pid[first]
            cam_from_world, inl = self.pose.estimate(fr, point_ids, None, kf.cam_from_world)
            if cam_from_world is None or inl.sum() < MIN_MATCHES:
                continue
            point_ids[~inl] = -1
            cam_from_world, point_ids, n_inl, ref_kf_id = self.local_map.track(fr, cam_from_world, point_ids, kf.id, wide=wide)
            if n_inl >= self.cfg.reloc_min_inliers:
                return Relocalisation(cam_from_world, point_ids, n_inl, ref_kf_id)
        return None

    def attempt_dense(self, fr: FrameFeatures, dense, kf_ids: Sequence[int], matches: Sequence, wide: bool = False) -> Optional[Relocalisation]:
        """As attempt, from detector-free 2D-2D matches to each keyframe (dense: a
        slam.tracking.dense_match.DenseMatching; matches: its DenseMatches per keyframe)."""
        for kf_id, dm in zip(kf_ids, matches):
            kf = self.map.keyframes.get(kf_id)
            found = None if kf is None else dense.pnp(fr, kf, dm, self.map)
            if found is None:
                continue
            cam_from_world, point_ids, n_inl, ref_kf_id = self.local_map.track(fr, found.cam_from_world, found.point_ids, kf.id, wide=wide)
            if n_inl >= self.cfg.reloc_min_inliers:
                return Relocalisation(cam_from_world, point_ids, n_inl, ref_kf_id)
        return None
