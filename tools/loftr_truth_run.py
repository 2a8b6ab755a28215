"""Run the SLAM on a rendered synthetic sequence with a *truth* LoFTR: the detector-free paths
(``loop_closing.matcher=loftr``, ``tracking.reloc_matcher=loftr``, ``tracking.mono_init_matcher=loftr``)
get the exact 2D-2D correspondences of the two images from the renderer's depth and ground truth,
so their plumbing in the whole system (threads, map lock, snapping, verification, correction) is
measured without the official checkpoints, which cannot be downloaded here.

    PYTHONPATH=. python tools/loftr_truth_run.py --seq synthetic/loop_short --mode mono \
        loop_closing.matcher=loftr features=orb matcher=nn

The stub answers as LoFTR does: points on the 1/8 grid of image 0 (cell centres) that have depth,
moved into image 1 with the true relative pose, kept where image 1's depth agrees (not occluded,
within 2 %), in distorted pixels of the images as given, with ``--noise-px`` of Gaussian noise
on the image-1 side. Images are identified by their bytes (the reader's frames are the rendered
PNGs; the SLAM keeps grey copies, compared as such). Prints one line; the run folder's metrics.json has the loop-closing report.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

import slam.matching.loftr.matcher as loftr_module
from slam.app import open_input, run_slam
from slam.config import load_config
from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import se3_inverse, transform_points
from slam.io.tum import read_file_list, read_groundtruth

STRIDE = 8


def _key(image: np.ndarray) -> str:
    """Identity of a frame's image, colour as read or the grey copy the SLAM keeps."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return hashlib.sha1(np.ascontiguousarray(grey).tobytes()).hexdigest()


class TruthLoFTR:
    """LoFTR's image-matching interface (match_images / match_image_pairs) from the renderer's
    truth. seq_dir: the rendered sequence (rgb.txt, depth.txt, groundtruth.txt, camera)."""

    def __init__(self, seq_dir: Path, camera: PinholeCamera, noise_px: float = 0.2, seed: int = 0) -> None:
        self.camera = camera
        self.noise_px = noise_px
        self.rng = np.random.default_rng(seed)
        rgb = read_file_list(seq_dir / "rgb.txt")
        dep = read_file_list(seq_dir / "depth.txt")
        ts, world_from_cam = read_groundtruth(seq_dir / "groundtruth.txt")
        if not (len(rgb) == len(dep) == len(ts)) or not np.allclose([t for t, _ in rgb], ts, atol=1e-6):
            raise SystemExit(f"{seq_dir}: rgb.txt, depth.txt and groundtruth.txt do not list the same frames (a rendered sequence does)")
        self.frames: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # image key -> (cam_from_world, depth (H, W) m)
        for (_, (r,)), (_, (d,)), wfc in zip(rgb, dep, world_from_cam):
            img = cv2.imread(str(seq_dir / r), cv2.IMREAD_COLOR)
            depth = cv2.imread(str(seq_dir / d), cv2.IMREAD_UNCHANGED).astype(np.float64) / 5000.0
            self.frames[_key(img)] = (se3_inverse(wfc), depth)
        self.calls = 0

    def _lookup(self, image: np.ndarray):
        found = self.frames.get(_key(image))
        if found is None:
            raise KeyError("an image that is not a frame of the rendered sequence")
        return found

    def match_images(self, image0: np.ndarray, image1: np.ndarray):
        self.calls += 1
        cam = self.camera
        c0, d0 = self._lookup(image0)
        c1, d1 = self._lookup(image1)
        h, w = d0.shape
        ys, xs = np.mgrid[STRIDE // 2:h:STRIDE, STRIDE // 2:w:STRIDE]
        uv0 = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
        z0 = d0[uv0[:, 1].astype(int), uv0[:, 0].astype(int)]
        ok = z0 > 0
        uv0, z0 = uv0[ok], z0[ok]
        p0 = cam.unproject(cam.undistort_points(uv0), z0)
        p1 = transform_points(c1 @ se3_inverse(c0), p0)
        uv1, front = cam.project(p1)
        uv1 = np.where(front[:, None], uv1, -1.0)  # behind the camera: outside the image
        inside = front & cam.in_image(np.where(front[:, None], uv1, 0.0), margin=1.0)
        xi = np.clip(np.rint(uv1[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.rint(uv1[:, 1]).astype(int), 0, h - 1)
        z1 = d1[yi, xi]
        seen = inside & (z1 > 0) & (np.abs(z1 - p1[:, 2]) < 0.02 * p1[:, 2])
        uv1 = uv1[seen] + self.rng.normal(0.0, self.noise_px, (int(seen.sum()), 2))
        return SimpleNamespace(pts0=uv0[seen].astype(np.float32), pts1=uv1.astype(np.float32),
                               confidence=np.ones(int(seen.sum()), np.float32))

    def match_image_pairs(self, images0, images1):
        return [self.match_images(a, b) for a, b in zip(images0, images1)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", required=True, help="synthetic/<profile> (rendered, with depth and exact ground truth)")
    ap.add_argument("--mode", default="rgbd", choices=("rgbd", "mono"))
    ap.add_argument("--out", default="runs")
    ap.add_argument("--noise-px", type=float, default=0.2)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    cfg = load_config(None, [*a.overrides, f"mode={a.mode}", f"output.root={a.out}"])
    inputs = open_input(a.seq, cfg, data_root=None)
    seq_dir = Path(getattr(inputs.source, "folder", ""))  # a rendered synthetic sequence is read as a TUM folder
    if not (seq_dir / "depth.txt").is_file() or not (seq_dir / "groundtruth.txt").is_file():
        raise SystemExit(f"{a.seq}: needs a rendered sequence folder with depth.txt and groundtruth.txt (synthetic/<profile>)")
    stub = TruthLoFTR(seq_dir, inputs.camera, noise_px=a.noise_px)
    loftr_module.LoFTR = lambda *args, **kw: stub  # what slam.system.build_dense constructs
    m = run_slam(cfg, inputs)
    lc = m.get("loop_closing") or {}
    ev = m.get("eval") or {}
    ate = ev.get("ate_rmse_m")
    print(f"{a.seq} ({cfg.mode}, loop_closing.matcher={cfg.loop_closing.matcher}): tracked {m['frames_tracked']}/{m['frames_in']}, "
          f"ATE {'n/a' if ate is None else f'{100 * ate:.2f} cm'}, loops accepted {lc.get('accepted')} of {lc.get('verified')} "
          f"verified ({lc.get('loftr_verifications')} from LoFTR matches, {lc.get('loftr_match_ms_total', 0):.0f} ms matching), "
          f"stub calls {stub.calls}; run folder {m['run_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
