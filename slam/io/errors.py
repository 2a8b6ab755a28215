"""Exceptions raised by the dataset readers and writers in :mod:`slam.io`.

All of them subclass :class:`ValueError` so that callers who only want "bad input" can catch one
type; the messages always name the offending file (and line, where there is one) and the fix.
"""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset or trajectory file is missing, unreadable or malformed."""


class SequenceError(DatasetError):
    """A sequence name is unknown or its manifest is invalid."""


class SequenceNotFoundError(SequenceError):
    """A known sequence whose data folder is not on disk; the message says where it looked."""
