"""``python -m slam vocab eval|bench``: how well a vocabulary tells places apart, and its cost.

eval (discrimination; nothing here is ever in the training pool):

- synthetic: rooms built from seeds 1 (the "default" profile's room) and 201, 202. In each room
  ``--places`` places, each seen twice by the renderer's ``sample_pair`` (baseline 5-40 cm,
  rotation <= 20 degrees, >= 50 % overlap, the "desk" profile's sensor effects): the first views
  form the room's database, the second views are the queries (the revisits). The overlap of a
  query with every database view is exact (depth + poses). Per query: *R@1* = its best-scoring
  database view sees the same place (overlap >= 0.3); *own@1* = the best is its own first view;
  *sep* = its own view outscores every database view it does not overlap (< 5 %); *AUCq* = the
  mean over queries of P(score of an overlapping view (>= 0.3) > score of a non-overlapping one
  (< 0.05)), the ranking quality a relative threshold sees; *AUC* = the same over all pairs of
  all queries pooled, what one absolute score threshold would see.
- fr1_xyz (evaluation only): every 2nd frame (``--tum-step``); database = the frames more than 5 s away in time
  from the query. The whole sequence looks at one desk, so this measures fine viewpoint
  discrimination *within one place*: a positive is a frame within 5 cm and 5 degrees of the
  query (ground truth), a negative one more than 15 cm or 15 degrees away. *R@1* = the best
  frame is a positive (over queries that have one); *sep* = the best positive outscores every
  negative; *AUCq* / *AUC* positives vs negatives per query / pooled; *chance* = R@1 of a random
  ranking.

bench: ms to transform one frame's descriptors, and to query / add / erase in a database of
``--keyframes`` keyframes (fr1_xyz frames; one desk, so long posting lists: a hard case), BLAS
on one thread as in a SLAM run. CPU time of the calling thread is reported beside wall time:
on a shared machine it is the cost of the work itself.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from slam.errors import InputError
from slam.loop.database import KeyframeDatabase
from slam.loop.vocabulary import Vocabulary

log = logging.getLogger(__name__)

EVAL_ROOMS = (1, 201, 202)
EVAL_VERSION = 1  # bump when the evaluation views change (invalidates cached overlaps and descriptors)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties count half (Mann-Whitney)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    _, first, counts = np.unique(sv, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def score_matrix(voc: Vocabulary, queries: list[np.ndarray], db: list[np.ndarray]) -> np.ndarray:
    """(Q, D) float32 L1 scores of each query image against each database image (via the
    inverted index)."""
    kdb = KeyframeDatabase()
    for j, d in enumerate(db):
        kdb.add(j, voc.transform(d))
    out = np.zeros((len(queries), len(db)), np.float32)
    for i, q in enumerate(queries):
        for j, s in kdb.query(voc.transform(q), max_results=None):
            out[i, j] = s
    return out


# ----------------------------------------------------------------------------- data sets
def _render_room(room: int, places: int) -> tuple[list, np.ndarray]:
    """The ``places`` view pairs of one evaluation room and their exact overlaps (Q, D)."""
    from slam.geometry.depth_warp import warp_points
    from slam.synth.office import make_office as make_scene
    from slam.synth.profiles import PROFILES
    from slam.training.synthetic_pairs import sample_pair

    realism = dict(PROFILES["desk"]["realism"])
    ys, xs = np.mgrid[8:480:16, 8:640:16]
    grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    scene = make_scene(room)
    pairs = [sample_pair(room * 1000 + 500 + j, scene=scene, realism=realism, baseline=(0.05, 0.4),
                         max_rotation_deg=20.0, min_overlap=0.5) for j in range(places)]
    ov = np.zeros((places, places), np.float32)
    for i, q in enumerate(pairs):
        for j, d in enumerate(pairs):
            rel = d["cam0_from_world"] @ np.linalg.inv(q["cam1_from_world"])
            _, v = warp_points(grid, q["depth1"], q["camera"], rel, d["depth0"])
            ov[i, j] = float(v.mean())
    log.info("room %d: %d places rendered", room, places)
    return pairs, ov


def synthetic_set(rooms=EVAL_ROOMS, places: int = 40, cache: Optional[Path] = None) -> list[dict]:
    """Per room: dict(room=seed, overlap=(Q, D) float32 overlap of query i with database view j,
    images=callable -> [database views..., queries...] as (name, (H, W, 3) uint8 BGR)). The
    overlaps are cached (``cache``); a room is rendered only when its overlaps or its images
    (a descriptor cache miss) are needed."""
    out = []
    for room in rooms:
        path = cache / f"eval_room{room}_{places}_v{EVAL_VERSION}.npz" if cache else None
        kept: dict = {}

        def render(room=room, kept=kept):
            if "pairs" not in kept:
                kept["pairs"], kept["ov"] = _render_room(room, places)
            return kept["pairs"], kept["ov"]

        if path is not None and path.is_file():
            with np.load(path) as z:
                ov = z["overlap"]
        else:
            ov = render()[1]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, overlap=ov)

        def images(render=render):
            pairs = render()[0]
            return [(f"db{i}", p["image0"]) for i, p in enumerate(pairs)] + [(f"q{i}", p["image1"]) for i, p in enumerate(pairs)]

        out.append({"room": room, "overlap": ov, "images": images, "places": places})
    return out


def synthetic_metrics(scores: list[np.ndarray], sets: list[dict]) -> dict:
    r1 = own = sep = 0
    n = 0
    pos_all, neg_all, s_own, s_neg, aucq = [], [], [], [], []
    for s, st in zip(scores, sets):
        ov = st["overlap"]
        for i in range(len(s)):
            n += 1
            aucq.append(_auc(s[i][ov[i] >= 0.3], s[i][ov[i] < 0.05]))
            top = int(np.argmax(s[i]))
            r1 += ov[i, top] >= 0.3
            own += top == i
            negs = s[i][ov[i] < 0.05]
            best_neg = float(negs.max()) if len(negs) else 0.0
            sep += s[i, i] > best_neg
            s_own.append(s[i, i])
            s_neg.append(best_neg)
        pos_all.append(s[ov >= 0.3])
        neg_all.append(s[ov < 0.05])
    return {"queries": n, "R@1": r1 / n, "own@1": own / n, "sep": sep / n,
            "AUC": _auc(np.concatenate(pos_all), np.concatenate(neg_all)), "AUCq": float(np.nanmean(aucq)),
            "median_own": float(np.median(s_own)), "median_best_neg": float(np.median(s_neg))}


def tum_frames(root: Path, step: int = 3) -> tuple[list[str], np.ndarray, np.ndarray]:
    """fr1_xyz colour frames every ``step``: (image paths, timestamps (F,) s, world_from_cam
    (F, 4, 4) from the ground truth at the nearest stamp, within 20 ms)."""
    from slam.io.tum import read_file_list, read_groundtruth

    ts, poses = read_groundtruth(root / "groundtruth.txt")
    rgb = read_file_list(root / "rgb.txt")[::step]
    t = np.array([r[0] for r in rgb])
    i = np.searchsorted(ts, t).clip(1, len(ts) - 1)
    i = np.where(np.abs(ts[i - 1] - t) < np.abs(ts[i] - t), i - 1, i)
    ok = np.abs(ts[i] - t) < 0.02
    files = [str(root / r[1][0]) for r, k in zip(rgb, ok) if k]
    return files, t[ok], poses[i[ok]]


def tum_metrics(s: np.ndarray, t: np.ndarray, world_from_cam: np.ndarray, min_dt: float = 5.0) -> dict:
    c = world_from_cam[:, :3, 3]
    r = world_from_cam[:, :3, :3]
    dist = np.linalg.norm(c[:, None] - c[None], axis=-1)
    ang = np.degrees(np.arccos(np.clip((np.einsum("aij,bij->ab", r, r) - 1) / 2, -1, 1)))
    far = np.abs(t[:, None] - t[None]) > min_dt
    pos = far & (dist < 0.05) & (ang < 5)
    neg = far & ((dist > 0.15) | (ang > 15))
    r1 = sep = n = 0
    chance = 0.0
    err_top, err_rand, aucq = [], [], []
    for i in range(len(s)):
        if not far[i].any():
            continue
        cand = np.nonzero(far[i])[0]
        top = cand[np.argmax(s[i, cand])]
        err_top.append(dist[i, top])
        err_rand.append(np.median(dist[i, cand]))
        if not pos[i].any():
            continue
        n += 1
        aucq.append(_auc(s[i][pos[i]], s[i][neg[i]]))
        r1 += pos[i, top]
        chance += pos[i, cand].mean()
        sep += s[i][pos[i]].max() > (s[i][neg[i]].max() if neg[i].any() else 0.0)
    return {"queries": n, "R@1": r1 / max(n, 1), "chance": chance / max(n, 1), "sep": sep / max(n, 1),
            "AUC": _auc(s[pos], s[neg]), "AUCq": float(np.nanmean(aucq)), "median_top1_dist_m": float(np.median(err_top)),
            "median_random_dist_m": float(np.median(err_rand))}


# ----------------------------------------------------------------------------- commands
def _config_for(voc: Vocabulary, overrides: list[str]):
    from slam.loop.pool import build_config

    cfg = build_config(voc.kind, overrides)
    w = (voc.meta.get("weights") or {}).get("name")
    sub = getattr(cfg, voc.kind, None)
    if w and sub is not None:
        setattr(sub, "weights" if hasattr(sub, "weights") else "model", w)
    return cfg


def _extract(cfg, key: dict, images_fn, args) -> list[np.ndarray]:
    from slam.loop.pool import cached_descriptors

    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    return cached_descriptors(cfg, key, images_fn, cache, args.threads)[0]


def _read_images(files: list[str]):
    import cv2

    return lambda: [(Path(f).name, cv2.imread(f, cv2.IMREAD_COLOR)) for f in files]


def evaluate(args) -> int:
    from threadpoolctl import threadpool_limits

    vocs = [(f, Vocabulary.load(f)) for f in args.files]
    data = [d.strip() for d in args.data.split(",") if d.strip()]
    results = {}
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    rooms = tuple(int(r) for r in args.rooms.split(","))
    syn = synthetic_set(rooms, args.places, cache) if "synthetic" in data else None
    tum_root = Path(args.tum).expanduser()
    tum = tum_frames(tum_root, args.tum_step) if "fr1_xyz" in data and (tum_root / "rgb.txt").is_file() else None
    if "fr1_xyz" in data and tum is None:
        log.warning("fr1_xyz not found at %s (--tum): skipped", tum_root)
    for f, voc in vocs:
        cfg = _config_for(voc, args.overrides)
        res = {"vocabulary": str(f), "kind": voc.kind, "k": voc.k, "L": voc.levels, "words": voc.n_words}
        with threadpool_limits(limits=1, user_api="blas"):
            if syn is not None:
                scores = []
                for st in syn:
                    key = {"eval": "synthetic", "room": st["room"], "places": st["places"], "version": EVAL_VERSION}
                    desc = _extract(cfg, key, st["images"], args)
                    scores.append(score_matrix(voc, desc[st["places"]:], desc[: st["places"]]))
                res["synthetic"] = synthetic_metrics(scores, syn)
            if tum is not None:
                files, t, poses = tum
                desc = _extract(cfg, {"eval": "fr1_xyz", "files": [Path(x).name for x in files]}, _read_images(files), args)
                res["fr1_xyz"] = tum_metrics(score_matrix(voc, desc, desc), t, poses)
        results[str(f)] = res
        print(_line(res))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"written {args.json}")
    return 0


def _line(res: dict) -> str:
    parts = [f"{Path(res['vocabulary']).name} ({res['kind']}, k={res['k']}, L={res['L']}, {res['words']} words)"]
    if "synthetic" in res:
        m = res["synthetic"]
        parts.append(f"synthetic {m['queries']} revisits: R@1 {m['R@1']:.3f} own@1 {m['own@1']:.3f} sep {m['sep']:.3f} "
                     f"AUCq {m['AUCq']:.3f} AUC {m['AUC']:.3f} (median own {m['median_own']:.3f} vs best other {m['median_best_neg']:.3f})")
    if "fr1_xyz" in res:
        m = res["fr1_xyz"]
        parts.append(f"fr1_xyz {m['queries']} queries: R@1 {m['R@1']:.3f} (chance {m['chance']:.3f}) sep {m['sep']:.3f} "
                     f"AUCq {m['AUCq']:.3f} AUC {m['AUC']:.3f}, top-1 {100 * m['median_top1_dist_m']:.1f} cm away "
                     f"(random {100 * m['median_random_dist_m']:.1f} cm)")
    return "\n  ".join(parts)


class _Timer:
    """Wall and CPU (this thread) seconds of each timed call: on a shared machine the CPU time
    is the cost of the work itself, the wall time includes waiting for a core."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, fn, *a, **kw):
        t0, c0 = time.perf_counter(), time.thread_time()
        out = fn(*a, **kw)
        self.cpu.append(time.thread_time() - c0)
        self.wall.append(time.perf_counter() - t0)
        return out

    def __str__(self) -> str:
        c, w = 1e3 * np.asarray(self.cpu), 1e3 * np.asarray(self.wall)
        return (f"CPU median {np.median(c):.2f} ms (mean {c.mean():.2f}, p95 {np.percentile(c, 95):.2f}), "
                f"wall median {np.median(w):.2f} ms (p95 {np.percentile(w, 95):.2f})")


