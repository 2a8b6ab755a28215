"""KITTI odometry reader (slam.io.kitti) on tiny sequences written here, and on the shared 07 excerpt."""
from __future__ import annotations

import numpy as np
import pytest

from slam.errors import InputError
from slam.io.kitti import KITTIReader, poses_path, read_calib, read_groundtruth, read_times

from tiny_datasets import make_kitti


def test_calib_gives_intrinsics_baseline_and_colour_offsets(tmp_path):
    made = make_kitti(tmp_path / "dataset")
    calib = read_calib(made["folder"] / "calib.txt")
    cam = calib.camera(0, 1226, 370)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (707.0912, 707.0912, 601.8873, 183.1104)
    assert not cam.has_distortion
    assert calib.baseline(0, 1) == pytest.approx(379.8145 / 707.0912, rel=1e-12)  # -P1[0,3] / fx
    assert calib.baseline(2, 3) == pytest.approx((46.88783 + 333.4597) / 707.0912, rel=1e-12)
    t2 = calib.offset(2)  # K^-1 P2[:, 3], by hand: tz first, then ty and tx
    tz = 0.006203223
    assert t2[2] == pytest.approx(tz)
    assert t2[1] == pytest.approx((0.1178601 - 183.1104 * tz) / 707.0912)
    assert t2[0] == pytest.approx((46.88783 - 601.8873 * tz) / 707.0912)


def test_mono_reader_frames_and_groundtruth_with_times(tmp_path):
    made = make_kitti(tmp_path / "dataset", n=5, right=False)
    reader = KITTIReader(made["folder"])
    frames = list(reader)
    assert [f.index for f in frames] == list(range(5))
    np.testing.assert_allclose([f.timestamp for f in frames], made["times"])
    assert frames[0].image.shape == (192, 640, 3) and frames[0].image_right is None
    assert (reader.camera.width, reader.camera.height) == (640, 192)
    ts, world_from_cam = reader.groundtruth()
    np.testing.assert_allclose(ts, made["times"])
    np.testing.assert_allclose(world_from_cam, made["world_from_cam0"], atol=1e-8)
    assert poses_path(made["folder"]) == (tmp_path / "dataset" / "poses" / "07.txt").resolve()


def test_stereo_reader_gives_rectified_rig(tmp_path):
    made = make_kitti(tmp_path / "dataset")
    reader = KITTIReader(made["folder"], stereo=True)
    f = reader.read(1)
    assert f.image_right is not None and f.image_right.shape == f.image.shape
    rig = reader.rig
    assert rig.rectified and rig.baseline == pytest.approx(0.53715, abs=1e-5)
    np.testing.assert_allclose(rig.right_from_left[:3, 3], [-rig.baseline, 0, 0])
    assert rig.bf == pytest.approx(379.8145, rel=1e-9)  # fx * baseline = -P1[0, 3]


def test_colour_groundtruth_moves_cam0_poses_to_cam2(tmp_path):
    made = make_kitti(tmp_path / "dataset")
    calib = read_calib(made["folder"] / "calib.txt")
    _, world_from_cam2 = read_groundtruth(made["folder"], camera=2)
    cam0_from_cam2 = np.eye(4)
    cam0_from_cam2[:3, 3] = -calib.offset(2)
    np.testing.assert_allclose(world_from_cam2, made["world_from_cam0"] @ cam0_from_cam2, atol=1e-9)


def test_calib_without_P1_is_an_error_for_stereo_only(tmp_path):
    made = make_kitti(tmp_path / "dataset", keys=("P0",))
    assert len(KITTIReader(made["folder"])) == 5
    with pytest.raises(InputError, match=r"calib.txt: has no P1, needed for stereo.*data_odometry_calib.zip"):
        KITTIReader(made["folder"], stereo=True)


def test_left_right_size_mismatch_is_an_error(tmp_path):
    made = make_kitti(tmp_path / "dataset", right_size=(100, 60))
    with pytest.raises(InputError, match=r"image_1/000000.png: image is 100x60 but the left image .* is 640x192"):
        KITTIReader(made["folder"], stereo=True)


def test_malformed_calib_and_times_name_file_and_line(tmp_path):
    made = make_kitti(tmp_path / "dataset")
    calib = made["folder"] / "calib.txt"
    calib.write_text("P0: 1 2 3\n")
    with pytest.raises(InputError, match=r"calib.txt:1: P0 must hold 12 finite numbers"):
        read_calib(calib)
    times = made["folder"] / "times.txt"
    times.write_text("0.0\n0.1\nabc\n")
    with pytest.raises(InputError, match=r"times.txt:3: 'abc' is not a timestamp"):
        read_times(times)


def test_missing_poses_means_no_groundtruth(tmp_path):
    made = make_kitti(tmp_path / "dataset", seq="11", poses=False)
    assert KITTIReader(made["folder"]).groundtruth() is None


@pytest.mark.needs_data
def test_shared_kitti_07_excerpt(shared_data):
    folder = shared_data / "kitti" / "dataset" / "sequences" / "07"
    if not (folder / "calib.txt").is_file():
        pytest.skip(f"KITTI excerpt not found at {folder}")
    reader = KITTIReader(folder)
    assert len(reader) == 100
    assert (reader.camera.width, reader.camera.height, reader.camera.fx) == (1226, 370, 707.0912)
    ts, world_from_cam0 = reader.groundtruth()
    np.testing.assert_allclose(world_from_cam0[0], np.eye(4), atol=1e-9)  # KITTI's first pose is the identity
    length = np.linalg.norm(np.diff(world_from_cam0[:, :3, 3], axis=0), axis=1).sum()
    assert 50.0 < length < 60.0  # about 54 m of driving
    with pytest.raises(InputError, match="image_1: not found"):  # the excerpt has no right images
        KITTIReader(folder, stereo=True)
