"""Running the system on an input and writing the run folder.

A run folder ``<output.root>/<date>_<time>_<sequence>/`` holds: config.yaml (resolved),
trajectory.txt (TUM, every tracked frame), keyframes.txt (TUM), optional trajectory_kitti.txt
and trajectory_euroc.csv, map.ply, run.log, metrics.json, map.png and, with ground truth,
trajectory.png. Everything is written in a ``finally`` block, so Ctrl-C or a crash in a stage
still leaves the trajectory so far.
"""
from __future__ import annotations

import functools
import json
import logging
import resource
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from slam.config import Config, dump_yaml
from slam.errors import InputError
from slam.geometry.camera import PinholeCamera
from slam.device import resolve_device
from slam.runtime.feature_process import FeatureWorker, ProcessFrontend, use_process_frontend
from slam.system import SLAMSystem, build_frontend, build_system

log = logging.getLogger("slam")


@dataclass
class RunInputs:
    name: str  # e.g. "tum/fr1_xyz", used for the run folder name
    source: Iterable  # yields slam.types.Frame
    camera: PinholeCamera
    # a trajectory file, or (timestamps (N,) s, world_from_cam (N, 4, 4)) of the camera of Frame.image
    groundtruth: Union[Path, tuple, None] = None
    n_frames: Optional[int] = None
    info: str = ""  # one line describing the input, for the log
    layout: str = ""  # which layout --seq was read as, one line for the user (slam.io.detect.describe)
    groundtruth_note: str = ""  # what the ground truth is (e.g. EuRoC body poses turned into cam0 poses)
    trajectory_formats: tuple = ()  # extra trajectory files this dataset gets by default: "kitti", "euroc"
    rig: Any = None  # slam.geometry.stereo.StereoRig of a stereo input, else None
    dataset: str = ""  # "euroc", "kitti", ... when known (KITTI gets its relative metrics)
    groundtruth_source: str = ""  # file or dataset folder the ground truth was read from (`eval --gt` takes it)


def open_input(seq: Optional[str], cfg: Config, data_root: Optional[str] = None, calib: Optional[str] = None) -> RunInputs:
    """Resolve --seq into a reader and a camera (see :func:`_open_input`). ``mode: stereo`` needs
    an input with a rectified rig (EuRoC, KITTI, synthetic/stereo): InputError otherwise."""
    inputs = _open_input(seq, cfg, data_root, calib)
    if cfg.mode == "stereo" and inputs.rig is None:
        raise InputError(f"{seq or 'synthetic/default'} has no right camera for --mode stereo; stereo runs on EuRoC, KITTI "
                         "and synthetic/stereo: run this input with --mode mono (or rgbd where it has depth)")
    return inputs


