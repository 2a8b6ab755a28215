"""How much an RGB-D run trusts its depth readings: the virtual baseline ``bf`` of ORB-SLAM's
RGB-D edges, measured from the run's own residuals instead of a hand-set constant.

A keypoint with depth z adds the virtual right coordinate ``ur = u - bf / z`` (px), weighted like
the pixel. A depth error therefore costs ``bf * (1/z_meas - 1/z)`` pixels: ``bf`` (px * m) says
how many pixels of reprojection error one unit of inverse-depth error is worth. It is right when
the depth part of the residual is as noisy as the pixel part: ``bf = sigma_px / sigma_invdepth``.
ORB-SLAM's TUM value, 40, is the right order for a Kinect (whole fr1_xyz: this estimate ends near
120), while a sensor with little depth noise (the synthetic sequences, 0.0005 z^2: 250-580) is
trusted ten times less than it deserves.

:class:`DepthWeight` holds the value that tracking and mapping both use (read and written under
``map.lock``). With ``auto`` it moves, after every local bundle adjustment, toward the estimate
of :func:`equal_weight_bf` on that adjustment's result, in log space with ``gain``. Stereo runs
keep the rig's ``bf``: there the depth is a measured disparity, already in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from slam.optim.ba import _index_of

#: 2-dof chi2 at 95 %: observations whose pixel residual passes this (at their own sigma) are
#: the ones whose depth residual is measured, so the estimate does not depend on the depth's
#: own inlier test (which depends on bf, and would feed back).
CHI2_2D = 5.991
#: MAD -> standard deviation for a normal distribution
MAD_TO_SIGMA = 1.4826


def equal_weight_bf(problem, result, min_samples: int = 200) -> Optional[tuple[float, int]]:
    """(bf, samples): the bf (px * m) at which the depth part of an RGB-D residual is as noisy as
    its pixel part, measured on a solved bundle-adjustment problem; None without enough samples.

    problem: slam.optim.ba.BAProblem with depth observations (``obs_ur`` finite, made with
    ``problem.bf``); result: its solution (``cam_from_world`` (K, 4, 4), ``points_world`` (P, 3)).
    Only observations whose pixel residual passes the 2-dof test at the solution count.

    - Pixel spread: of the reprojection residuals at the solution, of points seen at least twice,
      each scaled by sqrt(n / (n - 1)) for a point seen n times (it is fitted to them).
    - Depth spread: of the depth readings against each other, not against the fitted points
      (whose depth, where bf is low and baselines short, is the triangulation's, and would make the
      estimate follow bf). A point's first reading is lifted to 3D with its keyframe's pose and
      carried into each other keyframe that read its depth; the difference of inverse depths there
      holds two readings' noise, hence the 1 / sqrt(2).

    Both spreads are robust (1.4826 x the median absolute value) and in units of each
    observation's assumed sigma (``obs_inv_sigma2``)."""
    ur = problem.obs_ur
    if ur is None or problem.bf <= 0:
        return None
    ki = _index_of(np.asarray(problem.kf_ids), problem.obs_kf, "keyframe")
    pi = _index_of(np.asarray(problem.point_ids), problem.obs_pt, "point")
    T = np.asarray(result.cam_from_world)
    R, t = T[ki, :3, :3], T[ki, :3, 3]
    pc = np.einsum("nij,nj->ni", R, np.asarray(result.points_world)[pi]) + t
    z = pc[:, 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    K = problem.K
    uv = problem.obs_uv
    ru = uv[:, 0] - (K[0, 0] * pc[:, 0] / zs + K[0, 2])
    rv = uv[:, 1] - (K[1, 1] * pc[:, 1] / zs + K[1, 2])
    sw = np.sqrt(problem.obs_inv_sigma2)
    ok2d = front & ((ru * ru + rv * rv) * problem.obs_inv_sigma2 < CHI2_2D)
    if int(ok2d.sum()) < min_samples:
        return None
    # a point with n observations is fitted to them: its residuals understate the noise by sqrt((n - 1) / n)
    n = np.bincount(pi[ok2d], minlength=len(problem.point_ids))[pi]
    px = ok2d & (n >= 2)
    if int(px.sum()) < min_samples:
        return None
    c = sw[px] * np.sqrt(n[px] / (n[px] - 1.0))
    s_px = MAD_TO_SIGMA * float(np.median(np.abs(np.concatenate([ru[px] * c, rv[px] * c]))))
    dep = np.nonzero(ok2d & np.isfinite(ur))[0]
    if len(dep) < 2:
        return None
    # each point's first depth reading (in problem order) is its reference
    order = np.argsort(pi[dep], kind="stable")
    d_sorted = dep[order]
    first = np.ones(len(d_sorted), dtype=bool)
    first[1:] = pi[d_sorted[1:]] != pi[d_sorted[:-1]]
    ref = d_sorted[np.maximum.accumulate(np.where(first, np.arange(len(d_sorted)), 0))]
    other = ~first
    if int(other.sum()) < min_samples:
        return None
    oi, oj = ref[other], d_sorted[other]
    zi = problem.bf / (uv[oi, 0] - ur[oi])
    ray = np.stack([(uv[oi, 0] - K[0, 2]) / K[0, 0], (uv[oi, 1] - K[1, 2]) / K[1, 1], np.ones(len(oi))], axis=1)
    x_world = np.einsum("nji,nj->ni", R[oi], ray * zi[:, None] - t[oi])  # R^T (p_cam - t)
    zj_pred = np.einsum("nj,nj->n", R[oj, 2], x_world) + t[oj, 2]
    good = zj_pred > 1e-6
    inv_zj_meas = (uv[oj, 0] - ur[oj]) / problem.bf
    r = (inv_zj_meas[good] - 1.0 / zj_pred[good]) * sw[oj][good] / np.sqrt(2.0)
    if len(r) < min_samples:
        return None
    s_inv = MAD_TO_SIGMA * float(np.median(np.abs(r)))
    if not (s_inv > 0 and s_px > 0):
        return None
    return s_px / s_inv, int(len(r))


def inverse_depth(depth: np.ndarray) -> np.ndarray:
    """(N,) depth readings in metres (0 or less = none) -> (N,) float64 inverse depth (1/m), NaN
    where there is no reading."""
    d = np.asarray(depth, dtype=np.float64)
    ok = d > 0
    return np.where(ok, 1.0 / np.where(ok, d, 1.0), np.nan)


@dataclass
class DepthWeight:
    """The bf (px * m) of a run's depth edges, shared by tracking (pose refinement) and mapping
    (bundle adjustment); read and written under ``map.lock``.

    auto: move it after each local BA toward :func:`equal_weight_bf` (RGB-D runs with
    ``tracking.bf_auto``); otherwise it stays at its initial value (``tracking.bf``, or the stereo
    rig's). Each step goes ``gain`` of the way in log space; the value stays within [lo, hi]."""

    bf: float
    auto: bool = False
    gain: float = 0.5
    lo: float = 1.0
    hi: float = 1.0e5
    initial: float = field(init=False)
    updates: int = field(default=0, init=False)
    last_estimate: Optional[float] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.initial = float(self.bf)

    def virtual_right(self, u: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(N,) float64 virtual right coordinate ``u - bf / depth`` (px) of keypoints at u (N,) px
        with readings depth (N,) m (0 = none: NaN). In stereo runs, where depth = bf / disparity,
        this is the matched right-image u."""
        d = np.asarray(depth, dtype=np.float64)
        ok = d > 0
        ur = np.full(len(d), np.nan)
        ur[ok] = np.asarray(u, dtype=np.float64)[ok] - self.bf / d[ok]
        return ur

    def observe(self, problem, result) -> None:
        """Update from a solved local BA (caller holds map.lock). No-op unless auto."""
        if not self.auto or problem is None or result is None:
            return
        est = equal_weight_bf(problem, result)
        if est is None:
            return
        self.last_estimate = est[0]
        target = float(np.clip(est[0], self.lo, self.hi))
        self.bf = float(np.exp(np.log(self.bf) + self.gain * (np.log(target) - np.log(self.bf))))
        self.updates += 1

    def stats(self) -> dict:
        """Figures for metrics.json."""
        return {"bf": self.bf, "bf_initial": self.initial, "auto": self.auto, "updates": self.updates,
                "last_estimate": self.last_estimate}
