"""How often SuperGlue in bf16 keeps the matches of fp32, on real image pairs.

    PYTHONPATH=. python tools/superglue_bf16_agreement.py --out runs/superglue_bf16_agreement.json
    PYTHONPATH=. python tools/superglue_bf16_agreement.py --superpoint W.pth --superglue W.pth

Pairs: Churchill 1-k (k = 2..6) and the 15 ScanNet pairs of ../shared/data/pairs, and fr1_xyz
frames (i, i + 10) for i = 0, 80, ..., 720. Features: SuperPoint with --superpoint weights when
given, else ALIKED-N16 (real keypoints and descriptors of real images; its 128-D descriptors are
repeated to 256-D, which keeps their inner products, so the official SuperGlue configuration
applies). SuperGlue: --superglue weights when given, else random weights in the official
configuration (9 + 9 layers, 256-D) with the final projection drawn N(0, 1) so that descriptor
similarity carries through (as in tests/test_superglue.py): a proxy while no trained SuperGlue
weights are available here.

Agreement per pair = share of fp32's matches that bf16 returns identically; also the share of
all keypoints whose assignment (match or -1) is identical.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cv2
import torch

from slam.matching.superglue import SuperGlue, SuperGlueConfig, SuperGlueNet
from slam.types import Features

OFFICIAL = dict(descriptor_dim=256, n_layers=9, num_heads=4, keypoint_encoder=[32, 64, 128, 256])


def image_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    pairs = []
    ch = root / "pairs" / "churchill"
    pairs += [(f"churchill 1-{k}", ch / "1.png", ch / f"{k}.png") for k in range(2, 7)]
    sc = root / "pairs" / "scannet"
    for line in (sc / "pairs_with_gt.txt").read_text().splitlines():
        a, b = line.split()[:2]
        pairs.append((f"scannet {a[:12]}", sc / a, sc / b))
    tum = root / "tum" / "rgbd_dataset_freiburg1_xyz"
    frames = [ln.split()[1] for ln in (tum / "rgb.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    pairs += [(f"fr1_xyz {i}-{i + 10}", tum / frames[i], tum / frames[i + 10]) for i in range(0, 721, 80)]
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--superpoint", default="", help="SuperPoint weights (else ALIKED-N16 features)")
    ap.add_argument("--superglue", default="", help="SuperGlue weights (else random official-size weights)")
    ap.add_argument("--max-keypoints", type=int, default=1024)
    ap.add_argument("--max-side", type=int, default=640, help="images are resized so the longer side is at most this")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.superpoint:
        from slam.features.superpoint import SuperPoint, SuperPointConfig
        ext = SuperPoint(SuperPointConfig(weights=args.superpoint, max_keypoints=args.max_keypoints, precision="fp32"))
        widen = False
    else:
        from slam.features.aliked import ALIKED, ALIKEDConfig
        ext = ALIKED(ALIKEDConfig(max_keypoints=args.max_keypoints, precision="fp32"))
        widen = True
    if args.superglue:
        make = lambda p: SuperGlue(SuperGlueConfig(weights=args.superglue, precision=p))  # noqa: E731
    else:
        torch.manual_seed(0)
        net = SuperGlueNet(**OFFICIAL)
        with torch.no_grad():
            net.final_proj.weight.normal_(0.0, 1.0)
        sd = net.state_dict()
        make = lambda p: SuperGlue(SuperGlueConfig(precision=p), "cpu", state_dict=sd)  # noqa: E731
    sg32, sg16 = make("fp32"), make("bf16")

    def features(path: Path) -> Features:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read {path}")
        scale = min(1.0, args.max_side / max(img.shape[:2]))
        if scale < 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        f = ext.extract(img)
        if widen:
            f = Features(f.keypoints, f.scores, torch.cat([f.descriptors, f.descriptors], 1) / 2 ** 0.5, f.image_size)
        return f

    rows = []
    for name, a, b in image_pairs(Path(args.data_root)):
        f0, f1 = features(a), features(b)
        m32, m16 = sg32.match(f0, f1).matches0, sg16.match(f0, f1).matches0
        matched = m32 >= 0
        keep = float((m16[matched] == m32[matched]).mean()) if matched.any() else 1.0
        rows.append({"pair": name, "keypoints": [len(f0), len(f1)], "fp32_matches": int(matched.sum()),
                     "bf16_matches": int((m16 >= 0).sum()), "kept": keep, "same_assignment": float((m16 == m32).mean())})
        print(f"{name:28s} kp {len(f0):4d}/{len(f1):4d}  fp32 matches {matched.sum():4d}  bf16 {int((m16 >= 0).sum()):4d}  "
              f"kept {keep:.4f}  same assignment {rows[-1]['same_assignment']:.4f}", flush=True)
    for group in ("churchill", "scannet", "fr1_xyz", ""):
        sel = [r for r in rows if r["pair"].startswith(group)]
        total32 = sum(r["fp32_matches"] for r in sel)
        kept = sum(r["kept"] * r["fp32_matches"] for r in sel) / max(total32, 1)
        print(f"{group or 'all':10s} {len(sel):3d} pairs: matches kept {kept:.4f} (pooled), per-pair min "
              f"{min(r['kept'] for r in sel):.4f}, median {statistics.median(r['kept'] for r in sel):.4f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "pairs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
