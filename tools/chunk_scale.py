"""Per-chunk Sim(3) scale of a TUM-format trajectory against TUM ground truth: shows how a
monocular map's scale drifts along a run.

    PYTHONPATH=. python tools/chunk_scale.py RUN/trajectory.txt GROUNDTRUTH.txt [CHUNK_FRAMES]

Prints the whole-run scale and ATE RMSE, then the scale of each chunk aligned on its own
(slam.geometry.sim3.umeyama_alignment; scale s maps the estimate onto the truth).
"""
import argparse

import numpy as np

from slam.geometry.sim3 import umeyama_alignment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trajectory")
    ap.add_argument("groundtruth")
    ap.add_argument("chunk", nargs="?", type=int, default=100)
    a = ap.parse_args()
    est = np.loadtxt(a.trajectory)
    gt = np.loadtxt(a.groundtruth)
    j = np.searchsorted(gt[:, 0], est[:, 0]).clip(1, len(gt) - 1)
    j = np.where(np.abs(gt[j - 1, 0] - est[:, 0]) < np.abs(gt[j, 0] - est[:, 0]), j - 1, j)
    ok = np.abs(gt[j, 0] - est[:, 0]) < 0.02
    e, g = est[ok, 1:4], gt[j[ok], 1:4]
    s, R, t = umeyama_alignment(e, g, True)
    err = np.linalg.norm((s * (R @ e.T)).T + t - g, axis=1)
    print(f"whole: {len(e)} poses, scale {s:.3f}, ATE RMSE {100 * np.sqrt(np.mean(err ** 2)):.2f} cm")
    n = a.chunk
    print(" ".join(f"{i}:{umeyama_alignment(e[i:i + n], g[i:i + n], True)[0]:.3f}" for i in range(0, len(e) - 10, n)))


if __name__ == "__main__":
    main()
