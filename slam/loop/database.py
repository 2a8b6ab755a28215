"""Keyframe database: an inverted index (word -> keyframes) over bag-of-words vectors, for loop
detection and relocalisation (ORB-SLAM's KeyFrameDatabase).

A query visits only the posting lists of the query's words: it gathers them in one vectorised
step and scores every keyframe at once with ``np.bincount`` (DBoW2's L1 score over the shared
words, ``sum(min(q_w, v_w))``), so its cost grows with the number of (word, keyframe) entries
the query shares, with no Python loop over words or keyframes.

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

from slam.errors import InputError
from slam.loop.vocabulary import BowVector

_EMPTY_I = np.zeros(0, np.int32)
_EMPTY_F = np.zeros(0, np.float32)


def _check_bow(bow: BowVector) -> None:
    if bow.words.shape != bow.weights.shape or bow.words.ndim != 1 or np.any(np.diff(bow.words) <= 0):
        raise InputError(f"a BowVector needs (M,) sorted unique words and (M,) weights, got shapes "
                         f"{bow.words.shape} and {bow.weights.shape}; make it with Vocabulary.transform")


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

    Keyframes are referred to by their integer id; internally each has a slot (a small integer,
    reused once its entries have left the index) so that scores accumulate into dense arrays.
    The index is a word-sorted table of (word, slot, weight) entries with a CSR row pointer per
    word: a query gathers the rows of its words in one vectorised step. New keyframes wait in a
    small delta list (scored one by one) and are merged into the table in batches of
    ``merge_every`` (also erased ones are purged in batches), so add/erase cost O(entries / batch).
    """

    def __init__(self, merge_every: int = 16) -> None:
        self._lock = threading.Lock()
        self.merge_every = max(int(merge_every), 1)
        self._reset()

    def _reset(self) -> None:
        self._bows: dict[int, BowVector] = {}
        self._slot_of: dict[int, int] = {}
        self._kf_of_slot = np.zeros(0, np.int64)  # slot -> kf id, -1 when free or erased
        self._free: list[int] = []  # slots with no entry left in the table
        self._delta: list[int] = []  # slots added since the last merge (not in the table)
        self._delta_cache: Optional[tuple] = None  # concatenated delta entries, None = stale
        self._dead: list[int] = []  # erased slots whose entries are still in the table
        self._word = np.zeros(0, np.int32)  # (E,) entries sorted by word
        self._slot = np.zeros(0, np.int32)
        self._weight = np.zeros(0, np.float32)
        self._indptr = np.zeros(1, np.int64)  # (W+1,) entries of word w: [indptr[w], indptr[w+1])

    # ------------------------------------------------------------------ updates
    def add(self, kf_id: int, bow: BowVector) -> None:
        """Index keyframe ``kf_id`` (re-adding an indexed id replaces its vector). The vector is
        kept by reference: do not modify its arrays afterwards."""
        kf_id = int(kf_id)
        _check_bow(bow)
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
            self._delta.append(slot)
            self._delta_cache = None
            if len(self._delta) >= self.merge_every:
                self._merge_locked()

    def erase(self, kf_id: int) -> bool:
        """Remove keyframe ``kf_id`` (culled, or merged away). False when it was not indexed."""
        with self._lock:
            return self._erase_locked(int(kf_id))

    def _erase_locked(self, kf_id: int) -> bool:
        slot = self._slot_of.pop(kf_id, None)
        if slot is None:
            return False
        del self._bows[kf_id]
        self._kf_of_slot[slot] = -1
        if slot in self._delta:
            self._delta.remove(slot)
            self._delta_cache = None
            self._free.append(slot)
        else:
            self._dead.append(slot)
            if len(self._dead) >= self.merge_every:
                self._merge_locked()
        return True

    def _merge_locked(self) -> None:
        """Purge the erased keyframes' entries and insert the delta's into the table."""
        if self._dead:
            dead = np.zeros(len(self._kf_of_slot), bool)
            dead[self._dead] = True
            keep = ~dead[self._slot]
            self._word, self._slot, self._weight = self._word[keep], self._slot[keep], self._weight[keep]
            self._free += self._dead
            self._dead = []
        if self._delta:
            kfs = self._kf_of_slot[self._delta].tolist()
            bows = [self._bows[k] for k in kfs]
            w = np.concatenate([b.words for b in bows])
            sl = np.repeat(np.asarray(self._delta, np.int32), [len(b) for b in bows])
            x = np.concatenate([b.weights for b in bows])
            order = np.argsort(w, kind="stable")
            w, sl, x = w[order], sl[order], x[order]
            pos = np.searchsorted(self._word, w, side="right")
            self._word = np.insert(self._word, pos, w)
            self._slot = np.insert(self._slot, pos, sl)
            self._weight = np.insert(self._weight, pos, x)
            self._delta = []
            self._delta_cache = None
        n_words = max(len(self._indptr) - 1, int(self._word[-1]) + 1 if len(self._word) else 0)
        self._indptr = np.zeros(n_words + 1, np.int64)
        np.cumsum(np.bincount(self._word, minlength=n_words), out=self._indptr[1:])

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
        word = int(word)
        with self._lock:
            out = []
            if word < len(self._indptr) - 1:
                out = self._kf_of_slot[self._slot[self._indptr[word]:self._indptr[word + 1]]].tolist()
            out += [int(self._kf_of_slot[s]) for s in self._delta
                    if np.any(self._bows[int(self._kf_of_slot[s])].words == word)]
            return sorted(k for k in out if k >= 0)

    def _delta_entries_locked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(words, slots, weights) of the keyframes waiting in the delta, concatenated (cached)."""
        if self._delta_cache is None:
            bows = [self._bows[int(self._kf_of_slot[s])] for s in self._delta]
            self._delta_cache = (np.concatenate([b.words for b in bows]),
                                 np.repeat(np.asarray(self._delta, np.int64), [len(b) for b in bows]),
                                 np.concatenate([b.weights for b in bows]))
        return self._delta_cache

    def _shared_locked(self, bow: BowVector, exclude_ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(common (S,) int64 words shared, score (S,) float64 L1 score) per slot; common is 0
        for free/erased slots and -1 for excluded ones."""
        n = len(self._kf_of_slot)
        qw = bow.words[bow.words < len(self._indptr) - 1]
        qx = bow.weights[bow.words < len(self._indptr) - 1]
        start, stop = self._indptr[qw], self._indptr[qw + 1]
        lens = stop - start
        tot = int(lens.sum())
        if tot:
            idx = np.repeat(start - (np.cumsum(lens) - lens), lens) + np.arange(tot)
            sl = self._slot[idx]
            common = np.bincount(sl, minlength=n)
            score = np.bincount(sl, weights=np.minimum(self._weight[idx], np.repeat(qx, lens)), minlength=n)
        else:
            common, score = np.zeros(n, np.int64), np.zeros(n)
        if self._delta and len(bow):
            dw, ds, dx = self._delta_entries_locked()
            pos = np.minimum(np.searchsorted(bow.words, dw), len(bow) - 1)
            hit = bow.words[pos] == dw
            common += np.bincount(ds[hit], minlength=n)
            score += np.bincount(ds[hit], weights=np.minimum(dx[hit], bow.weights[pos[hit]]), minlength=n)
        if self._dead:
            common[self._dead] = 0
            score[self._dead] = 0.0
        for k in exclude_ids:
            slot = self._slot_of.get(int(k))
            if slot is not None:
                common[slot] = -1
        return common, score

    def query(self, bow: BowVector, max_results: int = 10, exclude_ids: Iterable[int] = (),
              min_score: float = 0.0) -> list[tuple[int, float]]:
        """The ``max_results`` best keyframes by L1 score: [(kf_id, score), ...] best first,
        only keyframes sharing at least one word, scoring >= ``min_score``, not in ``exclude_ids``."""
        _check_bow(bow)
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
        _check_bow(bow)
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


def place_candidates(db: KeyframeDatabase, bow: BowVector, neighbours: Callable[[int], Iterable[int]],
                     exclude_ids: Iterable[int] = (), min_score: float = 0.0, min_common_ratio: float = 0.8,
                     retain_ratio: float = 0.75, max_results: Optional[int] = None) -> list[tuple[int, float]]:
    """ORB-SLAM's whole candidate rule: :meth:`KeyframeDatabase.candidates` then
    :func:`accumulate_covisible`. [(kf_id, accumulated score), ...] best first.

    Relocalisation: ``place_candidates(db, frame_bow, best_covisible)`` (nothing excluded).
    Loop detection: ``exclude_ids`` = the keyframe's covisible neighbours (and itself),
    ``min_score`` = ``db.scores(kf_bow, neighbours).min()``; then the caller's consistency check."""
    cands = db.candidates(bow, exclude_ids=exclude_ids, min_common_ratio=min_common_ratio)
    return accumulate_covisible(cands, neighbours, min_score=min_score, retain_ratio=retain_ratio,
                                max_results=max_results)
