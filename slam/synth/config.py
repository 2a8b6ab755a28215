"""Parameters of a synthetic sequence: camera motion types and sensor effects (light: no numpy).

A manifest (``sequences/synthetic/<name>.yaml``, :mod:`slam.synth.manifest`) names a scene
``type`` and a motion ``type`` with their parameters, the ``realism`` fields and an optional
``stereo`` right camera. Distances are metres
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

__all__ = ["MotionBase", "SweepMotion", "XYZMotion", "OrbitMotion", "RotationMotion", "LoopMotion", "ForwardMotion",
           "MOTION_TYPES", "OfficeScene", "CorridorScene", "SCENE_TYPES", "StereoConfig", "Realism", "parse_dataclass"]


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


@dataclass
class LoopMotion(MotionBase):
    """A walk around the room on an ellipse (counter-clockwise seen from above), looking across
    the room ahead and inwards, back to its start after ``lap_period`` seconds: every part of the
    room is seen from one place per lap, so the end of a lap revisits the start from the same
    viewpoint (loop closing). The ellipse keeps ``margin`` metres from the walls; needs the
    anchors ``room_min``/``room_max``."""

    margin: float = param(1.1, gt=0.0)  # m: distance of the path from the walls
    eye_height: float = param(1.4, gt=0.0)  # m above the floor
    lap_period: float = param(24.0, gt=0.0)  # s: duration of one lap
    start_deg: float = -90.0  # deg: where the lap starts on the ellipse (-90 = middle of the -y side)
    look_inward_deg: float = param(60.0, ge=-90.0, le=90.0)  # deg: view direction from the walking direction, towards the inside (90: at the centre, -90: at the wall)
    pitch_deg: float = param(-15.0, ge=-60.0, le=60.0)  # deg: view elevation (negative = down)
    bob_amplitude: float = param(0.01, ge=0.0)  # m: vertical walking bob
    bob_period: float = param(0.6, gt=0.0)  # s: step period


@dataclass
class ForwardMotion(MotionBase):
    """Forward motion along a corridor or street (KITTI-like: the camera moves along its optical
    axis), with slow lateral drift, a little yaw and a walking or driving bob. Starts at the
    anchor ``path_start`` and moves towards ``path_end``."""

    speed: float = param(1.2, gt=0.0)  # m/s
    eye_height: float = param(1.5, gt=0.0)  # m above the floor
    lateral_amplitude: float = param(0.15, ge=0.0)  # m: slow sideways drift
    lateral_period: float = param(9.0, gt=0.0)  # s
    yaw_amplitude_deg: float = param(4.0, ge=0.0)  # deg: heading wander
    yaw_period: float = param(7.0, gt=0.0)  # s
    pitch_deg: float = param(-3.0, ge=-60.0, le=60.0)  # deg: view elevation (negative = down)
    bob_amplitude: float = param(0.01, ge=0.0)  # m: vertical bob
    bob_period: float = param(0.55, gt=0.0)  # s


MOTION_TYPES = {"sweep": SweepMotion, "xyz": XYZMotion, "orbit": OrbitMotion, "rotation": RotationMotion,
                "loop": LoopMotion, "forward": ForwardMotion}


@dataclass
class OfficeScene:
    """The furnished office room (:mod:`slam.synth.office`); everything follows from the seed."""


@dataclass
class CorridorScene:
    """A long office corridor along world x (:mod:`slam.synth.corridor`): walls with doors,
    posters and boards, tiled floor, ceiling lights, benches, cabinets, bins and plants."""

    length: float = param(40.0, ge=8.0, le=400.0)  # m
    width: float = param(2.4, ge=1.5, le=8.0)  # m
    height: float = param(2.8, ge=2.2, le=6.0)  # m


SCENE_TYPES = {"office": OfficeScene, "corridor": CorridorScene}


@dataclass
class StereoConfig:
    """A right camera beside each frame's (left) camera: same intrinsics and distortion, same
    orientation, ``baseline`` metres along the left camera's +x axis (a rectified pair when the
    camera has no distortion)."""

    baseline: float = param(0.1, gt=0.0, le=2.0)  # m


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
