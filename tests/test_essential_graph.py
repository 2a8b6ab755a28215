"""Loop correction: Sim(3) / SE(3) pose graph, ORB-SLAM's essential-graph scheme on synthetic
drifting loops with exact truth, and map points moved with their reference keyframes."""
import numpy as np
import pytest

from slam.geometry.se3 import make_se3, rotation_angle_deg, se3_exp, so3_exp
from slam.geometry.sim3 import make_sim3, sim3_decompose, sim3_exp, sim3_inverse, sim3_log
from slam.optim.essential_graph import (essential_graph_edges, move_points_with_keyframes, optimize_essential_graph,
                                        optimize_sim3_pose_graph, propagate_correction, synthetic_loop)


def centres(cam_from_world):
    """(K, 3) optical centres (world) of rigid or similarity cam_from_world."""
    return sim3_inverse(np.asarray(cam_from_world))[:, :3, 3]


def rms(a):
    return float(np.sqrt(np.mean(np.sum(a * a, axis=-1))))


def run_loop(data, fix_scale, **kw):
    return optimize_essential_graph(data["kf_ids"], data["cam_from_world"], data["corrected_ids"], data["corrected"],
                                    data["edges"], data["loop_edges"], data["fixed_ids"], fix_scale=fix_scale, **kw)


# ------------------------------------------------------------------ pose graph (ported from pose_graph.py)
def circle_cam_from_world(n=12, radius=2.0):
    """cam_from_world (n, 4, 4): cameras on a circle, looking at its centre."""
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n
        out.append(sim3_inverse(make_se3(so3_exp([0.0, -a, 0.0]), [radius * np.sin(a), 0.0, -radius * np.cos(a)])))
    return np.stack(out)


@pytest.mark.parametrize("fix_scale", [True, False])
def test_pose_graph_recovers_exact_loop_from_perturbed_start(fix_scale):
    rng = np.random.default_rng(6)
    n = 12
    gt = circle_cam_from_world(n)
    if not fix_scale:  # a monocular map: each keyframe with its own scale
        gt = np.stack([make_sim3(s, np.eye(3), np.zeros(3)) @ m for s, m in zip(rng.uniform(0.6, 1.5, n), gt)])
    pairs = [(k, (k + 1) % n) for k in range(n)] + [(0, 6)]
    meas = np.stack([gt[j] @ sim3_inverse(gt[i]) for i, j in pairs])
    ids = np.array([100 + 3 * k for k in range(n)])  # ids are not indices
    edges = np.array([(ids[i], ids[j]) for i, j in pairs])
    init = gt.copy()
    for k in range(1, n):
        xi = np.r_[rng.normal(scale=0.05, size=3), rng.normal(scale=0.1, size=3), 0.0 if fix_scale else rng.normal(scale=0.1)]
        init[k] = sim3_exp(xi) @ gt[k]
    res = optimize_sim3_pose_graph(ids, init, edges, meas, fixed_ids=[ids[0]], fix_scale=fix_scale, iterations=30)
    out = res.cam_from_world
    assert np.array_equal(out[0], init[0])
    assert np.abs(centres(init[1:]) - centres(gt[1:])).max() > 0.05
    assert res.chi2_before > 1e-3 and res.chi2_after < 1e-12
    for k in range(1, n):
        s, R, t = sim3_decompose(out[k])
        s_gt, R_gt, t_gt = sim3_decompose(gt[k])
        assert rotation_angle_deg(R @ R_gt.T) < 1e-4 and np.linalg.norm(t - t_gt) < 1e-5 and abs(s - s_gt) < 1e-7
        if fix_scale:
            np.testing.assert_allclose(out[k, :3, :3] @ out[k, :3, :3].T, np.eye(3), atol=1e-12)


def test_pose_graph_closes_a_drifting_loop_with_a_heavy_loop_edge():
    rng = np.random.default_rng(7)
    n = 12
    gt = circle_cam_from_world(n)
    info = np.diag([1e4] * 3 + [1e3] * 3 + [1.0])
    pairs, meas, init = [], [], [gt[0]]
    for k in range(n - 1):
        noisy = se3_exp(np.r_[rng.normal(scale=0.02, size=3), rng.normal(scale=0.05, size=3)]) @ gt[k + 1] @ sim3_inverse(gt[k])
        pairs.append((k, k + 1))
        meas.append(noisy)
        init.append(noisy @ init[-1])  # dead reckoning
    loop = gt[0] @ sim3_inverse(gt[n - 1])
    pairs.append((n - 1, 0))
    meas.append(loop)
    infos = np.stack([info] * (n - 1) + [info * 100])
    init = np.stack(init)
    res = optimize_sim3_pose_graph(np.arange(n), init, np.array(pairs), np.stack(meas), [0], fix_scale=True,
                                   information=infos)
    before = sim3_inverse(loop) @ init[0] @ sim3_inverse(init[n - 1])
    after = sim3_inverse(loop) @ res.cam_from_world[0] @ sim3_inverse(res.cam_from_world[n - 1])
    assert np.linalg.norm(before[:3, 3]) > 0.1 and rotation_angle_deg(before[:3, :3]) > 1.0
    assert rotation_angle_deg(after[:3, :3]) < 0.1 and np.linalg.norm(after[:3, 3]) < 0.01
    assert np.array_equal(res.cam_from_world[0], init[0])


