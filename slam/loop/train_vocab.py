"""``python -m slam vocab ...``: train, inspect, evaluate and time bag-of-words vocabularies.

    train --features orb|aliked|disk|superpoint|xfeat [--k 10 --levels 5] [--out FILE] [key=value ...]
    info FILE            metadata and tree statistics
    list                 the vocabularies the system can find
    eval FILE...         place-recognition discrimination (synthetic room views, fr1_xyz)
    bench FILE...        transform ms per frame, query ms at N keyframes

The training pool and the descriptor cache are described in :mod:`slam.loop.pool`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from slam.errors import ConfigError
from slam.loop.pool import build_config, default_images_dir, pool_descriptors, pool_spec
from slam.loop.store import (
    cache_dir,
    extractor_weights,
    installed,
    vocabulary_filename,
    weights_identity,
)
from slam.loop.vocabulary import DESCRIPTOR_KINDS, Vocabulary

log = logging.getLogger(__name__)


def _weights_meta(cfg) -> Optional[dict]:
    name = extractor_weights(cfg)
    if name is None:
        return None
    meta = {"name": weights_identity(name)}
    try:
        from slam.weights import resolve_weights, sha256_file

        meta["sha256"] = sha256_file(resolve_weights(name))
    except Exception as exc:  # noqa: BLE001 - the identity is the name; the checksum is a bonus
        log.debug("no checksum for weights %s: %s", name, exc)
    return meta


def _vocab_args(argv: list[str]) -> list[str]:
    """The arguments after ``vocab`` in a ``python -m slam [global options] vocab ...`` command line."""
    return argv[argv.index("vocab") + 1:] if "vocab" in argv else argv


def train(args) -> int:
    import dataclasses

    from threadpoolctl import threadpool_limits

    kind = args.features
    if kind not in DESCRIPTOR_KINDS:
        raise ConfigError(f"unknown --features {kind!r}; choose one of {sorted(DESCRIPTOR_KINDS)}")
    cfg = build_config(kind, args.overrides)
    if args.weights:
        sub = getattr(cfg, kind)
        setattr(sub, "weights" if hasattr(sub, "weights") else "model", args.weights)
    spec = pool_spec(args)
    t0 = time.perf_counter()
    sets, names = pool_descriptors(cfg, spec, Path(args.cache_dir).expanduser() if args.cache_dir else None,
                                   args.threads, args.seed)
    t_feat = time.perf_counter() - t0
    n_real = sum(1 for n in names if not n.startswith("room"))
    sub = getattr(cfg, kind, None)
    meta = {"weights": _weights_meta(cfg),
            "extractor": dataclasses.asdict(sub) if sub is not None else {},
            "training": {"pool": spec, "n_real_images": n_real, "n_synthetic_images": len(names) - n_real,
                         "note": ("real images" + (" (+ augmentation)" if spec["augment"] else "") + " from shared/data/images"
                                  + (" and synthetic rooms" if len(names) > n_real else "") + "; "
                                 "no evaluation sequence (fr1_xyz, EuRoC, KITTI, synthetic profiles)")},
            "command": "python -m slam vocab " + " ".join(_vocab_args(sys.argv[1:]))}
    t1 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # many small products: one thread is fastest
        voc = Vocabulary.train(sets, kind=kind, k=args.k, levels=args.levels, seed=args.seed,
                               max_iter=args.max_iter, min_split=args.min_split, progress=log.info)
    t_train = time.perf_counter() - t1
    # the pool statistics belong to the training record
    voc.meta["training"].update(meta.pop("training"))
    voc.meta.update(meta)
    voc.meta["training"]["seconds"] = {"features": round(t_feat, 1), "clustering": round(t_train, 1)}
    out = Path(args.out) if args.out else cache_dir() / vocabulary_filename(kind, extractor_weights(cfg))
    voc.save(out)
    st = voc.stats()
    print(f"{voc!r}: {len(names)} images ({n_real} real), {voc.meta['training']['n_descriptors']} descriptors; "
          f"words per level {st['words_per_level']}; features {t_feat:.0f} s, clustering {t_train:.0f} s")
    print(f"written {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


# ----------------------------------------------------------------------------- info / list
def info(args) -> int:
    voc = Vocabulary.load(args.file)
    m = dict(voc.meta)
    print(f"{args.file}: {voc!r}, {Path(args.file).stat().st_size / 1e6:.2f} MB")
    for k in ("created", "weights", "settings", "training", "extractor", "command"):
        if k in m:
            print(f"  {k}: {json.dumps(m[k], sort_keys=True)}")
    print(f"  tree: {json.dumps(voc.stats())}")
    return 0


def list_cmd(args) -> int:
    found = installed()
    if not found:
        print("no vocabulary found; build one with `python -m slam vocab train --features orb`")
    for p, m in found:
        w = (m.get("weights") or {}).get("name") if isinstance(m.get("weights"), dict) else None
        print(f"{p}: {m.get('kind', '?')}{' / ' + w if w else ''}, k={m.get('k')}, L={m.get('levels')}, "
              f"{m.get('n_words')} words, {p.stat().st_size / 1e6:.2f} MB")
    return 0


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slam vocab", description="bag-of-words vocabularies")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a vocabulary on the training pool")
    t.add_argument("--features", required=True, help="orb | aliked | disk | superpoint | xfeat")
    t.add_argument("--weights", help="the extractor's weights (registry name or .pth) for learned features")
    t.add_argument("--k", type=int, default=10, help="branching factor (default 10)")
    t.add_argument("--levels", "-L", type=int, default=5, help="depth of the tree (default 5)")
    t.add_argument("--out", help="output .npz (default: the cache folder, under the name the system looks for)")
    t.add_argument("--images", default=str(default_images_dir()), help="folder of real training images ('' = none)")
    t.add_argument("--no-augment", dest="augment", action="store_false", help="no rotated / scaled copies")
    t.add_argument("--synthetic-rooms", type=int, default=12, help="rendered rooms (seeds 101..)")
    t.add_argument("--synthetic-views", type=int, default=24, help="views per rendered room")
    t.add_argument("--max-iter", type=int, default=15, help="Lloyd iterations per node at most")
    t.add_argument("--min-split", type=int, help="nodes with this many descriptors or fewer stay leaves (default k)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2, help="torch threads for feature extraction")
    t.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "slam" / "vocab_train"),
                   help="descriptor cache ('' = none)")
    t.add_argument("overrides", nargs="*", help="config key=value for the extractor, e.g. aliked.max_keypoints=2048")
    t.set_defaults(func=train)
    i = sub.add_parser("info", help="metadata and statistics of a vocabulary file")
    i.add_argument("file")
    i.set_defaults(func=info)
    ls = sub.add_parser("list", help="vocabularies the system can find")
    ls.set_defaults(func=list_cmd)
    from slam.loop.eval_vocab import add_eval_parsers

    add_eval_parsers(sub)
    return p


def vocab_main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "images", None) == "":
        args.images = None
    return int(args.func(args) or 0)
