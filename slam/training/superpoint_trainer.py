"""SuperPoint's self-supervised recipe in three stages (DeTone et al. 2018).

1. ``magicpoint``: the detector (SuperPointNet, descriptor head unused) trained on Synthetic
   Shapes with homographic and photometric augmentation; loss: 65-bin cross-entropy.
2. ``adapt``: homographic adaptation of the current detector on the training pool (the real
   images in ../shared/data/images plus synthetic renders) -> pseudo ground-truth points.
3. ``joint``: detector + descriptor trained on homography pairs of the pool with the pseudo
   labels: L = L_p(X) + L_p(X') + lambda * L_d (hinge descriptor loss, m_p = 1, m_n = 0.2,
   lambda_d = 250, lambda = 1e-4). Initialised from the MagicPoint weights.

``round`` > 1 iterates adaptation: ``adapt`` of round r uses the ``joint`` model of round r-1.

Network: SuperPointNet with BatchNorm after each ReLU (``batch_norm=True`` in the cpu/gpu
configs, as in the reference TensorFlow training code; without it the plain VGG stack did not
leave the "dustbin everywhere" plateau within the CPU budget), the dustbin logit initialised at
the label prior (:func:`init_detector_prior`). Such weights load in
slam.features.superpoint.SuperPoint with the "open" descriptor convention (cell centres at
8j + 3.5 px), the same convention as the descriptor loss here.

Run layout under ``out``: ``magicpoint/``, ``adapt_r1/`` (labels.npz), ``joint_r1/``, ... each a
run folder of :mod:`slam.training.loop` (checkpoint.pt, log.jsonl, weights.pth, status.json).
Configs: ``smoke`` (CI, seconds, tiny images), ``cpu`` (reduced resolution, minutes), ``gpu``
(the paper's scale).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from slam.errors import InputError
from slam.device import resolve_device
from slam.features.superpoint import SuperPointNet
from slam.training.checkpoint import atomic_save, export_weights
from slam.training.data import (PhotometricParams, check_training_path, fit_image, homography_pair,
                                list_training_images, load_training_images, photometric_augment,
                                render_synthetic_views)
from slam.training.homographic_adaptation import AdaptationConfig, homographic_adaptation, network_detector, pseudo_points
from slam.training.homographies import HomographyParams, sample_homography, warp_image, warp_points, warped_valid_mask
from slam.training.losses import cell_valid_mask, detector_loss, keypoint_map, points_to_labels, superpoint_loss
from slam.training.loop import TrainResult, finalize, resolve_amp, train
from slam.training.synthetic_shapes import ShapesConfig, SyntheticShapes

__all__ = ["CONFIGS", "get_config", "run_stage", "stage_dir", "load_labels", "STAGES"]

STAGES = ("magicpoint", "adapt", "joint")

_SHAPES_HOMOGRAPHY = dict(scaling_amplitude=0.2, perspective_amplitude_x=0.2, perspective_amplitude_y=0.2,
                          patch_ratio=0.85, max_angle=np.pi / 2)
# Joint training: the paper's sampling, rotations limited to +-45 deg (SLAM and the evaluation
# sets are mostly upright; full +-90 deg buys rotation invariance at the cost of distinctiveness).
_JOINT_HOMOGRAPHY = dict(scaling_amplitude=0.2, perspective_amplitude_x=0.2, perspective_amplitude_y=0.2,
                         patch_ratio=0.85, max_angle=np.pi / 4)

CONFIGS: dict[str, dict] = {
    "smoke": {
        "magicpoint": dict(height=48, width=64, batch=2, steps=4, lr=1e-3, warmup=0, decay_start=0.6, final_lr=0.1,
                           seed=0, ckpt_every=1000, amp="none", threads=1, render_scale=1, batch_norm=True),
        "adapt": dict(height=48, width=64, n_real=2, n_synthetic=2, num_homographies=3, threshold=0.001,
                      seed=0, amp="none", threads=1),
        "joint": dict(height=48, width=64, batch=1, steps=4, lr=1e-3, warmup=0, decay_start=0.6, final_lr=0.1,
                      seed=0, ckpt_every=1000, amp="none", threads=1, lambda_loss=1e-4, lambda_d=250.0,
                      pos_margin=1.0, neg_margin=0.2, batch_norm=True),
    },
    "cpu": {
        "magicpoint": dict(height=120, width=160, batch=8, steps=400, lr=1e-3, warmup=20, decay_start=0.6,
                           final_lr=0.1, seed=0, ckpt_every=25, amp="auto", threads=1, render_scale=2, batch_norm=True),
        "adapt": dict(height=240, width=320, n_real=-1, n_synthetic=64, num_homographies=20, threshold=0.015,
                      seed=0, amp="auto", threads=1),
        "joint": dict(height=240, width=320, batch=2, steps=600, lr=5e-4, warmup=20, decay_start=0.6, final_lr=0.1,
                      seed=0, ckpt_every=25, amp="auto", threads=1, lambda_loss=1e-4, lambda_d=250.0,
                      pos_margin=1.0, neg_margin=0.2, batch_norm=True),
    },
    "gpu": {
        "magicpoint": dict(height=240, width=320, batch=64, steps=200_000, lr=1e-3, warmup=500, decay_start=0.8,
                           final_lr=0.1, seed=0, ckpt_every=2000, amp="auto", threads=8, render_scale=2, batch_norm=True),
        "adapt": dict(height=240, width=320, n_real=-1, n_synthetic=4000, num_homographies=100, threshold=0.015,
                      seed=0, amp="auto", threads=8),
        "joint": dict(height=240, width=320, batch=32, steps=200_000, lr=1e-3, warmup=500, decay_start=0.8,
                      final_lr=0.1, seed=0, ckpt_every=2000, amp="auto", threads=8, lambda_loss=1e-4,
                      lambda_d=250.0, pos_margin=1.0, neg_margin=0.2, batch_norm=True),
    },
}


def get_config(name: str, stage: str, overrides: Optional[dict] = None) -> dict:
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    cfg = copy.deepcopy(CONFIGS[name][stage])
    cfg["config_name"] = name
    cfg["stage"] = stage
    for k, v in (overrides or {}).items():
        if v is not None:
            cfg[k] = v
    return cfg


def stage_dir(out: Path, stage: str, round_: int = 1) -> Path:
    return Path(out) / ("magicpoint" if stage == "magicpoint" else f"{stage}_r{round_}")


def _say(printer, msg):
    if printer:
        printer(msg)


def _export_sp(model: torch.nn.Module, run_dir: Path, cfg: dict) -> None:
    atomic_save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "config": cfg},
                run_dir / "weights.pth")


def init_detector_prior(model: SuperPointNet, dustbin_prob: float = 0.9) -> None:
    """Start the detector at the label prior: the dustbin logit exceeds each of the 64 position
    logits by log(64 p / (1 - p)), so the first steps do not spend themselves learning that most
    cells hold no point (with BatchNorm on the logits this bias would otherwise take ~1000 steps)."""
    bias = float(np.log(64 * dustbin_prob / (1 - dustbin_prob)))
    with torch.no_grad():
        if model.batch_norm:
            model.bnPb.bias.zero_()
            model.bnPb.bias[64] = bias
        else:
            model.convPb.bias[64] += bias


def _has_bn(state_dict: dict) -> bool:
    return any(k.startswith("bn") for k in state_dict)


def _load_sp_weights(path: Path) -> dict:
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    return obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj


# ------------------------------------------------------------------------------------------ stage 1


def _magicpoint_step_fn(cfg: dict) -> Callable:
    shapes = SyntheticShapes(ShapesConfig(height=cfg["height"], width=cfg["width"],
                                          render_scale=int(cfg.get("render_scale", 2))))
    hparams = HomographyParams(**_SHAPES_HOMOGRAPHY)
    photo = PhotometricParams()

    def step_fn(model, rng, tgen, step):
        imgs, maps, valids = [], [], []
        for _ in range(cfg["batch"]):
            img, pts = shapes.sample(rng)
            if rng.random() < 0.5:  # homographic augmentation (kept inside the image)
                hm = sample_homography(cfg["height"], cfg["width"], rng, hparams)
                img = warp_image(img, hm)
                pts = warp_points(pts, hm)
                valid = warped_valid_mask(img.shape, hm, erode=2)
            else:
                valid = np.ones(img.shape, bool)
            img = photometric_augment(img, rng, photo)
            imgs.append(img)
            maps.append(torch.from_numpy(np.asarray(pts, np.float32)))
            valids.append(valid)
        device = next(model.parameters()).device
        x = torch.from_numpy(np.stack(imgs)).float().div_(255.0)[:, None].to(device)
        kmap = keypoint_map(maps, cfg["height"], cfg["width"])
        labels = points_to_labels(kmap, generator=tgen).to(device)
        vcells = cell_valid_mask(torch.from_numpy(np.stack(valids))).to(device)
        out = model(x.contiguous(memory_format=torch.channels_last))
        loss = detector_loss(out["logits"], labels, vcells)
        with torch.no_grad():
            pred = out["logits"].argmax(1)
            pos = labels < 64
            prec = ((pred == labels) & pos).sum() / (pred < 64).sum().clamp_min(1)
            rec = ((pred == labels) & pos).sum() / pos.sum().clamp_min(1)
        return loss, {"cell_precision": float(prec), "cell_recall": float(rec)}

    return step_fn


# ------------------------------------------------------------------------------------------ stage 2


def _training_pool(cfg: dict, images_root: Optional[Path], cache: Path, printer) -> tuple[np.ndarray, list[str]]:
    """(N, H, W) uint8 pool: real images (n_real; -1 = all, skipped with a note if the folder is
    missing in the smoke config) then n_synthetic renderer views."""
    h, w = cfg["height"], cfg["width"]
    imgs, names = [], []
    n_real = int(cfg.get("n_real", -1))
    if n_real != 0:
        try:
            files = list_training_images(images_root)
        except FileNotFoundError as exc:
            if cfg.get("config_name") != "smoke":
                raise
            _say(printer, f"smoke config: no real training images ({exc}); using synthetic renders only")
            files = []
        files = files if n_real < 0 else files[:n_real]
        if files:
            imgs.append(load_training_images(files, h, w))
            names += [str(f) for f in files]
    n_syn = int(cfg.get("n_synthetic", 0))
    if n_syn > 0:
        # render at a fixed camera size and fit to (h, w): the cache is shared between resolutions
        rw, rh = (w, h) if w * 3 == h * 4 else (max(64, w), max(48, w * 3 // 4))
        views = render_synthetic_views(n_syn, rw, rh, seed=int(cfg.get("seed", 0)) + 17, cache=cache,
                                       progress=(lambda i, n: _say(printer, f"rendered synthetic pair {i}/{n}"))
                                       if printer else None)
        imgs.append(np.stack([fit_image(v, h, w) for v in views]))
        names += [f"synthetic:{i}" for i in range(len(views))]
    if not imgs:
        raise FileNotFoundError("the training pool is empty: no real images and n_synthetic = 0")
    return np.concatenate(imgs), names


def run_adapt(out: Path, cfg: dict, detector_weights: Path, resume: bool, minutes: float, device: torch.device,
              images_root: Optional[Path] = None, printer=print) -> dict:
    """Homographic adaptation over the pool; resumable per image. Writes ``labels.npz`` with
    images (N, H, W) uint8, points (K, 2) float32, offsets (N+1,) int64 (image i owns
    points[offsets[i]:offsets[i+1]]) and names."""
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    part = run_dir / "labels_partial.npz"
    final = run_dir / "labels.npz"
    if final.is_file():
        if not resume:
            raise InputError(f"{run_dir} already holds labels.npz; pass --resume (nothing to do) or another --out")
        _say(printer, f"{final} exists: adaptation already finished")
        return {"finished": True, "labels": str(final)}
    if part.is_file() and not resume:
        raise InputError(f"{run_dir} holds a partial adaptation; pass --resume to continue it")
    cache = run_dir.parent / "render_cache"
    pool, names = _training_pool(cfg, images_root, cache, printer)
    sd = _load_sp_weights(detector_weights)
    net = SuperPointNet(batch_norm=_has_bn(sd))
    net.load_state_dict(sd)
    net.eval().to(device).to(memory_format=torch.channels_last)
    amp = resolve_amp(str(cfg.get("amp", "none")), device)
    detect = network_detector(net, device, amp)
    acfg = AdaptationConfig(num_homographies=int(cfg["num_homographies"]), threshold=float(cfg["threshold"]),
                            homography=HomographyParams())
    points: list[np.ndarray] = []
    if part.is_file():
        with np.load(part) as z:
            offs, pts = z["offsets"], z["points"]
        points = [pts[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]
        _say(printer, f"resuming adaptation at image {len(points)}/{len(pool)}")
    t0 = time.monotonic()
    deadline = t0 + 60 * minutes
    per_image: list[float] = []

    def dump(path):
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in points])]).astype(np.int64)
        allp = np.concatenate(points).astype(np.float32) if points else np.zeros((0, 2), np.float32)
        tmp = path.with_name(path.stem + ".tmp.npz")
        if path == final:
            np.savez_compressed(tmp, images=pool, points=allp, offsets=offsets, names=np.array(names),
                                config=json.dumps(cfg), detector=str(detector_weights))
        else:
            np.savez_compressed(tmp, points=allp, offsets=offsets)
        tmp.replace(path)

    while len(points) < len(pool):
        i = len(points)
        ts = time.monotonic()
        rng = np.random.default_rng([int(cfg.get("seed", 0)), i])  # per image: resume-independent
        res = homographic_adaptation(pool[i], detect, rng, acfg)
        points.append(pseudo_points(res["prob"], acfg))
        per_image.append(time.monotonic() - ts)
        if printer and (i % 10 == 0 or i == len(pool) - 1):
            printer(f"adapt image {i + 1}/{len(pool)}: {len(points[-1])} points ({per_image[-1]:.1f} s)")
        if i % 5 == 4:
            dump(part)
        if time.monotonic() + float(np.mean(per_image[-5:])) > deadline and len(points) < len(pool):
            dump(part)
            _say(printer, f"time box reached after {len(points)}/{len(pool)} images; rerun with --resume")
            return {"finished": False, "done": len(points), "total": len(pool)}
    dump(final)
    if part.is_file():
        part.unlink()
    counts = [len(p) for p in points]
    summary = {"finished": True, "images": len(pool), "mean_points": float(np.mean(counts)),
               "seconds": time.monotonic() - t0, "labels": str(final)}
    (run_dir / "status.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_labels(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """labels.npz -> (images (N, H, W) uint8, list of N (K_i, 2) float32 point arrays)."""
    with np.load(path) as z:
        images, pts, offs = z["images"], z["points"], z["offsets"]
    return images, [pts[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]


# ------------------------------------------------------------------------------------------ stage 3


def _joint_step_fn(cfg: dict, images: np.ndarray, points: list[np.ndarray]) -> Callable:
    hparams = HomographyParams(**_JOINT_HOMOGRAPHY)
    photo = PhotometricParams()
    h, w = cfg["height"], cfg["width"]
    if images.shape[1:] != (h, w):
        raise ValueError(f"labels are for {images.shape[1:]} images but the config trains at {(h, w)}; "
                         f"rerun --stage adapt with the same config")

    def step_fn(model, rng, tgen, step):
        im0, im1, p0, p1, homs, v1 = [], [], [], [], [], []
        for _ in range(cfg["batch"]):
            k = int(rng.integers(len(images)))
            pair = homography_pair(images[k], rng, hparams, photo)
            pts = points[k]
            wp = warp_points(pts, pair["h1_from_0"])
            inside = np.isfinite(wp).all(1)
            ij = np.round(wp[inside]).astype(int)
            ok = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
            ok[ok] = pair["valid1"][ij[ok, 1], ij[ok, 0]]
            im0.append(pair["image0"])
            im1.append(pair["image1"])
            p0.append(torch.from_numpy(pts))
            p1.append(torch.from_numpy(wp[inside][ok].astype(np.float32)))
            homs.append(pair["h1_from_0"])
            v1.append(pair["valid1"])
        device = next(model.parameters()).device
        x = torch.from_numpy(np.stack(im0 + im1)).float().div_(255.0)[:, None].to(device)
        out = model(x.contiguous(memory_format=torch.channels_last))
        b = cfg["batch"]
        o0 = {k: v[:b] for k, v in out.items()}
        o1 = {k: v[b:] for k, v in out.items()}
        lab0 = points_to_labels(keypoint_map(p0, h, w), generator=tgen).to(device)
        lab1 = points_to_labels(keypoint_map(p1, h, w), generator=tgen).to(device)
        valid1 = cell_valid_mask(torch.from_numpy(np.stack(v1))).to(device)
        hom = torch.from_numpy(np.stack(homs)).float().to(device)
        loss, stats = superpoint_loss(o0, o1, lab0, lab1, hom, None, valid1, lambda_loss=float(cfg["lambda_loss"]),
                                      pos_margin=float(cfg["pos_margin"]), neg_margin=float(cfg["neg_margin"]),
                                      lambda_d=float(cfg["lambda_d"]))
        return loss, stats

    return step_fn


# ------------------------------------------------------------------------------------------ driver


def run_stage(stage: str, config: str, out: Path, *, resume: bool = False, minutes: float = 10.0,
              round_: int = 1, stop_at: Optional[int] = None, overrides: Optional[dict] = None,
              images_root: Optional[Path] = None, init: Optional[Path] = None, labels: Optional[Path] = None,
              device: str = "auto", printer=print, finalize_early: bool = False,
              threads: Optional[int] = None) -> dict:
    """Run (a chunk of) one stage. Returns a summary dict (step, finished, run_dir, ...).

    init: weights to start ``joint`` from / to run ``adapt`` with (default: the previous stage
    in ``out``); labels: labels.npz for ``joint`` (default ``out/adapt_r<round>/labels.npz``);
    finalize_early: write weights.pth from the latest checkpoint and mark the stage finished
    (the learning-rate schedule stopped early; recorded in status.json); threads: torch CPU
    threads for this chunk (overrides the config, also on resume)."""
    out = Path(out)
    if images_root is not None:
        check_training_path(images_root)
    run_dir = stage_dir(out, stage, round_)
    ckpt = run_dir / "checkpoint.pt"
    if finalize_early:
        if stage == "adapt" or not ckpt.is_file():
            raise ValueError(f"--finalize needs a training checkpoint in {run_dir} (stages magicpoint / joint)")
        saved = torch.load(str(ckpt), map_location="cpu", weights_only=True)["config"]
        model = SuperPointNet(batch_norm=bool(saved.get("batch_norm", False)))
        return finalize(run_dir, model, lambda m, d: _export_sp(m, d, saved), printer)
    if resume and ckpt.is_file():  # the run's own config wins on resume
        saved = torch.load(str(ckpt), map_location="cpu", weights_only=True)["config"]
        cfg = dict(saved)
        if cfg.get("config_name") != config:
            _say(printer, f"note: resuming a '{cfg.get('config_name')}' run; --config {config} ignored")
    else:
        cfg = get_config(config, stage, overrides)
    if threads:
        cfg["threads"] = int(threads)
    dev = resolve_device(device)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    torch.manual_seed(int(cfg.get("seed", 0)))  # the initial weights depend only on the seed
    if stage == "magicpoint":
        model = SuperPointNet(batch_norm=bool(cfg.get("batch_norm", False)))
        init_detector_prior(model)
        model = model.to(memory_format=torch.channels_last)
        res = train(run_dir, cfg, model, _magicpoint_step_fn(cfg), resume=resume, minutes=minutes, stop_at=stop_at,
                    device=dev, export=lambda m, d: _export_sp(m, d, cfg), printer=printer)
        return _summary(res)
    if stage == "adapt":
        det = Path(init) if init else (stage_dir(out, "magicpoint") if round_ == 1 else stage_dir(out, "joint", round_ - 1)) / "weights.pth"
        if not det.is_file():
            raise FileNotFoundError(f"detector weights {det} not found; finish the previous stage first "
                                    f"(python tools/train_superpoint.py --stage {'magicpoint' if round_ == 1 else 'joint'} ...)"
                                    f" or pass --init WEIGHTS")
        return run_adapt(run_dir, cfg, det, resume, minutes, dev, images_root, printer)
    if stage == "joint":
        lab = Path(labels) if labels else stage_dir(out, "adapt", round_) / "labels.npz"
        if not lab.is_file():
            raise FileNotFoundError(f"pseudo labels {lab} not found; run --stage adapt first (or pass --labels)")
        images, points = load_labels(lab)
        model = SuperPointNet(batch_norm=bool(cfg.get("batch_norm", False)))
        if not ckpt.is_file():
            src = Path(init) if init else (stage_dir(out, "magicpoint") if round_ == 1 else stage_dir(out, "joint", round_ - 1)) / "weights.pth"
            if src.is_file():
                sd = _load_sp_weights(src)
                if _has_bn(sd) != model.batch_norm:
                    raise ValueError(f"{src} was trained with batch_norm={_has_bn(sd)} but this config has "
                                     f"batch_norm={model.batch_norm}; use the same --config for all stages")
                model.load_state_dict(sd)
                _say(printer, f"joint training initialised from {src}")
            else:
                _say(printer, f"no initial weights at {src}: joint training starts from random weights")
            cfg["init"] = str(src) if src.is_file() else None
        model = model.to(memory_format=torch.channels_last)
        res = train(run_dir, cfg, model, _joint_step_fn(cfg, images, points), resume=resume, minutes=minutes,
                    stop_at=stop_at, device=dev, export=lambda m, d: _export_sp(m, d, cfg), printer=printer)
        return _summary(res)
    raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def _summary(res: TrainResult) -> dict:
    return {"step": res.step, "finished": res.finished, "steps_this_chunk": res.steps_this_chunk,
            "seconds": round(res.seconds, 1), "last_loss": res.last_loss, "run_dir": str(res.run_dir)}


def export_superpoint(weights: Path, dest: Path, meta: Optional[dict] = None) -> Path:
    """Stage weights (fp32) -> shipped fp16 file loadable by slam.features.superpoint.SuperPoint."""
    sd = _load_sp_weights(Path(weights))
    return export_weights(sd, dest, config={"descriptor_dim": 256, "layout": "official"}, meta=meta)
