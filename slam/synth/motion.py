"""Camera motions of synthetic sequences: continuous ``world_from_cam(t)`` trajectories.

A :class:`Trajectory` turns a manifest's ``motion`` mapping (a type from
:data:`slam.synth.config.MOTION_TYPES` and its parameters) into a smooth pose for any time t
(seconds), with hand-held jitter and roll wander drawn from the sequence seed. Poses are
(4, 4) float64 ``world_from_cam`` with an OpenCV camera frame (x right, y down, z forward) in a
z-up world (metres).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from slam.errors import InputError
from slam.synth.config import (MOTION_TYPES, ForwardMotion, LoopMotion, OrbitMotion, RotationMotion, SweepMotion, XYZMotion,
                               parse_dataclass)
from slam.synth.scene import Scene

__all__ = ["look_at", "rot_xyz", "SmoothNoise", "Trajectory"]


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """world_from_cam (4, 4) of an OpenCV camera at ``eye`` looking at ``target`` with world z up,
    rolled by ``roll`` radians about its optical axis."""
    eye = np.asarray(eye, float)
    fwd = np.asarray(target, float) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], 1)
    if roll:
        c, s = math.cos(roll), math.sin(roll)
        R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = eye
    return out


def rot_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """(3, 3) rotation matrix of the rotation vector (rx, ry, rz) in radians (Rodrigues)."""
    v = np.array([rx, ry, rz], float)
    R, _ = cv2.Rodrigues(v)
    return R


class SmoothNoise:
    """Band-limited smooth random signal (sum of sinusoids), unit RMS per dimension."""

    def __init__(self, rng: np.random.Generator, dims: int, f_lo: float, f_hi: float, n: int = 6) -> None:
        self.f = rng.uniform(f_lo, f_hi, (dims, n))
        self.ph = rng.uniform(0, 2 * np.pi, (dims, n))
        a = 1.0 / self.f
        self.a = a / np.sqrt((a ** 2).sum(1, keepdims=True) / 2.0)

    def __call__(self, t: float) -> np.ndarray:
        return (self.a * np.sin(2 * np.pi * self.f * t + self.ph)).sum(1)


class Trajectory:
    """Continuous camera trajectory world_from_cam(t) for a motion profile (t in seconds)."""

    def __init__(self, scene: Scene, motion: dict, seed: int, where: str = "motion") -> None:
        if not isinstance(motion, dict) or "type" not in motion:
            raise InputError(f"{where} must be a mapping with a 'type' key, one of {sorted(MOTION_TYPES)}")
        mtype = motion["type"]
        if mtype not in MOTION_TYPES:
            raise InputError(f"{where}.type = {mtype!r} is unknown; choose one of {sorted(MOTION_TYPES)}")
        self.kind = mtype
        self.p = parse_dataclass(MOTION_TYPES[mtype], {k: v for k, v in motion.items() if k != "type"}, where)
        self.desk = np.asarray(scene.anchors.get("desk_center", np.array([0.0, 1.8, 0.75])), float)
        needs = {LoopMotion: ("room_min", "room_max"), ForwardMotion: ("path_start", "path_end")}.get(type(self.p), ())
        missing = [a for a in needs if a not in scene.anchors]
        if missing:
            raise InputError(f"{where}.type = {mtype!r} needs a scene with the anchor(s) {missing}; "
                             f"this scene has {sorted(scene.anchors)}")
        self.anchors = {k: np.asarray(v, float) for k, v in scene.anchors.items()}
        rng = np.random.default_rng([int(seed), 1])
        self.jit_p = SmoothNoise(rng, 3, 0.5, 3.0)
        self.jit_r = SmoothNoise(rng, 3, 0.5, 3.0)
        self.wander = SmoothNoise(rng, 1, 0.05, 0.2)

    def world_from_cam(self, t: float) -> np.ndarray:
        """(4, 4) float64 world_from_cam at time ``t`` (seconds)."""
        p, d = self.p, self.desk
        roll = math.radians(p.roll_deg) * float(self.wander(t)[0])
        if isinstance(p, SweepMotion):
            w = [2 * math.pi / per for per in p.period]
            off = np.array([a * math.sin(wi * t + ph) for a, wi, ph in zip(p.amplitude, w, p.phase)])
            eye = d + np.array([0.0, -p.distance, p.height]) + off
            tw = [2 * math.pi / per for per in p.target_period]
            target = d + np.array([a * math.sin(wi * t + 0.7 * k) for k, (a, wi) in enumerate(zip(p.target_amplitude, tw))])
            w_from_c = look_at(eye, target, roll)
        elif isinstance(p, XYZMotion):
            base = look_at(d + np.array([0.0, -p.distance, p.height]), d, 0.0)
            seg = max(p.segment, 1e-3)
            k = int(t // seg) % 4
            local = t - (t // seg) * seg
            ramp_in = 1.0 if t < seg else local / 0.75  # the very first segment starts in motion
            ramp = min(1.0, ramp_in, (seg - local) / 0.75)
            ramp = 0.5 - 0.5 * math.cos(math.pi * max(0.0, ramp))
            s = math.sin(2 * math.pi * t / p.period)
            off = np.zeros(3)
            if k < 3:
                off[k] = p.amplitude[k] * s * ramp
            else:
                off = np.array(p.amplitude) * np.array([s, math.sin(2 * math.pi * t / p.period * 0.7),
                                                        math.sin(2 * math.pi * t / p.period * 1.3)]) * ramp * 0.6
            w_from_c = base.copy()
            w_from_c[:3, 3] = base[:3, 3] + base[:3, :3] @ off
            c, s_ = math.cos(roll), math.sin(roll)
            w_from_c[:3, :3] = w_from_c[:3, :3] @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1.0]])
        elif isinstance(p, OrbitMotion):
            ang = math.radians(p.arc_deg) / 2 * math.sin(2 * math.pi * t / p.period)
            eye = d + np.array([p.radius * math.sin(ang), -p.radius * math.cos(ang),
                                p.height + p.height_amplitude * math.sin(2 * math.pi * t / (0.77 * p.period))])
            target = d + p.target_amplitude * np.array([math.sin(1.3 * t), math.sin(0.9 * t + 1), 0.5 * math.sin(0.7 * t)])
            w_from_c = look_at(eye, target, roll)
        elif isinstance(p, RotationMotion):
            eye = d + np.array([0.0, -p.distance, p.height])
            eye = eye + p.translation_amplitude * np.array([math.sin(1.1 * t), math.sin(0.8 * t + 1), math.sin(1.4 * t + 2)])
            base = look_at(eye, d, 0.0)
            yaw = math.radians(p.yaw_amplitude_deg) * math.sin(2 * math.pi * t / p.yaw_period)
            pitch = math.radians(p.pitch_amplitude_deg) * math.sin(2 * math.pi * t / p.pitch_period + 0.6)
            rl = math.radians(p.roll_amplitude_deg) * math.sin(2 * math.pi * t / p.roll_period + 1.3)
            # yaw about world z, then pitch / roll in the camera frame
            w_from_c = base.copy()
            w_from_c[:3, :3] = rot_xyz(0, 0, yaw) @ base[:3, :3] @ rot_xyz(pitch, 0, rl)
        elif isinstance(p, LoopMotion):
            w_from_c = self._loop(p, t, roll)
        else:
            w_from_c = self._forward(p, t, roll)
        # hand-held jitter
        w_from_c = w_from_c.copy()
        w_from_c[:3, 3] += p.jitter_position * self.jit_p(t)
        w_from_c[:3, :3] = w_from_c[:3, :3] @ rot_xyz(*(math.radians(p.jitter_rotation_deg) * self.jit_r(t)))
        return w_from_c

    def _loop(self, p: LoopMotion, t: float, roll: float) -> np.ndarray:
        lo, hi = self.anchors["room_min"], self.anchors["room_max"]
        centre = 0.5 * (lo + hi)
        a, b = 0.5 * (hi[0] - lo[0]) - p.margin, 0.5 * (hi[1] - lo[1]) - p.margin
        if a <= 0.1 or b <= 0.1:
            raise InputError(f"motion.margin = {p.margin} leaves no room for the loop in a "
                             f"{hi[0] - lo[0]:.2f} x {hi[1] - lo[1]:.2f} m room; use a smaller margin")
        th = math.radians(p.start_deg) + 2 * math.pi * t / p.lap_period
        c, s = math.cos(th), math.sin(th)
        bob = p.bob_amplitude * math.sin(2 * math.pi * t / p.bob_period)
        eye = np.array([centre[0] + a * c, centre[1] + b * s, lo[2] + p.eye_height + bob])
        ahead = np.array([-a * s, b * c, 0.0])  # walking direction (counter-clockwise)
        inward = -np.array([c / a, s / b, 0.0])  # inward normal of the ellipse
        ahead /= np.linalg.norm(ahead)
        inward /= np.linalg.norm(inward)
        phi = math.radians(p.look_inward_deg)
        view = math.cos(phi) * ahead + math.sin(phi) * inward
        view[2] = math.tan(math.radians(p.pitch_deg))
        return look_at(eye, eye + view, roll)

    def _forward(self, p: ForwardMotion, t: float, roll: float) -> np.ndarray:
        start, end = self.anchors["path_start"], self.anchors["path_end"]
        axis = end - start
        axis[2] = 0.0
        axis /= np.linalg.norm(axis)
        side = np.array([-axis[1], axis[0], 0.0])  # left of the direction of travel
        lateral = p.lateral_amplitude * math.sin(2 * math.pi * t / p.lateral_period)
        bob = p.bob_amplitude * math.sin(2 * math.pi * t / p.bob_period)
        eye = start + p.speed * t * axis + lateral * side
        eye[2] = start[2] + p.eye_height + bob
        yaw = math.radians(p.yaw_amplitude_deg) * math.sin(2 * math.pi * t / p.yaw_period + 0.4)
        view = math.cos(yaw) * axis + math.sin(yaw) * side
        view[2] = math.tan(math.radians(p.pitch_deg))
        return look_at(eye, eye + view, roll)

