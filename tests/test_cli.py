"""Command line (slam.cli.main): exit codes, error messages and the small tool commands."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.cli import main
from slam.geometry.se3 import make_se3, so3_exp
from slam.io.trajectory import write_tum


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path, restore_slam_logging):
    """No data roots or weights from the environment; ./sequences and ./runs under tmp_path;
    the 'slam' logger restored afterwards (main() configures it)."""
    monkeypatch.delenv("SLAM_DATA", raising=False)
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.chdir(tmp_path)
    yield


def call(argv: list[str]):
    """main(argv) -> exit code, also when a command raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors, or a command exiting instead of returning
        return exc.code


def textured(seed: int = 0, w: int = 320, h: int = 240) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(h // 4, w // 4)).astype(np.float32)
    img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * 60 + 128
    img = np.clip(img + rng.normal(scale=8, size=(h, w)), 0, 255).astype(np.uint8)
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(4, 25)), y + int(rng.integers(4, 25))), int(rng.integers(0, 256)), -1)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and cv2.imread(str(path)) is not None


# ------------------------------------------------------------------ run: input errors
def test_unknown_sequence_is_exit_2_naming_it(capsys):
    assert call(["run", "--seq", "tum/nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "tum/nope" in err
    assert "nope.yaml" in err  # what it looked for
    assert "python -m slam sequences" in err
    assert "Traceback" not in err


def test_missing_data_for_known_sequence_names_paths_and_download(capsys, tmp_path):
    from slam.io.sequences import find_sequence
    from slam.errors import InputError

    nowhere = tmp_path / "nowhere"
    try:
        find_sequence("tum/fr1_desk", nowhere)
        pytest.skip("fr1_desk is present in a data root of this machine")
    except InputError:
        pass
    assert call(["run", "--seq", "tum/fr1_desk", "--data-root", str(nowhere)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "tum/fr1_desk" in err
    assert str(nowhere / "rgbd_dataset_freiburg1_desk") in err
    assert str(tmp_path / "sequences" / "rgbd_dataset_freiburg1_desk") in err  # ./sequences
    assert "python -m slam download tum/fr1_desk" in err
    assert "Traceback" not in err


def test_unknown_config_key_is_exit_2(capsys):
    assert call(["run", "--seq", "tum/fr1_desk", "tracking.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'tracking.nope'" in err
    assert "min_inliers" in err  # lists the valid keys


def test_bad_config_value_and_missing_config_file_are_exit_2(capsys, tmp_path):
    assert call(["run", "tracking.min_inliers=lots"]) == 2
    assert "tracking.min_inliers" in capsys.readouterr().err
    assert call(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "does not exist" in err
    assert call(["run", "--mode", "lidar"]) == 2  # argparse choices
    assert "invalid choice" in capsys.readouterr().err
    assert call(["run", "--mode", "stereo"]) == 2  # the default synthetic sequence has no right camera
    err = capsys.readouterr().err
    assert "has no right camera" in err and "synthetic/stereo" in err and len(err.strip().splitlines()) == 1


def test_video_without_calibration_is_exit_2(capsys, tmp_path):
    video = tmp_path / "clip.avi"
    video.write_bytes(b"not really a video")
    assert call(["run", "--seq", str(video), "--mode", "mono"]) == 2
    err = capsys.readouterr().err
    assert "--calib" in err and "python -m slam calibrate" in err
    assert call(["run", "--seq", str(video)]) == 2  # rgbd on a video
    assert "--mode mono" in capsys.readouterr().err


def test_unreadable_image_is_exit_2(capsys, tmp_path):
    assert call(["features", str(tmp_path / "none.png"), "--features", "orb"]) == 2


def test_live_without_calibration_is_exit_2(capsys):
    assert call(["live", "--camera", "7"]) == 2


# ------------------------------------------------------------------ eval
def eval_cli(args: list[str]) -> int:
    """`python -m slam eval ARGS` through slam.eval.eval_main, which main() dispatches to."""
    from slam.eval import eval_main

    try:
        return eval_main(args)
    except SystemExit as exc:
        return exc.code


def _write_pair(tmp_path):
    ts, gt, rng = _trajectory()
    est = gt.copy()
    est[:, :3, 3] += rng.normal(scale=0.002, size=(len(est), 3))
    write_tum(tmp_path / "gt.txt", ts, gt)
    write_tum(tmp_path / "est.txt", ts, est)
    return tmp_path / "gt.txt", tmp_path / "est.txt"


@pytest.mark.parametrize("which", ["eval", "sequences", "calibrate"])
def test_passthrough_commands_accept_options(capsys, tmp_path, which):
    if which == "eval":
        gt, est = _write_pair(tmp_path)
        assert call(["eval", "--gt", str(gt), "--est", str(est)]) == 0
        assert "ATE RMSE" in capsys.readouterr().out
    elif which == "sequences":
        assert call(["sequences", "--data-root", str(tmp_path)]) == 0
        assert "tum/fr1_desk" in capsys.readouterr().out
    else:
        assert call(["calibrate", "--help"]) == 0
        assert "--board" in capsys.readouterr().out


def _trajectory(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 30.0
    poses = np.stack([make_se3(so3_exp(np.array([0.1 * np.sin(s), 0.2 * s, 0.05 * np.cos(2 * s)])),
                               np.array([np.sin(s), 0.5 * np.cos(0.7 * s), 0.2 * s])) for s in t])
    return 1000.0 + t, poses, rng


def test_eval_on_written_trajectories(capsys, tmp_path):
    ts, gt, rng = _trajectory()
    # the estimate lives in another world frame and has 2 mm noise
    world2_from_world = make_se3(so3_exp(np.array([0.3, -0.2, 1.0])), np.array([2.0, -1.0, 0.5]))
    est = np.einsum("ij,njk->nik", world2_from_world, gt)
    est[:, :3, 3] += rng.normal(scale=0.002, size=(len(est), 3))
    write_tum(tmp_path / "gt.txt", ts, gt)
    write_tum(tmp_path / "est.txt", ts[10:], est[10:])  # first 10 frames untracked
    out_json = tmp_path / "res" / "ate.json"
    rc = eval_cli(["--gt", str(tmp_path / "gt.txt"), "--est", str(tmp_path / "est.txt"),
                   "--json", str(out_json), "--n-frames", str(len(ts))])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ATE RMSE" in out and "SE3" in out
    res = json.loads(out_json.read_text())
    assert res["alignment"] == "SE3"
    assert res["n_matched"] == len(ts) - 10
    assert 0.001 < res["ate_rmse_m"] < 0.006  # ~ sqrt(3) * 2 mm
    assert res["tracked_pct"] == pytest.approx(100.0 * (len(ts) - 10) / len(ts))


def test_eval_mono_recovers_scale(capsys, tmp_path):
    ts, gt, _ = _trajectory(seed=1)
    est = gt.copy()
    est[:, :3, 3] *= 0.37  # monocular: arbitrary scale
    write_tum(tmp_path / "gt.txt", ts, gt)
    write_tum(tmp_path / "est.txt", ts, est)
    out_json = tmp_path / "ate.json"
    assert eval_cli(["--gt", str(tmp_path / "gt.txt"), "--est", str(tmp_path / "est.txt"), "--mono",
                     "--json", str(out_json)]) == 0
    res = json.loads(out_json.read_text())
    assert res["alignment"] == "Sim3"
    assert res["ate_rmse_m"] < 1e-6
    assert res["scale"] == pytest.approx(1 / 0.37, rel=1e-4)
    # the same estimate under SE(3) alignment is far off
    assert eval_cli(["--gt", str(tmp_path / "gt.txt"), "--est", str(tmp_path / "est.txt"),
                     "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["ate_rmse_m"] > 0.05


def test_eval_takes_the_alignment_from_the_mode_header(capsys, tmp_path):
    ts, gt, _ = _trajectory(seed=2)
    est = gt.copy()
    est[:, :3, 3] *= 0.37
    write_tum(tmp_path / "gt.txt", ts, gt)
    write_tum(tmp_path / "est.txt", ts, est, header={"n_frames": len(ts), "sequence": "x", "mode": "mono"})
    out_json = tmp_path / "ate.json"
    args = ["eval", "--gt", str(tmp_path / "gt.txt"), "--est", str(tmp_path / "est.txt"), "--json", str(out_json)]
    assert call(args) == 0
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("alignment:")]
    assert len(said) == 1 and "Sim(3)" in said[0] and "mode: mono" in said[0] and "--se3" in said[0]
    res = json.loads(out_json.read_text())
    assert res["alignment"] == "Sim3" and res["ate_rmse_m"] < 1e-6
    assert call(args + ["--se3"]) == 0  # asked for: SE(3), without the line
    assert "alignment:" not in capsys.readouterr().out
    assert json.loads(out_json.read_text())["alignment"] == "SE3"
    write_tum(tmp_path / "est.txt", ts, est, header={"mode": "rgbd"})
    assert call(args) == 0
    assert "alignment:" not in capsys.readouterr().out
    assert json.loads(out_json.read_text())["alignment"] == "SE3"
    assert call(args + ["--mono", "--se3"]) == 2  # one or the other


def test_eval_bad_input_is_exit_2(capsys, tmp_path):
    ts, gt, _ = _trajectory()
    write_tum(tmp_path / "gt.txt", ts, gt)
    (tmp_path / "garbage.txt").write_text("this is not\na trajectory\n")
    assert eval_cli(["--gt", str(tmp_path / "gt.txt"), "--est", str(tmp_path / "garbage.txt")]) == 2
    assert "error:" in capsys.readouterr().err
    assert eval_cli(["--gt", str(tmp_path / "gt.txt"), "--est", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    # timestamps that never overlap
    write_tum(tmp_path / "late.txt", ts + 1e4, gt)
    assert eval_cli(["--gt", str(tmp_path / "gt.txt"), "--est", str(tmp_path / "late.txt")]) == 2


# ------------------------------------------------------------------ features / match
def test_features_writes_png(capsys, tmp_path):
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), textured(0))
    out = tmp_path / "out" / "kp.png"
    out.parent.mkdir()
    assert call(["features", str(img), "--out", str(out), "--features", "orb"]) == 0
    assert is_png(out)
    drawn = cv2.imread(str(out))
    assert drawn.shape[1] == 320 and drawn.shape[0] > 240  # the image, and the legend strip underneath
    assert np.abs(drawn[:240].astype(int) - cv2.imread(str(img)).astype(int)).sum() > 0  # something was drawn
    text = capsys.readouterr().out
    assert "orb keypoints" in text and str(out) in text
    n = int(text.split()[0])
    assert n > 50


def test_features_writes_to_the_current_folder_never_into_the_data_folder(capsys, tmp_path, monkeypatch):
    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    cv2.imwrite(str(data / "img.png"), textured(0))
    monkeypatch.chdir(work)
    # key=value overrides after the options too
    assert call(["features", str(data / "img.png"), "--features", "orb", "orb.n_features=200"]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["img.png"]
    assert is_png(work / "img_orb_kp.png")
    assert capsys.readouterr().out.startswith("200 orb keypoints")


@pytest.mark.parametrize("command", ["features", "match"])
def test_every_option_of_features_and_match_has_a_help_text(command):
    from slam.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    parser = sub.choices[command]
    assert parser.description
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help text"
    dests = {a.dest for a in parser._actions}
    assert {"features", "device", "config", "overrides", "out"} <= dests


def test_match_writes_png(capsys, tmp_path):
    a = textured(1)
    b = np.zeros_like(a)
    b[6:, 8:] = a[:-6, :-8]  # shifted copy
    p0, p1 = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(p0), a)
    cv2.imwrite(str(p1), b)
    out = tmp_path / "m.png"
    assert call(["match", str(p0), str(p1), "--features", "orb", "--matcher", "nn", "--out", str(out)]) == 0
    assert is_png(out)
    assert cv2.imread(str(out)).shape[1] >= 2 * 320  # side by side
    text = capsys.readouterr().out
    n_matches = int(text.split()[0])
    assert n_matches > 30


# ------------------------------------------------------------------ listings
def test_sequences_lists_known_sequences(capsys):
    assert call(["sequences"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(ln.split()[0] == "tum/fr1_desk" for ln in lines if ln.strip())
    assert any(ln.startswith("tum/fr1_xyz") for ln in lines)
    assert "python -m slam download" in out
    assert call(["sequences", "fr2_"]) == 0  # filter
    out = capsys.readouterr().out
    names = [ln.split()[0] for ln in out.splitlines() if ln.startswith("tum/")]
    assert names and all("fr2_" in n for n in names)


def test_weights_list(capsys, tmp_path):
    assert call(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "weights") in out  # honours $SLAM_WEIGHTS_DIR
    assert "superpoint" in out.lower() and "licence" in out
    assert "non-commercial research use only" in out and "…" not in out  # the licence in full
    row = next(ln for ln in out.splitlines() if ln.startswith("superglue_indoor "))
    assert "missing" in row and "Magic Leap" in row


def test_help_and_unknown_command():
    assert call(["--help"]) == 0
    assert call(["run", "--no-such-option"]) == 2


# ------------------------------------------------------------------ a real (short) run
@pytest.mark.slow
def test_run_on_rendered_folder(capsys, tmp_path_factory, tmp_path):
    from slam.synth.dataset import ensure_sequence

    seq = ensure_sequence("default", tmp_path_factory.getbasetemp() / "synthetic_data", n_frames=60)
    out_root = tmp_path / "myruns"
    rc = call(["run", "--seq", str(seq), "--max-frames", "12", "--out", str(out_root), "--sync",
               "--features", "orb", "--matcher", "nn", "runtime.progress=false", "output.plot=false"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "tracked 12 (100.0%)" in out
    (run_dir,) = list(out_root.iterdir())
    assert str(run_dir) in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["frames_in"] == 12 and metrics["runtime"]["mode"] == "sync"
    assert "input:" in (run_dir / "run.log").read_text()  # the CLI sets up logging
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ feature process started first
@pytest.mark.parametrize("argv", [
    ["run", "--sync"],
    ["run", "runtime.threaded=false"],
    ["run", "runtime.feature_stage=thread"],
    ["run", "--device", "cuda"],
    ["run", "-c", "sync.yaml"],
])
def test_no_feature_process_is_started_for_runs_that_will_not_use_one(argv, monkeypatch, tmp_path):
    import slam.cli as cli

    (tmp_path / "sync.yaml").write_text("runtime:\n  threaded: false\n")
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    args = cli.build_parser().parse_args(argv)
    assert cli.start_feature_worker(cli._load_cfg(args)) is None


def test_feature_process_started_first_takes_the_queue_size_of_the_config(monkeypatch, tmp_path):
    import slam.cli as cli

    if Path("/dev/nvidiactl").exists():
        pytest.skip("device auto on a machine with an NVIDIA driver: no feature process is started")
    (tmp_path / "q.yaml").write_text("runtime:\n  queue_size: 5\n")
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    w = cli.start_feature_worker(cli._load_cfg(cli.build_parser().parse_args(["run", "-c", "q.yaml"])))
    try:
        assert w is not None and w.queue_size == 5 and w.fits(5, 1) and not w.fits(8, 1)
    finally:
        w.close()
    w = cli.start_feature_worker(cli._load_cfg(cli.build_parser().parse_args(["bench", "--seq", "x", "-c", "q.yaml", "runtime.queue_size=7"])))
    try:
        assert w is not None and w.queue_size == 7
    finally:
        w.close()
    # runtime.feature_threads reaches the worker, so a run with 2 threads can use it
    w = cli.start_feature_worker(cli._load_cfg(cli.build_parser().parse_args(["run", "-c", "q.yaml", "runtime.feature_threads=2"])))
    try:
        assert w is not None and w.threads == 2 and w.fits(5, 2) and not w.fits(5, 1)
    finally:
        w.close()