def test_pose_graph_rejects_bad_input():
    gt = circle_cam_from_world(4)
    edges = np.array([[0, 1], [1, 2], [2, 3]])
    meas = np.stack([gt[j] @ sim3_inverse(gt[i]) for i, j in edges])
    with pytest.raises(ValueError, match="fixed_ids is empty"):
        optimize_sim3_pose_graph(np.arange(4), gt, edges, meas, [])
    with pytest.raises(ValueError, match=r"not in kf_ids: \[7\]"):
        optimize_sim3_pose_graph(np.arange(4), gt, np.array([[0, 7]]), meas[:1], [0])
    with pytest.raises(ValueError, match="rigid"):
        optimize_sim3_pose_graph(np.arange(4), gt * np.r_[2, 2, 2, 1][:, None], edges, meas, [0], fix_scale=True)
    with pytest.raises(ValueError, match="duplicates"):
        optimize_sim3_pose_graph(np.array([0, 1, 1, 2]), gt, edges, meas, [0])


# ----------------------------------------------------------------------------- essential graph
def chi2_sim3(data, sim3_cam_from_world):
    """ORB-SLAM's essential-graph cost (identity information) of similarities, computed here with
    sim3_log: new loop edges measured on the corrected initial values, the others on the
    uncorrected poses."""
    init = data["cam_from_world"].copy()
    init[data["corrected_ids"]] = data["corrected"]
    loops = {tuple(sorted(p)) for p in data["loop_edges"].tolist()}
    total = 0.0
    for src, pairs in ((init, data["loop_edges"].tolist()),
                       (data["cam_from_world"], [p for p in data["edges"].tolist() if tuple(sorted(p)) not in loops])):
        for i, j in pairs:
            r = sim3_log(src[j] @ sim3_inverse(src[i]) @ sim3_cam_from_world[i] @ sim3_inverse(sim3_cam_from_world[j]))
            total += float(r @ r)
    return total


@pytest.fixture(scope="module")
def mono_loop():
    data = synthetic_loop(n_kf=60, scale_drift=0.01, yaw_drift_deg=0.3, seed=0)
    return data, run_loop(data, fix_scale=False)


def test_essential_graph_closes_a_monocular_loop_with_scale_and_yaw_drift(mono_loop):
    data, res = mono_loop
    n = data["kf_ids"].size
    truth_c = centres(data["truth"])
    err_before = centres(data["cam_from_world"]) - truth_c
    err_after = centres(res.cam_from_world) - truth_c
    length = 2 * np.pi * 5.0
    assert rms(err_before) > 2.0  # metres of drift on a 31 m loop (1.8x scale drift, 18 deg yaw)
    # The odometry and covisibility edges carry the drift (a bias), so the least-squares optimum is
    # not the truth: the result must fit the measurements at least as well as the truth does ...
    ideal = np.stack([make_sim3(s, np.eye(3), np.zeros(3)) @ m for s, m in zip(data["map_scale"], data["truth"])])
    assert chi2_sim3(data, res.sim3_after) <= chi2_sim3(data, ideal)
    assert chi2_sim3(data, res.sim3_after) == pytest.approx(res.chi2_after, rel=1e-6)
    assert res.chi2_after < 1e-2 * res.chi2_before and 0 < res.iterations <= 20
    # ... and lands near it: 85 % of the drift removed, no keyframe off by more than 2 % of the loop
    assert rms(err_after) < 0.2 * rms(err_before) and np.linalg.norm(err_after, axis=1).max() < 0.02 * length
    assert res.n_edges == len({tuple(sorted(p)) for p in np.concatenate([data["edges"], data["loop_edges"]]).tolist()})
    # the origin keyframe is fixed bit-for-bit; the neighbourhood started from its corrected values
    assert np.array_equal(res.sim3_after[0], data["cam_from_world"][0])
    assert np.array_equal(res.cam_from_world[0], data["cam_from_world"][0])
    assert np.array_equal(res.sim3_before[data["corrected_ids"]], data["corrected"])
    assert np.array_equal(res.sim3_before[: n - 5], data["cam_from_world"][: n - 5])
    # rigid poses are the similarities without their scale
    s, R, t = sim3_decompose(res.sim3_after)
    np.testing.assert_allclose(res.cam_from_world[:, :3, :3], R, atol=1e-15)
    np.testing.assert_allclose(res.cam_from_world[:, :3, 3], t / s[:, None], atol=1e-12)


