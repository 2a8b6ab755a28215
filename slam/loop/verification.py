"""Geometric verification of a loop candidate (ORB-SLAM's ``ComputeSim3``).

1. Match the current keyframe's keypoints that hold map points with the candidate's, with the
   configured matcher (descriptor matchers through their descriptors, learned matchers on the
   two keyframes' features), or (``loop_closing.matcher=loftr``) with LoFTR on the two keyframes'
   images, snapped to those keypoints (:meth:`slam.tracking.dense_match.DenseMatching.keyframe_pairs`);
2. RANSAC on the 3D-3D correspondences: Sim(3) for monocular maps, SE(3) (scale 1) for RGB-D
   and stereo (:func:`slam.geometry.sim3.solve_sim3_ransac`);
3. refine with g2o (:func:`slam.optim.sim3.optimize_sim3`: ``EdgeSim3ProjectXYZ`` and its
   inverse, Huber kernel);
4. project the map points of the candidate and its covisible neighbours into the current
   keyframe with the refined transform;
5. refine again on every projected match with a 3D point on both sides (ORB-SLAM3's second
   ``OptimizeSim3``), project again with the result, and accept when both the inliers of this
   refinement and the matches found by projection are enough;
6. (``loop_closing.structure_refinement``; ``auto``: monocular maps) refine the current
   keyframe's pose once more in a bundle adjustment that welds the two sides by the verified
   matches: the current keyframe and its ``refine_keyframes`` covisible keyframes free, with
   their points; the matched loop points free; the loop neighbourhood's keyframes that observe
   them fixed (:meth:`LoopVerifier._refine_with_structure`). Steps 3-5 hold the points where each
   map put them; an old monocular map's points carry the depth error of its short baselines, and
   seen again from a metre away that error moves the loop's pose by centimetres. The Sim(3)'s
   scale is kept.

The inlier tests scale with the keypoint's octave (chi2 x sigma^2) but never exceed
``loop_closing.inlier_max_px`` pixels, so a loop cannot pass on loosely fitted coarse-octave points.

Reads the map: the caller holds ``map.lock`` (a keypoint matcher runs under it too: loop
verification is rare). LoFTR's image matches are computed before, without the lock
(:meth:`LoopVerifier.image_pairs` under the lock, then :meth:`LoopVerifier.dense_match`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from slam.geometry.se3 import rotation_angle_deg, se3_inverse, transform_points
from slam.geometry.sim3 import make_sim3, project_points, se3_from_sim3, sim3_decompose, sim3_inverse, solve_sim3_ransac
from slam.loop.config import LoopClosingConfig
from slam.mapping.map import Map
from slam.matching.guided import search_by_projection
from slam.optim.ba import BAProblem
from slam.optim.ba_schur import bundle_adjust_schur
from slam.optim.sim3 import CHI2_SIM3, optimize_sim3


@dataclass
class LoopMatch:
    """An accepted loop.

    cur_kf / loop_kf: keyframe ids. cur_from_loop: (4, 4) float64 Sim(3) (scale 1 in RGB-D)
    mapping points in the loop keyframe's camera frame into the current keyframe's camera frame,
    in the current keyframe's map units. cur_kp / loop_pt: (M,) int64 current keypoints and the
    loop-side map points found at them (the matches to fuse). n_ransac / n_refined / n_projected /
    n_final: inliers at each step (n_final: of the second refinement on the projected matches).
    n_structure: the current keyframe's inlier matches in step 6 (0: not run or not kept);
    structure_change: what step 6 changed, (rotation in degrees, translation change in the loop
    side's map units, the translation's length before it in the same units).
    """

    cur_kf: int
    loop_kf: int
    cur_from_loop: np.ndarray
    cur_kp: np.ndarray
    loop_pt: np.ndarray
    n_ransac: int
    n_refined: int
    n_projected: int
    n_final: int = 0
    n_structure: int = 0
    structure_change: tuple = (0.0, 0.0, 0.0)


def _nn_pairs(d0: np.ndarray, d1: np.ndarray, max_dist: float, ratio: float = 0.8) -> np.ndarray:
    """Mutual nearest neighbours of (N0, D) and (N1, D) descriptors (uint8 packed bits: Hamming;
    float: L2) within max_dist and passing the ratio test (the NN matcher's rule, numpy):
    (M, 2) int64 index pairs."""
    if d0.dtype == np.uint8:
        if d0.shape[1] % 8 == 0:  # 64-bit words: 8x fewer XORs and popcounts
            d0, d1 = np.ascontiguousarray(d0).view(np.uint64), np.ascontiguousarray(d1).view(np.uint64)
        dist = np.bitwise_count(d0[:, None, :] ^ d1[None, :, :]).sum(-1, dtype=np.int32).astype(np.float32)
    else:
        a, b = d0.astype(np.float32), d1.astype(np.float32)
        dist = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T, 0.0))
    j = dist.argmin(1)
    i = np.arange(len(d0))
    best = dist[i, j]
    ok = (dist.argmin(0)[j] == i) & (best <= max_dist)
    if dist.shape[1] > 1 and ratio < 1.0:
        second = np.partition(dist, 1, axis=1)[:, 1]
        ok &= best <= ratio * second
    return np.stack([i[ok], j[ok]], axis=1).astype(np.int64)


def _match(matcher, cur, cand, i_cur: np.ndarray, i_cand: np.ndarray, max_dist: float, prefilter: int = 0,
           prefiltered: Optional[list] = None) -> np.ndarray:
    """(M, 2) pairs (index into i_cur, index into i_cand): for descriptor matchers, mutual nearest
    neighbours with the matcher's own thresholds (its ``cfg``: ``ratio``, ``max_distance_*``; else
    max_dist and 0.8) on the keypoints with map points only (a few hundred a side, numpy); the
    learned matcher on the two keyframes' features otherwise. With prefilter > 0 the learned
    matcher runs only if the mutual nearest neighbours (max_dist, ratio 0.8) number at least
    prefilter; otherwise those few pairs are returned and (cur.id, cand.id) goes into prefiltered."""
    if len(i_cur) == 0 or len(i_cand) == 0:
        return np.zeros((0, 2), np.int64)
    if hasattr(matcher, "match_descriptors"):
        mc = getattr(matcher, "cfg", None)
        binary = cur.desc.dtype == np.uint8
        max_d = getattr(mc, "max_distance_binary" if binary else "max_distance_float", max_dist)
        return _nn_pairs(cur.desc[i_cur], cand.desc[i_cand], float(max_d), float(getattr(mc, "ratio", 0.8)))
    if prefilter > 0:
        nn = _nn_pairs(cur.desc[i_cur], cand.desc[i_cand], float(max_dist), 0.8)
        if len(nn) < prefilter:
            if prefiltered is not None:
                prefiltered.append((int(cur.id), int(cand.id)))  # list.append: safe from the loop-closing thread
            return nn
    return matcher.match(cur.features.subset(i_cur), cand.features.subset(i_cand)).pairs()


class LoopVerifier:
    def __init__(self, cfg: LoopClosingConfig, K: np.ndarray, camera, matcher, mode: str, max_desc_dist: float,
                 dense=None, depth=None) -> None:
        """depth: the run's slam.mapping.depth_weight.DepthWeight in depth modes (the structure
        refinement then has the local BA's depth edges), None in monocular runs."""
        self.cfg = cfg
        self.depth = depth
        #: slam.tracking.dense_match.DenseMatching with ``loop`` set, or None (keypoint matching)
        self.dense = dense if dense is not None and dense.loop else None
        self.K = np.asarray(K, dtype=np.float64)
        self.camera = camera
        self.matcher = matcher
        self.fix_scale = mode != "mono"
        self.max_desc = max_desc_dist
        self.n_rejected = {"matches": 0, "ransac": 0, "refine": 0, "final": 0, "projection": 0}
        self.ms = {"match": 0.0, "ransac": 0.0, "refine": 0.0, "projection": 0.0, "structure": 0.0}  # total per step
        self.dense_ms = 0.0  # total time of the LoFTR image matching (outside the map lock)
        self.n_dense = 0  # candidates verified from LoFTR matches
        self.prefiltered: list = []  # (current, candidate) keyframe ids the descriptor prefilter rejected (descriptor_prefilter)

    def image_pairs(self, m: Map, cur_id: int, cand_ids: list[int]) -> Optional[list]:
        """(current keyframe's image, candidate's image) per candidate, for :meth:`dense_match`;
        None when LoFTR verification is off (caller holds the map lock)."""
        if self.dense is None:
            return None
        return [(m.keyframes[cur_id].image, m.keyframes[k].image) for k in cand_ids]

    def dense_match(self, pairs: list) -> list:
        """LoFTR matches per pair of :meth:`image_pairs` (None entries: no image, keypoint matching
        there). Call WITHOUT the map lock."""
        t = time.perf_counter()
        out = self.dense.match_images(pairs)
        self.dense_ms += (time.perf_counter() - t) * 1e3
        return out

    def _tick(self, step: str, t: float) -> float:
        now = time.perf_counter()
        self.ms[step] += (now - t) * 1e3
        return now

    def match_pair(self, cur, cand, i_cur: np.ndarray, i_cand: np.ndarray) -> np.ndarray:
        """The keypoint matches of verification's first step, (M, 2) int64 pairs (index into i_cur,
        index into i_cand), for keyframes cur and cand restricted to the keypoints i_cur, i_cand
        (those with map points). Reads only the keyframes' features, which never change, so it
        may run without the map lock, in another thread, frames before :meth:`verify` (the caller
        adds its time to ``ms["match"]``)."""
        return _match(self.matcher, cur, cand, i_cur, i_cand, self.max_desc, *self._prefilter())

    def verify(self, m: Map, cur_id: int, cand_id: int, loop_neighbours: list[int], dense=None,
               matched: Optional[tuple] = None) -> Optional[LoopMatch]:
        """The loop between keyframes cur_id and cand_id, or None (the step that failed is counted
        in ``n_rejected``). loop_neighbours: the candidate's covisible keyframes (their points are
        projected to confirm). dense: LoFTR matches of (current image, candidate image)
        (slam.tracking.dense_match.DenseMatches) from :meth:`dense_match`, or None: the keypoint
        matcher. matched: (i_cur, i_cand, pairs) from :meth:`match_pair`, computed earlier on the
        keypoints that had map points then; the keypoints whose points have died since drop out."""
        c = self.cfg
        t = time.perf_counter()
        cur, cand = m.keyframes[cur_id], m.keyframes[cand_id]
        if matched is not None:
            i_cur, i_cand, pr = matched
        else:
            i_cur = np.nonzero(cur.point_ids >= 0)[0]
            i_cand = np.nonzero(cand.point_ids >= 0)[0]
            if dense is not None and self.dense is not None:
                self.n_dense += 1
                pr = self.dense.keyframe_pairs(cur, cand, dense, i_cur, i_cand, c.dense_transfer_px)
            else:
                pr = _match(self.matcher, cur, cand, i_cur, i_cand, self.max_desc, *self._prefilter())
        a, b = i_cur[pr[:, 0]], i_cand[pr[:, 1]]
        pa, pb = cur.point_ids[a], cand.point_ids[b]
        ok = (pa >= 0) & (pb >= 0)  # a keypoint may have lost its point since the match (matched)
        ok[ok] = m.pts_alive[pa[ok]] & m.pts_alive[pb[ok]] & (pa[ok] != pb[ok])
        a, b, pa, pb = a[ok], b[ok], pa[ok], pb[ok]
        t = self._tick("match", t)
        if len(a) < c.min_matches:
            self.n_rejected["matches"] += 1
            return None
        p_dst = transform_points(cur.cam_from_world, m.pts_xyz[pa])  # current camera frame
        p_src = transform_points(cand.cam_from_world, m.pts_xyz[pb])  # candidate camera frame
        s2_cand, s2_cur = self._cap(cand.kp_sigma2[b]), self._cap(cur.kp_sigma2[a])
        rs = solve_sim3_ransac(p_src, p_dst, cand.kp_uv[b], cur.kp_uv[a], self.K, self.K, s2_cand, s2_cur,
                               fix_scale=self.fix_scale, min_inliers=c.min_ransac_inliers, max_iterations=300, seed=int(cur_id))
        t = self._tick("ransac", t)
        if rs.dst_from_src is None:
            self.n_rejected["ransac"] += 1
            return None
        ref = optimize_sim3(rs.dst_from_src, p_src, p_dst, cand.kp_uv[b], cur.kp_uv[a], self.K, self.K,
                            s2_cand, s2_cur, fix_scale=self.fix_scale, min_inliers=c.min_refined_inliers)
        t = self._tick("refine", t)
        if ref.n_inliers < c.min_refined_inliers:
            self.n_rejected["refine"] += 1
            return None
        S = ref.dst_from_src  # cur_from_cand
        kfs = [cand_id] + [k for k in loop_neighbours if k in m.keyframes and k != cur_id]
        pts = np.unique(np.concatenate([m.keyframes[k].point_ids for k in kfs]))
        pts = pts[pts >= 0]
        pts = pts[m.pts_alive[pts]]
        inl_kp, inl_pt = a[ref.inliers], pb[ref.inliers]
        cur_kp, loop_pt = self._project(m, cur, cand, S, pts, inl_kp, inl_pt)
        # 5. refine again on every projected match with a 3D point on both sides (ORB-SLAM3's
        # second OptimizeSim3): a loop pose fitted to many points, not to the 20-odd first inliers
        pc = cur.point_ids[cur_kp]
        lut = np.full(m.n_points, -1, dtype=np.int64)  # map point -> the candidate's keypoint holding it
        lut[cand.point_ids[i_cand]] = i_cand
        both = (pc >= 0) & (pc != loop_pt) & (lut[loop_pt] >= 0)
        both[both] = m.pts_alive[pc[both]]
        n_final = 0
        if both.sum() >= c.min_final_inliers:
            kp2, pt2 = cur_kp[both], loop_pt[both]
            ckp2 = lut[pt2]
            ref2 = optimize_sim3(S, transform_points(cand.cam_from_world, m.pts_xyz[pt2]),
                                 transform_points(cur.cam_from_world, m.pts_xyz[pc[both]]), cand.kp_uv[ckp2], cur.kp_uv[kp2],
                                 self.K, self.K, self._cap(cand.kp_sigma2[ckp2]), self._cap(cur.kp_sigma2[kp2]),
                                 fix_scale=self.fix_scale, min_inliers=c.min_final_inliers)
            n_final = ref2.n_inliers
            if n_final >= c.min_final_inliers:
                S = ref2.dst_from_src
                cur_kp, loop_pt = self._project(m, cur, cand, S, pts, inl_kp, inl_pt)
        t = self._tick("projection", t)
        if n_final < c.min_final_inliers:
            self.n_rejected["final"] += 1
            return None
        if len(cur_kp) < c.min_projection_matches:
            self.n_rejected["projection"] += 1
            return None
        n_structure, change = 0, (0.0, 0.0, 0.0)
        if c.structure_refinement == "on" or (c.structure_refinement == "auto" and not self.fix_scale):
            S2, n_structure = self._refine_with_structure(m, cur, cand, S, cur_kp, loop_pt, kfs)
            if S2 is not None:
                (s1, R1, t1), (s2, R2, t2) = sim3_decompose(S), sim3_decompose(S2)
                change = (rotation_angle_deg(R2 @ R1.T), float(np.linalg.norm(t2 / s2 - t1 / s1)), float(np.linalg.norm(t1 / s1)))
                S = S2
            else:
                n_structure = 0
            self._tick("structure", t)
        return LoopMatch(int(cur_id), int(cand_id), S, cur_kp.astype(np.int64), loop_pt.astype(np.int64),
                         rs.n_inliers, ref.n_inliers, len(cur_kp), n_final, n_structure, change)

    def _refine_with_structure(self, m: Map, cur, cand, S: np.ndarray, cur_kp: np.ndarray, loop_pt: np.ndarray,
                               loop_kfs: list[int]) -> tuple[Optional[np.ndarray], int]:
        """Step 6: (cur_from_cand Sim(3), current-keyframe inliers), or (None, n) to keep S.

        A bundle adjustment in the loop side's world frame and units, where the two sides are
        welded by the verified matches:
        - fixed: every keyframe of loop_kfs (the candidate and its covisible neighbours) that
          observes a matched loop point, with its observations of them; they fix the gauge and
          the scale (monocular: at least two are needed);
        - free: the current keyframe and its ``loop_closing.refine_keyframes`` best covisible
          keyframes outside loop_kfs (the current side), moved into the loop side's frame with S
          (their relative poses kept, their map's scale made the loop side's), with the points
          they observe; a current-side point matched to a loop point is that loop point;
        - free: the matched loop points (steps 3-5 hold them fixed: an old monocular map's points
          carry the depth error of its short baselines, and seen again from metres away that
          error moves the loop's pose; here both sides' baselines triangulate them).
        Robust, two stages, the local BA's chi2 tests (and its depth edges in depth modes). The
        result keeps S's scale; it is kept when at least ``min_final_inliers`` of the current
        keyframe's observations of loop points are inliers."""
        c = self.cfg
        loop_pt, first = np.unique(loop_pt, return_index=True)
        cur_kp = cur_kp[first]
        if len(loop_pt) < c.min_final_inliers:
            return None, 0
        loop_side = np.asarray([k for k in loop_kfs if k != cur.id and k in m.keyframes], dtype=np.int64)
        # the current side: the current keyframe and its best covisible keyframes off the loop side
        own = cur.point_ids[cur.point_ids >= 0]
        own = own[m.pts_alive[own]]
        ks, cnt = np.unique(m.obs_kf[m.observation_rows(point_ids=own)], return_counts=True)
        keep = (ks != cur.id) & ~np.isin(ks, loop_side)
        ks, cnt = ks[keep], cnt[keep]
        side = np.concatenate([[cur.id], ks[np.argsort(-cnt, kind="stable")][: c.refine_keyframes]]).astype(np.int64)
        # observations: the loop points seen from the loop side, and everything the current side sees
        r_loop = m.observation_rows(point_ids=loop_pt, kf_ids=loop_side)
        r_side = m.observation_rows(kf_ids=side)
        r_side = r_side[m.pts_alive[m.obs_pt[r_side]]]
        r_side = r_side[~((m.obs_kf[r_side] == cur.id) & np.isin(m.obs_kp[r_side], cur_kp))]  # the matches replace these
        o_kf = np.concatenate([m.obs_kf[r_loop], m.obs_kf[r_side], np.full(len(cur_kp), cur.id)])
        o_kp = np.concatenate([m.obs_kp[r_loop], m.obs_kp[r_side], cur_kp])
        o_pt = np.concatenate([m.obs_pt[r_loop], m.obs_pt[r_side], loop_pt])
        # a current-side point matched to a loop point is that loop point
        pc = cur.point_ids[cur_kp]
        dup = (pc >= 0) & (pc != loop_pt)
        lut = np.arange(m.n_points)
        lut[pc[dup]] = loop_pt[dup]
        o_pt = lut[o_pt]
        _, u = np.unique(o_kf * m.n_points + o_pt, return_index=True)  # one observation per (keyframe, point)
        u = np.sort(u)
        o_kf, o_kp, o_pt = o_kf[u], o_kp[u], o_pt[u]
        ok = np.bincount(o_pt, minlength=m.n_points)[o_pt] >= 2  # a point seen once constrains nothing
        o_kf, o_kp, o_pt = o_kf[ok], o_kp[ok], o_pt[ok]
        fixed_kfs = np.unique(o_kf[np.isin(o_kf, loop_side)])
        if self.depth is None and len(fixed_kfs) < 2:  # monocular: one fixed view leaves the points' scale free
            return None, 0
        # initial values in the loop side's frame and units
        s, _, _ = sim3_decompose(S)
        W = sim3_inverse(cur.cam_from_world) @ S @ cand.cam_from_world  # current side's world <- loop side's world
        W_inv = sim3_inverse(W)
        kf_ids = np.unique(o_kf)
        poses = np.empty((len(kf_ids), 4, 4))
        for i, k in enumerate(kf_ids.tolist()):
            T = m.keyframes[k].cam_from_world
            if k in fixed_kfs:
                poses[i] = T
            else:  # rigid, in the loop side's units
                poses[i] = se3_from_sim3(T @ W)
        pt_ids = np.unique(o_pt)
        X = m.pts_xyz[pt_ids].copy()
        # the current side's points move with it; points the loop side made are in its frame already
        moved = ~np.isin(pt_ids, loop_pt) & ~np.isin(m.pts_first_kf[pt_ids], loop_side)
        X[moved] = X[moved] @ W_inv[:3, :3].T + W_inv[:3, 3]
        uv, sig2, depth = m.observation_arrays(o_kf, o_kp)
        ur = np.full(len(o_kf), np.nan)
        if self.depth is not None:  # depth modes: the local BA's depth edges (scale 1 there)
            ur = self.depth.virtual_right(uv[:, 0], depth)
        prob = BAProblem(kf_ids=kf_ids, cam_from_world=poses, fixed=np.isin(kf_ids, fixed_kfs), point_ids=pt_ids,
                         points_world=X, obs_kf=o_kf, obs_pt=o_pt, obs_uv=uv, obs_inv_sigma2=1.0 / sig2, obs_ur=ur,
                         bf=self.depth.bf if self.depth is not None else 0.0, K=self.K)
        res = bundle_adjust_schur(prob, iterations=c.structure_iterations)
        matched = (o_kf == cur.id) & np.isin(o_pt, loop_pt)
        n_in = int((~res.obs_outlier[matched]).sum())
        if n_in < c.min_final_inliers:
            return None, n_in
        rel = res.cam_from_world[int(np.searchsorted(kf_ids, cur.id))] @ se3_inverse(cand.cam_from_world)
        return make_sim3(s, rel[:3, :3], s * rel[:3, 3]), n_in

    def _prefilter(self) -> tuple:
        """_match's prefilter arguments: (least mutual nearest neighbours, list of the rejected pairs)."""
        return (self.cfg.min_matches if self.cfg.descriptor_prefilter else 0), self.prefiltered

    def _cap(self, sigma2: np.ndarray) -> np.ndarray:
        """Keypoint variances capped so that the inlier test (chi2 10 x sigma^2) is at most
        ``loop_closing.inlier_max_px`` pixels, also at coarse octaves."""
        return np.minimum(sigma2, self.cfg.inlier_max_px ** 2 / CHI2_SIM3)

    def _project(self, m: Map, cur, cand, S: np.ndarray, pts: np.ndarray, inl_kp: np.ndarray, inl_pt: np.ndarray):
        """Project the loop neighbourhood's points pts into the current keyframe with S
        (cur_from_cand): (cur_kp, loop_pt) matches, the refined inliers included."""
        c = self.cfg
        p_cur = transform_points(S @ cand.cam_from_world, m.pts_xyz[pts])
        uv, front = project_points(self.K, p_cur)
        inside = front & self.camera.in_image(np.where(front[:, None], uv, 0.0))
        pts, uv = pts[inside], uv[inside]
        match, _ = search_by_projection(uv, m.pts_desc[pts], cur.kp_uv, cur.desc, c.projection_radius_px, self.max_desc, 1.0)
        sel = np.nonzero(match >= 0)[0]
        cur_kp, loop_pt = match[sel], pts[sel]
        extra = ~np.isin(inl_kp, cur_kp)
        return np.concatenate([cur_kp, inl_kp[extra]]), np.concatenate([loop_pt, inl_pt[extra]])

