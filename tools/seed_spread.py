"""The spread of a run's accuracy under rounding-level perturbations, to rank settings fairly.

Monocular runs here are chaotic: a micrometre of difference in an early local BA, or a change of
solver, can move the final ATE by a factor of two or more (docs/benchmarks.md, section 14,
"two fixed keyframes in the first monocular local BAs"). One run per setting then cannot rank
two settings. This tool runs each setting several times, each time with every keypoint moved
by a uniform offset of at most ``--jitter`` pixels (default 0.001 px, far below any detector's
precision) from a generator seeded by (seed, frame index, image), and reports the median and the
range of the ATE per setting. Seed 0 is the unperturbed run.

    python tools/seed_spread.py --seeds 5 --setting "" --setting "mapping.ba_solver=schur" \\
        -- --seq synthetic/corridor --data-root DIR --mode mono

Everything after ``--`` is passed to ``python -m slam run`` (``--sync`` is added: the features
must run in this process for the perturbation to reach them). Each run is a subprocess; the
table goes to stdout and, with ``--json F``, to a file; figures come from each run folder's metrics.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_ENV = "SLAM_SEED_SPREAD"  # "seed jitter" for a worker run


def _worker(argv: list[str]) -> int:
    """Run ``slam run`` with the keypoints of every frame perturbed (seed and jitter from the env)."""
    import torch

    from slam.cli import main as slam_main
    from slam.tracking.frontend import FeatureStage

    seed_s, jitter_s = os.environ[_ENV].split()
    seed, jitter = int(seed_s), float(jitter_s)
    original = FeatureStage.process

    def perturbed(feats, index: int, side: int):
        rng = np.random.default_rng((seed, int(index), side))
        offset = torch.from_numpy(rng.uniform(-jitter, jitter, tuple(feats.keypoints.shape)).astype(np.float32))
        return dataclasses.replace(feats, keypoints=feats.keypoints + offset.to(feats.keypoints.device), _kp_np=None)

    class _Jittered:
        def __init__(self, extractor, index: int) -> None:
            self._ex, self._index = extractor, index

        def __getattr__(self, name):
            return getattr(self._ex, name)

        def extract(self, image):
            return perturbed(self._ex.extract(image), self._index, 0)

        def extract_batch(self, images):
            return [perturbed(f, self._index, i) for i, f in enumerate(self._ex.extract_batch(images))]

    def process(self, frame):
        extractor = self.extractor
        self.extractor = _Jittered(extractor, frame.index)
        try:
            return original(self, frame)
        finally:
            self.extractor = extractor

    if seed > 0:
        FeatureStage.process = process
    return slam_main(argv)


def _run(run_args: list[str], setting: str, seed: int, jitter: float, out: Path) -> dict:
    """One worker run into its own folder under out; ATE and tracked share from its metrics.json."""
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", "--", "run", *run_args, "--sync",
            *shlex.split(setting), "--out", str(out)]
    env = dict(os.environ, **{_ENV: f"{seed} {jitter}"})
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    found = sorted(out.glob("*/metrics.json"))
    m = json.loads(found[-1].read_text()) if found else {}
    ate = (m.get("eval") or {}).get("ate_rmse_m")
    return {"setting": setting, "seed": seed, "rc": proc.returncode,
            "ate_cm": None if ate is None else round(100.0 * float(ate), 2), "tracked_pct": None if m.get("tracked_pct") is None else round(float(m["tracked_pct"]), 1)}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--worker":
        return _worker(argv[2:] if len(argv) > 1 and argv[1] == "--" else argv[1:])
    if "--" not in argv:
        print("usage: seed_spread.py [--seeds N] [--first-seed K] [--jitter PX] [--setting 'k=v ...']... [--json F] -- SLAM_RUN_ARGS",
              file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="seed_spread.py")
    ap.add_argument("--seeds", type=int, default=5, help="runs per setting: seed 0 (unperturbed) .. N-1")
    ap.add_argument("--first-seed", type=int, default=0, help="start at this seed (extend an earlier spread: its seeds repeat exactly)")
    ap.add_argument("--jitter", type=float, default=1e-3, help="largest keypoint offset in px")
    ap.add_argument("--setting", action="append", default=None, help="config overrides of one setting (repeatable)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv[:cut])
    settings = a.setting or [""]
    rows = []
    with tempfile.TemporaryDirectory(prefix="seed_spread_") as tmp:
        for setting in settings:
            for seed in range(a.first_seed, a.first_seed + a.seeds):
                r = _run(argv[cut + 1:], setting, seed, a.jitter, Path(tmp) / f"{len(rows)}")
                rows.append(r)
                print(f"[{setting or 'default'}] seed {seed}: ATE {r['ate_cm']} cm, tracked {r['tracked_pct']} %, rc {r['rc']}", flush=True)
    print()
    print("| setting | runs | ATE median | min - max | tracked median |")
    print("|---|---|---|---|---|")
    summary = []
    for setting in settings:
        ates = [r["ate_cm"] for r in rows if r["setting"] == setting and r["ate_cm"] is not None]
        tr = [r["tracked_pct"] for r in rows if r["setting"] == setting and r["tracked_pct"] is not None]
        if not ates:
            print(f"| {setting or 'default'} | 0 | - | - | - |")
            continue
        s = {"setting": setting, "runs": len(ates), "ate_median_cm": float(np.median(ates)),
             "ate_min_cm": min(ates), "ate_max_cm": max(ates), "tracked_median_pct": float(np.median(tr)) if tr else None}
        summary.append(s)
        print(f"| {setting or 'default'} | {len(ates)} | {s['ate_median_cm']:.2f} cm | {s['ate_min_cm']:.2f} - {s['ate_max_cm']:.2f} cm "
              f"| {s['tracked_median_pct']} % |")
    if a.json is not None:
        a.json.write_text(json.dumps({"command": argv, "jitter_px": a.jitter, "runs": rows, "summary": summary}, indent=1))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