def test_essential_graph_corrects_monocular_scale_drift(mono_loop):
    data, res = mono_loop
    s_after = sim3_decompose(res.sim3_after)[0]
    # every keyframe's Sim(3) scale should be its map scale (the 1.01^k drift) relative to the origin
    ratio_before = 1.0 / data["map_scale"]  # uncorrected poses claim scale 1 everywhere
    ratio_after = s_after / data["map_scale"]
    assert np.abs(ratio_before - 1).max() > 0.4
    assert np.abs(ratio_after - 1).max() < 0.1
    # the distance travelled between consecutive keyframes is metric again (it grew by 1.8x)
    step_truth = np.linalg.norm(np.diff(centres(data["truth"]), axis=0), axis=1)
    step_before = np.linalg.norm(np.diff(centres(data["cam_from_world"]), axis=0), axis=1) / step_truth
    step_after = np.linalg.norm(np.diff(centres(res.cam_from_world), axis=0), axis=1) / step_truth
    assert step_before.max() > 1.7 and np.abs(step_after - 1).max() < 0.1


def test_essential_graph_rgbd_loop_keeps_scale_one():
    data = synthetic_loop(n_kf=60, yaw_drift_deg=0.3, fix_scale=True, seed=1)
    res = run_loop(data, fix_scale=True)
    truth_c = centres(data["truth"])
    before, after = rms(centres(data["cam_from_world"]) - truth_c), rms(centres(res.cam_from_world) - truth_c)
    assert before > 0.8 and after < 0.2 * before
    np.testing.assert_array_equal(res.cam_from_world, res.sim3_after)
    for m in res.sim3_after:
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.array_equal(res.cam_from_world[0], data["cam_from_world"][0])
    assert np.array_equal(run_loop(data, fix_scale=True).cam_from_world, res.cam_from_world)  # deterministic
    with pytest.raises(ValueError, match="rigid"):
        mono = synthetic_loop(n_kf=20)
        run_loop(mono, fix_scale=True)


def test_loop_edges_win_over_duplicate_edges_and_use_corrected_poses():
    data = synthetic_loop(n_kf=30, noise_rot_deg=0.0, noise_trans=0.0, scale_drift=0.0, yaw_drift_deg=0.5, seed=2,
                          fix_scale=True, n_loop_edges=1)
    cur = int(data["kf_ids"][-1])
    dup = np.concatenate([data["edges"], [[0, cur]]])  # the loop pair again, reversed, in the other edges
    res = run_loop({**data, "edges": dup}, fix_scale=True)
    ref = run_loop(data, fix_scale=True)
    assert res.n_edges == ref.n_edges
    np.testing.assert_allclose(res.cam_from_world, ref.cam_from_world, atol=1e-9)
    truth_c = centres(data["truth"])
    before = rms(centres(data["cam_from_world"]) - truth_c)
    assert rms(centres(ref.cam_from_world) - truth_c) < 0.5 * before
    # measured on the uncorrected poses the pair says "no correction": the map stays as it was
    no_loop = run_loop({**data, "loop_edges": np.zeros((0, 2), dtype=np.int64), "edges": dup}, fix_scale=True)
    np.testing.assert_allclose(centres(no_loop.cam_from_world), centres(data["cam_from_world"]), atol=1e-6)


# ------------------------------------------------------------------------------- map points
def test_points_move_with_their_reference_keyframes(mono_loop):
    data, res = mono_loop
    rng = np.random.default_rng(3)
    n = data["kf_ids"].size
    ref = rng.integers(0, n, 500)
    # points 1-4 m in front of their reference keyframe (truth), and where the drifted map has them
    local_true = np.c_[rng.uniform(-1, 1, (500, 2)), rng.uniform(1, 4, 500)]
    x_true = np.einsum("pij,pj->pi", sim3_inverse(data["truth"])[ref, :3, :3], local_true) + sim3_inverse(data["truth"])[ref, :3, 3]
    local_map = local_true * data["map_scale"][ref, None]  # the map measures them in its own scale
    x_map = np.einsum("pij,pj->pi", sim3_inverse(data["cam_from_world"])[ref, :3, :3], local_map) + sim3_inverse(data["cam_from_world"])[ref, :3, 3]
    # 1. CorrectLoop: points of the current keyframe's neighbourhood move with the propagated correction
    c_ids = data["corrected_ids"]
    in_nb = np.isin(ref, c_ids)
    x_map[in_nb] = move_points_with_keyframes(x_map[in_nb], ref[in_nb], c_ids, data["cam_from_world"][c_ids], data["corrected"])
    # 2. after the essential graph every point moves with its reference keyframe
    moved = res.move_points(x_map, ref)
    err_before = rms(x_map - x_true)
    assert err_before > 1.0 and rms(moved - x_true) < 0.2 * err_before
    # a point keeps its coordinates in its reference camera, in that keyframe's map units
    np.testing.assert_allclose(transform_points_batch(res.sim3_after[ref], moved), transform_points_batch(res.sim3_before[ref], x_map), atol=1e-9)
    # the fixed origin's points do not move
    at0 = ref == 0
    np.testing.assert_allclose(moved[at0], x_map[at0], atol=1e-12)
    with pytest.raises(ValueError, match="not in kf_ids"):
        res.move_points(x_map[:2], np.array([0, 999]))


