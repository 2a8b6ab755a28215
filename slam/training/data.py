"""Training data: the real image pool, synthetic renders, homography pairs, photometric noise.

Sources
    * ``../shared/data/images`` (66 unlabelled images) - the only real training images.
      :func:`check_training_path` refuses the evaluation data (the TUM fr1_xyz sequence and
      the ``pairs/`` sets), whatever path is given.
    * the synthetic RGB-D renderer (``slam.io.synthetic``): views and view pairs of procedural
      office scenes with exact depth and poses, rendered once into a cache folder.

Images are grey uint8 (H, W). Resizing keeps the aspect ratio: the image is scaled to cover
(H, W) and centre-cropped (:func:`fit_image`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from slam.errors import InputError
from slam.training.homographies import HomographyParams, sample_homography, warp_image, warped_valid_mask

__all__ = [
    "FORBIDDEN_PARTS", "InputError", "check_training_path", "default_image_root", "list_training_images",
    "fit_image", "load_training_images", "PhotometricParams", "photometric_augment", "homography_pair",
    "render_synthetic_views", "render_rgbd_pairs", "small_camera",
]

#: path components that mark evaluation data (never used for training)
FORBIDDEN_PARTS = ("rgbd_dataset_freiburg1_xyz", "pairs")
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp")


def check_training_path(path: Union[str, os.PathLike]) -> Path:
    """Return ``path`` resolved, or raise InputError if it lies in the evaluation data
    (fr1_xyz, pairs/)."""
    p = Path(path).expanduser().resolve()
    bad = [part for part in p.parts if part in FORBIDDEN_PARTS]
    if bad:
        raise InputError(
            f"{path}: '{bad[0]}' is evaluation data (TUM fr1_xyz and the pairs/ sets are kept for evaluation); "
            f"train on ../shared/data/images and the synthetic renderer instead")
    return p


def default_image_root() -> Path:
    """``$SLAM_SHARED_DATA/images`` or ``<repo>/../shared/data/images``."""
    env = os.environ.get("SLAM_SHARED_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / "images"


def list_training_images(root: Union[str, os.PathLike, None] = None) -> list[Path]:
    """Sorted image files under ``root`` (recursive). Raises FileNotFoundError with the fix when
    the folder is missing or empty, InputError when it is evaluation data."""
    root = check_training_path(root if root is not None else default_image_root())
    if not root.is_dir():
        raise FileNotFoundError(f"training image folder {root} not found; pass --images DIR (e.g. ../shared/data/images) "
                                f"or set SLAM_SHARED_DATA")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_EXT and p.is_file())
    files = [f for f in files if not any(part in FORBIDDEN_PARTS for part in f.relative_to(root).parts)]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(_IMAGE_EXT)}) under {root}")
    return files


def fit_image(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale (area interpolation when shrinking) to cover (height, width), then centre-crop."""
    h, w = gray.shape[:2]
    s = max(height / h, width / w)
    nh, nw = max(height, int(round(h * s))), max(width, int(round(w * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    img = cv2.resize(gray, (nw, nh), interpolation=interp)
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    return np.ascontiguousarray(img[y0:y0 + height, x0:x0 + width])


def load_training_images(files: Sequence[Path], height: int, width: int) -> np.ndarray:
    """(N, H, W) uint8 grey images (each checked against the evaluation data)."""
    out = []
    for f in files:
        check_training_path(f)
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"cannot read image {f}")
        out.append(fit_image(img, height, width))
    return np.stack(out) if out else np.zeros((0, height, width), np.uint8)


@dataclass
class PhotometricParams:
    """Photometric augmentation (the SuperPoint training recipe's list)."""

    brightness: float = 40.0  # max additive brightness change (grey levels)
    contrast: tuple = (0.6, 1.4)  # multiplicative contrast range about the mean
    noise_std: tuple = (0.0, 8.0)  # additive Gaussian noise std range
    speckle_prob: float = 0.002  # max fraction of salt-and-pepper pixels
    shade: float = 0.5  # max darkening by a random soft shadow (fraction)
    motion_blur: int = 5  # max motion-blur kernel size (px, odd); 0 disables
    p_each: float = 0.5  # probability of applying each effect


def photometric_augment(img: np.ndarray, rng: np.random.Generator, params: Optional[PhotometricParams] = None) -> np.ndarray:
    """(H, W) uint8 -> (H, W) uint8 with random brightness, contrast, noise, speckle, shade, blur."""
    p = params or PhotometricParams()
    f = img.astype(np.float32)
    h, w = f.shape
    if rng.random() < p.p_each and p.brightness > 0:
        f = f + rng.uniform(-p.brightness, p.brightness)
    if rng.random() < p.p_each:
        m = f.mean()
        f = (f - m) * rng.uniform(*p.contrast) + m
    if rng.random() < p.p_each and p.shade > 0:
        centre = rng.uniform([0, 0], [w, h])
        axes = rng.uniform(0.1, 0.5, 2) * np.array([w, h])
        mask = np.zeros((h, w), np.float32)
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]) + 1, int(axes[1]) + 1),
                    float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(2.0, 0.1 * min(h, w)))
        f = f * (1.0 - rng.uniform(0, p.shade) * mask)
    if rng.random() < p.p_each and p.motion_blur >= 3:
        k = int(rng.choice(np.arange(3, p.motion_blur + 1, 2)))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(float(kernel.sum()), 1e-6)
        f = cv2.filter2D(f, -1, kernel)
    if rng.random() < p.p_each:
        f = f + rng.normal(0, rng.uniform(*p.noise_std), f.shape).astype(np.float32)
    if rng.random() < p.p_each and p.speckle_prob > 0:
        u = rng.random(f.shape)
        prob = rng.uniform(0, p.speckle_prob)
        f[u < prob / 2] = 0
        f[u > 1 - prob / 2] = 255
    return np.clip(np.round(f), 0, 255).astype(np.uint8)


