"""tools/latency_trace.py: the frames a global BA can delay are those that finish while it runs
or within a second after it; the others are summarised apart."""
from __future__ import annotations

import numpy as np
from tool_loader import load_tool


def test_frames_near_a_global_ba_are_split_from_the_others():
    tool = load_tool("latency_trace")
    t = np.arange(20, dtype=float)  # one frame a second
    ms = np.full(20, 50.0)
    ms[5:9] = [400.0, 300.0, 200.0, 100.0]  # during the BA (5-7 s) and one second after it
    out = tool.summary(t, ms, [(5.0, 7.0)])
    assert out["during_global_ba"]["frames"] == 4
    assert out["during_global_ba"]["max_ms"] == 400.0
    assert out["other"]["frames"] == 16 and out["other"]["max_ms"] == 50.0
    assert out["all"]["frames"] == 20 and out["global_ba_s"] == [2.0]
    none = tool.summary(t, ms, [])
    assert none["during_global_ba"] == {"frames": 0} and none["other"]["frames"] == 20
