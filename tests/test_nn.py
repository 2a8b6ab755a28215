"""Nearest-neighbour matcher and descriptor distances (slam.matching.nn)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slam.matching.nn import NearestNeighborMatcher, NNConfig, distance_matrix, mutual_nearest, pairwise_distance, unpack_bits_pm1
from slam.types import Features, Matches


def popcount_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.unpackbits(x, axis=2).sum(axis=2)


def _features(desc: np.ndarray) -> Features:
    n = len(desc)
    return Features(torch.rand(n, 2) * 100, torch.rand(n), torch.from_numpy(np.ascontiguousarray(desc)), (640, 480))


def test_unpack_bits_pm1_msb_first():
    d = torch.tensor([[0b10000001, 0xFF]], dtype=torch.uint8)
    out = unpack_bits_pm1(d)
    assert out.shape == (1, 16) and out.dtype == torch.float32
    assert out[0].tolist() == [1, -1, -1, -1, -1, -1, -1, 1] + [1] * 8


@pytest.mark.parametrize("n0, n1", [(1, 1), (7, 13), (200, 150)])
def test_hamming_distance_matrix_equals_numpy_popcount(n0, n1):
    rng = np.random.default_rng(n0 + n1)
    a = rng.integers(0, 256, size=(n0, 32), dtype=np.uint8)
    b = rng.integers(0, 256, size=(n1, 32), dtype=np.uint8)
    b[0] = a[0]  # an exact duplicate: distance 0
    d = distance_matrix(torch.from_numpy(a), torch.from_numpy(b))
    assert d.shape == (n0, n1) and d.dtype == torch.float32
    np.testing.assert_array_equal(d.numpy(), popcount_hamming(a, b))
    assert d[0, 0] == 0
    # extremes
    z = np.zeros((1, 32), np.uint8)
    f = np.full((1, 32), 255, np.uint8)
    assert distance_matrix(torch.from_numpy(z), torch.from_numpy(f)).item() == 256


def test_pairwise_distance_binary_and_float():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(50, 32), dtype=np.uint8)
    b = rng.integers(0, 256, size=(50, 32), dtype=np.uint8)
    pd = pairwise_distance(a, b)
    assert pd.dtype == np.float32
    np.testing.assert_array_equal(pd, np.diag(popcount_hamming(a, b)))
    fa = rng.normal(size=(40, 64)).astype(np.float32)
    fb = rng.normal(size=(40, 64)).astype(np.float32)
    np.testing.assert_allclose(pairwise_distance(fa, fb), np.linalg.norm(fa - fb, axis=1), rtol=1e-5)


def test_float_distance_matrix_is_euclidean_for_unit_vectors():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 128)).astype(np.float32)
    b = rng.normal(size=(20, 128)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    b[3] = a[5]
    d = distance_matrix(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.linalg.norm(a[:, None] - b[None], axis=2)
    np.testing.assert_allclose(d, want, atol=2e-3)  # sqrt near 0 amplifies float32 rounding
    assert d[5, 3] < 2e-3
    assert np.all(d >= 0) and np.all(np.isfinite(d))


def _binary_setup(rng, n=60, flips=6):
    """desc1 is a shuffled, lightly corrupted copy of desc0 plus unrelated descriptors."""
    d0 = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    perm = rng.permutation(n)
    d1 = d0[perm].copy()
    bits = np.unpackbits(d1, axis=1)
    for i in range(n):
        idx = rng.choice(256, size=flips, replace=False)
        bits[i, idx] ^= 1
    d1 = np.packbits(bits, axis=1)
    extra = rng.integers(0, 256, size=(40, 32), dtype=np.uint8)
    d1 = np.concatenate([d1, extra])
    truth = np.empty(n, dtype=np.int64)
    truth[perm] = np.arange(n)  # d0[i] went to position truth[i] in d1
    return d0, d1, truth


def test_binary_matching_recovers_permutation():
    rng = np.random.default_rng(3)
    d0, d1, truth = _binary_setup(rng)
    m = NearestNeighborMatcher(NNConfig(), "cpu").match(_features(d0), _features(d1))
    assert isinstance(m, Matches)
    assert m.matches0.dtype == np.int64 and m.scores0.dtype == np.float32
    np.testing.assert_array_equal(m.matches0, truth)
    np.testing.assert_allclose(m.scores0, 1.0 - 6 / 256.0, rtol=1e-6)  # 1 - distance/bits
    assert len(m) == len(truth)


def test_max_distance_rejects_far_matches():
    rng = np.random.default_rng(4)
    d0, d1, truth = _binary_setup(rng, flips=40)
    m = NearestNeighborMatcher(NNConfig(max_distance_binary=30.0), "cpu").match(_features(d0), _features(d1))
    assert len(m) == 0 and np.all(m.scores0 == 0)
    m = NearestNeighborMatcher(NNConfig(max_distance_binary=64.0), "cpu").match(_features(d0), _features(d1))
    np.testing.assert_array_equal(m.matches0, truth)


def test_ratio_test_rejects_ambiguous_and_mutual_check():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, size=(1, 32), dtype=np.uint8)

    def flip(d, k):
        bits = np.unpackbits(d.copy(), axis=1)
        bits[0, rng.choice(256, k, replace=False)] ^= 1
        return np.packbits(bits, axis=1)

    # query a: candidates at 10 and 11 bits -> ambiguous; 10 and 40 bits -> clear
    amb = np.concatenate([flip(a, 10), flip(a, 11)])
    clear = np.concatenate([flip(a, 10), flip(a, 40)])
    nn = NearestNeighborMatcher(NNConfig(ratio=0.8, mutual=True), "cpu")
    assert nn.match_descriptors(a, amb).matches0.tolist() == [-1]
    assert nn.match_descriptors(a, clear).matches0.tolist() == [0]
    no_ratio = NearestNeighborMatcher(NNConfig(ratio=1.0, mutual=True), "cpu")
    assert no_ratio.match_descriptors(a, amb).matches0.tolist() == [0]
    # mutual: two queries share one best candidate; only the closer of them keeps it
    q = np.concatenate([flip(a, 4), flip(a, 12)])
    ref = np.concatenate([a, rng.integers(0, 256, size=(5, 32), dtype=np.uint8)])
    mutual = NearestNeighborMatcher(NNConfig(ratio=1.0, mutual=True), "cpu").match_descriptors(q, ref)
    assert mutual.matches0.tolist() == [0, -1]
    one_way = NearestNeighborMatcher(NNConfig(ratio=1.0, mutual=False), "cpu").match_descriptors(q, ref)
    assert one_way.matches0.tolist() == [0, 0]


def test_float_descriptors_matching():
    rng = np.random.default_rng(6)
    n, dim = 80, 64
    d0 = rng.normal(size=(n, dim)).astype(np.float32)
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    perm = rng.permutation(n)
    d1 = d0[perm] + rng.normal(scale=0.03, size=(n, dim)).astype(np.float32)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    truth = np.empty(n, dtype=np.int64)
    truth[perm] = np.arange(n)
    nn = NearestNeighborMatcher(NNConfig(), "cpu")
    m = nn.match(_features(d0), _features(d1))
    np.testing.assert_array_equal(m.matches0, truth)
    dist = np.linalg.norm(d0 - d1[truth], axis=1)
    np.testing.assert_allclose(m.scores0, 1.0 - dist / 2.0, atol=2e-3)
    # a tight float threshold rejects everything
    tight = NearestNeighborMatcher(NNConfig(max_distance_float=0.01), "cpu").match(_features(d0), _features(d1))
    assert len(tight) == 0
    # numpy input works as well as torch
    m2 = nn.match_descriptors(d0, d1)
    np.testing.assert_array_equal(m2.matches0, truth)


def test_empty_and_single_inputs():
    nn = NearestNeighborMatcher(NNConfig(), "cpu")
    e = np.zeros((0, 32), np.uint8)
    one = np.zeros((1, 32), np.uint8)
    m = nn.match_descriptors(e, one)
    assert m.matches0.shape == (0,)
    m = nn.match_descriptors(np.zeros((3, 32), np.uint8), e)
    assert m.matches0.tolist() == [-1, -1, -1] and m.scores0.tolist() == [0, 0, 0]
    m = nn.match_descriptors(one, one)  # only one candidate: no ratio test possible
    assert m.matches0.tolist() == [0] and m.scores0[0] == pytest.approx(1.0)


def test_match_many_equals_individual_matches():
    rng = np.random.default_rng(7)
    d0, d1, _ = _binary_setup(rng)
    _, d2, _ = _binary_setup(np.random.default_rng(8))
    nn = NearestNeighborMatcher(NNConfig(), "cpu")
    q = _features(d0)
    refs = [_features(d1), _features(d2)]
    many = nn.match_many(q, refs)
    assert len(many) == 2
    for got, ref in zip(many, refs):
        want = nn.match(q, ref)
        np.testing.assert_array_equal(got.matches0, want.matches0)
        np.testing.assert_array_equal(got.scores0, want.scores0)


def _reference_selection(dist: np.ndarray, ratio: float, max_d: float) -> np.ndarray:
    """Plain loops: first nearest neighbour, ratio against the second smallest distance of the
    row, mutual with the column's first minimum."""
    n0, n1 = dist.shape
    out = np.full(n0, -1)
    for i in range(n0):
        j = int(np.argmin(dist[i]))
        second = min((dist[i, k] for k in range(n1) if k != j), default=np.inf)
        if dist[i, j] <= max_d and dist[i, j] <= ratio * second and int(np.argmin(dist[:, j])) == i:
            out[i] = j
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpu_selection_equals_plain_loops_with_ties(seed):
    """Hamming distances tie often; the fast CPU selection must follow the first-index rule."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(120, 32), dtype=np.uint8)
    b = np.concatenate([a[rng.permutation(120)[:80]], rng.integers(0, 256, size=(50, 32), dtype=np.uint8)])
    b[:40, :30] ^= rng.integers(0, 2, size=(40, 30), dtype=np.uint8)  # near duplicates, many ties
    b[100] = b[101]  # an exact tie in a column pair
    cfg = NNConfig(ratio=0.9, max_distance_binary=100)
    m = NearestNeighborMatcher(cfg).match_descriptors(a, b)
    want = _reference_selection(popcount_hamming(a, b).astype(np.float32), 0.9, 100)
    np.testing.assert_array_equal(m.matches0, want)
    assert (m.matches0 >= 0).sum() >= 60


@pytest.mark.parametrize("binary", [True, False])
def test_mutual_nearest_equals_a_loop_over_all_pairs(binary):
    rng = np.random.default_rng(7)
    if binary:
        a = rng.integers(0, 256, (60, 32), dtype=np.uint8)
        b = rng.integers(0, 256, (90, 32), dtype=np.uint8)
        b[:40] = a[:40] ^ (rng.random((40, 32)) < 0.03).astype(np.uint8)  # 40 near copies
    else:
        a = rng.normal(size=(60, 64)).astype(np.float32)
        b = rng.normal(size=(90, 64)).astype(np.float32)
        b[:40] = a[:40] + 0.1 * rng.normal(size=(40, 64)).astype(np.float32)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
    j, dist = mutual_nearest(a, b)
    d = np.array([[pairwise_distance(a[p:p + 1], b[q:q + 1])[0] for q in range(len(b))] for p in range(len(a))])
    for p in range(len(a)):
        q = int(np.argmin(d[p]))
        assert dist[p] == pytest.approx(d[p, q], abs=1e-4)
        assert j[p] == (q if int(np.argmin(d[:, q])) == p else -1)
    assert (j[:40] == np.arange(40)).all()  # the near copies are found
    j0, d0 = mutual_nearest(a[:0], b)
    assert j0.shape == (0,) and d0.shape == (0,)
