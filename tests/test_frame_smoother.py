"""slam.optim.frame_smoother: the frames between two keyframes solved together with a
smooth-motion prior, on a synthetic wall seen in a turn (exact truth)."""
from __future__ import annotations

import numpy as np
import pytest

from slam.geometry.se3 import camera_center, make_se3, so3_exp
from slam.optim.frame_smoother import median_depth, smooth_frames
from slam.optim.pose_gn import PoseObservations, refine_pose_gn

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
FPS = 30.0


def wall(n: int, rng: np.random.Generator, depth: float = 3.5) -> np.ndarray:
    """(n,3) world points on a wall about `depth` m in front of the start (+-2 cm of relief)."""
    return np.c_[rng.uniform(-1.2, 1.2, n), rng.uniform(-0.9, 0.9, n), depth + rng.uniform(-0.02, 0.02, n)]


def turn(n: int, speed: float = 0.6, yaw_rate: float = 0.5) -> list[np.ndarray]:
    """n + 2 cam_from_world (4,4) at 30 fps: the camera slides along x at `speed` m/s while
    turning at `yaw_rate` rad/s about its vertical axis (constant velocities). The first and
    last are the keyframes."""
    out = []
    for i in range(n + 2):
        t = i / FPS
        world_from_cam = make_se3(so3_exp(np.array([0.0, yaw_rate * t, 0.0])), np.array([speed * t, 0.0, 0.0]))
        out.append(np.linalg.inv(world_from_cam))
    return out


