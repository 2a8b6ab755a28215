"""Manifests of synthetic sequences: what to render, resolved and validated.

A manifest is a mapping (a YAML file ``sequences/synthetic/<name>.yaml`` or an embedded
profile, :data:`slam.synth.profiles.PROFILES`) with the keys

- ``name``, ``description``: text;
- ``frames`` (int >= 1), ``fps`` (> 0), ``seed`` (int: scene, motion jitter and noise);
- ``camera``: ``fr1`` (TUM Freiburg 1) or ``{width, height, fx, fy, cx, cy, dist}``;
- ``motion``: ``type`` (one of :data:`slam.synth.config.MOTION_TYPES`) and that type's parameters;
- ``realism``: fields of :class:`slam.synth.config.Realism`.

Every problem is an :class:`~slam.errors.InputError` naming the manifest and the key.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Optional, Union

import yaml

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera
from slam.synth.config import MOTION_TYPES, Realism, parse_dataclass
from slam.synth.profiles import FR1_CAMERA, PROFILES

__all__ = ["MANIFEST_KEYS", "load_manifest", "validate_manifest", "manifest_camera"]

MANIFEST_KEYS = frozenset({"name", "description", "frames", "fps", "seed", "camera", "motion", "realism"})


def load_manifest(name_or_path: Union[str, Path, dict], root: Optional[Path] = None) -> dict:
    """Resolve a manifest: a dict (validated copy), a path to a YAML file, or a profile name.

    For a name, ``root/synthetic/<name>.yaml`` is used when ``root`` is given and the file
    exists (so edits to the repository's manifests take effect), else the embedded
    ``PROFILES[name]``. Returns a validated copy with defaults filled in.
    """
    if isinstance(name_or_path, dict):
        return validate_manifest(copy.deepcopy(name_or_path), "<manifest dict>")
    s = str(name_or_path)
    path = Path(s)
    if s.endswith((".yaml", ".yml")) or os.sep in s or (os.altsep and os.altsep in s):
        return _read_manifest(path)
    if root is not None:
        p = Path(root) / "synthetic" / f"{s}.yaml"
        if p.is_file():
            return _read_manifest(p)
    if s not in PROFILES:
        raise InputError(f"unknown synthetic profile {s!r}; choose one of {sorted(PROFILES)} "
                         f"or give a path to a manifest .yaml")
    return validate_manifest(copy.deepcopy(PROFILES[s]), f"profile {s!r}")


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"manifest file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"manifest file {path} is not valid YAML: {exc}") from None
    if isinstance(data, dict) and "name" not in data:
        data["name"] = path.stem
    return validate_manifest(data, f"manifest file {path}")


def validate_manifest(m: dict, where: str) -> dict:
    """Check keys and types; returns ``m`` with defaults filled in. Raises InputError."""
    if not isinstance(m, dict):
        raise InputError(f"{where} must be a mapping with keys {sorted(MANIFEST_KEYS)}")
    unknown = sorted(set(m) - MANIFEST_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(MANIFEST_KEYS)}")
    for key in ("frames", "fps", "motion"):
        if key not in m:
            raise InputError(f"{where} is missing the key '{key}'")
    m.setdefault("name", "synthetic")
    m.setdefault("seed", 0)
    m.setdefault("camera", "fr1")
    m.setdefault("realism", {})
    try:
        m["frames"] = int(m["frames"])
        m["fps"] = float(m["fps"])
        m["seed"] = int(m["seed"])
    except (TypeError, ValueError):
        raise InputError(f"{where}: frames, fps and seed must be numbers, got "
                         f"frames={m['frames']!r}, fps={m['fps']!r}, seed={m['seed']!r}") from None
    if m["frames"] < 1 or m["fps"] <= 0:
        raise InputError(f"{where}: frames must be >= 1 and fps > 0")
    manifest_camera(m, where)
    parse_dataclass(Realism, m["realism"], f"{where}: realism")
    mt = m["motion"]
    if not isinstance(mt, dict) or mt.get("type") not in MOTION_TYPES:
        raise InputError(f"{where}: motion.type must be one of {sorted(MOTION_TYPES)}, got "
                         f"{mt.get('type') if isinstance(mt, dict) else mt!r}")
    parse_dataclass(MOTION_TYPES[mt["type"]], {k: v for k, v in mt.items() if k != "type"}, f"{where}: motion")
    return m


def manifest_camera(m: dict, where: str = "manifest") -> PinholeCamera:
    """The camera of manifest ``m``: ``fr1`` or an explicit ``{width, height, fx, fy, cx, cy, dist}``."""
    cam = m.get("camera", "fr1")
    if cam == "fr1":
        return PinholeCamera.from_dict(FR1_CAMERA)
    if isinstance(cam, dict):
        try:
            return PinholeCamera.from_dict(cam, source=f"{where}: camera")
        except ValueError as exc:
            raise InputError(str(exc)) from None
    raise InputError(f"{where}: camera must be 'fr1' or a mapping {{width, height, fx, fy, cx, cy, dist}}, got {cam!r}")
