"""Guided matching by projection (slam.matching.guided)."""
from __future__ import annotations

import numpy as np
import pytest

from slam.matching.guided import candidate_pairs, search_by_projection

D_BITS = 32  # bytes per ORB descriptor


# ------------------------------------------------------------------ candidate_pairs
def brute_pairs(proj, kp, radius, avail=None):
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(proj),))
    d2 = ((proj[:, None, :] - kp[None, :, :]) ** 2).sum(-1)
    ok = d2 <= r[:, None] ** 2
    if avail is not None:
        ok &= avail[None, :]
    pi, ki = np.nonzero(ok)
    return set(zip(pi.tolist(), ki.tolist()))


@pytest.mark.parametrize("seed", range(8))
def test_candidate_pairs_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    P, N = int(rng.integers(1, 300)), int(rng.integers(1, 400))
    kp = rng.uniform(0, 640, size=(N, 2)) * [1, 0.75]
    proj = rng.uniform(-40, 680, size=(P, 2))
    # some points exactly on keypoints, and some far outside the image
    k = min(P, N, 20)
    proj[:k] = kp[:k]
    proj[k: k + 5] = [[-500.0, 10.0], [5000.0, 300.0], [320.0, -900.0], [100.0, 3000.0], [-1e4, -1e4]][: max(0, min(5, P - k))]
    radius = rng.uniform(0, 40, size=P)
    avail = rng.random(N) < 0.7
    pi, ki = candidate_pairs(proj, kp, radius, avail)
    assert pi.dtype == np.int64 and ki.dtype == np.int64
    got = list(zip(pi.tolist(), ki.tolist()))
    assert len(got) == len(set(got)), "duplicate pairs"
    assert set(got) == brute_pairs(proj, kp, radius, avail)


@pytest.mark.parametrize("radius", [0.5, 3.0, 15.0, 100.0])
def test_candidate_pairs_scalar_radius_no_mask(radius):
    rng = np.random.default_rng(42)
    kp = rng.uniform(0, 200, size=(250, 2))
    proj = rng.uniform(-10, 210, size=(180, 2))
    pi, ki = candidate_pairs(proj, kp, radius)
    assert set(zip(pi.tolist(), ki.tolist())) == brute_pairs(proj, kp, radius)


def test_candidate_pairs_boundary_is_inclusive_and_empty_inputs():
    kp = np.array([[10.0, 10.0], [13.0, 14.0]])
    proj = np.array([[10.0, 10.0]])
    pi, ki = candidate_pairs(proj, kp, 5.0)  # second keypoint exactly at distance 5
    assert sorted(ki.tolist()) == [0, 1]
    pi, ki = candidate_pairs(proj, kp, 4.999)
    assert ki.tolist() == [0]
    for args in ((np.zeros((0, 2)), kp, 5.0), (proj, np.zeros((0, 2)), 5.0)):
        pi, ki = candidate_pairs(*args)
        assert len(pi) == 0 and len(ki) == 0
    pi, ki = candidate_pairs(proj, kp, 5.0, np.zeros(2, dtype=bool))
    assert len(pi) == 0


# ------------------------------------------------------------------ search_by_projection
def brute_search(proj, pdesc, kp, kdesc, radius, max_d, ratio, avail=None):
    """Reference implementation: dense distances, per-point best/second, one point per keypoint."""
    P, N = len(proj), len(kp)
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (P,))
    geo = ((proj[:, None] - kp[None]) ** 2).sum(-1) <= r[:, None] ** 2
    if avail is not None:
        geo &= avail[None]
    dd = np.sqrt(((pdesc[:, None].astype(np.float64) - kdesc[None]) ** 2).sum(-1))
    dd = np.where(geo, dd, np.inf)
    claim = np.full(P, -1)
    cd = np.full(P, np.inf)
    for p in range(P):
        order = np.argsort(dd[p])
        b = dd[p, order[0]] if N else np.inf
        s = dd[p, order[1]] if N > 1 else np.inf
        if np.isfinite(b) and b <= max_d and (ratio >= 1.0 or b <= ratio * s):
            claim[p], cd[p] = order[0], b
    out = np.full(P, -1)
    for k in np.unique(claim[claim >= 0]):
        ps = np.nonzero(claim == k)[0]
        win = ps[np.argmin(cd[ps])]
        out[win] = k
    return out


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_search_by_projection_equals_reference_float(seed):
    rng = np.random.default_rng(10 + seed)
    P, N, dim = 150, 300, 16
    kp = rng.uniform(0, 300, size=(N, 2))
    kdesc = _unit(rng.normal(size=(N, dim)))
    truth = rng.choice(N, size=P, replace=False)
    proj = kp[truth] + rng.normal(scale=1.0, size=(P, 2))
    pdesc = _unit(kdesc[truth] + rng.normal(scale=0.25, size=(P, dim)))
    radius = rng.uniform(3, 20, size=P)
    avail = rng.random(N) < 0.85
    for ratio in (0.8, 1.0):
        m, d = search_by_projection(proj, pdesc, kp, kdesc, radius, 1.2, ratio, kp_available=avail)
        want = brute_search(proj, pdesc, kp, kdesc, radius, 1.2, ratio, avail)
        np.testing.assert_array_equal(m, want)
        ok = m >= 0
        np.testing.assert_allclose(d[ok], np.linalg.norm(pdesc[ok] - kdesc[m[ok]], axis=1), rtol=1e-5)
        assert np.all(np.isinf(d[~ok]))
        assert len(np.unique(m[ok])) == ok.sum()  # one point per keypoint
        assert np.all(avail[m[ok]])
    # most points find their true keypoint
    m, _ = search_by_projection(proj, pdesc, kp, kdesc, radius, 1.2, 0.8, kp_available=avail)
    assert np.mean(m[avail[truth]] == truth[avail[truth]]) > 0.8


