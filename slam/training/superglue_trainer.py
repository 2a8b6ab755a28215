"""SuperGlue training on our own SuperPoint features (Sarlin et al. 2020).

Data (mixed in every batch, ``rgbd_fraction`` of the pairs from RGB-D):
    * homography pairs of the training pool (real images from ../shared/data/images and
      synthetic renders), photometrically augmented; ground truth from the homography;
    * RGB-D pairs of the synthetic renderer with exact depth and poses; ground truth by
      reprojection, occluded points and points leaving the image go to the dustbin.
Keypoints and descriptors come from a frozen SuperPoint (our weights) with at most
``max_keypoints`` per image; batches are padded with masks.

Loss: the negative log-likelihood of the assignment over true matches and over unmatched
points of both images through the dustbins (:func:`slam.training.losses.superglue_nll`).

Model size: ``n_layers`` self+cross pairs (official: 9). The CPU config uses 3 pairs: on this
machine a training step costs ~0.35x the official model's (so ~3x more steps fit in the time
box), inference on 1024+1024 keypoints is ~2x faster, and the fp16 weights are 8 MB instead of
24 MB. The GPU config keeps the paper's 9 pairs.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from slam.device import resolve_device
from slam.weights import load_weights_file
from slam.features.superpoint import SuperPoint, SuperPointConfig, SuperPointNet
from slam.matching.superglue import SuperGlueNet
from slam.training.checkpoint import atomic_save, export_weights
from slam.training.data import (PhotometricParams, check_training_path, homography_pair, list_training_images,
                                load_training_images, render_rgbd_pairs)
from slam.training.ground_truth import gt_from_depth, gt_from_homography
from slam.training.homographies import HomographyParams
from slam.training.losses import IGNORE, superglue_nll
from slam.training.loop import finalize, resolve_amp, train

__all__ = ["CONFIGS", "get_config", "run_superglue", "export_superglue", "FeatureSource", "collate_pairs"]

CONFIGS: dict[str, dict] = {
    "smoke": dict(height=48, width=64, max_keypoints=32, batch=2, steps=4, lr=1e-4, warmup=0, decay_start=0.6,
                  final_lr=0.1, seed=0, ckpt_every=1000, amp="none", threads=1, n_layers=1, num_heads=4,
                  sinkhorn_iterations=10, rgbd_fraction=0.5, n_rgbd_pairs=2, n_real=2, n_synthetic=0,
                  pos_th=3.0, neg_th=5.0, detection_threshold=0.0005, nll="terms"),
    "cpu": dict(height=240, width=320, max_keypoints=256, batch=4, steps=500, lr=3e-4, warmup=30, decay_start=0.6,
                final_lr=0.1, seed=0, ckpt_every=25, amp="auto", threads=1, n_layers=3, num_heads=4,
                sinkhorn_iterations=30, rgbd_fraction=0.5, n_rgbd_pairs=160, n_real=-1, n_synthetic=0,
                pos_th=3.0, neg_th=5.0, detection_threshold=0.005, nll="terms"),
    "gpu": dict(height=480, width=640, max_keypoints=1024, batch=32, steps=900_000, lr=1e-4, warmup=1000,
                decay_start=0.25, final_lr=0.05, seed=0, ckpt_every=2000, amp="auto", threads=8, n_layers=9,
                num_heads=4, sinkhorn_iterations=100, rgbd_fraction=0.5, n_rgbd_pairs=20000, n_real=-1,
                n_synthetic=0, pos_th=3.0, neg_th=5.0, detection_threshold=0.005, nll="terms"),
}

_PAIR_HOMOGRAPHY = dict(scaling_amplitude=0.3, perspective_amplitude_x=0.2, perspective_amplitude_y=0.2,
                        patch_ratio=0.85, max_angle=np.pi / 6)


def get_config(name: str, overrides: Optional[dict] = None) -> dict:
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    cfg = copy.deepcopy(CONFIGS[name])
    cfg["config_name"] = name
    for k, v in (overrides or {}).items():
        if v is not None:
            cfg[k] = v
    return cfg


class FeatureSource:
    """Frozen SuperPoint: grey images -> (kpts (K, 2), scores (K,), desc (K, 256)) torch CPU tensors."""

    def __init__(self, state_dict: dict, device: torch.device, max_keypoints: int, threshold: float, amp: str):
        cfg = SuperPointConfig(max_keypoints=max_keypoints, detection_threshold=threshold,
                               precision="bf16" if amp == "bf16" else "fp32", remove_borders=4)
        self.sp = SuperPoint(cfg, device, state_dict=state_dict)

    def __call__(self, images: list[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        feats = self.sp.extract_batch(images)
        return [(f.keypoints.float().cpu(), f.scores.float().cpu(), f.descriptors.float().cpu()) for f in feats]


def collate_pairs(items: list[dict], size: tuple[int, int], device: torch.device) -> dict:
    """Pad a list of pairs {kpts0, scores0, desc0, gt0, kpts1, ...} into SuperGlueNet's input with
    masks; gt of padded entries = IGNORE. size = (width, height)."""
    b = len(items)
    out: dict = {}
    for s in ("0", "1"):
        n = max(1, max(len(it["kpts" + s]) for it in items))
        d = items[0]["desc" + s].shape[1] if len(items[0]["desc" + s].shape) == 2 else 256
        kp = torch.zeros(b, n, 2)
        sc = torch.zeros(b, n)
        de = torch.zeros(b, n, d)
        mk = torch.zeros(b, n, dtype=torch.bool)
        gt = torch.full((b, n), IGNORE, dtype=torch.long)
        for i, it in enumerate(items):
            k = len(it["kpts" + s])
            kp[i, :k], sc[i, :k], de[i, :k] = it["kpts" + s], it["scores" + s], it["desc" + s]
            mk[i, :k] = True
            gt[i, :k] = torch.as_tensor(it["gt" + s])
        out.update({"kpts" + s: kp.to(device), "scores" + s: sc.to(device), "desc" + s: de.to(device),
                    "mask" + s: mk.to(device), "gt" + s: gt.to(device),
                    "image_size" + s: torch.tensor([list(size)] * b, dtype=torch.float32, device=device)})
    return out


def _pool(cfg: dict, images_root: Optional[Path], printer) -> np.ndarray:
    h, w = cfg["height"], cfg["width"]
    n_real = int(cfg.get("n_real", -1))
    pool = []
    if n_real != 0:
        try:
            files = list_training_images(images_root)
            files = files if n_real < 0 else files[:n_real]
            pool.append(load_training_images(files, h, w))
        except FileNotFoundError as exc:
            if cfg.get("config_name") != "smoke":
                raise
            if printer:
                printer(f"smoke config: no real training images ({exc}); homography pairs from synthetic renders")
    return np.concatenate(pool) if pool else np.zeros((0, h, w), np.uint8)


def _step_fn(cfg: dict, features: FeatureSource, pool: np.ndarray, rgbd: list[dict]) -> Callable:
    h, w = cfg["height"], cfg["width"]
    hparams = HomographyParams(**_PAIR_HOMOGRAPHY)
    photo = PhotometricParams()

    def step_fn(model, rng, tgen, step):
        items = []
        n_rgbd = int(round(cfg["batch"] * cfg["rgbd_fraction"])) if rgbd else 0
        if len(pool) == 0:
            n_rgbd = cfg["batch"]
        for _ in range(n_rgbd):
            items.append(rgbd[int(rng.integers(len(rgbd)))])
        homs = []
        for _ in range(cfg["batch"] - n_rgbd):
            img = pool[int(rng.integers(len(pool)))]
            homs.append(homography_pair(img, rng, hparams, photo))
        if homs:
            feats = features([p for hp in homs for p in (hp["image0"], hp["image1"])])
            for k, hp in enumerate(homs):
                (k0, s0, d0), (k1, s1, d1) = feats[2 * k], feats[2 * k + 1]
                g0, g1 = gt_from_homography(k0.numpy(), k1.numpy(), hp["h1_from_0"], (w, h), (w, h),
                                            cfg["pos_th"], cfg["neg_th"], valid1=hp["valid1"])
                items.append({"kpts0": k0, "scores0": s0, "desc0": d0, "gt0": g0,
                              "kpts1": k1, "scores1": s1, "desc1": d1, "gt1": g1})
        device = next(model.parameters()).device
        data = collate_pairs(items, (w, h), device)
        out = model(data)
        loss, stats = superglue_nll(out["log_assignment"], data["gt0"], data["gt1"], cfg.get("nll", "terms"))
        with torch.no_grad():
            m0 = out["matches0"]
            gt0 = data["gt0"]
            pred = m0 >= 0
            correct = (m0 == gt0) & pred
            stats["precision"] = float(correct.sum() / pred.sum().clamp_min(1))
            stats["recall"] = float(correct.sum() / (gt0 >= 0).sum().clamp_min(1))
        return loss, stats

    return step_fn


def _precompute_rgbd(cfg: dict, features: FeatureSource, cache: Path, printer) -> list[dict]:
    pairs = render_rgbd_pairs(int(cfg["n_rgbd_pairs"]), cfg["width"], cfg["height"], seed=int(cfg["seed"]) + 101,
                              cache=cache, progress=(lambda i, n: printer(f"rendered RGB-D pair {i}/{n}")
                                                     if printer and i % 20 == 0 else None))
    items = []
    for p in pairs:
        (k0, s0, d0), (k1, s1, d1) = features([p["image0"], p["image1"]])
        g0, g1 = gt_from_depth(k0.numpy(), k1.numpy(), p["depth0"], p["depth1"], p["camera"], p["cam1_from_cam0"],
                               cfg["pos_th"], cfg["neg_th"])
        items.append({"kpts0": k0, "scores0": s0, "desc0": d0, "gt0": g0,
                      "kpts1": k1, "scores1": s1, "desc1": d1, "gt1": g1})
    if printer and items:
        nm = np.mean([np.sum(it["gt0"] >= 0) for it in items])
        nk = np.mean([len(it["gt0"]) for it in items])
        printer(f"{len(items)} RGB-D pairs: {nk:.0f} keypoints and {nm:.0f} ground-truth matches per pair on average")
    return items


def _load_sp(path: Path) -> dict:
    obj = load_weights_file(path)
    sd = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def run_superglue(config: str, out: Path, *, superpoint: "Path | str", resume: bool = False, minutes: float = 10.0,
                  stop_at: Optional[int] = None, overrides: Optional[dict] = None,
                  images_root: Optional[Path] = None, device: str = "auto", printer=print,
                  finalize_early: bool = False, threads: Optional[int] = None) -> dict:
    """Run (a chunk of) SuperGlue training into ``out`` with features from ``superpoint`` weights.
    threads: torch CPU threads for this chunk (overrides the config, also on resume)."""
    out = Path(out)
    if images_root is not None:
        check_training_path(images_root)
    ckpt = out / "checkpoint.pt"
    if finalize_early:
        if not ckpt.is_file():
            raise ValueError(f"--finalize needs a training checkpoint in {out}")
        saved = load_weights_file(ckpt)["config"]
        net = SuperGlueNet(descriptor_dim=256, n_layers=int(saved["n_layers"]), num_heads=int(saved["num_heads"]),
                           sinkhorn_iterations=int(saved["sinkhorn_iterations"]))
        return finalize(out, net, lambda m, d: atomic_save(m.checkpoint(train_config=json.dumps(saved)), d / "weights.pth"),
                        printer)
    if resume and ckpt.is_file():
        cfg = dict(load_weights_file(ckpt)["config"])
    else:
        cfg = get_config(config, overrides)
        cfg["superpoint"] = str(superpoint)
    if threads:
        cfg["threads"] = int(threads)
    sp_spec = str(cfg.get("superpoint") or superpoint)
    if sp_spec == "random":  # smoke tests without trained weights: a seeded random SuperPoint
        torch.manual_seed(int(cfg.get("seed", 0)))
        sp_sd = SuperPointNet().state_dict()
    else:
        if not Path(sp_spec).is_file():
            raise FileNotFoundError(f"SuperPoint weights {sp_spec} not found; train them first "
                                    f"(tools/train_superpoint.py) or pass --superpoint PATH (or 'random' for a smoke run)")
        sp_sd = _load_sp(Path(sp_spec))
    dev = resolve_device(device)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    amp = resolve_amp(str(cfg.get("amp", "none")), dev)
    features = FeatureSource(sp_sd, dev, int(cfg["max_keypoints"]), float(cfg["detection_threshold"]), amp)
    pool = _pool(cfg, images_root, printer)
    rgbd = _precompute_rgbd(cfg, features, out / "render_cache", printer) if cfg["rgbd_fraction"] > 0 else []
    if len(pool) == 0 and not rgbd:
        raise FileNotFoundError("no training data: no real images and no RGB-D pairs")
    torch.manual_seed(int(cfg.get("seed", 0)))  # the initial weights depend only on the seed
    model = SuperGlueNet(descriptor_dim=256, n_layers=int(cfg["n_layers"]), num_heads=int(cfg["num_heads"]),
                         sinkhorn_iterations=int(cfg["sinkhorn_iterations"]))

    def export(m, d):
        atomic_save(m.checkpoint(train_config=json.dumps(cfg)), d / "weights.pth")

    res = train(out, cfg, model, _step_fn(cfg, features, pool, rgbd), resume=resume, minutes=minutes,
                stop_at=stop_at, device=dev, export=export, printer=printer)
    return {"step": res.step, "finished": res.finished, "steps_this_chunk": res.steps_this_chunk,
            "seconds": round(res.seconds, 1), "last_loss": res.last_loss, "run_dir": str(res.run_dir)}


def export_superglue(weights: Path, dest: Path, meta: Optional[dict] = None) -> Path:
    """weights.pth of a finished run -> fp16 file {"config", "state_dict", "meta"} loadable by
    slam.matching.superglue.SuperGlue."""
    obj = load_weights_file(weights)
    return export_weights(obj["state_dict"], dest, config=obj.get("config"), meta=meta)
