"""Sequence manifests, data-root resolution, not-found messages and downloading."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from tool_loader import load_tool

import slam.io.sequences as sequences
from slam.errors import InputError
from slam.io.sequences import (
    download_main,
    download_sequence,
    find_sequence,
    list_sequences,
    load_manifest,
    resolve_data_root,
    safe_extract,
    sequences_main,
)

TUM_NAMES = [
    "fr1_xyz", "fr1_rpy", "fr1_360", "fr1_floor", "fr1_desk", "fr1_desk2", "fr1_room", "fr1_plant", "fr1_teddy",
    "fr2_xyz", "fr2_rpy", "fr2_360_hemisphere", "fr2_360_kidnap", "fr2_desk", "fr2_desk_with_person",
    "fr2_large_no_loop", "fr2_large_with_loop", "fr2_pioneer_360", "fr2_pioneer_slam", "fr2_pioneer_slam2",
    "fr2_pioneer_slam3", "fr2_coke", "fr2_dishes", "fr2_flowerbouquet", "fr2_flowerbouquet_brownbackground",
    "fr2_metallic_sphere", "fr2_metallic_sphere2",
    "fr3_long_office_household", "fr3_nostructure_notexture_far", "fr3_nostructure_notexture_near_withloop",
    "fr3_nostructure_texture_far", "fr3_nostructure_texture_near_withloop", "fr3_structure_notexture_far",
    "fr3_structure_notexture_near", "fr3_structure_texture_far", "fr3_structure_texture_near",
    "fr3_sitting_static", "fr3_sitting_xyz", "fr3_sitting_halfsphere", "fr3_sitting_rpy",
    "fr3_walking_static", "fr3_walking_xyz", "fr3_walking_halfsphere", "fr3_walking_rpy",
    "fr3_cabinet", "fr3_large_cabinet", "fr3_teddy",
]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Working directory = tmp_path, no $SLAM_DATA, no fallback to the checkout's sequences/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLAM_DATA", raising=False)
    monkeypatch.setattr(sequences, "_CHECKOUT_DATA_ROOT", tmp_path / "no-checkout-root")
    return tmp_path


def _fake_sequence(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "rgb.txt").write_text("# color\n1.0 rgb/1.0.png\n")
    (folder / "depth.txt").write_text("# depth\n1.0 depth/1.0.png\n")


# --------------------------------------------------------------------------- manifests


def test_every_tum_sequence_has_a_valid_manifest():
    names = set(list_sequences("tum"))
    for short in TUM_NAMES:
        assert f"tum/{short}" in names
    assert "tum/fr3_walking_xyz_validation" in names
    for name in names:
        info = load_manifest(name)
        fr = int(info.folder.split("freiburg")[1][0])
        assert info.dataset == "tum" and info.name == name
        assert info.folder == "rgbd_dataset_freiburg" + name[len("tum/fr"):]
        assert info.url == f"https://cvg.cit.tum.de/rgbd/dataset/freiburg{fr}/{info.folder}.tgz"
        assert info.depth_factor == 5000.0 and info.fps == 30.0
        assert info.image_size == (640, 480)
        assert info.has_groundtruth == (not name.endswith("_validation"))
        assert info.dist.shape == (5,)


def test_manifest_cameras():
    np.testing.assert_allclose(load_manifest("tum/fr1_desk").K, [[517.3, 0, 318.6], [0, 516.5, 255.3], [0, 0, 1]])
    np.testing.assert_allclose(load_manifest("tum/fr1_desk").dist, [0.2624, -0.9531, -0.0054, 0.0026, 1.1633])
    np.testing.assert_allclose(load_manifest("tum/fr2_desk").K, [[520.9, 0, 325.1], [0, 521.0, 249.7], [0, 0, 1]])
    np.testing.assert_allclose(load_manifest("tum/fr2_desk").dist, [0.2312, -0.7849, -0.0033, -0.0001, 0.9172])
    np.testing.assert_allclose(load_manifest("tum/fr3_teddy").K, [[535.4, 0, 320.1], [0, 539.2, 247.6], [0, 0, 1]])
    np.testing.assert_allclose(load_manifest("tum/fr3_teddy").dist, 0.0)


def test_manifest_generator_matches_committed_files(tmp_path):
    make = load_tool("make_tum_manifests").main
    assert make(["--out", str(tmp_path)]) == 0
    committed = sequences.manifest_dir() / "tum"
    generated = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert generated == sorted(p.name for p in committed.glob("*.yaml"))
    for name in generated:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name


def test_name_aliases():
    assert load_manifest("fr1_desk").name == "tum/fr1_desk"
    assert load_manifest("rgbd_dataset_freiburg1_desk").name == "tum/fr1_desk"
    assert load_manifest("tum/freiburg2_xyz").name == "tum/fr2_xyz"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(InputError) as exc:
        load_manifest("tum/fr1_dsk")
    msg = str(exc.value)
    assert "tum/fr1_desk" in msg and "python -m slam sequences" in msg
    with pytest.raises(InputError, match="python -m slam sequences"):
        load_manifest("kitti/99")  # 00-21 have manifests


def test_bad_manifest_names_file_and_key(tmp_path):
    (tmp_path / "tum").mkdir()
    good = yaml.safe_load((sequences.manifest_dir() / "tum" / "fr1_xyz.yaml").read_text())
    bad = dict(good, camera=dict(good["camera"], fx=-1))
    (tmp_path / "tum" / "fr1_xyz.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match=r"fr1_xyz.yaml: key 'camera.fx'"):
        load_manifest("tum/fr1_xyz", root=tmp_path)
    del bad["url"]
    (tmp_path / "tum" / "fr1_xyz.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match="missing key"):
        load_manifest("tum/fr1_xyz", root=tmp_path)


def test_synthetic_names():
    synthetic = pytest.importorskip("slam.synth.profiles")
    profile = sorted(synthetic.PROFILES)[0]
    info = load_manifest(f"synthetic/{profile}")
    assert info.dataset == "synthetic" and info.folder == f"synthetic/{profile}" and info.url == ""
    with pytest.raises(InputError, match=f"synthetic/{profile}"):
        load_manifest(f"synthetic/{profile}x")


# --------------------------------------------------------------------------- data roots


def test_resolve_data_root_order(isolated, monkeypatch):
    monkeypatch.setenv("SLAM_DATA", str(isolated / "env"))
    roots = resolve_data_root(str(isolated / "cli"))
    assert roots[:3] == [isolated / "cli", isolated / "env", isolated / "sequences"]
    monkeypatch.delenv("SLAM_DATA")
    assert resolve_data_root(None)[0] == isolated / "sequences"


def test_find_sequence_in_each_layout(isolated, monkeypatch):
    _fake_sequence(isolated / "sequences" / "rgbd_dataset_freiburg1_desk")
    info, path = find_sequence("tum/fr1_desk")
    assert path == isolated / "sequences" / "rgbd_dataset_freiburg1_desk" and info.name == "tum/fr1_desk"
    _fake_sequence(isolated / "env" / "tum" / "rgbd_dataset_freiburg1_desk")
    monkeypatch.setenv("SLAM_DATA", str(isolated / "env"))
    assert find_sequence("tum/fr1_desk")[1] == isolated / "env" / "tum" / "rgbd_dataset_freiburg1_desk"
    _fake_sequence(isolated / "cli" / "rgbd_dataset_freiburg1_desk")
    assert find_sequence("tum/fr1_desk", data_root=isolated / "cli")[1] == isolated / "cli" / "rgbd_dataset_freiburg1_desk"


def test_missing_sequence_message_names_paths_and_fix(isolated, monkeypatch):
    monkeypatch.setenv("SLAM_DATA", str(isolated / "env"))
    (isolated / "cli" / "rgbd_dataset_freiburg1_desk").mkdir(parents=True)  # present but empty
    with pytest.raises(InputError) as exc:
        find_sequence("tum/fr1_desk", data_root=str(isolated / "cli"))
    msg = str(exc.value)
    for root in ("cli", "env", "sequences"):
        assert str(isolated / root / "rgbd_dataset_freiburg1_desk") in msg
        assert str(isolated / root / "tum" / "rgbd_dataset_freiburg1_desk") in msg
    assert "python -m slam download tum/fr1_desk" in msg
    assert "https://cvg.cit.tum.de/rgbd/dataset/freiburg1/rgbd_dataset_freiburg1_desk.tgz" in msg
    assert "--data-root" in msg and "no rgb.txt" in msg


def test_synthetic_find_returns_render_location(isolated):
    synthetic = pytest.importorskip("slam.synth.profiles")
    profile = sorted(synthetic.PROFILES)[0]
    info, path = find_sequence(f"synthetic/{profile}")
    assert info.dataset == "synthetic" and path == isolated / "sequences" / "synthetic" / profile
    (isolated / "data" / "synthetic" / profile).mkdir(parents=True)
    assert find_sequence(f"synthetic/{profile}", isolated / "data")[1] == isolated / "data" / "synthetic" / profile


def test_sequences_main_lists(isolated):
    _fake_sequence(isolated / "sequences" / "rgbd_dataset_freiburg1_xyz")
    out = io.StringIO()
    assert sequences_main(["fr1_"], out=out) == 0
    text = out.getvalue()
    assert str(isolated / "sequences" / "rgbd_dataset_freiburg1_xyz") in text
    assert "tum/fr1_desk" in text and "tum/fr2_desk" not in text


# --------------------------------------------------------------------------- download


def _make_archive(path: Path, folder: str, extra: list[tuple[str, bytes]] = ()) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in [(f"{folder}/rgb.txt", b"1.0 rgb/1.0.png\n"), (f"{folder}/depth.txt", b"1.0 d.png\n")] + list(extra):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_download_from_url_unpacks(isolated):
    archive = isolated / "mirror.tgz"
    _make_archive(archive, "rgbd_dataset_freiburg1_desk")
    out = io.StringIO()
    rc = download_sequence("tum/fr1_desk", isolated / "data", url=archive.as_uri(), out=out, progress=False)
    assert rc == 0, out.getvalue()
    assert (isolated / "data" / "rgbd_dataset_freiburg1_desk" / "rgb.txt").is_file()
    assert not list((isolated / "data").glob("*.tgz*"))  # archive removed
    assert find_sequence("tum/fr1_desk", isolated / "data")[1] == isolated / "data" / "rgbd_dataset_freiburg1_desk"
    out = io.StringIO()
    assert download_sequence("tum/fr1_desk", isolated / "data", url="http://127.0.0.1:9/x", out=out) == 0
    assert "already present" in out.getvalue()


def test_download_without_network_says_what_to_do(isolated):
    out = io.StringIO()
    rc = download_sequence("tum/fr1_room", isolated / "data", url="http://127.0.0.1:9/rgbd_dataset_freiburg1_room.tgz",
                           timeout=5, out=out, progress=False)
    msg = out.getvalue()
    assert rc == 1
    assert "could not download http://127.0.0.1:9/rgbd_dataset_freiburg1_room.tgz" in msg
    assert f"tar -xzf rgbd_dataset_freiburg1_room.tgz -C {isolated / 'data'}" in msg
    assert str(isolated / "data" / "rgbd_dataset_freiburg1_room" / "rgb.txt") in msg


def test_download_wrong_archive_and_unknown_name(isolated):
    archive = isolated / "wrong.tgz"
    _make_archive(archive, "something_else")
    out = io.StringIO()
    assert download_sequence("tum/fr1_desk", isolated / "d", url=archive.as_uri(), out=out, progress=False) == 2
    assert "did not contain rgbd_dataset_freiburg1_desk/rgb.txt" in out.getvalue()
    out = io.StringIO()
    assert download_sequence("tum/nope", isolated / "d", out=out) == 2
    assert "unknown sequence" in out.getvalue()


def test_download_main_parses_arguments(isolated, capsys):
    assert download_main(["tum/not_a_sequence", "--data-root", str(isolated)]) == 2
    assert "unknown sequence" in capsys.readouterr().err
    synthetic = pytest.importorskip("slam.synth.profiles")
    assert download_main([f"synthetic/{sorted(synthetic.PROFILES)[0]}", "--data-root", str(isolated)]) == 2
    assert "nothing to download" in capsys.readouterr().err


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil_abs.txt", "rgbd_dataset_freiburg1_desk/../../evil.txt"])
def test_safe_extract_rejects_path_traversal(tmp_path, evil):
    archive = tmp_path / "evil.tgz"
    _make_archive(archive, "rgbd_dataset_freiburg1_desk", extra=[(evil, b"pwned")])
    dest = tmp_path / "dest"
    with pytest.raises(InputError, match="refusing"):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "rgbd_dataset_freiburg1_desk").exists()  # nothing written


def test_safe_extract_rejects_escaping_symlink(tmp_path):
    archive = tmp_path / "link.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("seq/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(InputError, match="refusing link"):
        safe_extract(archive, tmp_path / "dest")


def test_safe_extract_corrupt_archive(tmp_path):
    (tmp_path / "bad.tgz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(InputError, match="bad.tgz"):
        safe_extract(tmp_path / "bad.tgz", tmp_path / "dest")


def test_data_root_may_be_the_sequence_folder_itself(isolated):
    _fake_sequence(isolated / "x" / "rgbd_dataset_freiburg2_xyz")
    assert find_sequence("tum/fr2_xyz", isolated / "x" / "rgbd_dataset_freiburg2_xyz")[1] == isolated / "x" / "rgbd_dataset_freiburg2_xyz"


@pytest.mark.needs_data
def test_find_shared_fr1_xyz(shared_data, fr1_xyz, isolated):
    info, path = find_sequence("tum/fr1_xyz", data_root=shared_data)
    assert path.resolve() == fr1_xyz.resolve() and info.K[0, 0] == 517.3