def _flip_bits(desc: np.ndarray, n_bits: int, rng) -> np.ndarray:
    out = desc.copy()
    bits = np.unpackbits(out)
    idx = rng.choice(bits.size, size=n_bits, replace=False)
    bits[idx] ^= 1
    return np.packbits(bits)


def _binary_scene(rng):
    """12 points with exactly known answers; returns proj, pdesc, kp, kdesc, expected."""
    P = 12
    pdesc = rng.integers(0, 256, size=(P, D_BITS), dtype=np.uint8)
    proj = np.stack([np.arange(P) * 50.0 + 20, np.full(P, 100.0)], 1)
    kps, kds = [], []
    expected = np.full(P, -1)

    def add(uv, desc):
        kps.append(np.asarray(uv, float))
        kds.append(desc)
        return len(kps) - 1

    for p in range(P):  # points 0..5: one clear true match at 2 px, distance 5 bits
        if p < 6:
            expected[p] = add(proj[p] + [2, 0], _flip_bits(pdesc[p], 5, rng))
    # point 6: its true keypoint is 30 px away, outside the 10 px radius
    add(proj[6] + [30, 0], _flip_bits(pdesc[6], 2, rng))
    # point 7: two similar candidates (10 and 11 bits): 10 > 0.9 * 11, ambiguous for the ratio test
    k7a = add(proj[7] + [1, 1], _flip_bits(pdesc[7], 10, rng))
    add(proj[7] + [-1, 1], _flip_bits(pdesc[7], 11, rng))
    # point 8: only candidate is 120 bits away (> max 50)
    add(proj[8] + [0, 3], _flip_bits(pdesc[8], 120, rng))
    # points 9 and 10 project onto the same keypoint; 9 is closer in descriptor space
    proj[10] = proj[9] + [6, 0]
    shared = add(proj[9] + [3, 0], _flip_bits(pdesc[9], 3, rng))
    pdesc[10] = _flip_bits(kds[shared], 20, rng)
    expected[9] = shared
    # point 11: true keypoint unavailable (already matched), a far-off descriptor is nearby
    k11 = add(proj[11] + [1, 0], _flip_bits(pdesc[11], 4, rng))
    add(proj[11] + [0, 4], _flip_bits(pdesc[11], 110, rng))
    # distractors far from every projection
    for _ in range(30):
        add(rng.uniform([0, 300], [640, 480]), rng.integers(0, 256, size=D_BITS, dtype=np.uint8))
    kp = np.array(kps)
    kdesc = np.array(kds, dtype=np.uint8)
    avail = np.ones(len(kp), dtype=bool)
    avail[k11] = False
    return proj, pdesc, kp, kdesc, expected, avail, k7a


def test_search_by_projection_binary_known_answers():
    rng = np.random.default_rng(3)
    proj, pdesc, kp, kdesc, expected, avail, k7a = _binary_scene(rng)
    m, d = search_by_projection(proj, pdesc, kp, kdesc, 10.0, 50.0, ratio=0.9, kp_available=avail)
    assert m.dtype == np.int64 and d.dtype == np.float32
    np.testing.assert_array_equal(m, expected)
    ok = m >= 0
    hamming = np.unpackbits(pdesc[ok] ^ kdesc[m[ok]], axis=1).sum(1)
    np.testing.assert_array_equal(d[ok], hamming)
    np.testing.assert_array_equal(d[:6], [5] * 6)
    assert d[9] == 3
    assert np.all(np.isinf(d[~ok]))


