"""Loop detection (ORB-SLAM's ``DetectLoop``): keyframe database candidates, covisible
neighbours excluded, consistency over consecutive keyframes.

All functions read the map; the caller holds ``map.lock``.

- :func:`covisibility` gives the whole covisibility graph at once, (K, K) shared map points,
  from one sparse product over the observation table (one pass, no loop over keyframes).
- :class:`LoopDetector` owns the keyframe database's contents: :meth:`LoopDetector.detect`
  adds the keyframe's bag of words after querying it, and erases culled keyframes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import sparse

from slam.loop.config import LoopClosingConfig, PlaceRecognitionConfig
from slam.loop.database import KeyframeDatabase, place_candidates
from slam.mapping.map import Map

MIN_COVIS = 15  # ORB-SLAM: keyframes sharing >= 15 map points are connected in the covisibility graph


@dataclass
class Covisibility:
    """The covisibility graph now.

    kf_ids:  (K,) int64 live keyframe ids, ascending.
    shared:  (K, K) int32 map points seen by both keyframes (diagonal = the keyframe's own).
    """

    kf_ids: np.ndarray
    shared: np.ndarray

    def index(self, kf_id: int) -> int:
        i = int(np.searchsorted(self.kf_ids, kf_id))
        return i if i < len(self.kf_ids) and self.kf_ids[i] == kf_id else -1

    def neighbours(self, kf_id: int, min_shared: int = MIN_COVIS, n: Optional[int] = None) -> list[int]:
        """Keyframes sharing >= min_shared points with kf_id, most shared first (at most n)."""
        i = self.index(kf_id)
        if i < 0:
            return []
        row = self.shared[i].copy()
        row[i] = 0
        order = np.argsort(-row, kind="stable")
        order = order[row[order] >= max(min_shared, 1)]
        return self.kf_ids[order[:n] if n is not None else order].tolist()

    def weight(self, a: int, b: int) -> int:
        i, j = self.index(a), self.index(b)
        return int(self.shared[i, j]) if i >= 0 and j >= 0 else 0


def covisibility(m: Map) -> Covisibility:
    """The covisibility graph of map ``m`` (caller holds ``m.lock``)."""
    ids = np.array(sorted(m.keyframes), dtype=np.int64)
    n = m.n_obs
    alive = m.obs_alive[:n]
    kf = m.obs_kf[:n][alive]
    pt = m.obs_pt[:n][alive]
    keep = np.isin(kf, ids)
    kf, pt = kf[keep], pt[keep]
    rows = np.searchsorted(ids, kf)
    A = sparse.csr_matrix((np.ones(len(kf), np.int32), (rows, pt)), shape=(len(ids), max(m.n_points, 1)))
    return Covisibility(ids, np.asarray((A @ A.T).toarray(), dtype=np.int32))


class LoopDetector:
    """Candidates for loop closing, one keyframe at a time, in keyframe order.

    ``groups`` keeps ORB-SLAM's consistent groups: (set of keyframe ids, consistency count) of
    the previous query; a candidate whose group (itself + its covisible neighbours) meets a
    previous group counts one more, and is returned once the count reaches ``cfg.consistency``.
    """

    def __init__(self, cfg: LoopClosingConfig, pr: PlaceRecognitionConfig, vocabulary, db: KeyframeDatabase) -> None:
        self.cfg = cfg
        self.pr = pr
        self.vocabulary = vocabulary
        self.db = db
        self.groups: list[tuple[set, int]] = []
        self.indexed: set[int] = set()
        self.n_queries = 0
        self.n_candidates = 0  # candidates that passed the database filters
        self.n_consistent = 0  # candidates that passed the consistency check
        self.query_ms: list[float] = []  # keyframe database query (place_candidates) per detection
        self.detect_ms: list[float] = []  # the whole detection (query, consistency, indexing)

    def forget_culled(self, m: Map) -> None:
        """Erase keyframes that left the map from the database (caller holds the lock)."""
        gone = [k for k in self.indexed if k not in m.keyframes]
        for k in gone:
            self.db.erase(k)
            self.indexed.discard(k)

    def add(self, kf_id: int, bow) -> None:
        self.db.add(kf_id, bow)
        self.indexed.add(int(kf_id))

    def detect(self, kf_id: int, bow, covis: Covisibility, n_keyframes: int) -> list[int]:
        """Consistent loop candidates of keyframe ``kf_id`` (best first), then index it.

        bow: its BowVector; covis: the covisibility graph (with kf_id in it)."""
        import time

        t = time.perf_counter()
        out: list[int] = []
        try:
            if n_keyframes < self.cfg.min_keyframes or len(self.indexed) == 0:
                return out
            neigh = covis.neighbours(kf_id, MIN_COVIS)
            connected = set(covis.neighbours(kf_id, 1)) | {int(kf_id)}
            if self.cfg.min_temporal_gap:
                connected |= {k for k in self.indexed if k > kf_id - self.cfg.min_temporal_gap}
            scores = self.db.scores(bow, neigh) if neigh else np.zeros(0, np.float32)
            min_score = float(scores[scores > 0].min()) if np.any(scores > 0) else 0.0
            self.n_queries += 1
            tq = time.perf_counter()
            cands = place_candidates(self.db, bow, lambda k: covis.neighbours(k, MIN_COVIS, self.pr.covisible_neighbours),
                                     exclude_ids=connected, min_score=min_score,
                                     min_common_ratio=self.pr.min_common_ratio, retain_ratio=self.pr.retain_ratio)
            self.query_ms.append((time.perf_counter() - tq) * 1e3)
            cands = [k for k, _ in cands if k not in connected and covis.index(k) >= 0]
            self.n_candidates += len(cands)
            if not cands:
                self.groups = []
                return out
            new_groups: list[tuple[set, int]] = []
            met = [False] * len(self.groups)
            for k in cands:
                group = set(covis.neighbours(k, MIN_COVIS)) | {k}
                consistent_any = False
                for gi, (prev, count) in enumerate(self.groups):
                    if group & prev:
                        consistent_any = True
                        c = count + 1
                        if not met[gi]:
                            new_groups.append((group, c))
                            met[gi] = True
                        if c >= self.cfg.consistency and k not in out:
                            out.append(k)
                if not consistent_any:
                    new_groups.append((group, 1 if self.cfg.consistency > 1 else self.cfg.consistency))
                    if self.cfg.consistency <= 1:
                        out.append(k)
            self.groups = new_groups
            self.n_consistent += len(out)
            return out[: self.cfg.max_candidates]
        finally:
            self.add(kf_id, bow)
            self.detect_ms.append((time.perf_counter() - t) * 1e3)
