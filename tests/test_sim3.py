"""Sim(3): algebra against g2o and the matrix exponential, Umeyama, Sim3Solver-style RANSAC and the
g2o refinement (OptimizeSim3) on synthetic two-keyframe scenes with known truth."""
import g2opy as g2o
import numpy as np
import pytest
from scipy.linalg import expm

from slam.geometry.se3 import make_se3, rotation_angle_deg, se3_inverse, skew, so3_exp, transform_points
from slam.geometry.sim3 import (make_sim3, project_points, se3_from_sim3, sim3_decompose, sim3_exp, sim3_inverse,
                                sim3_log, solve_sim3_ransac, umeyama_alignment, umeyama_batch)
from slam.optim.sim3 import optimize_sim3, sim3_from_g2o, sim3_to_g2o

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
K2 = np.array([[480.0, 0.0, 300.0], [0.0, 470.0, 250.0], [0.0, 0.0, 1.0]])


def random_sim3(rng, max_angle=3.0, log_scale=0.5):
    w = rng.normal(size=3)
    return sim3_exp(np.r_[w / np.linalg.norm(w) * rng.uniform(0, max_angle), rng.normal(size=3), rng.uniform(-log_scale, log_scale)])


def sim3_errors(est, truth):
    """(rotation deg, translation distance, |scale ratio - 1|)."""
    s1, R1, t1 = sim3_decompose(est)
    s2, R2, t2 = sim3_decompose(truth)
    return rotation_angle_deg(R1 @ R2.T), float(np.linalg.norm(t1 - t2)), abs(float(s1 / s2) - 1.0)


# ----------------------------------------------------------------------------------- algebra
@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 0.3, 2.0, np.pi - 1e-4])
@pytest.mark.parametrize("sigma", [0.0, 1e-9, 1e-5, 0.3, -1.2])
def test_exp_log_round_trip_and_matrix_exponential(angle, sigma):
    rng = np.random.default_rng(abs(int(angle * 1e3)) + abs(int(sigma * 1e3)) + 7)
    axis = rng.normal(size=3)
    xi = np.r_[axis / np.linalg.norm(axis) * angle, rng.normal(size=3), sigma]
    m = sim3_exp(xi)
    gen = np.zeros((4, 4))
    gen[:3, :3] = sigma * np.eye(3) + skew(xi[:3])
    gen[:3, 3] = xi[3:6]
    np.testing.assert_allclose(m, expm(gen), atol=1e-12)
    np.testing.assert_allclose(sim3_log(m), xi, atol=1e-10)
    s, R, t = sim3_decompose(m)
    assert float(s) == pytest.approx(np.exp(sigma), rel=1e-14)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-14)


def test_conventions_match_g2o_sim3():
    rng = np.random.default_rng(0)
    for _ in range(20):
        xi = np.r_[rng.normal(scale=0.8, size=3), rng.normal(size=3), rng.normal(scale=0.5)]
        g = g2o.Sim3(xi)  # g2o's exponential
        np.testing.assert_allclose(sim3_from_g2o(g), sim3_exp(xi), atol=1e-12)
        m = sim3_exp(xi)
        np.testing.assert_allclose(sim3_to_g2o(m).log(), sim3_log(m), atol=1e-10)
        p = rng.normal(size=3)
        np.testing.assert_allclose(g.map(p), m[:3, :3] @ p + m[:3, 3], atol=1e-12)


def test_inverse_composition_and_rigid_part():
    rng = np.random.default_rng(1)
    a = np.stack([random_sim3(rng) for _ in range(5)])
    b = np.stack([random_sim3(rng) for _ in range(5)])
    inv = sim3_inverse(a)  # batched
    for k in range(5):
        np.testing.assert_allclose(inv[k] @ a[k], np.eye(4), atol=1e-12)
        np.testing.assert_allclose(sim3_inverse(a[k]), np.linalg.inv(a[k]), atol=1e-12)
        # log of a composition: scales multiply
        assert sim3_log(a[k] @ b[k])[6] == pytest.approx(sim3_log(a[k])[6] + sim3_log(b[k])[6], abs=1e-12)
        p = rng.normal(size=(4, 3))
        np.testing.assert_allclose(transform_points(a[k] @ b[k], p), transform_points(a[k], transform_points(b[k], p)), atol=1e-12)
    # rigid camera pose of a Sim(3) cam_from_world: the optical centre is the same point
    s, R, t = sim3_decompose(a[0])
    rigid = se3_from_sim3(a[0])
    np.testing.assert_allclose(rigid[:3, :3], R, atol=1e-15)
    np.testing.assert_allclose(-R.T @ rigid[:3, 3], -R.T @ t / s, atol=1e-12)
    np.testing.assert_allclose(transform_points(rigid, np.zeros((1, 3)))[0] * s, t, atol=1e-12)
    with pytest.raises(ValueError, match="scale"):
        make_sim3(-1.0, np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 4\)"):
        sim3_inverse(np.eye(3))


