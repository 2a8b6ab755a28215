"""Rendering a synthetic sequence into a TUM RGB-D folder, and the cache of rendered sequences.

A sequence folder holds ``rgb/NNNNNN.png`` (uint8 BGR), ``depth/NNNNNN.png`` (uint16, metres *
5000, 0 = invalid), ``rgb.txt``/``depth.txt`` and ``groundtruth.txt`` (exact ``world_from_cam``
of the (left) colour camera),
all written through the TUM reader's and the trajectory writer's own code
(:func:`slam.io.tum.write_file_list`, :func:`slam.io.tum.encode_depth`,
:func:`slam.io.trajectory.write_tum`), so :class:`slam.io.tum.TUMReader` and
:func:`slam.io.trajectory.read_tum` read back exactly what was rendered; plus ``camera.yaml`` and
``stamp.json`` (the cache key, :func:`cache_key`; see :mod:`slam.synth` for the rule).
Timestamps are ``TIMESTAMP_BASE + i / fps`` rounded to the microsecond.

Stereo (manifest ``stereo: {baseline: b}``): the right image of frame i is
``rgb_right/NNNNNN.png``, listed in ``rgb_right.txt`` with the same timestamps (TUM list format),
taken at the same time by a camera with the same intrinsics and distortion and the same
orientation, ``b`` metres along the left camera's +x axis. ``camera.yaml`` then has a ``stereo``
mapping: ``baseline`` (m), ``cam_right_from_cam_left`` (4x4, translation (-b, 0, 0)) and
``camera_right`` (:func:`read_stereo_rig` gives the :class:`slam.geometry.stereo.StereoRig`).
With zero distortion the pair is rectified: a point at depth z (left camera)
appears ``fx * b / z`` pixels further left in the right image, on the same row. Depth and
ground truth are the left camera's.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import yaml

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera
from slam.geometry.stereo import StereoRig
from slam.io.trajectory import write_tum
from slam.io.tum import encode_depth, write_file_list
from slam.synth.config import CorridorScene, Realism, parse_dataclass
from slam.synth.corridor import make_corridor
from slam.synth.effects import SensorEffects
from slam.synth.manifest import load_manifest, manifest_camera
from slam.synth.motion import Trajectory
from slam.synth.office import make_office
from slam.synth.raycast import NEAR, renderer_for
from slam.synth.scene import Scene

__all__ = ["PIXELS_VERSION", "DEPTH_FACTOR", "TIMESTAMP_BASE", "cache_key", "frame_timestamps", "make_scene",
           "right_from_left", "render_sequence",
           "read_camera_manifest", "read_stereo_rig", "sequence_is_current", "ensure_sequence"]

#: Bump when a change of the rendering code (scene builder, textures, ray caster, motions,
#: sensor effects, writer) changes any written image, depth value, pose or timestamp.
PIXELS_VERSION = 1
DEPTH_FACTOR = 5000.0  # TUM: depth PNG value / 5000 = metres
TIMESTAMP_BASE = 1700000000.0  # seconds; frame i has timestamp BASE + i / fps (rounded to 1 us)

# Fixed parameters of the renderer that shape the output, part of the cache key.
_RENDER_CONSTANTS = {"depth_factor": DEPTH_FACTOR, "timestamp_base": TIMESTAMP_BASE, "near": NEAR}
# Manifest keys that do not change the output (text only).
_TEXT_KEYS = ("description",)


def cache_key(m: dict) -> str:
    """sha256 (hex) of what determines the rendered output of the resolved manifest ``m``: its
    parameters (all keys but the description), the renderer's fixed parameters and
    :data:`PIXELS_VERSION`. Not the source code: editing a docstring keeps every cached sequence."""
    content = {k: v for k, v in m.items() if k not in _TEXT_KEYS}
    blob = json.dumps({"manifest": content, "render": _RENDER_CONSTANTS, "pixels_version": PIXELS_VERSION},
                      sort_keys=True, default=float)
    return hashlib.sha256(blob.encode()).hexdigest()


def make_scene(m: dict) -> Scene:
    """The scene of the resolved manifest ``m`` (its ``scene`` type and parameters, its seed)."""
    spec = dict(m["scene"])
    kind = spec.pop("type")
    if kind == "corridor":
        return make_corridor(m["seed"], parse_dataclass(CorridorScene, spec, "scene"))
    return make_office(m["seed"])


def right_from_left(baseline: float) -> np.ndarray:
    """(4, 4) float64 ``cam_right_from_cam_left`` of a rectified pair with ``baseline`` metres."""
    out = np.eye(4)
    out[0, 3] = -float(baseline)
    return out


def render_sequence(name_or_manifest: Union[str, dict], out_dir: Path, n_frames: Optional[int] = None,
                    seed: Optional[int] = None, progress: bool = False, workers: Optional[int] = None,
                    root: Optional[Path] = None) -> Path:
    """Render a synthetic TUM-format RGB-D sequence into ``out_dir`` and return it.

    name_or_manifest: a profile name, a manifest path or a manifest dict (``root``: where
    ``synthetic/<name>.yaml`` manifests are looked for). The output (see the module docstring)
    is first written to a temporary sibling folder and moved into place when complete, so an
    interrupted render never looks valid. ``n_frames``/``seed`` override the manifest.
    ``workers``: render threads (default: min(2, CPU count)).
    """
    m = load_manifest(name_or_manifest, root)
    if n_frames is not None:
        if int(n_frames) < 1:
            raise InputError(f"n_frames must be >= 1, got {n_frames}")
        m["frames"] = int(n_frames)
    if seed is not None:
        m["seed"] = int(seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "stamp.json").is_file():
        raise InputError(f"{out_dir} exists and is not a synthetic sequence (no stamp.json); "
                         f"refusing to overwrite it: choose another output folder")
    t_start = time.perf_counter()
    camera = manifest_camera(m)
    realism = parse_dataclass(Realism, m["realism"], "realism")
    scene = make_scene(m)
    traj = Trajectory(scene, m["motion"], m["seed"])
    fps, n = m["fps"], m["frames"]
    poses = [traj.world_from_cam(i / fps) for i in range(n)]
    # the right camera of a stereo pair: world_from_right = world_from_left @ left_from_right
    left_from_right = np.linalg.inv(right_from_left(m["stereo"]["baseline"])) if m["stereo"] else None
    for i, world_from_cam in enumerate(poses):
        centres = [("", world_from_cam[:3, 3])]
        if left_from_right is not None:
            centres.append(("right ", (world_from_cam @ left_from_right)[:3, 3]))
        for which, centre in centres:
            what = scene.solid_at(centre, margin=0.05)
            if what is not None:
                raise InputError(f"motion of {m['name']!r} puts the {which}camera inside {what} at frame {i} "
                                 f"(position {np.round(centre, 3).tolist()}); change motion parameters or seed")
    renderer = renderer_for(camera)
    effects = SensorEffects(realism, renderer, m["seed"], fps)
    effects_right = SensorEffects(realism, renderer, m["seed"], fps, stream=1)
    scene.prepare()  # before the worker threads start

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "rgb").mkdir(parents=True)
    (tmp / "depth").mkdir()
    if left_from_right is not None:
        (tmp / "rgb_right").mkdir()
    # fast lossless PNG: SUB filter + Huffman-only deflate (~2x faster than zlib level 1, smaller)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
           cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]

    def one(i: int) -> None:
        cam_from_world = np.linalg.inv(poses[i])
        out = renderer.render(scene, cam_from_world)
        bgr = effects.color(out, i, traj.world_from_cam, cam_from_world)
        d16 = encode_depth(effects.depth(out, i), DEPTH_FACTOR)
        images = [(tmp / "rgb" / f"{i:06d}.png", bgr), (tmp / "depth" / f"{i:06d}.png", d16)]
        if left_from_right is not None:
            right_from_world = np.linalg.inv(poses[i] @ left_from_right)
            out_r = renderer.render(scene, right_from_world)
            images.append((tmp / "rgb_right" / f"{i:06d}.png",
                           effects_right.color(out_r, i, lambda t: traj.world_from_cam(t) @ left_from_right,
                                               right_from_world)))
        for path, img in images:
            if not cv2.imwrite(str(path), img, png):
                raise OSError(f"could not write {path}")

    n_workers = workers if workers is not None else max(1, min(2, os.cpu_count() or 1))
    done = 0
    try:
        if n_workers <= 1:
            results = map(one, range(n))
        else:
            ex = ThreadPoolExecutor(n_workers)
            results = ex.map(one, range(n))
        try:
            for _ in results:
                done += 1
                if progress and (done % max(1, n // 10) == 0 or done == n):
                    print(f"  rendered {done}/{n} frames", file=sys.stderr, flush=True)
        finally:
            if n_workers > 1:
                ex.shutdown(cancel_futures=True)
        _write_lists(tmp, m, camera, poses)
        stamp = {"hash": cache_key(m), "pixels_version": PIXELS_VERSION, "frames": n, "manifest": m,
                 "render_seconds": round(time.perf_counter() - t_start, 2)}
        (tmp / "stamp.json").write_text(json.dumps(stamp, indent=1, sort_keys=True, default=float))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def frame_timestamps(n: int, fps: float) -> np.ndarray:
    """(n,) float64 seconds: ``TIMESTAMP_BASE + i / fps`` rounded to the microsecond (the values
    TUM-style 6-decimal files hold), so every file of a sequence carries the same stamps."""
    return np.array([float(f"{TIMESTAMP_BASE + i / fps:.6f}") for i in range(n)])


def _write_lists(folder: Path, m: dict, camera: PinholeCamera, poses: list) -> None:
    """rgb.txt, depth.txt, groundtruth.txt and camera.yaml of a rendered sequence."""
    n, fps = len(poses), m["fps"]
    stamps = frame_timestamps(n, fps)
    origin = f"synthetic sequence '{m['name']}' rendered by slam.synth (pixels version {PIXELS_VERSION})"
    write_file_list(folder / "rgb.txt", stamps, [f"rgb/{i:06d}.png" for i in range(n)],
                    [origin, "color images", "timestamp filename"])
    write_file_list(folder / "depth.txt", stamps, [f"depth/{i:06d}.png" for i in range(n)],
                    [origin, f"depth maps (uint16 PNG, depth factor {DEPTH_FACTOR:g})", "timestamp filename"])
    if m["stereo"]:
        write_file_list(folder / "rgb_right.txt", stamps, [f"rgb_right/{i:06d}.png" for i in range(n)],
                        [origin, f"right color images (stereo baseline {m['stereo']['baseline']:g} m)",
                         "timestamp filename"])
    write_tum(folder / "groundtruth.txt", stamps, np.stack(poses),
              header={"sequence": f"synthetic/{m['name']}", "groundtruth": "exact, world_from_cam"})
    # nested "camera" (the manifest format) plus the same intrinsics at the top level, so that
    # flat readers such as PinholeCamera.from_yaml also accept the file
    cam_yaml = {"name": m["name"], "dataset": "synthetic", "camera": camera.to_dict(),
                "depth_factor": DEPTH_FACTOR, "fps": fps, **camera.to_dict()}
    if m["stereo"]:
        cam_yaml["stereo"] = {"baseline": float(m["stereo"]["baseline"]),
                              "cam_right_from_cam_left": right_from_left(m["stereo"]["baseline"]).tolist(),
                              "camera_right": camera.to_dict()}
    (folder / "camera.yaml").write_text(yaml.safe_dump(cam_yaml, sort_keys=False))


def read_camera_manifest(seq_dir: Union[str, Path]) -> PinholeCamera:
    """The camera of a rendered sequence from ``seq_dir/camera.yaml`` (nested ``camera:`` mapping,
    or flat intrinsics). Raises InputError naming the file when it is missing or invalid."""
    path = Path(seq_dir) / "camera.yaml"
    if not path.is_file():
        raise InputError(f"{path} does not exist; render the sequence with ensure_sequence / render_sequence")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must be a mapping with a 'camera' key")
    cam = data.get("camera", data)
    try:
        return PinholeCamera.from_dict(cam, source=str(path))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def read_stereo_rig(seq_dir: Union[str, Path]) -> Optional[StereoRig]:
    """The stereo rig of a rendered sequence from the ``stereo`` mapping of ``camera.yaml`` (None
    for a single-camera sequence): left = the sequence camera, right = ``camera_right``,
    ``right_from_left`` = ``cam_right_from_cam_left``; rectified when the camera has no distortion."""
    path = Path(seq_dir) / "camera.yaml"
    left = read_camera_manifest(seq_dir)
    stereo = yaml.safe_load(path.read_text()).get("stereo")
    if stereo is None:
        return None
    try:
        right = PinholeCamera.from_dict(stereo["camera_right"], source=f"{path}: stereo.camera_right")
        return StereoRig(left=left, right=right, right_from_left=np.asarray(stereo["cam_right_from_cam_left"], float),
                         rectified=not left.has_distortion)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: invalid stereo mapping ({exc}); render the sequence again") from None


def sequence_is_current(seq_dir: Path, manifest: dict) -> bool:
    """True when ``seq_dir`` holds a complete render of ``manifest`` with today's cache key."""
    stamp = Path(seq_dir) / "stamp.json"
    if not stamp.is_file():
        return False
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return data.get("hash") == cache_key(manifest) and (Path(seq_dir) / "groundtruth.txt").is_file()


def ensure_sequence(name: str, root: Path, n_frames: Optional[int] = None) -> Path:
    """Return ``root/"synthetic"/name``, rendering it first if missing or stale.

    The manifest is ``root/synthetic/<name>.yaml`` when present, else the embedded
    ``PROFILES[name]``. Stale = the stamp's key differs from :func:`cache_key` of the resolved
    manifest (with ``n_frames``). Prints one line when it renders.
    """
    m = load_manifest(name, root)
    if n_frames is not None:
        m["frames"] = int(n_frames)
    out = Path(root) / "synthetic" / name
    if sequence_is_current(out, m):
        return out
    print(f"rendering synthetic sequence '{name}' ({m['frames']} frames, {m['motion']['type']} motion) "
          f"into {out} ...", flush=True)
    return render_sequence(m, out)
