"""The trajectory of every tracked frame, stored relative to its reference keyframe.

A frame's pose is kept as cam_from_refkf, so when bundle adjustment or loop closure moves the
keyframe, the frame moves with it (ORB-SLAM's relative frame poses). Frames whose keyframe was
culled follow the culled keyframe's parent (Map.keyframe_pose_or_ancestor).

Bundle adjustment corrects keyframes, not the frames between them: a frame keeps the error it
was tracked with relative to its reference keyframe. In monocular turns that error grows
between keyframes (synthetic/loop_short mono ORB: keyframes 0.49 cm, frames 3.94 cm;
docs/benchmarks.md section 14). So a frame may keep a sample of its inlier 2D-3D matches
(:meth:`add` with ``obs``), and :meth:`refine` re-estimates each such frame's pose against the
final map (pose-only, robust) at the end of a run.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from slam.geometry.se3 import se3_inverse
from slam.mapping.map import Keyframe, Map
from slam.optim.pose_gn import refine_pose_gn

MIN_REFINE_POINTS = 20  # a frame needs this many live matched points (and half of them inliers) to be refined
OBS_BUDGET_BYTES = 256 << 20  # matches kept over all frames (20 B each: ~8 KB per frame); past it the oldest frames' go


class FrameTrajectory:
    def __init__(self, slam_map: Map, max_obs: int = 0) -> None:
        """max_obs: matches kept per frame for :meth:`refine` (evenly spaced; 0 = none)."""
        self.map = slam_map
        self.max_obs = max_obs
        self._frames: list[tuple[int, float, int, np.ndarray]] = []  # (index, timestamp, ref kf id, cam_from_refkf)
        self._obs: dict[int, tuple] = {}  # position in _frames -> (point ids (K,) int32, uv (K,2) f32, inv_sigma2 (K,) f32, ur (K,) f32)
        self._obs_bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, index: int, timestamp: float, ref: Keyframe, cam_from_world: np.ndarray, obs: Optional[tuple] = None) -> None:
        """Frame `index` at cam_from_world (4,4) float64, relative to keyframe ref (caller holds
        map.lock, so ref's pose is the one cam_from_world was estimated against). obs: its inlier
        matches (point ids (K,) int64, uv (K,2) undistorted px, inv_sigma2 (K,), ur (K,) virtual
        right u in px or NaN), of which max_obs are kept for :meth:`refine`."""
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

    def refine(self, K: np.ndarray, bf: float = 0.0) -> dict:
        """Re-estimate every frame that kept matches against the map as it is now (pose-only
        Gauss-Newton with outlier rounds, from the frame's current pose); points culled since
        are left out. Live keyframes' own frames are left to bundle adjustment; culled ones are
        re-estimated like any frame. A frame with fewer than MIN_REFINE_POINTS live points, or fewer than half
        of them inliers, keeps its pose. K: (3,3); bf: px * m of the virtual right camera (depth
        modes; 0 = monocular). Returns {"frames": refined, "skipped": kept as they were,
        "median_shift_m": median camera-centre change (map units)}."""
        n_ref, n_skip, shifts = 0, 0, []
        with self.map.lock:
            m = self.map
            for pos, (pids, uv, w, ur) in self._obs.items():  # pids int32
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
                after, inl = refine_pose_gn(before, m.pts_xyz[pids[live]], uv[live], K, inv_sigma2=w[live], ur=ur[live], bf=bf)
                if inl.sum() < max(MIN_REFINE_POINTS, 0.5 * live.sum()):
                    n_skip += 1
                    continue
                shifts.append(float(np.linalg.norm(se3_inverse(after)[:3, 3] - se3_inverse(before)[:3, 3])))
                self._frames[pos] = (index, t, kf_id, after @ se3_inverse(ref))
                n_ref += 1
        return {"frames": n_ref, "skipped": n_skip, "median_shift_m": float(np.median(shifts)) if shifts else 0.0}