def bench(args) -> int:
    from threadpoolctl import threadpool_limits

    tum_root = Path(args.tum).expanduser()
    files, _, _ = tum_frames(tum_root, step=args.tum_step)  # the frames (and descriptor cache) of `vocab eval`
    n_kf = args.keyframes
    if len(files) < n_kf + args.queries:
        raise InputError(f"{tum_root}: {len(files)} frames at --tum-step {args.tum_step}, fewer than "
                         f"--keyframes {n_kf} + --queries {args.queries}; lower --tum-step")
    q_idx = np.linspace(0, len(files) - 1, args.queries).round().astype(int)
    kf_idx = np.setdiff1d(np.arange(len(files)), q_idx)[:n_kf]
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    for f in args.files:
        voc = Vocabulary.load(f)
        cfg = _config_for(voc, args.overrides)
        desc = _extract(cfg, {"eval": "fr1_xyz", "files": [Path(x).name for x in files]}, _read_images(files), args)
        desc = [desc[i] for i in kf_idx] + [desc[i] for i in q_idx]
        t_tr, t_add, t_q, t_c, t_er = _Timer(), _Timer(), _Timer(), _Timer(), _Timer()
        with threadpool_limits(limits=1, user_api="blas"):
            for _ in range(args.repeat):
                bows = [t_tr(voc.transform, d) for d in desc]
            db = KeyframeDatabase()
            for i, b in enumerate(bows[:n_kf]):
                t_add(db.add, i, b)
            for _ in range(args.repeat):
                for b in bows[n_kf:]:
                    t_q(db.query, b, max_results=10)
                    t_c(db.candidates, b)
            for i in range(0, n_kf, 3):
                t_er(db.erase, i)
        nf = np.mean([len(d) for d in desc])
        print(f"{Path(f).name} ({voc.kind}, k={voc.k}, L={voc.levels}, {voc.n_words} words), {nf:.0f} features/frame, "
              f"{np.mean([len(b) for b in bows]):.0f} words/frame:")
        print(f"  transform: {t_tr}")
        print(f"  query at {n_kf} keyframes (top 10): {t_q}")
        print(f"  candidates() at {n_kf} keyframes: {t_c}")
        print(f"  add: {t_add}; erase: {t_er}")
    return 0


