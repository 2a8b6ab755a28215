"""The training pool of the vocabularies and cached descriptor extraction (``python -m slam vocab``).

Training pool (never the sequences we evaluate on):

- the real images of ``../shared/data/images`` (67: ICL-NUIM living room, TUM fr3 long office,
  Photo Tourism, Oxford graf), long side at most 640 px, each also augmented (a zoomed
  rotation either way and a half-size copy);
- views rendered by the synthetic renderer in rooms built from seeds 101.. (random viewpoints
  over the desk and the walls, with the "desk" profile's sensor effects). The profiles' own
  rooms (seeds 1-8, the synthetic sequences we evaluate SLAM on, ``synthetic/loop*`` included) and the evaluation rooms of
  ``vocab eval`` (seeds 1, 201-203) and of the tests (301-304) are never used.

Descriptors are cached per data set and extractor setting, so that trying other k / L values
costs only the clustering.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from slam.errors import InputError
from slam.loop.vocabulary import DESCRIPTOR_KINDS

log = logging.getLogger(__name__)

TRAIN_SCENE_SEED0 = 101  # rooms 101, 102, ... (evaluation: 1 and 201-203; tests: 301-304; SLAM profiles: 1-8)
POOL_VERSION = 1
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp")


def default_data_dir() -> Path:
    """``$SLAM_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("SLAM_SHARED_DATA")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def default_images_dir() -> Path:
    """The training pool's real images: ``<shared data>/images``."""
    return default_data_dir() / "images"


# ----------------------------------------------------------------------------- training pool
def real_images(folder: Path, max_side: int = 640) -> list[tuple[str, np.ndarray]]:
    """Every image under ``folder`` (sorted), resized so the long side is at most ``max_side``:
    [(relative name, (H, W, 3) uint8 BGR), ...]. InputError when there is none."""
    import cv2

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    out = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("skipping %s: not readable as an image", p)
            continue
        s = max_side / max(img.shape[:2])
        if s < 1:
            img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        out.append((str(p.relative_to(folder)), img))
    if not out:
        raise InputError(f"no training images in {folder}; pass --images DIR (a folder of png/jpg images)")
    return out


def augment(name: str, img: np.ndarray, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Two zoomed rotations (15-30 degrees, each way, zoomed so no border shows) and a half-size
    copy of an image."""
    import cv2

    h, w = img.shape[:2]
    out = []
    for sign in (1, -1):
        ang = sign * float(rng.uniform(15, 30))
        a = math.radians(abs(ang))
        zoom = max(math.cos(a) + (w / h) * math.sin(a), math.cos(a) + (h / w) * math.sin(a))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, zoom)
        out.append((f"{name}@rot{ang:+.0f}", cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR)))
    out.append((f"{name}@half", cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)))
    return out


def synthetic_images(n_rooms: int, views_per_room: int, seed0: int = TRAIN_SCENE_SEED0) -> list[tuple[str, np.ndarray]]:
    """Views of rooms ``seed0 .. seed0 + n_rooms - 1`` from random viewpoints, in pairs sharing
    a target (the renderer's ``sample_pair``), with the "desk" profile's sensor effects."""
    from slam.synth.office import make_office as make_scene
    from slam.synth.profiles import PROFILES
    from slam.training.synthetic_pairs import sample_pair

    realism = dict(PROFILES["desk"]["realism"])
    out = []
    for r in range(n_rooms):
        seed = seed0 + r
        scene = make_scene(seed)
        for j in range((views_per_room + 1) // 2):
            p = sample_pair(seed * 1000 + j, scene=scene, realism=realism, max_rotation_deg=45.0, baseline=(0.1, 1.0))
            out += [(f"room{seed}/{j}a", p["image0"]), (f"room{seed}/{j}b", p["image1"])][: views_per_room - 2 * j]
    return out


def pool_spec(args) -> dict:
    return {"version": POOL_VERSION, "images": str(args.images) if args.images else None,
            "augment": bool(args.augment), "synthetic_rooms": args.synthetic_rooms,
            "synthetic_views_per_room": args.synthetic_views, "synthetic_seed0": TRAIN_SCENE_SEED0,
            "max_side": 640}


def build_pool(spec: dict, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    images: list[tuple[str, np.ndarray]] = []
    if spec["images"]:
        real = real_images(Path(spec["images"]), spec["max_side"])
        images += real
        if spec["augment"]:
            rng = np.random.default_rng(seed)
            for name, img in real:
                images += augment(name, img, rng)
    if spec["synthetic_rooms"] > 0 and spec["synthetic_views_per_room"] > 0:
        images += synthetic_images(spec["synthetic_rooms"], spec["synthetic_views_per_room"], spec["synthetic_seed0"])
    if not images:
        raise InputError("the training pool is empty: give --images DIR and/or --synthetic-rooms N")
    return images


# ----------------------------------------------------------------------------- descriptors
def _to_numpy(desc, binary: bool) -> np.ndarray:
    d = desc.detach().cpu().numpy() if hasattr(desc, "detach") else np.asarray(desc)
    return d.astype(np.uint8 if binary else np.float32, copy=False)


def build_config(features: str, overrides: list[str]):
    from slam.config import load_config

    return load_config(None, [f"features={features}"] + list(overrides))


def cached_descriptors(cfg, key: dict, images_fn: Callable[[], list], cache: Optional[Path],
                       threads: int) -> tuple[list[np.ndarray], list[str]]:
    """Descriptors of images with the configured extractor, cached under a hash of ``key`` and
    the extractor's settings. images_fn() -> [(name, (H, W, 3) uint8 BGR), ...], called only on
    a cache miss. Returns ([(n_i, D) uint8 or float32], names)."""
    import dataclasses

    kind = cfg.features
    binary = DESCRIPTOR_KINDS[kind][0]
    sub = getattr(cfg, kind, None)
    full = json.dumps({"data": key, "features": kind, "settings": dataclasses.asdict(sub) if sub is not None else None},
                      sort_keys=True, default=str)
    path = cache / f"{kind}_{hashlib.sha1(full.encode()).hexdigest()[:16]}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            desc, lens, names = z["desc"], z["lens"], [str(n) for n in z["names"]]
        log.info("descriptors from the cache %s", path)
        return np.split(desc.astype(np.uint8 if binary else np.float32), np.cumsum(lens)[:-1]), names
    import torch

    from slam.system import build_extractor

    torch.set_num_threads(max(int(threads), 1))
    ext = build_extractor(cfg, torch.device("cpu"))
    images = images_fn()
    sets, names = [], []
    t0 = time.perf_counter()
    for i, (name, img) in enumerate(images):
        with torch.inference_mode():
            sets.append(_to_numpy(ext.extract(img).descriptors, binary))
        names.append(name)
        if (i + 1) % 50 == 0:
            log.info("%s: %d/%d images, %.0f s", kind, i + 1, len(images), time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part.npz")
        np.savez(tmp, desc=np.concatenate(sets).astype(np.uint8 if binary else np.float16),
                 lens=np.array([len(s) for s in sets]), names=np.array(names))
        tmp.replace(path)
    return sets, names


def pool_descriptors(cfg, spec: dict, cache: Optional[Path], threads: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Descriptors of every training-pool image (cached): ([(n_i, D)], names)."""
    return cached_descriptors(cfg, {"pool": spec, "seed": seed}, lambda: build_pool(spec, seed), cache, threads)
