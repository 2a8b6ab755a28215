"""Map merging (ORB-SLAM3's merge of atlas maps): place recognition finds a place the active map
and an older map of the atlas (slam.mapping.atlas) both saw; the two maps become one.

:meth:`MapMerger.candidates` then :meth:`MapMerger.verify` (each under ``map.lock``; the loop
closer runs them, with LoFTR's image matches computed between the two when
``loop_closing.matcher=loftr``), for a keyframe of the active map whose local mapping ended,
when the atlas holds other maps:

1. the keyframe database (shared with loop closing) gives candidates among the keyframes of the
   other maps (ORB-SLAM's rule: shared words, covisibility groups; keyframes of the active map
   excluded);
2. each candidate goes through loop verification (slam.loop.verification: matches, Sim(3)
   RANSAC for monocular maps / SE(3) otherwise, g2o refinement, projection of the candidate's
   neighbourhood);
3. confirmation: the candidate neighbourhood's points, moved by the verified transform, must be
   found again in up to ``map_merging.confirm_neighbours`` covisible keyframes of the current
   one (ORB-SLAM3 checks the current keyframe's neighbours the same way).

:meth:`MapMerger.merge` (caller holds ``map.lock``):

1. every keyframe and point of the active map moves into the other map's frame with the
   verified similarity (monocular maps take the other map's scale); the maps become one in the
   atlas and the tracker's last frame moves with them;
2. duplicated points are fused: the verified matches, then the candidate neighbourhood's points
   projected into the current neighbourhood and back (the local mapper's fusion);
3. the welding bundle adjustment: the current keyframe's neighbourhood is optimised with the
   candidate's neighbourhood (and the other observers of their points) fixed.

The loop closer (slam.loop.closing) then queues its background global bundle adjustment.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from slam.geometry.se3 import transform_points
from slam.geometry.sim3 import project_points, se3_from_sim3, sim3_decompose, sim3_inverse
from slam.loop.config import MapMergingConfig
from slam.loop.correction import fuse_common_place
from slam.loop.database import place_candidates
from slam.loop.detection import MIN_COVIS, covisibility
from slam.loop.verification import LoopMatch
from slam.matching.guided import search_by_projection
from slam.optim.ba import bundle_adjust

log = logging.getLogger("slam.loop")


@dataclass
class MergeMatch:
    """A verified common place of the active map and another map.

    loop: the verified match (cur_kf in the active map, loop_kf in the other map; cur_from_loop
    (4, 4) Sim(3) loop camera -> current camera, in the active map's units).
    world_cur_from_world_other: (4, 4) Sim(3) points of the other map's world into the active map's.
    confirmed: projection matches in each confirming neighbour.
    """

    loop: LoopMatch
    world_cur_from_world_other: np.ndarray
    confirmed: list = field(default_factory=list)


def _projection_matches(m, camera, K: np.ndarray, kf, cam_from_other: np.ndarray, pts: np.ndarray, radius: float,
                        max_desc: float) -> int:
    """Points pts ((P,) int64, in the other map's world) found again in keyframe kf when projected
    with cam_from_other ((4, 4) Sim(3): other world -> kf camera)."""
    if len(pts) == 0:
        return 0
    pc = transform_points(cam_from_other, m.pts_xyz[pts])
    uv, front = project_points(K, pc)
    inside = front & camera.in_image(np.where(front[:, None], uv, 0.0))
    match, _ = search_by_projection(uv[inside], m.pts_desc[pts[inside]], kf.kp_uv, kf.desc, radius, max_desc, 1.0)
    return int((match >= 0).sum())


class MapMerger:
    """Detects and performs merges of the active map with the other maps of ``atlas``.

    closing: the run's slam.loop.closing.LoopClosing (its database, vocabulary, verifier,
    mapper and tracker are used)."""

    def __init__(self, cfg: MapMergingConfig, atlas, closing, camera, fix_scale: bool) -> None:
        self.cfg = cfg
        self.atlas = atlas
        self.closing = closing
        self.camera = camera
        self.fix_scale = bool(fix_scale)
        self.n_queries = 0
        self.n_verified = 0
        self.n_unconfirmed = 0

    # ------------------------------------------------------------------ detection
    def candidates(self, kf_id: int) -> tuple[list[int], object]:
        """Keyframes of other maps that place recognition finds for keyframe kf_id of the active
        map, best first, and the covisibility they were found with (caller holds the map lock)."""
        c, at, lc = self.cfg, self.atlas, self.closing
        m = lc.map
        if not c.enabled or kf_id not in m.keyframes or len(at.map_ids()) < 2:
            return [], None
        mine = at.map_of(kf_id)
        if mine != at.active:
            return [], None
        own = at.keyframes_of(mine, m.keyframes)
        if len(own) < c.min_keyframes or len(lc.db) == 0:
            return [], None
        self.n_queries += 1
        cov = covisibility(m)
        bow = lc.vocabulary.transform(m.keyframes[kf_id].desc)
        indexed = [k for k in lc.detector.indexed if k in m.keyframes]
        same = set(np.array(indexed, dtype=np.int64)[at.maps_of(indexed) == mine].tolist()) if indexed else set()
        cands = place_candidates(lc.db, bow, lambda k: cov.neighbours(k, MIN_COVIS, lc.pr.covisible_neighbours),
                                 exclude_ids=same | {int(kf_id)}, min_common_ratio=lc.pr.min_common_ratio,
                                 retain_ratio=lc.pr.retain_ratio)
        return [k for k, _ in cands if k in m.keyframes and at.map_of(k) != mine][: c.candidates], cov

    def verify(self, kf_id: int, cand: int, cov=None, dense=None) -> Optional[MergeMatch]:
        """Verify and confirm the common place of keyframes kf_id (active map) and cand (another
        map); None when it fails (caller holds the map lock). dense: LoFTR matches of the two
        keyframes' images (LoopVerifier.dense_match), None: the keypoint matcher."""
        lc = self.closing
        m = lc.map
        cov = cov if cov is not None else covisibility(m)
        t = time.perf_counter()
        self.n_verified += 1
        lm = lc.verifier.verify(m, kf_id, cand, cov.neighbours(cand, MIN_COVIS, lc.cfg.neighbourhood), dense=dense)
        lc.verify_ms.append((time.perf_counter() - t) * 1e3)
        if lm is None:
            return None
        cur, other = m.keyframes[kf_id], m.keyframes[cand]
        W = sim3_inverse(cur.cam_from_world) @ lm.cur_from_loop @ other.cam_from_world  # world_cur <- world_other
        loop_group = [cand] + cov.neighbours(cand, MIN_COVIS, lc.cfg.neighbourhood)
        pts = np.unique(np.concatenate([m.keyframes[k].point_ids for k in loop_group if k in m.keyframes]))
        pts = pts[pts >= 0]
        pts = pts[m.pts_alive[pts]]
        neigh = cov.neighbours(kf_id, MIN_COVIS, self.cfg.confirm_neighbours) if self.cfg.confirm_neighbours else []
        found = [_projection_matches(m, self.camera, lc.verifier.K, m.keyframes[k], m.keyframes[k].cam_from_world @ W, pts,
                                     lc.cfg.projection_radius_px, lc.verifier.max_desc) for k in neigh]
        if any(n < self.cfg.confirm_min_matches for n in found):
            self.n_unconfirmed += 1
            log.debug("merge keyframe %d <-> %d not confirmed by its neighbours (%s matches)", kf_id, cand, found)
            return None
        return MergeMatch(lm, W, found)

    # ------------------------------------------------------------------ the merge
    def merge(self, mm: MergeMatch, frame_no: int) -> Optional[dict]:
        """Merge the active map into the other map of mm (caller holds the map lock). Returns
        the merge's record (also appended to ``atlas.merges``), None when its keyframes left."""
        lc, at = self.closing, self.atlas
        m, lm = lc.map, mm.loop
        if lm.cur_kf not in m.keyframes or lm.loop_kf not in m.keyframes:
            return None
        t0 = time.perf_counter()
        tm: dict[str, float] = {}
        moved_map, kept_map = at.map_of(lm.cur_kf), at.map_of(lm.loop_kf)
        # 1. the active map into the other's frame
        W = sim3_inverse(mm.world_cur_from_world_other)  # world_other <- world_cur (similarity)
        W_inv = mm.world_cur_from_world_other
        moved = at.keyframes_of(moved_map, m.keyframes)
        for k in moved:
            kf = m.keyframes[k]
            kf.cam_from_world = se3_from_sim3(kf.cam_from_world @ W_inv)
        pts = m.alive_point_ids()
        pts = pts[at.maps_of(m.pts_first_kf[pts]) == moved_map]
        m.pts_xyz[pts] = m.pts_xyz[pts] @ W[:3, :3].T + W[:3, 3]
        m.update_normals(pts)
        at.activate(at.merge(kept_map, moved_map))
        lc.tracker.apply_world_correction({k: W for k in moved})
        tm["transform"] = (time.perf_counter() - t0) * 1e3
        # 2. fuse duplicates
        t = time.perf_counter()
        n_before = m.n_alive_points()
        cov = covisibility(m)
        moved_set = set(moved)
        cur_group = [lm.cur_kf] + [k for k in cov.neighbours(lm.cur_kf, MIN_COVIS, lc.cfg.neighbourhood) if k in moved_set]
        loop_group = [lm.loop_kf] + [k for k in cov.neighbours(lm.loop_kf, MIN_COVIS, lc.cfg.neighbourhood) if k not in moved_set]
        fuse_common_place(m, lm, lc.mapper._fuse_into, [(cur_group, loop_group), (loop_group, cur_group)])
        n_fused = n_before - m.n_alive_points()
        tm["fuse"] = (time.perf_counter() - t) * 1e3
        # 3. welding bundle adjustment
        t = time.perf_counter()
        weld = self._weld(cur_group, loop_group)
        tm["weld_ba"] = (time.perf_counter() - t) * 1e3
        tm["total"] = (time.perf_counter() - t0) * 1e3
        s, R, _ = sim3_decompose(W)
        cur_kf, loop_kf = m.keyframes[lm.cur_kf], m.keyframes[lm.loop_kf]
        rec = {
            "frame": int(frame_no), "cur_kf": lm.cur_kf, "loop_kf": lm.loop_kf, "cur_frame": cur_kf.frame_index,
            "loop_frame": loop_kf.frame_index, "moved_map": int(moved_map), "kept_map": int(kept_map),
            "moved_keyframes": len(moved), "ransac_inliers": lm.n_ransac, "refined_inliers": lm.n_refined,
            "projection_matches": lm.n_projected, "confirming_matches": list(mm.confirmed), "scale": float(s),
            "cur_from_loop": lm.cur_from_loop.tolist(), "fused_points": int(n_fused), "weld_ba": weld, "ms": tm,
        }
        at.merges.append(rec)
        log.info("maps merged at frame %d: map %d (%d keyframes) into map %d through keyframe %d (frame %d) <-> %d (frame %d), "
                 "%d/%d/%d inliers, scale %.3f, %d points fused (%.0f ms)", frame_no, moved_map, len(moved), kept_map, lm.cur_kf,
                 cur_kf.frame_index, lm.loop_kf, loop_kf.frame_index, lm.n_ransac, lm.n_refined, lm.n_projected, s, n_fused,
                 tm["total"])
        return rec

    def _weld(self, cur_group: list[int], loop_group: list[int]) -> Optional[dict]:
        """Bundle adjustment of cur_group with loop_group and the other observers fixed (map lock held)."""
        mapper = self.closing.mapper
        prob = mapper._gather(cur_group + loop_group, mapper.cfg.ba_max_fixed)
        if prob is None:
            return None
        free = set(cur_group) - set(loop_group)
        prob.fixed[:] = [k not in free for k in prob.kf_ids.tolist()]
        if prob.fixed.all():
            return None
        res = bundle_adjust(prob, iterations=self.cfg.weld_iterations)
        mapper._apply(prob, res)
        return {"n_keyframes": int(len(prob.kf_ids)), "free": int((~prob.fixed).sum()), "chi2_before": float(res.chi2_before),
                "chi2_after": float(res.chi2_after), "outliers": int(res.obs_outlier.sum())}

    def stats(self) -> dict:
        return {"queries": self.n_queries, "verified": self.n_verified, "unconfirmed": self.n_unconfirmed}
