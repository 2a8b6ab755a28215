"""`python -m slam bench`: accuracy and speed on a whole sequence; prints a table, writes JSON."""
from __future__ import annotations

import copy
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from slam.config import Config


def machine_description() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def _row(m: dict) -> dict:
    ev = m.get("eval") or {}
    rt = m.get("runtime") or {}
    stages = {k: v.get("mean_ms") for k, v in (rt.get("stages") or {}).items()} if isinstance(rt.get("stages"), dict) else {}
    return {
        "mode": m["mode"],
        "runner": m.get("runner", ""),
        "features": m["features"],
        "matcher": m["matcher"],
        "frames": m["frames_in"],
        "tracked_pct": round(m["tracked_pct"], 2),
        "tracked_after_init_pct": round(m["tracked_after_init_pct"], 2),
        "ate_rmse_m": ev.get("ate_rmse_m"),
        "rpe_trans_rmse_m": ev.get("rpe_trans_rmse_m"),
        "rpe_rot_rmse_deg": ev.get("rpe_rot_rmse_deg"),
        "fps": round(m["fps"], 2),
        "peak_rss_mb": round(m["peak_rss_mb"], 1),
        "keyframes": m["keyframes"],
        "map_points": m["map_points"],
        "stage_mean_ms": stages,
        "latency_ms": rt.get("latency"),
        "run_dir": m["run_dir"],
    }


def format_table(rows: list[dict]) -> str:
    head = f"{'mode':5} {'runner':9} {'features':10} {'matcher':9} {'frames':>6} {'tracked%':>8} {'ATE cm':>7} {'RPE cm':>7} {'RPE deg':>7} {'fps':>6} {'peak MB':>8} {'KFs':>4}  ms/stage"
    lines = [head, "-" * len(head)]
    for r in rows:
        ate = f"{r['ate_rmse_m'] * 100:7.2f}" if r["ate_rmse_m"] is not None else "      -"
        rpe = f"{r['rpe_trans_rmse_m'] * 100:7.2f}" if r["rpe_trans_rmse_m"] is not None else "      -"
        rpr = f"{r['rpe_rot_rmse_deg']:7.3f}" if r["rpe_rot_rmse_deg"] is not None else "      -"
        st = " ".join(f"{k}={v:.0f}" for k, v in (r["stage_mean_ms"] or {}).items() if v is not None)
        lines.append(
            f"{r['mode']:5} {r['runner']:9} {r['features']:10} {r['matcher']:9} {r['frames']:6d} {r['tracked_pct']:8.1f} {ate} {rpe} {rpr} {r['fps']:6.1f} {r['peak_rss_mb']:8.0f} {r['keyframes']:4d}  {st}"
        )
    return "\n".join(lines)


@dataclass
class BenchSpec:
    """What a benchmark runs (the configuration itself is passed beside it).

    seq:          sequence name or path (as ``--seq`` of ``slam run``).
    data_root:    where datasets live (None: $SLAM_DATA, then ./sequences).
    modes:        modes to run, e.g. ["rgbd", "mono"].
    json_path:    where the JSON results go.
    compare_sync: also run the synchronous runner and report the threaded/sync throughput ratio.
    repeat:       with compare_sync, pairs of runs (order alternating); the median ratio is reported.
    command:      the command line to record in the JSON.
    """

    seq: str = "tum/fr1_xyz"
    data_root: Optional[str] = None
    modes: list[str] = field(default_factory=lambda: ["rgbd", "mono"])
    json_path: str = "bench.json"
    compare_sync: bool = False
    repeat: int = 1
    command: str = ""


def run_bench(base: Config, spec: BenchSpec, feature_worker=None) -> int:
    """Run ``spec`` with configuration ``base``; print the table; write the JSON. Returns 0."""
    from slam.app import open_input, run_slam
    from slam.system import resolve_config

    base = resolve_config(base)
    if feature_worker is not None and not feature_worker.wait_ready():
        print("warning: the feature process did not start; threaded runs start their own", flush=True)
    rows = []
    repeat = max(1, int(spec.repeat))
    for mode in spec.modes:
        for rep in range(repeat):
            runners = [True, False] if spec.compare_sync else [base.runtime.threaded]
            if rep % 2 == 1:  # alternate the order, so slow phases of a shared machine hit both alike
                runners = runners[::-1]
            for threaded in runners:
                cfg = copy.deepcopy(base)
                cfg.mode = mode
                cfg.runtime.threaded = threaded
                cfg.runtime.progress = False
                inputs = open_input(spec.seq, cfg, spec.data_root)
                m = run_slam(cfg, inputs, feature_worker=feature_worker)
                m["runner"] = "threaded" if threaded else "sync"
                row = _row(m)
                row["repeat"] = rep
                rows.append(row)
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    ratios = {}
    if spec.compare_sync:
        for mode in spec.modes:
            per = []
            for rep in range(repeat):
                t = [r for r in rows if r["mode"] == mode and r["runner"] == "threaded" and r["repeat"] == rep]
                s_ = [r for r in rows if r["mode"] == mode and r["runner"] == "sync" and r["repeat"] == rep]
                if t and s_:
                    per.append(t[0]["fps"] / s_[0]["fps"])
            if per:
                ratios[mode] = {"per_repeat": per, "median": float(np.median(per))}
                each = ", ".join(f"{v:.2f}" for v in per)
                print(f"{mode}: threaded/sync throughput = {np.median(per):.2f}x (median of {len(per)}: {each})")
    out = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": machine_description(),
        "sequence": spec.seq,
        "command": spec.command,
        "results": rows,
        "threaded_over_sync": ratios,
    }
    Path(spec.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(spec.json_path).write_text(json.dumps(out, indent=2, default=str))
    print(f"JSON written to {spec.json_path}")
    return 0
