"""Bag-of-words vocabulary: training, quantisation, scoring, file round trip, lookup, and that the
same place seen again scores higher than other places (synthetic room: ORB, and the committed
vocabularies of the learned extractors XFeat, ALIKED and DISK when their weights are installed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from slam.errors import InputError, WeightsError
from slam.loop.store import find_vocabulary, vocabulary_filename
from slam.loop.vocabulary import (
    BowVector,
    FeatureVector,
    Vocabulary,
    kmeans,
    l1_score,
    majority_centre,
    shared_nodes,
)


def _clustered_float(rng, n_centres=40, per=30, dim=16, noise=0.05):
    centres = rng.standard_normal((n_centres, dim)).astype(np.float32)
    x = centres[:, None] + noise * rng.standard_normal((n_centres, per, dim)).astype(np.float32)
    return centres, x.reshape(-1, dim)


def _binary_sets(rng, n_images=12, per=200, nbytes=32):
    return [rng.integers(0, 256, (per, nbytes), dtype=np.uint8) for _ in range(n_images)]


def test_majority_centre_by_hand():
    # bit 7 (msb of byte 0) set in 2 of 3, bit 6 in 1 of 3, bit 0 of byte 1 in 3 of 3
    d = np.array([[0b11000000, 0b00000001], [0b10000000, 0b00000001], [0b00000000, 0b00000001]], np.uint8)
    np.testing.assert_array_equal(majority_centre(d), np.array([0b10000000, 0b00000001], np.uint8))
    # a tie (1 of 2) is not a majority
    np.testing.assert_array_equal(majority_centre(np.array([[0xFF, 0x0F], [0x00, 0x0F]], np.uint8)),
                                  np.array([0x00, 0x0F], np.uint8))


def test_kmeans_binary_centres_are_majorities():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    from slam.loop.vocabulary import _as_u64

    labels, c = kmeans(_as_u64(x), 4, rng, True, 20, x)
    for j in range(len(c)):
        np.testing.assert_array_equal(c[j], majority_centre(x[labels == j]))
    # every descriptor sits at its nearest centre (Hamming)
    ham = np.unpackbits(x[:, None, :] ^ c[None], axis=-1).sum(-1)
    assert np.all(ham[np.arange(len(x)), labels] == ham.min(1))


def test_kmeans_float_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres, x = _clustered_float(rng, n_centres=5, per=50, dim=8, noise=0.01)
    labels, c = kmeans(x, 5, rng, False, 30)
    truth = np.repeat(np.arange(5), 50)
    # each true cluster maps to exactly one label
    for t in range(5):
        assert len(np.unique(labels[truth == t])) == 1
    assert len(np.unique(labels)) == 5


def test_l1_score_by_hand():
    a = BowVector(np.array([1, 4, 7], np.int32), np.array([0.5, 0.3, 0.2], np.float32))
    b = BowVector(np.array([4, 7, 9], np.int32), np.array([0.1, 0.6, 0.3], np.float32))
    dense = np.zeros((2, 10))
    dense[0, a.words], dense[1, b.words] = a.weights, b.weights
    expect = 1 - 0.5 * np.abs(dense[0] - dense[1]).sum()  # DBoW2's L1 score
    assert l1_score(a, b) == pytest.approx(expect, abs=1e-6)
    assert l1_score(a, b) == pytest.approx(0.1 + 0.2, abs=1e-6)
    assert l1_score(a, a) == pytest.approx(1.0, abs=1e-6)
    assert l1_score(a, BowVector(np.array([2], np.int32), np.array([1.0], np.float32))) == 0.0
    assert l1_score(a, BowVector.empty()) == 0.0


def test_train_transform_float_tree_shape_and_words():
    rng = np.random.default_rng(1)
    centres, x = _clustered_float(rng, n_centres=40, per=30, dim=16)
    sets = np.split(x[rng.permutation(len(x))], 20)
    voc = Vocabulary.train(sets, kind="xfeat", k=4, levels=3, binary=False, seed=0)
    assert voc.n_words <= 4 ** 3 and voc.n_words >= 16
    assert voc.depth[voc.word_node].max() <= 3
    # greedy descent: descriptors of one tight cluster mostly share a word
    w = voc.words_of(x)
    same = [np.bincount(w[i * 30:(i + 1) * 30]).max() / 30 for i in range(40)]
    assert np.median(same) >= 0.9
    bow = voc.transform(sets[0])
    assert np.all(np.diff(bow.words) > 0) and bow.weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(bow.weights > 0)
    # tf-idf by hand for one image
    words = voc.words_of(sets[0])
    ids, counts = np.unique(words, return_counts=True)
    raw = counts / len(words) * voc.idf[ids]
    raw = raw[raw > 0] / raw[raw > 0].sum()
    np.testing.assert_allclose(bow.weights, raw, rtol=1e-5)


def test_idf_by_hand():
    rng = np.random.default_rng(2)
    sets = _binary_sets(rng, n_images=8, per=60)
    voc = Vocabulary.train(sets, kind="orb", k=3, levels=2, seed=1)
    df = np.zeros(voc.n_words)
    for s in sets:
        df[np.unique(voc.words_of(s))] += 1
    np.testing.assert_allclose(voc.idf, np.log(8 / np.maximum(df, 1)), rtol=1e-6)


def test_descent_matches_brute_force_per_level():
    """The vectorised descent picks, at every level, the nearest child (checked with a loop)."""
    rng = np.random.default_rng(4)
    sets = _binary_sets(rng, n_images=6, per=150)
    voc = Vocabulary.train(sets, kind="orb", k=5, levels=3, seed=0)
    q = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    leaves = voc.word_node[voc.words_of(q)]
    for i in range(len(q)):
        node = 0
        while voc.children[node, 0] != node:
            ch = voc.children[node][voc.children[node] >= 0]
            ham = np.unpackbits(voc.centres[ch] ^ q[i], axis=1).sum(1)
            node = ch[int(np.argmin(ham))]
        assert node == leaves[i]


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    _, x = _clustered_float(rng, n_centres=30, per=20, dim=32)
    sets = np.split(x, 15)
    voc = Vocabulary.train(sets, kind="aliked", k=5, levels=3, binary=False, meta={"training": {"note": "unit"}})
    path = voc.save(tmp_path / "v.npz")
    back = Vocabulary.load(path)
    assert (back.kind, back.k, back.levels, back.binary, back.n_words) == ("aliked", 5, 3, False, voc.n_words)
    assert back.meta["training"]["note"] == "unit" and back.meta["dim"] == 32 and "created" in back.meta
    np.testing.assert_array_equal(back.parent, voc.parent)
    np.testing.assert_array_equal(back.idf, voc.idf)
    with np.load(path) as z:
        assert z["centres"].dtype == np.float16
    # fp16 centres: the same words for almost every descriptor, and near-equal vectors
    assert np.mean(back.words_of(x) == voc.words_of(x)) > 0.98
    assert l1_score(back.transform(sets[3]), voc.transform(sets[3])) > 0.95
    # binary: exact round trip
    bsets = _binary_sets(rng, n_images=5, per=100)
    bv = Vocabulary.train(bsets, kind="orb", k=4, levels=2)
    bb = Vocabulary.load(bv.save(tmp_path / "b.npz"))
    np.testing.assert_array_equal(bb.centres, bv.centres)
    np.testing.assert_array_equal(bb.words_of(bsets[0]), bv.words_of(bsets[0]))


def test_bad_inputs_are_clear(tmp_path):
    rng = np.random.default_rng(6)
    voc = Vocabulary.train(_binary_sets(rng, 4, 50), kind="orb", k=3, levels=2)
    with pytest.raises(InputError, match="expects"):
        voc.transform(np.zeros((5, 16), np.uint8))
    with pytest.raises(InputError, match="binary"):
        voc.transform(np.zeros((5, 32), np.float32))
    assert len(voc.transform(np.zeros((0, 32), np.uint8))) == 0
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="bad.npz"):
        Vocabulary.load(bad)
    with pytest.raises(WeightsError, match="not found"):
        Vocabulary.load(tmp_path / "none.npz")


def test_direct_index_groups_and_shared_nodes():
    rng = np.random.default_rng(7)
    sets = _binary_sets(rng, n_images=6, per=200)
    voc = Vocabulary.train(sets, kind="orb", k=4, levels=3)
    bow, fv = voc.transform_direct(sets[0], level=1)
    assert fv.nodes.shape == (200,) and np.all(voc.depth[fv.nodes] == 1)
    # the level-1 node of each feature is the ancestor of its word's leaf
    leaves = voc.word_node[voc.words_of(sets[0])]
    anc = leaves.copy()
    while np.any(voc.depth[anc] > 1):
        anc = np.where(voc.depth[anc] > 1, voc.parent[anc], anc)
    np.testing.assert_array_equal(anc, fv.nodes)
    _, fv2 = voc.transform_direct(sets[1], level=1)
    groups = shared_nodes(fv, fv2)
    assert groups and sum(len(a) for _, a, _ in groups) <= 200
    for node, ia, ib in groups:
        assert np.all(fv.nodes[ia] == node) and np.all(fv2.nodes[ib] == node)
    with pytest.raises(ValueError):
        shared_nodes(fv, FeatureVector(2, fv2.nodes))


def test_store_lookup_names_and_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAM_VOCAB_DIR", str(tmp_path))
    assert vocabulary_filename("orb", "whatever") == "orb.npz"
    assert vocabulary_filename("aliked", "aliked-n16") == "aliked_aliked-n16.npz"
    assert vocabulary_filename("superpoint", "/x/y/superpoint_v1.pth") == "superpoint_superpoint_v1.npz"
    with pytest.raises(WeightsError, match="vocab train --features superpoint"):
        find_vocabulary("superpoint", "superpoint_v1")
    voc = Vocabulary.train(_binary_sets(np.random.default_rng(0), 4, 40), kind="orb", k=3, levels=2)
    voc.save(tmp_path / "orb.npz")
    assert find_vocabulary("orb") in (tmp_path / "orb.npz", find_vocabulary("orb"))


def test_cli_info_and_errors(tmp_path, capsys, restore_slam_logging):
    from slam.cli import main

    voc = Vocabulary.train(_binary_sets(np.random.default_rng(0), 4, 40), kind="orb", k=3, levels=2)
    p = voc.save(tmp_path / "v.npz")
    assert main(["vocab", "info", str(p)]) == 0
    assert "k=3, L=2" in capsys.readouterr().out
    assert main(["-v", "vocab", "info", str(p)]) == 0  # a global option before the command
    assert "k=3, L=2" in capsys.readouterr().out
    assert main(["vocab", "info", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.npz" in err


def _revisit_wins(voc: Vocabulary, room: int, n_places: int, desc) -> int:
    """In room ``room``: for each of ``n_places`` places (a first view and a revisit 5-30 cm and
    <= 15 degrees away), does the revisit score higher against its first view than against
    every first view it does not overlap (< 5 %, exact from depth and poses)?"""
    from slam.geometry.depth_warp import warp_points
    from slam.synth.office import make_office as make_scene
    from slam.training.synthetic_pairs import sample_pair

    scene = make_scene(room)
    places = [sample_pair(room * 100 + j, scene=scene, baseline=(0.05, 0.3), max_rotation_deg=15.0, min_overlap=0.5)
              for j in range(n_places)]
    db = [voc.transform(desc(p["image0"])) for p in places]
    ys, xs = np.mgrid[8:480:24, 8:640:24]
    grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    wins = 0
    for i, q in enumerate(places):
        bq = voc.transform(desc(q["image1"]))
        s = np.array([l1_score(bq, d) for d in db])
        others = []
        for j, d in enumerate(places):
            rel = d["cam0_from_world"] @ np.linalg.inv(q["cam1_from_world"])
            _, v = warp_points(grid, q["depth1"], q["camera"], rel, d["depth0"])
            if j != i and v.mean() < 0.05:
                others.append(s[j])
        wins += not others or s[i] > max(others)
    return wins


def _orb_desc():
    from slam.features.orb import ORBExtractor

    ext = ORBExtractor()
    return lambda img: ext.extract(img).descriptors.numpy()


@pytest.mark.slow
def test_same_place_scores_higher_synthetic_orb():
    """A small ORB vocabulary trained on room 301 tells places of room 303 (never trained on)
    apart: a revisit outscores the places it does not overlap."""
    from slam.synth.office import make_office as make_scene
    from slam.training.synthetic_pairs import sample_pair

    desc = _orb_desc()
    scene = make_scene(301)
    train = []
    for j in range(8):
        p = sample_pair(30100 + j, scene=scene, max_rotation_deg=45.0, baseline=(0.1, 1.0))
        train += [desc(p["image0"]), desc(p["image1"])]
    voc = Vocabulary.train(train, kind="orb", k=8, levels=3, seed=0)
    wins = _revisit_wins(voc, 303, 6, desc)
    assert wins >= 5, f"the revisit outscored the non-overlapping places in only {wins} of 6 queries"


def test_same_place_scores_higher_committed_orb_vocabulary():
    """The committed ORB vocabulary (trained on rooms 101-112 and real images) on room 304."""
    from slam.loop.store import PACKAGE_DIR

    if not (PACKAGE_DIR / "orb.npz").is_file():
        pytest.skip("no ORB vocabulary committed")
    voc = Vocabulary.load(PACKAGE_DIR / "orb.npz")
    wins = _revisit_wins(voc, 304, 6, _orb_desc())
    assert wins >= 5, f"the revisit outscored the non-overlapping places in only {wins} of 6 queries"


LEARNED_KINDS = ("xfeat", "aliked", "disk")


def _learned_extractor(kind: str):
    """(resolved config, extractor) of the learned ``kind`` with its default weights; skip when
    the weights are not installed."""
    import torch

    from slam.config import load_config
    from slam.errors import WeightsError as WErr
    from slam.loop.store import extractor_weights
    from slam.system import build_extractor
    from slam.weights import resolve_weights

    cfg = load_config(None, [f"features={kind}"])
    try:
        resolve_weights(extractor_weights(cfg))
    except WErr as exc:
        pytest.skip(f"{kind} weights not installed: {exc}")
    return cfg, build_extractor(cfg, torch.device("cpu"))


@pytest.mark.parametrize("kind", LEARNED_KINDS)
def test_committed_learned_vocabulary_found_by_extractor_name(kind):
    """The system finds a committed vocabulary for each learned extractor's default weights, under
    the name its config reports, and it fits the descriptors: float, the extractor's dimension,
    fp16 centres in the file, a DBoW-sized tree."""
    from slam.loop.store import PACKAGE_DIR, extractor_weights, load_vocabulary
    from slam.loop.vocabulary import DESCRIPTOR_KINDS

    cfg, ext = _learned_extractor(kind)
    path = find_vocabulary(kind, extractor_weights(cfg))
    assert path.parent == PACKAGE_DIR, f"{path} is not the committed vocabulary"
    voc = load_vocabulary(kind, extractor_weights(cfg))
    assert voc.kind == kind and not voc.binary and not ext.binary
    assert voc.dim == DESCRIPTOR_KINDS[kind][1] == ext.descriptor_dim
    with np.load(path, allow_pickle=False) as z:
        assert z["centres"].dtype == np.float16 and z["centres"].shape[1] == voc.dim
    assert voc.n_words >= 1000 and voc.idf.dtype == np.float32 and np.all(voc.idf >= 0)


def test_default_features_find_a_vocabulary():
    """``features: auto`` (what `python -m slam run` uses) resolves to an extractor that has a
    vocabulary: loop closing and database relocalisation are on by default."""
    from slam.config import load_config
    from slam.loop.store import vocabulary_for_config
    from slam.system import resolve_config

    cfg = resolve_config(load_config(None, ["device=cpu"]))
    voc = vocabulary_for_config(cfg, required=True)
    assert voc.kind == cfg.features


@pytest.mark.slow
@pytest.mark.parametrize("kind", LEARNED_KINDS)
def test_same_place_scores_higher_committed_learned_vocabulary(kind):
    """The committed vocabulary of a learned extractor (trained on rooms 101-112 and real images)
    on room 304, never trained on: a revisit outscores the places it does not overlap."""
    import torch

    from slam.loop.store import PACKAGE_DIR, extractor_weights, vocabulary_filename

    cfg, ext = _learned_extractor(kind)
    path = PACKAGE_DIR / vocabulary_filename(kind, extractor_weights(cfg))
    if not path.is_file():
        pytest.skip(f"no {kind} vocabulary committed")
    voc = Vocabulary.load(path)

    def desc(img):
        with torch.inference_mode():
            d = ext.extract(img).descriptors
        return d.float().numpy()

    wins = _revisit_wins(voc, 304, 6, desc)
    assert wins >= 5, f"{kind}: the revisit outscored the non-overlapping places in only {wins} of 6 queries"


def test_committed_vocabularies_have_notes():
    """Every committed vocabulary file loads, and VOCABULARIES.md names it with its settings."""
    from slam.loop.store import PACKAGE_DIR

    files = sorted(PACKAGE_DIR.glob("*.npz"))
    if not files:
        pytest.skip("no vocabulary committed in slam/loop/vocab")
    notes = (PACKAGE_DIR / "VOCABULARIES.md").read_text()
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        assert f.name in notes, f"{f.name} is not described in VOCABULARIES.md"
        assert meta["training"]["n_images"] > 0 and f.stat().st_size < 8e6