def _open_input(seq: Optional[str], cfg: Config, data_root: Optional[str] = None, calib: Optional[str] = None) -> RunInputs:
    """Resolve --seq into a reader and a camera.

    seq: "tum/<name>", "euroc/<name>", "kitti/<XX>", "synthetic/<profile>", or a path whose
    layout is detected (slam.io.detect: TUM, EuRoC, KITTI, image folder, video; the choice is in
    ``RunInputs.layout``). None = the embedded default "synthetic/default". EuRoC and KITTI
    (slam.io.datasets) take cfg.mode "mono" (left camera) or "stereo" (rectified pairs and
    ``RunInputs.rig``); their ground truth is the camera's pose, with a note saying how it was made.
    "synthetic/stereo" in stereo mode reads its right images too (``rgb_right.txt``).
    """
    from slam.io.sequences import find_sequence, load_manifest

    use_depth = cfg.mode == "rgbd"
    seq = seq or "synthetic/default"
    path = Path(seq)
    if calib and not Path(calib).is_file():
        raise InputError(f"--calib {calib}: {'is a folder, not a file' if Path(calib).is_dir() else 'no such file'}; "
                         "pass the camera YAML (make one with `python -m slam calibrate`)")
    if seq.startswith("synthetic/"):
        from slam.synth.dataset import ensure_sequence
        from slam.io.sequences import resolve_data_root
        from slam.io.tum import TUMReader

        root = resolve_data_root(data_root)[0]
        if cfg.mode == "stereo":
            from slam.synth.manifest import load_manifest as load_profile

            if not load_profile(seq.split("/", 1)[1], root).get("stereo"):  # before rendering anything
                raise InputError(f"{seq} has no right camera (its profile has no stereo mapping); "
                                 "use --seq synthetic/stereo for stereo, or --mode rgbd / mono")
        folder = ensure_sequence(seq.split("/", 1)[1], root)
        camera = PinholeCamera.from_yaml(folder / "camera.yaml") if (folder / "camera.yaml").is_file() else None
        if camera is None:
            from slam.synth.dataset import read_camera_manifest

            camera = read_camera_manifest(folder)
        if calib:
            camera = PinholeCamera.from_yaml(calib)
        rig = None
        if cfg.mode == "stereo":
            from slam.synth.dataset import read_stereo_rig

            rig = read_stereo_rig(folder)
            if rig is None:
                raise InputError(f"{seq} has no right camera ({folder / 'camera.yaml'} has no stereo mapping); "
                                 "use --seq synthetic/stereo for stereo, or --mode rgbd / mono")
            if not rig.rectified:
                raise InputError(f"{folder / 'camera.yaml'}: the synthetic stereo pair is not rectified (its camera has distortion); "
                                 "render a profile without distortion for --mode stereo")
        reader = TUMReader(folder, use_depth=use_depth, max_frames=cfg.max_frames, start=cfg.start_frame, stride=cfg.frame_stride,
                           right_list="rgb_right.txt" if rig is not None else None)
        gt = folder / "groundtruth.txt"
        return RunInputs(seq, reader, camera, gt if gt.is_file() else None, len(reader), f"synthetic sequence {folder}", rig=rig)
    named = _open_named_dataset(seq, cfg, data_root, calib)
    if named is not None:
        return named
    if path.exists():
        return _open_path(path, cfg, calib)
    if _looks_like_path(seq):
        raise InputError(f"--seq {seq}: no such file or folder{_nearest_existing(path)}; pass a dataset folder, an image "
                         "folder or a video file, or a known name (`python -m slam sequences`)")
    info = load_manifest(seq)
    info, folder = find_sequence(seq, data_root)
    from slam.io.tum import TUMReader

    reader = TUMReader(folder, depth_factor=info.depth_factor, use_depth=use_depth, max_frames=cfg.max_frames, start=cfg.start_frame, stride=cfg.frame_stride)
    c = info.camera
    camera = PinholeCamera.from_dict({**c, "dist": tuple(info.dist[:5].tolist())}, source=f"manifest of {info.name}")
    if calib:
        camera = PinholeCamera.from_yaml(calib)
    gt = folder / "groundtruth.txt"
    return RunInputs(info.name, reader, camera, gt if gt.is_file() else None, len(reader), f"{info.name} at {folder}")


def _looks_like_path(seq: str) -> bool:
    """True when --seq is meant as a path rather than a name like tum/fr1_xyz: absolute, starting
    with . or ~, with a file extension, or not under a known dataset prefix."""
    if seq.startswith(("/", ".", "~")) or Path(seq).suffix:
        return True
    head = seq.replace("\\", "/").split("/", 1)[0]
    return head not in ("tum", "euroc", "kitti", "synthetic")


def _nearest_existing(path: Path) -> str:
    """", <folder> exists but holds no <name>" for the deepest existing parent of a missing path."""
    parent = path.expanduser().absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return f" ({parent} exists, but not {path.expanduser().absolute().relative_to(parent)})" if parent != Path("/") else ""


