"""TUM RGB-D association and reader, image-folder and video readers."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.errors import InputError
from slam.io.folder import ImageFolderReader, natural_key
from slam.io.tum import TUMReader, associate, read_file_list, read_groundtruth
from slam.io.video import VideoReader


# --------------------------------------------------------------------------- association


def _associate_reference(first, second, max_difference=0.02, offset=0.0):
    """Brute-force transcription of the algorithm in TUM's associate.py (O(N*M))."""
    a_keys, b_keys = list(first), list(second)
    potential = sorted(
        (abs(a - (b + offset)), a, b) for a in a_keys for b in b_keys if abs(a - (b + offset)) < max_difference
    )
    matches = []
    for _, a, b in potential:
        if a in a_keys and b in b_keys:
            a_keys.remove(a)
            b_keys.remove(b)
            matches.append((a, b))
    return sorted(matches)


def test_associate_with_jitter_and_missing_frames():
    rng = np.random.default_rng(0)
    rgb = 100.0 + np.arange(300) / 30.0 + rng.uniform(-0.004, 0.004, 300)
    depth = 100.0 + np.arange(300) / 30.0 + 0.006 + rng.uniform(-0.004, 0.004, 300)
    dropped_depth = {5, 6, 7, 100, 250}
    dropped_rgb = {42, 43, 299}
    rgb_kept = [t for i, t in enumerate(rgb) if i not in dropped_rgb]
    depth_kept = [t for i, t in enumerate(depth) if i not in dropped_depth]
    matches = associate(rgb_kept, depth_kept, max_difference=0.02)
    assert matches == _associate_reference(rgb_kept, depth_kept)
    # every surviving rgb frame whose depth partner survived is matched to it (offset 6 ms << 33 ms)
    expected = {(rgb[i], depth[i]) for i in range(300) if i not in dropped_depth and i not in dropped_rgb}
    assert expected <= set(matches)
    # each timestamp is used at most once and the threshold holds
    assert len({a for a, _ in matches}) == len(matches) == len({b for _, b in matches})
    assert all(abs(a - b) < 0.02 for a, b in matches)
    assert [a for a, _ in matches] == sorted(a for a, _ in matches)


def test_associate_greedy_closest_first_and_strict_threshold():
    # 1.000 is closest to 1.005 (diff .005); 1.010 must then take 1.025 (diff .015), not 1.005
    assert associate([1.000, 1.010], [1.005, 1.025]) == [(1.000, 1.005), (1.010, 1.025)]
    # strict '<' as associate.py: exactly max_difference apart is not a match
    assert associate([0.0], [0.5], max_difference=0.5) == []
    assert associate([0.0], [0.49], max_difference=0.5) == [(0.0, 0.49)]
    # offset is applied to the second list, returned stamps are the originals
    assert associate([10.0, 11.0], [0.001, 1.001], offset=10.0) == [(10.0, 0.001), (11.0, 1.001)]
    assert associate([], [1.0]) == []


def test_associate_random_matches_reference():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = np.sort(rng.uniform(0, 3, 80)).tolist()
        b = np.sort(rng.uniform(0, 3, 60)).tolist()
        assert associate(a, b, 0.03) == _associate_reference(a, b, 0.03)


def test_associate_accepts_file_lists(tmp_path):
    (tmp_path / "a.txt").write_text("# c\n1.0 x\n2.0 y\n")
    (tmp_path / "b.txt").write_text("1.01 p\n2.5 q\n")
    assert associate(read_file_list(tmp_path / "a.txt"), read_file_list(tmp_path / "b.txt")) == [(1.0, 1.01)]


# --------------------------------------------------------------------------- list files


def test_read_file_list_comments_commas_and_order(tmp_path):
    p = tmp_path / "rgb.txt"
    p.write_text("# color images\n# timestamp filename\n\n2.5 rgb/b.png\n1.5,rgb/a.png\n  3.0\trgb/c.png  \n")
    entries = read_file_list(p)
    assert [t for t, _ in entries] == [1.5, 2.5, 3.0]
    assert [f[0] for _, f in entries] == ["rgb/a.png", "rgb/b.png", "rgb/c.png"]


@pytest.mark.parametrize("bad_line", ["abc rgb/a.png", "1.5", "nan rgb/x.png"])
def test_read_file_list_malformed_names_file_and_line(tmp_path, bad_line):
    p = tmp_path / "depth.txt"
    p.write_text(f"# header\n1.0 depth/a.png\n{bad_line}\n")
    with pytest.raises(InputError) as exc:
        read_file_list(p)
    assert f"{p}:3" in str(exc.value)