def add_eval_parsers(sub) -> None:
    from slam.loop.pool import default_data_dir

    tum = str(default_data_dir() / "tum" / "rgbd_dataset_freiburg1_xyz")
    cache = str(Path.home() / ".cache" / "slam" / "vocab_train")
    e = sub.add_parser("eval", help="place-recognition discrimination of vocabularies")
    e.add_argument("files", nargs="+")
    e.add_argument("--data", default="synthetic,fr1_xyz", help="comma-separated: synthetic, fr1_xyz")
    e.add_argument("--places", type=int, default=40, help="places per synthetic room")
    e.add_argument("--rooms", default=",".join(map(str, EVAL_ROOMS)), help="synthetic rooms (scene seeds) to evaluate in")
    e.add_argument("--tum-step", type=int, default=2, help="fr1_xyz: every n-th frame")
    e.add_argument("--tum", default=tum, help="fr1_xyz folder")
    e.add_argument("--json", help="write the figures here")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--cache-dir", default=cache, help="descriptor cache ('' = none)")
    e.add_argument("--override", dest="overrides", action="append", default=[], help="extractor config key=value")
    e.set_defaults(func=evaluate)
    b = sub.add_parser("bench", help="transform / query / add / erase timings")
    b.add_argument("files", nargs="+")
    b.add_argument("--keyframes", type=int, default=300)
    b.add_argument("--queries", type=int, default=50)
    b.add_argument("--tum-step", type=int, default=2, help="fr1_xyz: every n-th frame (keyframes and queries)")
    b.add_argument("--repeat", type=int, default=3)
    b.add_argument("--tum", default=tum)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--cache-dir", default=cache)
    b.add_argument("--override", dest="overrides", action="append", default=[])
    b.set_defaults(func=bench)

