"""A frame source wrapper that blacks out a stretch of frames: a forced tracking loss (lens
covered, camera dropped to black), to test relocalisation.

``Blackout(source, start, count)`` yields the frames of ``source`` unchanged, except those
whose 0-based position in the stream is in ``[start, start + count)``: their image (and right
image) are all zeros, their depth (RGB-D) all zeros (= invalid). Timestamps and indices stay.
It records the timestamps it yields, so a caller in the same process can tell how many frames
after the images return tracking needed to recover (:func:`recovery_frames`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from slam.errors import InputError

__all__ = ["Blackout", "parse_blackout", "recovery_frames"]


def parse_blackout(text: str) -> tuple[int, int]:
    """"START:COUNT" -> (start, count), both >= 0 / >= 1; InputError naming the fix otherwise."""
    try:
        a, b = text.split(":")
        start, count = int(a), int(b)
    except ValueError:
        raise InputError(f"blackout {text!r}: expected START:COUNT, e.g. 100:20 (frames 100-119 black)") from None
    if start < 0 or count < 1:
        raise InputError(f"blackout {text!r}: START must be >= 0 and COUNT >= 1")
    return start, count


class Blackout:
    def __init__(self, source: Iterable, start: int, count: int) -> None:
        if start < 0 or count < 1:
            raise ValueError(f"Blackout needs start >= 0 and count >= 1, got {start}, {count}")
        self.source = source
        self.start = start
        self.count = count
        #: timestamps (s) of every frame yielded so far, in order
        self.timestamps: list[float] = []

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        self.timestamps = []
        for pos, fr in enumerate(self.source):
            self.timestamps.append(float(fr.timestamp))
            if self.start <= pos < self.start + self.count:
                fr = replace(fr, image=np.zeros_like(fr.image), features=None,
                             depth=None if fr.depth is None else np.zeros_like(fr.depth),
                             image_right=None if fr.image_right is None else np.zeros_like(fr.image_right))
            yield fr

    @property
    def return_timestamp(self) -> Optional[float]:
        """Timestamp of the first frame after the black stretch (None if not reached)."""
        i = self.start + self.count
        return self.timestamps[i] if i < len(self.timestamps) else None


def recovery_frames(stream_timestamps: Sequence[float], tracked_timestamps: Sequence[float], start: int, count: int,
                    tol: float = 1e-4) -> Optional[int]:
    """Frames after the images return (position start + count of the stream, whose timestamps
    are stream_timestamps (F,) s) until the first tracked one (tracked_timestamps (T,) s):
    0 = tracked at once; None = never tracked again."""
    ts = np.asarray(stream_timestamps, dtype=np.float64)
    tracked = np.asarray(tracked_timestamps, dtype=np.float64)
    for k, t in enumerate(ts[start + count:]):
        if len(tracked) and np.min(np.abs(tracked - t)) < tol:
            return k
    return None
