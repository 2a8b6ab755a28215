"""Running the system on an input and writing the run folder.

A run folder ``<output.root>/<date>_<time>_<sequence>/`` holds: config.yaml (resolved),
trajectory.txt (TUM, every tracked frame), keyframes.txt (TUM), optional trajectory_kitti.txt
and trajectory_euroc.csv, map.ply, run.log, metrics.json, map.png and, with ground truth,
trajectory.png. Everything is written in a ``finally`` block, so Ctrl-C or a crash in a stage
still leaves the trajectory so far.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import resource
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from slam.config import Config, dump_yaml
from slam.errors import InputError
from slam.geometry.camera import PinholeCamera
from slam.device import resolve_device
from slam.runtime.process_frontend import FeatureWorker, ProcessFrontend, use_process_frontend
from slam.system import SLAMSystem, build_frontend, build_system

log = logging.getLogger("slam")


@dataclass
class RunInputs:
    name: str  # e.g. "tum/fr1_xyz", used for the run folder name
    source: Iterable  # yields slam.types.Frame
    camera: PinholeCamera
    groundtruth: Optional[Path] = None
    n_frames: Optional[int] = None
    info: str = ""  # one line describing the input, for the log


def open_input(seq: Optional[str], cfg: Config, data_root: Optional[str] = None, calib: Optional[str] = None) -> RunInputs:
    """Resolve --seq into a reader and a camera.

    seq: "tum/<name>", "synthetic/<profile>", a folder in TUM layout, an image folder or a
    video file. None = the embedded default "synthetic/default".
    """
    from slam.io.sequences import find_sequence, load_manifest

    use_depth = cfg.mode == "rgbd"
    seq = seq or "synthetic/default"
    path = Path(seq)
    if seq.startswith("synthetic/"):
        from slam.synth.dataset import ensure_sequence
        from slam.io.sequences import resolve_data_root
        from slam.io.tum import TUMReader

        root = resolve_data_root(data_root)[0]
        folder = ensure_sequence(seq.split("/", 1)[1], root)
        camera = PinholeCamera.from_yaml(folder / "camera.yaml") if (folder / "camera.yaml").is_file() else None
        if camera is None:
            from slam.synth.dataset import read_camera_manifest

            camera = read_camera_manifest(folder)
        reader = TUMReader(folder, use_depth=use_depth, max_frames=cfg.max_frames, start=cfg.start_frame)
        gt = folder / "groundtruth.txt"
        return RunInputs(seq, reader, camera, gt if gt.is_file() else None, len(reader), f"synthetic sequence {folder}")
    if path.exists():
        return _open_path(path, cfg, calib)
    info = load_manifest(seq)
    info, folder = find_sequence(seq, data_root)
    from slam.io.tum import TUMReader

    reader = TUMReader(folder, depth_factor=info.depth_factor, use_depth=use_depth, max_frames=cfg.max_frames, start=cfg.start_frame)
    c = info.camera
    camera = PinholeCamera.from_dict({**c, "dist": tuple(info.dist[:5].tolist())}, source=f"manifest of {info.name}")
    if calib:
        camera = PinholeCamera.from_yaml(calib)
    gt = folder / "groundtruth.txt"
    return RunInputs(info.name, reader, camera, gt if gt.is_file() else None, len(reader), f"{info.name} at {folder}")


def _open_path(path: Path, cfg: Config, calib: Optional[str]) -> RunInputs:
    use_depth = cfg.mode == "rgbd"
    if path.is_dir() and (path / "rgb.txt").is_file():
        from slam.io.tum import TUMReader

        cam_file = Path(calib) if calib else path / "camera.yaml"
        if not cam_file.is_file():
            raise InputError(f"{path} looks like a TUM-layout sequence but has no camera.yaml; pass --calib FILE.yaml (see `python -m slam calibrate --help`)")
        camera = PinholeCamera.from_yaml(cam_file)
        reader = TUMReader(path, use_depth=use_depth and (path / "depth.txt").is_file(), max_frames=cfg.max_frames, start=cfg.start_frame)
        gt = path / "groundtruth.txt"
        return RunInputs(path.name, reader, camera, gt if gt.is_file() else None, len(reader), f"TUM-layout folder {path}")
    if use_depth:
        raise InputError(f"{path} has no depth images; run it monocular with --mode mono")
    if not calib:
        raise InputError(f"{path}: a video or image folder needs a calibration; pass --calib FILE.yaml (make one with `python -m slam calibrate`)")
    camera = PinholeCamera.from_yaml(calib)
    if path.is_dir():
        from slam.io.folder import ImageFolderReader

        reader = ImageFolderReader(path)
    else:
        from slam.io.video import VideoReader

        reader = VideoReader(path, max_frames=cfg.max_frames)
    n = len(reader) if hasattr(reader, "__len__") else None
    return RunInputs(path.stem, reader, camera, None, n, f"{path}")


def make_run_dir(root: str | Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H%M%S")
    safe = name.replace("/", "-").replace(" ", "_")
    out = Path(root) / f"{stamp}_{safe}"
    n = 1
    while out.exists():
        n += 1
        out = Path(root) / f"{stamp}_{safe}_{n}"
    out.mkdir(parents=True)
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


def run_slam(cfg: Config, inputs: RunInputs, out_dir: Optional[Path] = None, live: bool = False, quiet: bool = False,
             feature_worker: Optional[FeatureWorker] = None) -> dict:
    """Run the system over inputs.source; write the run folder; return metrics.json's content.

    feature_worker: a feature process started in advance (slam.runtime.process_frontend), used
    when this run puts its features in a process and the worker fits; the caller closes it.
    numpy's BLAS is limited to ``cfg.runtime.blas_threads`` for the run (slam.runtime.blas)."""
    from slam.runtime.blas import blas_threads

    with blas_threads(cfg.runtime.blas_threads):
        return _run_slam(cfg, inputs, out_dir, live, quiet, feature_worker)


