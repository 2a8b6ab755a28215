"""Trajectory files (TUM / KITTI / EuRoC) and PLY point clouds: round trips and malformed input."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.errors import InputError
from slam.io.ply import read_ply, write_ply
from slam.io.trajectory import (
    EUROC_HEADER,
    detect_format,
    read_euroc,
    read_kitti,
    read_trajectory,
    read_tum,
    read_tum_header,
    write_euroc,
    write_kitti,
    write_trajectory,
    write_tum,
)


def _random_poses(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    world_from_cam = np.tile(np.eye(4), (n, 1, 1))
    world_from_cam[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    world_from_cam[:, :3, 3] = rng.uniform(-20, 20, (n, 3))
    # include the awkward cases: identity, 180 degree turns (qw = 0)
    world_from_cam[0, :3, :3] = np.eye(3)
    world_from_cam[1, :3, :3] = np.diag([1.0, -1.0, -1.0])
    world_from_cam[2, :3, :3] = np.diag([-1.0, -1.0, 1.0])
    timestamps = 1305031102.175304 + np.arange(n) / 30.0 + rng.uniform(0, 1e-3, n)
    return np.round(timestamps, 6), world_from_cam


def test_tum_round_trip(tmp_path):
    ts, poses = _random_poses(50)
    p = tmp_path / "out" / "trajectory.txt"
    write_tum(p, ts, poses, header={"n_frames": 798, "features": "superpoint"})
    ts2, poses2 = read_tum(p)
    np.testing.assert_allclose(ts2, ts, atol=1e-9, rtol=0)
    np.testing.assert_allclose(poses2, poses, atol=1e-6)
    assert read_tum_header(p) == {"n_frames": "798", "features": "superpoint"}
    first = [ln for ln in p.read_text().splitlines() if not ln.startswith("#")][0]
    assert first.split()[0] == f"{ts[0]:.6f}"  # timestamps keep their exact short form
    assert len(first.split()) == 8


def test_tum_small_timestamps_keep_precision(tmp_path):
    ts = np.arange(5) / 30.0
    _, poses = _random_poses(5)
    write_tum(tmp_path / "t.txt", ts, poses)
    ts2, _ = read_tum(tmp_path / "t.txt")
    np.testing.assert_allclose(ts2, ts, atol=1e-9)


def test_kitti_round_trip(tmp_path):
    _, poses = _random_poses(30, seed=3)
    write_kitti(tmp_path / "k.txt", poses)
    lines = (tmp_path / "k.txt").read_text().splitlines()
    assert len(lines) == 30 and all(len(ln.split()) == 12 for ln in lines)
    np.testing.assert_allclose(read_kitti(tmp_path / "k.txt"), poses, atol=1e-6)
    # row-major 3x4: the 4th number is tx
    assert float(lines[5].split()[3]) == pytest.approx(poses[5, 0, 3])


def test_euroc_round_trip(tmp_path):
    ts, poses = _random_poses(30, seed=4)
    write_euroc(tmp_path / "e.csv", ts, poses)
    text = (tmp_path / "e.csv").read_text().splitlines()
    assert text[0] == EUROC_HEADER
    assert text[1].split(",")[0] == str(int(round(ts[0] * 1e9)))
    ts2, poses2 = read_euroc(tmp_path / "e.csv")
    np.testing.assert_allclose(ts2, ts, atol=1e-6)
    np.testing.assert_allclose(poses2, poses, atol=1e-6)


def test_euroc_reads_groundtruth_with_extra_columns(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text(
        "#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z [], "
        "v_RS_R_x [m s^-1], v_RS_R_y [m s^-1], v_RS_R_z [m s^-1], b_w_RS_S_x, b_w_RS_S_y, b_w_RS_S_z, "
        "b_a_RS_S_x, b_a_RS_S_y, b_a_RS_S_z\n"
        "1403636580838555648,4.688319,-1.786938,0.783338,0.534108,-0.153029,-0.827383,-0.082152,"
        "-0.027876,0.033207,0.800006,-0.003172,0.021267,0.078502,-0.025266,0.136696,0.075593\n"
    )
    ts, poses = read_euroc(p)
    assert ts[0] == pytest.approx(1403636580.838555648)
    q = Rotation.from_matrix(poses[0, :3, :3]).as_quat()  # xyzw
    q = q if q[3] > 0 else -q
    np.testing.assert_allclose(q, np.array([-0.153029, -0.827383, -0.082152, 0.534108]) / np.linalg.norm([0.534108, -0.153029, -0.827383, -0.082152]), atol=1e-6)


def test_detect_format_and_generic_io(tmp_path):
    ts, poses = _random_poses(5)
    for fmt, name in [("tum", "a.txt"), ("kitti", "b.txt"), ("euroc", "c.csv")]:
        write_trajectory(tmp_path / name, ts, poses, fmt=fmt)
        assert detect_format(tmp_path / name) == fmt
        ts2, poses2 = read_trajectory(tmp_path / name)
        np.testing.assert_allclose(poses2, poses, atol=1e-6)
        assert (ts2 is None) == (fmt == "kitti")
    (tmp_path / "d.txt").write_text("1 2 3 4 5\n")
    with pytest.raises(InputError, match=r"d.txt:1: cannot tell the trajectory format"):
        detect_format(tmp_path / "d.txt")


@pytest.mark.parametrize(
    "line, match",
    [
        ("1.0 0 0 0 0 0 0", "expected 8 numbers"),
        ("1.0 0 0 x 0 0 0 1", "'x' is not a number"),
        ("1.0 0 0 0 0 0 0 1 7", "exactly 8 columns"),
        ("1.0 0 0 0 0 0 0 0", "zero norm"),
        ("1.0 0 0 0 0 0 0 3", "norm 3.000"),
        ("1.0 nan 0 0 0 0 0 1", "NaN or inf"),
    ],
)
def test_read_tum_malformed_names_file_and_line(tmp_path, line, match):
    p = tmp_path / "est.txt"
    p.write_text(f"# header\n0.5 0 0 0 0 0 0 1\n\n{line}\n")
    with pytest.raises(InputError, match=match) as exc:
        read_tum(p)
    assert f"{p}:4" in str(exc.value)


def test_read_kitti_and_euroc_malformed(tmp_path):
    p = tmp_path / "k.txt"
    p.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(InputError, match=rf"{p}:2: expected 12 numbers"):
        read_kitti(p)
    p.write_text("2 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(InputError, match="determinant"):
        read_kitti(p)
    e = tmp_path / "e.csv"
    e.write_text(EUROC_HEADER + "\n1000,0,0,0,1,0,0,0\n1.5e9,0,0,0,1,0,0,0\n")
    with pytest.raises(InputError, match=rf"{e}:3: timestamp .* nanoseconds"):
        read_euroc(e)
    e.write_text("1000,0,0,0,1\n")
    with pytest.raises(InputError, match=rf"{e}:1: expected at least 8"):
        read_euroc(e)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_tum(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(InputError, match="not a text file"):
        read_tum(tmp_path / "bin.txt")


def test_write_rejects_bad_input(tmp_path):
    ts, poses = _random_poses(3)
    poses[1, 0, 3] = np.nan
    with pytest.raises(ValueError, match=r"world_from_cam\[1\] is not finite"):
        write_tum(tmp_path / "t.txt", ts, poses)
    with pytest.raises(ValueError, match="timestamps must be"):
        write_tum(tmp_path / "t.txt", ts[:2], _random_poses(3)[1])


def test_empty_trajectory(tmp_path):
    write_tum(tmp_path / "t.txt", np.zeros(0), np.zeros((0, 4, 4)))
    ts, poses = read_tum(tmp_path / "t.txt")
    assert ts.shape == (0,) and poses.shape == (0, 4, 4)


# --------------------------------------------------------------------------- PLY


def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1000, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    assert write_ply(tmp_path / "map.ply", pts, cols, comment="test map") == 1000
    head = (tmp_path / "map.ply").read_bytes()[:200]
    assert b"format binary_little_endian 1.0" in head and b"element vertex 1000" in head
    pts2, cols2 = read_ply(tmp_path / "map.ply")
    np.testing.assert_array_equal(pts2, pts)
    np.testing.assert_array_equal(cols2, cols)
    assert (tmp_path / "map.ply").stat().st_size == len(head.split(b"end_header\n")[0]) + len(b"end_header\n") + 1000 * 15


def test_ply_without_colors_drops_nonfinite(tmp_path):
    pts = np.array([[0, 0, 1], [np.nan, 0, 0], [1, 2, 3]], dtype=np.float64)
    assert write_ply(tmp_path / "a.ply", pts) == 2
    pts2, cols2 = read_ply(tmp_path / "a.ply")
    assert cols2 is None
    np.testing.assert_array_equal(pts2, [[0, 0, 1], [1, 2, 3]])


def test_ply_ascii_and_errors(tmp_path):
    p = tmp_path / "ascii.ply"
    p.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n0 1 2 255 0 0\n3 4 5 0 255 0\n"
    )
    pts, cols = read_ply(p)
    np.testing.assert_array_equal(pts, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(cols, [[255, 0, 0], [0, 255, 0]])
    (tmp_path / "x.ply").write_bytes(b"not a ply")
    with pytest.raises(InputError, match="not a PLY"):
        read_ply(tmp_path / "x.ply")
    write_ply(tmp_path / "t.ply", np.zeros((10, 3)))
    data = (tmp_path / "t.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-20])
    with pytest.raises(InputError, match="truncated"):
        read_ply(tmp_path / "t.ply")
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "c.ply", np.zeros((2, 3)), np.full((2, 3), 0.5))
