"""Declared ranges of configuration values.

A config dataclass declares a value's valid range where it declares its default::

    n_features: int = param(1000, ge=1)
    precision: str = param("auto", choices=("auto", "fp32", "fp16", "bf16"))

:func:`check_params` walks a dataclass tree and raises :class:`slam.errors.ConfigError` naming the
dotted key, the value and what is valid. ``slam.config.Config.validate`` calls it on the whole
configuration, so a bad value is reported before anything runs. Light: no torch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

from slam.errors import ConfigError

__all__ = ["param", "check_params"]


def param(default: Any = dataclasses.MISSING, *, factory: Optional[Callable[[], Any]] = None,
          ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
          lt: Optional[float] = None, choices: Optional[Sequence[Any]] = None) -> Any:
    """A dataclass field with a declared range (``ge``/``gt``/``le``/``lt`` bounds for numbers,
    ``choices`` for any value; for a list, every element is checked)."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("choices", tuple(choices) if choices is not None else None)) if v is not None}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(meta: dict) -> str:
    parts = []
    for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in meta:
            parts.append(f"{word} {meta[key]}")
    return " and ".join(parts)


def _check_value(key: str, value: Any, meta: dict) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(map(str, choices))}")
    bounds = {k: meta[k] for k in ("ge", "gt", "le", "lt") if k in meta}
    if not bounds or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        raise ConfigError(f"{key}={value!r} is not a number; it must be {_describe(meta)}")
    ok = (value >= bounds.get("ge", -math.inf) and value > bounds.get("gt", -math.inf)
          and value <= bounds.get("le", math.inf) and value < bounds.get("lt", math.inf))
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range; it must be {_describe(meta)}")


def check_params(obj: Any, prefix: str = "") -> None:
    """Check every declared range in the dataclass tree ``obj``; ConfigError on the first bad value."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_params(value, f"{key}.")
            continue
        if not f.metadata:
            continue
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            _check_value(key, v, dict(f.metadata))