def test_umeyama_batch_matches_single_and_flags_degenerate_samples():
    rng = np.random.default_rng(2)
    truth = random_sim3(rng)
    src = rng.normal(size=(4, 10, 3))
    src[3] = np.linspace(0, 1, 10)[:, None] * [1.0, 2.0, 3.0]  # collinear
    dst = transform_points(truth, src.reshape(-1, 3)).reshape(src.shape)
    s, R, t, ok = umeyama_batch(src, dst, with_scale=True)
    assert ok.tolist() == [True, True, True, False]
    for b in range(3):
        np.testing.assert_allclose(make_sim3(s[b], R[b], t[b]), truth, atol=1e-9)
        s1, R1, t1 = umeyama_alignment(src[b], dst[b], True)
        assert s1 == pytest.approx(s[b], rel=1e-12)
    s, R, t, ok = umeyama_batch(src[:3], dst[:3], with_scale=False)
    assert np.all(s == 1.0) and ok.all()


# --------------------------------------------------------------------------- two-keyframe scenes
def two_view_scene(rng, n=200, scale=0.7, outlier_frac=0.3, noise_px=0.5, depth_noise=0.005, K_dst=K):
    """Matched map points of a loop keyframe (src, true metric map) and a current keyframe (dst,
    whose map drifted to ``scale``); a fraction of the matches pair unrelated points."""
    src_from_world = make_se3(so3_exp([0.02, -0.1, 0.01]), [0.3, -0.05, 0.1])
    dst_from_world = make_se3(so3_exp([-0.03, 0.2, 0.02]), [-0.5, 0.02, -0.1])
    z = rng.uniform(2.0, 6.0, n)
    pw = np.c_[rng.uniform(-0.35, 0.35, (n, 2)) * z[:, None], z]
    ps_true = transform_points(src_from_world, pw)
    pd_true = transform_points(dst_from_world, pw)
    uv_src = project_points(K, ps_true)[0] + rng.normal(scale=noise_px, size=(n, 2))
    uv_dst = project_points(K_dst, pd_true)[0] + rng.normal(scale=noise_px, size=(n, 2))
    p_src = ps_true * (1.0 + rng.normal(scale=depth_noise, size=(n, 1)))  # triangulation error along the ray
    p_dst = scale * pd_true * (1.0 + rng.normal(scale=depth_noise, size=(n, 1)))
    outlier = np.zeros(n, dtype=bool)
    outlier[rng.choice(n, int(round(outlier_frac * n)), replace=False)] = True
    idx = np.flatnonzero(outlier)
    p_dst[idx], uv_dst[idx] = p_dst[np.roll(idx, 1)], uv_dst[np.roll(idx, 1)]  # wrong matches
    truth = make_sim3(scale, np.eye(3), np.zeros(3)) @ dst_from_world @ se3_inverse(src_from_world)
    return dict(p_src=p_src, p_dst=p_dst, uv_src=uv_src, uv_dst=uv_dst), truth, ~outlier


@pytest.mark.parametrize("fix_scale", [False, True])
def test_ransac_recovers_known_sim3_under_noise_and_30_percent_outliers(fix_scale):
    rng = np.random.default_rng(3)
    scale = 1.0 if fix_scale else 0.7
    data, truth, inlier = two_view_scene(rng, scale=scale)
    res = solve_sim3_ransac(**data, K_src=K, fix_scale=fix_scale, seed=0)
    assert res.dst_from_src is not None and 0 < res.iterations <= 300
    rot, trans, scl = sim3_errors(res.dst_from_src, truth)
    assert rot < 0.5 and trans < 0.03 and scl < 0.02, (rot, trans, scl)
    if fix_scale:
        A = res.dst_from_src[:3, :3]
        np.testing.assert_allclose(A @ A.T, np.eye(3), atol=1e-12)  # rigid: scale 1
    assert res.n_inliers == res.inliers.sum()
    assert np.sum(res.inliers & ~inlier) <= 2  # wrong matches rejected
    assert np.sum(res.inliers & inlier) >= 0.8 * inlier.sum()
    # deterministic for a seed
    again = solve_sim3_ransac(**data, K_src=K, fix_scale=fix_scale, seed=0)
    assert np.array_equal(again.dst_from_src, res.dst_from_src) and np.array_equal(again.inliers, res.inliers)


