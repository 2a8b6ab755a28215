"""Train our own SuperGlue on our SuperPoint features (homography pairs + synthetic RGB-D pairs):

    python tools/train_superglue.py --config cpu --out runs/sg_cpu --superpoint runs/sp_cpu/joint_r1/weights.pth [--resume] [--minutes 10]
    python tools/train_superglue.py --config cpu --out runs/sg_cpu --resume --export slam/weights/superglue_ours.pth

Each call trains for at most --minutes and writes a checkpoint that --resume continues exactly.
--config smoke runs a few steps on tiny images (CI; --superpoint random works without weights).
The code lives in slam/training/superglue_trainer.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import slam
from slam.training.superglue_trainer import export_superglue, run_superglue


def main(argv=None) -> int:
    default_sp = Path(slam.__file__).resolve().parent / "weights" / "superpoint_ours.pth"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="cpu", choices=("smoke", "cpu", "gpu"))
    ap.add_argument("--out", required=True, type=Path, help="run folder")
    ap.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    ap.add_argument("--minutes", type=float, default=10.0, help="time box of this chunk (default 10)")
    ap.add_argument("--superpoint", default=None,
                    help=f"SuperPoint weights giving the features (default {default_sp}; 'random' for smoke runs)")
    ap.add_argument("--steps", type=int, default=None, help="override the total steps (new runs only)")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size (new runs only)")
    ap.add_argument("--layers", type=int, default=None, help="override n_layers (self+cross pairs; new runs only)")
    ap.add_argument("--stop-at", type=int, default=None, help="also stop once this step is reached")
    ap.add_argument("--images", type=Path, default=None, help="training images (default ../shared/data/images)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the config's; also on resume)")
    ap.add_argument("--finalize", action="store_true",
                    help="end the run now: weights.pth from the latest checkpoint (schedule cut short)")
    ap.add_argument("--export", type=Path, default=None, help="after the run has finished, write fp16 weights here")
    args = ap.parse_args(argv)
    sp = args.superpoint
    if sp is None:
        sp = str(default_sp) if default_sp.is_file() or args.config != "smoke" else "random"
    summary = run_superglue(args.config, args.out, superpoint=sp, resume=args.resume, minutes=args.minutes,
                            stop_at=args.stop_at, overrides={"steps": args.steps, "batch": args.batch,
                                                             "n_layers": args.layers},
                            images_root=args.images, device=args.device, finalize_early=args.finalize,
                            threads=args.threads)
    if args.export is not None:
        weights = args.out / "weights.pth"
        if not weights.is_file():
            print(f"nothing to export: {weights} does not exist (the run has not finished)", file=sys.stderr)
            return 2
        export_superglue(weights, args.export, meta={"config": args.config, **summary})
        summary["exported"] = str(args.export)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
