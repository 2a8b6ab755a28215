"""Mutual nearest-neighbour matcher with Lowe's ratio test, in torch (CPU or GPU).

Works for float descriptors (L2 distance of unit vectors) and for binary descriptors packed
as uint8 (Hamming distance, computed as a matrix product of +-1 bit vectors).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np
import torch

from slam.device import native_bf16
from slam.matching.config import NNConfig
from slam.types import Features, Matches

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


_PM1_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32) * 2.0 - 1.0


def unpack_bits_pm1(desc: torch.Tensor) -> torch.Tensor:
    """(N, B) uint8 packed bits -> (N, 8B) float32 with values +1/-1 (MSB first)."""
    table = torch.from_numpy(_PM1_TABLE).to(desc.device)
    return table[desc.long()].reshape(desc.shape[0], -1)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where bf16 matrix products run natively and fast (CPUs with AMX; see
    slam.device.native_bf16). slam.device's probe, cached."""
    return native_bf16(torch.device("cpu"))


def exact_sign_product_dtype(device: torch.device, nbits: int) -> Optional[torch.dtype]:
    """A fast dtype in which the product of two +-1 bit matrices of ``nbits`` columns is exact
    (every partial sum is an integer of magnitude <= nbits, accumulated in fp32): fp16 on CUDA
    up to 2048 bits, bf16 on CPUs with native bf16 up to 256 bits (bf16 holds integers up to
    256 exactly), else None (use fp32)."""
    if device.type == "cuda" and nbits <= 2048:
        return torch.float16
    if device.type == "cpu" and nbits <= 256 and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def distance_matrix(desc0: torch.Tensor, desc1: torch.Tensor) -> torch.Tensor:
    """(N0, D), (N1, D) -> (N0, N1) float32 distances.

    Binary (uint8): Hamming distance in bits, exact (the +-1 product runs in bf16/fp16 where
    that is exact and faster, see :func:`exact_sign_product_dtype`). Float: Euclidean distance
    (unit vectors assumed).
    """
    if desc0.dtype == torch.uint8:
        a, b = unpack_bits_pm1(desc0), unpack_bits_pm1(desc1)
        nbits = a.shape[1]
        low = exact_sign_product_dtype(a.device, nbits)
        sim = (a.to(low) @ b.to(low).T).float() if low is not None else a @ b.T
        return (nbits - sim) * 0.5
    a, b = desc0.float(), desc1.float()
    sim = a @ b.T
    return torch.sqrt(torch.clamp(2.0 - 2.0 * sim, min=0.0))


def pairwise_distance(desc0: np.ndarray, desc1: np.ndarray) -> np.ndarray:
    """Row-wise distances between (K, D) numpy descriptor pairs -> (K,) float32.

    uint8 rows: Hamming distance in bits (popcount of XOR). Float rows: Euclidean distance.
    """
    if desc0.dtype == np.uint8:
        x = np.bitwise_xor(desc0, desc1)
        return _POPCOUNT[x].sum(axis=1, dtype=np.int32).astype(np.float32)
    d = desc0.astype(np.float32) - desc1.astype(np.float32)
    return np.sqrt((d * d).sum(axis=1))


