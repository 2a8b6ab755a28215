"""Map bookkeeping: observations, point merging and keyframe culling (slam.mapping.map)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slam.geometry.se3 import make_se3, se3_inverse, so3_exp
from slam.mapping.map import Keyframe, Map
from slam.types import Features

D = 32  # ORB-like packed descriptor bytes


def _random_pose(rng) -> np.ndarray:
    return make_se3(so3_exp(rng.normal(scale=0.3, size=3)), rng.normal(scale=1.0, size=3))


def make_keyframe(m: Map, n_kp: int, rng, point_ids=None, frame_index=0) -> Keyframe:
    """A keyframe with n_kp dummy keypoints; point_ids (n_kp,) or all -1."""
    kid = m.new_keyframe_id()
    feats = Features(torch.zeros(n_kp, 2), torch.zeros(n_kp), torch.zeros(n_kp, D, dtype=torch.uint8), (640, 480))
    pids = np.full(n_kp, -1, dtype=np.int64) if point_ids is None else np.asarray(point_ids, dtype=np.int64).copy()
    return Keyframe(
        id=kid,
        frame_index=frame_index,
        timestamp=float(frame_index),
        cam_from_world=_random_pose(rng),
        features=feats,
        kp_uv=rng.uniform(0, 480, size=(n_kp, 2)),
        kp_depth=np.zeros(n_kp),
        kp_sigma2=np.ones(n_kp),
        kp_color=np.zeros((n_kp, 3), dtype=np.uint8),
        desc=np.zeros((n_kp, D), dtype=np.uint8),
        point_ids=pids,
    )


def add_points(m: Map, n: int, rng, kf_id: int = 0) -> np.ndarray:
    return m.add_points(rng.normal(size=(n, 3)) + [0, 0, 3], rng.integers(0, 256, size=(n, D), dtype=np.uint8),
                        rng.integers(0, 256, size=(n, 3), dtype=np.uint8), kf_id)


def live_rows(m: Map) -> np.ndarray:
    return np.nonzero(m.obs_alive[: m.n_obs])[0]


def check_invariants(m: Map, ever_observed: set) -> None:
    """Every consistency rule of the observation table (raises AssertionError with details)."""
    rows = live_rows(m)
    kf_ids, kps, pts = m.obs_kf[rows], m.obs_kp[rows], m.obs_pt[rows]
    # 1. every live row is mirrored in its (live) keyframe's point_ids, and its point lives
    for k, kp, p in zip(kf_ids.tolist(), kps.tolist(), pts.tolist()):
        assert k in m.keyframes, f"live row refers to removed keyframe {k}"
        assert m.keyframes[k].point_ids[kp] == p, f"kf {k} kp {kp}: point_ids {m.keyframes[k].point_ids[kp]} != row point {p}"
        assert m.pts_alive[p], f"live row refers to dead point {p}"
    # 2. no duplicate (kf, kp) nor (kf, point) among live rows
    assert len(set(zip(kf_ids.tolist(), kps.tolist()))) == len(rows), "a keypoint has two live rows"
    assert len(set(zip(kf_ids.tolist(), pts.tolist()))) == len(rows), "a keyframe observes a point twice"
    # 3. conversely every assigned keypoint has its live row
    row_set = set(zip(kf_ids.tolist(), kps.tolist(), pts.tolist()))
    for k, kf in m.keyframes.items():
        assert kf.alive
        for kp in np.nonzero(kf.point_ids >= 0)[0].tolist():
            assert (k, kp, int(kf.point_ids[kp])) in row_set, f"kf {k} kp {kp} -> {kf.point_ids[kp]} has no live row"
    # 4. pts_n_obs equals the count of live rows, for every point id ever issued
    counts = np.bincount(pts, minlength=m.n_points)[: m.n_points]
    np.testing.assert_array_equal(m.pts_n_obs[: m.n_points], counts)
    # 5. points that were observed and have no observation left are dead
    ever_observed.update(pts.tolist())
    orphan = [p for p in ever_observed if counts[p] == 0 and m.pts_alive[p]]
    assert not orphan, f"points alive with no observations left: {orphan[:10]}"
    # 6. alive_point_ids agrees with pts_alive
    np.testing.assert_array_equal(m.alive_point_ids(), np.nonzero(m.pts_alive[: m.n_points])[0])
    assert m.n_alive_points() == int(m.pts_alive[: m.n_points].sum())


# ------------------------------------------------------------------ basic behaviour
def test_add_keyframe_drops_dead_and_duplicate_points():
    rng = np.random.default_rng(0)
    m = Map(D, binary=True, capacity=16)
    kf0 = make_keyframe(m, 10, rng)
    m.add_keyframe(kf0)
    ids = add_points(m, 5, rng, kf0.id)
    m.add_observations(kf0.id, np.arange(5), ids)
    m.remove_points(ids[4:5])  # dies
    pids = np.array([ids[0], ids[1], ids[1], ids[4], -1, ids[2], -1, -1, -1, -1])
    kf1 = make_keyframe(m, 10, rng, pids)
    m.add_keyframe(kf1)
    assert kf1.point_ids[0] == ids[0]
    assert (kf1.point_ids == ids[1]).sum() == 1  # duplicate dropped
    assert kf1.point_ids[3] == -1  # dead point dropped
    assert kf1.point_ids[5] == ids[2]
    assert m.pts_n_obs[ids[0]] == 2 and m.pts_n_obs[ids[1]] == 2 and m.pts_n_obs[ids[3]] == 1
    check_invariants(m, set())


def test_add_observations_skips_taken_keypoints_and_known_points():
    rng = np.random.default_rng(1)
    m = Map(D, binary=True)
    kf = make_keyframe(m, 8, rng)
    m.add_keyframe(kf)
    ids = add_points(m, 6, rng, kf.id)
    assert m.add_observations(kf.id, [0, 1], ids[:2]) == 2
    # kp 0 taken; ids[1] already observed; kp 2 twice; ids[3] twice -> only one each
    n = m.add_observations(kf.id, [0, 3, 2, 2, 4, 5], [ids[2], ids[1], ids[2], ids[4], ids[3], ids[3]])
    # kp 2 gets one of ids[2]/ids[4]; ids[3] goes to one of kp 4/5
    assert n == 2
    assert kf.point_ids[0] == ids[0] and kf.point_ids[1] == ids[1]
    assert kf.point_ids[3] == -1
    assert kf.point_ids[2] in (ids[2], ids[4])
    assert kf.point_ids[[4, 5]].tolist().count(ids[3]) == 1
    check_invariants(m, set())


def test_removing_last_observation_kills_point():
    rng = np.random.default_rng(2)
    m = Map(D, binary=True)
    kfs = [make_keyframe(m, 5, rng) for _ in range(2)]
    for kf in kfs:
        m.add_keyframe(kf)
    ids = add_points(m, 3, rng, 0)
    m.add_observations(kfs[0].id, [0, 1, 2], ids)
    m.add_observations(kfs[1].id, [0], ids[:1])
    m.remove_observation_pairs(np.array([kfs[0].id, kfs[0].id]), np.array([ids[0], ids[1]]))
    assert m.pts_alive[ids[0]]  # still seen by kf1
    assert not m.pts_alive[ids[1]]  # no observation left
    assert m.pts_alive[ids[2]]
    assert kfs[0].point_ids[0] == -1 and kfs[0].point_ids[1] == -1
    # removing a pair that is not present is a no-op
    v = m.version
    m.remove_observation_pairs(np.array([kfs[1].id]), np.array([ids[2]]))
    assert m.pts_n_obs[ids[2]] == 1 and m.version >= v
    check_invariants(m, {int(i) for i in ids})


def test_covisible_keyframes_sorted_with_exclude_and_min_shared():
    rng = np.random.default_rng(3)
    m = Map(D, binary=True)
    kfs = [make_keyframe(m, 20, rng) for _ in range(4)]
    for kf in kfs:
        m.add_keyframe(kf)
    ids = add_points(m, 10, rng, 0)
    m.add_observations(0, np.arange(10), ids)
    m.add_observations(1, np.arange(3), ids[:3])
    m.add_observations(2, np.arange(7), ids[:7])
    m.add_observations(3, np.arange(1), ids[9:])
    cov = m.covisible_keyframes(ids, exclude=0)
    assert cov == [(2, 7), (1, 3), (3, 1)]
    assert m.covisible_keyframes(ids, min_shared=3) == [(0, 10), (2, 7), (1, 3)]
    assert m.keyframe_covisibility(0, min_shared=2) == [(2, 7), (1, 3)]
    assert m.covisible_keyframes(np.zeros(0, dtype=np.int64)) == []


# ------------------------------------------------------------------ random operations
@pytest.mark.parametrize("seed", range(6))
def test_invariants_under_random_operations(seed, monkeypatch):
    n_compactions = []
    compact = Map._compact_obs

    def counting_compact(self):
        n_compactions.append(1)
        return compact(self)

    monkeypatch.setattr(Map, "_compact_obs", counting_compact)
    rng = np.random.default_rng(100 + seed)
    m = Map(D, binary=True, capacity=8)  # small: exercises growth of both tables and compaction
    ever: set = set()
    n_kp = 30
    max_rows = 0
    n_culled = 0
    for step in range(120):
        live_kfs = sorted(m.keyframes)
        alive = m.alive_point_ids()
        op = rng.choice(["kf", "points", "obs", "obs", "rm_points", "rm_pairs", "replace", "replace", "rm_kf"],
                        p=[0.12, 0.12, 0.2, 0.14, 0.08, 0.1, 0.1, 0.06, 0.08])
        if op == "kf" or not live_kfs:
            pids = np.full(n_kp, -1, dtype=np.int64)
            if m.n_points:
                sel = rng.random(n_kp) < 0.4
                pids[sel] = rng.integers(0, m.n_points, size=int(sel.sum()))  # may hit dead/duplicate points
            m.add_keyframe(make_keyframe(m, n_kp, rng, pids, frame_index=step))
        elif op == "points":
            add_points(m, int(rng.integers(1, 25)), rng, live_kfs[-1])
        elif op == "obs" and len(alive):
            k = int(rng.choice(live_kfs))
            n = int(rng.integers(1, 30))
            m.add_observations(k, rng.integers(0, n_kp, size=n), rng.choice(alive, size=n))
        elif op == "rm_points" and len(alive):
            m.remove_points(rng.choice(alive, size=min(len(alive), int(rng.integers(1, 5))), replace=False))
        elif op == "rm_pairs":
            rows = live_rows(m)
            if len(rows):
                pick = rng.choice(rows, size=min(len(rows), int(rng.integers(1, 8))), replace=False)
                kf_ids, pt_ids = m.obs_kf[pick].copy(), m.obs_pt[pick].copy()
                # plus a few pairs that do not exist
                kf_ids = np.r_[kf_ids, rng.choice(live_kfs, size=2)]
                pt_ids = np.r_[pt_ids, rng.integers(0, m.n_points, size=2)]
                m.remove_observation_pairs(kf_ids, pt_ids)
        elif op == "replace" and len(alive) >= 2:
            n = int(rng.integers(1, 10))
            old = rng.choice(alive, size=n)
            new = rng.choice(alive, size=n)  # may include chains, self-merges and repeated targets
            m.replace_points(old, new)
        elif op == "rm_kf" and len(live_kfs) >= 2:
            k = int(rng.choice(live_kfs))
            parent = int(rng.choice([x for x in live_kfs if x != k]))
            m.remove_keyframe(k, parent_id=parent)
            assert k not in m.keyframes and k in m.culled
            n_culled += 1
        check_invariants(m, ever)
        max_rows = max(max_rows, len(live_rows(m)))
    # the sequence really exercised the table (growth beyond the initial capacity of 32 rows,
    # compaction of dead rows, culling)
    assert max_rows > 32 and n_culled > 0 and len(ever) > 20
    assert n_compactions


# ------------------------------------------------------------------ replace_points
def _two_kf_map(rng, n_kp=10):
    m = Map(D, binary=True)
    kfs = [make_keyframe(m, n_kp, rng) for _ in range(3)]
    for kf in kfs:
        m.add_keyframe(kf)
    return m, kfs


def test_replace_points_moves_observations():
    rng = np.random.default_rng(4)
    m, kfs = _two_kf_map(rng)
    a, b = add_points(m, 2, rng)
    m.add_observations(0, [0], [a])
    m.add_observations(1, [1], [a])
    m.add_observations(2, [2], [b])
    m.pts_visible[[a, b]] = [5, 7]
    m.pts_found[[a, b]] = [3, 4]
    assert m.replace_points([a], [b]) == 1
    assert not m.pts_alive[a] and m.pts_alive[b]
    assert kfs[0].point_ids[0] == b and kfs[1].point_ids[1] == b and kfs[2].point_ids[2] == b
    assert m.pts_n_obs[b] == 3 and m.pts_n_obs[a] == 0
    assert m.pts_visible[b] == 12 and m.pts_found[b] == 7
    check_invariants(m, {int(a), int(b)})


def test_visibility_counts_and_normals():
    rng = np.random.default_rng(14)
    m, kfs = _two_kf_map(rng)
    a, b, c = add_points(m, 3, rng)
    m.count_visible(np.array([a, b, b]))  # a repeated id counts once per frame
    m.count_found(np.array([b]))
    assert m.pts_visible[[a, b, c]].tolist() == [2, 2, 1] and m.pts_found[[a, b, c]].tolist() == [1, 2, 1]
    m.add_observations(0, [0], [a])
    m.add_observations(1, [1], [a])
    m.pts_normal[a] = 0
    m.update_normals(np.array([a]))
    v0 = m.pts_xyz[a] - kfs[0].center
    v1 = m.pts_xyz[a] - kfs[1].center
    mean = v0 / np.linalg.norm(v0) + v1 / np.linalg.norm(v1)
    np.testing.assert_allclose(m.pts_normal[a], mean / np.linalg.norm(mean), atol=1e-12)
    assert not m.pts_normal[c].any()  # unobserved, not asked: untouched


def test_replace_points_conflict_drops_observation_of_old():
    rng = np.random.default_rng(5)
    m, kfs = _two_kf_map(rng)
    a, b = add_points(m, 2, rng)
    m.add_observations(0, [0, 1], [a, b])  # kf0 sees both: conflict
    m.add_observations(1, [3], [a])  # kf1 sees only a: moves
    assert m.replace_points(np.array([a]), np.array([b])) == 1
    assert kfs[0].point_ids[0] == -1  # the old point's keypoint loses it
    assert kfs[0].point_ids[1] == b
    assert kfs[1].point_ids[3] == b
    assert m.pts_n_obs[b] == 2
    check_invariants(m, {int(a), int(b)})


def test_replace_two_olds_into_one_new_seen_by_same_keyframe_keeps_one():
    rng = np.random.default_rng(6)
    m, kfs = _two_kf_map(rng)
    a, c, b = add_points(m, 3, rng)
    m.add_observations(0, [0, 1], [a, c])  # kf0 sees a and c, not b
    m.add_observations(1, [5], [b])
    assert m.replace_points([a, c], [b, b]) == 2
    assert not m.pts_alive[a] and not m.pts_alive[c]
    assert (kfs[0].point_ids == b).sum() == 1
    assert (kfs[0].point_ids[[0, 1]] == -1).sum() == 1
    assert m.pts_n_obs[b] == 2
    check_invariants(m, {int(a), int(b), int(c)})


def test_replace_points_skips_invalid_pairs():
    rng = np.random.default_rng(7)
    m, kfs = _two_kf_map(rng)
    a, b, c, d = add_points(m, 4, rng)
    for i, p in enumerate((a, b, c, d)):
        m.add_observations(i % 3, [i], [p])
    m.remove_points([d])
    n = m.replace_points([a, a, b, c, b], [a, b, c, d, a])
    # a->a: self-merge, dropped; c->d: dead target, dropped; b->a: second pair for b, dropped
    # (the first pair per old point wins); a->b: its target b is itself merged away, skipped.
    # Only b->c remains.
    assert n == 1
    assert not m.pts_alive[b] and m.pts_alive[a] and m.pts_alive[c]
    check_invariants(m, {int(a), int(b), int(c), int(d)})


def test_replace_points_empty_and_all_invalid():
    rng = np.random.default_rng(8)
    m, _ = _two_kf_map(rng)
    (a,) = add_points(m, 1, rng)
    m.add_observations(0, [0], [a])
    assert m.replace_points(np.zeros(0, np.int64), np.zeros(0, np.int64)) == 0
    assert m.replace_points([a], [a]) == 0
    assert m.pts_alive[a]


# ------------------------------------------------------------------ keyframe culling
def test_culled_keyframes_resolve_through_parents():
    rng = np.random.default_rng(9)
    m = Map(D, binary=True)
    kfs = [make_keyframe(m, 6, rng, frame_index=i) for i in range(4)]
    for kf in kfs:
        m.add_keyframe(kf)
    ids = add_points(m, 6, rng)
    for kf in kfs:
        m.add_observations(kf.id, np.arange(6), ids)
    original = {kf.id: kf.cam_from_world.copy() for kf in kfs}
    m.remove_keyframe(1, parent_id=2)
    m.remove_keyframe(2, parent_id=3)  # chain 1 -> 2 -> 3
    assert set(m.keyframes) == {0, 3}
    assert not kfs[1].alive
    for k in (1, 2, 3):
        np.testing.assert_allclose(m.keyframe_pose_or_ancestor(k), original[k], atol=1e-9)
    # the parent moves (e.g. bundle adjustment): culled keyframes follow rigidly
    delta = make_se3(so3_exp(np.array([0.05, -0.02, 0.1])), np.array([0.1, 0.2, -0.3]))
    m.keyframes[3].cam_from_world = original[3] @ delta
    for k in (1, 2):
        want = original[k] @ se3_inverse(original[3]) @ original[3] @ delta
        np.testing.assert_allclose(m.keyframe_pose_or_ancestor(k), want, atol=1e-9)
    # relative pose between culled keyframes is preserved
    rel_before = original[1] @ se3_inverse(original[2])
    rel_after = m.keyframe_pose_or_ancestor(1) @ se3_inverse(m.keyframe_pose_or_ancestor(2))
    np.testing.assert_allclose(rel_after, rel_before, atol=1e-9)
    # observations of culled keyframes are gone; the points live on through others
    assert m.pts_n_obs[ids].tolist() == [2] * 6
    check_invariants(m, {int(i) for i in ids})


def test_culled_keyframe_without_parent_is_unresolvable():
    rng = np.random.default_rng(10)
    m = Map(D, binary=True)
    kfs = [make_keyframe(m, 4, rng) for _ in range(3)]
    for kf in kfs:
        m.add_keyframe(kf)
    m.remove_keyframe(0)
    m.remove_keyframe(1, parent_id=0)  # parent already gone: no link
    assert m.keyframe_pose_or_ancestor(0) is None
    assert m.keyframe_pose_or_ancestor(1) is None
    assert m.keyframe_pose_or_ancestor(99) is None
    np.testing.assert_array_equal(m.keyframe_pose_or_ancestor(2), kfs[2].cam_from_world)


def test_culling_keyframe_kills_points_only_it_observed():
    rng = np.random.default_rng(11)
    m = Map(D, binary=True)
    kfs = [make_keyframe(m, 5, rng) for _ in range(2)]
    for kf in kfs:
        m.add_keyframe(kf)
    ids = add_points(m, 4, rng)
    m.add_observations(0, np.arange(4), ids)
    m.add_observations(1, [0, 1], ids[:2])
    m.remove_keyframe(0, parent_id=1)
    assert m.pts_alive[ids].tolist() == [True, True, False, False]
    check_invariants(m, {int(i) for i in ids})


def _distinctive_by_hand(descs: list[np.ndarray], binary: bool) -> np.ndarray:
    """ORB-SLAM's ComputeDistinctiveDescriptors, one point at a time: the descriptor whose sorted
    distances to all (itself included) have the least element at index (N - 1) // 2."""
    n = len(descs)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if binary:
                d[i, j] = np.unpackbits(descs[i] ^ descs[j]).sum()
            else:
                d[i, j] = np.linalg.norm(descs[i].astype(np.float64) - descs[j])
    med = [np.sort(d[i])[(n - 1) // 2] for i in range(n)]
    return descs[int(np.argmin(med))]


@pytest.mark.parametrize("binary", [True, False])
def test_update_descriptors_takes_the_observation_with_the_least_median_distance(binary):
    rng = np.random.default_rng(7)
    dim = D if binary else 16
    m = Map(dim, binary=binary)
    kfs = []
    for _ in range(6):
        kf = make_keyframe(m, 5, rng)
        kf.desc = (rng.integers(0, 256, size=(5, dim), dtype=np.uint8) if binary
                   else rng.normal(size=(5, dim)).astype(np.float32))
        m.add_keyframe(kf)
        kfs.append(kf)
    first = rng.integers(0, 256, size=(4, dim), dtype=np.uint8) if binary else rng.normal(size=(4, dim)).astype(np.float32)
    ids = m.add_points(rng.normal(size=(4, 3)), first, np.zeros((4, 3), np.uint8), kfs[0].id)
    # point 0: 6 observations, point 1: 4, point 2: 3, point 3: 2 (left alone: fewer than 3)
    for p, n_obs in zip(ids, (6, 4, 3, 2)):
        for k in range(n_obs):
            m.add_observations(kfs[k].id, [int(p - ids[0])], [p])
    before = m.pts_desc[ids].copy()
    changed = m.update_descriptors(np.r_[ids, ids[:2], -1])
    for p, n_obs in zip(ids[:3], (6, 4, 3)):
        want = _distinctive_by_hand([kfs[k].desc[int(p - ids[0])] for k in range(n_obs)], binary)
        np.testing.assert_array_equal(m.pts_desc[p], want)
    np.testing.assert_array_equal(m.pts_desc[ids[3]], before[3])
    assert changed == 3  # every updated point now holds one of its observations, not its random start
    assert m.update_descriptors(ids) == 0  # idempotent