def test_read_file_list_missing_file(tmp_path):
    with pytest.raises(InputError, match="rgb.txt"):
        read_file_list(tmp_path / "rgb.txt")


# --------------------------------------------------------------------------- TUM reader


def _make_fake_tum(root: Path, n: int = 8, size=(32, 24)) -> dict:
    """A tiny TUM-layout sequence: colour alternates png/jpg, depth 16-bit png, depth 7 ms later."""
    w, h = size
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines, truth = ["# color images", "# timestamp filename"], ["# depth maps"], {}
    for i in range(n):
        t_rgb = 1000.0 + i / 30.0
        t_d = t_rgb + 0.007
        ext = "png" if i % 2 == 0 else "jpg"
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = 10 * i  # B
        img[..., 2] = 200  # R
        cv2.imwrite(str(root / "rgb" / f"{t_rgb:.6f}.{ext}"), img)
        depth = np.full((h, w), 5000 + 500 * i, np.uint16)
        depth[0, 0] = 0
        cv2.imwrite(str(root / "depth" / f"{t_d:.6f}.png"), depth)
        rgb_lines.append(f"{t_rgb:.6f} rgb/{t_rgb:.6f}.{ext}")
        depth_lines.append(f"{t_d:.6f} depth/{t_d:.6f}.png")
        truth[i] = (t_rgb, 1.0 + 0.1 * i, 10 * i)
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    return truth


def test_tum_reader_reads_png_and_jpg_with_depth(tmp_path):
    truth = _make_fake_tum(tmp_path / "seq")
    reader = TUMReader(tmp_path / "seq")
    assert len(reader) == 8
    frames = list(reader)
    assert [f.index for f in frames] == list(range(8))
    assert reader.n_skipped == 0
    for f in frames:
        t_rgb, depth_m, blue = truth[f.index]
        assert f.timestamp == pytest.approx(t_rgb)
        assert f.image.dtype == np.uint8 and f.image.shape == (24, 32, 3)
        assert abs(int(f.image[5, 5, 0]) - blue) <= 3 and abs(int(f.image[5, 5, 2]) - 200) <= 3  # BGR order
        assert f.depth.dtype == np.float32 and f.depth.shape == (24, 32)
        assert f.depth[5, 5] == pytest.approx(depth_m, abs=1e-6)
        assert f.depth[0, 0] == 0.0
    assert {Path(f.path).suffix for f in frames} == {".png", ".jpg"}


def test_tum_reader_skips_corrupt_and_missing_images(tmp_path, caplog):
    _make_fake_tum(tmp_path / "seq")
    rgb = read_file_list(tmp_path / "seq" / "rgb.txt")
    depth = read_file_list(tmp_path / "seq" / "depth.txt")
    corrupt = tmp_path / "seq" / rgb[3][1][0]
    assert corrupt.suffix == ".jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "seq" / rgb[4][1][0]).unlink()  # missing colour
    (tmp_path / "seq" / depth[6][1][0]).unlink()  # missing depth
    reader = TUMReader(tmp_path / "seq")
    with caplog.at_level(logging.WARNING):
        frames = list(reader)
    assert [f.index for f in frames] == [0, 1, 2, 5, 7]
    assert reader.n_skipped == 3
    assert [s[0] for s in reader.skipped] == [3, 4, 6]
    assert str(corrupt) in reader.skipped[0][1]
    assert "skipping frame 3" in caplog.text
    # iterating again recounts instead of accumulating
    list(reader)
    assert reader.n_skipped == 3


def test_tum_reader_mono_selection_and_association(tmp_path):
    _make_fake_tum(tmp_path / "seq", n=10)
    # drop two depth lines: RGB-D gets 8 associated frames, mono keeps all 10
    lines = (tmp_path / "seq" / "depth.txt").read_text().splitlines()
    (tmp_path / "seq" / "depth.txt").write_text("\n".join(lines[:3] + lines[5:]) + "\n")
    assert len(TUMReader(tmp_path / "seq")) == 8
    mono = TUMReader(tmp_path / "seq", use_depth=False)
    assert len(mono) == 10
    assert all(f.depth is None for f in mono)
    sel = TUMReader(tmp_path / "seq", use_depth=False, start=1, stride=3, max_frames=2)
    ts = [f.timestamp for f in sel]
    assert ts == pytest.approx([1000.0 + 1 / 30.0, 1000.0 + 4 / 30.0])


def test_tum_reader_depth_factor(tmp_path):
    _make_fake_tum(tmp_path / "seq", n=2)
    f = next(iter(TUMReader(tmp_path / "seq", depth_factor=1000.0)))
    assert f.depth[5, 5] == pytest.approx(5.0)


