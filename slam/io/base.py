"""What the dataset readers share: :class:`LockedReader`, the picklable base of readers that
hold a lock. Their errors are :class:`slam.errors.InputError`, whose messages name the
offending file (and line, where there is one) and the fix."""
from __future__ import annotations

import threading


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
