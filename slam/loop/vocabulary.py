"""Bag of visual words: a hierarchical k-means vocabulary (DBoW2-style) with TF-IDF weights.

The tree has branching factor ``k`` and depth ``levels`` (``L``). Node 0 is the root; nodes are
stored in breadth-first order, so every node's children are contiguous and every level follows
the previous one. The leaves are the *words* (word ids follow the leaves' node order). A node that
received ``min_split`` descriptors or fewer while training is not split: it is a leaf above level L.

Descriptors
    binary: (N, B) uint8 packed bits (ORB: B = 32), Hamming distance, k-majority centres
            (a centre bit is 1 when more than half of its members have it).
    float:  (N, D) float32 (SuperPoint 256, ALIKED/DISK 128, XFeat 64), squared L2 distance,
            k-means with k-means++ seeding.

A descriptor is quantised by greedy descent, one level at a time for all descriptors at once
(no Python loop over descriptors). Image vectors are TF-IDF (tf = share of the image's features
in the word, idf = log(N_images / N_images containing the word)), L1-normalised; the similarity
of two vectors is DBoW2's L1 score ``1 - 0.5 * |a - b|_1`` in [0, 1], computed over the shared
words as ``sum(min(a_w, b_w))``.

Files: ``.npz`` with ``centres`` ((n_nodes, D) float16 for float descriptors, (n_nodes, B) uint8
for binary ones; row 0 = root, unused), ``parent`` ((n_nodes,) int32, -1 for the root), ``idf``
((n_words,) float32) and ``meta`` (JSON: descriptor kind, dim, k, L, training data and settings,
date).
"""
from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from slam.errors import ConfigError, InputError, WeightsError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: descriptor kind -> (binary, dimension: bytes for binary, floats otherwise)
DESCRIPTOR_KINDS: dict[str, tuple[bool, int]] = {
    "orb": (True, 32), "superpoint": (False, 256), "aliked": (False, 128), "disk": (False, 128), "xfeat": (False, 64),
}
DEFAULT_DIRECT_LEVEL = 2  # FeatureVector level (from the root): 100 nodes at k = 10, as ORB-SLAM's levelsup=4 at L=6


# ----------------------------------------------------------------------------- vectors
@dataclass
class BowVector:
    """Sparse bag-of-words vector of one image.

    words:   (M,) int32 word ids, sorted ascending, unique.
    weights: (M,) float32 TF-IDF weights, > 0, summing to 1 (L1-normalised); empty for an image
             with no descriptor (or whose words all have idf 0).
    """

    words: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return int(self.words.shape[0])

    @staticmethod
    def empty() -> "BowVector":
        return BowVector(np.zeros(0, np.int32), np.zeros(0, np.float32))


@dataclass
class FeatureVector:
    """Direct index (DBoW2's FeatureVector): the tree node of every feature at one level.

    level: depth from the root (1 = the root's children); a feature whose word is a leaf above
           this level is assigned that leaf.
    nodes: (N,) int32 node id per feature, in the order of the descriptors given.
    """

    level: int
    nodes: np.ndarray
    _groups: Optional[tuple] = field(default=None, repr=False, compare=False)

    def groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(node ids (G,) int32 sorted, starts (G+1,) int64, order (N,) int64): the features
        under ``node_ids[g]`` are ``order[starts[g]:starts[g+1]]``. Computed once."""
        if self._groups is None:
            order = np.argsort(self.nodes, kind="stable")
            ids, starts = np.unique(self.nodes[order], return_index=True)
            self._groups = (ids.astype(np.int32), np.append(starts, len(order)).astype(np.int64), order)
        return self._groups


def shared_nodes(a: FeatureVector, b: FeatureVector) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Features of two images grouped by the node they share: [(node, idx_a (n_a,) int64,
    idx_b (n_b,) int64), ...], nodes ascending. Descriptor matching between two keyframes can be
    restricted to these groups (ORB-SLAM's search by BoW). Both vectors must use the same level."""
    if a.level != b.level:
        raise ValueError(f"feature vectors at different levels ({a.level} and {b.level})")
    ia, sa, oa = a.groups()
    ib, sb, ob = b.groups()
    _, ga, gb = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
    return [(int(ia[i]), oa[sa[i]:sa[i + 1]], ob[sb[j]:sb[j + 1]]) for i, j in zip(ga, gb)]


