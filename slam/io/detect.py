"""What a ``--seq`` path holds: TUM, EuRoC, KITTI, an image folder or a video.

:func:`detect_layout` looks, in this order, for

- ``rgb.txt`` -> TUM RGB-D layout,
- ``mav0/cam0/data.csv`` (or ``cam0/data.csv`` in ``mav0`` itself) -> EuRoC (ASL) layout,
- ``calib.txt`` + ``times.txt`` + ``image_0/`` .. ``image_3/`` -> KITTI odometry ``sequences/XX``,
- image files (png, jpg, jpeg, bmp) directly in the folder -> image folder,
- a file with a video extension -> video,

and raises InputError listing what it looked for when none matches. A dataset root holding
several sequences (``.../euroc`` with ``V1_01_easy/mav0``, or ``.../dataset`` with
``sequences/07``) is not guessed: the error names the sequences found and how to pick one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from slam.errors import InputError

__all__ = ["Layout", "LAYOUTS", "VIDEO_EXTENSIONS", "detect_layout", "describe"]

LAYOUTS = ("tum", "euroc", "kitti", "images", "video")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".ogv")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_LOOKED_FOR = ("rgb.txt (TUM), mav0/cam0/data.csv (EuRoC), calib.txt + times.txt + image_0/ (KITTI sequences/XX), "
               "*.png/*.jpg/*.jpeg/*.bmp files (image folder) or a video file (" + ", ".join(VIDEO_EXTENSIONS[:5]) + ", ...)")

_NAMES = {"tum": "TUM RGB-D", "euroc": "EuRoC (ASL)", "kitti": "KITTI odometry", "images": "image folder", "video": "video"}


@dataclass(frozen=True)
class Layout:
    """kind: one of LAYOUTS; path: what to open (EuRoC: the folder holding ``mav0``; KITTI:
    ``sequences/XX``; otherwise the folder or file given); evidence: what identified it."""

    kind: str
    path: Path
    evidence: str


def describe(layout: Layout) -> str:
    """One line for the user: which layout was chosen and why."""
    return f"{layout.path}: {_NAMES[layout.kind]} layout (found {layout.evidence})"


def _subsequences(path: Path) -> tuple[str, list[Path]]:
    """Sequences one level below a dataset root, to name them in the error."""
    from slam.io.euroc import find_mav0
    from slam.io.kitti import is_kitti_sequence

    found = sorted(p for p in path.iterdir() if p.is_dir() and find_mav0(p) is not None and p.name != "mav0")
    if found:
        return "euroc", found
    for seqdir in (path, path / "sequences", path / "dataset" / "sequences"):
        if seqdir.is_dir():
            ks = sorted(p for p in seqdir.iterdir() if is_kitti_sequence(p))
            if ks:
                return "kitti", ks
    tum = sorted(p for p in path.iterdir() if p.is_dir() and (p / "rgb.txt").is_file())
    return ("tum", tum) if tum else ("", [])


def detect_layout(path: Union[str, Path]) -> Layout:
    """Classify ``path`` (see the module docstring). Raises InputError naming the path and what
    it looked for when it is missing or none of the layouts matches."""
    from slam.io.euroc import find_mav0
    from slam.io.kitti import is_kitti_sequence

    path = Path(path)
    if not path.exists():
        raise InputError(
            f"{path}: no such file or folder; pass a sequence name (tum/<name>, euroc/<name>, kitti/<XX>, "
            "synthetic/<profile>; list them with `python -m slam sequences`) or an existing path"
        )
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return Layout("video", path, f"a {suffix} file")
        if suffix in _IMAGE_EXTENSIONS:
            raise InputError(f"{path}: a single image; pass the folder that holds the sequence's images")
        raise InputError(f"{path}: cannot tell what this file holds; --seq takes a folder with {_LOOKED_FOR}")
    if (path / "rgb.txt").is_file():
        return Layout("tum", path, "rgb.txt")
    mav0 = find_mav0(path)
    if mav0 is not None:
        folder = mav0.parent if mav0.name == "mav0" and mav0 != path else mav0
        return Layout("euroc", folder, "mav0/cam0/data.csv" if mav0 != path else "cam0/data.csv")
    if is_kitti_sequence(path):
        image_dirs = "/".join(f"image_{i}" for i in range(4) if (path / f"image_{i}").is_dir())
        return Layout("kitti", path, f"calib.txt, times.txt and {image_dirs}/")
    try:
        has_images = any(p.suffix.lower() in _IMAGE_EXTENSIONS for p in path.iterdir() if p.is_file())
    except OSError as exc:
        raise InputError(f"{path}: cannot be listed ({exc}); check its permissions") from exc
    if has_images:
        return Layout("images", path, "image files")
    kind, found = _subsequences(path)
    if found:
        names = ", ".join(p.name for p in found[:6]) + (", ..." if len(found) > 6 else "")
        hint = {"euroc": f"--seq euroc/{found[0].name} --data-root {path}", "kitti": f"--seq kitti/{found[0].name} --data-root {found[0].parent.parent}" if found[0].parent.name == "sequences"
                else f"--seq {found[0]}",
                "tum": f"--seq {found[0]}"}[kind]
        raise InputError(
            f"{path}: is a folder of {_NAMES[kind]} sequences ({names}), not a sequence itself; pass one of them, e.g. {hint}"
        )
    raise InputError(f"{path}: cannot tell what this folder holds; looked for {_LOOKED_FOR}")
