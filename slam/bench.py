"""`python -m slam bench`: accuracy and speed on one or more sequences; prints tables, writes JSON.

``--seq`` takes a list (``--seq a,b`` or ``--seq a --seq b``; ``SEQ:mode+mode`` picks the modes of
one sequence); ``--modes`` applies to all of them, default each sequence's own (TUM rgbd and mono,
EuRoC and KITTI mono, and stereo once the system has it). It prints one line per run, then the
summary table papers print (sequences x modes, ATE and frames tracked), and writes every run's
figures to the JSON file. Exit code 1 when a run tracked no frame.
"""
from __future__ import annotations

import copy
import json
import platform
import sys
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
        "sequence": m.get("sequence", ""),
        "mode": m["mode"],
        "runner": m.get("runner", ""),
        "features": m["features"],
        "matcher": m["matcher"],
        "frames": m["frames_in"],
        "tracked_pct": round(m["tracked_pct"], 2),
        "tracked_after_init_pct": round(m["tracked_after_init_pct"], 2),
        "alignment": ev.get("alignment"),
        "ate_rmse_m": ev.get("ate_rmse_m"),
        "rpe_trans_rmse_m": ev.get("rpe_trans_rmse_m"),
        "rpe_rot_rmse_deg": ev.get("rpe_rot_rmse_deg"),
        "kitti_t_err_pct": ev.get("kitti_t_err_pct"),
        "kitti_r_err_deg_per_100m": ev.get("kitti_r_err_deg_per_100m"),
        "groundtruth": ev.get("groundtruth"),
        "fps": round(m["fps"], 2),
        "peak_rss_mb": round(m["peak_rss_mb"], 1),
        "keyframes": m["keyframes"],
        "map_points": m["map_points"],
        "stage_mean_ms": stages,
        "tracking_wait_pct": _wait_pct(m),
        "latency_ms": rt.get("latency"),
        "run_dir": m["run_dir"],
    }


def _wait_pct(m: dict) -> Optional[float]:
    """Share (%) of a dataset run's wall time that tracking spent waiting for local mapping
    (metrics.json ``tracking_waited_for_mapping_ms`` over ``wall_s``): how far mapping is the
    critical path. None when the run did not record it."""
    waited, wall = m.get("tracking_waited_for_mapping_ms"), m.get("wall_s")
    if waited is None or not wall:
        return None
    return round(100.0 * float(waited) / (1e3 * float(wall)), 1)


def _num(v, scale: float = 1.0, fmt: str = "7.2f") -> str:
    width = int(fmt.split(".")[0])
    return f"{v * scale:{fmt}}" if v is not None else " " * (width - 1) + "-"


def format_table(rows: list[dict]) -> str:
    """One line per run: sequence, mode, runner, features, tracked %, ATE, RPE, KITTI errors, speed."""
    seq_w = max([8] + [len(str(r.get("sequence", ""))) for r in rows])
    head = (f"{'sequence':{seq_w}} {'mode':6} {'runner':8} {'features':10} {'matcher':9} {'frames':>6} {'tracked%':>8} "
            f"{'ATE cm':>7} {'align':>5} {'RPE cm':>7} {'RPE deg':>7} {'KITTI %':>7} {'deg/100m':>8} {'fps':>6} {'peak MB':>8} {'KFs':>4}  ms/stage")
    lines = [head, "-" * len(head)]
    for r in rows:
        st = " ".join(f"{k}={v:.0f}" for k, v in (r["stage_mean_ms"] or {}).items() if v is not None)
        lat = r.get("latency_ms") or {}
        if lat.get("p95_ms") is not None:
            st += f" latency p50/p95 {lat['p50_ms']:.0f}/{lat['p95_ms']:.0f}"
        if r.get("tracking_wait_pct") is not None:
            st += f" (tracking waited for mapping {r['tracking_wait_pct']:.0f} % of the run)"
        lines.append(
            f"{str(r.get('sequence', '')):{seq_w}} {r['mode']:6} {r['runner']:8} {r['features']:10} {r['matcher']:9} {r['frames']:6d} "
            f"{r['tracked_pct']:8.1f} {_num(r['ate_rmse_m'], 100)} {(r.get('alignment') or '-'):>5} {_num(r['rpe_trans_rmse_m'], 100)} "
            f"{_num(r['rpe_rot_rmse_deg'], 1, '7.3f')} {_num(r.get('kitti_t_err_pct'))} {_num(r.get('kitti_r_err_deg_per_100m'), 1, '8.3f')} "
            f"{r['fps']:6.1f} {r['peak_rss_mb']:8.0f} {r['keyframes']:4d}  {st}"
        )
    return "\n".join(lines)


