"""How many threads numpy's BLAS (OpenBLAS, MKL) and torch may use during a run.

The stages multiply small matrices (N x 3 points by 3 x 3 rotations, chunks of epipolar lines),
where a second BLAS thread gains nothing: OpenBLAS still splits such products over every core,
and its threads spin while they wait for work, on the cores that feature extraction, tracking
and g2o need. Measured on a 2-core CPU: a (512 x 3) @ (3 x 1000) product took 0.27 ms and
0.53 ms of CPU with the default 2 threads, 0.17 ms and 0.17 ms with one; in four alternated
live monocular runs each, p95 latency was 112-187 ms with two BLAS threads and 67-73 ms with
one (docs/benchmarks.md, section 5).

``runtime.blas_threads`` (default 1; 0 leaves the library's own setting) is applied for the
duration of a run with threadpoolctl, in the main process and in the feature process.

``runtime.torch_threads`` sets torch's intra-op threads in the main process for a run
(:func:`torch_threads`, :func:`main_process_torch_threads`). When the features run in a child
process on the CPU (one torch thread there), the main process's torch work (the learned matcher
at keyframes, in relocalisation and in monocular triangulation) shares the other cores with the
tracking and mapping threads; torch's default of one OpenMP thread per core then oversubscribes
them, and an OpenMP region whose second thread is descheduled waits at its barrier for it.
"""
from __future__ import annotations

import importlib
import logging
import os
from contextlib import contextmanager
from typing import Iterator, Optional

LOG = logging.getLogger("slam.runtime")

__all__ = ["blas_threads", "main_process_torch_threads", "torch_threads"]


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Limit the BLAS libraries loaded in this process to ``n`` threads inside the block
    (n <= 0: no limit). numpy must be imported before (threadpoolctl finds loaded libraries)."""
    if n <= 0:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a dependency in setup.cfg; an environment without it runs unlimited
        LOG.warning("threadpoolctl is not installed: runtime.blas_threads=%d not applied (pip install threadpoolctl)", n)
        yield
        return
    importlib.import_module("numpy")  # loads the BLAS that threadpoolctl then finds

    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def main_process_torch_threads(setting: int, feature_process: bool, cpu_count: Optional[int] = None) -> int:
    """torch threads for the main process of a run: ``setting`` when > 0; else (auto) one core
    fewer than the machine has when the features run in their own process, 0 (leave torch's
    default) otherwise."""
    if setting > 0:
        return int(setting)
    if not feature_process:
        return 0
    return max(1, int(cpu_count if cpu_count is not None else (os.cpu_count() or 1)) - 1)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block, restored after (n <= 0: unchanged)."""
    if n <= 0:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
