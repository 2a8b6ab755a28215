"""`python -m slam live` on a video file standing in for a camera (slam.cli + slam.io.camera)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from slam.cli import main
from slam.geometry.camera import PinholeCamera
from slam.synth.dataset import ensure_sequence

pytestmark = pytest.mark.slow

N_VIDEO_FRAMES = 40


@pytest.fixture(autouse=True)
def _restore_logging(restore_slam_logging):
    yield


@pytest.fixture(scope="module")
def video_and_calib(tmp_path_factory) -> tuple[Path, Path, PinholeCamera]:
    """An MJPG .avi of the first 40 rendered synthetic frames and the matching calibration YAML."""
    seq = ensure_sequence("default", tmp_path_factory.getbasetemp() / "synthetic_data", n_frames=60)
    camera = PinholeCamera.from_yaml(seq / "camera.yaml")
    out = tmp_path_factory.mktemp("live")
    video = out / "clip.avi"
    frames = sorted((seq / "rgb").glob("*.png"))[:N_VIDEO_FRAMES]
    assert len(frames) == N_VIDEO_FRAMES
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (camera.width, camera.height))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG .avi"
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N_VIDEO_FRAMES
    cap.release()
    calib = out / "calib.yaml"
    camera.to_yaml(calib)
    return video, calib, camera


def _call(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_live_on_video_file_processes_every_frame(video_and_calib, tmp_path, capsys):
    """Without --realtime a video file is read whole, in order, like a dataset: nothing is dropped."""
    video, calib, _ = video_and_calib
    out_root = tmp_path / "runs"
    rc = _call(["live", "--camera", str(video), "--calib", str(calib), "--out", str(out_root),
                "--features", "orb", "--matcher", "nn", "runtime.progress=false"])
    assert rc == 0
    (run_dir,) = list(out_root.iterdir())
    assert run_dir.name.endswith("live_clip")
    assert (run_dir / "trajectory.txt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["mode"] == "mono"  # a plain camera has no depth
    assert metrics["status"] == "completed"
    rt = metrics["runtime"]
    assert rt["live"] is False and rt["mode"] == "threaded"
    assert rt["items_read"] == N_VIDEO_FRAMES
    assert rt["dropped_total"] == 0
    assert metrics["frames_in"] == N_VIDEO_FRAMES
    assert metrics["frames_tracked"] >= N_VIDEO_FRAMES // 2
    traj_lines = [ln for ln in (run_dir / "trajectory.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(traj_lines) == metrics["frames_tracked"]
    out = capsys.readouterr().out
    assert f"run folder: {run_dir}" in out


def test_live_realtime_video_runs_like_a_camera(video_and_calib, tmp_path, capsys):
    """--realtime paces the file at its frame rate through the live queues, which may drop frames."""
    video, calib, _ = video_and_calib
    out_root = tmp_path / "runs"
    rc = _call(["live", "--camera", str(video), "--calib", str(calib), "--out", str(out_root), "--realtime",
                "--features", "orb", "--matcher", "nn", "runtime.progress=false", "output.plot=false"])
    (run_dir,) = list(out_root.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rt = metrics["runtime"]
    assert rt["live"] is True and rt["mode"] == "threaded"
    assert rt["items_read"] == N_VIDEO_FRAMES
    per_queue = {name: q["dropped"] for name, q in rt["queues"].items()}
    assert sum(per_queue.values()) == rt["dropped_total"]
    assert per_queue.get("mapping", 0) == 0  # mapping jobs are never dropped
    # every frame read was either tracked (or tried) or dropped on the way
    assert metrics["frames_in"] + rt["dropped_total"] == N_VIDEO_FRAMES
    assert rc == (0 if metrics["status"] == "completed" else 1)
    assert "dropped frames" in capsys.readouterr().out


def test_live_calibration_size_mismatch_is_exit_2(video_and_calib, tmp_path, capsys):
    video, _, camera = video_and_calib
    small = tmp_path / "small.yaml"
    camera.scaled(0.5, 0.5).to_yaml(small)
    rc = _call(["live", "--camera", str(video), "--calib", str(small), "--out", str(tmp_path / "runs"),
                "--features", "orb", "--matcher", "nn"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "640x480" in err and "320x240" in err
    assert "calibrat" in err.lower() and "--resize" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_live_resize_makes_calibration_fit(video_and_calib, tmp_path):
    video, _, camera = video_and_calib
    small = tmp_path / "small.yaml"
    camera.scaled(0.5, 0.5).to_yaml(small)
    rc = _call(["live", "--camera", str(video), "--calib", str(small), "--resize", "320x240", "--max-frames", "20",
                "--out", str(tmp_path / "runs"), "--features", "orb", "--matcher", "nn", "runtime.progress=false",
                "output.plot=false"])
    assert rc == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["runtime"]["items_read"] == 20


def test_live_resize_scales_a_full_size_calibration(video_and_calib, tmp_path):
    """--resize with a calibration made at the camera's own 640x480: the intrinsics are halved."""
    video, calib, camera = video_and_calib
    rc = _call(["live", "--camera", str(video), "--calib", str(calib), "--resize", "320x240", "--max-frames", "20",
                "--out", str(tmp_path / "runs"), "--features", "orb", "--matcher", "nn", "runtime.progress=false",
                "output.plot=false"])
    (run_dir,) = list((tmp_path / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["runtime"]["items_read"] == 20
    cam = metrics["camera"]
    assert (cam["width"], cam["height"]) == (320, 240)
    half = camera.scaled(0.5, 0.5)  # pixel-centre convention: cx' = (cx + 0.5) / 2 - 0.5
    assert cam["fx"] == pytest.approx(half.fx) and cam["cy"] == pytest.approx(half.cy)
    assert rc == 0 and metrics["frames_tracked"] > 0


@pytest.mark.parametrize("extra, needle", [
    (["--mode", "rgbd"], "monocular only"),
    (["mode=rgbd"], "monocular only"),
    (["--resize", "big"], "WIDTHxHEIGHT"),
    (["frame_stride=3"], "frame_stride and start_frame apply to `run --seq`"),
    (["start_frame=5"], "frame_stride and start_frame apply to `run --seq`"),
])
def test_live_bad_options_are_exit_2(video_and_calib, tmp_path, capsys, extra, needle):
    video, calib, _ = video_and_calib
    rc = _call(["live", "--camera", str(video), "--calib", str(calib), "--out", str(tmp_path / "runs"),
                "--features", "orb", "--matcher", "nn"] + extra)
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_live_missing_device_is_exit_2(video_and_calib, tmp_path, capsys):
    if Path("/dev/video7").exists():
        pytest.skip("/dev/video7 exists on this machine")
    _, calib, _ = video_and_calib
    rc = _call(["live", "--camera", "7", "--calib", str(calib), "--out", str(tmp_path / "runs"),
                "--features", "orb", "--matcher", "nn"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "camera 7" in err and "/dev/video7" in err
    assert "Traceback" not in err


def test_live_missing_video_file_is_exit_2(video_and_calib, tmp_path, capsys):
    _, calib, _ = video_and_calib
    rc = _call(["live", "--camera", str(tmp_path / "nope.mp4"), "--calib", str(calib), "--features", "orb",
                "--matcher", "nn", "--out", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope.mp4" in err and "no such file" in err


def test_live_missing_calibration_file_is_exit_2(video_and_calib, tmp_path, capsys):
    video, _, _ = video_and_calib
    rc = _call(["live", "--camera", str(video), "--calib", str(tmp_path / "none.yaml"), "--features", "orb",
                "--matcher", "nn", "--out", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "none.yaml" in err and "python -m slam calibrate" in err
