"""Frame-to-pose latency of a threaded run, frame by frame, and where the global BAs fell.

Runs ``python -m slam run ARGS`` (threaded: leave out ``--sync``) and records every frame's
frame-to-pose latency (ms, what ``metrics.json`` summarises) with the time it was recorded, and
the start and end of every background global BA after a loop (:class:`slam.loop.correction.GlobalBA`).
It prints p50 / p95 / max over the run, and for the frames that finished while a global BA ran
or within a second after it (the frames it can delay) against the others. ``--json`` keeps the
series; ``--png`` draws latency against frame number with the global BAs shaded.

    PYTHONPATH=. python tools/latency_trace.py --json F --png P \\
        run --seq synthetic/loop --data-root DIR --mode rgbd [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from slam.runtime.stats import TimingSummary


def summary(t_done: np.ndarray, ms: np.ndarray, windows: list[tuple[float, float]], after_s: float = 1.0) -> dict:
    """p50/p95/max of ms (N,) over all frames, and over the frames whose t_done (N,, perf_counter
    seconds) falls inside a window (start, end) or within after_s after it, against the others."""
    def stats(x: np.ndarray) -> dict:
        if x.size == 0:
            return {"frames": 0}
        t = TimingSummary.from_samples(x)
        return {"frames": t.count, "p50_ms": t.p50_ms, "p95_ms": t.p95_ms, "max_ms": t.max_ms}
    near = np.zeros(ms.size, dtype=bool)
    for a, b in windows:
        near |= (t_done >= a) & (t_done <= b + after_s)
    return {"all": stats(ms), "during_global_ba": stats(ms[near]), "other": stats(ms[~near]),
            "global_ba_s": [float(b - a) for a, b in windows]}


def main(argv: list[str]) -> int:
    if "run" not in argv:
        print("usage: latency_trace.py [--json F] [--png P] run SLAM_RUN_ARGS", file=sys.stderr)
        return 2
    cut = argv.index("run")
    ap = argparse.ArgumentParser(prog="latency_trace.py")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None)
    a = ap.parse_args(argv[:cut])

    import slam.loop.correction as correction
    import slam.runtime.stats as stats
    from slam.cli import main as slam_main

    frames: list[tuple[float, float]] = []
    windows: list[tuple[float, float]] = []
    record = stats.StatsCollector.record_latency
    run = correction.GlobalBA.run

    def record_latency(self, t_read, t_done=None):
        ms = record(self, t_read, t_done)
        if ms is not None:
            frames.append((time.perf_counter() if t_done is None else t_done, ms))
        return ms

    def gba_run(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return run(self, *args, **kwargs)
        finally:
            windows.append((t0, time.perf_counter()))

    stats.StatsCollector.record_latency = record_latency
    correction.GlobalBA.run = gba_run
    rc = slam_main(argv[cut:])
    if not frames:
        print("no frame reached tracking", file=sys.stderr)
        return rc or 1
    arr = np.asarray(frames)
    out = summary(arr[:, 0], arr[:, 1], windows)
    for k in ("all", "during_global_ba", "other"):
        s = out[k]
        line = f"{k}: {s['frames']} frames" + (f", p50 {s['p50_ms']:.0f} / p95 {s['p95_ms']:.0f} / max {s['max_ms']:.0f} ms" if s["frames"] else "")
        print(line)
    print("global BAs:", ", ".join(f"{x:.2f} s" for x in out["global_ba_s"]) or "none")
    if a.json:
        t0 = float(arr[0, 0])
        out["series"] = {"t_s": (arr[:, 0] - t0).tolist(), "ms": arr[:, 1].tolist()}
        out["global_ba_windows_s"] = [(s - t0, e - t0) for s, e in windows]
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(11, 4))
        ax.plot(np.arange(arr.shape[0]), arr[:, 1], lw=0.8, label="frame-to-pose latency")
        for i, (s, e) in enumerate(windows):
            ax.axvspan(np.searchsorted(arr[:, 0], s), np.searchsorted(arr[:, 0], e), color="tab:orange", alpha=0.25,
                       label="global BA" if i == 0 else None)
        ax.set_xlabel("frame (in the order tracking finished them)")
        ax.set_ylabel("ms")
        s = out["all"]
        ax.set_title(f"p50 {s['p50_ms']:.0f} / p95 {s['p95_ms']:.0f} / max {s['max_ms']:.0f} ms over {s['frames']} frames")
        ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(a.png, dpi=90)
    return rc


if __name__ == "__main__":  # the feature process is spawned and imports this file again
    sys.exit(main(sys.argv[1:]))