def observe(cam_from_world: np.ndarray, pts: np.ndarray, rng: np.random.Generator, noise_px: float):
    """(pts, uv) of the points in front of the camera and inside the image, with pixel noise."""
    pc = pts @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    uv = pc @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    ok = (pc[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 640) & (uv[:, 1] >= 0) & (uv[:, 1] < 480)
    return pts[ok], uv[ok] + rng.normal(0.0, noise_px, (int(ok.sum()), 2))


def observations(pts: np.ndarray, uv: np.ndarray) -> PoseObservations:
    n = len(pts)
    return PoseObservations(pts, uv, np.ones(n), np.full(n, np.nan), K, 0.0)


def stretch(n: int, pts: np.ndarray, rng: np.random.Generator, noise_px: float):
    truth = turn(n)
    obs, alone = [], []
    for T in truth[1:-1]:
        p, uv = observe(T, pts, rng, noise_px)
        obs.append(observations(p, uv))
        alone.append(refine_pose_gn(T, p, uv, K)[0])  # each frame on its own, from the truth
    times = np.arange(1, n + 1) / FPS
    start = (camera_center(truth[0]), 0.0)
    end = (camera_center(truth[-1]), (n + 1) / FPS)
    return truth, obs, alone, times, start, end


def centre_errors(poses, truth) -> np.ndarray:
    return np.array([np.linalg.norm(camera_center(a) - camera_center(b)) for a, b in zip(poses, truth)])


def test_exact_observations_of_a_constant_velocity_turn_stay_exact():
    """With exact pixels and a constant-velocity motion, the prior is zero at the truth and the
    solver stays there (the prior adds no bias)."""
    rng = np.random.default_rng(0)
    pts = wall(150, rng)
    truth, obs, _, times, start, end = stretch(8, pts, rng, noise_px=0.0)
    start_pose = [make_se3(so3_exp(np.array([0.0, 0.01, 0.0])), np.array([0.03, 0.0, 0.0])) @ T for T in truth[1:-1]]
    out = smooth_frames(start_pose, obs, times, start, end, accel_per_depth=0.5)
    for a, b in zip(out, truth[1:-1]):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_frames_on_a_far_wall_slide_less_with_the_prior():
    """60 points on a wall 3.5 m away, 0.8 px noise: alone, each frame's centre slides along
    the shift/turn ridge by centimetres; solved together between the two keyframes it stays
    within a fraction of that. The rotations follow (they are not in the prior)."""
    rng = np.random.default_rng(1)
    pts = wall(60, rng)
    truth, obs, alone, times, start, end = stretch(10, pts, rng, noise_px=0.8)
    out = smooth_frames(alone, obs, times, start, end, accel_per_depth=0.5)
    e_alone = centre_errors(alone, truth[1:-1])
    e_smooth = centre_errors(out, truth[1:-1])
    assert np.sqrt(np.mean(e_alone ** 2)) > 0.01  # the ridge: over a centimetre alone
    assert np.sqrt(np.mean(e_smooth ** 2)) < 0.35 * np.sqrt(np.mean(e_alone ** 2))
    rot_alone = [np.linalg.norm(a[:3, :3] - b[:3, :3]) for a, b in zip(alone, truth[1:-1])]
    rot_smooth = [np.linalg.norm(a[:3, :3] - b[:3, :3]) for a, b in zip(out, truth[1:-1])]
    assert np.mean(rot_smooth) < 0.5 * np.mean(rot_alone)


def test_a_frame_without_observations_follows_its_neighbours():
    """A frame with no observations (None) gets the centre the constant-velocity prior gives it
    from its neighbours; its rotation is kept."""
    rng = np.random.default_rng(2)
    pts = wall(150, rng)
    truth, obs, _, times, start, end = stretch(5, pts, rng, noise_px=0.0)
    obs[2] = None
    init = [T.copy() for T in truth[1:-1]]
    off = make_se3(np.eye(3), np.array([0.2, -0.1, 0.05]))
    init[2] = off @ init[2]  # 20 cm off, rotation kept
    out = smooth_frames(init, obs, times, start, end, accel_per_depth=0.5)
    np.testing.assert_allclose(camera_center(out[2]), camera_center(truth[3]), atol=1e-6)
    np.testing.assert_allclose(out[2][:3, :3], init[2][:3, :3], atol=1e-9)


def test_the_prior_is_free_of_the_map_scale():
    """Monocular maps have an arbitrary scale: scaling the points, the poses' translations and
    the anchors by s scales the result by s (the prior is tied to the scene depth)."""
    rng = np.random.default_rng(3)
    pts = wall(60, rng)
    truth, obs, alone, times, start, end = stretch(6, pts, rng, noise_px=0.8)
    out = smooth_frames(alone, obs, times, start, end, accel_per_depth=0.5)
    s = 7.0

    def scaled(T):
        T = T.copy()
        T[:3, 3] *= s
        return T

    obs_s = [PoseObservations(o.pts_t.T[np.argsort(o.order)] * s, np.c_[o.u_obs, o.v_obs][np.argsort(o.order)],
                              np.ones(o.n), np.full(o.n, np.nan), K, 0.0) for o in obs]
    out_s = smooth_frames([scaled(T) for T in alone], obs_s, times, (start[0] * s, start[1]), (end[0] * s, end[1]),
                          accel_per_depth=0.5)
    for a, b in zip(out, out_s):
        np.testing.assert_allclose(scaled(a), b, atol=1e-6 * s)
    assert median_depth(out_s, obs_s) == pytest.approx(s * median_depth(out, obs), rel=1e-9)


def test_without_anchors_and_without_prior_nothing_breaks():
    """No keyframe at either end (frames before the first keyframe): the frames are still
    solved; accel_per_depth <= 0 or no observation at all returns the input poses."""
    rng = np.random.default_rng(4)
    pts = wall(150, rng)
    truth, obs, alone, times, _, _ = stretch(6, pts, rng, noise_px=0.3)
    out = smooth_frames(alone, obs, times, None, None, accel_per_depth=0.5)
    assert centre_errors(out, truth[1:-1]).max() < 0.05
    same = smooth_frames(alone, obs, times, None, None, accel_per_depth=0.0)
    for a, b in zip(same, alone):
        np.testing.assert_array_equal(a, b)
    none = smooth_frames(alone, [None] * len(alone), times, None, None, accel_per_depth=0.5)
    for a, b in zip(none, alone):
        np.testing.assert_array_equal(a, b)
