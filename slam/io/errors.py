"""Exceptions raised by the dataset readers and writers in :mod:`slam.io` (and LockedReader,
the picklable base of readers that hold a lock).

The exceptions all subclass :class:`ValueError` so that callers who only want "bad input" can catch one
type; the messages always name the offending file (and line, where there is one) and the fix.
"""
from __future__ import annotations

import threading


class DatasetError(ValueError):
    """A dataset or trajectory file is missing, unreadable or malformed."""


class SequenceError(DatasetError):
    """A sequence name is unknown or its manifest is invalid."""


class SequenceNotFoundError(SequenceError):
    """A known sequence whose data folder is not on disk; the message says where it looked."""


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
