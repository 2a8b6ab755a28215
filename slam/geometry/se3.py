"""Rigid-body transforms: SE(3) / SO(3) helpers on plain numpy arrays.

Conventions
-----------
- A pose is a (4, 4) float64 homogeneous matrix named ``dst_from_src`` so that
  ``p_dst = dst_from_src @ p_src`` (points as homogeneous column vectors).
- Tangent vectors are ordered ``xi = [omega (3), v (3)]`` (rotation first, like g2o's
  ``SE3Quat.log()``), ``exp(xi) = [[exp(omega^), V v], [0, 1]]``.
- Quaternions are in TUM / scipy order ``(qx, qy, qz, qw)``.
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-10


def _as_float(a, shape: tuple, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr


def make_se3(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) float64 pose from a (3, 3) rotation and a (3,) translation."""
    out = np.eye(4)
    out[:3, :3] = _as_float(R, (3, 3), "R")
    out[:3, 3] = _as_float(np.reshape(t, -1), (3,), "t")
    return out


def se3_inverse(a_from_b: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform: ``a_from_b`` (4,4) -> ``b_from_a`` (4,4). Exact, no np.linalg.inv."""
    a_from_b = _as_float(a_from_b, (4, 4), "a_from_b")
    R = a_from_b[:3, :3]
    t = a_from_b[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def transform_points(a_from_b: np.ndarray, pts_b: np.ndarray) -> np.ndarray:
    """Map (N, 3) points from frame b to frame a with a (4, 4) ``a_from_b``; returns (N, 3) float64."""
    pts_b = np.asarray(pts_b, dtype=np.float64)
    if pts_b.ndim != 2 or pts_b.shape[1] != 3:
        raise ValueError(f"pts_b must be (N, 3), got {pts_b.shape}")
    a_from_b = np.asarray(a_from_b, dtype=np.float64)
    return pts_b @ a_from_b[:3, :3].T + a_from_b[:3, 3]


def skew(w: np.ndarray) -> np.ndarray:
    """(3, 3) cross-product matrix of a (3,) vector: skew(a) @ b == cross(a, b)."""
    wx, wy, wz = np.asarray(w, dtype=np.float64).reshape(3)
    return np.array([[0.0, -wz, wy], [wz, 0.0, -wx], [-wy, wx, 0.0]])


def so3_exp(omega: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) from an axis-angle vector (3,) in radians (Rodrigues)."""
    omega = _as_float(np.reshape(omega, -1), (3,), "omega")
    theta2 = float(omega @ omega)
    W = skew(omega)
    if theta2 < 1e-12:
        # Taylor expansion: sin(t)/t ~ 1 - t^2/6, (1-cos t)/t^2 ~ 1/2 - t^2/24
        return np.eye(3) + (1.0 - theta2 / 6.0) * W + (0.5 - theta2 / 24.0) * (W @ W)
    theta = np.sqrt(theta2)
    return np.eye(3) + (np.sin(theta) / theta) * W + ((1.0 - np.cos(theta)) / theta2) * (W @ W)


def so3_log(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) (radians) of a rotation matrix; robust near 0 and pi."""
    R = _as_float(R, (3, 3), "R")
    vee = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    sin_theta = 0.5 * float(np.linalg.norm(vee))
    cos_theta = 0.5 * (float(np.trace(R)) - 1.0)
    theta = float(np.arctan2(sin_theta, cos_theta))  # accurate over the whole [0, pi] range
    if theta < 1e-6:
        return 0.5 * vee * (1.0 + theta * theta / 6.0)
    if np.pi - theta < 1e-3:
        # Near pi the antisymmetric part vanishes: a a^T = (sym(R) - cos I) / (1 - cos).
        S = 0.5 * (R + R.T)
        A = (S - cos_theta * np.eye(3)) / (1.0 - cos_theta)
        k = int(np.argmax(np.diag(A)))
        axis = A[:, k] / np.sqrt(max(A[k, k], _EPS))
        axis /= np.linalg.norm(axis)
        if axis @ vee < 0.0:  # vee = 2 sin(theta) axis fixes the sign when theta < pi
            axis = -axis
        return axis * theta
    return vee * (theta / (2.0 * sin_theta))


def _left_jacobian(omega: np.ndarray) -> np.ndarray:
    """SO(3) left Jacobian V(omega) used by the SE(3) exponential."""
    theta2 = float(omega @ omega)
    W = skew(omega)
    if theta2 < 1e-12:
        return np.eye(3) + 0.5 * W + (W @ W) / 6.0
    theta = np.sqrt(theta2)
    return (np.eye(3) + ((1.0 - np.cos(theta)) / theta2) * W
            + ((theta - np.sin(theta)) / (theta2 * theta)) * (W @ W))


def se3_exp(xi: np.ndarray) -> np.ndarray:
    """(4, 4) pose from a twist ``xi = [omega(3), v(3)]`` (rotation first)."""
    xi = _as_float(np.reshape(xi, -1), (6,), "xi")
    omega, v = xi[:3], xi[3:]
    return make_se3(so3_exp(omega), _left_jacobian(omega) @ v)


def se3_log(a_from_b: np.ndarray) -> np.ndarray:
    """Twist (6,) ``[omega, v]`` of a (4, 4) pose; inverse of :func:`se3_exp`."""
    a_from_b = _as_float(a_from_b, (4, 4), "a_from_b")
    omega = so3_log(a_from_b[:3, :3])
    v = np.linalg.solve(_left_jacobian(omega), a_from_b[:3, 3])
    return np.concatenate([omega, v])


def quat_xyzw_from_rot(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (4,) ``(qx, qy, qz, qw)`` with qw >= 0 from a (3, 3) rotation (Shepperd)."""
    R = _as_float(R, (3, 3), "R")
    tr = np.trace(R)
    diag = np.diag(R)
    k = int(np.argmax(np.r_[tr, diag]))
    if k == 0:
        s = 2.0 * np.sqrt(max(1.0 + tr, _EPS))
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    elif k == 1:
        s = 2.0 * np.sqrt(max(1.0 + R[0, 0] - R[1, 1] - R[2, 2], _EPS))
        q = np.array([0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s])
    elif k == 2:
        s = 2.0 * np.sqrt(max(1.0 + R[1, 1] - R[0, 0] - R[2, 2], _EPS))
        q = np.array([(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(max(1.0 + R[2, 2] - R[0, 0] - R[1, 1], _EPS))
        q = np.array([(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s])
    q /= np.linalg.norm(q)
    if q[3] < 0.0:
        q = -q
    return q


def rot_from_quat_xyzw(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation from a quaternion (4,) ``(qx, qy, qz, qw)``; the input is normalised first."""
    q = _as_float(np.reshape(q, -1), (4,), "q")
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion {q} has zero or non-finite norm; expected (qx, qy, qz, qw)")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_angle_deg(R: np.ndarray) -> float:
    """Rotation angle of a (3, 3) rotation in degrees, in [0, 180]."""
    R = _as_float(R, (3, 3), "R")
    return float(np.degrees(np.linalg.norm(so3_log(R))))


def camera_center(cam_from_world: np.ndarray) -> np.ndarray:
    """Optical centre (3,) in world coordinates of a camera with pose ``cam_from_world`` (4,4)."""
    cam_from_world = _as_float(cam_from_world, (4, 4), "cam_from_world")
    return -cam_from_world[:3, :3].T @ cam_from_world[:3, 3]


def project_to_so3(M: np.ndarray) -> np.ndarray:
    """Closest rotation (Frobenius norm) to a (3, 3) matrix, e.g. to re-orthonormalise after drift."""
    U, _, Vt = np.linalg.svd(_as_float(M, (3, 3), "M"))
    R = U @ Vt
    if np.linalg.det(R) < 0.0:
        U[:, -1] = -U[:, -1]
        R = U @ Vt
    return R