def test_tum_reader_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        TUMReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="rgb.txt"):
        TUMReader(tmp_path / "empty")
    _make_fake_tum(tmp_path / "seq", n=2)
    (tmp_path / "seq" / "depth.txt").unlink()
    with pytest.raises(InputError, match="depth.txt"):
        TUMReader(tmp_path / "seq")
    assert len(TUMReader(tmp_path / "seq", use_depth=False)) == 2
    (tmp_path / "seq" / "rgb.txt").write_text("1.0 rgb/a.png\nbroken line\n")
    with pytest.raises(InputError, match=r"rgb.txt:2"):
        TUMReader(tmp_path / "seq", use_depth=False)


def test_read_groundtruth_sorted_and_normalised(tmp_path):
    p = tmp_path / "groundtruth.txt"
    p.write_text("# ground truth\n2.0 1 2 3 0 0 0 1\n1.0 0 0 0 0 0 0.7071 0.7071\n")
    ts, world_from_cam = read_groundtruth(p)
    assert ts.tolist() == [1.0, 2.0]
    assert world_from_cam.shape == (2, 4, 4)
    np.testing.assert_allclose(world_from_cam[0, :3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(world_from_cam[1, :3, 3], [1, 2, 3])


# --------------------------------------------------------------------------- image folder and video


def test_natural_sort():
    names = ["img10.png", "img2.png", "img1.png", "Img3.png"]
    assert sorted(names, key=natural_key) == ["img1.png", "img2.png", "Img3.png", "img10.png"]


def test_image_folder_reader(tmp_path):
    for i in [1, 2, 10]:
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), np.full((8, 8), i * 20, np.uint8))
    (tmp_path / "frame3.jpg").write_bytes(b"corrupt")
    (tmp_path / "notes.txt").write_text("ignored")
    reader = ImageFolderReader(tmp_path, fps=10.0)
    assert len(reader) == 4
    frames = list(reader)
    assert [Path(f.path).name for f in frames] == ["frame1.png", "frame2.png", "frame10.png"]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.3])
    assert frames[0].image.shape == (8, 8, 3) and frames[0].depth is None
    assert reader.n_skipped == 1 and reader.skipped[0][0] == 2


def test_image_folder_timestamps_from_names(tmp_path):
    for name in ["1403636579763555584", "1403636579813555456"]:  # EuRoC nanoseconds
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.zeros((4, 4, 3), np.uint8))
    ts = [f.timestamp for f in ImageFolderReader(tmp_path)]
    assert ts == pytest.approx([1403636579.763555584, 1403636579.813555456], abs=1e-6)
    sub = tmp_path / "sec"
    sub.mkdir()
    for name in ["12.5", "2.25"]:
        cv2.imwrite(str(sub / f"{name}.jpg"), np.zeros((4, 4, 3), np.uint8))
    assert [f.timestamp for f in ImageFolderReader(sub)] == [2.25, 12.5]


def test_image_folder_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ImageFolderReader(tmp_path / "missing")
    with pytest.raises(InputError, match="no images"):
        ImageFolderReader(tmp_path)


def test_video_reader(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(6):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    reader = VideoReader(path)
    assert len(reader) == 6
    frames = list(reader)
    assert [f.index for f in frames] == list(range(6))
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], abs=1e-3)
    assert abs(float(frames[3].image.mean()) - 120) < 6
    strided = list(VideoReader(path, stride=2, max_frames=2))
    assert [f.index for f in strided] == [0, 2]
    assert strided[1].timestamp == pytest.approx(0.2, abs=1e-3)


def test_video_reader_unreadable(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputError, match="bad.mp4"):
        VideoReader(bad)
    with pytest.raises(InputError, match="not found"):
        VideoReader(tmp_path / "missing.mp4")


# --------------------------------------------------------------------------- real data


@pytest.mark.needs_data
def test_fr1_xyz_first_frames(fr1_xyz):
    reader = TUMReader(fr1_xyz, max_frames=20)
    assert len(reader) == 20
    frames = list(reader)
    assert reader.n_skipped == 0 and len(frames) == 20
    assert Path(frames[0].path).suffix == ".jpg"  # rgb.txt of the shared copy names jpgs
    assert frames[0].timestamp == pytest.approx(1305031102.175304)
    for f in frames:
        assert f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8
        valid = f.depth[f.depth > 0]
        assert valid.size > 0.5 * f.depth.size
        assert 0.3 < float(np.median(valid)) < 3.0  # a desk scene, metres
    assert np.all(np.diff([f.timestamp for f in frames]) > 0)
    ts, world_from_cam = read_groundtruth(fr1_xyz / "groundtruth.txt")
    assert len(ts) == 3000 and world_from_cam.shape == (3000, 4, 4)