def test_ransac_scale_is_not_fixed_unless_asked_and_two_cameras():
    rng = np.random.default_rng(4)
    data, truth, _ = two_view_scene(rng, scale=0.7, K_dst=K2)
    free = solve_sim3_ransac(**data, K_src=K, K_dst=K2, seed=1)
    assert sim3_errors(free.dst_from_src, truth)[2] < 0.02
    wrong_k = solve_sim3_ransac(**data, K_src=K, seed=1)  # K_dst = K_src: inliers lost
    assert wrong_k.dst_from_src is None or wrong_k.n_inliers < 0.5 * free.n_inliers
    rigid = solve_sim3_ransac(**data, K_src=K, K_dst=K2, fix_scale=True, seed=1)
    assert rigid.dst_from_src is None or rigid.n_inliers < 0.5 * free.n_inliers


def test_ransac_fails_cleanly_on_unrelated_points():
    rng = np.random.default_rng(5)
    data, _, _ = two_view_scene(rng, outlier_frac=0.0)
    data["p_dst"] = rng.permutation(data["p_dst"])
    res = solve_sim3_ransac(**data, K_src=K, seed=0, max_iterations=100)
    assert res.dst_from_src is None and res.n_inliers == 0 and not res.inliers.any()
    assert res.iterations == 100
    few = solve_sim3_ransac(**{k: v[:10] for k, v in data.items()}, K_src=K)
    assert few.dst_from_src is None and few.iterations == 0  # fewer matches than min_inliers
    with pytest.raises(ValueError, match="uv_dst"):
        solve_sim3_ransac(data["p_src"], data["p_dst"], data["uv_src"], data["uv_dst"][:5], K)


@pytest.mark.parametrize("fix_scale", [False, True])
def test_optimize_sim3_refines_a_perturbed_estimate_and_flags_outliers(fix_scale):
    rng = np.random.default_rng(6)
    scale = 1.0 if fix_scale else 0.7
    data, truth, inlier = two_view_scene(rng, scale=scale)
    init = make_sim3(1.0 if fix_scale else 1.05, so3_exp([0.02, -0.03, 0.01]), [0.08, -0.05, 0.06]) @ truth
    rot0, trans0, scl0 = sim3_errors(init, truth)
    res = optimize_sim3(init, **data, K_src=K, fix_scale=fix_scale)
    rot, trans, scl = sim3_errors(res.dst_from_src, truth)
    assert rot < rot0 / 5 and trans < trans0 / 5 and rot < 0.3 and trans < 0.02, (rot0, rot, trans0, trans)
    assert scl < 0.01
    if fix_scale:
        s, _, _ = sim3_decompose(res.dst_from_src)
        assert float(s) == pytest.approx(1.0, abs=1e-12)
    else:
        assert scl < scl0 / 5
    assert res.rounds == 2 and res.n_inliers == res.inliers.sum()
    assert np.sum(res.inliers & ~inlier) <= 2
    assert np.sum(res.inliers & inlier) >= 0.8 * inlier.sum()
    assert np.all(res.chi2[res.inliers] <= 10.0)
    assert np.array_equal(optimize_sim3(init, **data, K_src=K, fix_scale=fix_scale).dst_from_src, res.dst_from_src)
    # Levenberg-Marquardt is not slowed down by the scale prior of fix_scale: two iterations suffice
    quick = optimize_sim3(init, **data, K_src=K, fix_scale=fix_scale, iterations=(2, 1, 1))
    assert sim3_errors(quick.dst_from_src, truth)[0] < 0.1


def test_ransac_then_refinement_and_sigma_weighting():
    rng = np.random.default_rng(7)
    data, truth, inlier = two_view_scene(rng, scale=0.7, noise_px=2.0)
    n = inlier.size
    tight = solve_sim3_ransac(**data, K_src=K, seed=2)
    loose = solve_sim3_ransac(**data, K_src=K, sigma2_src=np.full(n, 4.0), sigma2_dst=np.full(n, 4.0), seed=2)
    assert loose.n_inliers > tight.n_inliers  # 2 px noise: sigma^2 = 4 keeps more of the true matches
    ref = optimize_sim3(loose.dst_from_src, **data, K_src=K, sigma2_src=np.full(n, 4.0), sigma2_dst=np.full(n, 4.0))
    assert sim3_errors(ref.dst_from_src, truth)[0] < 0.5 and np.sum(ref.inliers & ~inlier) <= 2
