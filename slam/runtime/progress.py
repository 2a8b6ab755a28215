"""Single-line terminal progress display for dataset runs.

On a TTY the line is redrawn in place with a carriage return, at most ``refresh_hz`` times a
second. When the stream is not a TTY (a log file, CI, a pipe) nothing is drawn; instead one
log line is written every ``log_interval_s`` seconds through the ``slam.progress`` logger.

The display is fed by the pipeline's main thread: ``update(done, info)`` where ``info`` is the
dict returned by the caller's ``progress_fn()``. Known keys are shown in a fixed order
(``state``, ``keyframes``, ``map_points``, ``dropped``); other keys are appended as ``k=v``.
"""
from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import Any, Optional, TextIO

LOG = logging.getLogger("slam.progress")

_SHORT = {"keyframes": "KF", "map_points": "MP", "dropped": "drop", "queues": "q"}


def format_progress(done: int, total: Optional[int], fps: float, info: Optional[dict[str, Any]] = None) -> str:
    """Render the progress text (no carriage return), e.g.
    ``[ 120/798  15%] 14.8 fps | OK | KF 12 | MP 3456``."""
    if total:
        width = len(str(total))
        head = f"[{done:>{width}}/{total} {100.0 * done / total:3.0f}%]"
    else:
        head = f"[{done}]"
    parts = [f"{head} {fps:5.1f} fps"]
    info = dict(info or {})
    state = info.pop("state", None)
    if state is not None:
        parts.append(str(state))
    for key in ("keyframes", "map_points", "dropped"):
        if key in info:
            parts.append(f"{_SHORT[key]} {info.pop(key)}")
    if "queues" in info:
        q = info.pop("queues")
        if isinstance(q, dict):
            parts.append("q " + "/".join(str(v) for v in q.values()))
    for k, v in info.items():
        parts.append(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}")
    return " | ".join(parts)


class ProgressDisplay:
    """Progress line (TTY) or periodic log line (not a TTY).

    total:          number of items expected, or None when unknown (live camera).
    stream:         where the line is drawn (default sys.stdout).
    enabled:        False = silent; None = draw only when ``stream.isatty()``, else log lines.
    log_interval_s: seconds between log lines when not drawing.
    refresh_hz:     maximum redraws per second on a TTY.
    """

    def __init__(
        self,
        total: Optional[int] = None,
        stream: Optional[TextIO] = None,
        enabled: Optional[bool] = None,
        log_interval_s: float = 5.0,
        refresh_hz: float = 10.0,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stdout
        self.silent = enabled is False
        try:
            is_tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            is_tty = False
        self.draw = (not self.silent) and is_tty
        self.log_interval_s = float(log_interval_s)
        self.min_redraw_s = 1.0 / refresh_hz if refresh_hz > 0 else 0.0
        self.logger = logger or LOG
        self._t0 = time.perf_counter()
        self._last_draw = -1e9
        self._last_log = self._t0
        self._last_len = 0
        self._last_text = ""
        self.n_updates = 0

    def update(self, done: int, info: Optional[dict[str, Any]] = None, force: bool = False) -> str:
        """Report progress; returns the text it would show."""
        now = time.perf_counter()
        elapsed = max(now - self._t0, 1e-9)
        text = format_progress(done, self.total, done / elapsed, info)
        self._last_text = text
        if self.silent:
            return text
        if self.draw:
            if force or now - self._last_draw >= self.min_redraw_s:
                cols = shutil.get_terminal_size((120, 20)).columns
                shown = text[: max(cols - 1, 10)]
                pad = max(self._last_len - len(shown), 0)
                self.stream.write("\r" + shown + " " * pad)
                self.stream.flush()
                self._last_len = len(shown)
                self._last_draw = now
                self.n_updates += 1
        elif force or now - self._last_log >= self.log_interval_s:
            self.logger.info("progress %s", text)
            self._last_log = now
            self.n_updates += 1
        return text

    def close(self, done: Optional[int] = None, info: Optional[dict[str, Any]] = None) -> None:
        """Draw the final state and end the line (TTY), or log it once more."""
        if done is not None:
            self.update(done, info, force=True)
        if self.draw and self._last_len:
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0

    def __enter__(self) -> "ProgressDisplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
