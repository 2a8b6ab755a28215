"""Forced tracking loss: run SLAM on a sequence with a stretch of black frames and report how
many frames after the images return tracking recovers (relocalisation).

    PYTHONPATH=. python tools/blackout_run.py --seq tum/fr1_xyz --data-root /work/shared/data/tum \
        -c configs/tum_rgbd.yaml --blackout 300:20 [key=value ...]

Prints one line: frames tracked, the recovery in frames after the images return, and the ATE
of the run (metrics.json of the run folder has the rest).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from slam.app import open_input, run_slam
from slam.config import load_config
from slam.io.blackout import Blackout, parse_blackout, recovery_frames


def tracked_timestamps(run_dir: Path) -> list[float]:
    rows = (ln.split() for ln in (run_dir / "trajectory.txt").read_text().splitlines())
    return [float(r[0]) for r in rows if r and not r[0].startswith("#")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("-c", "--config", action="append", default=[])
    ap.add_argument("--blackout", required=True, help="START:COUNT, e.g. 300:20")
    ap.add_argument("--out", default="runs")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    start, count = parse_blackout(a.blackout)
    # the wrapper records the timestamps it yields: keep the reader in this process
    cfg = load_config(a.config, [*a.overrides, f"output.root={a.out}", "runtime.feature_stage=thread"])
    inputs = open_input(a.seq, cfg, data_root=a.data_root)
    inputs.source = Blackout(inputs.source, start, count)
    m = run_slam(cfg, inputs)
    rec = recovery_frames(inputs.source.timestamps, tracked_timestamps(Path(m["run_dir"])), start, count)
    ev = m.get("eval") or {}
    ate = ev.get("ate_rmse_m")
    print(f"{a.seq} ({cfg.mode}) black frames {start}-{start + count - 1}: tracked {m['frames_tracked']}/{m['frames_in']}, "
          f"recovered {'never' if rec is None else f'{rec} frames'} after the images returned, relocalisations "
          f"{m.get('relocalisations')}, ATE {'n/a' if ate is None else f'{100 * ate:.2f} cm'}; run folder {m['run_dir']}")
    return 0 if rec is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