def l1_score(a: BowVector, b: BowVector) -> float:
    """DBoW2's L1 score of two L1-normalised vectors: ``1 - 0.5 * |a - b|_1`` in [0, 1]
    (1 = same words with the same weights, 0 = no shared word)."""
    _, ia, ib = np.intersect1d(a.words, b.words, assume_unique=True, return_indices=True)
    return float(np.minimum(a.weights[ia], b.weights[ib]).sum(dtype=np.float64))


# ----------------------------------------------------------------------------- distances / k-means
def _as_u64(x: np.ndarray) -> np.ndarray:
    """(N, B) uint8 packed bits -> (N, ceil(B/8)) uint64 (zero-padded) for XOR + popcount."""
    n, b = x.shape
    pad = (-b) % 8
    if pad:
        x = np.concatenate([x, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(x).view(np.uint64)


def _dists(x: np.ndarray, c: np.ndarray, binary: bool, x_sq: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, k) distances between rows of x and of c: Hamming (x, c as uint64 words) or squared L2."""
    if binary:
        out = np.empty((x.shape[0], c.shape[0]), np.int32)
        for s in range(0, x.shape[0], 32768):  # bound the (chunk, k, W) temporary
            out[s:s + 32768] = np.bitwise_count(x[s:s + 32768, None, :] ^ c[None]).sum(-1, dtype=np.int32)
        return out
    xs = (x * x).sum(1) if x_sq is None else x_sq
    return np.maximum(xs[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None], 0.0)


def majority_centre(bits_u8: np.ndarray) -> np.ndarray:
    """k-majority centre of binary descriptors: (n, B) uint8 packed -> (B,) uint8 packed where a
    bit is set iff it is set in more than half of the n descriptors."""
    counts = np.unpackbits(bits_u8, axis=1).sum(0, dtype=np.int64)
    return np.packbits(2 * counts > bits_u8.shape[0])


def _centres(x: np.ndarray, x_u8: Optional[np.ndarray], labels: np.ndarray, k: int, binary: bool) -> list:
    out = []
    for j in range(k):
        m = labels == j
        if not m.any():
            continue  # an empty cluster is dropped
        if binary:
            out.append(majority_centre(x_u8[m]))
        else:
            out.append(x[m].mean(0))
    return out


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, binary: bool, max_iter: int = 15,
           x_u8: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k-majority for binary) with k-means++ seeding; Lloyd iterations until the
    assignment stops changing or ``max_iter``.

    x: (n, D) float32, or (n, W) uint64 packed bits for binary (then x_u8: the same as (n, B)
    uint8). Returns (labels (n,) int64 in [0, k'), centres (k', D) float32 or (k', B) uint8),
    k' <= k after empty clusters are dropped."""
    n = x.shape[0]
    x_sq = None if binary else (x * x).sum(1)
    first = int(rng.integers(n))
    cs = [x_u8[first] if binary else x[first]]
    d = _dists(x, (_as_u64(cs[0][None]) if binary else cs[0][None]), binary, x_sq)[:, 0].astype(np.float64)
    for _ in range(1, k):
        w = d * d if binary else d  # D^2 seeding (d is already squared for L2)
        tot = w.sum()
        if tot <= 0:
            break  # every point coincides with a centre
        i = int(rng.choice(n, p=w / tot))
        cs.append(x_u8[i] if binary else x[i])
        d = np.minimum(d, _dists(x, (_as_u64(cs[-1][None]) if binary else cs[-1][None]), binary, x_sq)[:, 0])
    c = np.stack(cs)
    labels = None
    for _ in range(max_iter):
        new = _dists(x, _as_u64(c) if binary else c, binary, x_sq).argmin(1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        c = np.stack(_centres(x, x_u8, labels, c.shape[0], binary))
    labels = _dists(x, _as_u64(c) if binary else c, binary, x_sq).argmin(1)
    return labels, c


# ----------------------------------------------------------------------------- vocabulary
class Vocabulary:
    """Hierarchical k-means vocabulary; see the module docstring.

    centres: (n_nodes, D) float32 (float kinds; fp16 on disk) or (n_nodes, B) uint8 (binary).
    parent:  (n_nodes,) int32, breadth-first order, parent[0] = -1.
    idf:     (n_words,) float32 inverse document frequency of each word (leaf).
    """

    def __init__(self, centres: np.ndarray, parent: np.ndarray, idf: np.ndarray, *, kind: str, k: int,
                 levels: int, binary: bool, meta: Optional[dict] = None) -> None:
        self.kind, self.k, self.levels, self.binary = str(kind), int(k), int(levels), bool(binary)
        self.meta = dict(meta or {})
        self.centres = np.ascontiguousarray(centres, np.uint8 if binary else np.float32)
        self.parent = np.asarray(parent, np.int32)
        n = self.centres.shape[0]
        if self.parent.shape != (n,) or n < 1 or self.parent[0] != -1:
            raise WeightsError(f"parent must be ({n},) with parent[0] = -1, got {self.parent.shape}")
        if n > 1 and (np.any(np.diff(self.parent[1:]) < 0) or np.any(self.parent[1:] >= np.arange(1, n))):
            raise WeightsError("nodes are not in breadth-first order (parents must be non-decreasing and earlier)")
        pids, first, counts = np.unique(self.parent[1:], return_index=True, return_counts=True)
        if counts.size and counts.max() > self.k:
            raise WeightsError(f"a node has {counts.max()} children, more than k = {self.k}")
        # descent table: children[node] = its children, -1 padded; a leaf's row is [itself, -1, ...]
        self.children = np.full((n, self.k), -1, np.int32)
        rows = np.repeat(pids, counts)
        cols = np.arange(n - 1) - np.repeat(first, counts)
        self.children[rows, cols] = np.arange(1, n, dtype=np.int32)
        is_leaf = self.children[:, 0] < 0
        is_leaf[0] = n == 1
        self.word_node = np.nonzero(is_leaf)[0].astype(np.int32)
        self.children[self.word_node, 0] = self.word_node
        self.node_word = np.full(n, -1, np.int32)
        self.node_word[self.word_node] = np.arange(len(self.word_node), dtype=np.int32)
        self.depth = np.zeros(n, np.int32)
        for _ in range(self.levels + 1):  # each pass settles one more level (parents come first)
            self.depth[1:] = self.depth[self.parent[1:]] + 1
        if int(self.depth.max()) > self.levels:
            raise WeightsError(f"tree is {int(self.depth.max())} levels deep, more than L = {self.levels}")
        self.idf = np.asarray(idf, np.float32)
        if self.idf.shape != (len(self.word_node),):
            raise WeightsError(f"idf must be ({len(self.word_node)},) (one per leaf), got {self.idf.shape}")
        self._build_tables()

    def _build_tables(self) -> None:
        """Children-major tables for the descent: row r of ``_blocks`` ((R, k, D) float32 or
        (R, k, W) uint64 packed bits) holds the centres of the children of the r-th internal
        node, ``_block_child`` (R, k) int32 their node ids and ``_block_sq`` (R, k) float32 their
        squared norms (float kinds); ``_block_of`` (n_nodes,) int32 maps a node to its row, -1 at
        a leaf. A node with fewer than k children repeats its first child in the empty slots,
        which can only ever select that (real) child."""
        internal = np.nonzero(self.children[:, 0] != np.arange(self.n_nodes))[0]
        ch = self.children[internal]  # (R, k), -1 padded
        ch = np.where(ch < 0, ch[:, :1], ch)
        self._block_child = np.ascontiguousarray(ch, np.int32)
        self._block_of = np.full(self.n_nodes, -1, np.int32)
        self._block_of[internal] = np.arange(len(internal), dtype=np.int32)
        if self.binary:
            self._blocks = np.ascontiguousarray(_as_u64(self.centres)[ch])
            self._block_sq = None
        else:
            self._blocks = np.ascontiguousarray(self.centres[ch])
            self._block_sq = (self._blocks * self._blocks).sum(-1).astype(np.float32)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Descriptor width: bytes for binary descriptors, floats otherwise."""
        return int(self.centres.shape[1])

    @property
    def n_words(self) -> int:
        return int(len(self.word_node))

    @property
    def n_nodes(self) -> int:
        return int(self.centres.shape[0])

    def __repr__(self) -> str:
        return (f"Vocabulary(kind={self.kind!r}, {'binary' if self.binary else 'float'} dim {self.dim}, "
                f"k={self.k}, L={self.levels}, {self.n_words} words)")

    # ------------------------------------------------------------------ quantisation
    def _check(self, descriptors) -> np.ndarray:
        if hasattr(descriptors, "detach"):  # torch tensor
            descriptors = descriptors.detach().cpu().numpy()
        d = np.asarray(descriptors)
        if d.ndim != 2 or d.shape[1] != self.dim:
            raise InputError(f"{self!r} expects (N, {self.dim}) descriptors, got shape {d.shape}")
        if self.binary and d.dtype != np.uint8:
            raise InputError(f"{self!r} expects uint8 packed binary descriptors, got {d.dtype}")
        if not self.binary and d.dtype == np.uint8:
            raise InputError(f"{self!r} is for float descriptors, got uint8 (binary) ones")
        return d

    def _descend(self, d: np.ndarray, direct_level: Optional[int] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Greedy descent of every descriptor, level by level: (leaf node (N,) int32, node at
        ``direct_level`` (N,) int32 or None). A level where the descriptors sit under a few nodes
        takes one product per node; otherwise each descriptor's k child centres are gathered from
        the children-major table in one call."""
        n = d.shape[0]
        cur = np.zeros(n, np.int32)
        direct = None
        x = _as_u64(d) if self.binary else np.ascontiguousarray(d, np.float32)
        rows = np.arange(n)
        for lvl in range(1, self.levels + 1):
            blk = self._block_of[cur]  # (N,) row in the children tables, -1 at a leaf
            act = np.nonzero(blk >= 0)[0] if lvl > 1 else rows
            if len(act) == 0:
                break
            if len(act) < n:
                ab, ax = blk[act], x[act]
            else:
                ab, ax = blk, x
            nodes = np.unique(ab) if lvl > 1 else ab[:1]
            if len(nodes) <= 12:
                best = np.empty(len(act), np.int64)
                for b in nodes:
                    m = ab == b if len(nodes) > 1 else slice(None)
                    best[m] = self._child_dists(ax[m], b).argmin(1)
            else:
                if self.binary:
                    dist = np.bitwise_count(np.take(self._blocks, ab, axis=0) ^ ax[:, None, :]).sum(-1, dtype=np.int32)
                else:
                    dist = self._block_sq[ab] - 2.0 * np.matmul(np.take(self._blocks, ab, axis=0), ax[:, :, None])[:, :, 0]
                best = dist.argmin(1)
            cur[act] = self._block_child[ab, best]
            if lvl == direct_level:
                direct = cur.copy()
        if direct_level is not None and direct is None:
            direct = cur.copy()
        return cur, direct

    def _child_dists(self, x: np.ndarray, b: int) -> np.ndarray:
        """(n, k) distances (Hamming, or squared L2 up to the constant |x|^2) of descriptors x
        to the children of children-table row b."""
        if self.binary:
            return np.bitwise_count(x[:, None, :] ^ self._blocks[b][None]).sum(-1, dtype=np.int32)
        return self._block_sq[b][None] - 2.0 * (x @ self._blocks[b].T)

    def words_of(self, descriptors) -> np.ndarray:
        """(N, D) descriptors -> (N,) int32 word id of each."""
        d = self._check(descriptors)
        return self.node_word[self._descend(d)[0]] if len(d) else np.zeros(0, np.int32)

    def bow_from_words(self, words: np.ndarray) -> BowVector:
        """TF-IDF, L1-normalised BowVector of an image from the word id of each of its features."""
        if len(words) == 0:
            return BowVector.empty()
        ids, counts = np.unique(words, return_counts=True)
        w = counts.astype(np.float64) / len(words) * self.idf[ids]
        keep = w > 0
        ids, w = ids[keep], w[keep]
        s = w.sum()
        if s <= 0:
            return BowVector.empty()
        return BowVector(ids.astype(np.int32), (w / s).astype(np.float32))

    def transform(self, descriptors) -> BowVector:
        """(N, D) descriptors of one image (numpy or torch; uint8 packed for binary kinds) ->
        its BowVector."""
        return self.bow_from_words(self.words_of(descriptors))

    def transform_direct(self, descriptors, level: int = DEFAULT_DIRECT_LEVEL) -> tuple[BowVector, FeatureVector]:
        """Like :meth:`transform`, plus the direct index: the node of each feature at ``level``
        (1..L, from the root; clipped to L)."""
        d = self._check(descriptors)
        level = int(min(max(level, 1), self.levels))
        if len(d) == 0:
            return BowVector.empty(), FeatureVector(level, np.zeros(0, np.int32))
        leaf, direct = self._descend(d, level)
        return self.bow_from_words(self.node_word[leaf]), FeatureVector(level, direct)

    @staticmethod
    def score(a: BowVector, b: BowVector) -> float:
        """DBoW2's L1 score in [0, 1]; see :func:`l1_score`."""
        return l1_score(a, b)

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, descriptor_sets: Sequence[np.ndarray], *, kind: str, k: int = 10, levels: int = 5,
              binary: Optional[bool] = None, seed: int = 0, max_iter: int = 15, min_split: Optional[int] = None,
              meta: Optional[dict] = None, progress: Optional[Callable[[str], None]] = None) -> "Vocabulary":
        """Build the tree from the descriptors of training images and the idf of its words.

        descriptor_sets: one (n_i, D) array per training image (uint8 packed for binary kinds,
        float32 otherwise); the images define the document frequencies. k >= 2, levels >= 1.
        min_split: a node with this many descriptors or fewer stays a leaf (default k).
        """
        if k < 2 or levels < 1:
            raise ConfigError(f"need k >= 2 and levels >= 1, got k={k}, levels={levels}")
        if binary is None:
            binary = DESCRIPTOR_KINDS.get(kind, (False, 0))[0]
        sets = [np.asarray(s) for s in descriptor_sets if len(s)]
        if not sets:
            raise InputError("no training descriptors")
        x_u8 = np.concatenate(sets).astype(np.uint8 if binary else np.float32, copy=False)
        x = _as_u64(x_u8) if binary else x_u8
        dim = x_u8.shape[1]
        min_split = k if min_split is None else max(int(min_split), 1)
        rng = np.random.default_rng(seed)
        centres: list[np.ndarray] = [np.zeros(dim, x_u8.dtype)]
        parent: list[int] = [-1]
        frontier = [(0, np.arange(len(x)))]
        for lvl in range(1, levels + 1):
            nxt = []
            for node, idx in frontier:
                if len(idx) <= min_split:
                    continue  # stays a leaf
                labels, c = kmeans(x[idx], k, rng, binary, max_iter, x_u8[idx] if binary else None)
                if len(c) < 2:
                    continue  # identical descriptors: nothing to split
                for j in range(len(c)):
                    parent.append(node)
                    centres.append(c[j].astype(x_u8.dtype))
                    nxt.append((len(parent) - 1, idx[labels == j]))
            frontier = nxt
            if progress:
                progress(f"level {lvl}: {len(frontier)} nodes")
            if not frontier:
                break
        parent_a = np.array(parent, np.int32)
        voc = cls(np.stack(centres), parent_a, np.ones(_count_leaves(parent_a), np.float32), kind=kind, k=k,
                  levels=levels, binary=binary)
        # document frequency of every word over the training images, from the runtime descent
        n_img = len(sets)
        img_of = np.repeat(np.arange(n_img), [len(s) for s in sets])
        words = np.concatenate([voc.node_word[voc._descend(x_u8[s:s + 65536])[0]] for s in range(0, len(x_u8), 65536)])
        pairs = np.unique(img_of.astype(np.int64) * voc.n_words + words)
        df = np.bincount(pairs % voc.n_words, minlength=voc.n_words)
        voc.idf = np.log(n_img / np.maximum(df, 1)).astype(np.float32)
        voc.meta = {"format_version": FORMAT_VERSION, "kind": kind, "binary": bool(binary), "dim": int(dim), "k": k,
                    "levels": levels, "n_words": voc.n_words, "n_nodes": voc.n_nodes,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "settings": {"seed": seed, "max_iter": max_iter, "min_split": min_split, "weighting": "tf-idf",
                                 "scoring": "L1"},
                    "training": {"n_images": n_img, "n_descriptors": int(len(x_u8)),
                                 "words_never_seen": int((df == 0).sum())}}
        if meta:
            voc.meta.update(meta)
        return voc

    # ------------------------------------------------------------------ statistics / io
    def stats(self) -> dict:
        """Shape of the tree: words per level, leaves above L, idf spread."""
        leaf_depth = self.depth[self.word_node]
        return {"n_nodes": self.n_nodes, "n_words": self.n_words,
                "words_per_level": {int(l): int((leaf_depth == l).sum()) for l in np.unique(leaf_depth)},
                "idf_min": float(self.idf.min()) if self.n_words else 0.0,
                "idf_median": float(np.median(self.idf)) if self.n_words else 0.0,
                "idf_max": float(self.idf.max()) if self.n_words else 0.0}

    def save(self, path: Union[str, Path]) -> Path:
        """Write a compressed .npz (fp16 centres for float kinds, uint8 for binary)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        centres = self.centres if self.binary else self.centres.astype(np.float16)
        meta = dict(self.meta, kind=self.kind, k=self.k, levels=self.levels, binary=self.binary, dim=self.dim,
                    n_words=self.n_words, n_nodes=self.n_nodes, format_version=FORMAT_VERSION)
        tmp = path.with_name(path.name + ".part.npz")
        np.savez_compressed(tmp, centres=centres, parent=self.parent, idf=self.idf,
                            meta=np.array(json.dumps(meta, sort_keys=True)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Vocabulary":
        """Read a file written by :meth:`save`; WeightsError naming the file when it is not one."""
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"vocabulary file {path} not found; build one with `python -m slam vocab train`")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                centres, parent, idf = z["centres"], z["parent"], z["idf"]
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"{path} is not a vocabulary file ({exc}); rebuild it with `python -m slam vocab train`") from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise WeightsError(f"{path}: format version {meta.get('format_version')}, this code reads "
                                  f"{FORMAT_VERSION}; rebuild it with `python -m slam vocab train`")
        try:
            return cls(centres.astype(np.float32) if not meta["binary"] else centres, parent, idf, kind=meta["kind"],
                       k=meta["k"], levels=meta["levels"], binary=meta["binary"], meta=meta)
        except (WeightsError, ValueError, IndexError, KeyError) as exc:
            raise WeightsError(f"{path}: not a valid vocabulary ({exc}); rebuild it with `python -m slam vocab train`") from exc


def _count_leaves(parent: np.ndarray) -> int:
    n = len(parent)
    has_child = np.zeros(n, bool)
    has_child[parent[1:]] = True
    return max(int((~has_child).sum()), 1) if n > 1 else 1
