"""Keyframe database: an inverted index (word -> keyframes) over bag-of-words vectors, for loop
detection and relocalisation (ORB-SLAM's KeyFrameDatabase).

A query visits only the posting lists of the query's words: it gathers them with one
concatenation and scores every keyframe at once with ``np.bincount`` (DBoW2's L1 score over the
shared words, ``sum(min(q_w, v_w))``), so its cost grows with the number of (word, keyframe)
entries the query shares, not with a Python loop over keyframes.

ORB-SLAM's candidate rule, as primitives (the loop detector and the relocaliser compose them):

1. :meth:`KeyframeDatabase.candidates`: the keyframes sharing words with the query (minus
   ``exclude_ids``), kept when they share more than ``min_common_ratio`` x the largest number of
   shared words; each with its L1 score.
2. :func:`accumulate_covisible`: each candidate scoring at least ``min_score`` is grouped with its
   covisible neighbours that are candidates too; the group scores the sum of their scores and
   is represented by its best keyframe; groups above ``retain_ratio`` x the best group are kept.

Loop detection: ``exclude_ids`` = the keyframe's covisible neighbours, ``min_score`` = the lowest
score between the keyframe and those neighbours. Relocalisation: nothing excluded, min_score 0.
All methods of the database take its one lock; :func:`accumulate_covisible` needs no lock (it
only calls ``neighbours``, so it can run while the caller holds the map's lock).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np

from slam.loop.vocabulary import BowVector

_EMPTY_I = np.zeros(0, np.int32)
_EMPTY_F = np.zeros(0, np.float32)


@dataclass
class Candidates:
    """Keyframes that share enough words with a query.

    kf_ids:   (C,) int64 keyframe ids, by score descending.
    n_common: (C,) int32 number of words each shares with the query.
    scores:   (C,) float32 L1 score in [0, 1] against the query.
    """

    kf_ids: np.ndarray
    n_common: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.kf_ids.shape[0])

    def as_dict(self) -> dict[int, float]:
        """{kf_id: score}."""
        return dict(zip(self.kf_ids.tolist(), self.scores.tolist()))


class KeyframeDatabase:
    """Inverted index of keyframe BowVectors; thread-safe (one lock).

    Keyframes are referred to by their integer id. Internally each keyframe has a slot (a small
    integer reused after erase) so that scores accumulate into dense arrays.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._slots: dict[int, np.ndarray] = {}  # word -> (n,) int32 slots of the keyframes holding it
        self._weights: dict[int, np.ndarray] = {}  # word -> (n,) float32 their weights
        self._slot_of: dict[int, int] = {}
        self._kf_of_slot = np.zeros(0, np.int64)  # slot -> kf id, -1 when free
        self._free: list[int] = []
        self._bows: dict[int, BowVector] = {}

    # ------------------------------------------------------------------ updates
    def add(self, kf_id: int, bow: BowVector) -> None:
        """Index keyframe ``kf_id`` (a new id; re-adding an indexed id replaces its vector)."""
        kf_id = int(kf_id)
        with self._lock:
            if kf_id in self._slot_of:
                self._erase_locked(kf_id)
            if self._free:
                slot = self._free.pop()
                self._kf_of_slot[slot] = kf_id
            else:
                slot = len(self._kf_of_slot)
                self._kf_of_slot = np.append(self._kf_of_slot, kf_id)
            self._slot_of[kf_id] = slot
            self._bows[kf_id] = bow
            s = np.array([slot], np.int32)
            for w, x in zip(bow.words.tolist(), bow.weights.tolist()):
                old = self._slots.get(w)
                if old is None:
                    self._slots[w] = s
                    self._weights[w] = np.array([x], np.float32)
                else:
                    self._slots[w] = np.append(old, s)
                    self._weights[w] = np.append(self._weights[w], np.float32(x))

    def erase(self, kf_id: int) -> bool:
        """Remove keyframe ``kf_id`` (culled, or merged away). False when it was not indexed."""
        with self._lock:
            return self._erase_locked(int(kf_id))

    def _erase_locked(self, kf_id: int) -> bool:
        slot = self._slot_of.pop(kf_id, None)
        if slot is None:
            return False
        bow = self._bows.pop(kf_id)
        for w in bow.words.tolist():
            keep = self._slots[w] != slot
            if keep.all():
                continue
            if not keep.any():
                del self._slots[w], self._weights[w]
            else:
                self._slots[w] = self._slots[w][keep]
                self._weights[w] = self._weights[w][keep]
        self._kf_of_slot[slot] = -1
        self._free.append(slot)
        return True

    def clear(self) -> None:
        with self._lock:
            self._reset()

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, kf_id: int) -> bool:
        return int(kf_id) in self._slot_of

    def bow(self, kf_id: int) -> Optional[BowVector]:
        """The indexed vector of ``kf_id``, or None."""
        return self._bows.get(int(kf_id))

    def keyframes_with_word(self, word: int) -> list[int]:
        """Ids of the keyframes whose vectors hold ``word`` (the inverted index entry)."""
        with self._lock:
            return self._kf_of_slot[self._slots.get(int(word), _EMPTY_I)].tolist()

    def _shared_locked(self, bow: BowVector, exclude_ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(common (S,) int64, score (S,) float64) per slot, -1 common for excluded/free slots."""
        n = len(self._kf_of_slot)
        slots, weights, qw = [], [], []
        for w, x in zip(bow.words.tolist(), bow.weights.tolist()):
            s = self._slots.get(w)
            if s is not None:
                slots.append(s)
                weights.append(self._weights[w])
                qw.append(x)
        if not slots:
            return np.zeros(n, np.int64), np.zeros(n)
        lens = [len(s) for s in slots]
        sl = np.concatenate(slots)
        both = np.minimum(np.concatenate(weights), np.repeat(np.asarray(qw, np.float32), lens))
        common = np.bincount(sl, minlength=n)
        score = np.bincount(sl, weights=both, minlength=n)
        for k in exclude_ids:
            slot = self._slot_of.get(int(k))
            if slot is not None:
                common[slot] = -1
        return common, score

    def query(self, bow: BowVector, max_results: int = 10, exclude_ids: Iterable[int] = (),
              min_score: float = 0.0) -> list[tuple[int, float]]:
        """The ``max_results`` best keyframes by L1 score: [(kf_id, score), ...] best first,
        only keyframes sharing at least one word, scoring >= ``min_score``, not in ``exclude_ids``."""
        with self._lock:
            common, score = self._shared_locked(bow, exclude_ids)
            ok = np.nonzero((common > 0) & (score >= min_score))[0]
            if max_results is not None and len(ok) > max_results:
                ok = ok[np.argpartition(-score[ok], max_results - 1)[:max_results]]
            ok = ok[np.argsort(-score[ok], kind="stable")]
            return list(zip(self._kf_of_slot[ok].tolist(), score[ok].astype(np.float32).tolist()))

    def candidates(self, bow: BowVector, exclude_ids: Iterable[int] = (), min_common_ratio: float = 0.8,
                   min_common: int = 1) -> Candidates:
        """ORB-SLAM's first filter: keyframes (not in ``exclude_ids``) sharing more than
        ``min_common_ratio`` x the largest number of words any of them shares with ``bow``, and
        at least ``min_common``; with their L1 scores, best first."""
        with self._lock:
            common, score = self._shared_locked(bow, exclude_ids)
            if len(common) == 0 or common.max() <= 0:
                return Candidates(np.zeros(0, np.int64), _EMPTY_I, _EMPTY_F)
            cmax = int(common.max())
            ok = (common >= max(int(min_common), 1)) & ((common > min_common_ratio * cmax) | (common == cmax))
            ok = np.nonzero(ok)[0]
            ok = ok[np.argsort(-score[ok], kind="stable")]
            return Candidates(self._kf_of_slot[ok].copy(), common[ok].astype(np.int32), score[ok].astype(np.float32))

    def scores(self, bow: BowVector, kf_ids: Iterable[int]) -> np.ndarray:
        """(n,) float32 L1 score of ``bow`` against each of ``kf_ids`` (0 for an id not indexed):
        e.g. the minimum over a keyframe's covisible neighbours is ORB-SLAM's loop min_score."""
        ids = [int(k) for k in kf_ids]
        with self._lock:
            _, score = self._shared_locked(bow, ())
            out = np.zeros(len(ids), np.float32)
            for i, k in enumerate(ids):
                slot = self._slot_of.get(k)
                if slot is not None and slot < len(score):
                    out[i] = score[slot]
            return out


def accumulate_covisible(cands: Candidates, neighbours: Callable[[int], Iterable[int]], min_score: float = 0.0,
                         retain_ratio: float = 0.75, max_results: Optional[int] = None) -> list[tuple[int, float]]:
    """ORB-SLAM's second filter: group each candidate scoring >= ``min_score`` with its covisible
    neighbours that are candidates too (whatever their score), sum their scores, and let the
    group's best-scoring keyframe represent it; keep the groups whose summed score exceeds
    ``retain_ratio`` x the best group's.

    neighbours: kf_id -> ids of its best covisible keyframes (ORB-SLAM takes 10).
    Returns [(kf_id, accumulated score), ...] by accumulated score descending, each keyframe
    once (at most ``max_results``)."""
    score_of = cands.as_dict()
    groups: list[tuple[float, int]] = []
    for kf, s in zip(cands.kf_ids.tolist(), cands.scores.tolist()):
        if s < min_score:
            continue
        acc, best, best_s = s, kf, s
        for nb in neighbours(kf):
            ns = score_of.get(int(nb))
            if ns is None or int(nb) == kf:
                continue
            acc += ns
            if ns > best_s:
                best, best_s = int(nb), ns
        groups.append((acc, best))
    if not groups:
        return []
    best_acc = max(a for a, _ in groups)
    out: dict[int, float] = {}
    for acc, kf in sorted(groups, key=lambda g: -g[0]):
        if acc > retain_ratio * best_acc or acc == best_acc:
            out.setdefault(kf, acc)
    items = list(out.items())
    return items[:max_results] if max_results is not None else items
