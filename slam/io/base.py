"""What the dataset readers share: :class:`LockedReader`, the picklable base of readers that
hold a lock, and :func:`read_image`, which decodes an image file or says what is wrong with it
(a JPEG or PNG cut short is refused before decoding, so the decoder's own anonymous warning,
e.g. libjpeg's "Premature end of JPEG file", never appears). Reader errors are
:class:`slam.errors.InputError`, whose messages name the offending file (and line, where there
is one) and the fix."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class LockedReader:
    """Base of readers that keep a ``threading.Lock`` in ``self._lock``: picklable (so a feature
    process can read them), with a fresh lock on the other side."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def truncation(data: bytes) -> str:
    """Why an encoded JPEG or PNG is incomplete ("" when it looks whole, or is another format).
    A JPEG must end with its end-of-image marker (trailing zero padding allowed), a PNG with
    its IEND chunk."""
    head = bytes(data[:8])
    if head[:2] == _JPEG_SOI:
        tail = bytes(data[-4096:]).rstrip(b"\x00")
        if not tail.endswith(_JPEG_EOI):
            return "truncated JPEG (no end-of-image marker): the file was cut short"
    elif head == _PNG_SIGNATURE:
        if b"IEND" not in bytes(data[-64:]):
            return "truncated PNG (no IEND chunk): the file was cut short"
    return ""


def read_image(path: Union[str, Path], flags: int = cv2.IMREAD_COLOR) -> tuple[Optional[np.ndarray], str]:
    """Decode the image file ``path`` with OpenCV ``flags``.

    Returns ``(image, "")`` (as ``cv2.imread`` would give it: (H, W, 3) uint8 BGR for
    IMREAD_COLOR; (H, W) or (H, W, C) of the file's own dtype for IMREAD_UNCHANGED), or
    ``(None, reason)`` with reason one of: missing, unreadable, empty, truncated JPEG/PNG, not
    decodable. The caller names the file when it reports the reason."""
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        return None, "missing"
    except (IsADirectoryError, PermissionError, OSError) as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if data.size == 0:
        return None, "empty file (0 bytes)"
    cut = truncation(data)
    if cut:
        return None, cut
    image = cv2.imdecode(data, flags)
    if image is None or image.size == 0:
        return None, "cannot be decoded (corrupt, or not an image)"
    return image, ""
