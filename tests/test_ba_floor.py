"""tools/ba_floor.py: the optimum of a map's observations, started from the truth, against the
white-noise floor. Exact observations give zero for both; a zoom-like offset in half the keyframes
(correlated errors a detector could make) moves the optimum well beyond the floor of independent
noise of the same spread; the alignment into the map's frame is checked on a scaled, moved copy."""
from __future__ import annotations

import numpy as np
from tool_loader import load_tool

from slam.geometry.se3 import rotation_angle_deg, se3_inverse, so3_exp
from slam.optim.ba import synthetic_ba_problem


def _tool():
    return load_tool("ba_floor")


def _problem(noise_px: float):
    # every observation with a depth (RGB-D): one fixed keyframe then fixes the gauge, scale included
    prob = synthetic_ba_problem(n_kf=8, n_points=600, obs_per_point=4, noise_px=noise_px, outlier_frac=0.0,
                                n_fixed=1, stereo_frac=1.0, seed=3)
    truth_cfw = np.tile(np.eye(4), (8, 1, 1))
    truth_cfw[:, 0, 3] = -np.linspace(0.0, 1.0, 8)
    return prob, np.stack([se3_inverse(T) for T in truth_cfw])


def test_truth_in_map_frame_inverts_the_alignment():
    tool = _tool()
    rng = np.random.default_rng(0)
    truth = np.tile(np.eye(4), (6, 1, 1))  # centres off one line, so the rotation is unique
    truth[:, :3, 3] = rng.normal(size=(6, 3))
    for i in range(6):
        qi, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        truth[i, :3, :3] = qi * np.sign(np.linalg.det(qi))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    s, t = 2.5, np.array([0.3, -1.0, 2.0])
    cfw_map = tool.truth_in_map_frame(truth, (s, R, t))
    rmse, err, (s2, R2, t2) = tool.keyframe_ate(cfw_map, truth, with_scale=True)
    assert rmse < 1e-9 and abs(s2 - s) < 1e-9 and np.allclose(R2, R) and np.allclose(t2, t)
    # the rotations too: the map camera's axes map onto the true ones
    for T, wc in zip(cfw_map, truth):
        assert np.allclose(R @ se3_inverse(T)[:3, :3], wc[:3, :3])


