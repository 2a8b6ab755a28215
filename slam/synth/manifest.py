"""Manifests of synthetic sequences: what to render, resolved and validated.

A manifest is a mapping (a YAML file ``sequences/synthetic/<name>.yaml`` or an embedded
profile, :data:`slam.synth.profiles.PROFILES`) with the keys

- ``name``, ``description``: text;
- ``frames`` (int >= 1), ``fps`` (> 0), ``seed`` (int: scene, motion jitter and noise);
- ``camera``: ``fr1`` (TUM Freiburg 1) or ``{width, height, fx, fy, cx, cy, dist}``;
- ``scene``: ``office`` (default) or a mapping ``{type, ...}`` with a type of
  :data:`slam.synth.config.SCENE_TYPES` and its parameters (``{type: corridor, length: 50}``);
- ``motion``: ``type`` (one of :data:`slam.synth.config.MOTION_TYPES`) and that type's parameters;
- ``realism``: fields of :class:`slam.synth.config.Realism`;
- ``stereo``: absent/null (one camera) or ``{baseline: 0.1}`` (:class:`slam.synth.config.StereoConfig`):
  a right camera beside each frame's camera, written as ``rgb_right/``.

Validation fills in defaults: ``scene`` becomes a mapping with every parameter, ``stereo`` None
or a mapping with every parameter, so a resolved manifest states everything that is rendered.

Every problem is an :class:`~slam.errors.InputError` naming the manifest and the key.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Optional, Union

import yaml

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera
from slam.synth.config import MOTION_TYPES, SCENE_TYPES, Realism, StereoConfig, parse_dataclass
from slam.synth.profiles import FR1_CAMERA, PROFILES

__all__ = ["MANIFEST_KEYS", "load_manifest", "validate_manifest", "manifest_camera"]

MANIFEST_KEYS = frozenset({"name", "description", "frames", "fps", "seed", "camera", "scene", "motion", "realism",
                           "stereo"})


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
    m["scene"] = _scene_of(m.get("scene", "office"), where)
    m["stereo"] = _stereo_of(m.get("stereo"), where)
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


def _scene_of(scene, where: str) -> dict:
    """``office`` / ``{type: corridor, length: ...}`` -> ``{type, every parameter}``."""
    if isinstance(scene, str):
        scene = {"type": scene}
    if not isinstance(scene, dict) or scene.get("type") not in SCENE_TYPES:
        got = scene.get("type") if isinstance(scene, dict) else scene
        raise InputError(f"{where}: scene must be one of {sorted(SCENE_TYPES)} or a mapping with such a 'type', got {got!r}")
    params = parse_dataclass(SCENE_TYPES[scene["type"]], {k: v for k, v in scene.items() if k != "type"},
                             f"{where}: scene")
    return {"type": scene["type"], **dataclasses.asdict(params)}


def _stereo_of(stereo, where: str) -> Optional[dict]:
    """None/False -> None; True -> default :class:`StereoConfig`; a mapping -> its parameters."""
    if stereo is None or stereo is False:
        return None
    if stereo is True:
        stereo = {}
    return dataclasses.asdict(parse_dataclass(StereoConfig, stereo, f"{where}: stereo"))


def write_variant(name: str, variant: str, overrides: list[str], root: Path) -> Path:
    """Write ``root/synthetic/<variant>.yaml``: the manifest of ``name`` (as :func:`load_manifest`
    resolves it) with ``overrides`` ("section.key=value", the value read as YAML) applied and
    ``name`` set to ``variant``. Unknown keys, an embedded profile's name for the variant, and
    values the manifest's validation rejects are InputErrors. Returns the path."""
    if variant in PROFILES or not variant or "/" in variant or os.sep in variant:
        raise InputError(f"render --as {variant!r}: choose a new name (not one of the profiles {sorted(PROFILES)}, no '/')")
    m = load_manifest(name, root)
    for kv in overrides:
        key, sep, raw = kv.partition("=")
        if not sep or not key:
            raise InputError(f"render override {kv!r}: expected KEY=VALUE, e.g. realism.exposure_time=0")
        *parents, leaf = key.split(".")
        node = m
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise InputError(f"render override {kv!r}: the manifest has no section {part!r}; sections: "
                                 f"{', '.join(k for k, v in m.items() if isinstance(v, dict))}")
            node = node[part]
        if leaf not in node:
            raise InputError(f"render override {kv!r}: no key {leaf!r} there; keys: {', '.join(sorted(node))}")
        node[leaf] = yaml.safe_load(raw)
    m["name"] = variant
    m = load_manifest(m)  # validated: a bad value is an InputError naming it
    path = Path(root) / "synthetic" / f"{variant}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    return path
