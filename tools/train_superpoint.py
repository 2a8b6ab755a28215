"""Train our own SuperPoint with the paper's self-supervised recipe (stages run one after another):

    python tools/train_superpoint.py --stage magicpoint --config cpu --out runs/sp_cpu [--resume] [--minutes 10]
    python tools/train_superpoint.py --stage adapt      --config cpu --out runs/sp_cpu [--resume]
    python tools/train_superpoint.py --stage joint      --config cpu --out runs/sp_cpu [--resume]
    python tools/train_superpoint.py --stage joint --config cpu --out runs/sp_cpu --export slam/weights/superpoint_ours.pth

Each call trains for at most --minutes, then writes a checkpoint that --resume continues exactly
(model, optimiser, learning-rate schedule, random states, step). --config smoke runs a few steps
on tiny images (CI). Training images: ../shared/data/images (or --images) plus synthetic renders;
the evaluation data (fr1_xyz, pairs/) is refused. The code lives in slam/training/.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slam.training.superpoint_trainer import STAGES, export_superpoint, run_stage, stage_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, choices=STAGES)
    ap.add_argument("--config", default="cpu", choices=("smoke", "cpu", "gpu"))
    ap.add_argument("--out", required=True, type=Path, help="run folder shared by all stages")
    ap.add_argument("--resume", action="store_true", help="continue the stage's checkpoint in --out")
    ap.add_argument("--minutes", type=float, default=10.0, help="time box of this chunk (default 10)")
    ap.add_argument("--round", type=int, default=1, help="adaptation round (2+ iterates adapt/joint)")
    ap.add_argument("--steps", type=int, default=None, help="override the config's total steps (new runs only)")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size (new runs only)")
    ap.add_argument("--stop-at", type=int, default=None, help="also stop once this step is reached")
    ap.add_argument("--images", type=Path, default=None, help="training images (default ../shared/data/images)")
    ap.add_argument("--init", type=Path, default=None, help="weights for adapt / to initialise joint")
    ap.add_argument("--labels", type=Path, default=None, help="labels.npz for joint")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the config's; also on resume)")
    ap.add_argument("--finalize", action="store_true",
                    help="end the stage now: weights.pth from the latest checkpoint (schedule cut short)")
    ap.add_argument("--export", type=Path, default=None,
                    help="after the stage has finished, write its weights in fp16 to this path")
    args = ap.parse_args(argv)
    summary = run_stage(args.stage, args.config, args.out, resume=args.resume, minutes=args.minutes,
                        round_=args.round, stop_at=args.stop_at,
                        overrides={"steps": args.steps, "batch": args.batch},
                        images_root=args.images, init=args.init, labels=args.labels, device=args.device,
                        finalize_early=args.finalize, threads=args.threads)
    if args.export is not None:
        weights = stage_dir(args.out, args.stage, args.round) / "weights.pth"
        if args.stage == "adapt" or not weights.is_file():
            print(f"nothing to export: {weights} does not exist (the stage has not finished)", file=sys.stderr)
            return 2
        export_superpoint(weights, args.export, meta={"stage": args.stage, "config": args.config, **summary})
        summary["exported"] = str(args.export)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
