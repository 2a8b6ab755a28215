"""EuRoC and KITTI manifests, where their data is looked for, and how it is downloaded (slam.io.locate)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from tiny_datasets import make_euroc, make_kitti
from tool_loader import load_tool

import slam.io.sequences as sequences
from slam.errors import InputError
from slam.io.datasets import resolve_named
from slam.io.sequences import (
    download_sequence,
    find_sequence,
    list_sequences,
    load_manifest,
)

EUROC = ["MH_01_easy", "MH_02_easy", "MH_03_medium", "MH_04_difficult", "MH_05_difficult", "V1_01_easy",
         "V1_02_medium", "V1_03_difficult", "V2_01_easy", "V2_02_medium", "V2_03_difficult"]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLAM_DATA", raising=False)
    monkeypatch.setattr(sequences, "_CHECKOUT_DATA_ROOT", tmp_path / "no-checkout-root")
    return tmp_path


def test_every_euroc_and_kitti_sequence_has_a_manifest_with_a_download_address():
    assert list_sequences("euroc") == sorted(f"euroc/{n}" for n in EUROC)
    assert list_sequences("kitti") == [f"kitti/{i:02d}" for i in range(22)]
    for name in EUROC:
        info = load_manifest(f"euroc/{name}")
        assert info.dataset == "euroc" and info.folder == name and info.fps == 20.0 and info.has_groundtruth
        assert info.url.endswith(f"/{name}/{name}.zip") and info.extra["mirror"].startswith("https://")
    for i in range(22):
        info = load_manifest(f"kitti/{i:02d}")
        assert info.folder == f"sequences/{i:02d}" and info.has_groundtruth == (i <= 10)
        assert info.url.endswith("data_odometry_gray.zip") and "poses_url" in info.extra
    assert load_manifest("kitti/7").name == "kitti/07"


def test_manifest_generator_matches_committed_files(tmp_path):
    module = load_tool("make_dataset_manifests")
    assert module.main(["--out", str(tmp_path)]) == 0
    for dataset in ("euroc", "kitti"):
        committed = sequences.manifest_dir() / dataset
        generated = sorted(p.name for p in (tmp_path / dataset).glob("*.yaml"))
        assert generated == sorted(p.name for p in committed.glob("*.yaml"))
        for name in generated:
            assert (tmp_path / dataset / name).read_text() == (committed / name).read_text(), name


@pytest.mark.parametrize("where", ["V1_01_easy", "euroc/V1_01_easy", "vicon_room1/V1_01_easy"])
def test_euroc_found_in_each_layout(isolated, where):
    make_euroc(isolated / "data" / where, n=2)
    info, folder = find_sequence("euroc/V1_01_easy", isolated / "data")
    assert folder == isolated / "data" / where
    assert find_sequence("euroc/V1_01_easy", isolated / "data" / where)[1] == isolated / "data" / where


@pytest.mark.parametrize("root", ["data", "data/dataset", "data/kitti"])
def test_kitti_found_from_each_root(isolated, root):
    make_kitti(isolated / "data" / "dataset" if root != "data/kitti" else isolated / "data" / "kitti" / "dataset", n=2)
    _, folder = find_sequence("kitti/7", isolated / root)
    assert folder.parts[-2:] == ("sequences", "07") and (folder / "calib.txt").is_file()


def test_not_found_messages_say_where_and_how(isolated):
    (isolated / "data" / "V2_01_easy").mkdir(parents=True)  # an incomplete unpack
    with pytest.raises(InputError) as info:
        find_sequence("euroc/V2_01_easy", isolated / "data")
    msg = str(info.value)
    assert "no V2_01_easy/mav0/cam0/data.csv" in msg and "not a complete sequence" in msg
    assert "python -m slam download euroc/V2_01_easy" in msg and "V2_01_easy.zip" in msg
    with pytest.raises(InputError) as info:
        find_sequence("kitti/03", isolated / "data")
    msg = str(info.value)
    assert str(isolated / "data" / "dataset" / "sequences" / "03") in msg
    assert "data_odometry_gray.zip" in msg and "data_odometry_poses.zip" in msg and "--data-root DIR/dataset" in msg


def _zip_of(folder: Path, archive: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + str(p.relative_to(folder)))


@pytest.mark.parametrize("prefix", ["", "V1_02_medium/"])
def test_euroc_download_unzips_into_the_data_root(isolated, prefix):
    make_euroc(isolated / "src", n=2)
    _zip_of(isolated / "src", isolated / "mirror.zip", prefix)
    out = io.StringIO()
    rc = download_sequence("euroc/V1_02_medium", isolated / "data", url=(isolated / "mirror.zip").as_uri(), out=out, progress=False)
    assert rc == 0, out.getvalue()
    assert (isolated / "data" / "V1_02_medium" / "mav0" / "cam0" / "data.csv").is_file()
    assert not list((isolated / "data").glob("*.zip*"))
    assert find_sequence("euroc/V1_02_medium", isolated / "data")[1] == isolated / "data" / "V1_02_medium"


def test_euroc_download_failure_and_kitti_say_what_to_fetch(isolated):
    out = io.StringIO()
    rc = download_sequence("euroc/MH_01_easy", isolated / "data", url="http://127.0.0.1:9/MH_01_easy.zip",
                           timeout=5, out=out, progress=False)
    assert rc == 1
    assert "unzip MH_01_easy.zip -d" in out.getvalue() and "research-collection" in out.getvalue()
    out = io.StringIO()
    assert download_sequence("kitti/05", isolated / "data", out=out) == 1
    assert "data_odometry_gray.zip" in out.getvalue() and "sequences/05/calib.txt" in out.getvalue()


def test_unlisted_euroc_name_is_taken_from_a_data_root(isolated):
    make_euroc(isolated / "data" / "my_flight", n=2)
    name, layout, folder = resolve_named("euroc/my_flight", isolated / "data")
    assert (name, layout, folder) == ("euroc/my_flight", "euroc", isolated / "data" / "my_flight")
    with pytest.raises(InputError, match="unknown sequence 'euroc/other'"):
        resolve_named("euroc/other", isolated / "data")
    assert resolve_named("tum/fr1_xyz", isolated / "data") is None
