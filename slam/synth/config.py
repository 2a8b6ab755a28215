"""Parameters of a synthetic sequence: camera motion types and sensor effects (light: no numpy).

A manifest (``sequences/synthetic/<name>.yaml``, :mod:`slam.synth.manifest`) names a motion
``type`` and gives that type's parameters, and the ``realism`` fields. Distances are metres
(relative to the scene's anchor: the centre of the desk top in the office), angles degrees,
periods and times seconds. :func:`parse_dataclass` turns a manifest mapping into one of these
dataclasses: unknown keys, wrong types and values outside the declared ranges are an
:class:`~slam.errors.InputError` naming the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from slam.errors import ConfigError, InputError
from slam.params import check_params, param

__all__ = ["MotionBase", "SweepMotion", "XYZMotion", "OrbitMotion", "RotationMotion", "MOTION_TYPES",
           "Realism", "parse_dataclass"]


@dataclass
class MotionBase:
    jitter_position: float = param(0.002, ge=0.0)  # m: RMS of hand-held positional jitter (0.5-3 Hz)
    jitter_rotation_deg: float = param(0.15, ge=0.0)  # deg: RMS of hand-held rotational jitter
    roll_deg: float = param(1.5, ge=0.0)  # deg: amplitude of slow roll wander


@dataclass
class SweepMotion(MotionBase):
    """Slow hand-held sweep in front of the desk (TUM fr1_xyz/fr2_desk like), looking at it."""

    distance: float = param(1.7, gt=0.0)  # m: horizontal distance of the camera from the desk centre (into the room)
    height: float = 0.6  # m: camera height above the desk top
    amplitude: list = param(factory=lambda: [0.25, 0.08, 0.06])  # m: sweep along desk x, y, z
    period: list = param(factory=lambda: [10.0, 13.0, 7.0], gt=0.0)  # s: sweep periods per axis
    phase: list = param(factory=lambda: [0.0, 1.0, 0.5])  # rad: sweep phases per axis
    target_amplitude: list = param(factory=lambda: [0.12, 0.05, 0.04])  # m: look-at target wander
    target_period: list = param(factory=lambda: [12.0, 9.0, 8.0], gt=0.0)  # s


@dataclass
class XYZMotion(MotionBase):
    """fr1_xyz-like: translation along the camera's x, then y, then z axis, then all together,
    orientation nearly fixed (looking at the desk)."""

    distance: float = param(1.5, gt=0.0)  # m from the desk centre
    height: float = 0.55  # m above the desk top
    amplitude: list = param(factory=lambda: [0.15, 0.1, 0.12])  # m along camera right, down, forward
    period: float = param(4.0, gt=0.0)  # s: oscillation period
    segment: float = param(6.0, gt=0.0)  # s: duration of each single-axis segment


@dataclass
class OrbitMotion(MotionBase):
    """fr1_desk-like: arc around the desk looking at its centre."""

    radius: float = param(1.5, gt=0.0)  # m: horizontal distance from the desk centre
    height: float = 0.6  # m above the desk top
    arc_deg: float = 100.0  # deg: total swing of the arc
    period: float = param(16.0, gt=0.0)  # s: period of the back-and-forth swing
    height_amplitude: float = 0.1  # m
    target_amplitude: float = 0.06  # m: look-at target wander


@dataclass
class RotationMotion(MotionBase):
    """Fast rotation on the spot (fr1_rpy / fr1_360 like) in front of the desk."""

    distance: float = param(1.8, gt=0.0)  # m from the desk centre
    height: float = 0.6  # m above the desk top
    yaw_amplitude_deg: float = 70.0
    yaw_period: float = param(3.2, gt=0.0)  # s
    pitch_amplitude_deg: float = 15.0
    pitch_period: float = param(4.4, gt=0.0)  # s
    roll_amplitude_deg: float = 10.0
    roll_period: float = param(5.3, gt=0.0)  # s
    translation_amplitude: float = param(0.03, ge=0.0)  # m


MOTION_TYPES = {"sweep": SweepMotion, "xyz": XYZMotion, "orbit": OrbitMotion, "rotation": RotationMotion}


@dataclass
class Realism:
    """Optional sensor effects (:mod:`slam.synth.effects`). All defaults are "off"."""

    noise_sigma: float = param(0.0, ge=0.0)  # read noise std (grey levels 0..255)
    noise_shot: float = param(0.0, ge=0.0)  # shot noise: variance += noise_shot * intensity
    exposure_time: float = param(0.0, ge=0.0, le=1.0)  # exposure as a fraction of the frame interval (motion blur); 0 = none
    exposure_amplitude: float = param(0.0, ge=0.0, lt=1.0)  # relative amplitude of slow auto-exposure gain changes
    exposure_period: float = param(8.0, gt=0.0)  # s: typical period of the gain changes
    vignetting: float = param(0.0, ge=0.0, lt=1.0)  # relative brightness loss in the image corners
    blur_sigma: float = param(0.0, ge=0.0)  # optics blur (Gaussian PSF) in pixels
    depth_noise: float = param(0.0, ge=0.0)  # depth noise std = depth_noise * z^2 (metres)
    depth_edge_holes: bool = False  # invalidate depth at depth discontinuities (1-2 px)
    depth_grazing_cos: float = param(0.0, ge=0.0, le=1.0)  # invalidate depth where |cos(incidence)| is below this
    depth_dropout: float = param(0.0, ge=0.0, lt=1.0)  # fraction of pixels lost in random blobs
    depth_min: float = param(0.0, ge=0.0)  # m: nearer depth becomes 0 (invalid)
    depth_max: float = param(0.0, ge=0.0)  # m: farther depth becomes 0; 0 = no limit


def parse_dataclass(cls: type, data: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``data`` (None = all defaults).

    Values are converted to the type of the field's default (bool stays bool, lists of floats
    keep their length, numbers become float). Raises InputError naming ``where`` and the key
    for an unknown key, a value of the wrong type or a value outside the field's declared range.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k)
        try:
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise TypeError
                kwargs[k] = v
            elif isinstance(default, (list, tuple)):
                v = [float(x) for x in v]
                if len(v) != len(default):
                    raise TypeError
                kwargs[k] = v
            elif isinstance(default, str):
                if not isinstance(v, str):
                    raise TypeError
                kwargs[k] = v
            else:
                kwargs[k] = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{where}.{k} = {v!r} is invalid; expected {type(default).__name__}"
                             f" like {default!r}") from None
    out = cls(**kwargs)
    try:
        check_params(out, f"{where}.")
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    return out
