"""Command line: python -m slam <command> ...

  run        SLAM on a sequence (default: the embedded synthetic sequence)
  live       SLAM on a camera, a video file or a stream
  bench      accuracy/speed benchmark on a sequence: a table and JSON
  eval       ATE/RPE of a trajectory against ground truth (evo)
  features   draw the keypoints of an image
  match      draw the matches between two images
  calibrate  chessboard calibration of a camera
  download   fetch a dataset sequence
  sequences  list known sequences
  weights    list / install / verify model weights
  render     render a synthetic sequence
  view       look at a finished run (Open3D window, or --png FILE headless)
  vocab      train / inspect / evaluate bag-of-words vocabularies (place recognition)
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from slam.errors import InputError

log = logging.getLogger("slam")


PASSTHROUGH = ("eval", "calibrate", "download", "sequences", "weights", "vocab")
COMMANDS = ("run", "live", "bench", "eval", "features", "match", "calibrate", "download", "sequences", "weights", "render", "view",
            "vocab")


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger("slam")
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for h in root.handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(logging.DEBUG if verbose else logging.WARNING)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", action="append", default=[], help="YAML config file(s) in configs/, applied in order")
    p.add_argument("--mode", choices=("rgbd", "mono", "stereo"), help="RGB-D, monocular or stereo (shortcut for mode=...)")
    p.add_argument("--features", help="orb | superpoint | aliked | disk | xfeat (shortcut for features=...)")
    p.add_argument("--matcher", help="nn | superglue | lightglue (shortcut for matcher=...)")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. tracking.min_inliers=30")


def _picture_args(p: argparse.ArgumentParser, matcher: bool) -> None:
    """Options of `features` and `match`: the config options of `run` that apply to one image pair."""
    p.add_argument("--features", help="orb | superpoint | aliked | disk | xfeat (shortcut for features=...; default: the config's)")
    if matcher:
        p.add_argument("--matcher", help="nn | superglue | lightglue | loftr (shortcut for matcher=...; loftr needs no --features)")
    p.add_argument("--device", help="auto | cpu | cuda (shortcut for device=...)")
    p.add_argument("--config", "-c", action="append", default=[], help="YAML config file(s) in configs/, applied in order")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, before or after the options, e.g. orb.n_features=500")


def _load_cfg(args):
    """The configuration of a command: YAML files, then key=value overrides, then the options
    that are shortcuts for keys (--mode, --features, ...). Light: imports no torch."""
    from slam.config import load_config

    ov = list(args.overrides)
    for key in ("mode", "features", "matcher", "device"):
        v = getattr(args, key, None)
        if v:
            ov.append(f"{key}={v}")
    if getattr(args, "max_frames", None) is not None:
        ov.append(f"max_frames={args.max_frames}")
    if getattr(args, "viewer", None):
        ov.append(f"viewer={args.viewer}")
    if getattr(args, "sync", False):
        ov.append("runtime.threaded=false")
    if getattr(args, "out", None) and hasattr(args, "seq"):
        ov.append(f"output.root={args.out}")
    return load_config(args.config, ov)


def start_feature_worker(cfg):
    """Start the feature process before torch and the rest of slam are imported, so that the
    child's imports (seconds) run beside ours instead of after them.

    Decided by the run's own rule (slam.runtime.feature_process.use_process_frontend) with the
    device guessed without torch (an NVIDIA driver means cuda for device auto): the run uses
    the worker only when it does put its features in a process with the same queue size; the
    caller closes it either way. None when the run will not want one."""
    from slam.runtime.feature_process import FeatureWorker, resolve_feature_threads, use_process_frontend

    device = cfg.device
    guessed = "cuda" if device.startswith("cuda") or (device == "auto" and Path("/dev/nvidiactl").exists()) else "cpu"
    if not use_process_frontend(cfg.runtime.feature_stage, cfg.runtime.threaded, guessed):
        return None
    threads = resolve_feature_threads(cfg.runtime.feature_threads, cfg.features)
    return FeatureWorker(queue_size=cfg.runtime.queue_size, threads=threads)


def _exit_code(metrics: dict) -> int:
    """0 completed; 128 + signal number for a run stopped by a signal (130 Ctrl-C, 143 SIGTERM);
    1 for a run that failed (tracked nothing, or less than min_tracked_pct; the reason goes to
    stderr)."""
    if metrics.get("failure"):
        print(f"error: {metrics['failure']} (run folder {metrics.get('run_dir')})", file=sys.stderr)
    sig = metrics.get("signal")
    if sig:
        import signal

        return 128 + int(getattr(signal, sig))
    return 0 if metrics["status"] in ("completed", "stopped") else 1


def cmd_run(args) -> int:
    from slam.app import open_input, run_slam, summary_lines
    from slam.system import resolve_config

    cfg = resolve_config(args.cfg)
    inputs = open_input(args.seq, cfg, args.data_root, args.calib)
    if inputs.layout:
        print(f"input: {inputs.layout}")
    print(f"running {inputs.name} ({cfg.mode}) with features={cfg.features} matcher={cfg.matcher}")
    metrics = run_slam(cfg, inputs, feature_worker=args.feature_worker)
    for line in summary_lines(metrics):
        print(line)
    print(f"run folder: {metrics['run_dir']}")
    return _exit_code(metrics)


def cmd_live(args) -> int:
    from slam.app import RunInputs, run_slam, summary_lines
    from slam.io.camera import CameraSource

    from slam.system import resolve_config

    asked = args.mode or next((o.split("=", 1)[1] for o in reversed(args.overrides) if o.startswith("mode=")), None)
    if asked not in (None, "mono"):
        raise InputError(f"live runs monocular only: a camera or video file gives no depth or second view "
                         f"(--mode {asked} was asked for); use `run --seq` for rgbd or stereo datasets")
    args.cfg.mode = "mono"
    if args.cfg.frame_stride != 1 or args.cfg.start_frame != 0:
        raise InputError("live takes every frame of the camera from the first: frame_stride and start_frame apply to "
                         "`run --seq` inputs (for a video file: `run --seq FILE --mode mono --calib FILE.yaml frame_stride=N`)")
    if not args.calib:
        raise InputError("live needs --calib FILE.yaml; make one with `python -m slam calibrate --camera 0 --board 9x6 --square 0.025`")
    from slam.io.camera import load_calibration, parse_camera_spec, parse_size

    spec = int(args.camera) if str(args.camera).isdigit() else args.camera
    # a video file is processed whole unless pacing is asked for; cameras and streams run live
    live = parse_camera_spec(spec)[0] != "file" or bool(args.realtime)
    cfg = resolve_config(args.cfg, live=live)
    try:
        resize = parse_size(args.resize)
    except InputError as exc:
        raise InputError(f"--resize {args.resize}: {exc}") from None
    source = CameraSource(spec, calib=load_calibration(args.calib), max_frames=cfg.max_frames, realtime=args.realtime,
                          resize=resize)
    camera = source.camera  # scaled to --resize when it was made at the camera's own resolution
    name = f"live_{Path(str(args.camera)).stem}"
    inputs = RunInputs(name, source, camera, None, None, f"camera {args.camera}")
    metrics = run_slam(cfg, inputs, live=live, feature_worker=args.feature_worker)
    for line in summary_lines(metrics):
        print(line)
    rt = metrics.get("runtime", {})
    lat = rt.get("latency") or {}
    if lat:
        print(f"frame-to-pose latency p50 {lat.get('p50_ms', float('nan')):.1f} ms, p95 {lat.get('p95_ms', float('nan')):.1f} ms, dropped frames {rt.get('dropped_total', rt.get('dropped', 0))}")
    print(f"run folder: {metrics['run_dir']}")
    return _exit_code(metrics)


def cmd_bench(args) -> int:
    from slam.bench import BenchSpec, run_bench

    spec = BenchSpec(sequences=args.seq or ["tum/fr1_xyz"], modes=args.modes, data_root=args.data_root,
                     json_path=args.json, compare_sync=args.compare_sync, repeat=args.repeat,
                     command="python -m slam " + " ".join(args.argv), baseline=(args.baseline or "").split())
    return run_bench(args.cfg, spec, feature_worker=args.feature_worker)  # one feature process for all threaded runs


def _read_picture(path: str):
    """(H, W, 3) uint8 BGR image of ``path``; InputError naming the file and what is wrong."""
    import cv2

    from slam.io.base import read_image

    img, why = read_image(path, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read image {path}: {why}; pass a png or jpg file")
    return img


def _picture_path(out: str) -> str:
    """``--out`` of features/match, checked before any work: an image file name (.png, .jpg,
    .jpeg, .bmp) in a folder that exists or can be made, and can be written to. InputError
    naming --out otherwise."""
    path = Path(out)
    if path.is_dir():
        raise InputError(f"--out {out} is a folder; pass a file name, e.g. {path / 'drawing.png'}")
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
        raise InputError(f"--out {out}: the file name must end in .png, .jpg or .bmp (the image format)")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"--out {out}: {parent} is a file, not a folder; pass a path you can write to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot make the folder {path.parent} ({exc.strerror}); pass a path you can write to") from None
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"--out {out}: the folder {path.parent} is not writable; pass a path you can write to")
    return out


def cmd_features(args) -> int:
    from slam.device import resolve_device
    from slam.system import build_extractor, resolve_config
    from slam.viz.draw import draw_keypoints

    cfg = resolve_config(args.cfg)
    img = _read_picture(args.image)
    out = _picture_path(args.out or f"{Path(args.image).stem}_{cfg.features}_kp.png")  # the current folder, not the data's
    ext = build_extractor(cfg, resolve_device(cfg.device))
    feats = ext.extract(img)
    draw_keypoints(img, feats, out_path=out, text_lines=[f"{cfg.features} ({img.shape[1]}x{img.shape[0]})", f"keypoints {len(feats)}"])
    print(f"{len(feats)} {cfg.features} keypoints; drawing written to {out}")
    return 0


def cmd_match(args) -> int:
    """Match two images and draw the matches: a detector-free matcher (loftr) on the images
    directly, otherwise features + a matcher. Lines coloured by confidence (or by the verdict
    of a fundamental-matrix RANSAC with --color inlier), legend and counts underneath."""
    from slam.device import resolve_device
    from slam.system import resolve_config
    from slam.viz.draw import draw_point_matches

    cfg = resolve_config(args.cfg)
    imgs = [_read_picture(p) for p in (args.image0, args.image1)]
    out = _picture_path(args.out or "matches.png")
    dev = resolve_device(cfg.device)
    kp0 = kp1 = None
    if cfg.matcher == "loftr":
        from slam.matching.loftr.matcher import LoFTR

        loftr = LoFTR(cfg.loftr, dev)
        lm = loftr.match_images(imgs[0], imgs[1])
        pts0, pts1, conf = lm.pts0, lm.pts1, lm.confidence
        lines = [f"LoFTR {loftr.match_type} ({Path(cfg.loftr.weights).name}, {loftr.precision})", f"matches {len(lm)}"]
        summary = f"{len(lm)} LoFTR matches"
    else:
        from slam.system import build_extractor, build_matcher

        ext = build_extractor(cfg, dev)
        matcher = build_matcher(cfg, dev)
        f0, f1 = ext.extract(imgs[0]), ext.extract(imgs[1])
        m = matcher.match(f0, f1)
        pairs = m.pairs()
        kp0, kp1 = f0.keypoints_np, f1.keypoints_np
        pts0, pts1, conf = kp0[pairs[:, 0]], kp1[pairs[:, 1]], m.scores0[pairs[:, 0]]
        lines = [f"{cfg.features} + {cfg.matcher}", f"keypoints {len(f0)}:{len(f1)}", f"matches {len(m)}"]
        summary = f"{len(m)} matches ({len(f0)} and {len(f1)} keypoints)"
    draw_point_matches(imgs[0], imgs[1], pts0, pts1, conf, color_by=args.color, ransac_px=args.ransac_px,
                       keypoints0=kp0, keypoints1=kp1, out_path=out, text_lines=lines)
    print(f"{summary}; drawing written to {out}")
    return 0


def cmd_render(args) -> int:
    from slam.io.sequences import resolve_data_root
    from slam.synth.dataset import ensure_sequence

    name = args.name.split("/", 1)[1] if args.name.startswith("synthetic/") else args.name
    root = resolve_data_root(args.data_root)[0]
    if args.manifest_overrides and not args.as_name:
        raise InputError(f"render {name}: --set {' --set '.join(args.manifest_overrides)} needs --as NAME, the variant's own name "
                         f"(so that synthetic/{name} keeps the profile's frames)")
    if args.as_name:
        from slam.synth.manifest import write_variant

        path = write_variant(name, args.as_name, args.manifest_overrides, root)
        print(f"wrote the manifest of synthetic/{args.as_name} (synthetic/{name} with {' '.join(args.manifest_overrides) or 'no change'}) to {path}")
        name = args.as_name
    folder = ensure_sequence(name, root, n_frames=args.frames)
    print(f"synthetic/{name} is in {folder}" + (f"; run it with --seq synthetic/{name} --data-root {root}" if args.as_name else ""))
    return 0


def cmd_view(args) -> int:
    from slam.viz.run_view import view_run

    out = view_run(args.run_dir, png=args.png)
    if out is not None:
        print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slam", description="Real-time visual SLAM with learned features.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to the terminal")
    sub = p.add_subparsers(dest="command")

    r = sub.add_parser("run", help="run SLAM on a sequence (default: the embedded synthetic sequence)")
    r.add_argument("--seq", help="tum/<name> | euroc/<name> | kitti/<XX> | synthetic/<profile> | a folder in TUM, "
                   "EuRoC (holding mav0/) or KITTI (sequences/XX) layout | an image folder | a video file")
    r.add_argument("--data-root", help="where datasets live (else $SLAM_DATA, else ./sequences)")
    r.add_argument("--calib", help="camera YAML (for videos, image folders, or to override a manifest)")
    r.add_argument("--out", help="root folder for run folders (default runs/)")
    r.add_argument("--max-frames", type=int, help="stop after this many frames")
    r.add_argument("--viewer", choices=("none", "open3d"), help="live Open3D window (needs a display)")
    r.add_argument("--sync", action="store_true", help="synchronous runner instead of the threaded pipeline")
    _config_args(r)
    r.set_defaults(func=cmd_run)

    lv = sub.add_parser("live", help="run SLAM on a live camera (or a video file / stream standing in for one)")
    lv.add_argument("--camera", default="0", help="camera index, video file or stream URL")
    lv.add_argument("--calib", help="camera YAML written by `python -m slam calibrate`")
    lv.add_argument("--max-frames", type=int, help="stop after this many frames")
    lv.add_argument("--viewer", choices=("none", "open3d"))
    lv.add_argument("--out", help="root folder for run folders (default runs/)")
    lv.add_argument("--realtime", action="store_true", help="pace a video file at its frame rate and drop frames like a camera (default: every frame)")
    lv.add_argument("--resize", help="WxH: resize frames; a calibration made at the camera's own size is scaled to match")
    _config_args(lv)
    lv.set_defaults(func=cmd_live, seq=None)

    b = sub.add_parser("bench", help="benchmark accuracy and speed on a sequence (prints a table, writes JSON)")
    b.add_argument("--seq", action="append", default=None,
                   help="sequences: a comma-separated list and/or repeated (default tum/fr1_xyz); SEQ:mono+rgbd picks "
                   "the modes of one sequence")
    b.add_argument("--data-root", help="where datasets live; several folders separated by ':'")
    b.add_argument("--modes", default=None, help="comma-separated modes for every sequence (default: each "
                   "sequence's own, rgbd,mono for TUM and synthetic (and stereo for synthetic/stereo), mono,stereo for EuRoC and KITTI)")
    b.add_argument("--json", default="bench.json", help="where to write the JSON results")
    b.add_argument("--max-frames", type=int)
    b.add_argument("--compare-sync", action="store_true", help="also run the synchronous runner and report the throughput ratio")
    b.add_argument("--repeat", type=int, default=1, help="with --compare-sync: pairs of runs, order alternating; the median ratio is reported")
    b.add_argument("--out", help="root folder for run folders (default runs/)")
    b.add_argument("--baseline", default=None, metavar="'KEY=VALUE ...'",
                   help="a second configuration run side by side on every sequence and mode, as overrides of the "
                   "first (e.g. --baseline 'features=orb matcher=nn'); prints the fps ratio")
    _config_args(b)
    b.set_defaults(func=cmd_bench)

    f = sub.add_parser("features", help="draw the keypoints of an image",
                       description="Detect keypoints in IMAGE and draw them. The PNG goes to the current folder "
                       "(IMAGE_<features>_kp.png) unless --out says otherwise, never next to IMAGE.")
    f.add_argument("image", help="the image file (png, jpg, ...)")
    f.add_argument("--out", help="where to write the drawing (default ./<image name>_<features>_kp.png)")
    _picture_args(f, matcher=False)
    f.set_defaults(func=cmd_features)

    m = sub.add_parser("match", help="draw the matches between two images",
                       description="Match IMAGE0 and IMAGE1 and draw the matches, coloured by confidence or by "
                       "a fundamental-matrix RANSAC verdict, with a legend and the counts.")
    m.add_argument("image0", help="the first image file")
    m.add_argument("image1", help="the second image file")
    m.add_argument("--out", help="where to write the drawing (default ./matches.png)")
    m.add_argument("--color", choices=("confidence", "inlier"), default="confidence",
                   help="colour lines by confidence (colour bar) or by fundamental-matrix RANSAC inlier/outlier")
    m.add_argument("--ransac-px", type=float, default=2.0,
                   help="largest distance to the epipolar line of an inlier, pixels (default 2: raw images keep their lens distortion)")
    _picture_args(m, matcher=True)
    m.set_defaults(func=cmd_match)

    rd = sub.add_parser("render", help="render (or reuse) a synthetic sequence")
    rd.add_argument("name", nargs="?", default="default", help="profile: default | xyz | desk | fast | loop | loop_short | fast_blur | corridor | stereo (sequences/synthetic/)")
    rd.add_argument("--data-root")
    rd.add_argument("--frames", type=int)
    rd.add_argument("--as", dest="as_name", metavar="NAME",
                    help="render a variant of the profile under this name: its manifest goes to DATA_ROOT/synthetic/NAME.yaml "
                         "with the overrides applied, so --seq synthetic/NAME runs it")
    rd.add_argument("--set", dest="manifest_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a manifest override for --as (repeatable), e.g. --set realism.exposure_time=0 (no motion blur) "
                         "or --set motion.yaw_amplitude_deg=30")
    rd.set_defaults(func=cmd_render)

    vw = sub.add_parser("view", help="look at a finished run: trajectory, keyframes, map, ground truth")
    vw.add_argument("run_dir", help="a run folder written by `python -m slam run` (runs/<date>_<time>_<sequence>)")
    vw.add_argument("--png", help="render the scene to this PNG instead of opening a window (headless)")
    vw.set_defaults(func=cmd_view)

    for name, helptext in (
        ("eval", "ATE/RPE of a trajectory against ground truth (evo)"),
        ("calibrate", "chessboard calibration of a camera"),
        ("download", "download a dataset sequence"),
        ("sequences", "list known sequences"),
        ("weights", "list / install / verify model weights"),
        ("vocab", "train / inspect / evaluate bag-of-words vocabularies"),
    ):
        sp = sub.add_parser(name, help=helptext, add_help=False)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
        sp.set_defaults(func=None, passthrough=name)
    return p


def _passthrough(name: str, rest: list[str]) -> int:
    if name == "eval":
        from slam.eval import eval_main

        return eval_main(rest)
    if name == "calibrate":
        from slam.calibration import calibrate_camera_main

        return calibrate_camera_main(rest)
    if name == "download":
        from slam.io.sequences import download_main

        return download_main(rest)
    if name == "sequences":
        from slam.io.sequences import sequences_main

        return sequences_main(rest)
    if name == "weights":
        from slam.weights import weights_main

        return weights_main(rest)
    if name == "vocab":
        from slam.loop.train_vocab import vocab_main

        return vocab_main(rest)
    raise ValueError(name)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, but key=value overrides may also follow the options
    (``match a.png b.png --matcher loftr loftr.threshold=0.3``)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:  # these parse their own options
        _setup_logging("-v" in argv or "--verbose" in argv)
        return _guarded(lambda: _passthrough(argv[0], argv[1:]))
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["run"] + argv  # `python -m slam` runs the embedded default
    args = _parse(parser, argv)
    if args.command is None:
        args = _parse(parser, ["run"] + argv)
    args.argv = argv
    _setup_logging(args.verbose)
    args.feature_worker = None

    def dispatch() -> int:
        if getattr(args, "passthrough", None):  # e.g. `python -m slam -v weights list`
            return _passthrough(args.passthrough, args.rest)
        args.cfg = _load_cfg(args) if hasattr(args, "overrides") else None
        # first of all, before the imports the command makes: a feature process whose own
        # imports run beside them
        if args.command in ("run", "live", "bench"):
            args.feature_worker = start_feature_worker(args.cfg)
        return args.func(args)

    try:
        return _guarded(dispatch)
    finally:
        if args.feature_worker is not None:
            args.feature_worker.close()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside a run (while starting up, or in a tool command): unwinds like
    Ctrl-C, so ``finally`` blocks end the feature process, and exits 128 + the signal number.
    During a run, slam.runtime.runner.handle_signals stops the run instead and its results are
    written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


@contextmanager
def _terminate_like_ctrl_c():
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread while a command runs
    (their default action kills the process at once and leaves child processes behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise Terminated(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _guarded(fn) -> int:
    """Run a command; a SlamError (also one raised in a stage) is one line on stderr and exit code 2;
    Ctrl-C, SIGTERM and SIGHUP outside a run exit 128 + the signal number (130, 143, 129)."""
    from slam.errors import SlamError

    try:
        with _terminate_like_ctrl_c():
            return fn()
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", int(signal.SIGINT))
        print(f"interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `python -m slam weights list | head`: the reader went away
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush is quiet
        except OSError:
            pass
        return 141
    except SlamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a stage failed: unwrap a user error into a clean message
        orig = getattr(exc, "original", None)
        if isinstance(orig, SlamError):
            print(f"error in stage '{getattr(exc, 'stage', '?')}': {orig}", file=sys.stderr)
            return 2
        raise
