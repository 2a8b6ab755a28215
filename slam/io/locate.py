"""Where named EuRoC and KITTI sequences live on disk, and how to get them.

:mod:`slam.io.sequences` handles manifests and data roots for every dataset and calls this module
for ``euroc/<name>`` and ``kitti/<XX>``:

- EuRoC ``euroc/V1_01_easy`` (manifest folder ``V1_01_easy``) is looked for, under each data
  root, as ``<root>/V1_01_easy``, ``<root>/euroc/V1_01_easy`` and ``<root>/<room>/V1_01_easy``
  (the ETH server's ``vicon_room1/`` layout); a folder counts when it holds
  ``mav0/cam0/data.csv``. ``python -m slam download euroc/<name>`` fetches the sequence's ASL
  zip and unpacks it into ``<root>/<name>/mav0``.
- KITTI ``kitti/07`` (folder ``sequences/07``) is looked for as ``<root>/sequences/07``,
  ``<root>/dataset/sequences/07``, ``<root>/kitti/dataset/sequences/07`` and
  ``<root>/kitti/sequences/07``; a folder counts when it holds calib.txt, times.txt and an
  ``image_N/`` folder. KITTI ships all 22 sequences in one registration-gated archive, so
  ``download`` prints what to fetch and where to unpack it instead of fetching 22 GB itself.
- ``euroc/<name>`` without a manifest (your own recording in the ASL layout, or an excerpt)
  is accepted when ``<root>/<name>`` (or ``<root>/euroc/<name>``) is a EuRoC folder:
  :func:`find_unlisted`.
"""
from __future__ import annotations

import os
import shutil
import stat
import urllib.error
import zipfile
from pathlib import Path
from typing import Callable, Optional, TextIO

from slam.errors import InputError

__all__ = ["DATASETS", "candidates", "is_dataset_folder", "not_found_message", "find_unlisted", "download_archive",
           "canonical_kitti_name"]

DATASETS = ("euroc", "kitti")
_EUROC_ROOMS = ("machine_hall", "vicon_room1", "vicon_room2")


def canonical_kitti_name(name: str) -> str:
    """``kitti/7`` -> ``kitti/07``; other names unchanged."""
    if name.startswith("kitti/") and name[6:].isdigit():
        return f"kitti/{int(name[6:]):02d}"
    return name


def is_dataset_folder(path: Path, dataset: str) -> bool:
    """Whether ``path`` holds a sequence of ``dataset`` ("euroc" or "kitti")."""
    if dataset == "euroc":
        from slam.io.euroc import find_mav0

        return find_mav0(path) is not None
    if dataset == "kitti":
        from slam.io.kitti import is_kitti_sequence

        return is_kitti_sequence(path)
    raise ValueError(f"unknown dataset {dataset!r}")


def candidates(dataset: str, folder: str, root: Path) -> list[Path]:
    """Folders under one data root where a sequence of ``dataset`` with manifest ``folder`` may be."""
    if dataset == "euroc":
        out = [root / folder, root / "euroc" / folder] + [root / room / folder for room in _EUROC_ROOMS]
        if root.name == folder:
            out.insert(0, root)
        return out
    seq = Path(folder).name  # "sequences/07" -> "07"
    out = [root / folder, root / "dataset" / folder, root / "kitti" / "dataset" / folder, root / "kitti" / folder]
    if root.name == seq and root.parent.name == "sequences":
        out.insert(0, root)
    return out


def _marker(dataset: str, folder: str) -> str:
    if dataset == "euroc":
        return f"{folder}/mav0/cam0/data.csv"
    return f"{folder}/calib.txt, times.txt and image_0/ (or image_2/)"


def not_found_message(info, tried: list[tuple[Path, str, str]], target_root: Path) -> str:
    """The message of InputError for a EuRoC or KITTI sequence: where it looked, how to get it."""
    lines = [f"sequence {info.name} not found: no {_marker(info.dataset, info.folder)} under any data root. Looked in:"]
    for path, label, note in tried:
        lines.append(f"  {path}  ({label}){'  <- ' + note if note else ''}")
    extra = info.extra or {}
    if info.dataset == "euroc":
        dest = target_root / info.folder
        lines.append("To get it, either")
        lines.append(f"  - run `python -m slam download {info.name}` (add --data-root DIR to choose where), or")
        if info.url:
            lines.append(f"  - download {info.url} and unpack it with `unzip {Path(info.url).name} -d {dest}`, "
                         f"so that {dest / 'mav0' / 'cam0' / 'data.csv'} exists, or")
        lines.append(f"  - pass --data-root DIR (or set SLAM_DATA=DIR) where DIR/{info.folder}/mav0 already exists.")
        if extra.get("mirror"):
            lines.append(f"  If the ETH server does not answer, the dataset is kept at {extra['mirror']}")
    else:
        lines.append("To get it: KITTI distributes all 22 sequences in one archive (registration at "
                     f"{extra.get('page', 'the KITTI odometry page')}). Download")
        lines.append(f"    {info.url} (grey, about 22 GB) or {extra.get('color_url', 'the colour archive')} (colour, about 65 GB),")
        lines.append(f"    {extra.get('calib_url', 'the calibration archive')} and {extra.get('poses_url', 'the poses archive')},")
        lines.append(f"  unzip them all into one folder DIR (each unpacks into DIR/dataset/), so that "
                     f"DIR/dataset/{info.folder}/calib.txt exists, and pass --data-root DIR/dataset (or set SLAM_DATA).")
    return "\n".join(lines)


