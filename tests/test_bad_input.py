"""Bad input through the command line: every mistake of issue #21 (and the ones found since) is
one line naming the file or key and the fix, exit code 2, no traceback. Also: the depth format
checked on the first frame, corrupt images skipped with one warning, --max-frames for image
folders, a run that tracks nothing failing, and SIGTERM on a real `python -m slam run`."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from slam.cli import main
from slam.errors import ConfigError
from slam.io.trajectory import write_tum

REPO = Path(__file__).resolve().parents[1]
W, H = 160, 120
CAMERA = {"width": W, "height": H, "fx": 140.0, "fy": 140.0, "cx": 80.0, "cy": 60.0}


def _yaml(d: dict) -> str:
    return "".join(f"{k}: {v}\n" for k, v in d.items())


def textured(seed: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR image with blobs and rectangles."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.normal(size=(H // 4, W // 4)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC) * 50 + 128
    for _ in range(25):
        x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(3, 20)), y + int(rng.integers(3, 20))), float(rng.integers(0, 256)), -1)
    return cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def make_tum(folder: Path, n: int = 4, depth=None, colour=None, with_depth_txt: bool = True) -> Path:
    """A TUM-layout folder of n frames: colour PNGs, depth PNGs (``depth(i)`` gives the array
    to write; default 16-bit, 2 m at TUM's 5000 per metre), rgb.txt, depth.txt."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    rgb_lines, depth_lines = [], []
    for i in range(n):
        t = 1000.0 + i / 30
        cv2.imwrite(str(folder / "rgb" / f"{i}.png"), colour(i) if colour else textured(i))
        d = depth(i) if depth else np.full((H, W), 10000, np.uint16)
        cv2.imwrite(str(folder / "depth" / f"{i}.png"), d)
        rgb_lines.append(f"{t:.6f} rgb/{i}.png")
        depth_lines.append(f"{t:.6f} depth/{i}.png")
    (folder / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    if with_depth_txt:
        (folder / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Everything the bad-input matrix points at, written once."""
    w = tmp_path_factory.mktemp("bad_input")
    make_tum(w / "tum")
    make_tum(w / "tum_depth8", depth=lambda i: np.full((H, W), 200, np.uint8))
    make_tum(w / "tum_depth_small", depth=lambda i: np.full((H // 2, W // 2), 10000, np.uint16))
    make_tum(w / "tum_depth_metres", depth=lambda i: np.full((H, W), 2, np.uint16))  # metres in a 16-bit PNG
    make_tum(w / "tum_depth_rgb", depth=lambda i: np.full((H, W, 3), 100, np.uint8))
    make_tum(w / "tum_depth_empty", depth=lambda i: np.zeros((H, W), np.uint16))
    make_tum(w / "tum_no_depth_txt", with_depth_txt=False)
    (w / "good.yaml").write_text(_yaml(CAMERA))
    (w / "nokey.yaml").write_text(_yaml({k: v for k, v in CAMERA.items() if k != "fx"}))
    (w / "negf.yaml").write_text(_yaml({**CAMERA, "fx": -5}))
    (w / "zerof.yaml").write_text(_yaml({**CAMERA, "fy": 0}))
    (w / "abc.yaml").write_text(_yaml({**CAMERA, "fy": "abc"}))
    (w / "dist2.yaml").write_text(_yaml({**CAMERA, "dist": "[0.1, 0.2]"}))
    (w / "broken.yaml").write_text("width: [640\n")
    (w / "depthfactor.yaml").write_text(_yaml({**CAMERA, "depth_factor": "lots"}))
    (w / "empty").mkdir()
    (w / "notes.txt").write_text("hello\n")
    (w / "afile").write_text("x")
    (w / "corrupt.pth").write_bytes(b"garbage" * 50)
    torch.save({"conv1.weight": torch.zeros(2, 2), "score_head.weight": torch.zeros(2)}, w / "features.pth")
    vw = cv2.VideoWriter(str(w / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (W, H))
    for i in range(5):
        vw.write(textured(i))
    vw.release()
    cv2.imwrite(str(w / "a.png"), textured(0))
    write_tum(w / "gt.txt", 1000.0 + np.arange(5) / 30, np.tile(np.eye(4), (5, 1, 1)))
    return w


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path, restore_slam_logging):
    monkeypatch.delenv("SLAM_DATA", raising=False)
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.chdir(tmp_path)
    yield


def call(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


RUN = ["run", "--sync", "--max-frames", "2", "output.plot=false"]
NO_CUDA = not torch.cuda.is_available()

# (id, argv with {w} for the world folder, words the one error line must hold)
CASES = [
    # 1. calibration files
    ("calib-missing-key", RUN + ["--seq", "{w}/tum", "--calib", "{w}/nokey.yaml"], ["nokey.yaml", "fx"]),
    ("calib-negative-focal", RUN + ["--seq", "{w}/tum", "--calib", "{w}/negf.yaml"], ["negf.yaml", "fx", "positive"]),
    ("calib-zero-focal", RUN + ["--seq", "{w}/tum", "--calib", "{w}/zerof.yaml"], ["zerof.yaml", "fy"]),
    ("calib-fy-abc", RUN + ["--seq", "{w}/tum", "--calib", "{w}/abc.yaml"], ["abc.yaml", "fy", "abc"]),
    ("calib-dist-2", RUN + ["--seq", "{w}/tum", "--calib", "{w}/dist2.yaml"], ["dist2.yaml", "dist"]),
    ("calib-not-yaml", RUN + ["--seq", "{w}/tum", "--calib", "{w}/broken.yaml"], ["broken.yaml", "YAML"]),
    ("calib-depth-factor", RUN + ["--seq", "{w}/tum", "--calib", "{w}/depthfactor.yaml"], ["depthfactor.yaml", "depth_factor"]),
    ("calib-missing-tum-folder", RUN + ["--seq", "{w}/tum", "--calib", "{w}/nope.yaml"], ["--calib", "nope.yaml", "no such file"]),
    ("calib-missing-tum-name", RUN + ["--seq", "tum/fr1_xyz", "--calib", "{w}/nope.yaml"], ["--calib", "nope.yaml"]),
    ("calib-missing-video", RUN + ["--seq", "{w}/clip.avi", "--mode", "mono", "--calib", "{w}/nope.yaml"], ["--calib", "nope.yaml"]),
    ("calib-is-a-folder", RUN + ["--seq", "{w}/tum", "--calib", "{w}/empty"], ["--calib", "folder"]),
    ("tum-without-calib", RUN + ["--seq", "{w}/tum"], ["camera.yaml", "--calib"]),
    # 1. weights and devices
    ("superglue-weights-missing", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "--features", "orb", "--matcher", "superglue",
                                         "superglue.weights=/nonexistent.pth"], ["/nonexistent.pth"]),
    ("superglue-weights-corrupt", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "--features", "orb", "--matcher",
                                         "superglue", "superglue.weights={w}/corrupt.pth"], ["corrupt.pth"]),
    ("lightglue-feature-checkpoint", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "--features", "orb", "--matcher",
                                            "lightglue", "lightglue.features=aliked", "lightglue.weights={w}/features.pth"],
     ["features.pth", "LightGlue"]),
    ("lightglue-with-orb", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "--features", "orb", "--matcher", "lightglue"],
     ["orb", "LightGlue"]),
    pytest.param("cuda-without-gpu", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "--device", "cuda"], ["cuda"],
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")),
    # 1. options and config values
    ("out-is-a-file", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "--features", "orb", "--out", "{w}/afile"], ["--out", "afile"]),
    ("out-unwritable", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "--features", "orb", "--out", "/proc/nope"],
     ["--out", "/proc/nope"]),
    ("max-frames-negative", ["run", "--seq", "{w}/tum", "--calib", "{w}/good.yaml", "--max-frames", "-3"], ["max_frames", "-3"]),
    ("orb-n-features-negative", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "orb.n_features=-5"], ["orb.n_features"]),
    ("orb-n-features-fraction", RUN + ["--seq", "{w}/tum", "--calib", "{w}/good.yaml", "orb.n_features=1500.7"], ["orb.n_features", "1500.7"]),
    ("unknown-config-key", RUN + ["--seq", "{w}/tum", "tracking.nope=1"], ["tracking.nope"]),
    ("config-value-type", RUN + ["--seq", "{w}/tum", "tracking.min_inliers=lots"], ["tracking.min_inliers"]),
    ("config-file-missing", RUN + ["--seq", "{w}/tum", "--config", "{w}/nope.yaml"], ["nope.yaml", "does not exist"]),
    ("live-resize-big", ["live", "--camera", "{w}/clip.avi", "--calib", "{w}/good.yaml", "--resize", "big"], ["--resize big", "WIDTHxHEIGHT"]),
    ("live-mode-rgbd", ["live", "--camera", "{w}/clip.avi", "--calib", "{w}/good.yaml", "--mode", "rgbd"], ["--mode rgbd"]),
    ("live-calib-missing", ["live", "--camera", "{w}/clip.avi", "--calib", "{w}/nope.yaml"], ["nope.yaml"]),
    # 4. paths
    ("seq-path-missing", RUN + ["--seq", "{w}/no/such/folder"], ["--seq", "no/such/folder", "no such file or folder"]),
    ("seq-name-unknown", RUN + ["--seq", "tum/nope"], ["tum/nope"]),
    ("seq-empty-folder", RUN + ["--seq", "{w}/empty"], ["empty", "cannot tell what this folder holds"]),
    ("seq-text-file", RUN + ["--seq", "{w}/notes.txt"], ["notes.txt", "cannot tell what this file holds"]),
    # 2. depth
    ("depth-8-bit", RUN + ["--seq", "{w}/tum_depth8", "--calib", "{w}/good.yaml"], ["tum_depth8/depth/0.png", "8-bit", "--mode mono"]),
    ("depth-smaller-than-colour", RUN + ["--seq", "{w}/tum_depth_small", "--calib", "{w}/good.yaml"],
     ["tum_depth_small/depth/0.png", "80x60", "160x120"]),
    ("depth-scale", RUN + ["--seq", "{w}/tum_depth_metres", "--calib", "{w}/good.yaml"], ["tum_depth_metres/depth/0.png", "depth_factor"]),
    ("depth-3-channels", RUN + ["--seq", "{w}/tum_depth_rgb", "--calib", "{w}/good.yaml"], ["tum_depth_rgb/depth/0.png", "channels"]),
    ("depth-all-zero", RUN + ["--seq", "{w}/tum_depth_empty", "--calib", "{w}/good.yaml"], ["tum_depth_empty/depth/0.png", "valid"]),
    ("depth-txt-missing", RUN + ["--seq", "{w}/tum_no_depth_txt", "--calib", "{w}/good.yaml"], ["depth.txt", "--mode mono"]),
    # 4. features / match / eval
    ("features-image-missing", ["features", "{w}/nope.png", "--features", "orb"], ["nope.png"]),
    ("features-not-an-image", ["features", "{w}/notes.txt", "--features", "orb"], ["notes.txt"]),
    ("features-out-unwritable", ["features", "{w}/a.png", "--features", "orb", "--out", "/proc/nope/kp.png"], ["--out", "/proc/nope"]),
    ("features-out-under-a-file", ["features", "{w}/a.png", "--features", "orb", "--out", "{w}/afile/kp.png"], ["--out", "afile", "not a folder"]),
    ("features-out-no-extension", ["features", "{w}/a.png", "--features", "orb", "--out", "{w}/kp"], ["--out", ".png"]),
    ("match-image-missing", ["match", "{w}/a.png", "{w}/nope.png", "--features", "orb", "--matcher", "nn"], ["nope.png"]),
    ("match-out-is-a-folder", ["match", "{w}/a.png", "{w}/a.png", "--features", "orb", "--matcher", "nn", "--out", "{w}/empty"],
     ["--out", "folder"]),
    ("weights-install-unknown", ["weights", "install", "nope"], ["nope"]),
    ("weights-path-missing", ["weights", "path", "disk_lightglue"], ["disk_lightglue", "weights install"]),
    ("view-not-a-run-folder", ["view", "{w}/empty"], ["empty"]),
    ("view-missing", ["view", "{w}/nope"], ["nope"]),
    ("eval-est-missing", ["eval", "--gt", "{w}/gt.txt", "--est", "{w}/nope.txt"], ["nope.txt"]),
    ("eval-not-a-trajectory", ["eval", "--gt", "{w}/notes.txt", "--est", "{w}/notes.txt"], ["notes.txt"]),
]


@pytest.mark.parametrize("case, argv, words", [c if hasattr(c, "values") else pytest.param(*c, id=c[0]) for c in CASES])
def test_bad_input_is_one_line_naming_the_file_or_key_exit_2(world, capsys, case, argv, words):
    rc = call([a.replace("{w}", str(world)) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert rc == 2, (rc, out, err)
    assert len(errors) == 1, err
    for w in words:
        assert w.replace("{w}", str(world)) in errors[0], (w, errors[0])
    assert "weights_only" not in err  # torch's unsafe advice is never passed on
    assert not list(Path("runs").glob("*")), "a run that could not start left a run folder"


# ------------------------------------------------------------------ depth format, unit level
def test_depth_format_is_checked_on_the_first_frame(world):
    from slam.errors import InputError
    from slam.io.tum import TUMReader

    reader = TUMReader(world / "tum")  # 16-bit, 2 m: fine
    frame = next(iter(reader))
    assert frame.depth.dtype == np.float32 and np.allclose(frame.depth, 2.0)
    for folder, words in [("tum_depth8", ["8-bit", "16-bit"]), ("tum_depth_small", ["80x60", "160x120", "rgb/0.png"]),
                          ("tum_depth_metres", ["depth_factor", "0.0004"]), ("tum_depth_rgb", ["3 channels"])]:
        with pytest.raises(InputError) as info:
            TUMReader(world / folder)
        msg = str(info.value)
        assert str(world / folder / "depth" / "0.png") in msg and all(w in msg for w in words), msg
    # the same data read as metres in 16-bit is fine with its own factor, and monocular ignores depth
    assert TUMReader(world / "tum_depth_metres", depth_factor=1.0).depth_factor == 1.0
    assert len(TUMReader(world / "tum_depth8", use_depth=False)) == 4


def test_depth_factor_comes_from_the_camera_yaml(world, tmp_path):
    from slam.app import open_input
    from slam.config import load_config

    calib = tmp_path / "metres.yaml"
    calib.write_text(_yaml({**CAMERA, "depth_factor": 1.0}))
    inputs = open_input(str(world / "tum_depth_metres"), load_config([], []), calib=str(calib))
    frame = next(iter(inputs.source))
    assert np.allclose(frame.depth, 2.0)


# ------------------------------------------------------------------ corrupt images, --max-frames
def test_corrupt_images_are_skipped_with_one_warning_naming_the_file(tmp_path, caplog, capfd):
    from slam.io.folder import ImageFolderReader
    from slam.io.tum import TUMReader

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), textured(i))
    jpeg = (folder / "002.jpg").read_bytes()
    (folder / "002.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # cut in half
    png = cv2.imencode(".png", textured(9))[1].tobytes()
    (folder / "010.png").write_bytes(png[: len(png) // 2])
    (folder / "005.jpg").write_bytes(b"")
    caplog.set_level(logging.WARNING, logger="slam")
    reader = ImageFolderReader(folder)
    frames = list(reader)
    assert [f.index for f in frames] == [0, 1, 3, 4]  # 000..005.jpg and 010.png; 002 cut, 005 empty, 010 cut
    for name, why in [("002.jpg", "truncated JPEG"), ("010.png", "truncated PNG"), ("005.jpg", "empty")]:
        said = [r.getMessage() for r in caplog.records if name in r.getMessage() and "skipping" in r.getMessage()]
        assert len(said) == 1 and why in said[0], said
    assert reader.n_skipped == 3
    assert "Premature end of JPEG" not in capfd.readouterr().err  # the decoder never sees the cut file
    # the TUM reader too
    tum = make_tum(tmp_path / "tum", colour=lambda i: textured(i))
    data = (tum / "rgb" / "1.png").read_bytes()
    (tum / "rgb" / "1.png").write_bytes(data[: len(data) // 3])
    caplog.clear()
    assert [f.index for f in TUMReader(tum)] == [0, 2, 3]
    assert any(str(tum / "rgb" / "1.png") in r.getMessage() and "truncated PNG" in r.getMessage() for r in caplog.records)


def test_max_frames_and_start_apply_to_image_folders_and_videos(world, tmp_path):
    from slam.app import open_input
    from slam.config import load_config

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(7):
        cv2.imwrite(str(folder / f"{i}.png"), textured(i))
    cfg = load_config([], ["mode=mono", "max_frames=3", "start_frame=2"])
    inputs = open_input(str(folder), cfg, calib=str(world / "good.yaml"))
    assert [Path(f.path).name for f in inputs.source] == ["2.png", "3.png", "4.png"] and inputs.n_frames == 3
    video = open_input(str(world / "clip.avi"), load_config([], ["mode=mono", "max_frames=2"]), calib=str(world / "good.yaml"))
    assert len(list(video.source)) == 2
    # every n-th frame (frame_stride), counted from start_frame; max_frames counts the frames used
    cfg = load_config([], ["mode=mono", "max_frames=2", "start_frame=1", "frame_stride=3"])
    inputs = open_input(str(folder), cfg, calib=str(world / "good.yaml"))
    assert [Path(f.path).name for f in inputs.source] == ["1.png", "4.png"] and inputs.n_frames == 2
    tum = open_input(str(make_tum(tmp_path / "tum", colour=lambda i: textured(i))), load_config([], ["frame_stride=2"]),
                     calib=str(world / "good.yaml"))
    assert [round(f.timestamp, 4) for f in tum.source] == [1000.0, 1000.0667] and tum.n_frames == 2  # 4 frames, every second
    with pytest.raises(ConfigError, match="frame_stride"):
        load_config([], ["frame_stride=0"])


# ------------------------------------------------------------------ a run that tracks nothing
def test_a_run_that_tracks_nothing_fails_with_a_reason(world, tmp_path, capsys):
    flat = make_tum(tmp_path / "flat", colour=lambda i: np.full((H, W, 3), 128, np.uint8))  # no texture at all
    rc = call(["run", "--seq", str(flat), "--calib", str(world / "good.yaml"), "--features", "orb", "--sync",
               "--out", str(tmp_path / "runs"), "output.plot=false"])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["frames_tracked"] == 0 and metrics["frames_in"] == 4
    assert "no frame of 4 was tracked" in metrics["failure"]
    assert ": failed" in out and err.count("no frame of 4 was tracked") == 1  # said once, as the error line


# ------------------------------------------------------------------ SIGTERM on a real run
def _children(pid: int) -> set[int]:
    """pids of the live descendants of ``pid`` (Linux /proc)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":
                parent[int(d.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to see child processes")
def test_sigterm_writes_the_run_so_far_and_leaves_no_process(tmp_path_factory, tmp_path):
    from slam.synth.dataset import ensure_sequence

    seq = ensure_sequence("default", tmp_path_factory.getbasetemp() / "synthetic_data", n_frames=60)
    out_root = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # the default pipeline: threads and a feature process (started before the imports)
    proc = subprocess.Popen([sys.executable, "-m", "slam", "run", "--seq", str(seq), "--features", "orb", "--out", str(out_root),
                             "runtime.feature_stage=process", "output.plot=false"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        log_text = ""
        while "initialised" not in log_text and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            logs = list(out_root.glob("*/run.log"))
            log_text = logs[0].read_text() if logs else ""
        assert proc.poll() is None, "the run ended before the signal"
        assert "feature process: yes" in log_text  # the child this test is about
        time.sleep(1.0)  # a few tracked frames
        kids = _children(proc.pid)
        assert kids, "no child process seen"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, (proc.returncode, out, err)
    assert "Traceback" not in err and "SIGTERM" in err
    (run_dir,) = list(out_root.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "stopped" and metrics["signal"] == "SIGTERM"
    assert 0 < metrics["frames_tracked"] < 60
    rows = [ln for ln in (run_dir / "trajectory.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(rows) == metrics["frames_tracked"]
    assert (run_dir / "keyframes.txt").is_file() and (run_dir / "map.ply").is_file()
    assert ": stopped" in out and str(run_dir) in out
    deadline = time.monotonic() + 10
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)], "child processes left behind"


def test_bench_stops_at_a_signal_and_keeps_the_runs_made(world, tmp_path, monkeypatch, capsys):
    import slam.app
    from slam.bench import BenchSpec, run_bench
    from slam.config import load_config

    calls = []

    def fake_run(cfg, inputs, **kw):  # the first run is stopped by SIGTERM
        calls.append(cfg.mode)
        return {"sequence": inputs.name, "mode": cfg.mode, "features": "orb", "matcher": "nn", "frames_in": 3,
                "tracked_pct": 100.0, "tracked_after_init_pct": 100.0, "fps": 1.0, "peak_rss_mb": 1.0, "keyframes": 1,
                "map_points": 10, "status": "stopped", "signal": "SIGTERM", "run_dir": str(tmp_path / "r")}

    monkeypatch.setattr(slam.app, "run_slam", fake_run)
    seq = make_tum(tmp_path / "seq")
    (seq / "camera.yaml").write_text(_yaml(CAMERA))
    spec = BenchSpec(sequences=[str(seq)], modes="rgbd,mono", json_path=str(tmp_path / "b.json"))
    assert run_bench(load_config([], ["output.plot=false"]), spec) == 143
    assert calls == ["rgbd"]  # no run after the signal
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["stopped_by"] == "SIGTERM" and len(saved["results"]) == 1
    assert "SIGTERM: bench stopped after 1 run(s)" in capsys.readouterr().err
