"""The mapper's triangulation check (LocalMapper._check_points): a parallax must clear its own
noise. Two keyframes 2 m from a wall whose true parallax (0.8 deg) is below the 1.15 deg minimum:
with coarse-octave keypoints (sigma 2.1 px) the old test still accepts the points whose noise
inflated the parallax, and they come out far too near (the monocular map shrinks); the
noise-scaled test (mapping.min_parallax_sigmas=7, off by default) rejects them. Octave-0 keypoints
with ample parallax (3 deg) pass as before."""
from __future__ import annotations

import dataclasses

import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.epipolar import triangulate
from slam.geometry.se3 import se3_inverse
from slam.mapping.config import MappingConfig
from slam.mapping.local_mapper import LocalMapper
from slam.mapping.map import Map

CAM = PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=319.5, cy=239.5)
K = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])


def _accepted_depths(sigmas: float, parallax_deg: float, sigma2: float, n: int = 4000, seed: int = 0) -> np.ndarray:
    """Depths (in the first keyframe) of the points the check accepts; true depth 2 m."""
    rng = np.random.default_rng(seed)
    depth = 2.0
    baseline = depth * np.tan(np.radians(parallax_deg))
    pose0 = np.eye(4)
    pose1 = np.eye(4)
    pose1[0, 3] = -baseline  # cam_from_world: the second camera baseline metres along +x
    pts = np.c_[rng.uniform(-0.8, 0.8, (n, 2)), np.full(n, depth)]
    pts[:, 0] += baseline / 2  # centred between the two cameras
    x0 = pts[:, :2] / pts[:, 2:] * 500.0 + [319.5, 239.5]
    p1 = pts + pose1[:3, 3]
    x1 = p1[:, :2] / p1[:, 2:] * 500.0 + [319.5, 239.5]
    x0 = x0 + rng.normal(scale=np.sqrt(sigma2), size=x0.shape)
    x1 = x1 + rng.normal(scale=np.sqrt(sigma2), size=x1.shape)
    cfg = dataclasses.replace(MappingConfig(), min_parallax_sigmas=sigmas)
    mapper = LocalMapper(cfg, CAM, Map(32, True), None, mode="mono")
    est = triangulate(pose0, pose1, x0, x1, K)
    s = np.full(n, sigma2)
    ok = mapper._check_points(est, pose0, pose1, x0, x1, s, s, se3_inverse(pose0)[:3, 3], se3_inverse(pose1)[:3, 3])
    return est[ok, 2]


def test_noisy_parallax_below_the_minimum_is_rejected_not_accepted_too_near():
    sigma2 = 1.2 ** 8  # ORB octave 4
    old = _accepted_depths(0.0, 0.8, sigma2)
    assert len(old) > 100  # noise lifts enough of them over 1.15 deg ...
    assert np.median(old) < 0.8 * 2.0  # ... and those are far too near
    new = _accepted_depths(7.0, 0.8, sigma2)
    assert len(new) < 0.05 * len(old)


def test_fine_keypoints_with_ample_parallax_pass_as_before():
    old = _accepted_depths(0.0, 3.0, 1.0)
    new = _accepted_depths(7.0, 3.0, 1.0)
    assert len(old) > 3900 and len(new) == len(old)
    assert abs(np.median(new) - 2.0) < 0.02


def test_off_by_default_and_then_unchanged():
    assert MappingConfig().min_parallax_sigmas == 0.0
    sigma2 = 1.2 ** 8
    off = _accepted_depths(MappingConfig().min_parallax_sigmas, 0.8, sigma2)
    assert np.array_equal(off, _accepted_depths(0.0, 0.8, sigma2))
