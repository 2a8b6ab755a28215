"""EuRoC reader (slam.io.euroc) on tiny sequences written here, and on the shared V1_01_easy excerpt."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from slam.errors import InputError
from slam.io.euroc import EuRoCReader, read_groundtruth, read_image_list, read_sensor_yaml

from tiny_datasets import STEP_NS, T0_NS, T_BS0, T_BS1, make_euroc, sensor_yaml


def test_sensor_yaml_gives_pinhole_radtan_resolution_and_T_BS(tmp_path):
    make_euroc(tmp_path / "seq")
    cam = read_sensor_yaml(tmp_path / "seq" / "mav0" / "cam0" / "sensor.yaml")
    c = cam.camera
    assert (c.width, c.height, c.fx, c.fy, c.cx, c.cy) == (160, 120, 120.0, 119.0, 81.0, 62.0)
    assert c.dist == (-0.28, 0.07, 0.0002, 0.00002, 0.0)
    np.testing.assert_allclose(cam.body_from_cam, T_BS0)
    assert cam.rate_hz == 20 and cam.name == "cam0"


def test_mono_frames_timestamps_in_seconds_and_missing_rows_skipped_with_one_warning(tmp_path, caplog):
    make_euroc(tmp_path / "seq", n=6, missing_left=(2, 4))
    with caplog.at_level(logging.WARNING, logger="slam.io.euroc"):
        reader = EuRoCReader(tmp_path / "seq")
    warnings = [r for r in caplog.records if "absent" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 6" in warnings[0].getMessage()
    frames = list(reader)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    expected = [(T0_NS + i * STEP_NS) * 1e-9 for i in (0, 1, 3, 5)]
    np.testing.assert_allclose([f.timestamp for f in frames], expected, rtol=0, atol=1e-6)
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8
    assert all(f.image_right is None and f.depth is None for f in frames)
    assert reader.camera.has_distortion  # mono: raw images, the pipeline undistorts keypoints
    assert reader.rig is not None and not reader.rig.rectified  # cam1 is described even in mono


def test_stereo_pairs_by_timestamp_skips_unpaired_and_rectifies(tmp_path, caplog):
    make_euroc(tmp_path / "seq", n=6, missing_right=(1,), right_offset_ns=200_000)  # 0.2 ms offset
    with caplog.at_level(logging.WARNING, logger="slam.io.euroc"):
        reader = EuRoCReader(tmp_path / "seq", stereo=True)
    assert any("no cam1 image" in r.getMessage() for r in caplog.records)
    frames = list(reader)
    assert len(frames) == 5
    assert all(f.image_right is not None and f.image_right.shape == f.image.shape for f in frames)
    assert 1 not in [round((f.timestamp * 1e9 - T0_NS) / STEP_NS) for f in frames]
    rig = reader.rig
    assert rig.rectified and not reader.camera.has_distortion and reader.camera is rig.left
    expected_b = np.linalg.norm((np.linalg.inv(T_BS1) @ T_BS0)[:3, 3])
    assert rig.baseline == pytest.approx(expected_b, rel=1e-9)
    # too strict a pairing tolerance leaves every frame unpaired: an error, not an empty run
    with pytest.raises(InputError, match="none of the images"):
        EuRoCReader(tmp_path / "seq", stereo=True, max_pair_difference_s=1e-5)


def test_groundtruth_is_camera_pose_world_from_body_times_T_BS(tmp_path):
    made = make_euroc(tmp_path / "seq", n=5)
    ts, world_from_cam = read_groundtruth(tmp_path / "seq")
    np.testing.assert_allclose(ts, np.array(made["stamps_ns"]) * 1e-9, rtol=0, atol=1e-6)
    np.testing.assert_allclose(world_from_cam, made["world_from_body"] @ T_BS0, atol=1e-8)
    body = read_groundtruth(tmp_path / "seq", body_from_cam=np.eye(4))[1]
    np.testing.assert_allclose(body, made["world_from_body"], atol=1e-8)
    # the reader's ground truth is of the camera of Frame.image: the rectified left one in stereo
    reader = EuRoCReader(tmp_path / "seq", stereo=True)
    rect = reader.groundtruth()[1]
    rect_from_cam0 = reader.rectification.rect_from_left
    np.testing.assert_allclose(rect, world_from_cam @ np.linalg.inv(rect_from_cam0), atol=1e-8)


def test_missing_sensor_yaml_names_file_and_fix(tmp_path):
    make_euroc(tmp_path / "seq")
    (tmp_path / "seq" / "mav0" / "cam0" / "sensor.yaml").unlink()
    with pytest.raises(InputError, match=r"cam0/sensor.yaml: not found; .*unpack"):
        EuRoCReader(tmp_path / "seq")


@pytest.mark.parametrize("line, what", [
    ("1403715273262142976", "expected '<timestamp ns>,<filename>'"),
    ("1403715273.26,1403715273262142976.png", "not an integer number of nanoseconds"),
    ("abc,x.png", "not an integer"),
])
def test_malformed_data_csv_names_file_and_line(tmp_path, line, what):
    make_euroc(tmp_path / "seq")
    csv = tmp_path / "seq" / "mav0" / "cam0" / "data.csv"
    csv.write_text(csv.read_text() + line + "\n")
    with pytest.raises(InputError) as info:
        read_image_list(csv)
    assert f"{csv}:8:" in str(info.value) and what in str(info.value)


def test_missing_cam1_only_matters_for_stereo(tmp_path):
    make_euroc(tmp_path / "seq", with_cam1=False)
    assert len(EuRoCReader(tmp_path / "seq")) == 6
    with pytest.raises(InputError, match=r"mav0/cam1: not found, but stereo was asked for; run monocular"):
        EuRoCReader(tmp_path / "seq", stereo=True)


def test_image_size_differing_from_sensor_yaml_is_an_error(tmp_path):
    make_euroc(tmp_path / "seq")
    yml = tmp_path / "seq" / "mav0" / "cam0" / "sensor.yaml"
    yml.write_text(sensor_yaml(T_BS0, 752, 480))
    with pytest.raises(InputError, match=r"image is 160x120 but .*sensor.yaml says resolution \[752, 480\]"):
        EuRoCReader(tmp_path / "seq")


def test_unsupported_camera_model_is_named(tmp_path):
    make_euroc(tmp_path / "seq")
    yml = tmp_path / "seq" / "mav0" / "cam0" / "sensor.yaml"
    yml.write_text(sensor_yaml(T_BS0, 160, 120, model="equidistant"))
    with pytest.raises(InputError, match="distortion_model 'equidistant' is not supported"):
        read_sensor_yaml(yml)


def test_reader_accepts_mav0_itself_and_selection(tmp_path):
    make_euroc(tmp_path / "seq", n=8)
    reader = EuRoCReader(tmp_path / "seq" / "mav0", start=2, stride=2, max_frames=2)
    assert len(reader) == 2
    np.testing.assert_allclose(reader.timestamps, [(T0_NS + 2 * STEP_NS) * 1e-9, (T0_NS + 4 * STEP_NS) * 1e-9], atol=1e-6)


@pytest.mark.needs_data
def test_shared_v1_01_easy_excerpt(shared_data):
    folder = shared_data / "euroc" / "V1_01_easy_micro"
    if not (folder / "mav0").is_dir():
        pytest.skip(f"EuRoC excerpt not found at {folder}")
    reader = EuRoCReader(folder, stereo=True)
    assert len(reader) == 95  # cam1 lists 99 rows, 4 images absent: every cam0 frame is paired
    frame = reader.read(0)
    assert frame.image.shape == frame.image_right.shape == (480, 752, 3)
    assert reader.rig.baseline == pytest.approx(0.110, abs=0.001)  # the EuRoC rig's 11 cm
    ts, world_from_cam0 = read_groundtruth(folder)
    covered = np.isin(np.round(reader.timestamps * 1e9).astype(np.int64), np.round(ts * 1e9).astype(np.int64))
    assert covered.sum() == 74
