"""Chessboard camera calibration with OpenCV, and ``python -m slam calibrate``.

Pipeline: detect the board (``findChessboardCorners`` + ``cornerSubPix``) in every image, keep
only views that add something (:class:`ViewSelector`: a new position, size or tilt of the board;
near duplicates are rejected), optionally thin them to the ``max_views`` most diverse ones,
``calibrateCamera`` with the 5-parameter OpenCV model (k1, k2, p1, p2, k3), drop views whose
reprojection error is far above the median and calibrate again.

Board convention: ``board=(cols, rows)`` counts INNER corners (a board of 10 x 7 squares has
9 x 6 inner corners); ``square`` is the side of one square in metres (it only scales the board
poses; the intrinsics do not depend on it).

The output is a camera YAML (keys width, height, fx, fy, cx, cy, dist) that
:meth:`slam.geometry.camera.PinholeCamera.from_yaml` and ``python -m slam live --calib`` read.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import cv2
import numpy as np
import yaml

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera

LOG = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")

__all__ = [
    "InputError",
    "CalibrationResult",
    "ViewSelector",
    "board_object_points",
    "detect_board",
    "calibrate_from_images",
    "calibrate_camera_main",
    "parse_board",
    "write_camera_yaml",
]


@dataclass
class CalibrationResult:
    """Outcome of a calibration.

    camera:          intrinsics (pixels) and distortion (k1, k2, p1, p2, k3) at ``image_size``.
    rms_px:          RMS reprojection error over all kept views (pixels).
    n_views:         views used in the final calibration.
    per_view_errors: RMS reprojection error of each used view (pixels), in input order.
    image_size:      (width, height) in pixels.
    coverage:        fraction of an 8 x 6 grid of image cells that some board corner falls in.
    n_images:        images looked at; n_detected: with the board found;
    n_duplicates:    detections rejected as near duplicates; n_outliers: views dropped for a
                     reprojection error far above the median.
    view_indices:    input index of every used view.
    """

    camera: PinholeCamera
    rms_px: float
    n_views: int
    per_view_errors: list[float]
    image_size: tuple[int, int]
    coverage: float = 0.0
    n_images: int = 0
    n_detected: int = 0
    n_duplicates: int = 0
    n_outliers: int = 0
    view_indices: list[int] = field(default_factory=list)

    def summary(self) -> str:
        c = self.camera
        return (
            f"RMS reprojection error {self.rms_px:.3f} px over {self.n_views} views "
            f"(coverage {100 * self.coverage:.0f}%); fx {c.fx:.2f} fy {c.fy:.2f} cx {c.cx:.2f} cy {c.cy:.2f} "
            f"dist [{', '.join(f'{d:.4f}' for d in c.dist)}] at {c.width}x{c.height}"
        )


def parse_board(text: Union[str, Sequence[int]]) -> tuple[int, int]:
    """``"9x6"`` -> (9, 6) inner corners (columns, rows)."""
    if isinstance(text, (tuple, list)):
        cols, rows = int(text[0]), int(text[1])
    else:
        try:
            cols, rows = (int(p) for p in str(text).lower().split("x"))
        except ValueError:
            raise InputError(f"--board {text!r} must look like COLSxROWS of inner corners, e.g. 9x6") from None
    if cols < 2 or rows < 2:
        raise InputError(f"board {cols}x{rows}: need at least 2x2 inner corners")
    if cols == rows:
        LOG.warning("a square board (%dx%d) is ambiguous under rotation; a board with different side counts is safer", cols, rows)
    return cols, rows


def board_object_points(board: tuple[int, int], square: float) -> np.ndarray:
    """(cols*rows, 3) float32 inner-corner positions in the board frame (metres, z = 0), in
    the row-major order of ``cv2.findChessboardCorners`` (x along columns)."""
    cols, rows = board
    grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2).astype(np.float32)
    return np.hstack([grid * np.float32(square), np.zeros((cols * rows, 1), np.float32)])


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image if image.dtype == np.uint8 else cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image, code)
    raise InputError(f"images must be (H, W) or (H, W, 3) uint8, got shape {image.shape}")


def detect_board(image: np.ndarray, board: tuple[int, int], fast_check: bool = True) -> Optional[np.ndarray]:
    """(cols*rows, 2) float32 sub-pixel inner corners (pixels), or None when not found.

    Large images are searched at <= 1280 px and refined at full resolution; the cornerSubPix
    window adapts to the square size so it never reaches a neighbouring corner.
    """
    gray = _to_gray(image)
    h, w = gray.shape
    scale = min(1.0, 1280.0 / max(h, w))
    small = cv2.resize(gray, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else gray
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    if fast_check:
        flags |= cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(small, board, flags=flags)
    if not found or corners is None or len(corners) != board[0] * board[1]:
        return None
    corners = corners.reshape(-1, 2).astype(np.float32)
    if scale < 1:
        corners = (corners + 0.5) / scale - 0.5
    grid = corners.reshape(board[1], board[0], 2)
    spacing = min(
        float(np.linalg.norm(np.diff(grid, axis=1), axis=2).min()),
        float(np.linalg.norm(np.diff(grid, axis=0), axis=2).min()),
    )
    win = int(np.clip(spacing * 0.4, 2, 11))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 60, 1e-4)
    refined = cv2.cornerSubPix(gray, corners.reshape(-1, 1, 2).copy(), (win, win), (-1, -1), criteria)
    return refined.reshape(-1, 2).astype(np.float32)


class ViewSelector:
    """Keeps views that add coverage; rejects near duplicates.

    A view is described by the board centre (fraction of the image), its apparent size
    (sqrt of its area / image area) and its tilt (log ratios of opposite outer edge lengths,
    about 0 for a fronto-parallel board). A view is a near duplicate of a kept one when all of
    centre, size and tilt are within ``min_shift`` / ``min_size_change`` / ``min_tilt_change``.
    ``coverage`` is the fraction of a ``grid`` of image cells that kept corners fall in.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        board: tuple[int, int],
        min_shift: float = 0.06,
        min_size_change: float = 0.05,
        min_tilt_change: float = 0.06,
        grid: tuple[int, int] = (8, 6),
    ) -> None:
        self.image_size = image_size
        self.board = board
        self.min_shift = min_shift
        self.min_size_change = min_size_change
        self.min_tilt_change = min_tilt_change
        self.grid = grid
        self.cells = np.zeros((grid[1], grid[0]), dtype=bool)
        self.descriptors: list[np.ndarray] = []

    def describe(self, corners: np.ndarray) -> np.ndarray:
        """[centre_x, centre_y, size, tilt_lr, tilt_tb] of a (cols*rows, 2) corner set."""
        w, h = self.image_size
        cols, rows = self.board
        g = corners.reshape(rows, cols, 2)
        tl, tr, bl, br = g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]
        quad = np.array([tl, tr, br, bl], dtype=np.float64)
        area = abs(cv2.contourArea(quad.astype(np.float32)))
        centre = corners.mean(axis=0) / np.array([w, h])
        eps = 1e-6
        tilt_lr = np.log((np.linalg.norm(bl - tl) + eps) / (np.linalg.norm(br - tr) + eps))
        tilt_tb = np.log((np.linalg.norm(tr - tl) + eps) / (np.linalg.norm(br - bl) + eps))
        return np.array([centre[0], centre[1], np.sqrt(area / (w * h)), abs(tilt_lr), abs(tilt_tb)])

    def _cells_of(self, corners: np.ndarray) -> np.ndarray:
        w, h = self.image_size
        gx = np.clip((corners[:, 0] / w * self.grid[0]).astype(int), 0, self.grid[0] - 1)
        gy = np.clip((corners[:, 1] / h * self.grid[1]).astype(int), 0, self.grid[1] - 1)
        mask = np.zeros_like(self.cells)
        mask[gy, gx] = True
        return mask

    def is_duplicate(self, d: np.ndarray) -> bool:
        for k in self.descriptors:
            diff = np.abs(d - k)
            if (
                max(diff[0], diff[1]) < self.min_shift
                and diff[2] < self.min_size_change
                and max(diff[3], diff[4]) < self.min_tilt_change
            ):
                return True
        return False

    def new_cells(self, corners: np.ndarray) -> int:
        return int((self._cells_of(corners) & ~self.cells).sum())

    def consider(self, corners: np.ndarray) -> bool:
        """Keep the view unless it is a near duplicate of a kept one (and adds no new cell)."""
        d = self.describe(corners)
        if self.is_duplicate(d) and self.new_cells(corners) == 0:
            return False
        self.descriptors.append(d)
        self.cells |= self._cells_of(corners)
        return True

    @property
    def coverage(self) -> float:
        return float(self.cells.mean())

    def uncovered_hint(self) -> str:
        """Where the board has not been yet, in words."""
        gh, gw = self.cells.shape
        parts = []
        for name, sl in (("left", (slice(None), slice(0, gw // 3))), ("right", (slice(None), slice(gw - gw // 3, None))),
                         ("top", (slice(0, gh // 3), slice(None))), ("bottom", (slice(gh - gh // 3, None), slice(None)))):
            if self.cells[sl].mean() < 0.5:
                parts.append(name)
        tilted = sum(1 for d in self.descriptors if max(d[3], d[4]) > 0.15)
        hint = f"move the board towards the {', '.join(parts)} of the image" if parts else "coverage is good"
        if tilted < 3:
            hint += "; tilt the board (about 30-45 degrees) in some views"
        return hint


def _select_diverse(descriptors: np.ndarray, k: int) -> list[int]:
    """Greedy farthest-point selection of k rows (indices in ascending order)."""
    n = len(descriptors)
    if n <= k:
        return list(range(n))
    scale = descriptors.std(axis=0) + 1e-9
    x = descriptors / scale
    chosen = [int(np.argmin(np.abs(x - x.mean(axis=0)).sum(axis=1)))]
    dist = np.linalg.norm(x - x[chosen[0]], axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return sorted(chosen)


def _calibrate(obj: list, img: list, size: tuple[int, int], flags: int):
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-10)
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, None, None, flags=flags, criteria=criteria)
    errors = []
    for o, i, r, t in zip(obj, img, rvecs, tvecs):
        proj, _ = cv2.projectPoints(o, r, t, K, dist)
        errors.append(float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - i.reshape(-1, 2)) ** 2, axis=1)))))
    return float(rms), K, dist.reshape(-1), errors


def calibrate_from_images(
    images: Iterable[np.ndarray],
    board: Union[tuple[int, int], str] = (9, 6),
    square: float = 0.025,
    min_views: int = 10,
    max_views: int = 40,
    fix_k3: bool = False,
    outlier_factor: float = 3.0,
    selector: Optional[ViewSelector] = None,
) -> CalibrationResult:
    """Calibrate from images (BGR or grey uint8, all the same size) showing a chessboard.

    board:          inner corners (cols, rows) or "9x6"; square: square side in metres.
    min_views:      fewer distinct views with the board -> InputError.
    max_views:      more distinct views are thinned to the most diverse ``max_views``.
    fix_k3:         keep k3 = 0 (simpler model for mild lenses or few views).
    outlier_factor: views with RMS error > factor * median (and > 0.5 px) are dropped once.
    """
    board = parse_board(board)
    if square <= 0:
        raise InputError(f"square size must be positive (metres), got {square}")
    if min_views < 3:
        raise InputError(f"min_views must be >= 3, got {min_views}")
    objp = board_object_points(board, square)
    size: Optional[tuple[int, int]] = None
    n_images = n_detected = n_dup = 0
    kept_corners: list[np.ndarray] = []
    kept_index: list[int] = []
    for idx, image in enumerate(images):
        n_images += 1
        if image is None:
            continue
        image = np.asarray(image)
        this_size = (int(image.shape[1]), int(image.shape[0]))
        if size is None:
            size = this_size
            if selector is None:
                selector = ViewSelector(size, board)
        elif this_size != size:
            raise InputError(
                f"image {idx} is {this_size[0]}x{this_size[1]} but the first was {size[0]}x{size[1]}; "
                "calibrate one resolution at a time"
            )
        corners = detect_board(image, board)
        if corners is None:
            continue
        n_detected += 1
        if not selector.consider(corners):
            n_dup += 1
            continue
        kept_corners.append(corners)
        kept_index.append(idx)
    if size is None:
        raise InputError("no images to calibrate from")
    if len(kept_corners) < min_views:
        raise InputError(
            f"the {board[0]}x{board[1]} chessboard (inner corners) was found in {n_detected} of {n_images} images "
            f"giving {len(kept_corners)} distinct views ({n_dup} near duplicates rejected); at least {min_views} are "
            "needed. Show the board in more positions and tilts, all over the image; check that --board counts "
            "INNER corners (a board of 10x7 squares is 9x6) and that the whole board is visible and sharp"
        )
    if len(kept_corners) > max_views:
        pick = _select_diverse(np.array(selector.descriptors), max_views)
        kept_corners = [kept_corners[i] for i in pick]
        kept_index = [kept_index[i] for i in pick]
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    obj = [objp.reshape(-1, 1, 3) for _ in kept_corners]
    img = [c.reshape(-1, 1, 2) for c in kept_corners]
    rms, K, dist, errors = _calibrate(obj, img, size, flags)
    n_out = 0
    med = float(np.median(errors))
    bad = [i for i, e in enumerate(errors) if e > max(outlier_factor * med, 0.5)]
    if bad and len(errors) - len(bad) >= min_views:
        keep = [i for i in range(len(errors)) if i not in set(bad)]
        LOG.info("dropping %d views with reprojection error > %.2f px and calibrating again", len(bad), max(outlier_factor * med, 0.5))
        obj = [obj[i] for i in keep]
        img = [img[i] for i in keep]
        kept_index = [kept_index[i] for i in keep]
        rms, K, dist, errors = _calibrate(obj, img, size, flags)
        n_out = len(bad)
    dist5 = np.zeros(5)
    dist5[: min(5, dist.size)] = dist[:5]
    camera = PinholeCamera(width=size[0], height=size[1], fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], dist=tuple(float(x) for x in dist5))
    cover = ViewSelector(size, board)
    for c in img:
        cover.cells |= cover._cells_of(c.reshape(-1, 2))
    return CalibrationResult(
        camera=camera,
        rms_px=rms,
        n_views=len(img),
        per_view_errors=errors,
        image_size=size,
        coverage=cover.coverage,
        n_images=n_images,
        n_detected=n_detected,
        n_duplicates=n_dup,
        n_outliers=n_out,
        view_indices=kept_index,
    )


def write_camera_yaml(result: CalibrationResult, path: Union[str, Path]) -> Path:
    """Write the camera YAML that ``PinholeCamera.from_yaml`` / ``slam live --calib`` read,
    with a comment header recording how it was made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# camera calibration written by `python -m slam calibrate` on {_dt.datetime.now().isoformat(timespec='seconds')}\n"
        f"# RMS reprojection error {result.rms_px:.4f} px, {result.n_views} views, coverage {100 * result.coverage:.0f}%\n"
        "# dist = OpenCV (k1, k2, p1, p2, k3)\n"
    )
    path.write_text(header + yaml.safe_dump(result.camera.to_dict(), sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
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
    from slam.errors import InputError

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
