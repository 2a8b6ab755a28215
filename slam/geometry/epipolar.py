"""Two-view geometry: essential matrix, relative pose, triangulation, monocular initialisation.

All pixel inputs are UNDISTORTED pixels (N, 2) float64 with the pinhole matrix K (3, 3).
Poses are (4, 4) float64 ``dst_from_src``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from slam.geometry.se3 import camera_center, make_se3, skew, transform_points

_RANSAC_METHOD = getattr(cv2, "USAC_MAGSAC", cv2.RANSAC)


def _pts(x, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2) undistorted pixels, got shape {arr.shape}")
    return arr


def _check_pair(x0, x1) -> tuple[np.ndarray, np.ndarray]:
    x0, x1 = _pts(x0, "x0"), _pts(x1, "x1")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {x0.shape} and {x1.shape}")
    return x0, x1


def _normalize(x: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) pixels -> (N, 2) normalised image coordinates (K^-1, zero skew assumed)."""
    return np.stack([(x[:, 0] - K[0, 2]) / K[0, 0], (x[:, 1] - K[1, 2]) / K[1, 1]], axis=1)


def _project(K: np.ndarray, pts_cam: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        xn = pts_cam[:, :2] / pts_cam[:, 2:3]
    return np.stack([xn[:, 0] * K[0, 0] + K[0, 2], xn[:, 1] * K[1, 1] + K[1, 2]], axis=1)


# ---------------------------------------------------------------------------- essential matrix
def estimate_essential(x0: np.ndarray, x1: np.ndarray, K: np.ndarray, threshold_px: float = 1.0,
                       confidence: float = 0.999) -> tuple[Optional[np.ndarray], np.ndarray]:
    """Robust essential matrix with ``x1_h^T K^-T E K^-1 x0_h = 0``.

    x0, x1: (N, 2) undistorted pixels in image 0 / image 1. K: (3, 3).
    threshold_px: inlier threshold (pixels, point-to-epipolar-line for MAGSAC/RANSAC).
    Returns (E (3, 3) or None, inliers (N,) bool). USAC_MAGSAC, RANSAC if unavailable.
    """
    x0, x1 = _check_pair(x0, x1)
    n = x0.shape[0]
    inliers = np.zeros(n, dtype=bool)
    if n < 5:
        return None, inliers
    K = np.asarray(K, dtype=np.float64)
    try:
        E, mask = cv2.findEssentialMat(x0, x1, K, method=_RANSAC_METHOD, prob=confidence,
                                       threshold=threshold_px)
    except cv2.error:
        E, mask = cv2.findEssentialMat(x0, x1, K, method=cv2.RANSAC, prob=confidence,
                                       threshold=threshold_px)
    if E is None or mask is None or E.shape[0] < 3:
        return None, inliers
    E = np.asarray(E[:3, :3], dtype=np.float64)
    inliers = mask.reshape(-1).astype(bool)
    if not np.all(np.isfinite(E)) or inliers.sum() < 5:
        return None, np.zeros(n, dtype=bool)
    return E, inliers


def _pose_candidates_from_essential(E: np.ndarray) -> list[np.ndarray]:
    R1, R2, t = cv2.decomposeEssentialMat(E)
    t = t.reshape(3) / max(np.linalg.norm(t), 1e-12)
    return [make_se3(R, s * t) for R in (R1, R2) for s in (1.0, -1.0)]


def _cheirality(cam1_from_cam0: np.ndarray, x0: np.ndarray, x1: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N,) bool: triangulated point finite and in front of both cameras."""
    pts = triangulate(np.eye(4), cam1_from_cam0, x0, x1, K)
    finite = np.all(np.isfinite(pts), axis=1)
    with np.errstate(invalid="ignore"):
        z0 = pts[:, 2]
        z1 = transform_points(cam1_from_cam0, np.where(finite[:, None], pts, 0.0))[:, 2]
        return finite & (z0 > 0) & (z1 > 0)


def recover_pose(E: np.ndarray, x0: np.ndarray, x1: np.ndarray, K: np.ndarray,
                 inliers: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Relative pose from an essential matrix by the cheirality test over the 4 decompositions.

    Returns (cam1_from_cam0 (4, 4) with unit-norm translation, (N,) bool mask of the given
    inliers whose triangulation is in front of both cameras).
    """
    x0, x1 = _check_pair(x0, x1)
    n = x0.shape[0]
    inl = np.ones(n, dtype=bool) if inliers is None else np.asarray(inliers, dtype=bool).reshape(-1)
    if inl.shape[0] != n:
        raise ValueError(f"inliers must be ({n},) bool, got {inl.shape}")
    K = np.asarray(K, dtype=np.float64)
    best, best_mask = None, np.zeros(n, dtype=bool)
    idx = np.flatnonzero(inl)
    for cand in _pose_candidates_from_essential(np.asarray(E, dtype=np.float64)):
        mask = np.zeros(n, dtype=bool)
        mask[idx] = _cheirality(cand, x0[idx], x1[idx], K)
        if best is None or mask.sum() > best_mask.sum():
            best, best_mask = cand, mask
    return best, best_mask


# ---------------------------------------------------------------------------- triangulation
def fundamental_from_poses(cam1_from_cam0: np.ndarray, K0: np.ndarray, K1: Optional[np.ndarray] = None) -> np.ndarray:
    """(3, 3) fundamental matrix F with x1^T F x0 = 0 for undistorted pixel coordinates x0 of
    camera 0 and x1 of camera 1, from the relative pose (4, 4) ``cam1_from_cam0`` and the
    intrinsics K0, K1 (K1 defaults to K0). F = K1^-T [t]x R K0^-1; zero for a pure rotation."""
    K1 = K0 if K1 is None else K1
    E = skew(cam1_from_cam0[:3, 3]) @ cam1_from_cam0[:3, :3]
    return np.linalg.inv(K1).T @ E @ np.linalg.inv(K0)


def triangulate(cam0_from_world: np.ndarray, cam1_from_world: np.ndarray, x0: np.ndarray,
                x1: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation, vectorised over points.

    Solves each 4x4 homogeneous system in normalised coordinates (batched SVD).
    Returns (N, 3) world points; rows are NaN when the solution is at infinity.
    """
    x0, x1 = _check_pair(x0, x1)
    K = np.asarray(K, dtype=np.float64)
    n = x0.shape[0]
    if n == 0:
        return np.zeros((0, 3))
    P0 = np.asarray(cam0_from_world, dtype=np.float64)[:3]
    P1 = np.asarray(cam1_from_world, dtype=np.float64)[:3]
    n0, n1 = _normalize(x0, K), _normalize(x1, K)
    A = np.empty((n, 4, 4))
    A[:, 0] = n0[:, 0:1] * P0[2] - P0[0]
    A[:, 1] = n0[:, 1:2] * P0[2] - P0[1]
    A[:, 2] = n1[:, 0:1] * P1[2] - P1[0]
    A[:, 3] = n1[:, 1:2] * P1[2] - P1[1]
    # row-normalise for conditioning (does not change the null space)
    A /= np.maximum(np.linalg.norm(A, axis=2, keepdims=True), 1e-300)
    _, _, Vt = np.linalg.svd(A)
    X = Vt[:, -1, :]
    w = X[:, 3]
    scale = np.linalg.norm(X[:, :3], axis=1)
    ok = np.abs(w) > 1e-12 * np.maximum(scale, 1e-300)
    out = np.full((n, 3), np.nan)
    out[ok] = X[ok, :3] / w[ok, None]
    return out


def epipolar_segment_mask(x0: np.ndarray, x1: np.ndarray, K: np.ndarray, cam1_from_cam0: np.ndarray,
                          depth_range: tuple[float, float], radius0: np.ndarray | float,
                          radius1: np.ndarray | float) -> np.ndarray:
    """Which keypoint pairs a point at a plausible depth could explain (poses known).

    x0 (N,2), x1 (M,2): undistorted pixels of cameras 0 and 1 (intrinsics K (3,3), both).
    cam1_from_cam0 (4,4): relative pose. depth_range (lo, hi): depths along camera 0's rays, in
    the poses' unit (lo > 0). radius0 (N,) / radius1 (M,) or scalars: pixel tolerances; a pair
    (i, j) is kept when x1_j lies within radius0_i + radius1_j of the image-1 projection of the
    segment of x0_i's ray between the two depths, cut to the part in front of camera 1 (the
    projection of a 3D segment is a segment). Returns (N, M) bool. Rays with no part of the
    segment in front of camera 1 keep nothing.

    Unlike the epipolar line (:func:`fundamental_from_poses`), the segment ends where the depth
    range ends, so a keypoint whose partner would lie outside the scene's depths, or outside the
    other image, is not a candidate."""
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1, 2)
    x1 = np.asarray(x1, dtype=np.float64).reshape(-1, 2)
    n, m = len(x0), len(x1)
    if n == 0 or m == 0:
        return np.zeros((n, m), dtype=bool)
    lo, hi = float(depth_range[0]), float(depth_range[1])
    if not 0.0 < lo < hi:
        raise ValueError(f"depth_range must satisfy 0 < lo < hi, got {depth_range}")
    T = np.asarray(cam1_from_cam0, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    ray = np.c_[_normalize(x0, K), np.ones(n)]  # (N, 3) camera-0 rays at depth 1
    # depth in camera 1 of the ray's point at depth d: z1(d) = c + d * slope; keep z1 >= eps
    c = T[2, 3]
    slope = ray @ T[2, :3]
    eps = 1e-3 * lo
    d_lo = np.full(n, lo)
    d_hi = np.full(n, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = (eps - c) / slope
    d_lo = np.where(slope > 0, np.maximum(d_lo, cross), d_lo)
    d_hi = np.where(slope < 0, np.minimum(d_hi, cross), d_hi)
    empty = (d_hi <= d_lo) | ((slope == 0) & (c < eps))
    d_hi = np.where(empty, d_lo, d_hi)
    ends = []
    for d in (d_lo, d_hi):
        p = (ray * d[:, None]) @ T[:3, :3].T + T[:3, 3]
        ends.append(_project(K, np.where(empty[:, None], np.array([0.0, 0.0, 1.0]), p)))
    a, b = ends
    ab = b - a
    length = np.hypot(ab[:, 0], ab[:, 1])
    r0 = np.broadcast_to(np.asarray(radius0, dtype=np.float64), (n,))
    r1 = np.broadcast_to(np.asarray(radius1, dtype=np.float64), (m,))
    # candidates: within reach of the segment's line (one product), then the exact segment test
    normal = np.c_[-ab[:, 1], ab[:, 0]] / np.maximum(length, 1e-12)[:, None]
    offset = -(normal * a).sum(1)
    line = np.abs((normal.astype(np.float32) @ x1.T.astype(np.float32)) + offset.astype(np.float32)[:, None])
    near = line <= (r0 + r1.max()).astype(np.float32)[:, None]
    near[length < 1e-6] = True  # a segment shrunk to a point (no baseline): no line to test
    near[empty] = False
    i, j = np.nonzero(near)
    d = x1[j] - a[i]
    t = np.clip((d * ab[i]).sum(1) / np.maximum(length[i] ** 2, 1e-12), 0.0, 1.0)
    e = d - t[:, None] * ab[i]
    ok = (e * e).sum(1) <= (r0[i] + r1[j]) ** 2
    keep = np.zeros((n, m), dtype=bool)
    keep[i[ok], j[ok]] = True
    return keep


def parallax_deg(pts_world: np.ndarray, center0: np.ndarray, center1: np.ndarray) -> np.ndarray:
    """(N,) angle in degrees between the rays from the two camera centres (3,) to each point."""
    pts = np.asarray(pts_world, dtype=np.float64)
    r0 = pts - np.asarray(center0, dtype=np.float64).reshape(1, 3)
    r1 = pts - np.asarray(center1, dtype=np.float64).reshape(1, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(r0 * r1, axis=1) / (np.linalg.norm(r0, axis=1) * np.linalg.norm(r1, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def triangulation_mask(pts_world: np.ndarray, cam0_from_world: np.ndarray, cam1_from_world: np.ndarray,
                       x0: np.ndarray, x1: np.ndarray, K: np.ndarray, max_reproj_px: float = 2.0,
                       min_parallax_deg: float = 1.0) -> np.ndarray:
    """(N,) bool: finite point, positive depth in both views, reprojection error < max_reproj_px
    (pixels) in both views and parallax >= min_parallax_deg."""
    pts = np.asarray(pts_world, dtype=np.float64)
    x0, x1 = _check_pair(x0, x1)
    K = np.asarray(K, dtype=np.float64)
    finite = np.all(np.isfinite(pts), axis=1)
    p = np.where(finite[:, None], pts, 0.0)
    c0 = transform_points(cam0_from_world, p)
    c1 = transform_points(cam1_from_world, p)
    ok = finite & (c0[:, 2] > 1e-9) & (c1[:, 2] > 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        e0 = np.linalg.norm(_project(K, c0) - x0, axis=1)
        e1 = np.linalg.norm(_project(K, c1) - x1, axis=1)
        ok &= (e0 < max_reproj_px) & (e1 < max_reproj_px)
    par = parallax_deg(p, camera_center(np.asarray(cam0_from_world, dtype=np.float64)),
                       camera_center(np.asarray(cam1_from_world, dtype=np.float64)))
    return ok & (par >= min_parallax_deg)


# ---------------------------------------------------------------------------- initialiser
@dataclass
class TwoViewResult:
    """Monocular two-view initialisation.

    cam1_from_cam0: (4, 4) relative pose; translation scaled so that the median depth (in cam0)
        of the valid points is 1.0.
    pts_cam0: (N, 3) triangulated points in cam0 (same scale), NaN where not valid.
    valid: (N,) bool, the points that passed depth / reprojection / parallax checks.
    n_inliers: inliers of the chosen model (essential or homography).
    median_parallax_deg: median parallax of the well-triangulated inliers (before the parallax cut).
    model: "essential" or "homography" (which model gave the pose), or "rotation"
        (:func:`rotation_two_view`: no translation, points at depth 1 on the cam0 rays).
    homography_ratio: S_H / (S_H + S_F), ORB-SLAM's score ratio used to select the model.
    """

    cam1_from_cam0: np.ndarray
    pts_cam0: np.ndarray
    valid: np.ndarray
    n_inliers: int
    median_parallax_deg: float
    model: str = "essential"
    homography_ratio: float = 0.0


def _transfer_score(H: np.ndarray, x0: np.ndarray, x1: np.ndarray, sigma: float) -> float:
    """ORB-SLAM's homography score: sum over both transfer directions of max(0, 5.991 - e^2/sigma^2)."""
    th = 5.991
    score = np.zeros(len(x0))
    for A, a, b in ((H, x0, x1), (np.linalg.inv(H), x1, x0)):
        p = np.c_[a, np.ones(len(a))] @ A.T
        with np.errstate(divide="ignore", invalid="ignore"):
            e2 = np.sum((p[:, :2] / p[:, 2:3] - b) ** 2, axis=1) / sigma ** 2
        e2 = np.where(np.isfinite(e2), e2, np.inf)
        score += np.where(e2 < th, th - e2, 0.0)
    return float(score.sum())


def _epipolar_score(F: np.ndarray, x0: np.ndarray, x1: np.ndarray, sigma: float) -> float:
    """ORB-SLAM's fundamental-matrix score: point-to-epipolar-line distance in both images,
    inlier below chi2(1 dof) 3.841, scored as 5.991 - e^2/sigma^2 (the homography's scale)."""
    th, th_score = 3.841, 5.991
    score = np.zeros(len(x0))
    for A, a, b in ((F, x0, x1), (F.T, x1, x0)):
        line = np.c_[a, np.ones(len(a))] @ A.T
        with np.errstate(divide="ignore", invalid="ignore"):
            e2 = (np.sum(line[:, :2] * b, axis=1) + line[:, 2]) ** 2 / np.sum(line[:, :2] ** 2, axis=1) / sigma ** 2
        e2 = np.where(np.isfinite(e2), e2, np.inf)
        score += np.where(e2 < th, th_score - e2, 0.0)
    return float(score.sum())


def _score_candidate(cam1_from_cam0, x0, x1, K, inl, max_reproj_px, min_point_parallax_deg):
    """Triangulate the inliers inl (N,) bool with the candidate pose. Returns (idx (M,) inlier
    indices, pts (M,3) in cam0, good (M,) bool, par (M,) deg, valid (M,) bool).

    good (ORB-SLAM's CheckRT count): reprojection < max_reproj_px in both views and in front of
    both cameras, or with parallax below min_point_parallax_deg (a far point's depth sign is noise);
    valid: good, in front of both cameras and with parallax >= min_point_parallax_deg (the points
    that become map points)."""
    idx = np.flatnonzero(inl)
    pts = triangulate(np.eye(4), cam1_from_cam0, x0[idx], x1[idx], K)
    finite = np.all(np.isfinite(pts), axis=1)
    p = np.where(finite[:, None], pts, 0.0)
    c1 = transform_points(cam1_from_cam0, p)
    par = parallax_deg(p, np.zeros(3), camera_center(cam1_from_cam0))
    front = finite & (p[:, 2] > 0) & (c1[:, 2] > 0)
    low = finite & (par < min_point_parallax_deg)
    with np.errstate(invalid="ignore", divide="ignore"):  # a point behind projects like its mirror image
        e0 = np.linalg.norm(_project(K, p) - x0[idx], axis=1)
        e1 = np.linalg.norm(_project(K, c1) - x1[idx], axis=1)
    reproj = finite & (e0 < max_reproj_px) & (e1 < max_reproj_px)
    good = reproj & (front | low)
    valid = reproj & front & (par >= min_point_parallax_deg)
    return idx, pts, good, par, valid


def initialize_two_view(x0: np.ndarray, x1: np.ndarray, K: np.ndarray, threshold_px: float = 1.0,
                        min_inliers: int = 50, min_parallax_deg: float = 1.0, min_valid: int = 50,
                        min_point_parallax_deg: float = 0.36, parallax_rank: int = 50,
                        homography_ratio_threshold: float = 0.45, max_ambiguity: float = 0.75,
                        min_good_fraction: float = 0.9, max_rotation_only_fraction: float = 0.9,
                        confidence: float = 0.999) -> tuple[Optional[TwoViewResult], str]:
    """Monocular map initialisation from two views (ORB-SLAM's model selection and checks).

    x0, x1: (N, 2) matched undistorted pixels; K (3, 3).

    Steps
    1. Essential matrix (MAGSAC, ``threshold_px``) and homography (same threshold) in parallel.
    2. Model selection by ORB-SLAM's score ratio ``R_H = S_H / (S_H + S_F)`` (symmetric
       transfer error of H, symmetric epipolar distance of F = K^-T E K^-1, both scored with
       chi-square cut-offs at sigma = ``threshold_px``). ``R_H > homography_ratio_threshold``:
       planar scene or rotation-dominant motion, the pose candidates come from decomposing H
       (up to 4), else from E (4).
    3. Every candidate is triangulated on its model's inliers. A point is good when it
       reprojects within 2*threshold_px in both views and lies in front of both cameras (or has
       parallax below ``min_point_parallax_deg``: a far point's depth sign is noise); it becomes
       a map point (valid) when it is in front and has at least that parallax. The candidate with
       most valid points wins (low-parallax points fit every candidate); rejected as ambiguous
       when another has > ``max_ambiguity`` of its valid points, or when fewer than
       ``min_good_fraction`` of the model's inliers are good.
    4. Parallax (ORB-SLAM): the ``parallax_rank``-th largest parallax of the valid points (the
       smallest when there are fewer) must reach ``min_parallax_deg``. Forward motion keeps most
       points near the epipole at low parallax; this asks only for enough well-triangulated ones.
    5. Degeneracy test: if the infinite homography ``K R K^-1`` of the chosen rotation alone
       explains more than ``max_rotation_only_fraction`` of the inliers within 2*threshold_px, the
       baseline is not observable (pure rotation / too distant scene) -> rejected.
    6. At least ``min_valid`` valid points. Scale: translation and points scaled so that the
       median cam0 depth of the valid points is 1.0.

    Returns (TwoViewResult or None, reason). ``reason`` is "ok" on success, otherwise a short
    human-readable explanation of the rejection.
    """
    x0, x1 = _check_pair(x0, x1)
    K = np.asarray(K, dtype=np.float64)
    n = x0.shape[0]
    if n < max(min_inliers, 8):
        return None, f"too few matches ({n} < {max(min_inliers, 8)})"
    E, inl_E = estimate_essential(x0, x1, K, threshold_px=threshold_px, confidence=confidence)
    n_E = int(inl_E.sum())
    try:
        H, mask_H = cv2.findHomography(x0, x1, _RANSAC_METHOD, threshold_px, confidence=confidence)
    except cv2.error:
        H, mask_H = cv2.findHomography(x0, x1, cv2.RANSAC, threshold_px, confidence=confidence)
    if H is not None and (H.shape != (3, 3) or not np.all(np.isfinite(H)) or abs(np.linalg.det(H)) < 1e-12):
        H = None
    inl_H = mask_H.reshape(-1).astype(bool) if (H is not None and mask_H is not None) else np.zeros(n, bool)
    n_H = int(inl_H.sum()) if H is not None else 0
    if E is None and H is None:
        return None, "neither essential matrix nor homography could be estimated"
    Kinv = np.linalg.inv(K)
    s_H = _transfer_score(H, x0, x1, threshold_px) if H is not None else 0.0
    s_F = _epipolar_score(Kinv.T @ E @ Kinv, x0, x1, threshold_px) if E is not None else 0.0
    ratio = s_H / max(s_H + s_F, 1e-12)
    use_h = E is None or ratio > homography_ratio_threshold
    max_reproj = 2.0 * threshold_px

    if use_h:
        model, inl = "homography", inl_H
        if n_H < min_inliers:
            return None, f"too few homography inliers ({n_H} < {min_inliers})"
        _, Rs, ts, _ = cv2.decomposeHomographyMat(Kinv @ H @ K, np.eye(3))
        cands = [make_se3(R, np.asarray(t).reshape(3)) for R, t in zip(Rs, ts)]
    else:
        model, inl = "essential", inl_E
        if n_E < min_inliers:
            return None, f"too few essential-matrix inliers ({n_E} < {min_inliers})"
        cands = _pose_candidates_from_essential(E)

    scored = []
    for cand in cands:
        tn = np.linalg.norm(cand[:3, 3])
        if tn < 1e-9:  # homography decomposition with no translation: pure rotation
            scored.append((0, cand, None))
            continue
        cand = cand.copy()
        cand[:3, 3] /= tn
        res = _score_candidate(cand, x0, x1, K, inl, max_reproj, min_point_parallax_deg)
        scored.append((int(res[4].sum()), cand, res))
    scored.sort(key=lambda s: -s[0])
    n_best, best, res = scored[0]
    if res is None or n_best == 0:
        return None, f"no {model} pose candidate triangulates points in front of both cameras"
    n_inl, n_good = int(inl.sum()), int(res[2].sum())
    if n_good < min_good_fraction * n_inl:
        return None, f"too few good points for the {model} pose ({n_good} of {n_inl} inliers)"
    if len(scored) > 1 and scored[1][0] > max_ambiguity * n_best:
        return None, f"ambiguous {model} decomposition ({scored[1][0]} vs {n_best} triangulated points)"

    idx, pts, good, par, valid_sub = res
    n_valid = int(valid_sub.sum())
    if n_valid < min_valid:
        return None, f"too few triangulated points ({n_valid} < {min_valid})"
    par_sorted = np.sort(par[valid_sub])[::-1]
    ranked_par = float(par_sorted[min(parallax_rank, n_valid) - 1])
    if ranked_par < min_parallax_deg:
        return None, (f"parallax too low (point {min(parallax_rank, n_valid)} by parallax has {ranked_par:.2f} < "
                      f"{min_parallax_deg:.2f} deg)")

    # rotation-only degeneracy test on the model inliers
    H_inf = K @ best[:3, :3] @ Kinv
    xh = np.c_[x0[idx], np.ones(idx.size)] @ H_inf.T
    with np.errstate(divide="ignore", invalid="ignore"):
        rot_err = np.linalg.norm(xh[:, :2] / xh[:, 2:3] - x1[idx], axis=1)
    rot_frac = float(np.mean(rot_err < max_reproj)) if idx.size else 1.0
    if rot_frac > max_rotation_only_fraction:
        return None, (f"motion explained by pure rotation ({100 * rot_frac:.0f}% of inliers within "
                      f"{max_reproj:.1f} px of K R K^-1): no baseline")

    med_par = float(np.median(par[good])) if good.any() else 0.0
    med_depth = float(np.median(pts[valid_sub, 2]))
    if not np.isfinite(med_depth) or med_depth <= 0:
        return None, "degenerate scene depth"
    s = 1.0 / med_depth
    cam1_from_cam0 = best.copy()
    cam1_from_cam0[:3, 3] *= s
    pts_cam0 = np.full((n, 3), np.nan)
    valid = np.zeros(n, dtype=bool)
    sel = idx[valid_sub]
    pts_cam0[sel] = pts[valid_sub] * s
    valid[sel] = True
    return TwoViewResult(cam1_from_cam0=cam1_from_cam0, pts_cam0=pts_cam0, valid=valid,
                         n_inliers=n_inl, median_parallax_deg=med_par, model=model,
                         homography_ratio=float(ratio)), "ok"


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R (3,3) minimising sum |b_i - R a_i|^2 for unit vectors a, b (N,3)."""
    U, _, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def rotation_two_view(x0: np.ndarray, x1: np.ndarray, K: np.ndarray, threshold_px: float = 3.0,
                      min_inliers: int = 50, min_share: float = 0.5, iterations: int = 200,
                      seed: int = 0) -> Optional[TwoViewResult]:
    """A two-view start for a camera that only turned: the rotation that maps the rays of x0
    onto those of x1 (2-point RANSAC, Kabsch on the inliers), no translation, and each inlier's
    point on its cam0 ray at depth 1 (the monocular scale is arbitrary; with no baseline, depth
    is unobservable and 1 is a prior that later triangulation and bundle adjustment correct).

    x0, x1: (N,2) float64 matched undistorted pixels; K: (3,3). An inlier transfers through
    K R K^-1 to within threshold_px. Returns a TwoViewResult with model "rotation" and
    median_parallax_deg 0, or None with fewer than min_inliers inliers or fewer than min_share
    of the matches. A turn on the spot or a still camera leaves most matches on the rotation
    (synthetic/fast 69 %, fast_blur 72 %, ORB on fast 93 %, the still EuRoC excerpt 97 %);
    forward motion, whose slow start also lacks parallax, leaves only the points near the focus
    of expansion (19 % in tests/test_robust_tracking.py's forward scene at frame 10)."""
    x0, x1 = _check_pair(x0, x1)
    n = len(x0)
    if n < max(min_inliers, 2):
        return None
    r0 = _normalize(x0, K)
    r1 = _normalize(x1, K)
    r0 = np.c_[r0, np.ones(n)]
    r1 = np.c_[r1, np.ones(n)]
    u0 = r0 / np.linalg.norm(r0, axis=1, keepdims=True)
    u1 = r1 / np.linalg.norm(r1, axis=1, keepdims=True)

    def inliers(R: np.ndarray) -> np.ndarray:
        p = r0 @ R.T
        ok = p[:, 2] > 1e-6
        uv = _project(K, np.where(ok[:, None], p, 1.0))
        return ok & (np.linalg.norm(uv - x1, axis=1) < threshold_px)

    rng = np.random.default_rng(seed)
    best = np.zeros(n, dtype=bool)
    for _ in range(iterations):
        i, j = rng.choice(n, 2, replace=False)
        inl = inliers(_kabsch(u0[[i, j]], u1[[i, j]]))
        if inl.sum() > best.sum():
            best = inl
    if best.sum() < max(min_inliers, 2):
        return None
    R = _kabsch(u0[best], u1[best])
    valid = inliers(R)
    if valid.sum() < max(min_inliers, min_share * n):
        return None
    cam1_from_cam0 = np.eye(4)
    cam1_from_cam0[:3, :3] = R
    pts = np.full((n, 3), np.nan)
    pts[valid] = r0[valid]  # z = 1
    return TwoViewResult(cam1_from_cam0=cam1_from_cam0, pts_cam0=pts, valid=valid, n_inliers=int(valid.sum()),
                         median_parallax_deg=0.0, model="rotation", homography_ratio=float("nan"))
