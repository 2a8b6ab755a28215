"""Ground-truth assignments for SuperGlue training (Sarlin et al. 2020, Sec. 4 / appendix).

Keypoints of image 0 are projected into image 1 with the exact geometry (a homography, or
depth + relative pose + camera for RGB-D pairs) and vice versa. Labels per keypoint:

* ``j >= 0`` - matched with keypoint j of the other image: mutual nearest neighbours under the
  symmetric reprojection error ``e_ij = max(|P01(x_i) - y_j|, |P10(y_j) - x_i|)`` with
  ``e_ij < pos_th`` (px);
* ``-1`` (UNMATCHED, dustbin) - the point has no correspondence: it projects outside the other
  image, is occluded there (its depth disagrees with the other depth map), or its reprojection
  lands farther than ``neg_th`` px from every keypoint;
* ``-2`` (IGNORE) - ambiguous (reprojection between pos_th and neg_th of a keypoint, or unknown
  depth); no loss term.

Pixel convention: (x, y), the centre of the top-left pixel is (0, 0).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from slam.training.homographies import warp_points
from slam.training.losses import IGNORE, UNMATCHED

__all__ = ["assign_from_projections", "gt_from_homography", "gt_from_depth", "project_with_depth"]


def assign_from_projections(kpts0: np.ndarray, kpts1: np.ndarray, proj0: np.ndarray, ok0: np.ndarray,
                            proj1: np.ndarray, ok1: np.ndarray, unknown0: Optional[np.ndarray] = None,
                            unknown1: Optional[np.ndarray] = None, pos_th: float = 3.0,
                            neg_th: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels from projections.

    kpts0 (N, 2), kpts1 (M, 2) px; proj0 (N, 2) = kpts0 projected into image 1, ok0 (N,) bool =
    the projection is valid (in front, inside image 1, not occluded); proj1 / ok1 likewise for
    image 1 -> image 0; unknown0/1 (N,)/(M,) bool: geometry unknown (e.g. no depth) -> IGNORE.
    Returns gt0 (N,) int64, gt1 (M,) int64 with j / -1 / -2 (see module doc); gt0 and gt1 agree
    on matches (gt1[gt0[i]] == i).
    """
    kpts0 = np.asarray(kpts0, np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, np.float64).reshape(-1, 2)
    n, m = len(kpts0), len(kpts1)
    unknown0 = np.zeros(n, bool) if unknown0 is None else np.asarray(unknown0, bool)
    unknown1 = np.zeros(m, bool) if unknown1 is None else np.asarray(unknown1, bool)
    ok0 = np.asarray(ok0, bool) & ~unknown0 & np.isfinite(proj0).all(1)
    ok1 = np.asarray(ok1, bool) & ~unknown1 & np.isfinite(proj1).all(1)
    gt0 = np.full(n, IGNORE, np.int64)
    gt1 = np.full(m, IGNORE, np.int64)
    gt0[~ok0 & ~unknown0] = UNMATCHED
    gt1[~ok1 & ~unknown1] = UNMATCHED
    if n == 0 or m == 0:
        gt0[ok0] = UNMATCHED
        gt1[ok1] = UNMATCHED
        return gt0, gt1
    p0 = np.where(ok0[:, None], proj0, 0.0)
    p1 = np.where(ok1[:, None], proj1, 0.0)
    d01 = np.linalg.norm(p0[:, None, :] - kpts1[None], axis=2)  # (N, M): in image 1
    d10 = np.linalg.norm(kpts0[:, None, :] - p1[None], axis=2)  # (N, M): in image 0
    d01[~ok0] = np.inf
    d10[:, ~ok1] = np.inf
    err = np.maximum(d01, d10)  # symmetric reprojection error (inf if either side invalid)
    best1 = err.argmin(1)  # for each i
    best0 = err.argmin(0)  # for each j
    i_idx = np.arange(n)
    mutual = best0[best1] == i_idx
    good = mutual & (err[i_idx, best1] < pos_th)
    gt0[good] = best1[good]
    gt1[best1[good]] = i_idx[good]
    # unmatched: valid projection landing far from every keypoint
    far0 = ok0 & ~good & (d01.min(1) > neg_th)
    d10_for_j = d10.min(0)
    good1 = np.zeros(m, bool)
    good1[best1[good]] = True
    far1 = ok1 & ~good1 & (d10_for_j > neg_th)
    gt0[far0] = UNMATCHED
    gt1[far1] = UNMATCHED
    return gt0, gt1