def format_summary(rows: list[dict]) -> str:
    """The table papers print: one line per sequence, one column per mode, each cell
    "ATE cm (tracked %)" of the first run of that sequence and mode ("x" = nothing tracked)."""
    seqs = list(dict.fromkeys(r["sequence"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    seq_w = max([8] + [len(s) for s in seqs])
    cells: dict = {}
    for r in rows:
        key = (r["sequence"], r["mode"])
        if key in cells:
            continue
        if r["frames"] and r["tracked_pct"] == 0:
            cells[key] = "x (0 %)"
        elif r["ate_rmse_m"] is None:
            cells[key] = f"- ({r['tracked_pct']:.0f} %)"
        else:
            cells[key] = f"{r['ate_rmse_m'] * 100:.2f} ({r['tracked_pct']:.0f} %)"
    col_w = max([16] + [len(c) for c in cells.values()])
    lines = ["ATE RMSE cm (frames tracked %), Sim(3) alignment for mono, SE(3) otherwise",
             f"{'sequence':{seq_w}}  " + "  ".join(f"{m:>{col_w}}" for m in modes)]
    lines.append("-" * len(lines[-1]))
    for s_ in seqs:
        lines.append(f"{s_:{seq_w}}  " + "  ".join(f"{cells.get((s_, m), ''):>{col_w}}" for m in modes))
    return "\n".join(lines)


def _valid_modes() -> tuple[str, ...]:
    """The modes slam.config accepts (asked of the config itself, so a new mode shows up here)."""
    from slam.config import ConfigError, load_config

    out = []
    for m in ("rgbd", "mono", "stereo"):
        try:
            load_config(None, [f"mode={m}"])
            out.append(m)
        except ConfigError:
            pass
    return tuple(out)


def _synthetic_has_stereo(profile: str) -> bool:
    """Whether the embedded synthetic profile renders a right camera (unknown profiles: False)."""
    from slam.synth.profiles import PROFILES

    return bool(PROFILES.get(profile, {}).get("stereo"))


def dataset_modes(seq: str) -> tuple[str, ...]:
    """Modes a sequence can be run in, from its name or detected layout: TUM and synthetic rgbd
    and mono (synthetic profiles with a right camera also stereo); EuRoC and KITTI mono and
    stereo; image folders and videos mono."""
    head = seq.split("/", 1)[0]
    kind = head if head in ("tum", "euroc", "kitti", "synthetic") and not Path(seq).exists() else None
    if kind is None:
        from slam.io.detect import detect_layout

        kind = detect_layout(seq).kind
    if kind == "synthetic" and _synthetic_has_stereo(seq.split("/", 1)[1]):
        return ("rgbd", "mono", "stereo")
    return {"tum": ("rgbd", "mono"), "synthetic": ("rgbd", "mono"), "euroc": ("mono", "stereo"),
            "kitti": ("mono", "stereo")}.get(kind, ("mono",))


def parse_sequences(specs: list[str], modes: str | None) -> list[tuple[str, list[str]]]:
    """``--seq`` values (each may be a comma-separated list; ``SEQ:mode+mode`` picks modes for one
    sequence) and ``--modes`` (all sequences; None = each sequence's own modes) ->
    [(sequence, [mode, ...])]. Modes a sequence cannot do are dropped with a note; a mode the
    system does not have, or a sequence with no mode left, raises InputError."""
    from slam.errors import InputError

    valid = _valid_modes()
    wanted = [m.strip() for m in modes.split(",") if m.strip()] if modes else None
    for m in wanted or []:
        if m not in valid:
            raise InputError(f"--modes: {m!r} is not a mode of this system; choose from {', '.join(valid)}")
    out = []
    for spec in specs:
        for item in (p.strip() for p in spec.split(",")):
            if not item:
                continue
            own = None
            if ":" in item and all(m in ("rgbd", "mono", "stereo") for m in item.rsplit(":", 1)[1].split("+")):
                item, tail = item.rsplit(":", 1)
                own = tail.split("+")
            possible = dataset_modes(item)
            asked = own or wanted or [m for m in possible if m in valid]
            chosen = [m for m in asked if m in possible and m in valid]
            dropped = [m for m in asked if m not in chosen]
            if dropped:
                print(f"note: {item}: skipping mode(s) {', '.join(dropped)} (this input does {', '.join(m for m in possible if m in valid)})")
            if not chosen:
                raise InputError(f"--seq {item}: none of the modes {', '.join(asked)} apply; it can run {', '.join(possible)}")
            out.append((item, chosen))
    return out


@dataclass
class BenchSpec:
    """What a benchmark runs (the configuration itself is passed beside it).

    sequences:    ``--seq`` values: sequence names or paths, each may be a comma-separated list,
                  and ``SEQ:mode+mode`` picks the modes of one sequence (see :func:`parse_sequences`).
    modes:        modes for every sequence ("rgbd,mono"), None = each sequence's own.
    data_root:    where datasets live (None: $SLAM_DATA, then ./sequences; ``a:b`` for several).
    json_path:    where the JSON results go.
    compare_sync: also run the synchronous runner and report the threaded/sync throughput ratio.
    repeat:       with compare_sync or baseline, rounds of runs (order alternating); median ratios.
    command:      the command line to record in the JSON.
    baseline:     key=value overrides of a second configuration run side by side with the first
                  on every sequence and mode (e.g. ``["features=orb", "matcher=nn"]``); the
                  throughput ratio (first / baseline) is reported. Empty: no baseline.
    """

    sequences: list[str] = field(default_factory=lambda: ["tum/fr1_xyz"])
    modes: Optional[str] = None
    data_root: Optional[str] = None
    json_path: str = "bench.json"
    compare_sync: bool = False
    repeat: int = 1
    command: str = ""
    baseline: list[str] = field(default_factory=list)


def _baseline_ratios(rows: list[dict], plan: list, repeat: int) -> dict:
    """Per sequence and mode: fps of the main configuration over the baseline's, per round
    (runs of the same runner side by side) and their median."""
    out = {}
    for seq, modes in plan:
        for mode in modes:
            per, pair = [], None
            for rep in range(repeat):
                sel = [r for r in rows if r["input"] == seq and r["mode"] == mode and r["repeat"] == rep]
                for runner in dict.fromkeys(r["runner"] for r in sel):
                    a = [r for r in sel if r["runner"] == runner and r["config"] == "main"]
                    b = [r for r in sel if r["runner"] == runner and r["config"] == "baseline"]
                    if a and b and b[0]["fps"] > 0:
                        per.append(a[0]["fps"] / b[0]["fps"])
                        pair = (a[0], b[0])
            if per:
                key = mode if len(plan) == 1 else f"{seq}:{mode}"
                out[key] = {"per_repeat": per, "median": float(np.median(per)), "features": pair[0]["features"],
                            "matcher": pair[0]["matcher"], "baseline": f"{pair[1]['features']}+{pair[1]['matcher']}"}
    return out


def run_bench(base: Config, spec: BenchSpec, feature_worker=None) -> int:
    """Run ``spec`` with configuration ``base``; print the tables; write the JSON. Returns 1 when
    a run tracked no frame, 128 + the signal number when a signal stopped a run (no further
    runs start; the tables and JSON hold the runs made), else 0."""
    from slam.app import open_input, run_slam
    from slam.config import load_config
    from slam.system import resolve_config

    configs = [("main", resolve_config(base))]
    if spec.baseline:
        configs.append(("baseline", resolve_config(load_config(None, spec.baseline, base=copy.deepcopy(base)))))
    base = configs[0][1]
    plan = parse_sequences(spec.sequences, spec.modes)
    for seq, modes in plan:  # every input must open before the first run starts
        for mode in modes:
            cfg = copy.deepcopy(base)
            cfg.mode = mode
            open_input(seq, cfg, spec.data_root)
    if feature_worker is not None and not feature_worker.wait_ready():
        print("warning: the feature process did not start; threaded runs start their own", flush=True)
    rows = []
    stopped_by = None
    repeat = max(1, int(spec.repeat))
    for seq, modes in plan:
        for mode in modes:
            for rep in range(repeat):
                runners = [True, False] if spec.compare_sync else [base.runtime.threaded]
                plan_runs = [(name, c, threaded) for name, c in configs for threaded in runners]
                if rep % 2 == 1:  # alternate the order, so slow phases of a shared machine hit both alike
                    plan_runs = plan_runs[::-1]
                for config_name, run_cfg, threaded in plan_runs:
                    cfg = copy.deepcopy(run_cfg)
                    cfg.mode = mode
                    cfg.runtime.threaded = threaded
                    cfg.runtime.progress = False
                    inputs = open_input(seq, cfg, spec.data_root)
                    m = run_slam(cfg, inputs, feature_worker=feature_worker)
                    m["runner"] = "threaded" if threaded else "sync"
                    row = _row(m)
                    row["input"] = seq
                    row["repeat"] = rep
                    row["config"] = config_name
                    rows.append(row)
                    print(format_table(rows[-1:]).splitlines()[-1], flush=True)
                    if m.get("failure"):
                        print(f"  {seq} {mode}: run failed: {m['failure']}", flush=True)
                    if m.get("signal"):  # Ctrl-C / SIGTERM / SIGHUP: no further runs, the tables of those made
                        stopped_by = m["signal"]
                        break
                if stopped_by:
                    break
            if stopped_by:
                break
        if stopped_by:
            print(f"{stopped_by}: bench stopped after {len(rows)} run(s)", file=sys.stderr, flush=True)
            break
    print()
    print(format_table(rows))
    print()
    print(format_summary(rows))
    ratios = {}
    if spec.compare_sync:
        for seq, modes in plan:
            for mode in modes:
                per = []
                for rep in range(repeat):
                    sel = [r for r in rows if r["input"] == seq and r["mode"] == mode and r["repeat"] == rep
                           and r["config"] == "main"]
                    t = [r for r in sel if r["runner"] == "threaded"]
                    s_ = [r for r in sel if r["runner"] == "sync"]
                    if t and s_:
                        per.append(t[0]["fps"] / s_[0]["fps"])
                if per:
                    key = mode if len(plan) == 1 else f"{seq}:{mode}"
                    ratios[key] = {"per_repeat": per, "median": float(np.median(per))}
                    each = ", ".join(f"{v:.2f}" for v in per)
                    print(f"{key}: threaded/sync throughput = {np.median(per):.2f}x (median of {len(per)}: {each})")
    baseline_ratios = _baseline_ratios(rows, plan, repeat) if spec.baseline else {}
    for key, v in baseline_ratios.items():
        each = ", ".join(f"{x:.2f}" for x in v["per_repeat"])
        print(f"{key}: fps {v['features']}+{v['matcher']} / {v['baseline']} = {v['median']:.2f}x (median of "
              f"{len(v['per_repeat'])}: {each})")
    out = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": machine_description(),
        "sequence": plan[0][0] if len(plan) == 1 else [s_ for s_, _ in plan],
        "sequences": [{"sequence": s_, "modes": m_} for s_, m_ in plan],
        "command": spec.command,
        "results": rows,
        "threaded_over_sync": ratios,
        "stopped_by": stopped_by,
        "baseline": spec.baseline,
        "fps_over_baseline": baseline_ratios,
    }
    Path(spec.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(spec.json_path).write_text(json.dumps(out, indent=2, default=str))
    print(f"JSON written to {spec.json_path}")
    if stopped_by:
        import signal

        return 128 + int(getattr(signal, stopped_by))
    failed = [f"{r['sequence']} ({r['mode']})" for r in rows if r["tracked_pct"] == 0]
    if failed:
        print(f"error: {len(failed)} run(s) tracked no frame: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
