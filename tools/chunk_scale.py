"""Per-chunk Sim(3) scale of a TUM-format trajectory against TUM ground truth: shows how a
monocular map's scale drifts along a run.

    PYTHONPATH=. python tools/chunk_scale.py RUN/trajectory.txt GROUNDTRUTH.txt [CHUNK_FRAMES]

Prints the whole-run scale and ATE RMSE, then the scale of each chunk aligned on its own
(slam.geometry.sim3.umeyama_alignment; scale s maps the estimate onto the truth).
"""
import argparse

import numpy as np

from slam.geometry.sim3 import umeyama_alignment
from slam.io.trajectory import read_tum
from slam.io.tum import associate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trajectory")
    ap.add_argument("groundtruth")
    ap.add_argument("chunk", nargs="?", type=int, default=100)
    a = ap.parse_args()
    t_est, est = read_tum(a.trajectory)
    t_gt, gt = read_tum(a.groundtruth)
    pairs = associate(t_est, t_gt)  # TUM's association, 20 ms
    row_est = {t: i for i, t in enumerate(t_est)}
    row_gt = {t: i for i, t in enumerate(t_gt)}
    e = est[[row_est[p] for p, _ in pairs], :3, 3]
    g = gt[[row_gt[q] for _, q in pairs], :3, 3]
    s, R, t = umeyama_alignment(e, g, True)
    err = np.linalg.norm((s * (R @ e.T)).T + t - g, axis=1)
    print(f"whole: {len(e)} poses, scale {s:.3f}, ATE RMSE {100 * np.sqrt(np.mean(err ** 2)):.2f} cm")
    n = a.chunk
    print(" ".join(f"{i}:{umeyama_alignment(e[i:i + n], g[i:i + n], True)[0]:.3f}" for i in range(0, len(e) - 10, n)))


if __name__ == "__main__":
    main()
