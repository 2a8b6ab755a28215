"""Resumable training state: checkpoints, random states, learning-rate schedule, logs, export.

A checkpoint (``torch.save`` dict, readable with ``weights_only=True``) holds::

    {"format": "slam-train-v1", "step": int, "config": dict, "model": state_dict,
     "optimizer": state_dict, "scheduler": state_dict, "rng": rng_state(...), "extra": dict}

``rng`` has the states of Python's ``random``, NumPy's legacy global generator, torch's CPU
(and CUDA) generators, and of the trainer's own ``np.random.Generator`` and
``torch.Generator`` objects, as plain ints / lists / uint8 tensors. Writes are atomic
(temporary file + rename), so an interrupted chunk never leaves a broken checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from slam.errors import WeightsError
from slam.weights import load_weights_file

__all__ = [
    "FORMAT", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint", "lr_factor",
    "make_scheduler", "JsonlLog", "export_weights", "atomic_save",
]

FORMAT = "slam-train-v1"


def _np_generator_state(gen: np.random.Generator) -> dict:
    return json.loads(json.dumps(gen.bit_generator.state))  # plain ints / strings


def rng_state(np_gen: Optional[np.random.Generator] = None, torch_gen: Optional[torch.Generator] = None) -> dict:
    """All random states as checkpoint-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy_global": {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos),
                         "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    if np_gen is not None:
        state["np_gen"] = _np_generator_state(np_gen)
    if torch_gen is not None:
        state["torch_gen"] = torch_gen.get_state()
    return state


def set_rng_state(state: dict, np_gen: Optional[np.random.Generator] = None,
                  torch_gen: Optional[torch.Generator] = None) -> None:
    """Restore what :func:`rng_state` saved (into the given generator objects too)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    g = state["numpy_global"]
    np.random.set_state((g["kind"], np.array(g["keys"], dtype=np.uint32), g["pos"], g["has_gauss"], g["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if np_gen is not None and "np_gen" in state:
        np_gen.bit_generator.state = state["np_gen"]
    if torch_gen is not None and "torch_gen" in state:
        torch_gen.set_state(state["torch_gen"])


def atomic_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, str(tmp))
    os.replace(tmp, path)


def save_checkpoint(path: Path, *, step: int, config: dict, model: torch.nn.Module,
                    optimizer: Optional[torch.optim.Optimizer] = None, scheduler=None,
                    np_gen: Optional[np.random.Generator] = None, torch_gen: Optional[torch.Generator] = None,
                    extra: Optional[dict] = None) -> None:
    atomic_save({
        "format": FORMAT, "step": int(step), "config": config, "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(np_gen, torch_gen), "extra": extra or {},
    }, path)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; start without --resume, or point --out at the run folder")
    ckpt = load_weights_file(path, "training checkpoint", fix="delete it to restart the run without --resume")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a {FORMAT} training checkpoint; delete it to restart the run without --resume")
    return ckpt


def lr_factor(step: int, total: int, warmup: int = 0, decay_start: float = 0.6, final: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, constant, then a cosine
    decay from ``decay_start * total`` to ``final`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    start = int(decay_start * total)
    if step < start or total <= start:
        return 1.0
    t = min(1.0, (step - start) / max(1, total - start))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def make_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup: int = 0, decay_start: float = 0.6,
                   final: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with :func:`lr_factor`; its state (last_epoch) goes into checkpoints, the function
    itself is rebuilt from the config on resume."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, decay_start, final))


class JsonlLog:
    """Append-only JSON-lines log of training records. On resume, records with a step beyond the
    checkpoint's are dropped first (they were computed after the last save and will be redone)."""

    def __init__(self, path: Path, resume_step: Optional[int] = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.is_file():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= resume_step:
                        keep.append(line)
                except (ValueError, json.JSONDecodeError):
                    continue
            self.path.write_text("".join(x + "\n" for x in keep))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]


def export_weights(state_dict: dict, path: Path, config: Optional[dict] = None, meta: Optional[dict] = None,
                   fp16: bool = True) -> Path:
    """Write inference weights: {"state_dict": tensors (floating ones in fp16 when ``fp16``),
    "config": architecture, "meta": provenance}. Loaded by SuperPoint(state_dict=...)/SuperGlue
    through their weight readers."""
    sd = {k: (v.detach().cpu().half() if fp16 and v.is_floating_point() else v.detach().cpu())
          for k, v in state_dict.items()}
    obj: dict = {"state_dict": sd}
    if config is not None:
        obj["config"] = config
    if meta is not None:
        obj["meta"] = meta
    atomic_save(obj, Path(path))
    return Path(path)
