"""``python -m slam calibrate``: chessboard calibration of a camera from a live camera (device,
video file or stream) or a folder of images; writes the camera YAML that ``slam live --calib``
reads.

From a camera, views are collected while the board is held still in new positions (the
:class:`~slam.geometry.calibration.ViewSelector` rejects near duplicates and says which part of
the image still needs the board); the solver is :mod:`slam.geometry.calibration`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

from slam.errors import InputError
from slam.geometry.calibration import ViewSelector, calibrate_from_images, detect_board, parse_board, write_camera_yaml

LOG = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")

__all__ = ["build_parser", "calibrate_camera_main", "IMAGE_EXTS"]


def _read_folder(folder: Path) -> tuple[list[Path], Iterable[np.ndarray]]:
    if not folder.is_dir():
        raise InputError(f"--images {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise InputError(f"--images {folder}: no image files ({', '.join(IMAGE_EXTS)})")

    def gen():
        for p in files:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                LOG.warning("%s: cannot be read as an image; skipped", p)
            yield img

    return files, gen()


def _gather_from_camera(args: argparse.Namespace, board: tuple[int, int], out=sys.stdout) -> list[np.ndarray]:
    """Read the camera until ``max_views`` distinct, still views were seen (or timeout / end)."""
    from slam.io.camera import CameraSource

    source = CameraSource(args.camera, frame_timeout_s=args.frame_timeout)
    views: list[np.ndarray] = []
    selector: Optional[ViewSelector] = None
    prev: Optional[np.ndarray] = None
    t0 = time.monotonic()
    last_accept = -1e9
    n_frames = 0
    print(
        f"calibrate: show the {board[0]}x{board[1]} (inner corners) chessboard to {source.name}; hold it still "
        f"in each position; collecting up to {args.max_views} views (timeout {args.timeout:.0f} s)",
        file=out,
        flush=True,
    )
    try:
        for frame in source:
            n_frames += 1
            if time.monotonic() - t0 > args.timeout:
                print(f"calibrate: timeout after {args.timeout:.0f} s", file=out, flush=True)
                break
            if selector is None:
                selector = ViewSelector(source.frame_size, board)
            corners = detect_board(frame.image, board)
            if corners is None:
                prev = None
                continue
            still = prev is not None and float(np.abs(corners - prev).max()) < args.still_px
            prev = corners
            if not still or time.monotonic() - last_accept < args.min_interval:
                continue
            if not selector.consider(corners):
                continue
            views.append(frame.image.copy())
            last_accept = time.monotonic()
            if args.save_views:
                Path(args.save_views).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(Path(args.save_views) / f"view_{len(views):03d}.png"), frame.image)
            print(
                f"calibrate: view {len(views)}/{args.max_views} (coverage {100 * selector.coverage:.0f}%): "
                f"{selector.uncovered_hint()}",
                file=out,
                flush=True,
            )
            if len(views) >= args.max_views:
                break
    finally:
        source.close()
    if n_frames == 0:
        raise InputError(f"{source.name} delivered no frames")
    return views


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m slam calibrate",
        description="Chessboard calibration of a camera (OpenCV); writes the camera YAML that `slam live --calib` reads.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", help="device index (0), video file or stream URL to read views from")
    src.add_argument("--images", help="folder of images showing the chessboard")
    p.add_argument("--board", default="9x6", help="INNER corners COLSxROWS (a 10x7-square board is 9x6; default 9x6)")
    p.add_argument("--square", type=float, default=0.025, help="square side in metres (default 0.025)")
    p.add_argument("--out", default="camera.yaml", help="camera YAML to write (default camera.yaml)")
    p.add_argument("--max-views", type=int, default=25, help="views to collect / keep (default 25)")
    p.add_argument("--min-views", type=int, default=10, help="fewer distinct views is an error (default 10)")
    p.add_argument("--fix-k3", action="store_true", help="keep k3 = 0 (mild lenses, few views)")
    p.add_argument("--timeout", type=float, default=180.0, help="camera: stop collecting after this many seconds")
    p.add_argument("--frame-timeout", type=float, default=5.0, help="camera: seconds to wait for a frame")
    p.add_argument("--still-px", type=float, default=2.0, help="camera: a view counts when the corners moved < this since the previous frame")
    p.add_argument("--min-interval", type=float, default=0.3, help="camera: seconds between accepted views")
    p.add_argument("--save-views", default=None, help="camera: also save the accepted views as PNG in this folder")
    return p


def calibrate_camera_main(argv: Optional[Sequence[str]] = None, out=None) -> int:
    """``python -m slam calibrate ...``; returns a process exit code (0 ok, 2 bad input)."""
    out = out if out is not None else sys.stdout
    args = build_parser().parse_args(argv)
    try:
        board = parse_board(args.board)
        if args.max_views < args.min_views:
            raise InputError(f"--max-views ({args.max_views}) must be >= --min-views ({args.min_views})")
        if args.images:
            files, images = _read_folder(Path(args.images))
            print(f"calibrate: {len(files)} images in {args.images}", file=out, flush=True)
        else:
            images = _gather_from_camera(args, board, out)
        result = calibrate_from_images(
            images, board=board, square=args.square, min_views=args.min_views, max_views=args.max_views, fix_k3=args.fix_k3
        )
    except InputError as exc:
        print(f"calibrate: error: {exc}", file=sys.stderr, flush=True)
        return 2
    path = write_camera_yaml(result, args.out)
    print(f"calibrate: {result.summary()}", file=out)
    print(f"calibrate: reprojection error {result.rms_px:.3f} px; wrote {path}", file=out, flush=True)
    if result.rms_px > 1.0:
        print(
            "calibrate: warning: reprojection error above 1 px; check that the board is flat, the images sharp, "
            "and --board right",
            file=out,
            flush=True,
        )
    return 0
