"""The trajectory of every tracked frame, stored relative to its reference keyframe.

A frame's pose is kept as cam_from_refkf, so when bundle adjustment or loop closure moves the
keyframe, the frame moves with it (ORB-SLAM's relative frame poses). Frames whose keyframe was
culled follow the culled keyframe's parent (Map.keyframe_pose_or_ancestor).

Bundle adjustment corrects keyframes, not the frames between them: a frame keeps the error it
was tracked with relative to its reference keyframe. In monocular turns that error grows
between keyframes (synthetic/loop_short mono ORB: keyframes 0.49 cm, frames 3.94 cm;
docs/benchmarks.md section 14). So a frame may keep a sample of its inlier 2D-3D matches
(:meth:`add` with ``obs``), and :meth:`refine` re-estimates each such frame's pose against the
final map (pose-only, robust) at the end of a run. Alone, a frame whose points lie at about one
depth can still slide along the shift/turn ridge; so :meth:`refine` then solves the frames
between each two keyframes together, with a smooth-motion prior (slam.optim.frame_smoother,
``tracking.frame_smooth_accel``).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from slam.geometry.se3 import se3_inverse
from slam.mapping.map import Keyframe, Map
from slam.optim.frame_smoother import smooth_frames
from slam.optim.pose_gn import PoseObservations, refine_pose_gn

MIN_REFINE_POINTS = 20  # a frame needs this many live matched points (and half of them inliers) to be refined
OBS_BUDGET_BYTES = 256 << 20  # matches kept over all frames (20 B each: ~8 KB per frame); past it the oldest frames' go


class FrameTrajectory:
    def __init__(self, slam_map: Map, max_obs: int = 0) -> None:
        """max_obs: matches kept per frame for :meth:`refine` (evenly spaced; 0 = none)."""
        self.map = slam_map
        self.max_obs = max_obs
        self._frames: list[tuple[int, float, int, np.ndarray]] = []  # (index, timestamp, ref kf id, cam_from_refkf)
        self._obs: dict[int, tuple] = {}  # position in _frames -> (point ids (K,) int32, uv (K,2) f32, inv_sigma2 (K,) f32, inverse depth (K,) f32 1/m)
        self._obs_bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, index: int, timestamp: float, ref: Keyframe, cam_from_world: np.ndarray, obs: Optional[tuple] = None) -> None:
        """Frame `index` at cam_from_world (4,4) float64, relative to keyframe ref (caller holds
        map.lock, so ref's pose is the one cam_from_world was estimated against). obs: its inlier
        matches (point ids (K,) int64, uv (K,2) undistorted px, inv_sigma2 (K,), inverse depth (K,)
        1/m of the depth reading or NaN; kept as depth, not as the virtual right u, because the
        bf that weights it may change before :meth:`refine`), of which max_obs are kept for :meth:`refine`."""
        if obs is not None and self.max_obs > 0 and len(obs[0]) >= MIN_REFINE_POINTS:
            k = len(obs[0])
            sel = np.linspace(0, k - 1, min(k, self.max_obs)).round().astype(np.int64)
            kept = (obs[0][sel].astype(np.int32), obs[1][sel].astype(np.float32), obs[2][sel].astype(np.float32),
                    obs[3][sel].astype(np.float32))
            self._obs[len(self._frames)] = kept
            self._obs_bytes += sum(a.nbytes for a in kept)
            while self._obs_bytes > OBS_BUDGET_BYTES and self._obs:  # long live runs: the oldest frames' go first
                self._obs_bytes -= sum(a.nbytes for a in self._obs.pop(next(iter(self._obs))))
        self._frames.append((index, timestamp, ref.id, cam_from_world @ ref.world_from_cam))

    def add_relative(self, index: int, timestamp: float, ref_kf_id: int, cam_from_ref: np.ndarray) -> None:
        """Frame `index` at cam_from_ref (4,4) float64 relative to keyframe ref_kf_id."""
        self._frames.append((index, timestamp, ref_kf_id, cam_from_ref))

    def poses(self, keep: Optional[Callable[[int], bool]] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices (F,) int64, timestamps (F,) float64 s, world_from_cam (F,4,4) float64) of
        every frame whose reference keyframe (or an ancestor) lives, in frame order, with the
        keyframes' current poses. keep: reference keyframe id -> whether to include the frame
        (one map of the atlas); None = every frame."""
        with self.map.lock:
            idx, ts, poses = [], [], []
            for index, t, kf_id, cam_from_ref in self._frames:
                if keep is not None and not keep(kf_id):
                    continue
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

    def refine(self, K: np.ndarray, bf: float = 0.0, accel_per_depth: float = 0.0,
               map_of: Optional[Callable[[int], int]] = None) -> dict:
        """Re-estimate every frame that kept matches against the map as it is now (pose-only
        Gauss-Newton with outlier rounds, from the frame's current pose); points culled since
        are left out. Live keyframes' own frames are left to bundle adjustment; culled ones are
        re-estimated like any frame. A frame with fewer than MIN_REFINE_POINTS live points, or fewer than half
        of them inliers, keeps its pose. K: (3,3); bf: px * m of the virtual right camera (depth
        modes; 0 = monocular).

        accel_per_depth > 0 (1/s^2): then the frames between each two consecutive live
        keyframes are solved again together, with a smooth-motion prior on their camera centres
        anchored at the keyframes (slam.optim.frame_smoother). map_of: keyframe id (live or
        culled) -> atlas map id; a stretch never spans two maps (None = one map).

        Returns {"frames": refined, "skipped": kept as they were, "median_shift_m": median
        camera-centre change (map units), "smoothed": frames solved with the prior}."""
        n_ref, n_skip, shifts = 0, 0, []
        inliers: dict[int, PoseObservations] = {}  # position in _frames -> inlier observations at the refined pose
        with self.map.lock:
            m = self.map
            for pos, (pids, uv, w, inv_d) in self._obs.items():  # pids int32
                ur = uv[:, 0] - bf * inv_d if bf > 0 else np.full(len(pids), np.nan)
                index, t, kf_id, cam_from_ref = self._frames[pos]
                kf = m.keyframes.get(kf_id)
                if kf is not None and kf.frame_index == index:
                    continue  # a live keyframe's own frame: bundle adjustment placed it
                ref = m.keyframe_pose_or_ancestor(kf_id)
                live = m.pts_alive[pids]
                if ref is None or live.sum() < MIN_REFINE_POINTS:
                    n_skip += 1
                    continue
                before = cam_from_ref @ ref
                pts = m.pts_xyz[pids[live]]
                after, inl = refine_pose_gn(before, pts, uv[live], K, inv_sigma2=w[live], ur=ur[live], bf=bf)
                if inl.sum() < max(MIN_REFINE_POINTS, 0.5 * live.sum()):
                    n_skip += 1
                    continue
                shifts.append(float(np.linalg.norm(se3_inverse(after)[:3, 3] - se3_inverse(before)[:3, 3])))
                self._frames[pos] = (index, t, kf_id, after @ se3_inverse(ref))
                n_ref += 1
                if accel_per_depth > 0:
                    inliers[pos] = PoseObservations(pts[inl], uv[live][inl].astype(np.float64), w[live][inl].astype(np.float64),
                                                    ur[live][inl].astype(np.float64), K, bf)
            n_smooth = self._smooth(accel_per_depth, inliers, map_of) if accel_per_depth > 0 else 0
        return {"frames": n_ref, "skipped": n_skip, "median_shift_m": float(np.median(shifts)) if shifts else 0.0,
                "smoothed": n_smooth}

    def _smooth(self, accel_per_depth: float, inliers: dict, map_of: Optional[Callable[[int], int]]) -> int:
        """The joint pass of :meth:`refine` (caller holds map.lock). Each stretch of frames
        between two consecutive live keyframes of one map (or before the first / after the last
        one) is solved by slam.optim.frame_smoother.smooth_frames, with the keyframes' centres
        fixed. Returns the number of frames solved."""
        m = self.map
        same = map_of or (lambda _kf_id: 0)
        kfs = sorted(m.keyframes.values(), key=lambda k: k.frame_index)
        kf_index = np.array([k.frame_index for k in kfs], dtype=np.int64)
        # stretches: runs of frames with the same preceding keyframe and the same map
        stretches: list[list[int]] = []
        key_prev = None
        for pos, (index, _t, kf_id, _c) in enumerate(self._frames):
            j = int(np.searchsorted(kf_index, index))
            if j < len(kfs) and kf_index[j] == index:
                key_prev = None  # a keyframe's own frame ends the stretch
                continue
            key = (j, same(kf_id))
            if key != key_prev:
                stretches.append([])
                key_prev = key
            stretches[-1].append(pos)
        n = 0
        for stretch in stretches:
            index0, _, kf0, _ = self._frames[stretch[0]]
            j = int(np.searchsorted(kf_index, index0))
            mid = same(kf0)
            start = kfs[j - 1] if j > 0 and same(kfs[j - 1].id) == mid else None
            end = kfs[j] if j < len(kfs) and same(kfs[j].id) == mid else None
            poses, refs = [], []
            for pos in stretch:
                _i, _t, kf_id, cam_from_ref = self._frames[pos]
                ref = m.keyframe_pose_or_ancestor(kf_id)
                if ref is None:
                    break
                poses.append(cam_from_ref @ ref)
                refs.append(ref)
            else:
                obs = [inliers.get(pos) for pos in stretch]
                if not any(o is not None for o in obs):
                    continue
                times = np.array([self._frames[pos][1] for pos in stretch])
                anchors = [None if k is None else (k.center, float(k.timestamp)) for k in (start, end)]
                new = smooth_frames(poses, obs, times, anchors[0], anchors[1], accel_per_depth)
                for pos, T, ref in zip(stretch, new, refs):
                    index, t, kf_id, _c = self._frames[pos]
                    self._frames[pos] = (index, t, kf_id, T @ se3_inverse(ref))
                n += len(stretch)
        return n
