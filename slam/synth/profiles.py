"""Embedded manifests of the synthetic profiles, and the camera they use.

``sequences/synthetic/<name>.yaml`` holds the same content for every profile (a test checks);
the embedded copy lets ``python -m slam run`` work without the repository's ``sequences/``
folder. Keys are described in :mod:`slam.synth.manifest`.
"""
from __future__ import annotations

__all__ = ["FR1_CAMERA", "PROFILES"]

#: TUM Freiburg-1 camera (the fr1_xyz calibration): 640x480, OpenCV 5-coefficient distortion.
FR1_CAMERA = {"width": 640, "height": 480, "fx": 517.3, "fy": 516.5, "cx": 318.6, "cy": 255.3,
              "dist": [0.2624, -0.9531, -0.0054, 0.0026, 1.1633]}

PROFILES: dict = {
    "default": {
        "name": "default",
        "description": "Slow hand-held sweep in front of the desk, mild realism (the embedded default sequence).",
        "frames": 300, "fps": 30.0, "seed": 1, "camera": "fr1",
        "motion": {"type": "sweep", "distance": 1.7, "height": 0.6, "amplitude": [0.25, 0.08, 0.06],
                   "period": [10.0, 13.0, 7.0], "phase": [0.0, 1.0, 0.5], "target_amplitude": [0.12, 0.05, 0.04],
                   "target_period": [12.0, 9.0, 8.0], "jitter_position": 0.002, "jitter_rotation_deg": 0.15,
                   "roll_deg": 1.5},
        "realism": {"noise_sigma": 1.0, "noise_shot": 0.02, "exposure_time": 0.3, "exposure_amplitude": 0.03,
                    "exposure_period": 8.0, "vignetting": 0.1, "blur_sigma": 0.4, "depth_noise": 0.0005,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.08, "depth_dropout": 0.003,
                    "depth_min": 0.3, "depth_max": 6.0},
    },
    "xyz": {
        "name": "xyz",
        "description": "TUM fr1_xyz-like: translation along the camera x, y, z axes in turn, little rotation.",
        "frames": 600, "fps": 30.0, "seed": 2, "camera": "fr1",
        "motion": {"type": "xyz", "distance": 1.5, "height": 0.55, "amplitude": [0.15, 0.1, 0.12], "period": 4.0,
                   "segment": 6.0, "jitter_position": 0.002, "jitter_rotation_deg": 0.2, "roll_deg": 1.0},
        "realism": {"noise_sigma": 1.0, "noise_shot": 0.02, "exposure_time": 0.3, "exposure_amplitude": 0.03,
                    "exposure_period": 8.0, "vignetting": 0.1, "blur_sigma": 0.4, "depth_noise": 0.0005,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.08, "depth_dropout": 0.003,
                    "depth_min": 0.3, "depth_max": 6.0},
    },
    "desk": {
        "name": "desk",
        "description": "TUM fr1_desk-like: orbit around the desk looking at it, moderate speed.",
        "frames": 600, "fps": 30.0, "seed": 3, "camera": "fr1",
        "motion": {"type": "orbit", "radius": 1.5, "height": 0.6, "arc_deg": 100.0, "period": 16.0,
                   "height_amplitude": 0.1, "target_amplitude": 0.06, "jitter_position": 0.003,
                   "jitter_rotation_deg": 0.25, "roll_deg": 3.0},
        "realism": {"noise_sigma": 1.5, "noise_shot": 0.03, "exposure_time": 0.4, "exposure_amplitude": 0.05,
                    "exposure_period": 6.0, "vignetting": 0.15, "blur_sigma": 0.5, "depth_noise": 0.001,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.1, "depth_dropout": 0.005,
                    "depth_min": 0.4, "depth_max": 5.0},
    },
    "fast": {
        "name": "fast",
        "description": "Fast rotation on the spot (up to ~140 deg/s yaw), strong motion blur.",
        "frames": 300, "fps": 30.0, "seed": 4, "camera": "fr1",
        "motion": {"type": "rotation", "distance": 1.8, "height": 0.6, "yaw_amplitude_deg": 70.0, "yaw_period": 3.2,
                   "pitch_amplitude_deg": 15.0, "pitch_period": 4.4, "roll_amplitude_deg": 10.0, "roll_period": 5.3,
                   "translation_amplitude": 0.03, "jitter_position": 0.003, "jitter_rotation_deg": 0.3,
                   "roll_deg": 0.0},
        "realism": {"noise_sigma": 1.5, "noise_shot": 0.03, "exposure_time": 0.35, "exposure_amplitude": 0.08,
                    "exposure_period": 4.0, "vignetting": 0.15, "blur_sigma": 0.5, "depth_noise": 0.001,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.1, "depth_dropout": 0.005,
                    "depth_min": 0.4, "depth_max": 5.0},
    },
    "loop": {
        "name": "loop",
        "description": "Walk around the office on an ellipse looking across the room, one lap in 24 s and back to "
                       "the start (loop closing after ~10 m), 2 s of revisit, mild realism.",
        "frames": 780, "fps": 30.0, "seed": 5, "camera": "fr1",
        "motion": {"type": "loop", "margin": 1.1, "eye_height": 1.5, "lap_period": 24.0, "start_deg": -90.0,
                   "look_inward_deg": 60.0, "pitch_deg": -15.0, "bob_amplitude": 0.01, "bob_period": 0.6,
                   "jitter_position": 0.002, "jitter_rotation_deg": 0.15, "roll_deg": 1.0},
        "realism": {"noise_sigma": 1.0, "noise_shot": 0.02, "exposure_time": 0.3, "exposure_amplitude": 0.03,
                    "exposure_period": 8.0, "vignetting": 0.1, "blur_sigma": 0.4, "depth_noise": 0.0005,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.08, "depth_dropout": 0.003,
                    "depth_min": 0.3, "depth_max": 6.0},
    },
    "loop_short": {
        "name": "loop_short",
        "description": "Short loop for CI: a small lap round the middle of the office in 7 s (about 5 m) and back to "
                       "the start, 1 s of revisit; turns at about 52 deg/s.",
        "frames": 240, "fps": 30.0, "seed": 5, "camera": "fr1",
        "motion": {"type": "loop", "margin": 2.0, "eye_height": 1.5, "lap_period": 7.0, "start_deg": -90.0,
                   "look_inward_deg": 60.0, "pitch_deg": -15.0, "bob_amplitude": 0.01, "bob_period": 0.6,
                   "jitter_position": 0.002, "jitter_rotation_deg": 0.15, "roll_deg": 1.0},
        "realism": {"noise_sigma": 1.0, "noise_shot": 0.02, "exposure_time": 0.3, "exposure_amplitude": 0.03,
                    "exposure_period": 8.0, "vignetting": 0.1, "blur_sigma": 0.4, "depth_noise": 0.0005,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.08, "depth_dropout": 0.003,
                    "depth_min": 0.3, "depth_max": 6.0},
    },
    "fast_blur": {
        "name": "fast_blur",
        "description": "Fast hand-held rotation (about 70 deg/s peak) with long exposure: strong motion blur, "
                       "noise and auto-exposure changes.",
        "frames": 300, "fps": 30.0, "seed": 6, "camera": "fr1",
        "motion": {"type": "rotation", "distance": 1.8, "height": 0.6, "yaw_amplitude_deg": 35.0, "yaw_period": 3.2,
                   "pitch_amplitude_deg": 12.0, "pitch_period": 4.4, "roll_amplitude_deg": 8.0, "roll_period": 5.3,
                   "translation_amplitude": 0.06, "jitter_position": 0.003, "jitter_rotation_deg": 0.3,
                   "roll_deg": 0.0},
        "realism": {"noise_sigma": 2.0, "noise_shot": 0.04, "exposure_time": 0.8, "exposure_amplitude": 0.12,
                    "exposure_period": 3.0, "vignetting": 0.2, "blur_sigma": 0.6, "depth_noise": 0.001,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.1, "depth_dropout": 0.005,
                    "depth_min": 0.4, "depth_max": 5.0},
    },
    "corridor": {
        "name": "corridor",
        "description": "Forward motion down a 50 m office corridor at 1.2 m/s, 10 Hz (KITTI-like forward motion: "
                       "12 cm per frame along the optical axis), mild realism.",
        "frames": 300, "fps": 10.0, "seed": 7, "camera": "fr1",
        "scene": {"type": "corridor", "length": 50.0, "width": 2.4, "height": 2.8},
        "motion": {"type": "forward", "speed": 1.2, "eye_height": 1.5, "lateral_amplitude": 0.15, "lateral_period": 9.0,
                   "yaw_amplitude_deg": 4.0, "yaw_period": 7.0, "pitch_deg": -3.0, "bob_amplitude": 0.005,
                   "bob_period": 0.55, "jitter_position": 0.002, "jitter_rotation_deg": 0.1, "roll_deg": 0.5},
        "realism": {"noise_sigma": 1.0, "noise_shot": 0.02, "exposure_time": 0.2, "exposure_amplitude": 0.05,
                    "exposure_period": 8.0, "vignetting": 0.15, "blur_sigma": 0.4, "depth_noise": 0.0005,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.08, "depth_dropout": 0.003,
                    "depth_min": 0.3, "depth_max": 8.0},
    },
    "stereo": {
        "name": "stereo",
        "description": "Rectified stereo pair (baseline 0.1 m, fr1 intrinsics without distortion) orbiting the desk "
                       "like 'desk', mild realism.",
        "frames": 300, "fps": 30.0, "seed": 8,
        "camera": {"width": 640, "height": 480, "fx": 517.3, "fy": 516.5, "cx": 318.6, "cy": 255.3,
                   "dist": [0.0, 0.0, 0.0, 0.0, 0.0]},
        "stereo": {"baseline": 0.1},
        "motion": {"type": "orbit", "radius": 1.5, "height": 0.6, "arc_deg": 100.0, "period": 16.0,
                   "height_amplitude": 0.1, "target_amplitude": 0.06, "jitter_position": 0.003,
                   "jitter_rotation_deg": 0.25, "roll_deg": 3.0},
        "realism": {"noise_sigma": 1.0, "noise_shot": 0.02, "exposure_time": 0.3, "exposure_amplitude": 0.03,
                    "exposure_period": 8.0, "vignetting": 0.1, "blur_sigma": 0.4, "depth_noise": 0.0005,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.08, "depth_dropout": 0.003,
                    "depth_min": 0.3, "depth_max": 6.0},
    },
}
