"""Loop closing in the runtime: detection, verification, correction and the background global BA,
scheduled so that a dataset run is deterministic (threaded == synchronous, bit for bit).

Who does what:

- The tracking stage calls :meth:`LoopClosing.before_frame` before tracking each frame, after the
  mapping schedule has committed the mapping results that are due. In **dataset** runs it then
  takes every keyframe whose local mapping was committed since the last frame, in order, and
  runs detection (keyframe database, consistency), verification and, for an accepted loop, the
  correction (propagation, fusion, essential graph, points) on the spot: the map it reads is
  the one the frame sequence fixes (mapping's running job works on its own copy). In **live**
  runs detection and verification run in the loop-closing stage's thread as each keyframe's
  mapping ends, and the tracking thread corrects an accepted loop before its next frame, as soon
  as it is ready.
- A correction queues a global bundle adjustment on a copy of the map. The loop-closing stage
  (:class:`LoopClosingStage`, after mapping) runs it in its own thread while tracking goes on.
  Its result is written back by the tracking thread: in dataset runs before frame
  ``loop + loop_closing.global_ba_delay_frames`` (waiting for it, or running it there, if it is
  not done; so the result never depends on timing), in live runs as soon as it is done. A new
  loop stops a running global BA and drops it (ORB-SLAM's behaviour).
- After every correction the tracker's last frame moves with its reference keyframe
  (``Tracker.apply_world_correction``).

The mapping stage forwards a :class:`LoopWake` after each keyframe's job (and passes on the ones
the tracking stage emits when a global BA was queued), so the loop-closing stage wakes up.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from slam.geometry.se3 import se3_inverse
from slam.loop.correction import Correction, GlobalBA, correct_loop
from slam.loop.database import KeyframeDatabase, place_candidates
from slam.loop.detection import MIN_COVIS, LoopDetector, covisibility
from slam.loop.verification import LoopMatch, LoopVerifier

log = logging.getLogger("slam.loop")


@dataclass(frozen=True)
class LoopWake:
    """Wakes the loop-closing stage. kf_id: the keyframe whose local mapping just ended (-1: none)."""

    kf_id: int = -1


class LoopClosing:
    """The loop closer of one run (see the module docstring). ``tracker`` is told about corrections."""

    def __init__(self, cfg, camera, slam_map, matcher, mapper, tracker, mapping_schedule, vocabulary, live: bool) -> None:
        self.cfg = cfg.loop_closing
        self.pr = cfg.place_recognition
        self.map = slam_map
        self.mapper = mapper
        self.tracker = tracker
        self.mapping_schedule = mapping_schedule
        self.vocabulary = vocabulary
        self.live = bool(live)
        self.fix_scale = cfg.mode != "mono"
        self.db = KeyframeDatabase(self.pr.merge_every)
        self.detector = LoopDetector(self.cfg, self.pr, vocabulary, self.db)
        self.verifier = LoopVerifier(self.cfg, camera.K, camera, matcher, cfg.mode, mapper.max_desc)
        self.loop_edges = np.zeros((0, 2), dtype=np.int64)  # every loop edge closed so far
        self.loops: list[dict] = []
        self.verify_ms: list[float] = []
        self.n_verified = 0  # candidates that went through geometric verification
        self._cond = threading.Condition()
        self._verified: list = []  # live: accepted loops (LoopMatch) and merges (MergeMatch) waiting for the tracking thread
        self._gba: Optional[dict] = None  # {"task": GlobalBA, "state": pending|running|done, "due": frame}
        self._closed = False
        self.gba_runs: list[dict] = []
        #: the atlas (slam.mapping.atlas) and its merger (slam.loop.merge) when lost tracking may start
        #: new maps (set by slam.system); loops stay within a map, places shared with another map merge
        self.atlas = None
        self.merger = None

    # ================================================================== tracking thread
    def before_frame(self, frame_no: int) -> Optional[LoopWake]:
        """Before tracking frame ``frame_no``: global BA results that are due, then (dataset)
        detection for newly committed keyframes, or (live) the loops verified meanwhile."""
        self._maybe_apply_gba(frame_no)
        queued = False
        if self.live:
            with self._cond:
                ready, self._verified = self._verified, []
            for lm in ready:
                queued |= self._correct(lm, frame_no) if isinstance(lm, LoopMatch) else self._merge(lm, frame_no)
        else:
            for kf_id in self.mapping_schedule.drain_committed():
                with self.map.lock:
                    lm = self._detect_and_verify(kf_id)
                    mm = self.merger.detect(kf_id) if lm is None and self.merger is not None else None
                if lm is not None:
                    queued |= self._correct(lm, frame_no)
                elif mm is not None:
                    queued |= self._merge(mm, frame_no)
        return LoopWake() if queued else None

    def finish(self) -> None:
        """End of the stream: write back the outstanding global BA (waiting for it)."""
        self._maybe_apply_gba(None)

    def _detect_and_verify(self, kf_id: int) -> Optional[LoopMatch]:
        """Caller holds the map lock."""
        m = self.map
        if kf_id not in m.keyframes:
            return None
        self.detector.forget_culled(m)
        cov = covisibility(m)
        bow = self.vocabulary.transform(m.keyframes[kf_id].desc)
        cands = self.detector.detect(kf_id, bow, cov, len(m.keyframes))
        if self.atlas is not None:  # a place of another map is a merge (slam.loop.merge), not a loop
            cands = [k for k in cands if self.atlas.map_of(k) == self.atlas.map_of(kf_id)]
        for cand in cands:
            if cand not in m.keyframes:
                continue
            t = time.perf_counter()
            self.n_verified += 1
            lm = self.verifier.verify(m, kf_id, cand, cov.neighbours(cand, MIN_COVIS, self.cfg.neighbourhood))
            self.verify_ms.append((time.perf_counter() - t) * 1e3)
            if lm is not None:
                self.detector.groups = []  # ORB-SLAM: consistency starts over after a loop
                return lm
        return None

    def _correct(self, lm: LoopMatch, frame_no: int) -> bool:
        """Correct the map for loop lm (tracking thread); queue a global BA. True when one was queued."""
        self._drop_gba()
        self.mapping_schedule.finish()  # no local BA result may land in the pre-loop frame afterwards
        with self.map.lock:
            if lm.cur_kf not in self.map.keyframes or lm.loop_kf not in self.map.keyframes:
                return False
            cur_frame = self.map.keyframes[lm.cur_kf].frame_index
            loop_frame = self.map.keyframes[lm.loop_kf].frame_index
            corr: Correction = correct_loop(self.map, lm, self.mapper._fuse_into, self.loop_edges, fix_scale=self.fix_scale,
                                            neighbourhood=self.cfg.neighbourhood,
                                            loop_edge_min_shared=self.cfg.loop_edge_min_shared,
                                            iterations=self.cfg.graph_iterations)
            self.loop_edges = np.concatenate([self.loop_edges, corr.loop_edges[:1]])
            self.tracker.apply_world_correction(corr.world_new_from_old)
            gba = None
            if self.cfg.global_ba:
                gba = GlobalBA(self.mapper, self.cfg.global_ba_iterations)
                gba = gba if gba.gather() else None
        rel = lm.cur_from_loop
        self.loops.append({
            "frame": frame_no, "cur_kf": lm.cur_kf, "loop_kf": lm.loop_kf, "cur_frame": cur_frame, "loop_frame": loop_frame,
            "ransac_inliers": lm.n_ransac, "refined_inliers": lm.n_refined, "projection_matches": lm.n_projected,
            "cur_from_loop": rel.tolist(), "correction_rotation_deg": corr.rotation_deg,
            "correction_translation": corr.translation, "correction_scale": corr.scale, "fused_points": corr.n_fused,
            "loop_edges": int(len(corr.loop_edges)), "ms": corr.timings,
        })
        log.info("loop closed at frame %d: keyframe %d (frame %d) <-> keyframe %d (frame %d), %d/%d/%d inliers "
                 "(RANSAC/refined/projection); correction %.2f deg, %.3f, scale %.3f; %d points fused; "
                 "essential graph %.0f ms, correction %.0f ms", frame_no, lm.cur_kf, cur_frame, lm.loop_kf, loop_frame,
                 lm.n_ransac, lm.n_refined, lm.n_projected, corr.rotation_deg, corr.translation, corr.scale, corr.n_fused,
                 corr.timings.get("essential_graph", 0.0), corr.timings.get("total", 0.0))
        return self._queue_gba(gba, frame_no)

    def _queue_gba(self, gba: Optional[GlobalBA], frame_no: int) -> bool:
        if gba is None:
            return False
        with self._cond:
            self._gba = {"task": gba, "state": "pending", "due": frame_no + self.cfg.global_ba_delay_frames}
        return True

    def _merge(self, mm, frame_no: int) -> bool:
        """Merge the maps of mm (a slam.loop.merge.MergeMatch; tracking thread); queue a global BA."""
        self._drop_gba()
        self.mapping_schedule.finish()
        with self.map.lock:
            rec = self.merger.merge(mm, frame_no)
            if rec is None:
                return False
            self.loop_edges = np.concatenate([self.loop_edges, np.array([[rec["cur_kf"], rec["loop_kf"]]], dtype=np.int64)])
            self.detector.groups = []
            gba = None
            if self.cfg.global_ba:
                gba = GlobalBA(self.mapper, self.cfg.global_ba_iterations)
                gba = gba if gba.gather() else None
        return self._queue_gba(gba, frame_no)

    # ================================================================== global BA hand-off
    def _claim(self) -> Optional[dict]:
        with self._cond:
            g = self._gba
            if g is not None and g["state"] == "pending":
                g["state"] = "running"
                return g
        return None

    def _run(self, g: dict) -> None:
        try:
            g["task"].run()
        finally:
            with self._cond:
                g["state"] = "done"
                self._cond.notify_all()

    def _wait_done(self, g: dict) -> bool:
        with self._cond:
            while g["state"] != "done":
                if self._closed:
                    return False
                self._cond.wait(0.25)
        return True

    def _drop_gba(self) -> None:
        """A new loop: stop the running global BA and forget it."""
        with self._cond:
            g = self._gba
        if g is None:
            return
        g["task"].stop.request()
        if self._claim() is None:
            self._wait_done(g)
        self.gba_runs.append({"ms": g["task"].ms, "applied": False, "stopped_by_new_loop": True})
        with self._cond:
            self._gba = None

    def _maybe_apply_gba(self, frame_no: Optional[int]) -> None:
        with self._cond:
            g = self._gba
        if g is None:
            return
        if frame_no is not None:
            if self.live and g["state"] != "done":
                return
            if not self.live and frame_no < g["due"]:
                return
        if self._claim() is not None:  # nobody started it: run it here
            self._run(g)
        if not self._wait_done(g):
            return
        self.mapping_schedule.finish()
        with self.map.lock:
            W = g["task"].apply()
            self.tracker.apply_world_correction(W)
            res = g["task"].result
        self.gba_runs.append({"ms": g["task"].ms, "applied": bool(W), "frame": frame_no,
                              "n_keyframes": int(len(g["task"].problem.kf_ids)),
                              "chi2_before": float(res.chi2_before), "chi2_after": float(res.chi2_after)})
        log.info("global BA after the loop over %d keyframes: chi2 %.1f -> %.1f (%.0f ms, in the background)",
                 len(g["task"].problem.kf_ids), res.chi2_before, res.chi2_after, g["task"].ms)
        with self._cond:
            self._gba = None

    # ================================================================== loop-closing stage
    def on_wake(self, wake: LoopWake) -> None:
        """The loop-closing stage's work: (live) detect and verify the keyframe, then run a queued global BA."""
        if self.live and wake.kf_id >= 0:
            with self.map.lock:
                lm = self._detect_and_verify(wake.kf_id)
            if lm is None and self.merger is not None:
                with self.map.lock:
                    lm = self.merger.detect(wake.kf_id)
            if lm is not None:
                with self._cond:
                    self._verified.append(lm)
        g = self._claim()
        if g is not None:
            self._run(g)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            g = self._gba
            self._cond.notify_all()
        if g is not None:
            g["task"].stop.request()

    # ================================================================== relocalisation
    def place_candidates(self, desc: np.ndarray, n: int) -> list[int]:
        """Keyframe ids (at most n, best first) that look like the image with descriptors desc
        ((N, D) numpy), from the keyframe database (caller holds the map lock)."""
        if len(self.db) == 0 or len(desc) == 0:
            return []
        bow = self.vocabulary.transform(desc)
        m = self.map

        def neighbours(k: int) -> list[int]:
            return [j for j, _ in m.keyframe_covisibility(k, MIN_COVIS)[: self.pr.covisible_neighbours]] if k in m.keyframes else []

        out = place_candidates(self.db, bow, neighbours, min_common_ratio=self.pr.min_common_ratio,
                               retain_ratio=self.pr.retain_ratio)
        return [k for k, _ in out if k in m.keyframes][:n]

    # ================================================================== reporting
    def loop_segments(self) -> np.ndarray:
        """(E, 2, 3) float64 world positions of the keyframe centres each loop joins (a keyframe
        culled since stands at its pose relative to its live parent)."""
        segs = []
        with self.map.lock:
            for a, b in self.loop_edges.tolist():
                pa, pb = self.map.keyframe_pose_or_ancestor(a), self.map.keyframe_pose_or_ancestor(b)
                if pa is not None and pb is not None:
                    segs.append((se3_inverse(pa)[:3, 3], se3_inverse(pb)[:3, 3]))
        return np.array(segs, dtype=np.float64).reshape(-1, 2, 3)

    def stats(self) -> dict:
        d = self.detector
        q = np.array(d.query_ms) if d.query_ms else np.zeros(1)
        dt = np.array(d.detect_ms) if d.detect_ms else np.zeros(1)
        v = np.array(self.verify_ms) if self.verify_ms else np.zeros(1)
        return {"loop_closing": {
            "enabled": True,
            "queries": d.n_queries,
            "candidates": d.n_candidates,
            "consistent_candidates": d.n_consistent,
            "verified": self.n_verified,
            "accepted": len(self.loops),
            "rejected": int(self.n_verified - len(self.loops)),
            "rejected_at": dict(self.verifier.n_rejected),
            "query_ms_mean": float(q.mean()), "query_ms_max": float(q.max()),
            "detection_ms_mean": float(dt.mean()), "detection_ms_max": float(dt.max()),
            "verification_ms_mean": float(v.mean()), "verification_ms_max": float(v.max()),
            "verification_ms_total_by_step": {k: float(x) for k, x in self.verifier.ms.items()},
            "loops": self.loops,
            "global_ba": self.gba_runs,
        }}


class LoopClosingStage:
    """process(LoopWake) -> None: the loop closer's background work (see :class:`LoopClosing`)."""

    def __init__(self, closing: LoopClosing) -> None:
        self.closing = closing

    def process(self, item: Any) -> None:
        if isinstance(item, LoopWake):
            self.closing.on_wake(item)
        return None

    def close(self) -> None:
        self.closing.close()
