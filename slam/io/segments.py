"""Trajectory segments of a run with several unmerged maps (slam.mapping.atlas).

trajectory.txt holds the main map's frames (the map with most frames; every frame once all
maps were merged). Every other map's frames go to ``trajectory_map<id>.txt`` (TUM, in that map's
own world frame), and metrics.json lists all segments with their frames and, with ground truth,
their own ATE (each aligned on its own: Sim(3) in monocular runs).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from slam.io.trajectory import write_tum

log = logging.getLogger("slam")


def write_segments(out_dir: Path, segments: list[tuple], n_frames: int, sequence: str, mode: str,
                   groundtruth=None, mono: bool = False) -> Optional[list[dict]]:
    """Write the segments after the first (segments: [(map id, indices (F,), timestamps (F,) s,
    world_from_cam (F, 4, 4)), ...], main first, as SLAMSystem.trajectory_segments gives them).
    Returns the metrics.json entries of every segment (None with one segment or none)."""
    if len(segments) < 2:
        return None
    out = []
    for i, (map_id, idx, ts, poses) in enumerate(segments):
        name = "trajectory.txt" if i == 0 else f"trajectory_map{map_id}.txt"
        if i > 0:
            write_tum(out_dir / name, ts, poses, header={"n_frames": n_frames, "sequence": sequence, "mode": mode,
                                                         "map": int(map_id)})
        entry = {"map": int(map_id), "file": name, "frames": int(len(idx)), "first_frame": int(idx[0]),
                 "last_frame": int(idx[-1])}
        if groundtruth is not None and len(ts) > 2:
            try:
                from slam.eval import evaluate

                ev = evaluate(groundtruth, (ts, poses), mono=mono, n_frames_total=n_frames)
                entry["ate_rmse_m"] = ev["ate_rmse_m"]
            except Exception as exc:  # noqa: BLE001 - a short segment may not evaluate
                log.info("segment of map %d not evaluated: %s", map_id, exc)
        out.append(entry)
    log.info("%d maps were not merged: trajectory.txt holds map %d (%d frames); %s", len(segments) - 1, segments[0][0],
             len(segments[0][1]), ", ".join(f"{e['file']} {e['frames']} frames" for e in out[1:]))
    return out
