"""Keyframe database: the inverted index stays consistent with brute force through adds and
erases, and ORB-SLAM's candidate rule (shared words, then covisibility groups) is applied."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from slam.errors import InputError
from slam.loop.database import (
    Candidates,
    KeyframeDatabase,
    accumulate_covisible,
    place_candidates,
)
from slam.loop.vocabulary import BowVector, l1_score


def _random_bow(rng, n_vocab=400, n_words=60) -> BowVector:
    words = np.sort(rng.choice(n_vocab, size=n_words, replace=False)).astype(np.int32)
    w = rng.random(n_words).astype(np.float32) + 0.01
    return BowVector(words, (w / w.sum()).astype(np.float32))


def _brute(q: BowVector, bows: dict[int, BowVector]) -> dict[int, tuple[int, float]]:
    out = {}
    for k, b in bows.items():
        common = len(np.intersect1d(q.words, b.words))
        if common:
            out[k] = (common, l1_score(q, b))
    return out


@pytest.mark.parametrize("merge_every", [1, 5, 16])
def test_add_erase_query_match_brute_force(merge_every):
    rng = np.random.default_rng(merge_every)
    db = KeyframeDatabase(merge_every=merge_every)
    live: dict[int, BowVector] = {}
    next_id = 100
    for step in range(300):
        if live and rng.random() < 0.3:
            k = int(rng.choice(list(live)))
            assert db.erase(k)
            del live[k]
        else:
            live[next_id] = _random_bow(rng)
            db.add(next_id, live[next_id])
            next_id += 1
        if step % 7 == 0:
            q = _random_bow(rng)
            ref = _brute(q, live)
            got = dict(db.query(q, max_results=None))
            assert set(got) == set(ref)
            for k, s in got.items():
                assert s == pytest.approx(ref[k][1], abs=1e-5)
            top = db.query(q, max_results=5)
            best = sorted(ref.items(), key=lambda kv: -kv[1][1])[:5]
            assert [k for k, _ in top] == [k for k, _ in best]
    assert len(db) == len(live)
    # the inverted index entry of a word lists exactly the live keyframes holding it
    for w in range(0, 400, 37):
        assert sorted(db.keyframes_with_word(w)) == sorted(k for k, b in live.items() if w in b.words)
    assert not db.erase(-5)


def test_query_filters_and_reuse_of_slots():
    rng = np.random.default_rng(1)
    db = KeyframeDatabase()
    bows = {i: _random_bow(rng) for i in range(10)}
    for i, b in bows.items():
        db.add(i, b)
    q = bows[3]
    res = db.query(q, max_results=3)
    assert res[0][0] == 3 and res[0][1] == pytest.approx(1.0, abs=1e-5)
    assert 3 not in dict(db.query(q, exclude_ids=[3, 4]))
    assert all(s >= 0.2 for _, s in db.query(q, max_results=None, min_score=0.2))
    db.erase(3)
    db.add(42, bows[3])  # takes the freed slot
    assert db.query(q, max_results=1)[0][0] == 42
    db.add(42, bows[5])  # re-adding replaces the vector
    assert db.query(bows[5], max_results=1)[0][0] in (5, 42)
    assert db.scores(bows[5], [5, 42, 999]).tolist()[:2] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert db.scores(bows[5], [999])[0] == 0.0
    db.clear()
    assert len(db) == 0 and db.query(q) == []
    with pytest.raises(InputError, match="sorted"):
        db.add(1, BowVector(np.array([3, 1], np.int32), np.array([0.5, 0.5], np.float32)))


def test_candidates_common_word_rule():
    db = KeyframeDatabase()
    q = BowVector(np.arange(10, dtype=np.int32), np.full(10, 0.1, np.float32))
    # keyframe k shares k words with the query
    for k in range(1, 11):
        words = np.concatenate([np.arange(k), 100 + np.arange(10 - k)]).astype(np.int32)
        db.add(k, BowVector(words, np.full(10, 0.1, np.float32)))
    c = db.candidates(q, min_common_ratio=0.8)
    assert sorted(c.kf_ids.tolist()) == [9, 10]  # more than 0.8 * 10 shared words
    assert c.kf_ids[0] == 10 and c.scores[0] == pytest.approx(1.0, abs=1e-5)
    c = db.candidates(q, exclude_ids=[10], min_common_ratio=0.8)
    assert sorted(c.kf_ids.tolist()) == [8, 9]  # the rule is relative to the best remaining
    assert len(db.candidates(q, min_common_ratio=0.0)) == 10
    assert len(db.candidates(BowVector(np.array([500], np.int32), np.ones(1, np.float32)))) == 0


def test_accumulate_covisible_by_hand():
    cands = Candidates(np.array([1, 2, 3, 7]), np.array([9, 9, 9, 9], np.int32), np.array([0.30, 0.25, 0.10, 0.20], np.float32))
    cov = {1: [2, 5], 2: [1, 3], 3: [2], 7: [8]}
    got = accumulate_covisible(cands, lambda k: cov.get(k, []), min_score=0.15, retain_ratio=0.75)
    # groups: 1 -> 0.30+0.25 (best 1); 2 -> 0.25+0.30+0.10 = 0.65 (best 1); 3 is below min_score;
    # 7 -> 0.20 (< 0.75 * 0.65); keyframe 1 represents the best group once
    assert [k for k, _ in got] == [1]
    assert got[0][1] == pytest.approx(0.65, abs=1e-6)
    got = accumulate_covisible(cands, lambda k: cov.get(k, []), min_score=0.0, retain_ratio=0.0)
    # 3 now counts: 0.10 + 0.25 from neighbour 2, which represents that group
    assert [(k, round(a, 6)) for k, a in got] == [(1, 0.65), (2, 0.35), (7, 0.2)]
    assert accumulate_covisible(Candidates(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)),
                                lambda k: []) == []


def test_concurrent_add_erase_query():
    rng = np.random.default_rng(2)
    db = KeyframeDatabase()
    bows = [_random_bow(rng) for _ in range(200)]
    errors = []

    def writer():
        try:
            for i, b in enumerate(bows):
                db.add(i, b)
                if i % 3 == 0:
                    db.erase(i)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def reader():
        try:
            for b in bows[:100]:
                for k, s in db.query(b, max_results=None):
                    assert 0.0 < s <= 1.0 + 1e-5
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    ts = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(db) == sum(1 for i in range(200) if i % 3)
    q = bows[5]
    ref = _brute(q, {i: b for i, b in enumerate(bows) if i % 3})
    assert set(dict(db.query(q, max_results=None))) == set(ref)


def test_place_candidates_relocalisation_and_loop_rules():
    """Two places, each a chain of covisible keyframes; a query of place B returns B's best
    keyframe, and excluding B's keyframes (the loop rule) leaves nothing above place A's noise."""
    rng = np.random.default_rng(3)
    base_a, base_b = _random_bow(rng, n_words=80), _random_bow(rng, n_words=80)
    db = KeyframeDatabase()
    cov = {}
    for place, base, ids in (("a", base_a, range(0, 5)), ("b", base_b, range(10, 15))):
        for k in ids:
            keep = rng.random(len(base)) < 0.8  # each keyframe sees 80 % of the place's words
            w = base.weights[keep]
            db.add(k, BowVector(base.words[keep], (w / w.sum()).astype(np.float32)))
            cov[k] = [j for j in ids if j != k]
    q = base_b
    got = place_candidates(db, q, lambda k: cov[k])
    assert got and all(10 <= k < 15 for k, _ in got)
    nb = cov[12] + [12]
    min_score = float(db.scores(q, cov[12]).min())
    assert place_candidates(db, q, lambda k: cov[k], exclude_ids=nb, min_score=min_score) == []
