"""SE(3)/SO(3) helper identities on random data with known answers."""
import numpy as np
import pytest

from slam.geometry.sim3 import ate_rmse, umeyama_alignment
from slam.geometry.se3 import (camera_center, make_se3, quat_xyzw_from_rot, rot_from_quat_xyzw,
                               rotation_angle_deg, se3_exp, se3_inverse, se3_log, so3_exp, so3_log,
                               transform_points)


def random_pose(rng, angle=np.pi * 0.9):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return make_se3(so3_exp(axis * rng.uniform(0, angle)), rng.normal(size=3))


def test_inverse_and_transform_points():
    rng = np.random.default_rng(0)
    a_from_b = random_pose(rng)
    b_from_a = se3_inverse(a_from_b)
    np.testing.assert_allclose(a_from_b @ b_from_a, np.eye(4), atol=1e-12)
    pts_b = rng.normal(size=(20, 3))
    pts_a = transform_points(a_from_b, pts_b)
    np.testing.assert_allclose(transform_points(b_from_a, pts_a), pts_b, atol=1e-12)
    hom = (a_from_b @ np.c_[pts_b, np.ones(20)].T).T[:, :3]
    np.testing.assert_allclose(pts_a, hom, atol=1e-12)


def test_so3_exp_log_round_trip_including_edge_cases():
    rng = np.random.default_rng(1)
    vecs = [rng.normal(size=3) * s for s in (1e-9, 1e-4, 0.3, 1.5, 2.9)]
    vecs.append(np.array([0.0, 0.0, np.pi - 1e-7]))
    vecs.append(np.array([np.pi - 1e-6, 0.0, 0.0]) / np.sqrt(1.0))
    for w in vecs:
        R = so3_exp(w)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(so3_exp(so3_log(R)), R, atol=1e-9)
        if np.linalg.norm(w) < np.pi - 1e-3:
            np.testing.assert_allclose(so3_log(R), w, atol=1e-9)


def test_se3_exp_log_round_trip():
    rng = np.random.default_rng(2)
    for _ in range(20):
        w = rng.normal(size=3)
        xi = np.r_[w / np.linalg.norm(w) * rng.uniform(0.0, 3.0), rng.normal(size=3)]
        T = se3_exp(xi)
        np.testing.assert_allclose(se3_log(T), xi, atol=1e-9)
    T = random_pose(rng)
    np.testing.assert_allclose(se3_exp(se3_log(T)), T, atol=1e-9)
    # pure translation
    np.testing.assert_allclose(se3_exp(np.r_[0, 0, 0, 1.0, 2.0, 3.0])[:3, 3], [1, 2, 3])


def test_quaternion_round_trip_and_normalisation():
    rng = np.random.default_rng(3)
    for _ in range(50):
        R = random_pose(rng, angle=np.pi)[:3, :3]
        q = quat_xyzw_from_rot(R)
        assert np.linalg.norm(q) == pytest.approx(1.0)
        assert q[3] >= 0
        np.testing.assert_allclose(rot_from_quat_xyzw(q), R, atol=1e-12)
        np.testing.assert_allclose(rot_from_quat_xyzw(-3.0 * q), R, atol=1e-12)  # sign + scale
    # known value: 90 deg about z in TUM order (qx qy qz qw)
    Rz = rot_from_quat_xyzw([0, 0, np.sqrt(0.5), np.sqrt(0.5)])
    np.testing.assert_allclose(Rz, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    with pytest.raises(ValueError):
        rot_from_quat_xyzw([0, 0, 0, 0])


def test_rotation_angle_and_camera_center():
    assert rotation_angle_deg(so3_exp([0, 0.3, 0])) == pytest.approx(np.degrees(0.3))
    assert rotation_angle_deg(np.eye(3)) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(4)
    cam_from_world = random_pose(rng)
    c = camera_center(cam_from_world)
    np.testing.assert_allclose(transform_points(cam_from_world, c[None])[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(c, se3_inverse(cam_from_world)[:3, 3], atol=1e-12)


@pytest.mark.parametrize("with_scale", [False, True])
def test_umeyama_recovers_similarity(with_scale):
    rng = np.random.default_rng(5)
    src = rng.normal(size=(100, 3))
    T = random_pose(rng)
    s_true = 2.5 if with_scale else 1.0
    dst = s_true * src @ T[:3, :3].T + T[:3, 3]
    s, R, t = umeyama_alignment(src, dst, with_scale)
    assert s == pytest.approx(s_true, rel=1e-9)
    np.testing.assert_allclose(R, T[:3, :3], atol=1e-9)
    np.testing.assert_allclose(t, T[:3, 3], atol=1e-9)
    assert ate_rmse(src, dst, with_scale) == pytest.approx(0.0, abs=1e-9)
    noisy = dst + rng.normal(scale=0.01, size=dst.shape)
    assert 0.005 < ate_rmse(src, noisy, with_scale) < 0.02
