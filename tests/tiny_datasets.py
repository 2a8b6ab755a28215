"""Tiny EuRoC and KITTI sequences written to a temporary folder, for the reader, layout and CLI tests.

make_euroc: a few stereo frames in the ASL layout (cam0/cam1 with sensor.yaml, data.csv, PNGs;
state_groundtruth_estimate0/data.csv with body poses). make_kitti: sequences/XX (calib.txt,
times.txt, image_0/image_1) and poses/XX.txt. Both return what they wrote, so tests can compare.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

# The real EuRoC cam0/cam1 extrinsics (body_from_cam), row-major
T_BS0 = np.array([[0.0148655429818, -0.999880929698, 0.00414029679422, -0.0216401454975],
                  [0.999557249008, 0.0149672133247, 0.025715529948, -0.064676986768],
                  [-0.0257744366974, 0.00375618835797, 0.999660727178, 0.00981073058949],
                  [0.0, 0.0, 0.0, 1.0]])
T_BS1 = np.array([[0.0125552670891, -0.999755099723, 0.0182237714554, -0.0198435579556],
                  [0.999598781151, 0.0130119051815, 0.0251588363115, 0.0453689425024],
                  [-0.0253898008918, 0.0179005838253, 0.999517347078, 0.00786212447038],
                  [0.0, 0.0, 0.0, 1.0]])
T0_NS = 1403715273262142976
STEP_NS = 50_000_000  # 20 Hz


def textured(seed: int, w: int, h: int) -> np.ndarray:
    """(h, w) uint8 grey image with blobs and rectangles."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.normal(size=(h // 4, w // 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) * 50 + 128
    for _ in range(20):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(3, 20)), y + int(rng.integers(3, 20))), float(rng.integers(0, 256)), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def sensor_yaml(T_BS: np.ndarray, w: int, h: int, intrinsics=(120.0, 119.0, 81.0, 62.0),
                dist=(-0.28, 0.07, 0.0002, 0.00002), model: str = "radial-tangential") -> str:
    rows = ",\n         ".join(", ".join(repr(float(v)) for v in row) for row in T_BS)
    return (
        "%YAML:1.0\n# General sensor definitions.\nsensor_type: camera\ncomment: tiny test camera\n\n"
        f"T_BS:\n  cols: 4\n  rows: 4\n  data: [{rows}]\n\n"
        f"rate_hz: 20\nresolution: [{w}, {h}]\ncamera_model: pinhole\n"
        f"intrinsics: [{', '.join(repr(float(v)) for v in intrinsics)}] #fu, fv, cu, cv\n"
        f"distortion_model: {model}\ndistortion_coefficients: [{', '.join(repr(float(v)) for v in dist)}]\n"
    )


def body_poses(n: int) -> np.ndarray:
    """(n, 4, 4) world_from_body: a slow arc with some rotation."""
    out = np.tile(np.eye(4), (n, 1, 1))
    t = np.arange(n) * 0.05
    out[:, :3, 3] = np.stack([0.8 + 0.3 * t, 2.2 + 0.1 * np.sin(t), 0.9 + 0.05 * t], axis=1)
    out[:, :3, :3] = Rotation.from_rotvec(np.stack([0.05 * t, 0.2 + 0.1 * t, -0.03 * t], axis=1)).as_matrix()
    return out


