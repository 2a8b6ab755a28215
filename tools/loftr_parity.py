"""Parity and speed of slam.matching.loftr against the authors' reference implementation.

The reference (zju3dv/LoFTR, Apache-2.0) is read from a checkout outside the project, never
copied into it, e.g. from the fetched mirror:

    mkdir -p /tmp/LoFTR && git --git-dir=/work/.mirror/zju3dv+LoFTR/repo archive HEAD src/loftr | tar -x -C /tmp/LoFTR
    python tools/loftr_parity.py --ref /tmp/LoFTR --out /tmp/loftr_parity.json

Both networks get the same seeded random weights in the official layout (BatchNorm statistics
and LayerNorm affines randomised too, so that folding and normalisation are exercised), saved as
a Lightning-style checkpoint with the ``matcher.`` prefix and loaded by our checkpoint reader.
On real pairs (fr1_xyz frames, ScanNet pairs, Churchill at 512x384 and a padded 500x372) the
tool prints, per pair and weight variant:

- coarse confidence: max |P_ours - P_ref| over the whole matrix (the reference's padded grid
  cut to each image's own grid);
- fine matches: the matches both select, and max |pts1_ours - pts1_ref| in pixels (pts0 is on
  the coarse grid in both); plus the matches found by one side only.

Speed (``--speed``): ms per 640x480 fr1_xyz pair for ours and the reference in fp32 and bf16
(bf16: the reference under CPU autocast; ours with loftr.precision=bf16; fp32: ours in each CPU
backbone layout, channels_last, blocked and winograd), same thread count, the calls alternating
in one process, median of ``--repeats`` after a warm-up.

Results go to ``--out`` as JSON. Exit status 1 when a parity figure exceeds its bar
(conf 1e-4, fine 1e-3 px) on any pair.

The reference imports ``kornia.utils.grid``, which newer kornia releases moved; the tool maps
that name to ``kornia.utils`` when needed (no file of the reference is changed).
"""
from __future__ import annotations

import argparse
import copy
import glob
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from slam.matching.config import LoFTRConfig
from slam.matching.loftr.matcher import LoFTR
from slam.matching.loftr.model import read_checkpoint

DATA = Path("/work/shared/data")
CONF_BAR, FINE_BAR = 1e-4, 1e-3
#: (match type, temp_bug_fix, sinkhorn prefilter): the configurations of the official files
VARIANTS = {
    "ds_fix": ("dual_softmax", True, False),   # indoor_ds_new.ckpt
    "ds": ("dual_softmax", False, False),      # outdoor_ds.ckpt
    "ot": ("sinkhorn", False, False),          # indoor_ot.ckpt
}