def find_unlisted(name: str, roots: list[tuple[Path, str]]) -> Optional[tuple[str, Path]]:
    """``euroc/<name>`` with no manifest: (dataset, folder) of the first EuRoC folder
    ``<root>/<name>`` or ``<root>/euroc/<name>``, else None."""
    if not name.startswith("euroc/") or "/" in name[6:] or not name[6:]:
        return None
    stem = name[6:]
    for root, _label in roots:
        for cand in ([root] if root.name == stem else []) + [root / stem, root / "euroc" / stem]:
            if is_dataset_folder(cand, "euroc"):
                return "euroc", cand
    return None


def _safe_unzip(archive: Path, dest: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{archive}: not a readable zip archive ({exc}); delete it and download again") from exc
    with zf:
        for m in zf.infolist():
            parts = Path(m.filename).parts
            if m.filename.startswith(("/", "\\")) or ".." in parts or (len(m.filename) > 1 and m.filename[1] == ":"):
                raise InputError(f"{archive}: refusing path {m.filename!r} that leaves the destination")
            if stat.S_ISLNK(m.external_attr >> 16):
                raise InputError(f"{archive}: refusing symbolic link {m.filename!r}")
        try:
            zf.extractall(dest)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InputError(f"{archive}: extraction failed ({exc}); delete it and download again") from exc


def download_archive(info, root: Path, url: str, timeout: float, keep_archive: bool, progress: bool, out: TextIO,
                     fetch: Callable[[str, Path, float, bool, TextIO], None]) -> int:
    """``python -m slam download`` for EuRoC (fetch and unzip into ``<root>/<name>``) and KITTI
    (print what to fetch by hand). ``fetch(url, part_file, timeout, progress, out)`` streams the
    archive (slam.io.sequences passes its resuming downloader). Returns 0 on success or when
    present, 1 when the download fails or must be done by hand, 2 for a bad archive."""
    if info.dataset == "kitti":
        existing = next((c for c in candidates("kitti", info.folder, root) if is_dataset_folder(c, "kitti")), None)
        if existing is not None:
            out.write(f"{info.name} is already present at {existing}\n")
            return 0
        out.write(not_found_message(info, [], root).split("\n", 1)[1].replace("Looked in:\n", "") + "\n")
        return 1
    target = root / info.folder
    if is_dataset_folder(target, "euroc"):
        out.write(f"{info.name} is already present at {target}\n")
        return 0
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        out.write(f"error: cannot create data root {root} ({exc}); pass --data-root DIR with a writable folder\n")
        return 2
    archive = root / f"{info.folder}.zip"
    part = root / f"{info.folder}.zip.part"
    if not archive.is_file():
        out.write(f"downloading {url}\n       into {archive}\n")
        try:
            fetch(url, part, timeout, progress, out)
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            out.write(f"\nerror: could not download {url}: {reason}\n")
            if part.exists():
                out.write(f"(the partial file {part} is kept; running the command again resumes it)\n")
            mirror = (info.extra or {}).get("mirror")
            out.write(f"Fetch {url} on a machine with network access"
                      + (f" (or the sequence's zip from {mirror})" if mirror else "")
                      + f", then unpack it here with `unzip {info.folder}.zip -d {target}` so that "
                      f"{target / 'mav0' / 'cam0' / 'data.csv'} exists.\n")
            return 1
        os.replace(part, archive)
    out.write(f"unpacking {archive.name} into {target}\n")
    try:
        _safe_unzip(archive, target)
    except InputError as exc:
        out.write(f"error: {exc}\n")
        return 2
    nested = target / info.folder / "mav0"
    if not (target / "mav0").is_dir() and nested.is_dir():  # a zip that holds <name>/mav0
        shutil.move(str(nested), str(target / "mav0"))
    if not is_dataset_folder(target, "euroc"):
        out.write(f"error: {archive} did not contain mav0/cam0/data.csv; it is not a EuRoC sequence in the ASL "
                  f"layout (delete it and download {info.url} again)\n")
        return 2
    if not keep_archive:
        archive.unlink(missing_ok=True)
    out.write(f"{info.name} ready at {target}\n")
    return 0
