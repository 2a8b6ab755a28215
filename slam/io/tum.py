"""TUM RGB-D dataset reader.

A TUM RGB-D sequence folder holds ``rgb.txt`` and ``depth.txt`` (``timestamp filename`` per
line), the images they name, and usually ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``,
``world_from_cam`` of the colour camera's optical frame). Colour and depth are recorded
independently; :func:`associate` pairs them by timestamp exactly as TUM's ``associate.py`` does
(greedy, closest pairs first, each stamp used once, ``|t_rgb - (t_depth + offset)| < 0.02 s``).

Depth PNGs are 16-bit, ``depth_m = value / depth_factor`` (5000 for every TUM sequence), 0 means
"no measurement". Colour images are read as whatever file ``rgb.txt`` names (png or jpg).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import cv2
import numpy as np

from slam.errors import InputError
from slam.io.base import LockedReader, read_image
from slam.io.trajectory import format_timestamp, read_tum
from slam.types import Frame

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["InputError", "read_file_list", "write_file_list", "encode_depth", "associate", "TUMReader",
           "read_groundtruth", "MAX_DIFFERENCE"]

MAX_DIFFERENCE = 0.02  # seconds, TUM associate.py default


def read_file_list(path: PathLike) -> list[tuple[float, list[str]]]:
    """Parse a TUM list file (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``, ...).

    Returns ``[(timestamp_s, [field, ...]), ...]`` sorted by timestamp; fields are the remaining
    whitespace/comma separated tokens of the line. ``#`` comments and blank lines are skipped.
    Raises InputError naming the file and line number for a line whose first token is not a
    number or that has no data after the timestamp.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found; a TUM sequence folder must contain it")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as text ({exc})") from exc
    out: list[tuple[float, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = s.replace(",", " ").replace("\t", " ").split()
        try:
            stamp = float(fields[0])
        except ValueError:
            raise InputError(
                f"{path}:{lineno}: first column {fields[0]!r} is not a timestamp; "
                f"expected 'timestamp data...' per line: {s!r}"
            ) from None
        if not np.isfinite(stamp):
            raise InputError(f"{path}:{lineno}: timestamp {fields[0]!r} is not finite")
        if len(fields) < 2:
            raise InputError(f"{path}:{lineno}: no data after the timestamp: {s!r}")
        out.append((stamp, fields[1:]))
    out.sort(key=lambda e: e[0])
    return out


def write_file_list(path: PathLike, timestamps: Sequence[float], names: Sequence[str],
                    comments: Sequence[str] = ()) -> None:
    """Write a TUM list file (``rgb.txt``, ``depth.txt``): ``# comment`` lines, then
    ``timestamp name`` per line, timestamps (seconds) in the shortest exact form of
    :func:`slam.io.trajectory.format_timestamp`. :func:`read_file_list` reads it back exactly."""
    if len(timestamps) != len(names):
        raise ValueError(f"{len(timestamps)} timestamps for {len(names)} file names")
    lines = [f"# {c}" for c in comments]
    lines += [f"{format_timestamp(t)} {name}" for t, name in zip(timestamps, names)]
    Path(path).write_text("\n".join(lines) + "\n")


def encode_depth(depth_m: np.ndarray, depth_factor: float = 5000.0) -> np.ndarray:
    """(H, W) float depth in metres (0 = invalid) -> (H, W) uint16 PNG values as TUM stores them
    (``round(depth * depth_factor)``, saturated to 0..65535); :class:`TUMReader` divides by
    ``depth_factor`` again."""
    return np.clip(np.round(depth_m * depth_factor), 0, 65535).astype(np.uint16)


def _stamps(seq) -> np.ndarray:
    """Timestamps from a list of floats, of (t, fields) tuples, or a dict keyed by timestamp."""
    if isinstance(seq, dict):
        seq = list(seq.keys())
    seq = list(seq)
    if seq and isinstance(seq[0], (tuple, list)):
        seq = [e[0] for e in seq]
    return np.asarray(seq, dtype=np.float64).reshape(-1)


def associate(
    first: Sequence,
    second: Sequence,
    max_difference: float = MAX_DIFFERENCE,
    offset: float = 0.0,
) -> list[tuple[float, float]]:
    """Match two timestamp lists as TUM's ``associate.py``.

    first, second: timestamps in seconds, given as floats, ``(t, fields)`` tuples (as returned by
    :func:`read_file_list`) or dicts keyed by timestamp.
    Candidate pairs are all (a, b) with ``|a - (b + offset)| < max_difference``; they are taken
    greedily in order of increasing difference, each timestamp at most once.
    Returns ``[(t_first, t_second), ...]`` sorted by ``t_first`` (t_second without the offset).
    """
    a = _stamps(first)
    b = _stamps(second)
    if len(a) == 0 or len(b) == 0:
        return []
    order_b = np.argsort(b, kind="stable")
    b_sorted = b[order_b] + offset
    lo = np.searchsorted(b_sorted, a - max_difference, side="left")
    hi = np.searchsorted(b_sorted, a + max_difference, side="right")
    candidates: list[tuple[float, float, float, int, int]] = []
    for i in range(len(a)):
        for k in range(int(lo[i]), int(hi[i])):
            diff = abs(a[i] - b_sorted[k])
            if diff < max_difference:
                j = int(order_b[k])
                # tie-break like associate.py, which sorts (diff, a, b) tuples
                candidates.append((diff, a[i], b[j], i, j))
    candidates.sort()
    used_a: set[int] = set()
    used_b: set[int] = set()
    matches: list[tuple[float, float]] = []
    for diff, ta, tb, i, j in candidates:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        matches.append((float(ta), float(tb)))
    matches.sort()
    return matches


def read_groundtruth(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM ``groundtruth.txt`` -> (timestamps (N,) s, world_from_cam (N, 4, 4) float64).

    Sorted by timestamp. Quaternions are normalised (the file stores 4 decimals).
    """
    ts, poses = read_tum(path)
    order = np.argsort(ts, kind="stable")
    return ts[order], poses[order]


class TUMReader(LockedReader):
    """Iterate over the colour(+depth) frames of a TUM RGB-D sequence folder.

    folder:         sequence folder containing ``rgb.txt`` (and ``depth.txt`` when use_depth).
    depth_factor:   raw depth units per metre (5000 for TUM).
    use_depth:      pair each colour frame with the depth image closest in time (RGB-D);
                    False gives monocular frames (``depth=None``) for every line of rgb.txt.
    max_frames:     stop after this many selected frames (0 = all).
    start, stride:  take associated frames ``start, start+stride, ...``.
    max_difference: association threshold in seconds (TUM: 0.02).
    check_depth:    with use_depth, check the depth format on the first frame
                    (:meth:`check_depth_format`; InputError naming the file when it is wrong).
    right_list:     stereo: a file list beside rgb.txt (e.g. "rgb_right.txt", the synthetic stereo
                    profile) whose images become ``Frame.image_right``, paired by equal
                    timestamp; a colour frame without a right image is skipped.

    ``len(reader)`` is the number of selected frames; iteration yields :class:`slam.types.Frame`
    with ``index`` = position in the selection (0..len-1), ``timestamp`` = colour timestamp (s),
    ``image`` (H, W, 3) uint8 BGR, ``depth`` (H, W) float32 metres (0 = invalid) or None, and
    ``path`` = colour image path. A frame whose image is missing or cannot be decoded is skipped
    with a logged warning; its index is not reused (the gap stays) and it is counted in
    ``n_skipped`` / recorded in ``skipped`` as ``(index, path, reason)``.
    ``read(i)`` loads frame i alone (thread-safe; cv2 decoding releases the GIL) for prefetching.
    """

    def __init__(
        self,
        folder: PathLike,
        depth_factor: float = 5000.0,
        use_depth: bool = True,
        max_frames: int = 0,
        start: int = 0,
        stride: int = 1,
        max_difference: float = MAX_DIFFERENCE,
        check_depth: bool = True,
        right_list: Optional[str] = None,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(
                f"{self.folder}: TUM sequence folder not found; download it from "
                "https://cvg.cit.tum.de/data/datasets/rgbd-dataset/download and unpack it, or use "
                "`python -m slam download tum/<name>`"
            )
        rgb_txt = self.folder / "rgb.txt"
        if not rgb_txt.is_file():
            raise InputError(
                f"{rgb_txt}: not found; {self.folder} is not a TUM RGB-D sequence folder "
                "(it must contain rgb.txt, depth.txt and the rgb/ and depth/ images; "
                "was the archive fully unpacked?)"
            )
        if depth_factor <= 0:
            raise ValueError(f"depth_factor must be > 0, got {depth_factor}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if start < 0 or max_frames < 0:
            raise ValueError(f"start and max_frames must be >= 0, got start={start}, max_frames={max_frames}")
        self.depth_factor = float(depth_factor)
        self.use_depth = bool(use_depth)
        rgb = read_file_list(rgb_txt)
        if not rgb:
            raise InputError(f"{rgb_txt}: lists no images")
        rgb_by_t = {t: f[0] for t, f in rgb}
        entries: list[tuple[float, str, Optional[str]]]
        if self.use_depth:
            depth_txt = self.folder / "depth.txt"
            if not depth_txt.is_file():
                raise InputError(
                    f"{depth_txt}: not found; RGB-D needs depth.txt and the depth images it names; run monocular with --mode mono"
                )
            depth = read_file_list(depth_txt)
            depth_by_t = {t: f[0] for t, f in depth}
            pairs = associate(rgb, depth, max_difference)
            if not pairs:
                raise InputError(
                    f"{self.folder}: no colour/depth pairs within {max_difference} s; "
                    "check that rgb.txt and depth.txt use the same clock"
                )
            entries = [(ta, rgb_by_t[ta], depth_by_t[tb]) for ta, tb in pairs]
            self.n_unassociated = len(rgb) - len(pairs)
        else:
            entries = [(t, f[0], None) for t, f in rgb]
            self.n_unassociated = 0
        self._right: Optional[dict] = None
        if right_list is not None:
            right_txt = self.folder / right_list
            if not right_txt.is_file():
                raise InputError(f"{right_txt}: not found; stereo needs the right images' list beside rgb.txt "
                                 "(render the sequence again, or run --mode mono)")
            self._right = {t: f[0] for t, f in read_file_list(right_txt)}
            entries = [e for e in entries if e[0] in self._right]
            if not entries:
                raise InputError(f"{right_txt}: no timestamp in common with rgb.txt; both lists must use the same clock")
        entries = entries[start::stride]
        if max_frames > 0:
            entries = entries[:max_frames]
        self._entries = entries
        self._lock = threading.Lock()
        self.n_skipped = 0
        self.skipped: list[tuple[int, str, str]] = []
        if self.use_depth and check_depth:
            self.check_depth_format()

    # ------------------------------------------------------------------ info

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def timestamps(self) -> np.ndarray:
        """(N,) float64 colour timestamps (s) of the selected frames."""
        return np.array([e[0] for e in self._entries], dtype=np.float64)

    @property
    def rgb_paths(self) -> list[Path]:
        return [self.folder / e[1] for e in self._entries]

    @property
    def depth_paths(self) -> list[Optional[Path]]:
        return [self.folder / e[2] if e[2] is not None else None for e in self._entries]

    @property
    def groundtruth_path(self) -> Optional[Path]:
        """``<folder>/groundtruth.txt`` if it exists, else None."""
        p = self.folder / "groundtruth.txt"
        return p if p.is_file() else None

    # ------------------------------------------------------------------ reading

    def _skip(self, index: int, path: Path, reason: str) -> None:
        log.warning("skipping frame %d (%s): %s", index, path, reason)
        with self._lock:
            self.n_skipped += 1
            self.skipped.append((index, str(path), reason))

    def read(self, index: int) -> Optional[Frame]:
        """Load selected frame ``index``; None (and counted as skipped) if an image is unusable."""
        t, rgb_name, depth_name = self._entries[index]
        rgb_path = self.folder / rgb_name
        image, why = read_image(rgb_path, cv2.IMREAD_COLOR)
        if image is None:
            self._skip(index, rgb_path, f"colour image {why}")
            return None
        depth_m = None
        if depth_name is not None:
            depth_path = self.folder / depth_name
            raw, why = read_image(depth_path, cv2.IMREAD_UNCHANGED)
            if raw is None:
                self._skip(index, depth_path, f"depth image {why}")
                return None
            if raw.ndim != 2:
                self._skip(index, depth_path, f"depth image has {raw.shape[2]} channels, expected 1 (16-bit)")
                return None
            if raw.shape != image.shape[:2]:
                self._skip(
                    index, depth_path, f"depth size {raw.shape[::-1]} differs from colour size {image.shape[1::-1]}"
                )
                return None
            depth_m = raw.astype(np.float32)
            depth_m *= np.float32(1.0 / self.depth_factor)
            if np.issubdtype(raw.dtype, np.floating):  # float depth maps may hold NaN for "invalid"
                depth_m[~np.isfinite(depth_m)] = 0.0
        right = None
        if self._right is not None:
            right_path = self.folder / self._right[t]
            right = cv2.imread(str(right_path), cv2.IMREAD_COLOR) if right_path.is_file() else None
            if right is None or right.shape != image.shape:
                self._skip(index, right_path, "right image missing, unreadable or of another size than the left one")
                return None
        return Frame(index=index, timestamp=float(t), image=image, depth=depth_m, path=str(rgb_path), image_right=right)

    def check_depth_format(self, tries: int = 5) -> None:
        """Check the depth images against the colour images on the first selected frame whose
        two images decode (of the first ``tries``): one channel, 16-bit integer (or float),
        the colour image's size, and a plausible scale (median valid depth 0.05..100 m with
        ``depth_factor``). Raises InputError naming the depth file and the fix; run by the
        constructor when ``use_depth``, so a run fails before it starts instead of tracking nothing."""
        for t, rgb_name, depth_name in self._entries[:tries]:
            if depth_name is None:
                return
            depth_path, rgb_path = self.folder / depth_name, self.folder / rgb_name
            raw, _ = read_image(depth_path, cv2.IMREAD_UNCHANGED)
            image, _ = read_image(rgb_path, cv2.IMREAD_COLOR)
            if raw is None or image is None:
                continue  # skipped with a warning when read
            mono = "or run monocular with --mode mono"
            if raw.ndim != 2:
                raise InputError(f"{depth_path}: depth image has {raw.shape[2]} channels; TUM depth is a single-channel "
                                 f"16-bit PNG (value / {self.depth_factor:g} = metres); re-export it, {mono}")
            if raw.dtype not in (np.uint16, np.float32, np.float64):
                raise InputError(f"{depth_path}: depth image is {raw.dtype.itemsize * 8}-bit {raw.dtype}; TUM depth is a 16-bit "
                                 f"PNG (value / {self.depth_factor:g} = metres) and an 8-bit image has lost the depth; "
                                 f"re-export it as 16-bit, {mono}")
            if raw.shape != image.shape[:2]:
                raise InputError(f"{depth_path}: depth image is {raw.shape[1]}x{raw.shape[0]} but the colour image {rgb_path} "
                                 f"is {image.shape[1]}x{image.shape[0]}; the depth must be registered to the colour image "
                                 f"at the same size, {mono}")
            valid = raw[np.isfinite(raw) & (raw > 0)] if raw.dtype.kind == "f" else raw[raw > 0]
            if valid.size < 0.01 * raw.size:
                raise InputError(f"{depth_path}: {valid.size} of {raw.size} depth pixels are valid (non-zero) on the first "
                                 f"frame; check that depth.txt names the depth images, {mono}")
            median_m = float(np.median(valid)) / self.depth_factor
            if not 0.05 <= median_m <= 100.0:
                raise InputError(f"{depth_path}: median depth {median_m:.4g} m with depth_factor {self.depth_factor:g} "
                                 f"(value / depth_factor = metres) is implausible; set depth_factor to the file's units "
                                 f"per metre (5000 for TUM, 1000 for millimetres, 1 for metres; `depth_factor:` in the "
                                 f"camera YAML), {mono}")
            return

    def __iter__(self) -> Iterator[Frame]:
        with self._lock:
            self.n_skipped = 0
            self.skipped = []
        for i in range(len(self._entries)):
            frame = self.read(i)
            if frame is not None:
                yield frame
        if self.n_skipped:
            log.warning("%s: skipped %d of %d frames (missing or corrupt images)", self.folder, self.n_skipped, len(self))

    def __repr__(self) -> str:
        return f"TUMReader({str(self.folder)!r}, frames={len(self)}, depth={self.use_depth})"
