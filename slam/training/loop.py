"""The shared, resumable training loop (time-boxed chunks, exact resume).

:func:`train` runs ``step_fn`` until ``cfg['steps']`` optimiser steps are done or the time box
(``minutes``) is used up, checkpointing to ``run_dir/checkpoint.pt`` every ``ckpt_every`` steps and
at the end of the chunk. With ``resume=True`` it continues from that checkpoint: model,
optimiser, learning-rate schedule, all random states and the step counter are restored, so N
steps in one go give the same weights as N/2 + resume + N/2 (on the same device and thread count).

Files in ``run_dir``: ``checkpoint.pt`` (training state), ``log.jsonl`` (one record per logged
step: step, loss, its parts, lr, seconds), ``weights.pth`` (fp32 model + config, written when the
run completes), ``status.json`` (steps done, finished flag, wall time).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from slam.device import autocast, resolve_precision
from slam.errors import InputError
from slam.training.checkpoint import (JsonlLog, atomic_save, load_checkpoint, make_scheduler, save_checkpoint,
                                      set_rng_state)

log = logging.getLogger(__name__)

__all__ = ["StepFn", "TrainResult", "train", "amp_context", "resolve_amp", "InputError"]

#: step_fn(model, np_gen, torch_gen, step) -> (loss, stats)
StepFn = Callable[[torch.nn.Module, np.random.Generator, torch.Generator, int], tuple[torch.Tensor, dict]]


@dataclass
class TrainResult:
    step: int  # optimiser steps done in total
    finished: bool  # step == cfg['steps']
    steps_this_chunk: int
    seconds: float  # wall time of this chunk
    last_loss: float
    run_dir: Path


def resolve_amp(amp: str, device: torch.device) -> str:
    """Training's ``amp`` setting -> 'bf16' or 'none'. 'auto' -> bf16 where the device runs it
    natively (CUDA with bf16, CPUs with AMX), else none (slam.device decides)."""
    if amp not in ("auto", "bf16", "none"):
        raise InputError(f"amp must be auto, bf16 or none, got {amp!r}")
    p = resolve_precision("fp32" if amp == "none" else amp, device, "training", cuda_auto="bf16", cpu_auto="bf16")
    return "bf16" if p == "bf16" else "none"


def amp_context(amp: str, device: torch.device):
    """Autocast for a training step with a resolved ``amp`` ('bf16' or 'none')."""
    return autocast(device, "bf16" if amp == "bf16" else "fp32")


def _write_status(run_dir: Path, **kw) -> None:
    (run_dir / "status.json").write_text(json.dumps(kw, indent=1))


def train(run_dir: Path, cfg: dict, model: torch.nn.Module, step_fn: StepFn, *, resume: bool = False,
          minutes: float = 10.0, stop_at: Optional[int] = None, device: torch.device = torch.device("cpu"),
          export: Optional[Callable[[torch.nn.Module, Path], None]] = None,
          log_every: int = 10, printer: Optional[Callable[[str], None]] = print) -> TrainResult:
    """Run one chunk of training.

    cfg keys used: steps, lr, weight_decay, warmup, decay_start, final_lr (factor), grad_clip,
    seed, ckpt_every. ``stop_at``: also stop once this step count is reached (for tests and
    fixed-size chunks). ``export(model, run_dir)``: called when the run completes (default
    writes weights.pth with the fp32 state dict and cfg).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    total = int(cfg["steps"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.0)))
    scheduler = make_scheduler(optimizer, total, int(cfg.get("warmup", 0)), float(cfg.get("decay_start", 0.6)),
                               float(cfg.get("final_lr", 0.1)))
    np_gen = np.random.default_rng(int(cfg.get("seed", 0)))
    torch_gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    torch.manual_seed(int(cfg.get("seed", 0)))
    step = 0
    prior_seconds = 0.0
    if ckpt_path.is_file():
        if not resume:
            raise InputError(f"{run_dir} already holds a checkpoint; pass --resume to continue it, "
                                 f"or choose another --out")
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"], np_gen, torch_gen)
        step = int(ckpt["step"])
        prior_seconds = float(ckpt.get("extra", {}).get("seconds", 0.0))
        if printer:
            printer(f"resumed {run_dir} at step {step}/{total}")
    logger = JsonlLog(run_dir / "log.jsonl", resume_step=step if ckpt_path.is_file() else None)
    amp = resolve_amp(str(cfg.get("amp", "none")), device)
    ckpt_every = int(cfg.get("ckpt_every", 200))
    t0 = time.monotonic()
    deadline = t0 + 60.0 * float(minutes)
    done_here = 0
    last_loss = float("nan")
    step_times: list[float] = []
    model.train()

    def save():
        save_checkpoint(ckpt_path, step=step, config=cfg, model=model, optimizer=optimizer, scheduler=scheduler,
                        np_gen=np_gen, torch_gen=torch_gen,
                        extra={"seconds": prior_seconds + time.monotonic() - t0})
        _write_status(run_dir, step=step, steps=total, finished=step >= total,
                      seconds=round(prior_seconds + time.monotonic() - t0, 1), last_loss=last_loss)

    while step < total and (stop_at is None or step < stop_at):
        ts = time.monotonic()
        optimizer.zero_grad(set_to_none=True)
        with amp_context(amp, device):
            loss, stats = step_fn(model, np_gen, torch_gen, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {step} ({stats}); lower the learning rate")
        loss.backward()
        if float(cfg.get("grad_clip", 0.0)) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg["grad_clip"]))
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        step += 1
        done_here += 1
        last_loss = float(loss.detach())
        step_times.append(time.monotonic() - ts)
        if step % log_every == 0 or step == total or step == 1:
            rec = {"step": step, "loss": last_loss, "lr": lr, "sec_per_step": float(np.mean(step_times[-log_every:])),
                   "elapsed": round(prior_seconds + time.monotonic() - t0, 1), **stats}
            logger.write(rec)
            if printer:
                parts = " ".join(f"{k}={v:.4g}" for k, v in stats.items() if isinstance(v, (int, float)))
                printer(f"step {step}/{total} loss={last_loss:.4f} lr={lr:.2e} {parts} ({rec['sec_per_step']:.2f} s/step)")
        if step % ckpt_every == 0:
            save()
        avg = float(np.mean(step_times[-20:]))
        if time.monotonic() + avg > deadline:
            if printer:
                printer(f"time box of {minutes} min reached at step {step}")
            break
    save()
    finished = step >= total
    if finished:
        model.eval()
        if export is not None:
            export(model, run_dir)
        else:
            atomic_save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "config": cfg},
                        run_dir / "weights.pth")
    return TrainResult(step, finished, done_here, time.monotonic() - t0, last_loss, run_dir)


def finalize(run_dir: Path, model: torch.nn.Module, export: Optional[Callable[[torch.nn.Module, Path], None]] = None,
             printer: Optional[Callable[[str], None]] = print) -> dict:
    """End a run early: write its weights from the latest checkpoint (as if it had finished) and
    record in status.json that the schedule stopped at ``step`` of ``steps``. For time-limited
    runs (CPU) whose step budget turned out too large."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    model.load_state_dict(ckpt["model"])
    model.eval()
    cfg = ckpt["config"]
    if export is not None:
        export(model, run_dir)
    else:
        atomic_save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "config": cfg},
                    run_dir / "weights.pth")
    status = {"step": int(ckpt["step"]), "steps": int(cfg["steps"]), "finished": True,
              "finished_early": int(ckpt["step"]) < int(cfg["steps"]),
              "seconds": round(float(ckpt.get("extra", {}).get("seconds", 0.0)), 1)}
    _write_status(run_dir, **status)
    if printer:
        printer(f"finalised {run_dir} at step {status['step']}/{status['steps']}")
    return status