def make_euroc(root: Path, n: int = 6, w: int = 160, h: int = 120, missing_right: tuple = (), missing_left: tuple = (),
               right_offset_ns: int = 0, with_cam1: bool = True, gt_rows: Optional[int] = None) -> dict:
    """Write a EuRoC sequence folder ``root`` (holding mav0/). Returns {"stamps_ns", "world_from_body", "folder"}."""
    mav0 = root / "mav0"
    stamps = [T0_NS + i * STEP_NS for i in range(n)]
    cams = [("cam0", T_BS0, missing_left, 0)] + ([("cam1", T_BS1, missing_right, right_offset_ns)] if with_cam1 else [])
    for k, (cam, T_BS, missing, offset) in enumerate(cams):
        (mav0 / cam / "data").mkdir(parents=True)
        (mav0 / cam / "sensor.yaml").write_text(sensor_yaml(T_BS, w, h))
        lines = ["#timestamp [ns],filename"]
        for i, ns in enumerate(stamps):
            ns = ns + offset
            lines.append(f"{ns},{ns}.png")
            if i not in missing:
                cv2.imwrite(str(mav0 / cam / "data" / f"{ns}.png"), textured(10 * i + k, w, h))
        (mav0 / cam / "data.csv").write_text("\n".join(lines) + "\n")
    poses = body_poses(n)
    m = n if gt_rows is None else gt_rows
    q = Rotation.from_matrix(poses[:m, :3, :3]).as_quat()  # x y z w
    lines = ["#timestamp,p_RS_R_x [m],p_RS_R_y [m],p_RS_R_z [m],q_RS_w [],q_RS_x [],q_RS_y [],q_RS_z [],v_RS_R_x [m s^-1]"]
    for i in range(m):
        p = poses[i, :3, 3]
        lines.append(f"{stamps[i]},{p[0]:.10f},{p[1]:.10f},{p[2]:.10f},{q[i, 3]:.10f},{q[i, 0]:.10f},{q[i, 1]:.10f},{q[i, 2]:.10f},0.1")
    (mav0 / "state_groundtruth_estimate0").mkdir(parents=True)
    (mav0 / "state_groundtruth_estimate0" / "data.csv").write_text("\n".join(lines) + "\n")
    return {"stamps_ns": stamps, "world_from_body": poses, "folder": root}


KITTI_P = {
    "P0": [707.0912, 0, 601.8873, 0, 0, 707.0912, 183.1104, 0, 0, 0, 1, 0],
    "P1": [707.0912, 0, 601.8873, -379.8145, 0, 707.0912, 183.1104, 0, 0, 0, 1, 0],
    "P2": [707.0912, 0, 601.8873, 46.88783, 0, 707.0912, 183.1104, 0.1178601, 0, 0, 1, 0.006203223],
    "P3": [707.0912, 0, 601.8873, -333.4597, 0, 707.0912, 183.1104, 1.93013, 0, 0, 1, 0.003318498],
}


def make_kitti(dataset: Path, seq: str = "07", n: int = 5, w: int = 640, h: int = 192, keys=("P0", "P1", "P2", "P3"),
               right: bool = True, right_size: Optional[tuple] = None, poses: bool = True) -> dict:
    """Write ``dataset/sequences/<seq>`` and ``dataset/poses/<seq>.txt``. Returns {"folder", "times", "world_from_cam0"}."""
    folder = dataset / "sequences" / seq
    (folder / "image_0").mkdir(parents=True)
    (folder / "calib.txt").write_text("".join(f"{k}: {' '.join(f'{v:.12e}' for v in KITTI_P[k])}\n" for k in keys)
                                      + "Tr: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    times = np.arange(n) * 0.1036
    (folder / "times.txt").write_text("".join(f"{t:.6e}\n" for t in times))
    for i in range(n):
        cv2.imwrite(str(folder / "image_0" / f"{i:06d}.png"), textured(i, w, h))
    if right:
        (folder / "image_1").mkdir()
        rw, rh = right_size or (w, h)
        for i in range(n):
            cv2.imwrite(str(folder / "image_1" / f"{i:06d}.png"), textured(100 + i, rw, rh))
    world_from_cam0 = np.tile(np.eye(4), (n, 1, 1))
    world_from_cam0[:, 2, 3] = np.arange(n) * 0.9  # driving forward along z, swaying sideways
    world_from_cam0[:, 0, 3] = 0.3 * np.sin(np.arange(n))
    world_from_cam0[:, :3, :3] = Rotation.from_rotvec(np.outer(np.arange(n) * 0.01, [0, 1, 0])).as_matrix()
    if poses:
        (dataset / "poses").mkdir(parents=True, exist_ok=True)
        (dataset / "poses" / f"{seq}.txt").write_text(
            "".join(" ".join(f"{v:.9e}" for v in m[:3].reshape(-1)) + "\n" for m in world_from_cam0))
    return {"folder": folder, "times": times, "world_from_cam0": world_from_cam0}