def mutual_nearest(desc0: np.ndarray, desc1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of (N0, D) and (N1, D) numpy descriptors (uint8 bits: Hamming;
    float: unit vectors, Euclidean). Returns (N0,) int64 row of desc1 or -1 when the nearest
    is not mutual, and (N0,) float32 distance to the nearest (bits or L2)."""
    n0, n1 = len(desc0), len(desc1)
    if n0 == 0 or n1 == 0:
        return np.full(n0, -1, dtype=np.int64), np.full(n0, np.inf, dtype=np.float32)
    if desc0.dtype == np.uint8:
        d = distance_matrix(torch.from_numpy(np.ascontiguousarray(desc0)), torch.from_numpy(np.ascontiguousarray(desc1))).numpy()
        j, i = d.argmin(1), d.argmin(0)
        dist = d[np.arange(n0), j]
    else:  # the largest dot product is the nearest unit vector: no n0 x n1 square roots
        sim = np.asarray(desc0, dtype=np.float32) @ np.asarray(desc1, dtype=np.float32).T
        j, i = sim.argmax(1), sim.argmax(0)
        dist = np.sqrt(np.maximum(2.0 - 2.0 * sim[np.arange(n0), j], 0.0)).astype(np.float32)
    j = j.astype(np.int64)
    j[i[j] != np.arange(n0)] = -1
    return j, dist


class NearestNeighborMatcher:
    name = "nn"
    kind = "descriptor"  # slam.matching.base: how tracking obtains 2D-3D candidates

    def __init__(self, cfg: NNConfig | None = None, device: torch.device | str = "cpu"):
        self.cfg = cfg or NNConfig()
        self.device = torch.device(device)

    def match(self, feats0: Features, feats1: Features) -> Matches:
        return self.match_descriptors(feats0.descriptors, feats1.descriptors)

    @torch.inference_mode()
    def match_descriptors(self, desc0: torch.Tensor | np.ndarray, desc1: torch.Tensor | np.ndarray) -> Matches:
        """Match (N0, D) against (N1, D) descriptors (uint8 bits or float, torch or numpy)."""
        d0 = torch.as_tensor(desc0).to(self.device)
        d1 = torch.as_tensor(desc1).to(self.device)
        n0, n1 = d0.shape[0], d1.shape[0]
        if n0 == 0 or n1 == 0:
            return Matches(np.full(n0, -1), np.zeros(n0))
        dist = distance_matrix(d0, d1)
        binary = d0.dtype == torch.uint8
        max_d = self.cfg.max_distance_binary if binary else self.cfg.max_distance_float
        norm = float(d0.shape[1] * 8) if binary else 2.0
        if dist.device.type == "cpu":  # numpy's arg-reductions are ~10x faster than torch's on CPU
            return self._select_numpy(dist.numpy(), max_d, norm)
        k = 2 if n1 >= 2 else 1
        vals, idx = torch.topk(dist, k, dim=1, largest=False)
        best, nn01 = vals[:, 0], idx[:, 0]
        ok = best <= max_d
        if k == 2 and self.cfg.ratio < 1.0:
            ok &= best <= self.cfg.ratio * vals[:, 1]
        if self.cfg.mutual:
            nn10 = dist.argmin(dim=0)
            ok &= nn10[nn01] == torch.arange(n0, device=dist.device)
        m0 = torch.where(ok, nn01, torch.full_like(nn01, -1))
        conf = torch.where(ok, 1.0 - best / norm, torch.zeros_like(best))
        return Matches(m0.cpu().numpy(), conf.clamp(0, 1).cpu().numpy())

    def _select_numpy(self, dist: np.ndarray, max_d: float, norm: float) -> Matches:
        """The same selection as the torch path on an (N0, N1) float32 distance matrix: nearest
        neighbour (first index on ties), ratio test against the second smallest distance of the
        row, mutual check against each column's first minimum."""
        n0, n1 = dist.shape
        rows = np.arange(n0)
        nn01 = dist.argmin(axis=1)
        best = dist[rows, nn01]
        ok = best <= max_d
        if n1 >= 2 and self.cfg.ratio < 1.0:
            masked = dist.copy()
            masked[rows, nn01] = np.inf
            ok &= best <= self.cfg.ratio * masked.min(axis=1)
        if self.cfg.mutual:
            ok &= dist.argmin(axis=0)[nn01] == rows
        m0 = np.where(ok, nn01, -1).astype(np.int64)
        conf = np.where(ok, 1.0 - best / norm, 0.0).clip(0, 1).astype(np.float32)
        return Matches(m0, conf)

    def match_many(self, query: Features, refs: Sequence[Features]) -> list[Matches]:
        return [self.match(query, r) for r in refs]
