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

from slam.errors import ConfigError
from slam.features.config import ALIKEDConfig, DISKConfig, ORBConfig, SuperPointConfig, XFeatConfig
from slam.loop.config import LoopClosingConfig, MapMergingConfig, PlaceRecognitionConfig
from slam.mapping.config import MappingConfig
from slam.matching.config import LightGlueConfig, LoFTRConfig, NNConfig, SuperGlueConfig
from slam.params import check_params, param
from slam.runtime.config import RuntimeConfig
from slam.tracking.config import StereoConfig, TrackingConfig

__all__ = ["Config", "ConfigError", "OutputConfig", "load_config", "apply_dict", "parse_override", "dump_yaml", "to_dict"]


@dataclass
class OutputConfig:
    root: str = "runs"  # run folders go to <root>/<date>_<sequence>/
    kitti: bool = False  # also write trajectory in KITTI format
    euroc: bool = False  # also write trajectory in EuRoC csv format
    ply: bool = True  # write the map as PLY
    plot: bool = True  # write trajectory/map PNGs at the end


@dataclass
class Config:
    mode: str = param("rgbd", choices=("rgbd", "mono", "stereo"))  # stereo: rectified pairs (EuRoC, KITTI, synthetic/stereo)
    features: str = param("auto", choices=("auto", "orb", "superpoint", "aliked", "disk", "xfeat"))  # auto: the best learned extractor whose weights are installed (XFeat on CPU, SuperPoint on CUDA), else ORB; slam.system.resolve_config
    matcher: str = param("auto", choices=("auto", "nn", "superglue", "lightglue", "loftr"))  # auto: the learned matcher of those features when its weights are installed (LighterGlue for XFeat, SuperGlue for SuperPoint), else NN; loftr: detector-free, `slam match` only for now
    device: str = param("auto", choices=("auto", "cpu", "cuda"))
    max_frames: int = param(0, ge=0)  # 0 = all
    start_frame: int = param(0, ge=0)
    frame_stride: int = param(1, ge=1)  # use every n-th frame of the input (from start_frame; max_frames counts the frames used): e.g. 3 plays a 30 fps sequence as fast motion at 10 fps
    global_ba: bool = True  # run a global bundle adjustment at the end
    min_tracked_pct: float = param(0.0, ge=0.0, le=100.0)  # a run that tracks a smaller share of its frames ends "failed" (exit code 1); with 0 only a run that tracks nothing does
    viewer: str = param("none", choices=("none", "open3d"))
    orb: ORBConfig = field(default_factory=ORBConfig)
    superpoint: SuperPointConfig = field(default_factory=SuperPointConfig)
    aliked: ALIKEDConfig = field(default_factory=ALIKEDConfig)
    disk: DISKConfig = field(default_factory=DISKConfig)
    xfeat: XFeatConfig = field(default_factory=XFeatConfig)
    nn: NNConfig = field(default_factory=NNConfig)
    superglue: SuperGlueConfig = field(default_factory=SuperGlueConfig)
    lightglue: LightGlueConfig = field(default_factory=LightGlueConfig)
    loftr: LoFTRConfig = field(default_factory=LoFTRConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    stereo: StereoConfig = field(default_factory=StereoConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    place_recognition: PlaceRecognitionConfig = field(default_factory=PlaceRecognitionConfig)
    loop_closing: LoopClosingConfig = field(default_factory=LoopClosingConfig)
    map_merging: MapMergingConfig = field(default_factory=MapMergingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> None:
        """Every declared range and choice (slam.params); ConfigError naming the first bad key."""
        check_params(self)


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
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects a whole number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} expects a whole number, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{key} expects a whole number, got {value!r}")
        return int(number)
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} expects a number, got {value!r}") from None
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
            raise ConfigError(str(exc) if str(p) in str(exc) else f"{p}: {exc}") from None
    for o in overrides or []:
        apply_dict(cfg, parse_override(o))
    cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