def test_search_by_projection_ratio_disabled_accepts_ambiguous():
    rng = np.random.default_rng(3)
    proj, pdesc, kp, kdesc, expected, avail, k7a = _binary_scene(rng)
    m, _ = search_by_projection(proj, pdesc, kp, kdesc, 10.0, 50.0, ratio=1.0, kp_available=avail)
    assert m[7] == k7a  # the better of the two
    expected = expected.copy()
    expected[7] = k7a
    np.testing.assert_array_equal(m, expected)


def test_search_by_projection_radius_and_availability():
    rng = np.random.default_rng(3)
    proj, pdesc, kp, kdesc, expected, avail, _ = _binary_scene(rng)
    # per-point radius: point 6 gets 35 px and finds its far keypoint
    radius = np.full(len(proj), 10.0)
    radius[6] = 35.0
    m, _ = search_by_projection(proj, pdesc, kp, kdesc, radius, 50.0, 0.9, kp_available=avail)
    assert m[6] >= 0 and np.allclose(kp[m[6]], proj[6] + [30, 0])
    # with every keypoint available, point 11 gets its true keypoint
    m, _ = search_by_projection(proj, pdesc, kp, kdesc, 10.0, 50.0, 0.9)
    assert m[11] >= 0 and np.allclose(kp[m[11]], proj[11] + [1, 0])
    # nothing available: nothing matched
    m, d = search_by_projection(proj, pdesc, kp, kdesc, 10.0, 50.0, 0.9, kp_available=np.zeros(len(kp), bool))
    assert np.all(m == -1) and np.all(np.isinf(d))


def test_search_by_projection_one_keypoint_one_point_float():
    # three points all projecting near one keypoint; the closest descriptor wins, others get -1
    rng = np.random.default_rng(5)
    kd = _unit(rng.normal(size=(1, 8)))
    kdesc = np.concatenate([kd, _unit(rng.normal(size=(1, 8)))])
    kp = np.array([[50.0, 50.0], [400.0, 400.0]])
    pdesc = _unit(np.concatenate([kd + 0.3 * rng.normal(size=(1, 8)), kd + 0.05 * rng.normal(size=(1, 8)),
                                  kd + 0.2 * rng.normal(size=(1, 8))]))
    proj = np.array([[51.0, 50.0], [49.0, 52.0], [50.0, 47.0]])
    m, d = search_by_projection(proj, pdesc, kp, kdesc, 8.0, 2.0, 0.9)
    assert m.tolist() == [-1, 0, -1]
    assert np.isclose(d[1], np.linalg.norm(pdesc[1] - kd[0]), rtol=1e-5)


def test_search_by_projection_empty():
    m, d = search_by_projection(np.zeros((0, 2)), np.zeros((0, 32), np.uint8), np.ones((3, 2)),
                                np.zeros((3, 32), np.uint8), 5.0, 50.0)
    assert m.shape == (0,) and d.shape == (0,)
    m, d = search_by_projection(np.ones((4, 2)), np.zeros((4, 32), np.uint8), np.zeros((0, 2)),
                                np.zeros((0, 32), np.uint8), 5.0, 50.0)
    assert m.tolist() == [-1] * 4 and np.all(np.isinf(d))


