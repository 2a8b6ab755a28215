"""EuRoC and KITTI through the command line: bad input (exit 2, one line naming the file and the
fix, no traceback), the layout it chose, the wiring of ground truth and trajectory formats, bench's
sequence lists, and short end-to-end runs on the shared excerpts."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.app import open_input
from slam.bench import format_summary, parse_sequences
from slam.cli import build_parser, main
from slam.config import load_config
from slam.eval import evaluate
from slam.errors import InputError

from tiny_datasets import T_BS0, T_BS1, make_euroc, make_kitti, sensor_yaml

REPO = Path(__file__).resolve().parents[1]


def _cli_has_stereo() -> bool:
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(["run", "--mode", "stereo"])
            return True
        except SystemExit:
            return False


STEREO_IN_CLI = _cli_has_stereo()


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path, restore_slam_logging):
    monkeypatch.delenv("SLAM_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def call(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ------------------------------------------------------------------ bad input, exit code 2
def test_euroc_without_sensor_yaml(capsys, tmp_path):
    make_euroc(tmp_path / "seq", n=3)
    (tmp_path / "seq" / "mav0" / "cam0" / "sensor.yaml").unlink()
    assert call(["run", "--seq", str(tmp_path / "seq"), "--mode", "mono"]) == 2
    assert_one_line_error(capsys.readouterr().err, str(tmp_path / "seq" / "mav0" / "cam0" / "sensor.yaml"), "unpack")


def test_euroc_malformed_data_csv(capsys, tmp_path):
    make_euroc(tmp_path / "seq", n=3)
    csv = tmp_path / "seq" / "mav0" / "cam0" / "data.csv"
    csv.write_text(csv.read_text().replace(",", ";", 2))
    assert call(["run", "--seq", str(tmp_path / "seq"), "--mode", "mono"]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{csv}:2:", "fix or remove the line")


def test_image_size_not_matching_the_calibration(capsys, tmp_path):
    make_euroc(tmp_path / "seq", n=3)
    (tmp_path / "seq" / "mav0" / "cam0" / "sensor.yaml").write_text(sensor_yaml(T_BS0, 752, 480))
    assert call(["run", "--seq", str(tmp_path / "seq"), "--mode", "mono"]) == 2
    assert_one_line_error(capsys.readouterr().err, "image is 160x120", "sensor.yaml says resolution [752, 480]")


def test_calibration_for_another_image_size(capsys, tmp_path):
    make_euroc(tmp_path / "seq", n=3)
    (tmp_path / "cam.yaml").write_text("width: 640\nheight: 480\nfx: 500\nfy: 500\ncx: 320\ncy: 240\n")
    assert call(["run", "--seq", str(tmp_path / "seq"), "--mode", "mono", "--calib", str(tmp_path / "cam.yaml")]) == 2
    assert_one_line_error(capsys.readouterr().err, str(tmp_path / "cam.yaml"), "640x480", "160x120", "drop --calib")


def test_depth_mode_on_euroc_and_kitti_asks_for_mono(capsys, tmp_path):
    make_euroc(tmp_path / "seq", n=3)
    made = make_kitti(tmp_path / "dataset", n=3)
    for seq in (str(tmp_path / "seq"), str(made["folder"])):
        assert call(["run", "--seq", seq, "--mode", "rgbd"]) == 2
        assert_one_line_error(capsys.readouterr().err, "has no depth images", "--mode mono")


def test_unclassifiable_folder_lists_what_was_looked_for(capsys, tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("x")
    assert call(["run", "--seq", str(tmp_path / "stuff"), "--mode", "mono"]) == 2
    assert_one_line_error(capsys.readouterr().err, "mav0/cam0/data.csv (EuRoC)", "calib.txt + times.txt", "rgb.txt (TUM)")


def test_named_sequence_missing_says_how_to_get_it(capsys, tmp_path):
    assert call(["run", "--seq", "euroc/V1_02_medium", "--data-root", str(tmp_path), "--mode", "mono"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sequence euroc/V1_02_medium not found") and "python -m slam download euroc/V1_02_medium" in err
    assert "Traceback" not in err


def _stereo_cfg():
    cfg = load_config(None, ["mode=mono"])
    cfg.mode = "stereo"  # the stereo SLAM mode is not in the config yet: set it past validation
    return cfg


def _broken_stereo_inputs(tmp_path: Path) -> list[tuple[str, tuple]]:
    make_euroc(tmp_path / "no_cam1", n=3, with_cam1=False)
    made = make_kitti(tmp_path / "k1" / "dataset", n=3, keys=("P0",))
    sized = make_kitti(tmp_path / "k2" / "dataset", n=3, right_size=(100, 60))
    make_euroc(tmp_path / "cam1_size", n=3)
    cam1 = tmp_path / "cam1_size" / "mav0" / "cam1"
    (cam1 / "sensor.yaml").write_text(sensor_yaml(T_BS1, 80, 60, intrinsics=(60.0, 59.5, 40.5, 31.0)))
    for p in (cam1 / "data").glob("*.png"):
        cv2.imwrite(str(p), cv2.resize(cv2.imread(str(p)), (80, 60)))
    return [
        (str(tmp_path / "no_cam1"), (str(tmp_path / "no_cam1" / "mav0" / "cam1"), "run monocular")),
        (str(made["folder"]), (str(made["folder"] / "calib.txt"), "has no P1", "data_odometry_calib.zip")),
        (str(sized["folder"]), ("image_1/000000.png", "image is 100x60", "left image")),
        (str(tmp_path / "cam1_size"), (str(cam1 / "sensor.yaml"), "sizes differ", "--mode mono")),
    ]


def test_stereo_input_errors_name_the_file_and_the_fix(tmp_path):
    for seq, needles in _broken_stereo_inputs(tmp_path):
        with pytest.raises(InputError) as info:
            open_input(seq, _stereo_cfg())
        for n in needles:
            assert n in str(info.value), (n, str(info.value))
        assert "\n" not in str(info.value)


@pytest.mark.skipif(not STEREO_IN_CLI, reason="the command line has no --mode stereo yet")
def test_stereo_input_errors_through_the_cli(capsys, tmp_path):
    for seq, needles in _broken_stereo_inputs(tmp_path):
        assert call(["run", "--seq", seq, "--mode", "stereo"]) == 2
        assert_one_line_error(capsys.readouterr().err, *needles)


# ------------------------------------------------------------------ wiring
def test_euroc_inputs_carry_camera_groundtruth_and_formats(tmp_path):
    made = make_euroc(tmp_path / "V1_tiny", n=4)
    inputs = open_input(str(tmp_path / "V1_tiny"), load_config(None, ["mode=mono"]))
    assert inputs.name == "V1_tiny" and inputs.dataset == "euroc" and inputs.trajectory_formats == ("euroc",)
    assert "EuRoC (ASL) layout" in inputs.layout and "T_BS" in inputs.groundtruth_note
    ts, world_from_cam = inputs.groundtruth
    np.testing.assert_allclose(world_from_cam, made["world_from_body"] @ T_BS0, atol=1e-8)
    assert inputs.camera.has_distortion and inputs.n_frames == 4 and inputs.rig is None
    # what the run folder evaluates: a perfect trajectory has zero error
    assert evaluate(inputs.groundtruth, inputs.groundtruth, mono=True)["ate_rmse_m"] < 1e-9
    stereo = open_input(str(tmp_path / "V1_tiny"), _stereo_cfg())
    assert stereo.rig is not None and stereo.rig.rectified and not stereo.camera.has_distortion


def test_kitti_by_name_with_data_root(tmp_path):
    made = make_kitti(tmp_path / "dataset", n=4)
    inputs = open_input("kitti/7", load_config(None, ["mode=mono"]), str(tmp_path / "dataset"))
    assert inputs.name == "kitti/07" and inputs.trajectory_formats == ("kitti",) and inputs.dataset == "kitti"
    assert "kitti/07: kitti layout at" in inputs.layout
    np.testing.assert_allclose(inputs.groundtruth[0], made["times"])
    ev = evaluate(inputs.groundtruth, inputs.groundtruth, mono=True, kitti_metrics=True)
    assert ev["kitti_segments"] == 0 and "shorter than" in ev["kitti_note"]


def test_bench_sequence_lists_and_modes(tmp_path, capsys):
    make_euroc(tmp_path / "V1_tiny", n=2)
    make_kitti(tmp_path / "dataset", n=2)
    plan = parse_sequences([f"tum/fr1_xyz,{tmp_path / 'V1_tiny'}", "kitti/07:mono"], None)
    assert plan[0] == ("tum/fr1_xyz", ["rgbd", "mono"])
    assert plan[1] == (str(tmp_path / "V1_tiny"), ["mono", "stereo"])
    assert plan[2] == ("kitti/07", ["mono"])
    assert parse_sequences(["synthetic/stereo,synthetic/default"], None) == [
        ("synthetic/stereo", ["rgbd", "mono", "stereo"]), ("synthetic/default", ["rgbd", "mono"])]
    plan = parse_sequences(["tum/fr1_xyz", "euroc/V1_01_easy"], "rgbd,mono")
    assert plan == [("tum/fr1_xyz", ["rgbd", "mono"]), ("euroc/V1_01_easy", ["mono"])]
    assert "skipping mode(s) rgbd" in capsys.readouterr().out
    with pytest.raises(Exception, match="not a mode of this system"):
        parse_sequences(["tum/fr1_xyz"], "lidar")
    with pytest.raises(Exception, match="none of the modes rgbd apply"):
        parse_sequences(["kitti/07:rgbd"], None)


def test_bench_summary_is_one_table_over_sequences():
    rows = [
        {"sequence": "tum/fr1_xyz", "mode": "rgbd", "frames": 798, "tracked_pct": 100.0, "ate_rmse_m": 0.0101},
        {"sequence": "tum/fr1_xyz", "mode": "mono", "frames": 798, "tracked_pct": 97.0, "ate_rmse_m": 0.0123},
        {"sequence": "kitti/07", "mode": "mono", "frames": 100, "tracked_pct": 0.0, "ate_rmse_m": None},
    ]
    lines = format_summary(rows).splitlines()
    assert "rgbd" in lines[1] and "mono" in lines[1]
    assert lines[3].startswith("tum/fr1_xyz") and "1.01 (100 %)" in lines[3] and "1.23 (97 %)" in lines[3]
    assert lines[4].startswith("kitti/07") and "x (0 %)" in lines[4]


# ------------------------------------------------------------------ end to end on the shared excerpts
def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slam", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


@pytest.mark.needs_data
@pytest.mark.slow
def test_euroc_excerpt_mono_says_layout_and_never_exits_0_untracked(shared_data, tmp_path):
    folder = shared_data / "euroc" / "V1_01_easy_micro"
    if not (folder / "mav0").is_dir():
        pytest.skip(f"EuRoC excerpt not found at {folder}")
    p = _run(["run", "--seq", "euroc/V1_01_easy_micro", "--data-root", str(folder.parent), "--mode", "mono",
              "--max-frames", "25", "--out", str(tmp_path / "runs"), "--sync", "output.plot=false"], tmp_path)
    assert "input: euroc/V1_01_easy_micro: euroc layout" in p.stdout, p.stdout + p.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "trajectory_euroc.csv").is_file() and (run_dir / "trajectory.txt").is_file()
    assert metrics["frames_in"] == 25
    # the excerpt's drone sits still before take-off: no parallax, so a monocular run may track nothing,
    # and then it must not report success
    assert (p.returncode == 0) == (metrics["frames_tracked"] > 0), p.stderr
    if metrics["frames_tracked"] == 0:
        assert "monocular map never initialised" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.needs_data
@pytest.mark.slow
def test_kitti_excerpt_mono_writes_kitti_trajectory(shared_data, tmp_path):
    folder = shared_data / "kitti" / "dataset" / "sequences" / "07"
    if not (folder / "calib.txt").is_file():
        pytest.skip(f"KITTI excerpt not found at {folder}")
    p = _run(["run", "--seq", str(folder), "--mode", "mono", "--max-frames", "30", "--out", str(tmp_path / "runs"),
              "--sync", "output.plot=false"], tmp_path)
    assert "input: " + str(folder) + ": KITTI odometry layout" in p.stdout, p.stdout + p.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    kitti_lines = (run_dir / "trajectory_kitti.txt").read_text().splitlines()
    assert len(kitti_lines) == metrics["frames_tracked"] and metrics["frames_in"] == 30
    assert (p.returncode == 0) == (metrics["frames_tracked"] > 0), p.stderr
    if "eval" in metrics:
        assert "kitti_t_err_pct" in metrics["eval"] and "poses" in metrics["eval"]["groundtruth"]
