"""Tests of chessboard calibration (slam/geometry/calibration.py, the command in slam/calibration.py)
on rendered views of known intrinsics, and of camera input (slam/io/camera.py) with video files
standing in for a camera."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera
from slam.calibration import calibrate_camera_main
from slam.geometry.calibration import (
    ViewSelector,
    board_object_points,
    calibrate_from_images,
    detect_board,
    parse_board,
)
from slam.io.camera import CameraSource, parse_camera_spec, parse_size

BOARD = (9, 6)
SQUARE = 0.025
SIZE = (640, 480)
TRUE_K = np.array([[600.0, 0.0, 322.0], [0.0, 605.0, 236.0], [0.0, 0.0, 1.0]])
TRUE_DIST = np.array([-0.12, 0.05, 0.001, -0.0015, 0.0])


# ------------------------------------------------------------------------------------------
# rendering chessboard views of known intrinsics
# ------------------------------------------------------------------------------------------
def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def rectangle_outline(x0: float, y0: float, x1: float, y1: float, per_edge: int = 8) -> np.ndarray:
    """(4*per_edge, 3) board-frame points along a rectangle's edges, so that projecting them
    with distortion gives the curved outline."""
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    edges = []
    for (a, b), (c, d) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        edges.append(np.stack([a + (c - a) * t, b + (d - b) * t, np.zeros_like(t)], axis=1))
    return np.concatenate(edges)


def render_board(board_from_cam_r: np.ndarray, board_t: np.ndarray, rng, supersample: int = 4) -> np.ndarray:
    """Grey image of the board seen by the TRUE camera with pose p_cam = R p_board + t.
    Squares are filled at ``supersample`` x resolution with sub-pixel vertices, then box-averaged."""
    cols, rows = BOARD
    w, h = SIZE
    ss = supersample
    canvas = np.full((h * ss, w * ss), 90, np.uint8)
    rvec, _ = cv2.Rodrigues(board_from_cam_r)

    def polygon(x0, y0, x1, y1):
        p, _ = cv2.projectPoints(rectangle_outline(x0, y0, x1, y1), rvec, board_t.reshape(3, 1), TRUE_K, TRUE_DIST)
        p = (p.reshape(-1, 2) + 0.5) * ss - 0.5  # pixel-centre convention at the higher resolution
        return np.round(p * 16).astype(np.int32)  # 4 fractional bits (shift=4)

    sq = SQUARE
    cv2.fillPoly(canvas, [polygon(-2 * sq, -2 * sq, (cols + 1) * sq, (rows + 1) * sq)], 235, shift=4)
    blacks = [
        polygon((a - 1) * sq, (b - 1) * sq, a * sq, b * sq)
        for a in range(cols + 1)
        for b in range(rows + 1)
        if (a + b) % 2 == 0
    ]
    cv2.fillPoly(canvas, blacks, 20, shift=4)
    img = cv2.resize(canvas, SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    img += rng.normal(0.0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_board_views(n: int, seed: int = 0) -> list[np.ndarray]:
    """n views with random tilt (up to ~35 deg), in-plane rotation, distance and image position;
    the whole board including its white margin is inside the image."""
    rng = np.random.default_rng(seed)
    cols, rows = BOARD
    w, h = SIZE
    sq = SQUARE
    outer = np.array([[-2 * sq, -2 * sq, 0], [(cols + 1) * sq, -2 * sq, 0], [(cols + 1) * sq, (rows + 1) * sq, 0], [-2 * sq, (rows + 1) * sq, 0]])
    centre = np.array([(cols - 1) * sq / 2, (rows - 1) * sq / 2, 0.0])
    views = []
    while len(views) < n:
        r = rotation(rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(-0.4, 0.4))
        z = rng.uniform(0.3, 0.6)
        u, v = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.15 * h, 0.85 * h)
        t = z * np.array([(u - TRUE_K[0, 2]) / TRUE_K[0, 0], (v - TRUE_K[1, 2]) / TRUE_K[1, 1], 1.0]) - r @ centre
        p, _ = cv2.projectPoints(outer, cv2.Rodrigues(r)[0], t.reshape(3, 1), TRUE_K, TRUE_DIST)
        p = p.reshape(-1, 2)
        if ((r @ outer.T).T + t)[:, 2].min() < 0.05 or p.min() < 3 or p[:, 0].max() > w - 4 or p[:, 1].max() > h - 4:
            continue
        views.append(render_board(r, t, rng))
    return views


@pytest.fixture(scope="module")
def board_views() -> list[np.ndarray]:
    return random_board_views(18, seed=0)


def assert_intrinsics_within_1_percent(cam: PinholeCamera) -> None:
    for got, want in ((cam.fx, TRUE_K[0, 0]), (cam.fy, TRUE_K[1, 1]), (cam.cx, TRUE_K[0, 2]), (cam.cy, TRUE_K[1, 2])):
        assert abs(got - want) / want < 0.01, (got, want)


# ------------------------------------------------------------------------------------------
# calibration
# ------------------------------------------------------------------------------------------
def test_detect_board_finds_subpixel_corners(board_views):
    corners = detect_board(board_views[0], BOARD)
    assert corners is not None and corners.shape == (54, 2) and corners.dtype == np.float32
    assert detect_board(np.full((480, 640), 128, np.uint8), BOARD) is None
    obj = board_object_points(BOARD, SQUARE)
    assert obj.shape == (54, 3) and obj[1, 0] == pytest.approx(SQUARE) and obj[9, 1] == pytest.approx(SQUARE)


def test_calibration_recovers_known_intrinsics(board_views):
    result = calibrate_from_images(board_views, board=BOARD, square=SQUARE, min_views=10)
    assert result.image_size == SIZE
    assert result.n_views >= 15
    assert_intrinsics_within_1_percent(result.camera)
    assert result.camera.dist[0] == pytest.approx(TRUE_DIST[0], abs=0.03)
    assert result.rms_px < 0.3
    assert len(result.per_view_errors) == result.n_views
    assert 0.3 < result.coverage <= 1.0


def test_near_duplicate_views_are_rejected(board_views):
    dup = [board_views[0]] * 5 + board_views[:12]
    result = calibrate_from_images(dup, board=BOARD, min_views=10)
    assert result.n_duplicates >= 5
    assert result.n_views == 12


def test_too_few_views_is_a_clear_error(board_views):
    with pytest.raises(InputError) as info:
        calibrate_from_images(board_views[:4] + [np.zeros((480, 640, 3), np.uint8)], board=BOARD, min_views=10)
    msg = str(info.value)
    assert "found in 4 of 5 images" in msg and "at least 10" in msg and "INNER corners" in msg


def test_wrong_board_size_finds_nothing(board_views):
    with pytest.raises(InputError, match="found in 0 of 1"):
        calibrate_from_images(board_views[:1], board=(7, 5), min_views=3)


def test_view_selector_coverage():
    sel = ViewSelector(SIZE, BOARD)
    obj = board_object_points(BOARD, 1.0)[:, :2]
    left = obj * 20 + 20
    right = obj * 20 + 400
    assert sel.consider(left)
    assert not sel.consider(left + 0.5)  # same place, same size: duplicate
    assert sel.consider(right)
    assert 0 < sel.coverage < 1
    assert "tilt" in sel.uncovered_hint()


def test_parse_board():
    assert parse_board("9x6") == (9, 6)
    with pytest.raises(InputError, match="COLSxROWS"):
        parse_board("nine")


def test_calibrate_cli_from_image_folder(board_views, tmp_path):
    folder = tmp_path / "views"
    folder.mkdir()
    for i, img in enumerate(board_views):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    out_yaml = tmp_path / "cam.yaml"
    out = io.StringIO()
    code = calibrate_camera_main(["--images", str(folder), "--board", "9x6", "--square", "0.025", "--out", str(out_yaml)], out=out)
    assert code == 0
    text = out.getvalue()
    assert "reprojection error" in text and str(out_yaml) in text
    cam = PinholeCamera.from_yaml(out_yaml)
    assert (cam.width, cam.height) == SIZE
    assert_intrinsics_within_1_percent(cam)


def test_calibrate_cli_from_a_video_standing_in_for_the_camera(board_views, tmp_path):
    video = tmp_path / "board.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 30, SIZE)
    assert writer.isOpened()
    for img in board_views[:14]:
        for _ in range(2):  # hold still for 2 frames, as a person would
            writer.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    writer.release()
    out_yaml = tmp_path / "cam.yaml"
    out = io.StringIO()
    code = calibrate_camera_main(
        ["--camera", str(video), "--out", str(out_yaml), "--min-interval", "0", "--max-views", "30"], out=out
    )
    assert code == 0, out.getvalue()
    assert "view 1/30" in out.getvalue()
    assert_intrinsics_within_1_percent(PinholeCamera.from_yaml(out_yaml))


def test_calibrate_cli_errors_are_messages_not_tracebacks(tmp_path, capsys, board_views):
    assert calibrate_camera_main(["--camera", "/nonexistent/video.mp4", "--out", str(tmp_path / "c.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    folder = tmp_path / "few"
    folder.mkdir()
    for i, img in enumerate(board_views[:3]):
        cv2.imwrite(str(folder / f"{i}.png"), img)
    assert calibrate_camera_main(["--images", str(folder), "--out", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "3 distinct views" in err and "at least 10" in err
    assert not (tmp_path / "c.yaml").exists()


# ------------------------------------------------------------------------------------------
# camera input
# ------------------------------------------------------------------------------------------
def write_video(path: Path, n: int, size=(160, 120), fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        cv2.putText(img, str(i), (10, size[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        img[:, :, 0] = (i * 10) % 256
        writer.write(img)
    writer.release()
    return path


def test_camera_source_reads_a_video_file(tmp_path):
    video = write_video(tmp_path / "v.avi", 12)
    calib = {"width": 160, "height": 120, "fx": 150.0, "fy": 150.0, "cx": 80.0, "cy": 60.0}
    with CameraSource(str(video), calib=calib) as cam:
        assert cam.total == 12 and cam.frame_size == (160, 120)
        frames = list(cam)
    assert [f.index for f in frames] == list(range(12))
    assert frames[3].timestamp == pytest.approx(3 / 30.0)
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8 and frames[0].depth is None
    assert abs(int(frames[5].image[5, 5, 0]) - 50) < 12  # decoded the right frame


def test_camera_source_loop_max_frames_and_realtime(tmp_path):
    video = write_video(tmp_path / "v.avi", 5, fps=100.0)
    frames = list(CameraSource(str(video), loop=True, max_frames=12))
    assert len(frames) == 12
    assert np.all(np.diff([f.timestamp for f in frames]) > 0)
    frames = list(CameraSource(str(video), realtime=True))
    stamps = np.array([f.timestamp for f in frames])
    assert len(frames) == 5 and np.all(np.diff(stamps) > 0)
    assert stamps[0] > 1e9  # wall clock, as from a live camera


def test_camera_source_resize_to_calibration(tmp_path):
    video = write_video(tmp_path / "v.avi", 3, size=(320, 240))
    calib = PinholeCamera(width=160, height=120, fx=150.0, fy=150.0, cx=80.0, cy=60.0)
    frames = list(CameraSource(str(video), calib=calib, resize="160x120"))
    assert frames[0].image.shape == (120, 160, 3)


def test_camera_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        CameraSource(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputError, match=r"/dev/video\d+|cannot open camera"):
        CameraSource(57)
    bogus = tmp_path / "not_a_video.avi"
    bogus.write_bytes(b"this is not a video")
    with pytest.raises(InputError, match="cannot open|no frames"):
        CameraSource(str(bogus))
    video = write_video(tmp_path / "v.avi", 3, size=(160, 120))
    with pytest.raises(InputError) as info:
        CameraSource(str(video), calib=PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0))
    msg = str(info.value)
    assert "160x120" in msg and "640x480" in msg and "--resize" in msg and "calibrate" in msg.lower()
    with pytest.raises(InputError, match="slam calibrate"):
        CameraSource(str(video), calib=tmp_path / "missing.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("width: 160\nheight: 120\n")
    with pytest.raises(InputError, match="missing camera key"):
        CameraSource(str(video), calib=bad_yaml)


def test_camera_spec_parsing():
    assert parse_camera_spec(0) == ("device", 0)
    assert parse_camera_spec("2") == ("device", 2)
    assert parse_camera_spec("rtsp://cam/stream")[0] == "url"
    assert parse_camera_spec("clip.mp4") == ("file", "clip.mp4")
    assert parse_size("640x480") == (640, 480)
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        parse_size("big")
