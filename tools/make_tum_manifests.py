#!/usr/bin/env python
"""Write sequences/tum/<name>.yaml for every TUM RGB-D sequence.

Run from anywhere: ``python tools/make_tum_manifests.py [--out sequences/tum]``.
The sequence list is the one on the TUM RGB-D download page (including the "validation"
sequences, whose ground truth is withheld by TUM for the online benchmark, so
``has_groundtruth: false``). The calibration-only recordings are left out.
Camera parameters are the calibrated per-Kinect values from the TUM "file formats /
intrinsic camera calibration" page (not the uncalibrated default 525 / 319.5 / 239.5). All depth images are scaled by 5000 (1 m = 5000).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

BASE_URL = "https://cvg.cit.tum.de/rgbd/dataset"

# Calibrated colour camera of each Kinect (TUM calibration page); dist = [k1, k2, p1, p2, k3].
# fr3 images were already undistorted by the sensor driver, hence zero distortion.
CAMERAS = {
    1: dict(fx=517.3, fy=516.5, cx=318.6, cy=255.3, dist=[0.2624, -0.9531, -0.0054, 0.0026, 1.1633]),
    2: dict(fx=520.9, fy=521.0, cx=325.1, cy=249.7, dist=[0.2312, -0.7849, -0.0033, -0.0001, 0.9172]),
    3: dict(fx=535.4, fy=539.2, cx=320.1, cy=247.6, dist=[0.0, 0.0, 0.0, 0.0, 0.0]),
}

# (freiburg number, sequence name, category on the TUM download page)
SEQUENCES = [
    (1, "xyz", "testing and debugging"),
    (1, "rpy", "testing and debugging"),
    (2, "xyz", "testing and debugging"),
    (2, "rpy", "testing and debugging"),
    (1, "360", "handheld SLAM"),
    (1, "floor", "handheld SLAM"),
    (1, "desk", "handheld SLAM"),
    (1, "desk2", "handheld SLAM"),
    (1, "room", "handheld SLAM"),
    (2, "360_hemisphere", "handheld SLAM"),
    (2, "360_kidnap", "handheld SLAM"),
    (2, "desk", "handheld SLAM"),
    (2, "large_no_loop", "handheld SLAM"),
    (2, "large_with_loop", "handheld SLAM"),
    (3, "long_office_household", "handheld SLAM"),
    (2, "pioneer_360", "robot SLAM"),
    (2, "pioneer_slam", "robot SLAM"),
    (2, "pioneer_slam2", "robot SLAM"),
    (2, "pioneer_slam3", "robot SLAM"),
    (3, "nostructure_notexture_far", "structure vs. texture"),
    (3, "nostructure_notexture_near_withloop", "structure vs. texture"),
    (3, "nostructure_texture_far", "structure vs. texture"),
    (3, "nostructure_texture_near_withloop", "structure vs. texture"),
    (3, "structure_notexture_far", "structure vs. texture"),
    (3, "structure_notexture_near", "structure vs. texture"),
    (3, "structure_texture_far", "structure vs. texture"),
    (3, "structure_texture_near", "structure vs. texture"),
    (2, "desk_with_person", "dynamic objects"),
    (3, "sitting_static", "dynamic objects"),
    (3, "sitting_xyz", "dynamic objects"),
    (3, "sitting_halfsphere", "dynamic objects"),
    (3, "sitting_rpy", "dynamic objects"),
    (3, "walking_static", "dynamic objects"),
    (3, "walking_xyz", "dynamic objects"),
    (3, "walking_halfsphere", "dynamic objects"),
    (3, "walking_rpy", "dynamic objects"),
    (1, "plant", "3D object reconstruction"),
    (1, "teddy", "3D object reconstruction"),
    (2, "coke", "3D object reconstruction"),
    (2, "dishes", "3D object reconstruction"),
    (2, "flowerbouquet", "3D object reconstruction"),
    (2, "flowerbouquet_brownbackground", "3D object reconstruction"),
    (2, "metallic_sphere", "3D object reconstruction"),
    (2, "metallic_sphere2", "3D object reconstruction"),
    (3, "cabinet", "3D object reconstruction"),
    (3, "large_cabinet", "3D object reconstruction"),
    (3, "teddy", "3D object reconstruction"),
]

# Validation sequences (ground truth withheld; evaluate with TUM's online tool).
VALIDATION = [
    (1, "xyz"), (1, "rpy"), (1, "desk"), (1, "desk2"), (1, "360"), (1, "room"), (1, "plant"),
    (2, "xyz"), (2, "rpy"), (2, "360_hemisphere"), (2, "360_kidnap"), (2, "desk"),
    (2, "desk_with_person"), (2, "pioneer_360"),
    (3, "cabinet"), (3, "large_cabinet"), (3, "long_office_household"),
    (3, "nostructure_notexture_far"), (3, "nostructure_notexture_near_withloop"),
    (3, "nostructure_texture_far"), (3, "nostructure_texture_near_withloop"),
    (3, "structure_notexture_far"), (3, "structure_notexture_near"),
    (3, "structure_texture_far"), (3, "structure_texture_near"),
    (3, "sitting_static"), (3, "sitting_xyz"), (3, "sitting_halfsphere"), (3, "sitting_rpy"),
    (3, "walking_static"), (3, "walking_xyz"), (3, "walking_halfsphere"), (3, "walking_rpy"),
]


def manifest(fr: int, seq: str, category: str, has_groundtruth: bool) -> dict:
    folder = f"rgbd_dataset_freiburg{fr}_{seq}"
    cam = CAMERAS[fr]
    return {
        "name": f"tum/fr{fr}_{seq}",
        "dataset": "tum",
        "folder": folder,
        "url": f"{BASE_URL}/freiburg{fr}/{folder}.tgz",
        "category": category,
        "camera": {
            "width": 640,
            "height": 480,
            "fx": cam["fx"],
            "fy": cam["fy"],
            "cx": cam["cx"],
            "cy": cam["cy"],
            "dist": list(cam["dist"]),
        },
        "depth_factor": 5000.0,
        "fps": 30.0,
        "has_groundtruth": has_groundtruth,
    }


def all_manifests() -> list[dict]:
    out = [manifest(fr, seq, cat, True) for fr, seq, cat in SEQUENCES]
    out += [manifest(fr, f"{seq}_validation", "validation (ground truth withheld)", False) for fr, seq in VALIDATION]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parents[1] / "sequences" / "tum"
    parser.add_argument("--out", type=Path, default=default_out, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifests = all_manifests()
    for m in manifests:
        stem = m["name"].split("/", 1)[1]
        text = (
            f"# TUM RGB-D {m['name']} ({m['category']}). Generated by tools/make_tum_manifests.py.\n"
            f"# Camera: calibrated Freiburg {m['folder'].split('freiburg')[1][0]} colour camera (TUM calibration page).\n"
            + yaml.safe_dump(m, sort_keys=False, default_flow_style=None)
        )
        (args.out / f"{stem}.yaml").write_text(text)
    print(f"wrote {len(manifests)} manifests to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
