"""Trajectory evaluation (ATE / RPE / frames tracked) on synthetic trajectories with known answers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.errors import InputError
from slam.eval import eval_main, evaluate
from slam.io.trajectory import write_kitti, write_tum


def _ground_truth(n: int = 900, rate: float = 90.0, t0: float = 1305031102.0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth hand-held-like trajectory: (N,) timestamps, (N, 4, 4) world_from_cam."""
    t = np.arange(n) / rate
    world_from_cam = np.tile(np.eye(4), (n, 1, 1))
    world_from_cam[:, 0, 3] = 1.0 + 0.8 * np.cos(0.4 * t)
    world_from_cam[:, 1, 3] = 0.5 * np.sin(0.6 * t)
    world_from_cam[:, 2, 3] = 1.5 + 0.2 * np.sin(1.1 * t)
    rotvec = np.stack([0.3 * np.sin(0.5 * t), 0.8 * np.sin(0.3 * t), 0.2 * np.cos(0.7 * t)], axis=1)
    world_from_cam[:, :3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    return t0 + t, world_from_cam


def _estimate_from(gt_ts, gt_poses, every: int = 3, jitter: float = 2e-3, seed: int = 0):
    """Every ``every``-th ground-truth pose, timestamps jittered by less than the 0.02 s threshold."""
    rng = np.random.default_rng(seed)
    idx = np.arange(0, len(gt_ts), every)
    return gt_ts[idx] + rng.uniform(-jitter, jitter, len(idx)), gt_poses[idx].copy()


def _rigid(seed: int = 1) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    m[:3, 3] = [3.0, -2.0, 0.7]
    return m


def _umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Plain-numpy Umeyama (1991): dst ~ s R src + t for (N, 3) point sets."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    s = np.trace(np.diag(D) @ S) / (xs**2).sum(1).mean() if with_scale else 1.0
    return R, mu_d - s * R @ mu_s, s


def test_rigidly_transformed_copy_has_zero_ate():
    gt = _ground_truth()
    est_ts, est_poses = _estimate_from(*gt)
    est_poses = _rigid() @ est_poses  # another world frame
    r = evaluate(gt, (est_ts, est_poses))
    assert r["alignment"] == "SE3"
    assert r["n_matched"] == r["n_est"] == 300
    assert r["ate_rmse_m"] < 1e-9 and r["ate_max_m"] < 1e-9
    assert r["rpe_trans_rmse_m"] < 1e-9 and r["rpe_rot_rmse_deg"] < 1e-6
    assert r["rpe_trans_rmse_m_per_s"] < 1e-9
    assert r["scale"] == pytest.approx(1.0)
    assert r["tracked_pct"] is None


def test_sim3_corrects_scale_of_monocular_estimate():
    gt = _ground_truth()
    est_ts, est_poses = _estimate_from(*gt)
    est_poses = _rigid() @ est_poses
    est_poses[:, :3, 3] *= 0.37  # monocular: unknown scale
    mono = evaluate(gt, (est_ts, est_poses), mono=True)
    assert mono["alignment"] == "Sim3"
    assert mono["ate_rmse_m"] < 1e-9
    assert mono["scale"] == pytest.approx(1 / 0.37, rel=1e-9)
    assert mono["rpe_trans_rmse_m"] < 1e-9  # RPE is computed after scale correction
    se3 = evaluate(gt, (est_ts, est_poses), mono=False)
    assert se3["ate_rmse_m"] > 0.1


def test_known_noise_gives_expected_rmse_and_matches_numpy():
    sigma = 0.01
    gt_ts, gt_poses = _ground_truth(n=3000)
    est_ts, est_poses = _estimate_from(gt_ts, gt_poses, every=3)
    rng = np.random.default_rng(7)
    est_poses[:, :3, 3] += rng.normal(0, sigma, (len(est_poses), 3))
    est_poses = _rigid(3) @ est_poses
    r = evaluate((gt_ts, gt_poses), (est_ts, est_poses))
    # isotropic noise of std sigma per axis -> RMSE of the 3D error = sigma * sqrt(3)
    assert r["ate_rmse_m"] == pytest.approx(sigma * np.sqrt(3), rel=0.05)
    # cross-check with an independent numpy implementation (matching is exact: every 3rd pose)
    gt_xyz = gt_poses[::3, :3, 3]
    est_xyz = est_poses[:, :3, 3]
    for mono in (False, True):
        R, t, s = _umeyama(est_xyz, gt_xyz, with_scale=mono)
        err = np.linalg.norm(gt_xyz - (s * est_xyz @ R.T + t), axis=1)
        res = evaluate((gt_ts, gt_poses), (est_ts, est_poses), mono=mono)
        assert res["ate_rmse_m"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-9)
        assert res["ate_median_m"] == pytest.approx(np.median(err), rel=1e-9)
        assert res["ate_max_m"] == pytest.approx(err.max(), rel=1e-9)
        assert res["scale"] == pytest.approx(s, rel=1e-9)


def test_rpe_of_a_linear_drift():
    # est_i = gt_i shifted by v * t_i in the world: relative error between i and j is |v| (t_j - t_i)
    v = np.array([0.03, 0.0, 0.04])  # 0.05 m/s
    gt_ts, gt_poses = _ground_truth()
    est_ts, est_poses = _estimate_from(gt_ts, gt_poses, jitter=0.0)
    est_poses[:, :3, 3] += (est_ts - est_ts[0])[:, None] * v
    r = evaluate((gt_ts, gt_poses), (est_ts, est_poses))
    assert r["rpe_trans_rmse_m_per_s"] == pytest.approx(0.05, rel=1e-6)
    assert r["rpe_trans_rmse_m"] == pytest.approx(0.05 / 30.0, rel=1e-6)
    assert r["rpe_rot_rmse_deg"] < 1e-6 and r["rpe_rot_rmse_deg_per_s"] < 1e-6
    assert r["ate_rmse_m"] > 0.01


def test_rpe_rotation_per_frame():
    gt_ts, gt_poses = _ground_truth()
    est_ts, gt_sub = _estimate_from(gt_ts, gt_poses, jitter=0.0)
    # each frame-to-frame motion gets an extra 0.1 deg turn about the camera z axis (3 deg/s)
    extra = np.eye(4)
    extra[:3, :3] = Rotation.from_euler("z", 0.1, degrees=True).as_matrix()
    est_poses = gt_sub.copy()
    for k in range(1, len(est_poses)):
        est_poses[k] = est_poses[k - 1] @ np.linalg.inv(gt_sub[k - 1]) @ gt_sub[k] @ extra
    r = evaluate((gt_ts, gt_poses), (est_ts, est_poses))
    assert r["rpe_rot_rmse_deg"] == pytest.approx(0.1, rel=1e-6)
    assert r["rpe_trans_rmse_m"] < 1e-9
    # over 1 s the 30 small turns compose about slowly varying axes: at most 3 deg/s
    assert 2.0 < r["rpe_rot_rmse_deg_per_s"] <= 3.0 + 1e-6


def test_tracked_percentage_from_argument_and_header(tmp_path):
    gt = _ground_truth()
    est_ts, est_poses = _estimate_from(*gt)
    assert evaluate(gt, (est_ts[:150], est_poses[:150]), n_frames_total=300)["tracked_pct"] == pytest.approx(50.0)
    write_tum(tmp_path / "est.txt", est_ts[:240], est_poses[:240], header={"n_frames": 300})
    write_tum(tmp_path / "gt.txt", *gt)
    r = evaluate(tmp_path / "gt.txt", tmp_path / "est.txt")
    assert r["tracked_pct"] == pytest.approx(80.0) and r["n_frames_total"] == 300
    assert r["ate_rmse_m"] < 1e-6  # files keep 9 decimals


def test_kitti_files_are_matched_by_index(tmp_path):
    gt_ts, gt_poses = _ground_truth(n=120)
    write_kitti(tmp_path / "gt.txt", gt_poses)
    write_kitti(tmp_path / "est.txt", _rigid() @ gt_poses)
    r = evaluate(tmp_path / "gt.txt", tmp_path / "est.txt")
    assert r["n_matched"] == 120 and r["ate_rmse_m"] < 1e-6
    write_kitti(tmp_path / "short.txt", gt_poses[:100])
    with pytest.raises(InputError, match="matched by line"):
        evaluate(tmp_path / "gt.txt", tmp_path / "short.txt")


def test_errors_name_file_and_fix(tmp_path):
    gt = _ground_truth()
    write_tum(tmp_path / "gt.txt", *gt)
    with pytest.raises(InputError, match=r"missing.txt: estimated file not found.*--est"):
        evaluate(tmp_path / "gt.txt", tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("1305031102.0 0 0 0 0 0 0 1\n1305031102.1 0 0 0 0 0 1\n")
    with pytest.raises(InputError, match=r"bad.txt:2"):
        evaluate(tmp_path / "gt.txt", tmp_path / "bad.txt")
    later_ts, later_poses = _estimate_from(*gt)
    with pytest.raises(InputError, match=r"within 0.02 s .*--offset"):
        evaluate(tmp_path / "gt.txt", (later_ts + 1000.0, later_poses))
    with pytest.raises(InputError, match="no poses"):
        evaluate(tmp_path / "gt.txt", (np.zeros(0), np.zeros((0, 4, 4))))


def test_eval_main_prints_table_and_writes_json(tmp_path, capsys):
    gt = _ground_truth()
    est_ts, est_poses = _estimate_from(*gt)
    est_poses[:, :3, 3] *= 2.0
    write_tum(tmp_path / "gt.txt", *gt)
    write_tum(tmp_path / "est.txt", est_ts, est_poses, header={"n_frames": 400})
    rc = eval_main(["--gt", str(tmp_path / "gt.txt"), "--est", str(tmp_path / "est.txt"), "--mono",
                    "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ATE RMSE" in out and "Sim3" in out and "75.0 %" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["scale"] == pytest.approx(0.5, rel=1e-6) and metrics["ate_rmse_m"] < 1e-6
    assert (tmp_path / "p.png").stat().st_size > 1000
    rc = eval_main(["--gt", str(tmp_path / "nope.txt"), "--est", str(tmp_path / "est.txt")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.txt" in err and "--gt" in err


@pytest.mark.needs_data
def test_fr1_xyz_groundtruth_against_itself(fr1_xyz, tmp_path):
    gt = fr1_xyz / "groundtruth.txt"
    r = evaluate(gt, gt)
    assert r["n_matched"] == 3000 and r["ate_rmse_m"] < 1e-9 and r["rpe_trans_rmse_m"] < 1e-9
    # the ground truth sampled at the colour frames, as a tracker would report it, in another frame
    from slam.io.tum import read_file_list, read_groundtruth

    gt_ts, gt_poses = read_groundtruth(gt)
    rgb_ts = np.array([t for t, _ in read_file_list(fr1_xyz / "rgb.txt")])
    nearest = np.clip(np.searchsorted(gt_ts, rgb_ts), 0, len(gt_ts) - 1)
    keep = np.abs(gt_ts[nearest] - rgb_ts) < 0.005
    r = evaluate(gt, (rgb_ts[keep], _rigid() @ gt_poses[nearest[keep]]), n_frames_total=len(rgb_ts))
    assert r["ate_rmse_m"] < 1e-9
    assert 50.0 < r["tracked_pct"] <= 100.0


def test_rpe_rotation_matches_evo():
    from evo.core import metrics
    from evo.core.trajectory import PoseTrajectory3D

    gt_ts, gt_poses = _ground_truth(n=90)
    rng = np.random.default_rng(3)
    est_poses = gt_poses.copy()
    est_poses[:, :3, :3] = est_poses[:, :3, :3] @ Rotation.from_rotvec(rng.normal(0, 0.02, (90, 3))).as_matrix()
    r = evaluate((gt_ts, gt_poses), (gt_ts, est_poses))
    rpe = metrics.RPE(metrics.PoseRelation.rotation_angle_deg, delta=1, delta_unit=metrics.Unit.frames)
    rpe.process_data((PoseTrajectory3D(poses_se3=list(gt_poses), timestamps=gt_ts),
                      PoseTrajectory3D(poses_se3=list(est_poses), timestamps=gt_ts)))
    assert r["rpe_rot_rmse_deg"] == pytest.approx(rpe.get_statistic(metrics.StatisticsType.rmse), rel=1e-9)
