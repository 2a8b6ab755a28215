"""Layout detection for --seq paths (slam.io.detect)."""
from __future__ import annotations

import cv2
import pytest

from slam.io.detect import describe, detect_layout
from slam.errors import InputError

from tiny_datasets import make_euroc, make_kitti, textured


def test_each_layout_is_recognised(tmp_path):
    tum = tmp_path / "tum_seq"
    tum.mkdir()
    (tum / "rgb.txt").write_text("1.0 rgb/1.png\n")
    make_euroc(tmp_path / "V1_test", n=2)
    made = make_kitti(tmp_path / "dataset", n=2)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), textured(0, 32, 32))
    video = tmp_path / "clip.MP4"
    video.write_bytes(b"\x00" * 16)
    cases = {
        tum: ("tum", tum),
        tmp_path / "V1_test": ("euroc", tmp_path / "V1_test"),
        tmp_path / "V1_test" / "mav0": ("euroc", tmp_path / "V1_test" / "mav0"),
        made["folder"]: ("kitti", made["folder"]),
        images: ("images", images),
        video: ("video", video),
    }
    for path, (kind, target) in cases.items():
        layout = detect_layout(path)
        assert (layout.kind, layout.path) == (kind, target), path
    assert "EuRoC (ASL) layout (found mav0/cam0/data.csv)" in describe(detect_layout(tmp_path / "V1_test"))
    assert "KITTI odometry layout" in describe(detect_layout(made["folder"]))


def test_unclassifiable_folder_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(InputError) as info:
        detect_layout(tmp_path / "notes")
    msg = str(info.value)
    assert str(tmp_path / "notes") in msg and "\n" not in msg
    for looked_for in ("rgb.txt", "mav0/cam0/data.csv", "calib.txt + times.txt + image_0/", "*.png", "video file"):
        assert looked_for in msg
    with pytest.raises(InputError, match="cannot tell what this file holds"):
        detect_layout(tmp_path / "notes" / "readme.txt")
    with pytest.raises(InputError, match="no such file or folder; pass a sequence name"):
        detect_layout(tmp_path / "missing")


def test_dataset_roots_name_their_sequences(tmp_path):
    make_euroc(tmp_path / "euroc" / "V1_a", n=2)
    make_euroc(tmp_path / "euroc" / "V1_b", n=2)
    with pytest.raises(InputError, match=r"folder of EuRoC \(ASL\) sequences \(V1_a, V1_b\).*--seq euroc/V1_a --data-root"):
        detect_layout(tmp_path / "euroc")
    make_kitti(tmp_path / "kitti" / "dataset", n=2)
    for root in (tmp_path / "kitti", tmp_path / "kitti" / "dataset", tmp_path / "kitti" / "dataset" / "sequences"):
        with pytest.raises(InputError, match=r"KITTI odometry sequences \(07\).*--seq kitti/07 --data-root"):
            detect_layout(root)