def load_reference(root: str):
    """(LoFTR class, default_cfg) of the reference checkout at root (repository root, or its
    src/loftr folder), imported as the package ``loftr_reference``."""
    base = Path(root)
    pkg = base if (base / "loftr.py").exists() else base / "src" / "loftr"
    if not (pkg / "__init__.py").exists():
        raise SystemExit(f"--ref {root}: no src/loftr/__init__.py there; check out zju3dv/LoFTR first (see --help)")
    try:
        import kornia.utils.grid  # noqa: F401
    except ModuleNotFoundError:
        import kornia.utils
        sys.modules["kornia.utils.grid"] = kornia.utils
    spec = importlib.util.spec_from_file_location("loftr_reference", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.LoFTR, mod.default_cfg


def random_reference(ref_cls, default_cfg, match_type: str, fix: bool, prefilter: bool, seed: int = 0):
    """The reference network with seeded random weights (its own init + random norms), eval mode."""
    cfg = copy.deepcopy(default_cfg)
    cfg["coarse"]["temp_bug_fix"] = fix
    cfg["match_coarse"]["match_type"] = match_type
    cfg["match_coarse"]["skh_prefilter"] = prefilter
    cfg["match_coarse"]["sparse_spvs"] = False
    torch.manual_seed(seed)
    net = ref_cls(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + 1.5 * torch.rand(n, generator=g)
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data = 0.8 + 0.4 * torch.rand(m.weight.shape, generator=g)
            m.bias.data = 0.05 * torch.randn(m.bias.shape, generator=g)
    return net.eval()


def _load(path: str, size=None) -> np.ndarray:
    im = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if im is None:
        raise SystemExit(f"cannot read {path}; is /work/shared/data there?")
    return cv2.resize(im, size, interpolation=cv2.INTER_AREA) if size is not None else im


def test_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Real pairs: 3 fr1_xyz (640x480), 3 ScanNet (640x480), Churchill 512x384 and 500x372 (padded)."""
    tum = sorted(glob.glob(str(DATA / "tum/rgbd_dataset_freiburg1_xyz/rgb/*.jpg")))
    out = [(f"fr1_xyz {a}-{b}", _load(tum[a]), _load(tum[b])) for a, b in ((0, 10), (100, 130), (400, 460))]
    sc = DATA / "pairs/scannet"
    for line in (sc / "pairs_with_gt.txt").read_text().split("\n")[:3]:
        n0, n1 = line.split()[:2]
        out.append((f"scannet {n0[:12]}", _load(str(sc / n0), (640, 480)), _load(str(sc / n1), (640, 480))))
    ch = DATA / "pairs/churchill"
    out.append(("churchill 1-2 512x384", _load(str(ch / "1.png"), (512, 384)), _load(str(ch / "2.png"), (512, 384))))
    out.append(("churchill 1-3 500x372", _load(str(ch / "1.png"), (500, 372)), _load(str(ch / "3.png"), (500, 372))))
    return out


def run_reference(net, im0: np.ndarray, im1: np.ndarray, threshold: float) -> dict:
    """The reference's forward on two uint8 images, zero-padded to multiples of 8 with its masks."""
    net.coarse_matching.thr = threshold
    h, w = im0.shape
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    t0 = torch.zeros(1, 1, hp, wp)
    t1 = torch.zeros(1, 1, hp, wp)
    t0[0, 0, :h, :w] = torch.from_numpy(im0).float() / 255
    t1[0, 0, :h, :w] = torch.from_numpy(im1).float() / 255
    data = {"image0": t0, "image1": t1}
    if (hp, wp) != (h, w):
        m = torch.zeros(1, hp // 8, wp // 8, dtype=torch.bool)
        m[:, : -(-h // 8), : -(-w // 8)] = True
        data["mask0"], data["mask1"] = m, m.clone()
    with torch.no_grad():
        net(data)
    return data


def compare(ref: dict, ours) -> dict:
    """Parity figures of one pair (see the module docstring)."""
    hp, wp = (int(v) for v in ref["hw0_c"])
    hc, wc = ours.grid0
    cr = ref["conf_matrix"][0].numpy().reshape(hp, wp, hp, wp)[:hc, :wc, :hc, :wc].reshape(hc * wc, hc * wc)
    dconf = float(np.abs(cr - ours.conf_matrix).max())

    def own(i):  # reference's padded-grid cell -> our unpadded-grid cell
        return int(i // wp) * wc + int(i % wp)

    ref_m = {(own(i), own(j)): (p0, p1, c) for i, j, p0, p1, c in zip(
        ref["i_ids"].tolist(), ref["j_ids"].tolist(), ref["mkpts0_f"].numpy(), ref["mkpts1_f"].numpy(),
        ref["mconf"].numpy())}
    d0 = d1 = dc = 0.0
    common = 0
    for k, p0, p1, c in zip(zip(ours.idx0.tolist(), ours.idx1.tolist()), ours.pts0, ours.pts1, ours.confidence):
        if k in ref_m:
            common += 1
            r0, r1, rc = ref_m[k]
            d0 = max(d0, float(np.abs(r0 - p0).max()))
            d1 = max(d1, float(np.abs(r1 - p1).max()))
            dc = max(dc, abs(float(rc) - float(c)))
    only = len(set(ref_m) ^ set(zip(ours.idx0.tolist(), ours.idx1.tolist())))
    return {"conf_max_abs": dconf, "fine_pts1_max_px": d1, "pts0_max_px": d0, "mconf_max_abs": dc,
            "matches_ref": len(ref_m), "matches_ours": len(ours), "common": common, "one_side_only": only}


def parity(ref_cls, default_cfg, variants: list[str], threshold: float, ckpt_dir: Path, layout: str,
           max_pairs: int) -> dict:
    results: dict = {}
    pairs = test_pairs()
    for name in variants:
        mt, fix, prefilter = VARIANTS[name]
        try:
            net = random_reference(ref_cls, default_cfg, mt, fix, prefilter)
        except ImportError as exc:  # the reference's Sinkhorn needs Magic Leap's superglue.py beside it
            print(f"{name}: skipped, the reference cannot build it: {exc}", flush=True)
            continue
        path = ckpt_dir / f"loftr_random_{name}.ckpt"
        torch.save({"state_dict": {"matcher." + k: v for k, v in net.state_dict().items()}, "epoch": 0}, path)
        ours = LoFTR(LoFTRConfig(weights=str(path), temp_bug_fix=fix, precision="fp32", threshold=threshold,
                                 skh_prefilter=prefilter, backbone_layout=layout), state_dict=read_checkpoint(path))
        assert ours.match_type == mt
        rows = {}
        # the first variant on every pair; the others on every third pair when max_pairs is set
        sel = pairs if name == variants[0] or not max_pairs else pairs[::3][:max_pairs]
        for pname, im0, im1 in sel:
            r = compare(run_reference(net, im0, im1, threshold), ours.match_images(im0, im1, return_conf=True))
            rows[pname] = r
            print(f"{name:7s} {pname:24s} conf max|d| {r['conf_max_abs']:.2e}  fine pts1 max|d| "
                  f"{r['fine_pts1_max_px']:.2e} px  matches ref {r['matches_ref']:4d} ours {r['matches_ours']:4d} "
                  f"common {r['common']:4d}", flush=True)
        results[name] = {"pairs": rows,
                         "worst_conf": max(r["conf_max_abs"] for r in rows.values()),
                         "worst_fine_px": max(r["fine_pts1_max_px"] for r in rows.values()),
                         "one_side_only": sum(r["one_side_only"] for r in rows.values()),
                         "common": sum(r["common"] for r in rows.values())}
    return results


def speed(ref_cls, default_cfg, repeats: int, threshold: float, ckpt_dir: Path,
          precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    """Median ms per 640x480 fr1_xyz pair, ours and the reference alternating, fp32 and bf16."""
    net = random_reference(ref_cls, default_cfg, "dual_softmax", True, False)
    path = ckpt_dir / "loftr_random_speed.ckpt"
    torch.save({"state_dict": {"matcher." + k: v for k, v in net.state_dict().items()}}, path)
    sd = read_checkpoint(path)
    tum = sorted(glob.glob(str(DATA / "tum/rgbd_dataset_freiburg1_xyz/rgb/*.jpg")))
    im0, im1 = _load(tum[0]), _load(tum[10])
    out = {"threads": torch.get_num_threads(), "repeats": repeats, "pair": "fr1_xyz 0-10 640x480"}
    for prec in precisions:
        runners = {}
        for layout in (("channels_last", "blocked", "winograd") if prec == "fp32" else ("channels_last",)):
            m = LoFTR(LoFTRConfig(weights=str(path), temp_bug_fix=True, precision=prec, threshold=threshold,
                                  backbone_layout=layout), state_dict=sd)
            runners[f"ours {layout}"] = lambda m=m: m.match_images(im0, im1)

        def run_ref(prec=prec):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                run_reference(net, im0, im1, threshold)

        runners["ref"] = run_ref
        for fn in runners.values():  # warm-up
            fn()
        names = list(runners)
        ts: dict[str, list[float]] = {k: [] for k in names}
        for k in range(repeats):  # rotate the order every round
            for key in names[k % len(names):] + names[:k % len(names)]:
                t = time.perf_counter()
                runners[key]()
                ts[key].append(1e3 * (time.perf_counter() - t))
        med = {k: statistics.median(v) for k, v in ts.items()}
        out[prec] = {"median_ms": med, "all_ms": ts,
                     "speedup": {k: med["ref"] / v for k, v in med.items() if k != "ref"}}
        print(f"{prec}: reference {med['ref']:.0f} ms; " + "; ".join(
            f"{k} {v:.0f} ms = {med['ref'] / v:.2f}x" for k, v in med.items() if k != "ref")
            + f" (medians of {repeats}, alternating)", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="checkout of zju3dv/LoFTR (repository root or its src/loftr)")
    ap.add_argument("--out", default="", help="JSON file for the results")
    ap.add_argument("--variants", default="ds_fix,ds,ot", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--threshold", type=float, default=0.0,
                    help="coarse threshold for parity (0: every mutual nearest neighbour, many fine matches)")
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--speed", action="store_true", help="also time 640x480 pairs, fp32 and bf16")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16 for --speed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layout", default="blocked", choices=("blocked", "channels_last", "winograd"),
                    help="our backbone layout for parity (loftr.backbone_layout)")
    ap.add_argument("--max-pairs", type=int, default=0,
                    help="variants after the first: at most this many pairs (every third); 0 = all")
    ap.add_argument("--ckpt-dir", default="/tmp", help="where the random checkpoints are written")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref_cls, default_cfg = load_reference(args.ref)
    ckpt_dir = Path(args.ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"torch": torch.__version__, "threads": args.threads, "layout": args.layout}
    ok = True
    if not args.no_parity:
        variants = [v for v in args.variants.split(",") if v]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
        result["parity"] = par = parity(ref_cls, default_cfg, variants, args.threshold, ckpt_dir,
                                             args.layout, args.max_pairs)
        print("\nworst per variant: conf max|d|, fine pts1 max|d| px, matches of one side only / common")
        for k, v in par.items():
            good = v["worst_conf"] <= CONF_BAR and v["worst_fine_px"] <= FINE_BAR
            ok &= good
            print(f"  {k:7s} {v['worst_conf']:.2e}  {v['worst_fine_px']:.2e}  {v['one_side_only']} / {v['common']}"
                  f"  {'ok' if good else 'OVER THE BAR'}")
    if args.speed:
        result["speed"] = speed(ref_cls, default_cfg, args.repeats, 0.2, ckpt_dir,
                                tuple(p for p in args.precisions.split(",") if p))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