def transform_points_batch(a_from_b, pts):
    return np.einsum("pij,pj->pi", a_from_b[:, :3, :3], pts) + a_from_b[:, :3, 3]


def test_propagate_correction_keeps_neighbours_relative_poses():
    rng = np.random.default_rng(4)
    cur = make_se3(so3_exp(rng.normal(size=3)), rng.normal(size=3))
    nb = np.stack([make_se3(so3_exp(rng.normal(scale=0.1, size=3)), rng.normal(size=3)) @ cur for _ in range(4)])
    corrected_cur = make_sim3(0.6, so3_exp(rng.normal(size=3)), rng.normal(size=3))
    out = propagate_correction(cur, corrected_cur, nb)
    for k in range(4):
        np.testing.assert_allclose(out[k] @ sim3_inverse(corrected_cur), nb[k] @ sim3_inverse(cur), atol=1e-12)
        assert sim3_decompose(out[k])[0] == pytest.approx(0.6, rel=1e-12)


def test_essential_graph_edges_selects_tree_strong_covisibility_and_loops():
    ids = np.array([10, 11, 12, 13, 14])
    parents = np.array([-1, 10, 11, 12, 13])
    covis = np.array([[10, 12], [12, 10], [11, 13], [12, 13], [10, 14]])
    weights = np.array([150, 150, 99, 300, 100])
    loops = np.array([[14, 10], [13, 10]])
    e = essential_graph_edges(ids, parents, covis, weights, loops)
    got = {tuple(sorted(p)) for p in e.tolist()}
    assert got == {(10, 11), (11, 12), (12, 13), (13, 14), (10, 12), (10, 14), (10, 13)}
    assert len(e) == len(got)  # (12, 10) duplicate and (12, 13) already in the tree are dropped
    assert essential_graph_edges(ids, parents, min_weight=100).shape == (4, 2)
    with pytest.raises(ValueError, match="not in kf_ids"):
        essential_graph_edges(ids, parents, np.array([[10, 99]]), np.array([500]))


def test_staged_edge_insertion_gives_the_same_result_bit_for_bit():
    data = synthetic_loop(n_kf=40, seed=5)
    direct = run_loop(data, fix_scale=False, edge_chunk=0)
    staged = run_loop(data, fix_scale=False, edge_chunk=37)
    assert np.array_equal(direct.sim3_after, staged.sim3_after)
    assert direct.chi2_after == pytest.approx(staged.chi2_after, rel=1e-12)  # g2o sums chi2 in set order


@pytest.mark.parametrize("fix_scale", [False, True])
def test_gauss_newton_reaches_the_levenberg_optimum_in_a_few_steps(fix_scale):
    """The default solver (Gauss-Newton, stopping at convergence) lands where ORB-SLAM's 20
    Levenberg-Marquardt iterations do, in at most 5 iterations, on a 150-keyframe drifting loop."""
    data = synthetic_loop(n_kf=150, radius=12.5, scale_drift=1.8 ** (1 / 150) - 1, yaw_drift_deg=18 / 150,
                          n_covis=3, fix_scale=fix_scale, seed=2)
    args = (data["kf_ids"], data["cam_from_world"], data["corrected_ids"], data["corrected"], data["edges"],
            data["loop_edges"], data["fixed_ids"])
    gn = optimize_essential_graph(*args, fix_scale=fix_scale, iterations=20)
    lm = optimize_essential_graph(*args, fix_scale=fix_scale, iterations=20, algorithm="levenberg")
    assert gn.iterations <= 5 < lm.iterations
    assert gn.chi2_after <= lm.chi2_after * 1.01 + 1e-9
    np.testing.assert_allclose(centres(gn.cam_from_world), centres(lm.cam_from_world), atol=0.01 * 12.5)
    with pytest.raises(ValueError, match="algorithm"):
        optimize_essential_graph(*args, fix_scale=fix_scale, algorithm="dogleg")