def _depth_factor(cam_file: Path, default: float = 5000.0) -> float:
    """``depth_factor:`` of a camera YAML (depth units per metre), else ``default`` (TUM's 5000)."""
    import yaml

    try:
        d = yaml.safe_load(Path(cam_file).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return default
    value = d.get("depth_factor", default) if isinstance(d, dict) else default
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{cam_file}: depth_factor {value!r} is not a number (depth units per metre, 5000 for TUM)") from None
    if not value > 0:
        raise InputError(f"{cam_file}: depth_factor {value!r} must be > 0 (depth units per metre, 5000 for TUM)")
    return value


def _dataset_inputs(ds, cfg: Config, calib: Optional[str], layout: str = "") -> RunInputs:
    """RunInputs of a EuRoC/KITTI sequence opened by slam.io.datasets (--calib replaces a mono camera)."""
    camera = ds.camera
    if calib:
        if ds.rig is not None:
            raise InputError(f"{calib}: --calib applies to monocular runs; a stereo run takes both cameras from {ds.folder}")
        camera = PinholeCamera.from_yaml(calib)
        if (camera.width, camera.height) != (ds.camera.width, ds.camera.height):
            raise InputError(
                f"{calib}: calibrated for {camera.width}x{camera.height} images but {ds.folder} has "
                f"{ds.camera.width}x{ds.camera.height}; calibrate the camera at that resolution, or drop --calib"
            )
    return RunInputs(ds.name, ds.reader, camera, ds.groundtruth, ds.n_frames, ds.info,
                     layout=layout or f"{ds.folder}: {ds.layout}", groundtruth_note=ds.groundtruth_note,
                     trajectory_formats=ds.trajectory_formats, rig=ds.rig, dataset=ds.layout,
                     groundtruth_source=str(Path(ds.folder).resolve()) if ds.groundtruth is not None else "")


def _open_named_dataset(seq: str, cfg: Config, data_root: Optional[str], calib: Optional[str]) -> Optional[RunInputs]:
    """``euroc/<name>`` and ``kitti/<XX>`` (slam.io.datasets); None for other names."""
    from slam.io.datasets import open_stereo_dataset, resolve_named

    if Path(seq).exists():
        return None
    found = resolve_named(seq, data_root)
    if found is None:
        return None
    name, layout, folder = found
    ds = open_stereo_dataset(layout, folder, cfg.mode, name=name, max_frames=cfg.max_frames, start=cfg.start_frame, stride=cfg.frame_stride)
    return _dataset_inputs(ds, cfg, calib, layout=f"{name}: {layout} layout at {folder}")


def _open_path(path: Path, cfg: Config, calib: Optional[str]) -> RunInputs:
    from slam.io.detect import describe, detect_layout

    layout = detect_layout(path)
    if layout.kind in ("euroc", "kitti"):
        from slam.io.datasets import open_stereo_dataset

        ds = open_stereo_dataset(layout.kind, layout.path, cfg.mode, max_frames=cfg.max_frames, start=cfg.start_frame, stride=cfg.frame_stride)
        return _dataset_inputs(ds, cfg, calib, layout=describe(layout))
    inputs = _open_plain_path(path, cfg, calib)
    inputs.layout = describe(layout)
    return inputs


def _open_plain_path(path: Path, cfg: Config, calib: Optional[str]) -> RunInputs:
    use_depth = cfg.mode == "rgbd"
    if path.is_dir() and (path / "rgb.txt").is_file():
        from slam.io.tum import TUMReader

        cam_file = Path(calib) if calib else path / "camera.yaml"
        if not cam_file.is_file():
            raise InputError(f"{path} looks like a TUM-layout sequence but has no camera.yaml; pass --calib FILE.yaml (see `python -m slam calibrate --help`)")
        camera = PinholeCamera.from_yaml(cam_file)
        rig = _tum_layout_rig(path, cfg) if cfg.mode == "stereo" else None
        reader = TUMReader(path, depth_factor=_depth_factor(cam_file), use_depth=use_depth,
                           max_frames=cfg.max_frames, start=cfg.start_frame, stride=cfg.frame_stride,
                           right_list="rgb_right.txt" if rig is not None else None)
        gt = path / "groundtruth.txt"
        return RunInputs(path.name, reader, camera, gt if gt.is_file() else None, len(reader), f"TUM-layout folder {path}", rig=rig)
    if use_depth:
        raise InputError(f"{path} has no depth images; run it monocular with --mode mono")
    if not calib:
        raise InputError(f"{path}: a video or image folder needs a calibration; pass --calib FILE.yaml (make one with `python -m slam calibrate`)")
    camera = PinholeCamera.from_yaml(calib)
    if path.is_dir():
        from slam.io.folder import ImageFolderReader

        reader = ImageFolderReader(path, max_frames=cfg.max_frames, start=cfg.start_frame, stride=cfg.frame_stride)
    else:
        from slam.io.video import VideoReader

        reader = VideoReader(path, max_frames=cfg.max_frames, start=cfg.start_frame, stride=cfg.frame_stride)
    n = len(reader) if hasattr(reader, "__len__") else None
    return RunInputs(path.stem, reader, camera, None, n, f"{path}")


def _tum_layout_rig(path: Path, cfg: Config):
    """The rectified rig of a TUM-layout folder with right images (a rendered synthetic stereo
    sequence: rgb_right.txt and the stereo mapping of camera.yaml), or None."""
    if not (path / "rgb_right.txt").is_file():
        return None
    from slam.synth.dataset import read_stereo_rig

    rig = read_stereo_rig(path)
    if rig is not None and not rig.rectified:
        raise InputError(f"{path / 'camera.yaml'}: the stereo pair is not rectified (its camera has distortion); "
                         "--mode stereo needs rectified images")
    return rig


def make_run_dir(root: str | Path, name: str) -> Path:
    """A new folder ``<root>/<date>_<time>_<name>`` (``_2``, ``_3``... when it exists).
    InputError naming the root (``--out`` / ``output.root``) when it cannot be made."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H%M%S")
    safe = name.replace("/", "-").replace(" ", "_")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"--out / output.root {root} is a file, not a folder; pass a folder for the run folders")
    out = root / f"{stamp}_{safe}"
    n = 1
    while out.exists():
        n += 1
        out = root / f"{stamp}_{safe}_{n}"
    try:
        out.mkdir(parents=True)
    except OSError as exc:
        raise InputError(f"cannot make a run folder under --out / output.root {root}: {exc.strerror}; "
                         "pass a folder you can write to") from None
    return out


def _attach_log(path: Path) -> logging.Handler:
    """Log INFO and above of the 'slam' loggers to the run folder (the terminal keeps its level)."""
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.INFO)
    root = logging.getLogger("slam")
    h._previous_level = root.level  # type: ignore[attr-defined]
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(h)
    return h


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_slam(cfg: Config, inputs: RunInputs, out_dir: Optional[Path] = None, live: bool = False,
             feature_worker: Optional[FeatureWorker] = None) -> dict:
    """Run the system over ``inputs.source``; write the run folder; return metrics.json's content.

    The configuration is resolved completely first (``slam.system.resolve_config``: auto
    features and matcher, the device, ``runtime.live``), so config.yaml records what ran.
    feature_worker: a feature process started in advance (slam.runtime.feature_process), used
    when this run puts its features in a process and the worker fits; the caller closes it.
    numpy's BLAS is limited to ``cfg.runtime.blas_threads`` for the run (slam.runtime.blas).
    SIGINT, SIGTERM and SIGHUP stop the run; what it has is written, with status "stopped" and
    the signal in ``metrics["signal"]``. A run that tracks no frame, or a smaller share than
    ``cfg.min_tracked_pct``, ends with status "failed" and ``metrics["failure"]`` saying why.
    """
    from slam.runtime.blas import blas_threads
    from slam.system import resolve_config, resolve_rig

    cfg = resolve_rig(resolve_config(cfg, live=live), inputs.rig)
    with blas_threads(cfg.runtime.blas_threads):
        return _run(cfg, inputs, out_dir, feature_worker)


def _run(cfg: Config, inputs: RunInputs, out_dir: Optional[Path], feature_worker: Optional[FeatureWorker]) -> dict:
    from slam.runtime.blas import main_process_torch_threads, torch_threads
    from slam.runtime.runner import handle_signals
    from slam.runtime.threaded import make_runner
    from slam.viz import create_viewer

    made_here = out_dir is None
    out_dir = out_dir or make_run_dir(cfg.output.root, inputs.name)
    handler = _attach_log(out_dir / "run.log")
    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    log.info("input: %s", inputs.info)
    rt = cfg.runtime
    frontend_proc = None
    source = inputs.source
    if use_process_frontend(rt.feature_stage, rt.threaded, resolve_device(cfg.device).type):
        # started first, so the child's imports overlap with building the system here
        frontend_proc = ProcessFrontend(source, functools.partial(build_frontend, cfg, inputs.camera), live=rt.live,
                                        queue_size=rt.queue_size, threads=rt.feature_threads, worker=feature_worker,
                                        blas_threads=rt.blas_threads).start()
        source = frontend_proc
    try:
        system = build_system(cfg, inputs.camera)
        viewer = create_viewer(cfg.viewer, camera=inputs.camera) if cfg.viewer != "none" else None
    except BaseException:
        if frontend_proc is not None:
            frontend_proc.close()
        logging.getLogger("slam").removeHandler(handler)
        handler.close()
        if made_here:  # nothing ran (bad weights, device, ...): leave no half-empty run folder behind
            import shutil

            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    log.info("features: %s, matcher: %s, mode: %s, device: %s, feature process: %s", cfg.features, cfg.matcher, cfg.mode,
             system.device,
             "no" if frontend_proc is None else ("yes (started in advance)" if frontend_proc.reused_worker else "yes"))
    stages = system.stages[1:] if frontend_proc is not None else system.stages

    def progress() -> dict:
        if viewer is not None:
            viewer.update(snapshot(system))
        return system.progress_info()

    runner = make_runner(source, stages, rt, progress_fn=progress, total=inputs.n_frames)
    t0 = time.perf_counter()
    stats = None
    error: Optional[BaseException] = None
    signal_name = None
    try:
        n_torch = main_process_torch_threads(rt.torch_threads, frontend_proc is not None)
        if n_torch:
            log.info("torch threads in the main process: %d (runtime.torch_threads)", n_torch)
        with handle_signals(runner, log) as sig, torch_threads(n_torch):
            stats = runner.run()
        signal_name = sig.name
    except BaseException as exc:  # noqa: BLE001 - written below, then re-raised
        error = exc
    finally:
        if frontend_proc is not None:
            frontend_proc.close()
    wall = time.perf_counter() - t0
    status = stats.status if stats is not None else ("stopped" if isinstance(error, KeyboardInterrupt) else "failed")
    try:
        # a stop signal while the results are written (the global BA can take a while) lets the
        # writing finish and sets the exit code; a second one aborts
        with handle_signals(_NothingToStop(), log) as late:
            metrics = _finish(cfg, system, inputs, out_dir, stats, wall, status, error)
        signal_name = signal_name or late.name
        if signal_name is not None:
            metrics["signal"] = signal_name
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    finally:
        if viewer is not None:
            viewer.close()
        logging.getLogger("slam").removeHandler(handler)
        logging.getLogger("slam").setLevel(getattr(handler, "_previous_level", logging.NOTSET))
        handler.close()
    if error is not None:
        raise error
    return metrics


class _NothingToStop:
    """The runner of handle_signals once the run is over: a signal only gets recorded."""

    def stop(self) -> None:
        pass


def snapshot(system: SLAMSystem, title: str = ""):
    """The MapSnapshot of the system now (copies), for the viewer and map.png."""
    from slam.viz.base import MapSnapshot

    _, _, traj = system.trajectory()
    _, kf = system.keyframe_trajectory()
    pts, col = system.map_points()
    return MapSnapshot(
        trajectory_world_from_cam=traj,
        keyframe_world_from_cam=kf,
        current_world_from_cam=traj[-1] if len(traj) else None,
        points_world=pts,
        colors=col,
        camera=system.camera,
        title=title,
        metric=system.cfg.mode != "mono",
        loop_edges=system.loop_segments(),
    )


def _groundtruth_source(inputs: RunInputs) -> Optional[str]:
    """Where the ground truth of a run comes from (a file or a dataset folder), as a path that
    `python -m slam eval --gt` and `python -m slam view` take; None without ground truth."""
    if isinstance(inputs.groundtruth, (str, Path)):
        return str(Path(inputs.groundtruth).resolve())
    return inputs.groundtruth_source or None


def _finish(cfg: Config, system: SLAMSystem, inputs: RunInputs, out_dir: Path, stats, wall: float, status: str, error) -> dict:
    """Write the trajectory, map, metrics and pictures of a run that ended (whatever the reason)."""
    from slam.io.ply import write_ply
    from slam.io.trajectory import write_euroc, write_kitti, write_tum

    gba = None
    if status == "completed":
        try:
            gba = system.finish()
        except Exception as exc:  # noqa: BLE001 - keep the trajectory anyway
            log.error("global bundle adjustment failed: %s", exc)
    idx, ts, traj = system.trajectory()
    n_in = len(system.tracking_stage.results)
    write_tum(out_dir / "trajectory.txt", ts, traj, header={"n_frames": n_in, "sequence": inputs.name, "mode": cfg.mode})
    segments = _write_segments(cfg, system, inputs, out_dir, n_in)
    if cfg.output.kitti or "kitti" in inputs.trajectory_formats:
        write_kitti(out_dir / "trajectory_kitti.txt", traj)
        if len(ts) < n_in:
            log.info("trajectory_kitti.txt holds the %d tracked frames of %d (KITTI files have no timestamps: "
                     "evaluate trajectory.txt, which has them)", len(ts), n_in)
    if cfg.output.euroc or "euroc" in inputs.trajectory_formats:
        write_euroc(out_dir / "trajectory_euroc.csv", ts, traj)
    kts, kposes = system.keyframe_trajectory()
    write_tum(out_dir / "keyframes.txt", kts, kposes)
    pts, col = system.map_points()
    if cfg.output.ply:
        write_ply(out_dir / "map.ply", pts, col)
    tracked_pct = 100.0 * len(ts) / max(n_in, 1)
    failure = None
    if status == "completed" and len(ts) == 0:
        failure = _nothing_tracked(n_in, cfg.mode, system.tracking_stage.results)
    elif status == "completed" and tracked_pct < cfg.min_tracked_pct:
        failure = f"{tracked_pct:.1f}% of the frames were tracked, below min_tracked_pct={cfg.min_tracked_pct:g}"
    if failure is not None:
        status = "failed"
        log.info("run failed: %s", failure)  # run.log; the command prints it as its error line
    metrics: dict[str, Any] = {
        "sequence": inputs.name,
        "run_dir": str(out_dir),
        "status": status,
        "mode": cfg.mode,
        "features": cfg.features,
        "matcher": cfg.matcher,
        "device": str(system.device),
        "frames_in": n_in,
        "frames_tracked": int(len(ts)),
        "tracked_pct": tracked_pct,
        "map_points": int(len(pts)),
        "wall_s": wall,
        "fps": n_in / max(wall, 1e-9),
        "peak_rss_mb": peak_rss_mb(),
        "global_ba": gba,
        **system.stats(),
    }
    if segments is not None:  # several unmerged maps: trajectory.txt is the main one (slam.io.segments)
        metrics["segments"] = segments
        metrics["frames_tracked_all_maps"] = int(sum(e["frames"] for e in segments))
    cam = inputs.camera
    if cam is not None:
        metrics["camera"] = {k: getattr(cam, k) for k in ("width", "height", "fx", "fy", "cx", "cy")}
    gt_source = _groundtruth_source(inputs)
    if gt_source:
        metrics["groundtruth"] = gt_source
    if failure is not None:
        metrics["failure"] = failure
    if stats is not None:
        metrics["runtime"] = stats.to_dict()
    if error is not None:
        metrics["error"] = f"{type(error).__name__}: {error}"
    if inputs.groundtruth is not None and len(ts) > 2:
        try:
            from slam.eval import evaluate, mono_alignment

            ev = evaluate(inputs.groundtruth, (ts, traj), mono=mono_alignment(cfg.mode), n_frames_total=n_in,
                          kitti_metrics=inputs.dataset == "kitti")
            if inputs.groundtruth_note:
                ev["groundtruth"] = inputs.groundtruth_note
                log.info("ground truth: %s", inputs.groundtruth_note)
            metrics["eval"] = ev
        except Exception as exc:  # noqa: BLE001
            log.error("evaluation failed: %s", exc)
    if cfg.output.plot:
        _write_pictures(system, inputs, out_dir, ts, traj)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    log.info("run folder: %s", out_dir)
    return metrics


def _write_segments(cfg: Config, system: SLAMSystem, inputs: RunInputs, out_dir: Path, n_in: int) -> Optional[list]:
    """trajectory_map<id>.txt of each map not merged into the main one; their metrics entries."""
    if system.tracker.atlas is None:
        return None
    from slam.eval import mono_alignment
    from slam.io.segments import write_segments

    return write_segments(out_dir, system.trajectory_segments(), n_in, inputs.name, cfg.mode, inputs.groundtruth,
                          mono=mono_alignment(cfg.mode))


def _nothing_tracked(n_in: int, mode: str, results: list) -> str:
    """Why a run tracked no frame, and what to check."""
    if not n_in:
        return "no frame could be read"
    if mode == "mono" and not any(r.state == "OK" for r in results):
        return (f"no frame of {n_in} was tracked: the monocular map never initialised, which needs the camera to move "
                "sideways enough for parallax; check the calibration, or run a longer stretch or another mode (--mode)")
    return (f"no frame of {n_in} was tracked; check the calibration (--calib or the dataset's own), the mode (--mode) "
            "and that the images show a textured scene")


def _write_pictures(system, inputs, out_dir, ts, traj) -> None:
    try:
        from slam.viz.render import render_map_png

        render_map_png(snapshot(system, title=f"{inputs.name} ({system.cfg.mode}, {system.cfg.features}+{system.cfg.matcher})"),
                       out_dir / "map.png")
    except Exception as exc:  # noqa: BLE001 - pictures must never lose a run
        log.warning("could not render map.png: %s", exc)
    if inputs.groundtruth is not None and len(ts) > 2:
        try:
            from slam.eval import evaluate_full, mono_alignment
            from slam.viz.plots import plot_evaluation

            res, details = evaluate_full(inputs.groundtruth, (ts, traj), mono_alignment(system.cfg.mode), 0.02, None, 0.0, 1.0)
            plot_evaluation(details, res, out_dir / "trajectory.png", title=inputs.name)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not plot trajectory.png: %s", exc)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def summary_lines(m: dict) -> list[str]:
    lines = [
        f"sequence {m['sequence']} ({m['mode']}, {m['features']}+{m['matcher']}, {m['device']}): {m['status']}",
        f"frames {m['frames_in']}, tracked {m['frames_tracked']} ({m['tracked_pct']:.1f}%), keyframes {m['keyframes']}, map points {m['map_points']}",
        f"{m['fps']:.1f} fps end to end, peak memory {m['peak_rss_mb']:.0f} MB",
    ]
    ev = m.get("eval")
    if ev:
        lines.append(
            f"ATE RMSE {ev['ate_rmse_m'] * 100:.2f} cm ({ev['alignment']}), RPE {ev['rpe_trans_rmse_m'] * 100:.2f} cm / {ev['rpe_rot_rmse_deg']:.3f} deg per frame"
        )
        if "kitti_t_err_pct" in ev:
            lines.append(_kitti_line(ev))
        if ev.get("groundtruth"):
            lines.append(f"ground truth: {ev['groundtruth']}")
    return lines


def _kitti_line(ev: dict) -> str:
    if ev.get("kitti_t_err_pct") is None:
        return f"KITTI relative error: n/a ({ev.get('kitti_note', '')})"
    return (f"KITTI relative error: {ev['kitti_t_err_pct']:.2f} % translation, {ev['kitti_r_err_deg_per_100m']:.3f} deg/100 m "
            f"over {ev['kitti_segments']} segments of {ev['kitti_lengths_m']} m")