def test_the_truth_is_brought_into_the_map_frame_by_the_orientations():
    """Keyframes with exact orientations but centres a few centimetres off over a few centimetres of
    travel (a short monocular run): the fit of the centres alone turns the truth by degrees; the
    pose alignment keeps the map's orientations (and with exact centres it is exact)."""
    tool = _tool()
    rng = np.random.default_rng(4)
    k = 12
    truth = np.tile(np.eye(4), (k, 1, 1))
    for i in range(k):
        truth[i, :3, :3] = so3_exp(rng.normal(scale=0.15, size=3))
        truth[i, :3, 3] = rng.normal(scale=0.03, size=3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    s, t = 0.5, np.array([1.0, 2.0, -0.5])
    exact = tool.truth_in_map_frame(truth, (s, R, t))
    est = exact.copy()
    for i in range(k):  # move each centre by about 2 cm (in truth units), orientation kept
        c = se3_inverse(exact[i])[:3, 3] + rng.normal(scale=0.02 / s, size=3)
        est[i, :3, 3] = -exact[i, :3, :3] @ c
    s_c, R_c, _ = tool.keyframe_ate(est, truth, with_scale=True)[2]
    s_p, R_p, t_p = tool.pose_alignment(est, truth, with_scale=True)
    assert rotation_angle_deg(R_c @ R.T) > 2.0  # the centres alone: the rotation is off by degrees
    assert rotation_angle_deg(R_p @ R.T) < 1e-6
    back = tool.truth_in_map_frame(truth, (s_p, R_p, t_p))
    for a, b in zip(back, est):
        assert rotation_angle_deg(a[:3, :3] @ b[:3, :3].T) < 1e-6
    exact_fit = tool.pose_alignment(exact, truth, with_scale=True)  # exact centres: exact alignment
    assert abs(exact_fit[0] - s) < 1e-9 and np.allclose(exact_fit[1], R) and np.allclose(exact_fit[2], t)


def test_exact_observations_give_a_zero_floor():
    tool = _tool()
    prob, truth = _problem(0.0)
    res = tool.floor(prob, truth, with_scale=False, iterations=20)
    assert res["fixed_keyframes"] == 1
    assert res["ate_optimum_from_truth_m"] < 1e-6
    assert res["ate_white_noise_floor_m"] < 1e-6
    assert res["residuals_at_truth"]["std_px"] < 1e-6
    assert res["ate_as_left_m"] > 0.005  # synthetic_ba_problem perturbs the starting poses


def _turning_problem():
    """A monocular map of a camera that turns on the spot (yaw -0.3 .. 0.3 rad, centres within 14 cm
    and out of step with the yaw, so no depth change can mimic a zoom), so a
    point is seen in different image columns; exact observations; truth world_from_cam (8, 4, 4)."""
    from slam.optim.ba import BAProblem

    rng = np.random.default_rng(7)
    K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
    n_kf = 8
    cfw = np.tile(np.eye(4), (n_kf, 1, 1))
    for k, yaw in enumerate(np.linspace(-0.3, 0.3, n_kf)):
        cfw[k, :3, :3] = so3_exp(np.array([0.0, yaw, 0.0]))
        cfw[k, :3, 3] = -cfw[k, :3, :3] @ np.array([0.02 * ((3 * k) % n_kf), 0.0, 0.0])  # not in step with the yaw
    az, el, depth = rng.uniform(-0.8, 0.8, 1500), rng.uniform(-0.4, 0.4, 1500), rng.uniform(2.0, 5.0, 1500)
    pts = depth[:, None] * np.c_[np.sin(az), np.sin(el), np.cos(az)]
    obs_kf, obs_pt, uv = [], [], []
    for k in range(n_kf):
        pc = pts @ cfw[k, :3, :3].T + cfw[k, :3, 3]
        p = pc[:, :2] / pc[:, 2:3] * K[[0, 1], [0, 1]] + K[:2, 2]
        ok = (pc[:, 2] > 0.1) & (p[:, 0] > 0) & (p[:, 0] < 639) & (p[:, 1] > 0) & (p[:, 1] < 479)
        obs_kf += [k] * int(ok.sum())
        obs_pt += np.flatnonzero(ok).tolist()
        uv.append(p[ok])
    obs_pt = np.array(obs_pt, dtype=np.int64)
    seen = np.bincount(obs_pt, minlength=len(pts)) >= 2
    keep = seen[obs_pt]
    m = int(keep.sum())
    prob = BAProblem(kf_ids=np.arange(n_kf, dtype=np.int64), cam_from_world=cfw.copy(), fixed=np.zeros(n_kf, bool),
                     point_ids=np.arange(len(pts), dtype=np.int64), points_world=pts.copy(),
                     obs_kf=np.array(obs_kf, dtype=np.int64)[keep], obs_pt=obs_pt[keep], obs_uv=np.concatenate(uv)[keep],
                     obs_inv_sigma2=np.ones(m), obs_ur=np.full(m, np.nan), bf=40.0, K=K)
    return prob, np.stack([se3_inverse(T) for T in cfw])


def test_a_horizontal_zoom_of_the_keypoints_shows_in_the_column_bias():
    """Every view's keypoints 0.2 % closer to the centre horizontally (as the default front-end's
    are on synthetic/fast): the mean horizontal residual at the truth falls from the left band to
    the right one. Exact observations give zero in every band."""
    tool = _tool()
    prob, truth = _turning_problem()
    exact = tool.floor(prob, truth, with_scale=True, iterations=20)["residuals_at_truth"]["column_mean_u_px"]
    assert len(exact) == 8 and max(abs(c) for c in exact if c is not None) < 1e-4
    prob.obs_uv[:, 0] -= 0.002 * (prob.obs_uv[:, 0] - prob.K[0, 2])
    col = tool.floor(prob, truth, with_scale=True, iterations=20)["residuals_at_truth"]["column_mean_u_px"]
    assert col[0] is not None and col[-1] is not None
    assert col[0] > 0.05 and col[-1] < -0.05  # about +-0.1 px here
    assert all(a > b for a, b in zip(col, col[1:]))  # falling from left to right


def test_correlated_offsets_cost_more_than_white_noise_of_the_same_spread():
    tool = _tool()
    prob, truth = _problem(0.2)
    K = prob.K
    zoomed = prob.obs_kf >= 4  # half the keyframes see the image 0.5 % larger
    prob.obs_uv[zoomed] += 0.005 * (prob.obs_uv[zoomed] - K[:2, 2])
    res = tool.floor(prob, truth, with_scale=False, iterations=20)
    assert res["residuals_at_truth"]["std_px"] > 0.2
    assert res["ate_optimum_from_truth_m"] > 3 * res["ate_white_noise_floor_m"]
    plain, _ = _problem(0.2)
    ref = tool.floor(plain, truth, with_scale=False, iterations=20)
    # without the offsets the optimum is within a factor of two of its floor
    assert ref["ate_optimum_from_truth_m"] < 2 * ref["ate_white_noise_floor_m"] + 1e-4


def test_monocular_maps_keep_their_scale():
    """Without depth the scale is a free direction of the adjustment: two fixed keyframes hold it
    (with one, fr1_xyz's monocular map shrank to nothing in 50 iterations). A map in half the
    truth's units is brought back by the Sim(3) alignment."""
    tool = _tool()
    prob = synthetic_ba_problem(n_kf=8, n_points=600, obs_per_point=4, noise_px=0.3, outlier_frac=0.0,
                                n_fixed=1, stereo_frac=0.0, seed=5)
    prob.points_world *= 0.5  # a monocular map in its own units
    prob.cam_from_world[:, :3, 3] *= 0.5
    _, truth = _problem(0.0)
    res = tool.floor(prob, truth, with_scale=True, iterations=50)
    assert res["fixed_keyframes"] == 2
    assert res["ate_optimum_from_truth_m"] < 0.01
    assert res["ate_white_noise_floor_m"] < 0.01


def test_a_seed_examines_the_run_seed_spread_makes_with_it(tmp_path, monkeypatch):
    """--seed S hands the run to seed_spread's worker with S and the jitter in its environment
    variable (the same perturbed run as ``seed_spread.py`` seed S); seed 0 runs ``slam run`` as is."""
    import sys
    import types

    import slam.cli

    tool = _tool()
    gt = tmp_path / "gt.txt"
    gt.write_text("0.0 0 0 0 0 0 0 1\n1.0 1 0 0 0 0 0 1\n")
    calls = []
    fake = types.ModuleType("seed_spread")
    fake._ENV = "SLAM_SEED_SPREAD"
    fake._worker = lambda argv: calls.append(("worker", list(argv), tool.os.environ[fake._ENV])) or 0
    monkeypatch.setitem(sys.modules, "seed_spread", fake)
    monkeypatch.setattr(slam.cli, "main", lambda argv: calls.append(("slam", list(argv), None)) or 0)
    monkeypatch.delenv("SLAM_SEED_SPREAD", raising=False)
    run = ["run", "--seq", "synthetic/fast", "--sync"]
    assert tool.main(["--groundtruth", str(gt), "--seed", "3", "--jitter", "0.5", *run]) == 2  # nothing captured
    assert tool.main(["--groundtruth", str(gt), "--seed", "0", *run]) == 2
    assert calls == [("worker", run, "3 0.5"), ("slam", run, None)]
