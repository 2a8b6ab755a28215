"""Stereo mode (issue 19): stereo matching and depth against exact synthetic truth, the
close/far rule of new points, end-to-end runs on synthetic stereo and the EuRoC excerpt, and
stereo asked of inputs without a right camera."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from slam.app import open_input, run_slam
from slam.cli import main
from slam.config import load_config
from slam.errors import ConfigError, InputError
from slam.features.orb import ORBExtractor
from slam.geometry.camera import PinholeCamera
from slam.io.tum import TUMReader
from slam.mapping.map import Map
from slam.synth.dataset import ensure_sequence
from slam.system import resolve_rig
from slam.tracking.config import StereoConfig
from slam.tracking.keyframes import MIN_STEREO_POINTS, KeyframeFactory
from slam.tracking.stereo import StereoMatcher
from slam.types import Features, FrameFeatures

N_FRAMES = 40


@pytest.fixture(scope="module")
def stereo_seq(tmp_path_factory) -> Path:
    """The first N_FRAMES of the 'stereo' profile (rendered once per session)."""
    return ensure_sequence("stereo", tmp_path_factory.getbasetemp() / "synthetic_data", n_frames=N_FRAMES)


def _cfg(out_root: Path, *overrides: str):
    return load_config(None, ["mode=stereo", "features=orb", "matcher=nn", "device=cpu", "runtime.progress=false",
                              f"output.root={out_root}", *overrides])


# ------------------------------------------------------------------ matching and depth
def test_stereo_depth_matches_the_synthetic_ground_truth(stereo_seq):
    cfg = _cfg(Path("unused"))
    inputs = open_input(str(stereo_seq), cfg)
    rig = inputs.rig
    assert rig is not None and rig.rectified and rig.baseline == pytest.approx(0.1)
    matcher = StereoMatcher(StereoConfig(), rig.bf, rig.left.fx, scale_factor=cfg.orb.scale_factor)
    extractor = ORBExtractor(cfg.orb)
    truth = TUMReader(stereo_seq, use_depth=True, max_frames=4)
    rel, n_depth, n_kp = [], 0, 0
    for frame, gt in zip(inputs.source, truth):
        left, right = extractor.extract(frame.image), extractor.extract(frame.image_right)
        res = matcher.match(left, right, frame.image, frame.image_right)
        ok = res.depth > 0
        np.testing.assert_allclose(left.keypoints_np[ok, 0] - res.u_right[ok], rig.bf / res.depth[ok])
        assert np.all(np.isnan(res.u_right[~ok])) and np.all(res.right_index[~ok] == -1)
        xy = np.rint(left.keypoints_np[ok]).astype(int)
        d_gt = gt.depth[xy[:, 1], xy[:, 0]]
        valid = d_gt > 0
        rel.append(np.abs(res.depth[ok][valid] - d_gt[valid]) / d_gt[valid])
        n_depth += int(ok.sum())
        n_kp += len(left)
    rel = np.concatenate(rel)
    assert n_depth > 0.3 * n_kp, (n_depth, n_kp)
    # sub-pixel disparities: half a percent at 1.5 m with a 0.1 m baseline is ~0.2 px
    assert np.median(rel) < 0.006 and np.mean(rel < 0.05) > 0.93, (np.median(rel), np.mean(rel < 0.05))


def test_subpixel_refinement_beats_integer_keypoints(stereo_seq):
    cfg = _cfg(Path("unused"))
    inputs = open_input(str(stereo_seq), cfg)
    frame = next(iter(inputs.source))
    gt = next(iter(TUMReader(stereo_seq, use_depth=True, max_frames=1)))
    extractor = ORBExtractor(cfg.orb)
    left, right = extractor.extract(frame.image), extractor.extract(frame.image_right)
    errs = []
    for subpixel in (True, False):
        res = StereoMatcher(StereoConfig(subpixel=subpixel), inputs.rig.bf, inputs.rig.left.fx).match(
            left, right, frame.image, frame.image_right)
        ok = res.depth > 0
        xy = np.rint(left.keypoints_np[ok]).astype(int)
        d_gt = gt.depth[xy[:, 1], xy[:, 0]]
        v = d_gt > 0
        errs.append(np.median(np.abs(res.depth[ok][v] - d_gt[v]) / d_gt[v]))
    assert errs[0] < 0.6 * errs[1], errs


def test_subpixel_keypoints_keep_their_disparity(stereo_seq):
    """Learned keypoints are sub-pixel. The SAD patch sits on the rounded pixel, so the refined
    right u must carry the keypoint's own offset: a left keypoint moved by 0.4 px (same rounded
    pixel, same local disparity) keeps its disparity instead of gaining 0.4 px."""
    cfg = _cfg(Path("unused"))
    inputs = open_input(str(stereo_seq), cfg)
    frame = next(iter(inputs.source))
    extractor = ORBExtractor(cfg.orb)
    left, right = extractor.extract(frame.image), extractor.extract(frame.image_right)
    octave0 = np.asarray(left.extra["octave"]) == 0
    matcher = StereoMatcher(StereoConfig(), inputs.rig.bf, inputs.rig.left.fx, scale_factor=cfg.orb.scale_factor)
    base = matcher.match(left, right, frame.image, frame.image_right)
    xy = left.keypoints_np.copy()
    xy[octave0, 0] += 0.4
    moved = Features(torch.from_numpy(xy.astype(np.float32)), left.scores, left.descriptors, left.image_size, extra=left.extra)
    res = matcher.match(moved, right, frame.image, frame.image_right)
    both = octave0 & (base.depth > 0) & (res.depth > 0)
    assert both.sum() > 50, both.sum()
    d_base = left.keypoints_np[both, 0] - base.u_right[both]
    d_moved = xy[both, 0] - res.u_right[both]
    assert np.median(np.abs(d_moved - d_base)) < 0.02, np.median(np.abs(d_moved - d_base))


def _float_features(xy: np.ndarray, desc: np.ndarray) -> Features:
    return Features(torch.from_numpy(xy.astype(np.float32)), torch.ones(len(xy)), torch.from_numpy(desc.astype(np.float32)),
                    (640, 480))


def test_learned_descriptors_are_searched_in_the_epipolar_band_only():
    rng = np.random.default_rng(3)
    n = 200
    xy = np.c_[rng.uniform(100, 600, n), rng.uniform(20, 460, n)]
    desc = rng.normal(size=(n, 64))
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    disparity = rng.uniform(2.0, 60.0, n)
    right_xy = np.c_[xy[:, 0] - disparity, xy[:, 1] + rng.uniform(-0.8, 0.8, n)]
    # distractors: the same descriptors, 30 rows off the epipolar line
    right = _float_features(np.r_[right_xy, right_xy + [0.0, 30.0]], np.r_[desc, desc])
    left = _float_features(xy, desc)
    bf = 50.0
    res = StereoMatcher(StereoConfig(subpixel=False, ratio=1.0), bf, 500.0, scale_factor=1.0).match(left, right)
    assert np.array_equal(res.right_index, np.arange(n))
    np.testing.assert_allclose(res.depth, bf / disparity, rtol=1e-5)
    # a disparity beyond fx (closer than one baseline) is refused
    far_left = _float_features(xy + [600.0, 0.0], desc)
    assert len(StereoMatcher(StereoConfig(subpixel=False), bf, 500.0).match(far_left, right)) == 0


def test_new_stereo_points_are_the_close_ones_and_at_least_the_nearest_hundred():
    cam = PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0)
    m = Map(32, binary=True)
    factory = KeyframeFactory(cam, m, "stereo", close_depth=4.0)
    rng = np.random.default_rng(0)

    def frame(i: int, depth: np.ndarray) -> FrameFeatures:
        k = len(depth)
        kp = np.c_[rng.uniform(0, 640, k), rng.uniform(0, 480, k)]
        feats = Features(torch.from_numpy(kp.astype(np.float32)), torch.ones(k), torch.zeros(k, 32, dtype=torch.uint8), (640, 480))
        return FrameFeatures(i, float(i), feats, kp, depth, np.ones(k), np.zeros((k, 3), np.uint8), np.zeros((k, 32), np.uint8))

    first = frame(0, np.r_[np.full(30, 2.0), np.full(300, 9.0)])
    _, ids0 = factory.insert(first, np.eye(4), np.full(330, -1, dtype=np.int64))
    assert len(ids0) == 330  # the first keyframe: every keypoint with depth
    depth = np.r_[np.full(40, 3.0), np.linspace(5.0, 20.0, 200), np.zeros(10)]
    _, ids = factory.insert(frame(1, depth), np.eye(4), np.full(250, -1, dtype=np.int64))
    assert len(ids) == MIN_STEREO_POINTS  # 40 close ones, then the 60 nearest far ones
    kf = m.keyframes[1]
    made = kf.point_ids >= 0
    assert made[:40].all() and made[40:100].all() and not made[100:].any()


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_synthetic_stereo_tracks_every_frame_with_metric_accuracy(stereo_seq, tmp_path):
    cfg = _cfg(tmp_path, "runtime.threaded=false", "output.plot=false")
    metrics = run_slam(cfg, open_input(str(stereo_seq), cfg))
    assert metrics["status"] == "completed" and metrics["mode"] == "stereo"
    assert metrics["frames_tracked"] == N_FRAMES and metrics["init_frame"] == 0
    ev = metrics["eval"]
    assert ev["alignment"] == "SE3" and ev["ate_rmse_m"] < 0.005, ev
    saved = load_config([Path(metrics["run_dir"]) / "config.yaml"])
    assert saved.tracking.bf == pytest.approx(51.73) and saved.tracking.keyframes.close_depth == pytest.approx(4.0)


@pytest.mark.needs_data
@pytest.mark.slow
def test_euroc_excerpt_stereo(shared_data, tmp_path):
    folder = shared_data / "euroc" / "V1_01_easy_micro"
    if not (folder / "mav0").is_dir():
        pytest.skip(f"EuRoC excerpt not found at {folder}")
    cfg = _cfg(tmp_path, "output.plot=false")
    inputs = open_input(str(folder), cfg)
    metrics = run_slam(cfg, inputs)
    assert metrics["status"] == "completed" and metrics["frames_in"] == 95
    assert metrics["tracked_pct"] >= 95.0 and metrics["init_frame"] == 0
    assert metrics["eval"]["alignment"] == "SE3" and metrics["eval"]["ate_rmse_m"] <= 0.05, metrics["eval"]
    run_dir = Path(metrics["run_dir"])
    rows = [ln for ln in (run_dir / "trajectory_euroc.csv").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(rows) == metrics["frames_tracked"]


# ------------------------------------------------------------------ bad input
def _one_line_exit_2(argv: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    return lines[0]


def test_stereo_without_a_right_camera_is_one_line_and_exit_2(tmp_path, monkeypatch, restore_slam_logging):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "tum_like"
    folder.mkdir()
    (folder / "rgb.txt").write_text("0.0 rgb/0.png\n")
    (folder / "camera.yaml").write_text("width: 64\nheight: 48\nfx: 50\nfy: 50\ncx: 32\ncy: 24\n")
    line = _one_line_exit_2(["run", "--seq", str(folder), "--mode", "stereo"])
    assert "has no right camera" in line and "--mode mono" in line
    with pytest.raises(InputError, match="has no right camera"):
        open_input("synthetic/default", load_config(None, ["mode=stereo"]), str(tmp_path))


def test_stereo_config_needs_a_rectified_rig(stereo_seq):
    cfg = load_config(None, ["mode=stereo"])
    with pytest.raises(ConfigError, match="rectified stereo input"):
        resolve_rig(cfg, None)
    rig = open_input(str(stereo_seq), cfg).rig
    out = resolve_rig(cfg, rig)
    assert out.tracking.bf == pytest.approx(rig.bf) and out.tracking.keyframes.close_depth == pytest.approx(40 * 0.1)
    assert cfg.tracking.bf == 40.0  # the caller's config is not changed
    assert resolve_rig(load_config(None, ["mode=rgbd"]), rig).tracking.bf == 40.0
    with pytest.raises(ConfigError):
        load_config(None, ["stereo.method=bogus"])


def _as_kitti(seq: Path, out: Path, n: int) -> Path:
    """The first n frames of a rendered stereo sequence in KITTI's odometry layout (grey pair,
    calib.txt P0..P3, times.txt, poses/XX.txt world_from_cam0 relative to the first frame)."""
    import cv2

    from slam.io.trajectory import read_tum

    inputs = open_input(str(seq), load_config(None, ["mode=stereo"]))
    rig = inputs.rig
    folder = out / "sequences" / "05"
    for sub in ("image_0", "image_1"):
        (folder / sub).mkdir(parents=True)
    times, poses = [], []
    ts_gt, world_from_cam = read_tum(seq / "groundtruth.txt")
    for i, frame in enumerate(inputs.source):
        if i == n:
            break
        cv2.imwrite(str(folder / "image_0" / f"{i:06d}.png"), cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY))
        cv2.imwrite(str(folder / "image_1" / f"{i:06d}.png"), cv2.cvtColor(frame.image_right, cv2.COLOR_BGR2GRAY))
        times.append(frame.timestamp)
        poses.append(world_from_cam[int(np.argmin(np.abs(ts_gt - frame.timestamp)))])
    K = rig.left.K
    P0 = np.c_[K, np.zeros(3)]
    P1 = P0.copy()
    P1[0, 3] = -rig.bf
    (folder / "calib.txt").write_text("".join(f"P{j}: " + " ".join(f"{v:.12e}" for v in P.ravel()) + "\n"
                                              for j, P in enumerate((P0, P1, P0, P1))))
    (folder / "times.txt").write_text("".join(f"{t - times[0]:.6e}\n" for t in times))
    first_inv = np.linalg.inv(poses[0])
    (out / "poses").mkdir()
    (out / "poses" / "05.txt").write_text("".join(" ".join(f"{v:.12e}" for v in (first_inv @ p)[:3].ravel()) + "\n"
                                                  for p in poses))
    return folder


@pytest.mark.slow
def test_kitti_layout_stereo_end_to_end(stereo_seq, tmp_path):
    """The KITTI reader's stereo path (calib.txt P1 baseline, image_0/image_1) end to end, on the
    synthetic pair written in KITTI's layout (the shared KITTI excerpt has no right images)."""
    folder = _as_kitti(stereo_seq, tmp_path / "dataset", 25)
    cfg = _cfg(tmp_path / "runs", "runtime.threaded=false", "output.plot=false")
    inputs = open_input(str(folder), cfg)
    assert inputs.dataset == "kitti" and inputs.rig.baseline == pytest.approx(0.1)
    metrics = run_slam(cfg, inputs)
    assert metrics["frames_tracked"] == 25 and metrics["eval"]["ate_rmse_m"] < 0.005, metrics.get("eval")
    lines = (Path(metrics["run_dir"]) / "trajectory_kitti.txt").read_text().splitlines()
    assert len(lines) == 25 and len(lines[0].split()) == 12
