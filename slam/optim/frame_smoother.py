"""Joint re-estimation of the frames between two keyframes, with a smooth-motion prior.

At the end of a run every frame between keyframes is re-estimated against the final map from
its own matches (:meth:`slam.tracking.trajectory.FrameTrajectory.refine`), one frame at a time.
That leaves a frame poorly placed where its points lie at about one depth, e.g. a wall seen
in a monocular turn. There a sideways shift of the camera and a turn about its vertical axis
move the points in the image almost alike, so a small systematic error in the keypoints (blur
in a fast turn) moves the frame along that ridge. On synthetic/loop_short (monocular, XFeat)
the frames between two keyframes 0.3 and 1.0 cm from the truth lay up to 14 cm from it,
with a compensating 2 deg turn, while keyframe bundle adjustment placed the keyframes themselves
within about 1 cm (docs/benchmarks.md).

A hand-held or vehicle camera cannot move like that between two frames 33 ms apart: 10 cm
in one frame and back in the next is an acceleration of about 90 m/s^2. So the frames of one
stretch between consecutive keyframes are solved together: each frame's reprojection terms
(its inliers, Huber kernel, as in the pose-only refinement) plus, for every three consecutive
camera centres (the keyframes at both ends fixed), a zero-mean prior on the change of velocity

    (C[i+1] - C[i]) / dt[i+1] - (C[i] - C[i-1]) / dt[i]   ~   N(0, (sigma_a (dt[i] + dt[i+1]) / 2)^2 I)

with ``sigma_a = accel_per_depth * median scene depth`` (map units per s^2). Tying it to the
scene depth keeps it free of the monocular map's unknown scale. The prior has a Huber kernel at
3 sigma, so a real jolt costs linearly rather than quadratically. The rotations carry no prior:
once the centre is pinned, the frame's own observations fix the rotation. The problem is
block-banded (a centre couples to its two neighbours on each side), solved with a banded
Cholesky factorisation; about 1 ms per frame.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy.linalg import solveh_banded

from slam.geometry.se3 import camera_center
from slam.optim.pose_gn import PoseObservations, exp_left

PRIOR_HUBER = 3.0  # prior residuals beyond this many sigma are down-weighted (Huber)
_BAND = 17  # lower bandwidth of the 6-per-frame system: a node couples to nodes up to 2 away
_DAMPING = 1e-6  # added to the diagonal: a frame without observations keeps its rotation


def median_depth(cam_from_world: Sequence[np.ndarray], observations: Sequence[Optional[PoseObservations]]) -> float:
    """Median over the frames of the median depth (camera z, map units) of their observed
    points; 0 when no frame has observations."""
    zs = []
    for T, o in zip(cam_from_world, observations):
        if o is not None and o.n:
            z = T[2, :3] @ o.pts_t + T[2, 3]
            zs.append(float(np.median(z)))
    return float(np.median(zs)) if zs else 0.0


class _Banded:
    """Lower-banded storage of a symmetric (6n x 6n) matrix for scipy's solveh_banded."""

    def __init__(self, n: int) -> None:
        self.ab = np.zeros((_BAND + 1, 6 * n))
        r, c = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
        self._r, self._c = r.ravel(), c.ravel()

    def add(self, k: int, l: int, block: np.ndarray) -> None:
        """Adds the (6,6) block at block row k, block column l (k >= l, k - l <= 2)."""
        i = 6 * k + self._r
        j = 6 * l + self._c
        keep = i >= j
        np.add.at(self.ab, (i[keep] - j[keep], j[keep]), block.ravel()[keep])


def smooth_frames(
    cam_from_world: Sequence[np.ndarray],
    observations: Sequence[Optional[PoseObservations]],
    times: np.ndarray,
    start: Optional[tuple[np.ndarray, float]],
    end: Optional[tuple[np.ndarray, float]],
    accel_per_depth: float,
    iterations: int = 5,
    step_tol: float = 1e-7,
) -> list[np.ndarray]:
    """Re-estimate a stretch of consecutive frames jointly (module doc).

    cam_from_world: n (4,4) float64 initial poses (world = map units); observations: per frame
    its inlier observations against the map (PoseObservations) or None (then only the prior
    moves its centre); times: (n,) float64 seconds, increasing; start / end: the fixed
    neighbouring keyframes as (camera centre (3,), time s), or None; accel_per_depth: sigma of
    the acceleration per unit of median scene depth, 1/s^2 (> 0). Returns the n new
    cam_from_world (4,4); the input poses when there is nothing to do."""
    n = len(cam_from_world)
    cur = [np.array(T, dtype=np.float64) for T in cam_from_world]
    depth = median_depth(cur, observations)
    if n == 0 or depth <= 0 or accel_per_depth <= 0:
        return cur
    sigma_a = accel_per_depth * depth
    # nodes of the prior chain: the fixed anchors (None: no pose) and the frames 0..n-1
    node_t = ([start[1]] if start else []) + list(np.asarray(times, dtype=np.float64)) + ([end[1]] if end else [])
    off = 1 if start else 0
    for _ in range(iterations):
        H = _Banded(n)
        g = np.zeros(6 * n)
        for i, (T, o) in enumerate(zip(cur, observations)):
            Hi = _DAMPING * np.eye(6)
            if o is not None and o.n:
                ru, rv, rr, pc, iz = o.residuals(T)
                hw = o.huber_weights(o.chi2(ru, rv, rr), pc[2] > 1e-6)
                Ho, go = o.normal_equations(pc, iz, ru, rv, rr, hw)
                Hi = Hi + Ho
                g[6 * i:6 * i + 6] += go
            H.add(i, i, Hi)
        centres = ([start[0]] if start else []) + [camera_center(T) for T in cur] + ([end[0]] if end else [])
        # d(centre)/d(left twist [omega, v]) = [0 | -R^T]; anchors are fixed (no Jacobian)
        jac = [None] * off + [np.hstack([np.zeros((3, 3)), -T[:3, :3].T]) for T in cur] + [None] * (len(centres) - off - n)
        for k in range(1, len(centres) - 1):
            d1, d2 = node_t[k] - node_t[k - 1], node_t[k + 1] - node_t[k]
            if d1 <= 0 or d2 <= 0:
                continue
            r = (centres[k] - centres[k - 1]) / d1 - (centres[k + 1] - centres[k]) / d2  # 0 - prediction
            sigma = sigma_a * 0.5 * (d1 + d2)
            w = 1.0 / sigma ** 2
            e = np.linalg.norm(r) / sigma
            if e > PRIOR_HUBER:
                w *= PRIOR_HUBER / e
            coef = ((k - 1, 1.0 / d1), (k, -1.0 / d1 - 1.0 / d2), (k + 1, 1.0 / d2))
            for a, ca in coef:
                if jac[a] is None:
                    continue
                g[6 * (a - off):6 * (a - off) + 6] += w * ca * (jac[a].T @ r)
                for b, cb in coef:
                    if jac[b] is None or b > a:
                        continue
                    H.add(a - off, b - off, w * ca * cb * (jac[a].T @ jac[b]))
        try:
            dx = solveh_banded(H.ab, g, lower=True)
        except np.linalg.LinAlgError:
            break
        cur = [exp_left(dx[6 * i:6 * i + 6], T) for i, T in enumerate(cur)]
        if np.abs(dx).max() < step_tol:
            break
    return cur