def _run_slam(cfg: Config, inputs: RunInputs, out_dir: Optional[Path], live: bool, quiet: bool,
              feature_worker: Optional[FeatureWorker]) -> dict:
    from slam.runtime.pipeline import Pipeline, handle_sigint
    from slam.runtime.sync import SyncRunner

    out_dir = out_dir or make_run_dir(cfg.output.root, inputs.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log(out_dir / "run.log")
    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    log.info("input: %s", inputs.info)
    rt = cfg.runtime
    rt.live = live or rt.live
    frontend_proc = None
    source = inputs.source
    if use_process_frontend(rt.feature_stage, rt.threaded, resolve_device(cfg.device).type):
        # started first, so the child's imports overlap with building the system here
        frontend_proc = ProcessFrontend(source, functools.partial(build_frontend, cfg, inputs.camera), live=rt.live,
                                        queue_size=rt.queue_size, threads=1, worker=feature_worker,
                                        blas_threads=rt.blas_threads).start()
        source = frontend_proc
    try:
        system = build_system(cfg, inputs.camera)
    except BaseException:
        if frontend_proc is not None:
            frontend_proc.close()
        raise
    log.info("features: %s, matcher: %s, mode: %s, device: %s, feature process: %s", cfg.features, cfg.matcher, cfg.mode,
             system.device,
             "no" if frontend_proc is None else ("yes (started in advance)" if frontend_proc.reused_worker else "yes"))
    stages = system.stages[1:] if frontend_proc is not None else system.stages
    runner_cls = Pipeline if rt.threaded else SyncRunner
    viewer = _make_viewer(cfg, inputs.camera)

    def progress() -> dict:
        info = system.progress_info()
        if viewer is not None:
            viewer.update(snapshot(system))
        return info

    run_rt = rt
    if rt.sync_mapping and not system.needs_sync_mapping:
        # the mapping handoff orders map updates itself; the runtime need not wait for mapping
        run_rt = dataclasses.replace(rt, sync_mapping=False)
    runner = runner_cls(source, stages, run_rt, progress_fn=progress, total=inputs.n_frames)
    t0 = time.perf_counter()
    stats = None
    error: Optional[BaseException] = None
    status = "finished"
    try:
        with handle_sigint(runner, log):
            stats = runner.run()
        status = getattr(stats, "status", "finished")
    except BaseException as exc:  # noqa: BLE001 - written below, then re-raised
        error = exc
        status = "failed"
    finally:
        if frontend_proc is not None:
            frontend_proc.close()
    wall = time.perf_counter() - t0
    try:
        metrics = _finish(cfg, system, inputs, out_dir, stats, wall, status, error)
    finally:
        if viewer is not None:
            viewer.close()
        logging.getLogger("slam").removeHandler(handler)
        logging.getLogger("slam").setLevel(getattr(handler, "_previous_level", logging.NOTSET))
        handler.close()
    if error is not None:
        raise error
    return metrics


def _make_viewer(cfg: Config, camera: PinholeCamera):
    if cfg.viewer == "none":
        return None
    from slam.viz.open3d_viewer import Open3DViewer

    return Open3DViewer(camera=camera)


def snapshot(system: SLAMSystem):
    from slam.viz.base import MapSnapshot

    _, _, traj = system.trajectory()
    _, kf = system.keyframe_trajectory()
    pts, col = system.map.snapshot_points()
    return MapSnapshot(
        trajectory_world_from_cam=traj,
        keyframe_world_from_cam=kf,
        current_world_from_cam=traj[-1] if len(traj) else None,
        points_world=pts,
        colors=col,
        camera=system.camera,
    )


def _finish(cfg: Config, system: SLAMSystem, inputs: RunInputs, out_dir: Path, stats, wall: float, status: str, error) -> dict:
    from slam.io.ply import write_ply
    from slam.io.trajectory import write_euroc, write_kitti, write_tum

    gba = None
    if status in ("finished", "completed"):
        try:
            gba = system.finish()
        except Exception as exc:  # noqa: BLE001 - keep the trajectory anyway
            log.error("global bundle adjustment failed: %s", exc)
    idx, ts, traj = system.trajectory()
    n_in = len(system.tracking_stage.results)
    write_tum(out_dir / "trajectory.txt", ts, traj, header={"n_frames": n_in, "sequence": inputs.name, "mode": cfg.mode})
    if cfg.output.kitti:
        write_kitti(out_dir / "trajectory_kitti.txt", traj)
    if cfg.output.euroc:
        write_euroc(out_dir / "trajectory_euroc.csv", ts, traj)
    kts, kposes = system.keyframe_trajectory()
    write_tum(out_dir / "keyframes.txt", kts, kposes)
    pts, col = system.map.snapshot_points()
    if cfg.output.ply:
        write_ply(out_dir / "map.ply", pts, col)
    results = system.tracking_stage.results
    first_ok = next((i for i, r in enumerate(results) if r.state == "OK"), None)
    n_after_init = n_in - first_ok if first_ok is not None else 0
    n_ok_after = sum(1 for r in results[first_ok:] if r.state == "OK") if first_ok is not None else 0
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
        "tracked_pct": 100.0 * len(ts) / max(n_in, 1),
        "tracked_after_init_pct": 100.0 * n_ok_after / max(n_after_init, 1),
        "init_frame": first_ok,
        "lost_events": system.tracker.n_lost,
        "relocalisations": system.tracker.n_relocalised,
        "keyframes": len(system.map.keyframes),
        "map_points": int(len(pts)),
        "wall_s": wall,
        "fps": n_in / max(wall, 1e-9),
        "peak_rss_mb": peak_rss_mb(),
        "global_ba": gba,
        "mapping_ms": {k: (float(np.mean(v)) if v else 0.0) for k, v in system.mapper.timings.items()},
        "local_ba_count": system.mapper.n_ba,
        "tracking_waited_for_mapping_ms": float(sum(system.handoff.wait_ms)) if system.handoff is not None else None,
        "mapping_yielded_to_tracking_ms": float(system.load.yield_ms) if system.load is not None else None,
        "culled_keyframes": system.mapper.n_culled_kfs,
        "mapping_jobs_skipped": system.mapper.n_skipped,
        "local_ba_aborted": system.mapper.n_ba_aborted,
    }
    if stats is not None:
        metrics["runtime"] = stats.to_dict()
    if error is not None:
        metrics["error"] = f"{type(error).__name__}: {error}"
    if inputs.groundtruth is not None and len(ts) > 2:
        try:
            from slam.eval import evaluate

            ev = evaluate(inputs.groundtruth, (ts, traj), mono=cfg.mode == "mono", n_frames_total=n_in)
            metrics["eval"] = ev
        except Exception as exc:  # noqa: BLE001
            log.error("evaluation failed: %s", exc)
    if cfg.output.plot:
        _write_pictures(system, inputs, out_dir, ts, traj)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    log.info("run folder: %s", out_dir)
    return metrics


def _write_pictures(system, inputs, out_dir, ts, traj) -> None:
    try:
        from slam.viz.render import render_map_png

        render_map_png(snapshot(system), out_dir / "map.png")
    except Exception as exc:  # noqa: BLE001 - pictures must never lose a run
        log.warning("could not render map.png: %s", exc)
    if inputs.groundtruth is not None and len(ts) > 2:
        try:
            from slam.eval import evaluate_full, plot_evaluation

            res, details = evaluate_full(inputs.groundtruth, (ts, traj), system.cfg.mode == "mono", 0.02, None, 0.0, 1.0)
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
    return lines