def gt_from_homography(kpts0: np.ndarray, kpts1: np.ndarray, h1_from_0: np.ndarray, size0: tuple[int, int],
                       size1: tuple[int, int], pos_th: float = 3.0, neg_th: float = 5.0,
                       valid1: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels for a homography pair. size0/size1: (width, height) px. A point is 'outside' when
    its projection falls outside the other image (or, with ``valid1`` (H1, W1) bool, on an image-1
    pixel that has no source in image 0)."""
    hom = np.asarray(h1_from_0, np.float64)
    proj0 = warp_points(kpts0, hom)
    proj1 = warp_points(kpts1, np.linalg.inv(hom))

    def inside(p, size):
        w, h = size
        f = np.isfinite(p).all(1)
        q = np.where(f[:, None], p, -1.0)
        return f & (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1)

    ok0 = inside(proj0, size1)
    ok1 = inside(proj1, size0)
    if valid1 is not None:
        ij = np.round(np.where(ok0[:, None], proj0, 0)).astype(int)
        ok0 &= valid1[np.clip(ij[:, 1], 0, valid1.shape[0] - 1), np.clip(ij[:, 0], 0, valid1.shape[1] - 1)]
        kk = np.round(np.asarray(kpts1)).astype(int).reshape(-1, 2)
        ok1 &= valid1[np.clip(kk[:, 1], 0, valid1.shape[0] - 1), np.clip(kk[:, 0], 0, valid1.shape[1] - 1)]
    return assign_from_projections(kpts0, kpts1, proj0, ok0, proj1, ok1, pos_th=pos_th, neg_th=neg_th)


def project_with_depth(kpts: np.ndarray, depth_src: np.ndarray, depth_dst: np.ndarray, camera,
                       dst_from_src: np.ndarray, occlusion_tol: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project keypoints of the source image into the destination image with exact depth.

    kpts (N, 2) distorted px; depth_* (H, W) float32 metres (0 = unknown); camera: PinholeCamera or
    dict; dst_from_src (4, 4). Returns (proj (N, 2) float64 px, ok (N,) bool: in front, inside
    and not occluded, unknown (N,) bool: no depth at the keypoint)."""
    from slam.geometry.depth_warp import warp_points as warp_depth

    kp = np.asarray(kpts, np.float64).reshape(-1, 2)
    h, w = depth_src.shape
    ij = np.clip(np.round(kp).astype(int), 0, [w - 1, h - 1])
    unknown = depth_src[ij[:, 1], ij[:, 0]] <= 0
    proj, ok = warp_depth(kp, depth_src, camera, dst_from_src, depth_dst, occlusion_tol)
    return proj, ok & ~unknown, unknown


def gt_from_depth(kpts0: np.ndarray, kpts1: np.ndarray, depth0: np.ndarray, depth1: np.ndarray, camera,
                  cam1_from_cam0: np.ndarray, pos_th: float = 3.0, neg_th: float = 5.0,
                  occlusion_tol: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Labels for an RGB-D pair with exact depth and poses: occluded points and points projecting
    outside the other image go to the dustbin; points without depth are ignored."""
    t10 = np.asarray(cam1_from_cam0, np.float64)
    proj0, ok0, unk0 = project_with_depth(kpts0, depth0, depth1, camera, t10, occlusion_tol)
    proj1, ok1, unk1 = project_with_depth(kpts1, depth1, depth0, camera, np.linalg.inv(t10), occlusion_tol)
    return assign_from_projections(kpts0, kpts1, proj0, ok0, proj1, ok1, unk0, unk1, pos_th, neg_th)
