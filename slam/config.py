"""Configuration: dataclass defaults beside each component, YAML overrides, key=value overrides.

A config is a tree of dataclasses. ``load_config(paths, overrides)`` starts from the defaults,
applies each YAML file in order, then each ``key=value`` string (dotted keys for nested
sections, e.g. ``tracking.min_inliers=30``). Unknown keys are errors that list the valid keys.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from slam.features.orb import ORBConfig
from slam.features.superpoint import SuperPointConfig
from slam.features.aliked import ALIKEDConfig
from slam.features.disk import DISKConfig
from slam.matching.nn import NNConfig
from slam.matching.superglue import SuperGlueConfig
from slam.matching.lightglue import LightGlueConfig
from slam.matching.loftr.config import LoFTRConfig
from slam.tracking.tracker import TrackingConfig
from slam.mapping.local_mapper import MappingConfig
from slam.runtime.pipeline import RuntimeConfig


class ConfigError(ValueError):
    """A bad configuration key or value; the message says what is valid."""


@dataclass
class OutputConfig:
    root: str = "runs"  # run folders go to <root>/<date>_<sequence>/
    kitti: bool = False  # also write trajectory in KITTI format
    euroc: bool = False  # also write trajectory in EuRoC csv format
    ply: bool = True  # write the map as PLY
    plot: bool = True  # write trajectory/map PNGs at the end


@dataclass
class Config:
    mode: str = "rgbd"  # "rgbd" or "mono"
    features: str = "auto"  # auto | orb | superpoint | aliked | disk (auto: our SuperPoint when its weights ship, else ORB)
    matcher: str = "auto"  # auto | nn | superglue | lightglue (auto: our SuperGlue with SuperPoint, else NN) | loftr (detector-free; `slam match` only for now)
    device: str = "auto"  # auto | cpu | cuda
    max_frames: int = 0  # 0 = all
    start_frame: int = 0
    global_ba: bool = True  # run a global bundle adjustment at the end
    viewer: str = "none"  # none | open3d
    orb: ORBConfig = field(default_factory=ORBConfig)
    superpoint: SuperPointConfig = field(default_factory=SuperPointConfig)
    aliked: ALIKEDConfig = field(default_factory=ALIKEDConfig)
    disk: DISKConfig = field(default_factory=DISKConfig)
    nn: NNConfig = field(default_factory=NNConfig)
    superglue: SuperGlueConfig = field(default_factory=SuperGlueConfig)
    lightglue: LightGlueConfig = field(default_factory=LightGlueConfig)
    loftr: LoFTRConfig = field(default_factory=LoFTRConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> None:
        choices = {
            "mode": ("rgbd", "mono"),
            "features": ("auto", "orb", "superpoint", "aliked", "disk"),
            "matcher": ("auto", "nn", "superglue", "lightglue", "loftr"),
            "device": ("auto", "cpu", "cuda"),
            "viewer": ("none", "open3d"),
        }
        nested = {
            "tracking.final_pose_refiner": ("gn", "g2o"),
            "mapping.triangulation_match": ("epipolar", "matcher"),
        }
        for key, valid in {**choices, **nested}.items():
            value = self
            for part in key.split("."):
                value = getattr(value, part)
            if value not in valid:
                raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(valid)}")
        try:
            self.loftr.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the dataclass field type."""
    origin = typing.get_origin(typ)
    if typ is Any:
        return value
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], key)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        args = typing.get_args(typ)
        inner = args[0] if args else Any
        out = [_coerce(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int):
            return bool(value)
        raise ConfigError(f"{key} expects true/false, got {value!r}")
    if typ in (int, float):
        try:
            v = typ(float(value)) if typ is int and isinstance(value, str) and "." in value else typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} expects {typ.__name__}, got {value!r}") from None
        return v
    if typ is str:
        return str(value)
    return value


def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def apply_dict(obj: Any, data: dict, prefix: str = "") -> None:
    """Apply a nested dict onto a dataclass tree in place, strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    types = _field_types(obj)
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in types:
            valid = ", ".join(sorted(types))
            raise ConfigError(f"unknown config key '{full}'; valid keys{' under ' + prefix[:-1] if prefix else ''}: {valid}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            apply_dict(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(value, types[key], full))


def parse_override(text: str) -> dict:
    """'a.b=3' -> {'a': {'b': 3}} with YAML scalar parsing of the value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. tracking.min_inliers=30)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; configs shipped with the project are in configs/")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def load_config(paths: Optional[list[str | Path]] = None, overrides: Optional[list[str]] = None, base: Optional[Config] = None) -> Config:
    cfg = base if base is not None else Config()
    for p in paths or []:
        try:
            apply_dict(cfg, load_yaml(p))
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    for o in overrides or []:
        apply_dict(cfg, parse_override(o))
    cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
