"""The map: keyframes and points as arrays behind one lock.

Points live in preallocated arrays indexed by point id (ids are never reused). Observations
live in one table of rows (keyframe id, keypoint index, point id); each keyframe also keeps
``point_ids`` (N,) aligned with its keypoints (-1 = no point). Both are kept consistent by
the methods below, which callers invoke while holding ``map.lock``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from slam.geometry.se3 import se3_inverse
from slam.matching.nn import pairwise_distance
from slam.types import Features


@dataclass
class Keyframe:
    """A keyframe. Arrays are aligned with the keypoints (N of them).

    kp_uv:      (N,2) float64 undistorted pixel coordinates.
    kp_depth:   (N,) float64 metres from the depth image or the stereo disparity, 0 = none (always 0 in monocular).
    kp_sigma2:  (N,) float64 variance factor of the keypoint position (scale^2 of its octave).
    kp_color:   (N,3) uint8 RGB colour at the keypoint.
    desc:       (N,D) numpy descriptors (uint8 bits or float32), a CPU copy of features.descriptors.
    point_ids:  (N,) int64 map point id or -1.
    cam_from_world: (4,4) float64.
    image:      (H,W) uint8 grey copy of the frame, kept only when a detector-free matcher needs it
                (tracking.reloc_matcher=loftr, loop_closing.matcher=loftr), else None.
    """

    id: int
    frame_index: int
    timestamp: float
    cam_from_world: np.ndarray
    features: Features
    kp_uv: np.ndarray
    kp_depth: np.ndarray
    kp_sigma2: np.ndarray
    kp_color: np.ndarray
    desc: np.ndarray
    point_ids: np.ndarray
    alive: bool = True
    image: Optional[np.ndarray] = None

    @property
    def world_from_cam(self) -> np.ndarray:
        return se3_inverse(self.cam_from_world)

    @property
    def center(self) -> np.ndarray:
        return self.world_from_cam[:3, 3]


class Map:
    def __init__(self, descriptor_dim: int, binary: bool, capacity: int = 65536):
        self.lock = threading.RLock()
        self.descriptor_dim = descriptor_dim
        self.binary = binary
        self.keyframes: dict[int, Keyframe] = {}
        self._next_kf = 0
        self.n_points = 0  # high-water mark of point ids
        self._alloc_points(capacity)
        self._alloc_obs(capacity * 4)
        self.n_obs = 0
        self.version = 0  # bumped on every structural change (for viewers)
        # culled keyframes: kf_id -> (parent kf_id, cam_from_parent (4,4)), so frames that
        # referenced them keep a pose relative to a live keyframe
        self.culled: dict[int, tuple[int, np.ndarray]] = {}
        #: reference image patches of the points (slam.tracking.patch_align.PatchStore), or None
        self.patches = None

    # ------------------------------------------------------------------ storage
    def _alloc_points(self, cap: int) -> None:
        d = self.descriptor_dim
        self.pts_xyz = np.zeros((cap, 3))  # world metres
        self.pts_desc = np.zeros((cap, d), dtype=np.uint8 if self.binary else np.float32)
        self.pts_color = np.zeros((cap, 3), dtype=np.uint8)
        self.pts_alive = np.zeros(cap, dtype=bool)
        self.pts_n_obs = np.zeros(cap, dtype=np.int32)
        self.pts_visible = np.zeros(cap, dtype=np.int32)  # frames where it was predicted in view
        self.pts_found = np.zeros(cap, dtype=np.int32)  # frames where it was matched
        self.pts_first_kf = np.zeros(cap, dtype=np.int64)
        self.pts_normal = np.zeros((cap, 3))  # mean viewing direction (world), unit

    def _grow_points(self, need: int) -> None:
        cap = len(self.pts_alive)
        if need <= cap:
            return
        new = max(need, cap * 2)
        for name in ("pts_xyz", "pts_desc", "pts_color", "pts_alive", "pts_n_obs", "pts_visible", "pts_found", "pts_first_kf", "pts_normal"):
            old = getattr(self, name)
            arr = np.zeros((new,) + old.shape[1:], dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)

    def _alloc_obs(self, cap: int) -> None:
        self.obs_kf = np.zeros(cap, dtype=np.int64)
        self.obs_kp = np.zeros(cap, dtype=np.int64)
        self.obs_pt = np.zeros(cap, dtype=np.int64)
        self.obs_alive = np.zeros(cap, dtype=bool)

    def _grow_obs(self, extra: int) -> None:
        """Make room for `extra` more rows after n_obs (compacting dead rows first)."""
        cap = len(self.obs_alive)
        if self.n_obs + extra <= cap:
            return
        if self.n_obs > 0 and self.obs_alive[: self.n_obs].mean() < 0.5:
            self._compact_obs()
            if self.n_obs + extra <= cap:
                return
        new = max(self.n_obs + extra, cap * 2)
        for name in ("obs_kf", "obs_kp", "obs_pt", "obs_alive"):
            old = getattr(self, name)
            arr = np.zeros(new, dtype=old.dtype)
            arr[: len(old)] = old
            setattr(self, name, arr)

    def _compact_obs(self) -> None:
        keep = np.nonzero(self.obs_alive[: self.n_obs])[0]
        n = len(keep)
        for name in ("obs_kf", "obs_kp", "obs_pt", "obs_alive"):
            arr = getattr(self, name)
            arr[:n] = arr[keep]
            arr[n : self.n_obs] = 0
        self.n_obs = n

    # ------------------------------------------------------------------ keyframes
    def new_keyframe_id(self) -> int:
        kid = self._next_kf
        self._next_kf += 1
        return kid

    @property
    def next_keyframe_id(self) -> int:
        """The id the next new keyframe will get."""
        return self._next_kf

    def add_keyframe(self, kf: Keyframe) -> None:
        """Insert a keyframe and the observations already in kf.point_ids."""
        self.keyframes[kf.id] = kf
        kp = np.nonzero(kf.point_ids >= 0)[0]
        pts = kf.point_ids[kp]
        alive = self.pts_alive[pts]
        kf.point_ids[kp[~alive]] = -1
        kp, pts = kp[alive], pts[alive]
        # one keypoint per point in a keyframe
        _, first = np.unique(pts, return_index=True)
        drop = np.setdiff1d(np.arange(len(pts)), first)
        kf.point_ids[kp[drop]] = -1
        kp, pts = kp[first], pts[first]
        self._add_obs_rows(kf.id, kp, pts)
        self.update_normals(pts)
        self.version += 1

    def _add_obs_rows(self, kf_id: int, kp: np.ndarray, pts: np.ndarray) -> None:
        n = len(kp)
        if n == 0:
            return
        self._grow_obs(n)
        s = slice(self.n_obs, self.n_obs + n)
        self.obs_kf[s] = kf_id
        self.obs_kp[s] = kp
        self.obs_pt[s] = pts
        self.obs_alive[s] = True
        self.n_obs += n
        np.add.at(self.pts_n_obs, pts, 1)

    def add_observations(self, kf_id: int, kp: np.ndarray, pts: np.ndarray) -> int:
        """Associate keypoints kp of keyframe kf_id with points pts (skips taken keypoints and
        points the keyframe already observes). Returns the number added."""
        kf = self.keyframes[kf_id]
        kp = np.asarray(kp, dtype=np.int64)
        pts = np.asarray(pts, dtype=np.int64)
        ok = (kf.point_ids[kp] < 0) & self.pts_alive[pts] & ~np.isin(pts, kf.point_ids)
        kp, pts = kp[ok], pts[ok]
        _, first = np.unique(pts, return_index=True)
        kp, pts = kp[first], pts[first]
        _, first = np.unique(kp, return_index=True)
        kp, pts = kp[first], pts[first]
        kf.point_ids[kp] = pts
        self._add_obs_rows(kf_id, kp, pts)
        self.version += 1
        return len(kp)

    def remove_observation_rows(self, rows: np.ndarray) -> None:
        rows = rows[self.obs_alive[rows]]
        if len(rows) == 0:
            return
        self.obs_alive[rows] = False
        for kf_id, kp in zip(self.obs_kf[rows].tolist(), self.obs_kp[rows].tolist()):
            kf = self.keyframes.get(kf_id)
            if kf is not None:
                kf.point_ids[kp] = -1
        np.add.at(self.pts_n_obs, self.obs_pt[rows], -1)
        # points left with no observation die
        dead = np.unique(self.obs_pt[rows])
        dead = dead[self.pts_n_obs[dead] <= 0]
        self.pts_alive[dead] = False
        self.version += 1

    def keyframe_pose_or_ancestor(self, kf_id: int) -> Optional[np.ndarray]:
        """cam_from_world of a keyframe, following culled keyframes to their live parents."""
        rel = np.eye(4)
        for _ in range(10000):
            kf = self.keyframes.get(kf_id)
            if kf is not None:
                return rel @ kf.cam_from_world
            if kf_id not in self.culled:
                return None
            kf_id, cam_from_parent = self.culled[kf_id]
            rel = rel @ cam_from_parent
        return None

    def remove_keyframe(self, kf_id: int, parent_id: Optional[int] = None) -> None:
        """Cull a keyframe. parent_id (a live keyframe) keeps the frames that referenced it."""
        kf = self.keyframes[kf_id]
        if parent_id is not None and parent_id in self.keyframes:
            self.culled[kf_id] = (parent_id, kf.cam_from_world @ self.keyframes[parent_id].world_from_cam)
        rows = np.nonzero(self.obs_alive[: self.n_obs] & (self.obs_kf[: self.n_obs] == kf_id))[0]
        self.remove_observation_rows(rows)
        self.keyframes.pop(kf_id)
        kf.alive = False
        self.version += 1

    # ------------------------------------------------------------------ points
    def add_points(self, xyz: np.ndarray, desc: np.ndarray, color: np.ndarray, kf_id: int) -> np.ndarray:
        """Create points (P,3) world metres; returns their ids (P,) int64. No observations yet."""
        n = len(xyz)
        ids = np.arange(self.n_points, self.n_points + n, dtype=np.int64)
        self._grow_points(self.n_points + n)
        self.pts_xyz[ids] = xyz
        self.pts_desc[ids] = desc
        self.pts_color[ids] = color
        self.pts_alive[ids] = True
        self.pts_n_obs[ids] = 0
        self.pts_visible[ids] = 1
        self.pts_found[ids] = 1
        self.pts_first_kf[ids] = kf_id
        self.n_points += n
        self.version += 1
        return ids

    def remove_observation_pairs(self, kf_ids: np.ndarray, pt_ids: np.ndarray) -> None:
        """Remove observations given as (keyframe id, point id) pairs, if still present."""
        if len(kf_ids) == 0:
            return
        rows = self.observation_rows(point_ids=np.unique(pt_ids))
        big = np.int64(1) << 32
        want = np.asarray(kf_ids, dtype=np.int64) * big + np.asarray(pt_ids, dtype=np.int64)
        have = self.obs_kf[rows] * big + self.obs_pt[rows]
        self.remove_observation_rows(rows[np.isin(have, want)])

    def replace_points(self, old: np.ndarray, new: np.ndarray) -> int:
        """Merge points old[i] into new[i] (vectorised). Observations move to the new point
        unless that keyframe already observes it, in which case they are dropped. Pairs whose
        target is itself being merged away are skipped. Returns the number of merges."""
        old = np.asarray(old, dtype=np.int64)
        new = np.asarray(new, dtype=np.int64)
        ok = (old != new) & self.pts_alive[old] & self.pts_alive[new]
        old, new = old[ok], new[ok]
        _, first = np.unique(old, return_index=True)
        old, new = old[first], new[first]
        keep = ~np.isin(new, old)
        old, new = old[keep], new[keep]
        if len(old) == 0:
            return 0
        target = np.full(self.n_points, -1, dtype=np.int64)
        target[old] = new
        rows = self.observation_rows(point_ids=old)
        dst = target[self.obs_pt[rows]]
        big = np.int64(1) << 32
        key = self.obs_kf[rows] * big + dst
        have_rows = self.observation_rows(point_ids=np.unique(new))
        have = self.obs_kf[have_rows] * big + self.obs_pt[have_rows]
        conflict = np.isin(key, have)
        # two old points merged into the same new one, seen by the same keyframe: keep one
        _, first = np.unique(key, return_index=True)
        dup = np.ones(len(rows), dtype=bool)
        dup[first] = False
        drop = conflict | dup
        move = rows[~drop]
        self.obs_pt[move] = dst[~drop]
        for kf_id in np.unique(self.obs_kf[move]).tolist():
            r = move[self.obs_kf[move] == kf_id]
            self.keyframes[kf_id].point_ids[self.obs_kp[r]] = self.obs_pt[r]
        np.add.at(self.pts_n_obs, dst[~drop], 1)
        self.pts_n_obs[old] = 0
        # dropped rows: their keypoint loses its point (`old`, which dies)
        gone = rows[drop]
        self.obs_alive[gone] = False
        for kf_id in np.unique(self.obs_kf[gone]).tolist():
            r = gone[self.obs_kf[gone] == kf_id]
            self.keyframes[kf_id].point_ids[self.obs_kp[r]] = -1
        np.add.at(self.pts_visible, new, self.pts_visible[old])
        np.add.at(self.pts_found, new, self.pts_found[old])
        self.pts_alive[old] = False
        self.version += 1
        return len(old)

    def remove_points(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        mask = np.zeros(self.n_points, dtype=bool)
        mask[ids] = True
        rows = np.nonzero(self.obs_alive[: self.n_obs] & mask[self.obs_pt[: self.n_obs]])[0]
        self.remove_observation_rows(rows)
        self.pts_alive[ids] = False
        self.version += 1

    def observation_rows(self, point_ids: Optional[np.ndarray] = None, kf_ids: Optional[np.ndarray] = None) -> np.ndarray:
        """Indices of live observation rows for the given points and/or keyframes."""
        n = self.n_obs
        sel = self.obs_alive[:n].copy()
        if point_ids is not None:
            m = np.zeros(max(self.n_points, 1), dtype=bool)
            m[point_ids] = True
            sel &= m[self.obs_pt[:n]]
        if kf_ids is not None:
            sel &= np.isin(self.obs_kf[:n], kf_ids)
        return np.nonzero(sel)[0]

    def observation_arrays(self, obs_kf: np.ndarray, obs_kp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the keyframes hold at observations (keyframe id, keypoint index), (M,) int64 each:
        (uv (M, 2) float64 undistorted px, sigma2 (M,) float64 position variance factor, depth (M,)
        float64 m, 0 = none), the inputs of a bundle adjustment's edges."""
        uv = np.empty((len(obs_kf), 2))
        sigma2 = np.empty(len(obs_kf))
        depth = np.empty(len(obs_kf))
        for k in np.unique(obs_kf).tolist():
            sel = obs_kf == k
            kf, kp = self.keyframes[k], obs_kp[sel]
            uv[sel], sigma2[sel], depth[sel] = kf.kp_uv[kp], kf.kp_sigma2[kp], kf.kp_depth[kp]
        return uv, sigma2, depth

    def covisible_keyframes(self, point_ids: np.ndarray, exclude: Optional[int] = None, min_shared: int = 1) -> list[tuple[int, int]]:
        """Keyframes observing any of point_ids, as (kf_id, n_shared) sorted by n_shared desc."""
        if len(point_ids) == 0:
            return []
        rows = self.observation_rows(point_ids=point_ids)
        kfs, counts = np.unique(self.obs_kf[rows], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        out = [(int(kfs[i]), int(counts[i])) for i in order if counts[i] >= min_shared and kfs[i] != exclude]
        return out

    def keyframe_covisibility(self, kf_id: int, min_shared: int = 15) -> list[tuple[int, int]]:
        kf = self.keyframes[kf_id]
        pts = kf.point_ids[kf.point_ids >= 0]
        return self.covisible_keyframes(pts, exclude=kf_id, min_shared=min_shared)

    def update_descriptors(self, point_ids: np.ndarray) -> int:
        """ORB-SLAM's ``ComputeDistinctiveDescriptors``: each live point of ``point_ids`` with at
        least 3 observations takes, as its descriptor, the one of its observing keypoints whose
        median distance to the others is least (the lower median of the sorted distances, as
        ORB-SLAM), so guided search compares frames with a descriptor representative of every
        view rather than of the first. Hamming distances for binary descriptors, L2 for float.
        Returns the number of points whose descriptor changed. Caller holds the lock."""
        pids = np.unique(np.asarray(point_ids, dtype=np.int64))
        pids = pids[(pids >= 0) & (pids < self.n_points)]
        pids = pids[self.pts_alive[pids] & (self.pts_n_obs[pids] >= 3)]
        if len(pids) == 0:
            return 0
        rows = self.observation_rows(point_ids=pids)
        rows = rows[np.argsort(self.obs_pt[rows], kind="stable")]  # grouped by point
        pt, kfs, kps = self.obs_pt[rows], self.obs_kf[rows], self.obs_kp[rows]
        desc = np.empty((len(rows), self.pts_desc.shape[1]), dtype=self.pts_desc.dtype)
        for k in np.unique(kfs).tolist():
            sel = kfs == k
            desc[sel] = self.keyframes[k].desc[kps[sel]]
        starts = np.r_[0, np.nonzero(np.diff(pt))[0] + 1]
        counts = np.diff(np.r_[starts, len(rows)])
        grp = np.repeat(np.arange(len(starts)), counts)  # group (point) of each row
        slot = np.arange(len(rows)) - starts[grp]  # position of each row in its group
        # every (row, row of the same group) pair, itself included, as ORB-SLAM counts them
        a = np.repeat(np.arange(len(rows)), counts[grp])
        b = starts[grp[a]] + (np.arange(len(a)) - np.repeat(np.cumsum(counts[grp]) - counts[grp], counts[grp]))
        dist = np.full((len(starts), int(counts.max()), int(counts.max())), np.inf, dtype=np.float32)
        dist[grp[a], slot[a], slot[b]] = pairwise_distance(desc[a], desc[b])
        dist.sort(axis=2)
        med = dist[grp, slot, (counts[grp] - 1) // 2]  # (rows,) lower median of each row's distances
        order = np.lexsort((med, grp))  # by point, then median (stable: ties keep the first view)
        first = np.r_[True, grp[order][1:] != grp[order][:-1]]
        new = desc[order[first]]  # one row per point, in point order
        owners = pt[starts]
        changed = np.any(self.pts_desc[owners] != new, axis=1)
        self.pts_desc[owners] = new
        return int(changed.sum())

    def update_normals(self, pts: np.ndarray) -> None:
        """Recompute ``pts_normal`` of points pts ((P,) int64 ids): the mean unit viewing
        direction (world frame) from the centres of the keyframes observing each point."""
        if len(pts) == 0:
            return
        rows = self.observation_rows(point_ids=pts)
        centers = {k: kf.center for k, kf in self.keyframes.items()}
        acc = np.zeros((self.n_points, 3))
        for kf_id in np.unique(self.obs_kf[rows]).tolist():
            r = rows[self.obs_kf[rows] == kf_id]
            p = self.obs_pt[r]
            v = self.pts_xyz[p] - centers[kf_id]
            acc[p] += v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
        n = acc[pts]
        self.pts_normal[pts] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)

    # ------------------------------------------------------------------ tracking statistics
    def count_visible(self, ids: np.ndarray) -> None:
        """A frame predicted points ids ((K,) int64) inside its view: ``pts_visible += 1``.
        An id listed twice counts once."""
        self.pts_visible[ids] += 1

    def count_found(self, ids: np.ndarray) -> None:
        """A frame matched points ids ((K,) int64) as pose inliers: ``pts_found += 1``.
        An id listed twice counts once. found / visible is the point's culling ratio."""
        self.pts_found[ids] += 1

    # ------------------------------------------------------------------ queries
    def alive_point_ids(self) -> np.ndarray:
        return np.nonzero(self.pts_alive[: self.n_points])[0]

    def n_alive_points(self) -> int:
        return int(self.pts_alive[: self.n_points].sum())

    def snapshot_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(P,3) float32 world points and (P,3) uint8 RGB colours of live points (copies)."""
        with self.lock:
            ids = self.alive_point_ids()
            return self.pts_xyz[ids].astype(np.float32), self.pts_color[ids].copy()
