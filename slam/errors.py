"""The project's errors: one root, :class:`SlamError`, and four kinds.

Every error a user can cause or fix (bad input, a bad setting, missing weights, a missing
device) is a :class:`SlamError`. Its message is one line that names the file, key or value at
fault and says what to do; the command line prints it and exits with code 2, without a
traceback. Anything else escaping a command is a bug and keeps its traceback.

The subclasses also derive from the matching built-in error (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so code that catches those keeps working.
"""
from __future__ import annotations

__all__ = ["SlamError", "InputError", "ConfigError", "WeightsError", "DeviceError"]


class SlamError(Exception):
    """Root of every error a user can fix; the message says how."""


class InputError(SlamError, ValueError):
    """Bad input: a missing, unreadable or malformed dataset, image, trajectory, calibration or
    command-line value."""


class ConfigError(SlamError, ValueError):
    """A bad configuration key or value; the message says what is valid."""


class WeightsError(SlamError, RuntimeError):
    """Network weights are missing, unknown, corrupt or do not fit the network."""


class DeviceError(SlamError, RuntimeError):
    """Something the run needs from the machine is not there: a CUDA GPU, a camera, a display."""
