"""Where vocabularies live and how the system finds the one for its extractor.

A vocabulary serves one descriptor kind and, for learned features, one set of weights: the file
is named ``<kind>.npz`` for ORB and ``<kind>_<weights>.npz`` otherwise (weights = the registry
name in the extractor's config, or a weights file's stem), e.g. ``aliked_aliked-n16.npz``.
Looked up, in order, in

1. the package folder ``slam/loop/vocab/`` (the committed ones; see VOCABULARIES.md there),
2. ``$SLAM_VOCAB_DIR`` when set, else ``~/.cache/slam/vocab`` (built by ``python -m slam vocab
   train`` or ``tools/install.sh``; e.g. a SuperPoint vocabulary for the user's own weights).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from slam.errors import ConfigError, WeightsError
from slam.loop.vocabulary import DESCRIPTOR_KINDS, Vocabulary

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent / "vocab"


def cache_dir() -> Path:
    """``$SLAM_VOCAB_DIR``, else ``~/.cache/slam/vocab``."""
    env = os.environ.get("SLAM_VOCAB_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "slam" / "vocab"


def weights_identity(weights: Optional[str]) -> Optional[str]:
    """A weights name as used in file names: the registry name, or a path's stem."""
    if not weights:
        return None
    s = str(weights)
    return Path(s).stem if ("/" in s or s.endswith((".pth", ".pt"))) else s


def vocabulary_filename(kind: str, weights: Optional[str] = None) -> str:
    """``orb.npz`` or ``<kind>_<weights>.npz``."""
    if kind not in DESCRIPTOR_KINDS:
        raise ConfigError(f"unknown descriptor kind {kind!r}; choose one of {sorted(DESCRIPTOR_KINDS)}")
    w = weights_identity(weights) if kind != "orb" else None
    return f"{kind}_{w}.npz" if w else f"{kind}.npz"


def search_dirs() -> list[Path]:
    return [PACKAGE_DIR, cache_dir()]


def find_vocabulary(kind: str, weights: Optional[str] = None) -> Path:
    """Path of the vocabulary for descriptor ``kind`` (+ ``weights`` for learned features).

    Raises WeightsError naming the folders searched and the command that builds it."""
    name = vocabulary_filename(kind, weights)
    for d in search_dirs():
        if (d / name).is_file():
            return d / name
    target = cache_dir() / name
    w = f" --weights {weights}" if weights and kind != "orb" else ""
    extra = (" (needs the SuperPoint weights file: Magic Leap's or ours, see `python -m slam weights list`)"
             if kind == "superpoint" else "")
    raise WeightsError(
        f"no vocabulary {name} for {kind} features (looked in {PACKAGE_DIR} and {cache_dir()}); build it with "
        f"`python -m slam vocab train --features {kind}{w} --out {target}`{extra}")


def load_vocabulary(kind: str, weights: Optional[str] = None, path: Optional[Path] = None) -> Vocabulary:
    """Load the vocabulary :func:`find_vocabulary` finds (or ``path``) and check that it fits
    ``kind`` (and ``weights``, when the file records them)."""
    path = Path(path) if path is not None else find_vocabulary(kind, weights)
    voc = Vocabulary.load(path)
    binary, dim = DESCRIPTOR_KINDS[kind]
    if voc.kind != kind or voc.binary != binary:
        raise WeightsError(f"{path} is a {voc.kind} vocabulary, not {kind}; rebuild it with `python -m slam vocab train`")
    want = (voc.meta.get("weights") or {}).get("name")
    if weights and want and weights_identity(want) != weights_identity(weights):
        raise WeightsError(f"{path} was trained for weights {want!r}, the extractor uses {weights!r}; build one with "
                           f"`python -m slam vocab train --features {kind} --weights {weights}`")
    return voc


def extractor_weights(cfg) -> Optional[str]:
    """The weights identity of the configured extractor (``cfg.features``): None for ORB."""
    kind = cfg.features
    if kind == "orb":
        return None
    sub = getattr(cfg, kind, None)
    for attr in ("weights", "model"):
        v = getattr(sub, attr, None)
        if v:
            return str(v)
    return kind


def vocabulary_for_config(cfg, required: bool = True) -> Optional[Vocabulary]:
    """The vocabulary of the extractor configured in ``cfg`` (``cfg.features`` + its weights;
    ``cfg.place_recognition.vocabulary`` when set to a path). With ``required=False`` a missing one is logged
    (with the command that builds it) and None is returned, so that the caller can fall back
    (relocalisation from covisibility only, no loop closing); a corrupt one is always an error."""
    kind, weights = cfg.features, extractor_weights(cfg)
    explicit = getattr(getattr(cfg, "place_recognition", None), "vocabulary", "auto")
    if explicit and explicit != "auto":
        return load_vocabulary(kind, weights, Path(explicit).expanduser())
    try:
        path = find_vocabulary(kind, weights)
    except WeightsError as exc:
        if required:
            raise
        log.warning("%s; place recognition falls back to covisibility only", exc)
        return None
    return load_vocabulary(kind, weights, path)


def installed() -> list[tuple[Path, dict]]:
    """Every vocabulary file in the search folders with its metadata: [(path, meta), ...]."""
    import json

    import numpy as np

    out = []
    for d in search_dirs():
        for p in sorted(d.glob("*.npz")) if d.is_dir() else []:
            try:
                with np.load(p, allow_pickle=False) as z:
                    out.append((p, json.loads(str(z["meta"]))))
            except (OSError, ValueError, KeyError):
                out.append((p, {"error": "not a vocabulary file"}))
    return out
