"""Stereo matching of a rectified pair: per left keypoint, its right-image u and its depth.

After rectification a point seen at left pixel (u, v) is seen at right pixel (u - d, v), with
disparity d = bf / Z (``bf`` = fx * baseline, px * m; Z metres). :class:`StereoMatcher`:

1. candidates: right keypoints within the epipolar band ``|v_l - v_r| <= band_px * scale^octave``
   (octave of the right keypoint, as ORB-SLAM2 registers right keypoints on the rows they may
   cover), with a disparity in ``[min_disparity_px, fx]`` (depth at least one baseline) and, for
   ORB, an octave within one level;
2. the best candidate by descriptor distance (Hamming bits for ORB, L2 for learned
   descriptors) under ``max_desc_dist_*`` and the best/second-best ``ratio``; one left keypoint
   per right keypoint (the closest descriptor keeps it). With ``method: matcher`` the configured
   matcher proposes the pairs instead and only the band and disparity checks apply;
3. sub-pixel refinement (``subpixel``): SAD block matching of (2w+1)^2 mean-free patches of the
   keypoint's pyramid level along the row, +- ``search_px``, and a parabola through the three SAD
   values around the minimum (the patch sits on the rounded keypoint pixel; the keypoint's own
   sub-pixel offset is carried to the right u); minima at the end of the search range or parabola offsets over a
   pixel are rejected, as are SADs above ``sad_outlier_factor`` x their median.

Depth is ``bf / disparity``. A keypoint is "close" when its depth is below
``close_baselines`` x baseline (ORB-SLAM2's ThDepth, 40 baselines); far keypoints keep their
depth for the 3-row edges but do not make new map points beyond the nearest ones
(slam.tracking.keyframes). Light enough for a feature process: numpy and OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from slam.features.base import to_gray
from slam.tracking.config import StereoConfig
from slam.types import Features

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

__all__ = ["StereoMatch", "StereoMatcher"]


@dataclass
class StereoMatch:
    """Stereo result for the N left keypoints.

    right_index: (N,) int64 index of the matched right keypoint, -1 = none.
    u_right:     (N,) float64 right-image u (px, rectified, sub-pixel), NaN = none.
    depth:       (N,) float64 metres = bf / (u_left - u_right), 0 = none.
    """

    right_index: np.ndarray
    u_right: np.ndarray
    depth: np.ndarray

    def __len__(self) -> int:
        return int((self.right_index >= 0).sum())


def _octaves(feats: Features) -> np.ndarray:
    oct_ = feats.extra.get("octave")
    if oct_ is None:
        return np.zeros(len(feats), dtype=np.int64)
    return np.asarray(oct_.detach().cpu().numpy(), dtype=np.int64)


def _band_pairs(vl: np.ndarray, vr: np.ndarray, radius_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (left, right) index pairs with |vl - vr| <= radius_r (radius of the right keypoint).
    vl (N,), vr (M,), radius_r (M,) px -> (P,), (P,) int64."""
    if len(vl) == 0 or len(vr) == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e
    order = np.argsort(vr, kind="stable")
    vs = vr[order]
    rmax = float(radius_r.max())
    lo = np.searchsorted(vs, vl - rmax, side="left")
    hi = np.searchsorted(vs, vl + rmax, side="right")
    counts = hi - lo
    li = np.repeat(np.arange(len(vl), dtype=np.int64), counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    ri = order[np.arange(len(li), dtype=np.int64) + starts]
    keep = np.abs(vl[li] - vr[ri]) <= radius_r[ri]
    return li[keep], ri[keep]


def _pair_distance(desc_l: np.ndarray, desc_r: np.ndarray, li: np.ndarray, ri: np.ndarray) -> np.ndarray:
    """(P,) float32 descriptor distance of pairs: Hamming bits (uint8) or L2 (float)."""
    if len(li) == 0:
        return np.zeros(0, dtype=np.float32)
    if desc_l.dtype == np.uint8:
        return _POPCOUNT[np.bitwise_xor(desc_l[li], desc_r[ri])].sum(axis=1, dtype=np.int32).astype(np.float32)
    diff = desc_l[li].astype(np.float32) - desc_r[ri].astype(np.float32)
    return np.sqrt(np.einsum("pd,pd->p", diff, diff)).astype(np.float32)


class StereoMatcher:
    """match(left, right, image_left, image_right) -> StereoMatch, for a rectified pair.

    bf:           fx * baseline of the rectified rig (px * m).
    fx:           focal length (px); the largest disparity searched (a point one baseline away).
    scale_factor: pyramid scale between the extractor's octaves (ORB), 1 for single-scale features.
    matcher:      the configured keypoint matcher, used with ``cfg.method == "matcher"``.
    """

    def __init__(self, cfg: StereoConfig, bf: float, fx: float, scale_factor: float = 1.2, matcher=None) -> None:
        if bf <= 0 or fx <= 0:
            raise ValueError(f"stereo matching needs bf > 0 and fx > 0, got bf={bf}, fx={fx}")
        if cfg.method == "matcher" and matcher is None:
            raise ValueError("stereo.method=matcher needs a matcher")
        self.cfg = cfg
        self.bf = float(bf)
        self.max_disparity = float(fx)
        self.scale_factor = float(scale_factor)
        self.matcher = matcher

    # ------------------------------------------------------------------ candidates
    def _search(self, left: Features, right: Features, ol: np.ndarray, or_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) right index per left keypoint (-1 none), (N,) float64 matched right u."""
        c = self.cfg
        kl, kr = left.keypoints_np, right.keypoints_np
        n = len(kl)
        out = np.full(n, -1, dtype=np.int64)
        binary = left.binary
        radius = c.band_px * self.scale_factor ** or_.astype(np.float64)
        if c.method == "matcher":
            pairs = self.matcher.match(left, right).pairs()
            li, ri = pairs[:, 0], pairs[:, 1]
            ok = np.abs(kl[li, 1] - kr[ri, 1]) <= radius[ri]
            li, ri = li[ok], ri[ok]
        else:
            li, ri = _band_pairs(kl[:, 1], kr[:, 1], radius)
            if binary:
                ok = np.abs(ol[li] - or_[ri]) <= 1
                li, ri = li[ok], ri[ok]
        disp = kl[li, 0] - kr[ri, 0]
        ok = (disp >= 0.0) & (disp <= self.max_disparity)  # the final check follows the refinement
        li, ri = li[ok], ri[ok]
        if c.method == "matcher":
            out[li] = ri
            return out, kr[np.maximum(out, 0), 0]
        desc_l = left.descriptors.detach().cpu().numpy()
        desc_r = right.descriptors.detach().cpu().numpy()
        dist = _pair_distance(desc_l, desc_r, li, ri)
        if len(li) == 0:
            return out, np.zeros(n)
        order = np.lexsort((dist, li))
        li, ri, dist = li[order], ri[order], dist[order]
        first = np.ones(len(li), dtype=bool)
        first[1:] = li[1:] != li[:-1]
        fi = np.nonzero(first)[0]
        best_l, best_r, best_d = li[fi], ri[fi], dist[fi]
        has_second = np.zeros(len(fi), dtype=bool)
        second_d = np.full(len(fi), np.inf, dtype=np.float32)
        nxt = fi + 1
        valid = nxt < len(li)
        valid[valid] = li[nxt[valid]] == best_l[valid]
        has_second[valid] = True
        second_d[valid] = dist[nxt[valid]]
        max_d = c.max_desc_dist_binary if binary else c.max_desc_dist_float
        ok = (best_d <= max_d) & (~has_second | (best_d < c.ratio * second_d) | (c.ratio >= 1.0))
        best_l, best_r, best_d = best_l[ok], best_r[ok], best_d[ok]
        # one left keypoint per right keypoint: the closest descriptor keeps it
        order = np.lexsort((best_d, best_r))
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = best_r[order][1:] != best_r[order][:-1]
        sel = order[keep]
        out[best_l[sel]] = best_r[sel]
        return out, kr[np.maximum(out, 0), 0]

    # ------------------------------------------------------------------ sub-pixel refinement
    def _pyramid(self, gray: np.ndarray, levels: int) -> list[np.ndarray]:
        """(H, W) uint8 -> the extractor's pyramid, ``levels`` (H_l, W_l) uint8 images."""
        pyr = [gray]
        h, w = gray.shape
        for lev in range(1, levels):  # each level from the one above, as ORB pyramids are built
            s = self.scale_factor ** lev
            size = (max(int(round(w / s)), 1), max(int(round(h / s)), 1))
            pyr.append(cv2.resize(pyr[-1], size, interpolation=cv2.INTER_LINEAR))
        return pyr

    def _refine(self, kl: np.ndarray, ol: np.ndarray, idx: np.ndarray, u_r: np.ndarray, img_l: np.ndarray,
                img_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAD refinement of the matched left keypoints idx (K,) -> (K,) refined right u (px)
        and (K,) bool kept."""
        c = self.cfg
        w, L = c.window, c.search_px
        side = 2 * w + 1
        k = len(idx)
        u_out = np.full(k, np.nan)
        sad_best = np.full(k, np.inf)
        if k == 0:
            return u_out, np.zeros(0, dtype=bool)
        levels = int(ol[idx].max()) + 1
        pyr_l = self._pyramid(to_gray(img_l), levels)
        pyr_r = self._pyramid(to_gray(img_r), levels)
        dy = np.arange(-w, w + 1)
        dx_strip = np.arange(-w - L, w + L + 1)
        for lev in range(levels):
            sel = np.nonzero(ol[idx] == lev)[0]
            if len(sel) == 0:
                continue
            s = self.scale_factor ** lev
            il, ir = pyr_l[lev], pyr_r[lev]
            h, wd = il.shape
            cx = np.rint(kl[idx[sel], 0] / s).astype(np.int64)
            cy = np.rint(kl[idx[sel], 1] / s).astype(np.int64)
            rx = np.rint(u_r[sel] / s).astype(np.int64)
            inside = ((cy - w >= 0) & (cy + w < h) & (cx - w >= 0) & (cx + w < wd)
                      & (rx - w - L >= 0) & (rx + w + L < wd))
            sel, cx, cy, rx = sel[inside], cx[inside], cy[inside], rx[inside]
            if len(sel) == 0:
                continue
            rows = (cy[:, None] + dy[None, :])[:, :, None]  # (K, 2w+1, 1)
            pl = il[rows, (cx[:, None] + dy[None, :])[:, None, :]].astype(np.float32)  # (K, 2w+1, 2w+1)
            pl -= pl.mean(axis=(1, 2), keepdims=True)
            strip = ir[rows, (rx[:, None] + dx_strip[None, :])[:, None, :]].astype(np.float32)  # (K, 2w+1, 2w+1+2L)
            sads = np.empty((len(sel), 2 * L + 1), dtype=np.float32)
            for j in range(2 * L + 1):  # SAD of the mean-free patches at each shift
                d = strip[:, :, j:j + side] - pl
                d -= d.mean(axis=(1, 2), keepdims=True)
                sads[:, j] = np.abs(d).sum(axis=(1, 2))
            best = np.argmin(sads, axis=1)
            interior = (best > 0) & (best < 2 * L)
            b = np.clip(best, 1, 2 * L - 1)
            r = np.arange(len(sel))
            d1, d2, d3 = sads[r, b - 1].astype(np.float64), sads[r, b].astype(np.float64), sads[r, b + 1].astype(np.float64)
            denom = 2.0 * (d1 + d3 - 2.0 * d2)
            with np.errstate(divide="ignore", invalid="ignore"):
                delta = np.where(denom > 0, (d1 - d3) / np.where(denom > 0, denom, 1.0), np.inf)
            ok = interior & (np.abs(delta) < 1.0)
            # the patch is centred on the rounded left pixel cx; the disparity found holds at cx, so
            # the right u of the keypoint itself is shifted by the keypoint's sub-pixel offset
            # (learned keypoints are sub-pixel; without the shift their disparity is off by up to 0.5 px)
            offset = kl[idx[sel[ok]], 0] - cx[ok] * s
            u_out[sel[ok]] = (rx[ok] + (b[ok] - L) + delta[ok]) * s + offset
            sad_best[sel[ok]] = d2[ok]
        kept = np.isfinite(u_out)
        if kept.any():
            med = float(np.median(sad_best[kept]))
            kept &= sad_best <= c.sad_outlier_factor * max(med, 1e-6)
        return u_out, kept

    # ------------------------------------------------------------------ entry point
    def match(self, left: Features, right: Features, image_left: Optional[np.ndarray] = None,
              image_right: Optional[np.ndarray] = None) -> StereoMatch:
        """left, right: Features of the rectified left and right images (keypoints in rectified
        pixels). image_left/right: (H, W[, 3]) uint8, needed for the sub-pixel refinement."""
        c = self.cfg
        n = len(left)
        ol, or_ = _octaves(left), _octaves(right)
        right_idx, u_r = self._search(left, right, ol, or_)
        idx = np.nonzero(right_idx >= 0)[0]
        u_r = u_r[idx]
        kl = left.keypoints_np
        if c.subpixel and image_left is not None and image_right is not None:
            u_ref, kept = self._refine(kl, ol, idx, u_r, image_left, image_right)
            idx, u_r = idx[kept], u_ref[kept]
        disp = kl[idx, 0] - u_r
        ok = (disp >= c.min_disparity_px) & (disp <= self.max_disparity)
        idx, u_r, disp = idx[ok], u_r[ok], disp[ok]
        out_idx = np.full(n, -1, dtype=np.int64)
        out_idx[idx] = right_idx[idx]
        u_right = np.full(n, np.nan)
        u_right[idx] = u_r
        depth = np.zeros(n)
        depth[idx] = self.bf / disp
        return StereoMatch(out_idx, u_right, depth)