# ------------------------------------------------------------------ epipolar search
def _two_view(seed, n=400, n_distract=300, flip_bits=6, binary=True):
    """Two cameras with known relative pose; keypoints of image 1 shuffled and mixed with
    distractors. Returns x0, d0, x1, d1, F, truth (N,) index into image 1."""
    from slam.geometry.epipolar import fundamental_from_poses
    from slam.geometry.se3 import make_se3, so3_exp, transform_points

    rng = np.random.default_rng(seed)
    K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
    cam1_from_cam0 = make_se3(so3_exp([0.01, -0.04, 0.02]), [0.25, 0.03, 0.05])
    z = rng.uniform(2.0, 6.0, n)
    x0 = rng.uniform([20, 20], [620, 460], (n, 2))
    p0 = np.c_[(x0 - K[:2, 2]) / K[0, 0] * z[:, None], z]
    p1 = transform_points(cam1_from_cam0, p0)
    x1 = p1[:, :2] / p1[:, 2:] * K[0, 0] + K[:2, 2]
    if binary:
        d0 = rng.integers(0, 256, (n, D_BITS), dtype=np.uint8)
        d1 = d0.copy()
        for i in range(n):  # a few flipped bits per corresponding descriptor
            for b in rng.choice(D_BITS * 8, flip_bits, replace=False):
                d1[i, b // 8] ^= np.uint8(1 << (b % 8))
        dx = rng.integers(0, 256, (n_distract, D_BITS), dtype=np.uint8)
    else:
        d0 = rng.normal(size=(n, 64)).astype(np.float32)
        d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
        d1 = d0 + rng.normal(scale=0.02, size=d0.shape).astype(np.float32)
        d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
        dx = rng.normal(size=(n_distract, 64)).astype(np.float32)
        dx /= np.linalg.norm(dx, axis=1, keepdims=True)
    x1 = np.r_[x1 + rng.normal(scale=0.3, size=x1.shape), rng.uniform([0, 0], [640, 480], (n_distract, 2))]
    d1 = np.r_[d1, dx]
    perm = rng.permutation(len(x1))
    inv = np.argsort(perm)
    return x0, d0, x1[perm], d1[perm], fundamental_from_poses(cam1_from_cam0, K), inv[:n]


@pytest.mark.parametrize("seed", range(4))
def test_epipolar_candidate_pairs_equals_brute_force(seed):
    from slam.matching.guided import epipolar_candidate_pairs

    x0, _, x1, _, F, _ = _two_view(seed)
    sigma2 = np.random.default_rng(seed).choice([1.0, 1.44, 2.07], len(x1))
    i, j = epipolar_candidate_pairs(x0, x1, F, sigma2, chi2=3.84, chunk=97)  # chunks that do not divide N
    lines = np.c_[x0, np.ones(len(x0))] @ F.T
    d = (lines @ np.c_[x1, np.ones(len(x1))].T) / np.hypot(lines[:, 0], lines[:, 1])[:, None]
    brute = lambda s: set(zip(*np.nonzero(d ** 2 < s * 3.84 * sigma2[None, :])))  # noqa: E731
    got = set(zip(i.tolist(), j.tolist()))
    assert len(got) == len(i)  # no duplicates
    assert brute(0.999) <= got <= brute(1.001)  # float32 inside, float64 reference
    assert np.all(np.diff(i) >= 0)  # sorted by image-0 keypoint
    assert 0 < len(got) < 0.1 * len(x0) * len(x1)  # a band, not everything


@pytest.mark.parametrize("binary", [True, False])
def test_search_epipolar_recovers_correspondences(binary):
    from slam.matching.guided import search_epipolar

    x0, d0, x1, d1, F, truth = _two_view(7, binary=binary)
    max_d = 50.0 if binary else 0.9
    m, dist = search_epipolar(x0, d0, x1, d1, F, max_d, ratio=0.9, sigma2_1=1.0)
    assert m.shape == (len(x0),) and m.dtype == np.int64 and dist.dtype == np.float32
    found = m >= 0
    assert found.mean() > 0.95
    assert np.array_equal(m[found], truth[found])  # no wrong match
    assert np.all(np.isinf(dist[~found]))
    assert len(np.unique(m[found])) == found.sum()  # one match per image-1 keypoint


def test_search_epipolar_ignores_identical_descriptor_off_the_line():
    from slam.matching.guided import search_epipolar

    x0, d0, x1, d1, F, truth = _two_view(8, n=50, n_distract=0)
    x1 = x1.copy()
    x1[truth[0]] += [0.0, 12.0]  # 12 px off its epipolar line (band: 1.96 px at sigma 1)
    d1 = d1.copy()
    d1[truth[0]] = d0[0]  # and a perfect descriptor
    m, _ = search_epipolar(x0, d0, x1, d1, F, 50.0, ratio=1.0)
    assert m[0] == -1
    assert (m[1:] == truth[1:]).mean() > 0.9


def test_search_epipolar_empty_inputs():
    from slam.matching.guided import search_epipolar

    F = np.array([[0.0, -1e-3, 0.1], [1e-3, 0.0, -0.3], [-0.1, 0.3, 0.0]])
    d = np.zeros((0, D_BITS), np.uint8)
    m, dist = search_epipolar(np.zeros((0, 2)), d, np.ones((5, 2)), np.zeros((5, D_BITS), np.uint8), F, 50.0)
    assert m.shape == (0,) and dist.shape == (0,)
    m, dist = search_epipolar(np.ones((3, 2)), np.zeros((3, D_BITS), np.uint8), np.zeros((0, 2)), d, F, 50.0)
    assert m.tolist() == [-1, -1, -1] and np.all(np.isinf(dist))
