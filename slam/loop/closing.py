"""Loop closing in the runtime: detection, verification, correction and the background global BA,
scheduled so that a dataset run is deterministic (threaded == synchronous, bit for bit).

Who does what:

- The tracking stage calls :meth:`LoopClosing.before_frame` before tracking each frame, after the
  mapping schedule has committed the mapping results that are due. In **dataset** runs it then
  takes every keyframe whose local mapping was committed since the last frame, in order, and
  runs detection (keyframe database, consistency) and verification of the best consistent
  candidate: the map it reads is the one the frame sequence fixes (mapping's running job works on
  its own copy). The keypoint matching of the verification, most of its cost with a learned
  matcher, reads only the two keyframes' features; with ``loop_closing.verify_delay_frames`` > 0
  it runs in the loop-closing stage, and the rest of the verification follows on the tracking
  thread that many frames later (waiting for the matching, or running it there, if it is not
  done), so tracking does not stall on it. In **live** runs detection and verification run in the
  loop-closing stage's thread as each keyframe's mapping ends, and the tracking thread takes an
  accepted loop before its next frame, as soon as it is ready.
- An accepted loop is corrected in three phases (:class:`slam.loop.correction.LoopCorrection`):
  propagation and fusion in the tracking thread at once (ORB-SLAM does them under the map-update
  lock too); the essential graph on a copy of its inputs in the loop-closing stage
  (:class:`LoopClosingStage`), while tracking goes on; its write-back in the tracking thread, in
  dataset runs before frame ``loop + loop_closing.correction_delay_frames`` (waiting for it, or
  running it there, if it is not done: the result never depends on timing), in live runs as soon
  as it is done. Keyframes created meanwhile take their parent's correction. No new loop is
  verified while a correction is in flight.
- The write-back queues a global bundle adjustment on a copy of the map, run by the loop-closing
  stage the same way and written back ``loop_closing.global_ba_delay_frames`` frames later, or
  ``global_ba_delay_per_keyframe`` frames per keyframe it adjusts if that is later (dataset), or
  when done (live). A new loop stops a running global BA and drops it (ORB-SLAM's
  behaviour).
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
from slam.loop.correction import GlobalBA, LoopCorrection
from slam.loop.database import KeyframeDatabase, place_candidates
from slam.loop.detection import MIN_COVIS, LoopDetector, covisibility
from slam.loop.verification import LoopMatch, LoopVerifier

log = logging.getLogger("slam.loop")


@dataclass(frozen=True)
class LoopWake:
    """Wakes the loop-closing stage. kf_id: the keyframe whose local mapping just ended (-1: none)."""

    kf_id: int = -1


class CandidateMatching:
    """The keypoint matching of one keyframe's loop candidates, as a background task (``run()``,
    like :class:`slam.loop.correction.GlobalBA`): reads only the keyframes' features and the
    keypoint subsets copied at detection, so it may run in any thread. ``pairs``: one (M, 2)
    array per candidate (:meth:`slam.loop.verification.LoopVerifier.match_pair`); ``ms``: its time."""

    def __init__(self, verifier, cur, cands: list[int], kfs: list, subsets: list) -> None:
        self.verifier, self.cur, self.cands, self.kfs, self.subsets = verifier, cur, cands, kfs, subsets
        self.pairs: Optional[list] = None
        self.ms = 0.0

    def run(self) -> None:
        t = time.perf_counter()
        self.pairs = [self.verifier.match_pair(self.cur, k, ic, ik) for k, (ic, ik) in zip(self.kfs, self.subsets)]
        self.ms = (time.perf_counter() - t) * 1e3


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
        self.verifier = LoopVerifier(self.cfg, camera.K, camera, matcher, cfg.mode, mapper.max_desc,
                                     dense=tracker.dense, depth=mapper.depth if self.fix_scale else None)
        self.loop_edges = np.zeros((0, 2), dtype=np.int64)  # every loop edge closed so far
        self.loops: list[dict] = []
        self.verify_ms: list[float] = []
        self.n_verified = 0  # candidates that went through geometric verification
        self._cond = threading.Condition()
        self._verified: list = []  # live: accepted loops (LoopMatch) and merges (MergeMatch) waiting for the tracking thread
        self._job: Optional[dict] = None  # {"kind": graph|gba, "task", "state": pending|running|done, "due": frame}
        #: dataset runs with verify_delay_frames > 0: keyframes whose candidates are being matched,
        #: oldest first ({"task": CandidateMatching, "kf", "state", "due"}, handed off like _job)
        self._matching: list[dict] = []
        self.match_jobs_ms: list[float] = []  # each keyframe's candidate matching in the loop-closing stage
        self._closed = False
        self._frame_no = 0  # the frame being tracked (read by the loop-closing stage's global BA)
        self.gba_runs: list[dict] = []
        #: the atlas (slam.mapping.atlas) and its merger (slam.loop.merge) when lost tracking may start
        #: new maps (set by slam.system); loops stay within a map, places shared with another map merge
        self.atlas = None
        self.merger = None

    # ================================================================== tracking thread
    def before_frame(self, frame_no: int) -> Optional[LoopWake]:
        """Before tracking frame ``frame_no``: background results that are due (the essential
        graph, then the global BA), then (dataset) detection for newly committed keyframes, or
        (live) the loops verified meanwhile."""
        self._frame_no = frame_no
        queued = self._maybe_apply(frame_no)
        if self.live:
            with self._cond:
                ready, self._verified = self._verified, []
            for lm in ready:
                queued |= self._correct(lm, frame_no) if isinstance(lm, LoopMatch) else self._merge(lm, frame_no)
        else:
            queued |= self._verify_matched(frame_no)
            for kf_id in self.mapping_schedule.drain_committed():
                if self._pipelined():
                    if self._start_matching(kf_id, frame_no):
                        queued = True
                        continue  # a keyframe with loop candidates is not also looked up for a merge
                    lm = None
                else:
                    lm = self._detect_and_verify(kf_id)
                mm = self._detect_merge(kf_id) if lm is None else None
                if lm is not None:
                    queued |= self._correct(lm, frame_no)
                elif mm is not None:
                    queued |= self._merge(mm, frame_no)
        return LoopWake() if queued else None

    # ================================================================== pipelined verification (dataset)
    def _pipelined(self) -> bool:
        return self.cfg.verify_delay_frames > 0 and self.verifier.dense is None

    def _start_matching(self, kf_id: int, frame_no: int) -> bool:
        """Detection for keyframe kf_id now; its candidates' keypoint matching queued for the
        loop-closing stage, their verification due verify_delay_frames later. True when queued."""
        with self.map.lock:
            cands, _ = self._loop_candidates(kf_id)
            if not cands:
                return False
            cur = self.map.keyframes[kf_id]
            kfs = [self.map.keyframes[k] for k in cands]
            i_cur = np.nonzero(cur.point_ids >= 0)[0]
            subsets = [(i_cur, np.nonzero(k.point_ids >= 0)[0]) for k in kfs]
        task = CandidateMatching(self.verifier, cur, cands, kfs, subsets)
        with self._cond:
            self._matching.append({"task": task, "kf": kf_id, "state": "pending", "due": frame_no + self.cfg.verify_delay_frames})
        return True

    def _claim_matching(self) -> Optional[dict]:
        with self._cond:
            for g in self._matching:
                if g["state"] == "pending":
                    g["state"] = "running"
                    return g
        return None

    def _verify_matched(self, frame_no: int, all_due: bool = False) -> bool:
        """Verify every keyframe whose matching is due at frame_no (all_due: every one), oldest
        first; the first loop found is corrected. True when a correction was queued."""
        queued = False
        while True:
            with self._cond:
                if not self._matching:
                    return queued
                due = self._matching[0]["due"]
                if self._job is not None and self._job["kind"] == "gba":
                    # the loop-closing stage runs the global BA before this matching: verify after its write-back
                    due = max(due, self._job["due"] + self.cfg.verify_delay_frames)
                if frame_no < due and not all_due:
                    return queued
                g = self._matching.pop(0)
                mine = g["state"] == "pending"
                if mine:
                    g["state"] = "running"
            if mine:  # nobody started it: run it here
                self._run(g)
            if not self._wait_done(g):
                return queued
            task: CandidateMatching = g["task"]
            self.verifier.ms["match"] += task.ms
            self.match_jobs_ms.append(task.ms)
            lm = None
            with self.map.lock:
                kf_id = g["kf"]
                if kf_id in self.map.keyframes and not self._correcting():
                    cov = covisibility(self.map)
                    joined = self._joined(kf_id, cov)
                    for cand, (ic, ik), pr in zip(task.cands, task.subsets, task.pairs):
                        if cand in self.map.keyframes and cand not in joined:
                            lm = self._verify_loop(kf_id, cand, cov, None, matched=(ic, ik, pr))
                            if lm is not None:
                                break
            if lm is not None:
                queued |= self._correct(lm, frame_no)

    def finish(self, frame_no: int = 0) -> None:
        """End of the stream (frame_no: the number of frames tracked): verify the candidates still
        being matched (a loop closed in the last frames is corrected too), then write back the
        outstanding essential graph and global BA (waiting)."""
        self._verify_matched(frame_no, all_due=True)
        for _ in range(2):  # the essential graph, then the global BA it queues
            self._maybe_apply(None)

    def _detect_and_verify(self, kf_id: int) -> Optional[LoopMatch]:
        """A verified loop for keyframe kf_id, or None (caller does not hold the map lock)."""
        return self._verify_first(kf_id, self._loop_candidates, self._verify_loop)

    def _detect_merge(self, kf_id: int):
        """A verified common place with another map (slam.loop.merge.MergeMatch), or None (caller
        does not hold the map lock)."""
        if self.merger is None:
            return None
        return self._verify_first(kf_id, self.merger.candidates, self.merger.verify)

    def _verify_first(self, kf_id: int, find, verify):
        """The first candidate of ``find(kf_id) -> (candidates, covisibility)`` that
        ``verify(kf_id, cand, covisibility, dense)`` accepts, or None. Both run under the map lock;
        with LoFTR verification (loop_closing.matcher=loftr) the image matches of every candidate
        are computed between the two, without the lock."""
        with self.map.lock:
            cands, cov = find(kf_id)
            if not cands:
                return None
            pairs = self.verifier.image_pairs(self.map, kf_id, cands)
            if pairs is None:
                return self._first_of(kf_id, cands, cov, [None] * len(cands), verify)
        dms = self.verifier.dense_match(pairs)
        with self.map.lock:
            if kf_id not in self.map.keyframes:
                return None
            return self._first_of(kf_id, cands, covisibility(self.map), dms, verify)

    def _first_of(self, kf_id: int, cands: list[int], cov, dms: list, verify):
        for cand, dm in zip(cands, dms):
            if cand in self.map.keyframes:
                found = verify(kf_id, cand, cov, dm)
                if found is not None:
                    return found
        return None

    def _loop_candidates(self, kf_id: int) -> tuple[list[int], object]:
        """Consistent loop candidates of keyframe kf_id to verify, best first, and the
        covisibility (caller holds the map lock). Detection runs (database, consistency) even
        while a correction is in flight; then nothing is verified."""
        m = self.map
        if kf_id not in m.keyframes:
            return [], None
        self.detector.forget_culled(m)
        cov = covisibility(m)
        bow = self.vocabulary.transform(m.keyframes[kf_id].desc)
        cands = self.detector.detect(kf_id, bow, cov, len(m.keyframes))
        if self.atlas is not None:  # a place of another map is a merge (slam.loop.merge), not a loop
            cands = [k for k in cands if self.atlas.map_of(k) == self.atlas.map_of(kf_id)]
        if self._correcting():  # a correction is in flight: keep the database and consistency going only
            return [], cov
        joined = self._joined(kf_id, cov)
        return [k for k in cands[: self.cfg.max_candidates] if k in m.keyframes and k not in joined], cov

    def _verify_loop(self, kf_id: int, cand: int, cov, dense, matched: Optional[tuple] = None) -> Optional[LoopMatch]:
        """Geometric verification of one loop candidate (caller holds the map lock); matched: see
        LoopVerifier.verify."""
        t = time.perf_counter()
        self.n_verified += 1
        lm = self.verifier.verify(self.map, kf_id, cand, cov.neighbours(cand, MIN_COVIS, self.cfg.neighbourhood), dense=dense,
                                  matched=matched)
        self.verify_ms.append((time.perf_counter() - t) * 1e3)
        if lm is not None:
            self.detector.groups = []  # ORB-SLAM: consistency starts over after a loop
        return lm

    def _joined(self, kf_id: int, cov) -> set:
        """Keyframes already joined to kf_id's neighbourhood by a loop edge (and their covisible
        neighbours): a candidate among them would close the same loop again."""
        if not len(self.loop_edges):
            return set()
        mine = set(cov.neighbours(kf_id, MIN_COVIS, self.cfg.neighbourhood)) | {int(kf_id)}
        out: set = set()
        for a, b in self.loop_edges.tolist():
            for x, y in ((a, b), (b, a)):
                if x in mine and cov.index(y) >= 0:
                    out |= {y, *cov.neighbours(y, MIN_COVIS, self.cfg.neighbourhood)}
        return out

    def _correcting(self) -> bool:
        with self._cond:
            return self._job is not None and self._job["kind"] == "graph"

    def _correct(self, lm: LoopMatch, frame_no: int) -> bool:
        """Start the correction of loop lm (tracking thread): propagation and fusion now, the
        essential graph queued for the loop-closing stage. True (it was queued)."""
        self._drop_gba()
        self.mapping_schedule.finish()  # no local BA result may land in the pre-loop frame afterwards
        with self.map.lock:
            if lm.cur_kf not in self.map.keyframes or lm.loop_kf not in self.map.keyframes:
                return False
            cur_frame = self.map.keyframes[lm.cur_kf].frame_index
            loop_frame = self.map.keyframes[lm.loop_kf].frame_index
            loop_side = self._loop_side_positions(lm.loop_kf)
            task = LoopCorrection(self.fix_scale, self.cfg.neighbourhood, self.cfg.loop_edge_min_shared,
                                  self.cfg.graph_iterations)
            W = task.start(self.map, lm, self.mapper._fuse_into, self.loop_edges)
            self.loop_edges = np.concatenate([self.loop_edges, task.info.loop_edges[:1]])
            self.tracker.apply_world_correction(W)
        rel = lm.cur_from_loop
        self.loops.append({
            "frame": frame_no, "cur_kf": lm.cur_kf, "loop_kf": lm.loop_kf, "cur_frame": cur_frame, "loop_frame": loop_frame,
            "ransac_inliers": lm.n_ransac, "refined_inliers": lm.n_refined, "final_inliers": lm.n_final,
            "projection_matches": lm.n_projected, "structure_inliers": lm.n_structure,
            "structure_change_deg": lm.structure_change[0], "structure_change_translation": lm.structure_change[1],
            "structure_translation_before": lm.structure_change[2],
            "cur_from_loop": rel.tolist(), "loop_side_positions": loop_side, "fused_points": task.info.n_fused, "loop_edges": int(len(task.info.loop_edges)),
            "ms": task.info.timings,
        })
        log.info("loop found at frame %d: keyframe %d (frame %d) <-> keyframe %d (frame %d), %d/%d/%d/%d inliers "
                 "(RANSAC/refined/projection/welded; the weld moved the pose %.2f deg and %.4f of %.4f map units); %d points fused; "
                 "propagation + fusion %.0f ms (tracking thread), essential graph queued", frame_no, lm.cur_kf, cur_frame,
                 lm.loop_kf, loop_frame, lm.n_ransac, lm.n_refined, lm.n_projected, lm.n_structure, *lm.structure_change,
                 task.info.n_fused, sum(task.info.timings.values()))
        with self._cond:
            self._job = {"kind": "graph", "task": task, "state": "pending", "due": frame_no + self.cfg.correction_delay_frames,
                         "loop": len(self.loops) - 1}
        return True

    def _loop_side_positions(self, loop_kf: int) -> list:
        """[[frame_index, x, y, z], ...]: the world positions (map units) of the loop keyframe and
        its covisible neighbours when the loop is accepted, before the correction moves anything:
        the map's local scale at the loop, for the report's metric loop error (caller holds the lock)."""
        ids = [loop_kf] + [k for k, _ in self.map.keyframe_covisibility(loop_kf, MIN_COVIS)[: self.cfg.neighbourhood]]
        out = []
        for k in ids:
            kf = self.map.keyframes[k]
            out.append([int(kf.frame_index), *map(float, kf.center)])
        return out

    def _merge(self, mm, frame_no: int) -> bool:
        """Merge the maps of mm (a slam.loop.merge.MergeMatch; tracking thread: an essential graph
        in flight is written back first); queue a global BA. True when one was queued."""
        self._drop_gba()
        self.mapping_schedule.finish()
        with self.map.lock:
            rec = self.merger.merge(mm, frame_no)
            if rec is None:
                return False
            self.loop_edges = np.concatenate([self.loop_edges, np.array([[rec["cur_kf"], rec["loop_kf"]]], dtype=np.int64)])
            self.detector.groups = []
            gba = self._gather_gba()
        if gba is None:
            return False
        with self._cond:
            self._queue_gba(gba, frame_no)
        return True

    def _gather_gba(self) -> Optional[GlobalBA]:
        """The background global BA's problem after a loop or a merge (caller holds the map
        lock); None when loop_closing.global_ba is off or there is nothing to optimise."""
        if not self.cfg.global_ba:
            return None
        gba = GlobalBA(self.mapper, self.cfg.global_ba_iterations)
        return gba if gba.gather() else None

    def _queue_gba(self, gba: GlobalBA, frame_no: Optional[int]) -> None:
        """gba becomes the job in flight, due global_ba_delay_frames after frame_no (None: 0;
        caller holds ``_cond``)."""
        n_kf = len(gba.problem.kf_ids) if gba.problem is not None else 0
        delay = max(self.cfg.global_ba_delay_frames, int(np.ceil(self.cfg.global_ba_delay_per_keyframe * n_kf)))
        start = frame_no if frame_no is not None else 0
        self._job = {"kind": "gba", "task": gba, "state": "pending", "due": start + delay, "queued_at": start}

    # ================================================================== background jobs hand-off
    def _claim(self) -> Optional[dict]:
        with self._cond:
            g = self._job
            if g is not None and g["state"] == "pending":
                g["state"] = "running"
                return g
        return None

    def _run(self, g: dict, background: bool = False) -> None:
        try:
            if background and g["kind"] == "gba":
                g["task"].run(pause=lambda: self._gba_pause(g))
            else:
                g["task"].run()
        finally:
            with self._cond:
                g["state"] = "done"
                self._cond.notify_all()

    def _gba_pause(self, g: dict) -> None:
        """The background global BA's pause points: wait while the frame path is busy (at most
        global_ba_yield_max_ms each); in dataset runs not in the last quarter of the frames
        before it is due, so that it is done when tracking reaches that frame; never once it has
        been told to stop (a new loop, the end of the run)."""
        if g["task"].stop.requested:
            return
        if not self.live:
            due, start = g["due"], g["queued_at"]
            if self._frame_no >= due - (due - start) // 4:
                return
        self.mapping_schedule.background_yield(self.cfg.global_ba_yield_max_ms / 1e3)

    def _wait_done(self, g: dict) -> bool:
        with self._cond:
            while g["state"] != "done":
                if self._closed:
                    return False
                self._cond.wait(0.25)
        return True

    def _drop_gba(self) -> None:
        """A new loop: stop the running global BA and forget it; an essential graph in flight is written back first."""
        with self._cond:
            g = self._job
        if g is None:
            return
        if g["kind"] == "graph":
            self._maybe_apply(None)
            with self._cond:
                g = self._job
            if g is None:
                return
        g["task"].stop.request()
        if self._claim() is None:
            self._wait_done(g)
        self.gba_runs.append({"ms": g["task"].ms, "applied": False, "stopped_by_new_loop": True})
        with self._cond:
            self._job = None

    def _maybe_apply(self, frame_no: Optional[int]) -> bool:
        """Write back the job in flight if it is due (dataset: its frame; live: done; None: now,
        waiting for it). True when an essential graph was written back and a global BA queued."""
        with self._cond:
            g = self._job
        if g is None:
            return False
        if frame_no is not None:
            if self.live and g["state"] != "done":
                return False
            if not self.live and frame_no < g["due"]:
                return False
        if self._claim() is not None:  # nobody started it: run it here
            self._run(g)
        if not self._wait_done(g):
            return False
        self.mapping_schedule.finish()
        return self._apply_graph(g, frame_no) if g["kind"] == "graph" else self._apply_gba(g, frame_no)

    def _apply_graph(self, g: dict, frame_no: Optional[int]) -> bool:
        task: LoopCorrection = g["task"]
        with self.map.lock:
            W = task.apply(self.map)
            self.tracker.apply_world_correction(W)
            gba = self._gather_gba()
        info = task.info
        self.loops[g["loop"]].update({
            "applied_at_frame": frame_no, "correction_rotation_deg": info.rotation_deg, "correction_translation": info.translation,
            "correction_scale": info.scale, "graph_edges": info.n_edges, "graph_iterations": info.iterations,
            "keyframes_added_meanwhile": info.n_late_keyframes})
        log.info("essential graph of the loop written back at frame %s: %d edges, %d iterations, %.0f ms in the loop-closing "
                 "stage, write-back %.0f ms; correction %.2f deg, %.3f, scale %.3f; %d keyframes added meanwhile took their "
                 "parent's correction", frame_no, info.n_edges, info.iterations, info.timings.get("essential_graph", 0.0),
                 info.timings.get("apply", 0.0), info.rotation_deg, info.translation, info.scale, info.n_late_keyframes)
        with self._cond:
            self._job = None
            if gba is not None:
                self._queue_gba(gba, frame_no)
        return gba is not None

    def _apply_gba(self, g: dict, frame_no: Optional[int]) -> bool:
        with self.map.lock:
            W = g["task"].apply()
            self.tracker.apply_world_correction(W)
            res = g["task"].result
        self.gba_runs.append({"ms": g["task"].ms, "applied": bool(W), "frame": frame_no,
                              "solver": self.mapper.global_solver(g["task"].problem),
                              "n_keyframes": int(len(g["task"].problem.kf_ids)),
                              "chi2_before": float(res.chi2_before), "chi2_after": float(res.chi2_after)})
        log.info("global BA after the loop over %d keyframes: chi2 %.1f -> %.1f (%.0f ms, in the background)",
                 len(g["task"].problem.kf_ids), res.chi2_before, res.chi2_after, g["task"].ms)
        with self._cond:
            self._job = None
        return False

    # ================================================================== loop-closing stage
    def on_wake(self, wake: LoopWake) -> None:
        """The loop-closing stage's work: (live) detect and verify the keyframe, then run a queued
        essential graph or global BA."""
        if self.live and wake.kf_id >= 0:
            lm = self._detect_and_verify(wake.kf_id)
            if lm is None:
                lm = self._detect_merge(wake.kf_id)
            if lm is not None:
                with self._cond:
                    self._verified.append(lm)
        while True:
            m = self._claim_matching()
            if m is None:
                break
            self._run(m)
        g = self._claim()
        if g is not None:
            self._run(g, background=True)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            g = self._job
            self._cond.notify_all()
        if g is not None and g["kind"] == "gba":
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
            # of those rejected at "matches": the learned matcher did not run (loop_closing.descriptor_prefilter)
            "rejected_by_descriptor_prefilter": len(self.verifier.prefiltered),
            "query_ms_mean": float(q.mean()), "query_ms_max": float(q.max()),
            "detection_ms_mean": float(dt.mean()), "detection_ms_max": float(dt.max()),
            "verification_ms_mean": float(v.mean()), "verification_ms_max": float(v.max()),
            # dataset runs with verify_delay_frames > 0: the keypoint matching ran in the loop-closing
            # stage (these jobs), and verification_ms is what the tracking thread spent
            "background_matching_jobs": len(self.match_jobs_ms),
            "background_matching_ms_mean": float(np.mean(self.match_jobs_ms)) if self.match_jobs_ms else 0.0,
            "verification_ms_total_by_step": {k: float(x) for k, x in self.verifier.ms.items()},
            "matcher": "loftr" if self.verifier.dense is not None else "keypoints",
            "loftr_verifications": self.verifier.n_dense,  # loop and merge candidates verified from LoFTR matches
            "loftr_match_ms_total": float(self.verifier.dense_ms),  # outside the map lock
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