def homography_pair(img: np.ndarray, rng: np.random.Generator, params: Optional[HomographyParams] = None,
                    photometric: Optional[PhotometricParams] = None, augment: bool = True) -> dict:
    """A training pair from one image: dict(image0 (H, W) uint8, image1 = warp of image0,
    h1_from_0 (3, 3) float64, valid1 (H, W) bool pixels of image1 that come from image0).
    Both images get independent photometric augmentation when ``augment``."""
    h, w = img.shape
    hom = sample_homography(h, w, rng, params)
    warped = warp_image(img, hom)
    valid = warped_valid_mask((h, w), hom)
    im0, im1 = img, warped
    if augment:
        im0 = photometric_augment(im0, rng, photometric)
        im1 = photometric_augment(im1, rng, photometric)
    return {"image0": im0, "image1": im1, "h1_from_0": hom, "valid1": valid}


# ---------------------------------------------------------------------------- synthetic renders


def small_camera(width: int, height: int):
    """The renderer's TUM fr1 camera scaled to (width, height) (same distortion coefficients)."""
    from slam.geometry.camera import PinholeCamera
    from slam.io.synthetic import FR1_CAMERA

    cam = PinholeCamera.from_dict(FR1_CAMERA)
    return cam.scaled(width / cam.width, height / cam.height)


def render_rgbd_pairs(n_pairs: int, width: int, height: int, seed: int, cache: Optional[Path] = None,
                      pairs_per_scene: int = 8, max_rotation_deg: float = 30.0,
                      baseline: tuple = (0.05, 0.5), progress=None) -> list[dict]:
    """``n_pairs`` synthetic RGB-D pairs with exact depth and poses (slam.io.synthetic.sample_pair),
    rendered at (width, height) with the scaled fr1 camera; scenes are shared by
    ``pairs_per_scene`` pairs. Cached as ``cache/pair_XXXXX.npz`` when ``cache`` is given.

    Each dict: image0, image1 (H, W) uint8 grey; depth0, depth1 (H, W) float32 metres;
    cam1_from_cam0 (4, 4) float64; camera (dict: width, height, fx, fy, cx, cy, dist)."""
    from slam.io.synthetic import make_scene, sample_pair

    cam = small_camera(width, height)
    out: list[dict] = []
    scene = None
    scene_id = None
    for i in range(n_pairs):
        path = cache / f"pair_{seed}_{width}x{height}_{i:05d}.npz" if cache is not None else None
        if path is not None and path.is_file():
            with np.load(path) as z:
                d = {k: z[k] for k in z.files}
            d["camera"] = cam.to_dict()
            out.append(d)
            continue
        sid = seed * 100003 + i // pairs_per_scene
        if scene is None or scene_id != sid:
            scene, scene_id = make_scene(sid), sid
        p = sample_pair(seed * 1000003 + i, scene=scene, camera=cam, max_rotation_deg=max_rotation_deg,
                        baseline=baseline)
        d = {"image0": cv2.cvtColor(p["image0"], cv2.COLOR_BGR2GRAY),
             "image1": cv2.cvtColor(p["image1"], cv2.COLOR_BGR2GRAY),
             "depth0": p["depth0"].astype(np.float32), "depth1": p["depth1"].astype(np.float32),
             "cam1_from_cam0": p["cam1_from_world"] @ np.linalg.inv(p["cam0_from_world"])}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez_compressed(tmp, **d)
            os.replace(tmp, path)
        d["camera"] = cam.to_dict()
        out.append(d)
        if progress is not None:
            progress(i + 1, n_pairs)
    return out


def render_synthetic_views(n_views: int, width: int, height: int, seed: int, cache: Optional[Path] = None,
                           progress=None) -> np.ndarray:
    """(n_views, H, W) uint8 grey views of synthetic scenes (both images of ceil(n/2) pairs)."""
    pairs = render_rgbd_pairs((n_views + 1) // 2, width, height, seed, cache, progress=progress)
    views = [v for p in pairs for v in (p["image0"], p["image1"])][:n_views]
    return np.stack(views) if views else np.zeros((0, height, width), np.uint8)
