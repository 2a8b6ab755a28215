"""LoFTR: the maths restated independently, checkpoint loading, shapes, padding and batching.

Networks are randomly initialised (seeded) in the official layout: the official checkpoints
cannot be downloaded here. Random weights give few confident matches, so the tests that follow
matches through the fine level use threshold 0 (mutual nearest neighbours only).
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slam.matching.loftr.coarse import border_ok, dual_softmax, dual_softmax_from_features, mutual_matches, optimal_transport
from slam.errors import ConfigError, InputError, WeightsError
from slam.matching.config import LoFTRConfig
from slam.matching.loftr.fine import expectation, gather_windows
from slam.matching.loftr.matcher import LoFTR, default_temp_bug_fix
from slam.matching.loftr.model import LoFTRNet, read_checkpoint
from slam.matching.loftr.transformer import linear_attention, sine_position_encoding
from slam.matching.loftr.winograd import WinogradConv3x3

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_state_dict(match_type: str = "dual_softmax", seed: int = 0) -> dict:
    """A state dict in the official layout with seeded random weights and non-trivial
    BatchNorm statistics (so folding them into the convs is exercised)."""
    torch.manual_seed(seed)
    net = LoFTRNet(match_type)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                mod.bias.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_var.copy_(1 + 0.5 * torch.rand(n, generator=g))
        if match_type == "sinkhorn":
            net.coarse_matching.bin_score.fill_(0.7)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def matcher() -> LoFTR:
    return LoFTR(LoFTRConfig(threshold=0.0, temp_bug_fix=True), "cpu", state_dict=_random_state_dict())


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random grey texture, uint8 (h, w)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def _pair(h: int = 120, w: int = 160, seed: int = 0, shift: int = 6) -> tuple[np.ndarray, np.ndarray]:
    big = _texture(h + shift, w + shift, seed)
    return big[:h, :w].copy(), big[shift:, shift:].copy()


# ----------------------------------------------------------------------------- coarse matching


def test_dual_softmax_equals_the_product_of_two_softmaxes_by_hand():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(1, 5, 7)).astype(np.float32)
    t = 0.1
    e = np.exp(sim[0] / t - (sim[0] / t).max())
    by_rows = e / e.sum(axis=1, keepdims=True)
    by_cols = e / e.sum(axis=0, keepdims=True)
    got = dual_softmax(torch.from_numpy(sim), t)[0].numpy()
    np.testing.assert_allclose(got, by_rows * by_cols, rtol=1e-5, atol=1e-7)


def test_dual_softmax_with_padding_equals_the_unpadded_matrix():
    rng = np.random.default_rng(1)
    sim = torch.from_numpy(rng.normal(size=(1, 6, 8)).astype(np.float32))
    padded = torch.full((1, 9, 10), 123.0)  # garbage in the padded part
    padded[:, :6, :8] = sim
    mask0 = torch.arange(9)[None] < 6
    mask1 = torch.arange(10)[None] < 8
    got = dual_softmax(padded, 0.1, mask0, mask1)
    torch.testing.assert_close(got[:, :6, :8], dual_softmax(sim, 0.1), rtol=1e-5, atol=1e-7)
    assert float(got[:, 6:].abs().max()) == 0.0 and float(got[:, :, 8:].abs().max()) == 0.0


def _dual_softmax_numpy(logits: np.ndarray) -> np.ndarray:
    """Row softmax times column softmax of one (L, S) matrix, float64, each with its own max."""
    z = logits.astype(np.float64)
    by_rows = np.exp(z - z.max(axis=1, keepdims=True))
    by_cols = np.exp(z - z.max(axis=0, keepdims=True))
    return (by_rows / by_rows.sum(axis=1, keepdims=True)) * (by_cols / by_cols.sum(axis=0, keepdims=True))


def test_dual_softmax_from_features_over_several_blocks_with_padding():
    # more rows and columns than one block (64), not a multiple of it
    rng = np.random.default_rng(2)
    f0 = rng.normal(size=(2, 150, 32)).astype(np.float32)
    f1 = rng.normal(size=(2, 131, 32)).astype(np.float32)
    t = 0.1
    got = dual_softmax_from_features(torch.from_numpy(f0), torch.from_numpy(f1), t).numpy()
    for b in range(2):
        want = _dual_softmax_numpy(f0[b].astype(np.float64) @ f1[b].T.astype(np.float64) / (32 * t))
        np.testing.assert_allclose(got[b], want, rtol=2e-4, atol=1e-7)
    mask0 = torch.ones(2, 150, dtype=torch.bool)
    mask0[1, 120:] = False
    mask1 = torch.ones(2, 131, dtype=torch.bool)
    mask1[0, 90:] = False
    got = dual_softmax_from_features(torch.from_numpy(f0), torch.from_numpy(f1), t, mask0, mask1).numpy()
    want0 = _dual_softmax_numpy(f0[0].astype(np.float64) @ f1[0, :90].T.astype(np.float64) / (32 * t))
    np.testing.assert_allclose(got[0, :, :90], want0, rtol=2e-4, atol=1e-7)
    want1 = _dual_softmax_numpy(f0[1, :120].astype(np.float64) @ f1[1].T.astype(np.float64) / (32 * t))
    np.testing.assert_allclose(got[1, :120], want1, rtol=2e-4, atol=1e-7)
    assert np.abs(got[0, :, 90:]).max() == 0.0 and np.abs(got[1, 120:]).max() == 0.0
    # the block-wise row maxima and column argmaxima equal those of the whole matrix
    conf, (row_max, j_best, i_best) = dual_softmax_from_features(torch.from_numpy(f0), torch.from_numpy(f1), t,
                                                                 mask0, mask1, best=True)
    want_max, want_j = conf.max(dim=2)
    assert torch.equal(row_max, want_max) and torch.equal(j_best, want_j)
    assert torch.equal(i_best, conf.argmax(dim=1))


def test_dual_softmax_keeps_a_match_whose_logits_lie_far_below_the_rest():
    # row 7 and column 100 hold logits about 300 below the matrix maximum; their crossing is
    # the best entry of both, so its confidence is about 1 (one shared exponential would
    # underflow to 0 there)
    rng = np.random.default_rng(3)
    sim = rng.normal(size=(1, 150, 131)).astype(np.float32)
    sim[0, 7, :] = -30.0
    sim[0, :, 100] = -30.0
    sim[0, 7, 100] = -25.0
    got = dual_softmax(torch.from_numpy(sim), 0.1)[0].numpy()
    np.testing.assert_allclose(got, _dual_softmax_numpy(sim[0] / 0.1), rtol=1e-4, atol=1e-7)
    assert got[7, 100] > 0.99


def _log_sinkhorn_numpy(scores: np.ndarray, alpha: float, iters: int) -> np.ndarray:
    """SuperGlue's optimal transport with a dustbin, restated with plain numpy."""
    n, m = scores.shape
    z = np.full((n + 1, m + 1), alpha, np.float64)
    z[:n, :m] = scores
    norm = -math.log(n + m)
    log_mu = np.array([norm] * n + [math.log(m) + norm])
    log_nu = np.array([norm] * m + [math.log(n) + norm])
    u, v = np.zeros(n + 1), np.zeros(m + 1)

    def lse(a, axis):
        mx = a.max(axis=axis, keepdims=True)
        return (mx + np.log(np.exp(a - mx).sum(axis=axis, keepdims=True))).squeeze(axis)

    for _ in range(iters):
        u = log_mu - lse(z + v[None, :], 1)
        v = log_nu - lse(z + u[:, None], 0)
    return z + u[:, None] + v[None, :] - norm


def test_optimal_transport_matches_a_numpy_sinkhorn_and_ignores_padding():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(5, 4)).astype(np.float32)
    want = np.exp(_log_sinkhorn_numpy(scores.astype(np.float64), 0.7, 3))[:5, :4]
    got = optimal_transport(torch.from_numpy(scores)[None], torch.tensor(0.7), 3)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    padded = torch.full((1, 7, 6), -50.0)
    padded[0, :5, :4] = torch.from_numpy(scores)
    got_pad = optimal_transport(padded, torch.tensor(0.7), 3, torch.arange(7)[None] < 5, torch.arange(6)[None] < 4)
    np.testing.assert_allclose(got_pad[0, :5, :4].numpy(), want, rtol=1e-4, atol=1e-6)
    assert float(got_pad[0, 5:].max()) == 0.0 and float(got_pad[0, :, 4:].max()) == 0.0


def _mutual_by_hand(conf: np.ndarray, thr: float, grid0, grid1, valid0, valid1, border: int) -> set:
    """Loops: (i, j) is a match when conf[i, j] is the maximum of row i and of column j,
    exceeds thr, and both cells lie inside their image's valid grid, `border` cells from its edges."""
    (_, w0), (_, w1) = grid0, grid1

    def inside(idx, w, valid):
        y, x = divmod(idx, w)
        return border <= y < valid[0] - border and border <= x < valid[1] - border

    out = set()
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            c = conf[i, j]
            if c > thr and c == conf[i].max() and c == conf[:, j].max() and inside(i, w0, valid0) and inside(j, w1, valid1):
                out.add((i, j))
    return out


@pytest.mark.parametrize("border", [0, 1, 2])
def test_mutual_nearest_neighbours_with_border_removal_by_hand(border):
    rng = np.random.default_rng(3 + border)
    grid0, grid1 = (12, 14), (12, 15)  # padded grids (rows, cols)
    valid0, valid1 = (11, 14), (11, 13)  # real cells of each image
    n, m = grid0[0] * grid0[1], grid1[0] * grid1[1]
    # a noisy permutation-like matrix: many mutual pairs, some below the threshold
    conf = rng.random((n, m)).astype(np.float32) * 0.2
    perm = rng.permutation(m)[:n] if m >= n else None
    for i in range(n):
        conf[i, perm[i]] = 0.1 + 0.9 * rng.random()
    t = torch.from_numpy(conf)[None]
    ok0 = border_ok(n, grid0[1], torch.tensor([valid0]), border)
    ok1 = border_ok(m, grid1[1], torch.tensor([valid1]), border)
    b, i, j, c = mutual_matches(t, 0.3, ok0, ok1)
    got = set(zip(i.tolist(), j.tolist()))
    want = _mutual_by_hand(conf, 0.3, grid0, grid1, valid0, valid1, border)
    assert len(want) >= 5
    assert got == want
    assert (b == 0).all() and np.allclose(c.numpy(), conf[i.numpy(), j.numpy()])


# ----------------------------------------------------------------------------- fine level


def _tokens_for_logits(logits: np.ndarray, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """feat0/feat1 (1, 25, c) whose heatmap logits <f0_centre, f1_r> / sqrt(c) are `logits` (25,)."""
    f0 = torch.zeros(1, 25, c)
    f0[0, 12, 0] = math.sqrt(c)
    f1 = torch.zeros(1, 25, c)
    f1[0, :, 0] = torch.from_numpy(logits.astype(np.float32))
    return f0, f1


def test_fine_expectation_and_spread_on_a_hand_built_heatmap():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=25) * 2
    heat = np.exp(logits - logits.max())
    heat /= heat.sum()
    ex = ey = ex2 = ey2 = 0.0
    for r in range(25):
        y, x = divmod(r, 5)
        gx, gy = -1 + 0.5 * x, -1 + 0.5 * y
        ex += heat[r] * gx
        ey += heat[r] * gy
        ex2 += heat[r] * gx * gx
        ey2 += heat[r] * gy * gy
    std = math.sqrt(ex2 - ex * ex) + math.sqrt(ey2 - ey * ey)
    coords, spread = expectation(*_tokens_for_logits(logits))
    np.testing.assert_allclose(coords[0].numpy(), [ex, ey], atol=1e-5)
    assert abs(float(spread[0]) - std) < 1e-4


def test_fine_expectation_of_a_peaked_heatmap_is_its_position():
    logits = np.zeros(25)
    logits[1 * 5 + 3] = 60.0  # row 1, column 3
    coords, spread = expectation(*_tokens_for_logits(logits))
    np.testing.assert_allclose(coords[0].numpy(), [0.5, -0.5], atol=1e-6)
    assert float(spread[0]) < 1e-3


def test_gather_windows_equals_unfold_on_maps_of_different_sizes():
    torch.manual_seed(0)
    maps = [torch.randn(3, 12, 16), torch.randn(3, 8, 20)]  # fine maps of 3x4 and 2x5 coarse grids
    b_ids = torch.tensor([0, 0, 1, 1, 0])
    xy = torch.tensor([[0, 0], [3, 2], [4, 1], [0, 1], [2, 1]])
    got = gather_windows(maps, b_ids, xy)
    for k in range(len(b_ids)):
        fm = maps[int(b_ids[k])]
        unf = F.unfold(fm[None], kernel_size=5, stride=4, padding=2)  # (1, 3*25, cells)
        wc = fm.shape[2] // 4
        cell = int(xy[k, 1]) * wc + int(xy[k, 0])
        want = unf[0, :, cell].reshape(3, 25).T
        torch.testing.assert_close(got[k], want)


# ----------------------------------------------------------------------------- encoding, attention


@pytest.mark.parametrize("fix", [True, False])
def test_positional_encoding_formula(fix):
    d, h, w = 16, 3, 5
    pe = sine_position_encoding(d, h, w, temp_bug_fix=fix)[0]
    for k in range(d // 4):
        f = math.exp(-2 * k * math.log(10000.0) / (d // 2)) if fix else math.exp(-2 * k)
        for y in range(h):
            for x in range(w):
                vals = [math.sin((x + 1) * f), math.cos((x + 1) * f), math.sin((y + 1) * f), math.cos((y + 1) * f)]
                np.testing.assert_allclose(pe[4 * k:4 * k + 4, y, x].numpy(), vals, atol=1e-5)


def test_linear_attention_formula_and_masked_keys():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, n, 2, 3, generator=g) for n in (4, 6, 6))
    phi = lambda t: F.elu(t) + 1  # noqa: E731
    want = torch.zeros(1, 4, 2, 3)
    for h in range(2):
        for l in range(4):
            num = sum(torch.dot(phi(q[0, l, h]), phi(k[0, s, h])) * v[0, s, h] for s in range(6))
            den = sum(torch.dot(phi(q[0, l, h]), phi(k[0, s, h])) for s in range(6))
            want[0, l, h] = num / (den + 1e-6)
    torch.testing.assert_close(linear_attention(q, k, v, None, None), want, rtol=1e-5, atol=1e-6)
    # two extra keys with garbage values, masked out: same result
    k2 = torch.cat([k, 5 * torch.randn(1, 2, 2, 3, generator=g)], 1)
    v2 = torch.cat([v, 9 * torch.randn(1, 2, 2, 3, generator=g)], 1)
    mask = torch.tensor([[True] * 6 + [False] * 2])
    torch.testing.assert_close(linear_attention(q, k2, v2, None, mask), want, rtol=1e-5, atol=1e-6)


def test_folded_batchnorm_gives_the_same_features():
    net = LoFTRNet()
    net.load_official_state_dict(_random_state_dict(seed=3))
    net.eval()
    x = torch.rand(1, 1, 64, 80)
    with torch.no_grad():
        c_ref, f_ref = net.backbone(x)
        net.prepare_inference("cpu")
        c, f = net.backbone(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(c, c_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f, f_ref, rtol=1e-4, atol=1e-4)


def test_blocked_backbone_has_the_rounding_of_the_contiguous_one():
    """loftr.backbone_layout=blocked (oneDNN tensors, prepacked convs) runs NCHW's conv kernels: same
    features, and no larger float32 error than NCHW against a float64 run."""
    sd = _random_state_dict(seed=4)
    nets = {}
    for layout in ("contiguous", "blocked"):
        nets[layout] = LoFTRNet()
        nets[layout].load_official_state_dict(sd)
        nets[layout].prepare_inference("cpu", layout)
    assert nets["blocked"].backbone.layout == "blocked"
    exact = LoFTRNet().double()
    exact.load_official_state_dict(sd)
    exact.eval()
    x = torch.rand(2, 1, 72, 88)
    with torch.inference_mode():
        out = {k: n.backbone(x) for k, n in nets.items()}
        want = exact.backbone(x.double())
    for a, b, w in zip(out["blocked"], out["contiguous"], want):
        assert not a.is_mkldnn and a.dtype == torch.float32 and a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        err_a, err_b = ((t.double() - w).norm() / w.norm() for t in (a, b))
        assert err_a <= 2 * err_b + 1e-9
    with pytest.raises(RuntimeError, match="cannot change"):
        nets["blocked"].backbone.set_layout("channels_last")
    unfolded = LoFTRNet()
    with pytest.raises(RuntimeError, match="fold_batchnorm"):
        unfolded.backbone.set_layout("blocked")


def test_matcher_layouts_blocked_and_winograd_only_for_cpu_float32():
    sd = _random_state_dict(seed=5)
    assert LoFTR(LoFTRConfig(backbone_layout="blocked", precision="fp32"), "cpu", state_dict=sd).layout == "blocked"
    assert LoFTR(LoFTRConfig(backbone_layout="blocked", precision="bf16"), "cpu", state_dict=sd).layout == "channels_last"
    assert LoFTR(LoFTRConfig(precision="fp32"), "cpu", state_dict=sd).layout == "winograd"  # auto on the CPU
    assert LoFTR(LoFTRConfig(precision="bf16"), "cpu", state_dict=sd).layout == "channels_last"
    assert LoFTR(LoFTRConfig(backbone_layout="channels_last"), "cpu", state_dict=sd).layout == "channels_last"
    from slam.config import load_config
    with pytest.raises(ConfigError, match="loftr.backbone_layout"):
        load_config([], ["loftr.backbone_layout=nhwc"])


def _prepared(sd: dict, layout: str) -> LoFTRNet:
    net = LoFTRNet()
    net.load_official_state_dict(sd)
    return net.prepare_inference("cpu", layout)


def test_winograd_backbone_equals_the_direct_one_within_float32_rounding():
    sd = _random_state_dict(seed=6)
    direct, wino = _prepared(sd, "channels_last"), _prepared(sd, "winograd")
    n_wino = sum(isinstance(m, WinogradConv3x3) for m in wino.backbone.modules())
    assert n_wino == 14  # every 3x3 stride-1 conv: 10 in the residual blocks, 4 in the two merges
    assert all(m.stride != (1, 1) or m.kernel_size != (3, 3) for m in wino.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(2, 1, 72, 88)
    with torch.inference_mode():
        for a, b in zip(wino.backbone(x), direct.backbone(x)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    with pytest.raises(RuntimeError, match="cannot change"):
        wino.backbone.set_layout("channels_last")
    with pytest.raises(RuntimeError, match="fold_batchnorm"):
        LoFTRNet().backbone.set_layout("winograd")


def test_matcher_winograd_layout_only_for_cpu_float32_and_same_matches():
    sd = _random_state_dict(seed=7)
    assert LoFTR(LoFTRConfig(backbone_layout="winograd", precision="bf16"), "cpu", state_dict=sd).layout == "channels_last"
    a = LoFTR(LoFTRConfig(backbone_layout="winograd", threshold=0.0, temp_bug_fix=True), "cpu", state_dict=sd)
    b = LoFTR(LoFTRConfig(backbone_layout="channels_last", threshold=0.0, temp_bug_fix=True), "cpu", state_dict=sd)
    assert a.layout == "winograd"
    im0, im1 = _pair(96, 128, seed=3)
    ma, mb = a.match_images(im0, im1), b.match_images(im0, im1)
    assert len(mb.pts0) > 20
    sa = {tuple(p) for p in ma.pts0.round(3).tolist()}
    sb = {tuple(p) for p in mb.pts0.round(3).tolist()}
    assert len(sa & sb) >= 0.95 * len(sb)


# ----------------------------------------------------------------------------- loading

#: a few keys of the official checkpoints (zju3dv/LoFTR, Lightning 'matcher.' prefix) and shapes
OFFICIAL_KEYS = {
    "matcher.backbone.conv1.weight": (128, 1, 7, 7),
    "matcher.backbone.layer2.0.downsample.0.weight": (196, 128, 1, 1),
    "matcher.backbone.layer3.1.bn2.running_var": (256,),
    "matcher.backbone.layer2_outconv2.3.weight": (196, 256, 3, 3),
    "matcher.backbone.layer1_outconv2.1.num_batches_tracked": (),
    "matcher.loftr_coarse.layers.7.mlp.0.weight": (512, 512),
    "matcher.loftr_coarse.layers.0.q_proj.weight": (256, 256),
    "matcher.fine_preprocess.down_proj.bias": (128,),
    "matcher.fine_preprocess.merge_feat.weight": (128, 256),
    "matcher.loftr_fine.layers.1.norm2.bias": (128,),
}


@pytest.mark.parametrize("match_type,count", [("dual_softmax", 211), ("sinkhorn", 212)])
def test_state_dict_has_the_official_layout(match_type, count):
    sd = {"matcher." + k: v for k, v in _random_state_dict(match_type).items()}
    assert len(sd) == count
    for key, shape in OFFICIAL_KEYS.items():
        assert tuple(sd[key].shape) == shape, key
    assert ("matcher.coarse_matching.bin_score" in sd) == (match_type == "sinkhorn")


@pytest.mark.parametrize("layout", ["lightning", "no_prefix", "bare"])
def test_checkpoint_layouts_load(tmp_path, layout):
    sd = _random_state_dict("sinkhorn", seed=1)
    if layout == "lightning":
        obj = {"epoch": 3, "state_dict": {"matcher." + k: v for k, v in sd.items()}}
    elif layout == "no_prefix":
        obj = {"state_dict": sd}
    else:
        obj = sd
    path = tmp_path / "indoor_ot.ckpt"
    torch.save(obj, path)
    m = LoFTR(LoFTRConfig(weights=str(path)), "cpu")
    assert m.match_type == "sinkhorn" and m.net.temp_bug_fix is False  # both from the checkpoint / file name
    assert torch.equal(m.net.loftr_coarse.layers[3].merge.weight, sd["loftr_coarse.layers.3.merge.weight"])
    assert m.net.coarse_matching.bin_score.item() == pytest.approx(0.7)
    assert read_checkpoint(path).keys() == sd.keys()


def test_wrong_shape_missing_and_unexpected_keys_are_named():
    sd = _random_state_dict()
    bad = dict(sd)
    bad["loftr_fine.layers.0.merge.weight"] = torch.zeros(128, 64)
    with pytest.raises(WeightsError, match=r"loftr_fine\.layers\.0\.merge\.weight: \(128, 64\)"):
        LoFTR(LoFTRConfig(), "cpu", state_dict=bad)
    bad = {k: v for k, v in sd.items() if k != "backbone.layer3.0.conv2.weight"}
    with pytest.raises(WeightsError, match=r"missing keys \(1\): backbone\.layer3\.0\.conv2\.weight"):
        LoFTR(LoFTRConfig(), "cpu", state_dict=bad)
    bad = dict(sd, **{"loftr_coarse.layers.8.q_proj.weight": torch.zeros(256, 256)})
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): loftr_coarse\.layers\.8\.q_proj\.weight"):
        LoFTR(LoFTRConfig(), "cpu", state_dict=bad)
    with pytest.raises(WeightsError, match="optimal-transport"):
        LoFTR(LoFTRConfig(match_type="dual_softmax"), "cpu", state_dict=_random_state_dict("sinkhorn"))
    with pytest.raises(WeightsError, match="coarse_matching.bin_score"):
        LoFTR(LoFTRConfig(match_type="sinkhorn"), "cpu", state_dict=sd)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "outdoor_ds.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read LoFTR checkpoint"):
        LoFTR(LoFTRConfig(weights=str(path)), "cpu")


def test_missing_official_weights_say_where_they_are_published(tmp_path, monkeypatch):
    from slam.weights import resolve_weights

    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
    for name, file in (("loftr_indoor", "indoor_ds_new.ckpt"), ("loftr_outdoor", "outdoor_ds.ckpt"),
                       ("loftr_indoor_ot", "indoor_ot.ckpt")):
        with pytest.raises(WeightsError) as exc:
            resolve_weights(name)
        msg = str(exc.value)
        assert file in msg and "github.com/zju3dv/LoFTR" in msg and "Apache-2.0" in msg and str(tmp_path) in msg
        (tmp_path / file).write_bytes(b"x")
        assert resolve_weights(name) == tmp_path / file


def test_positional_encoding_variant_follows_the_checkpoint_name():
    assert default_temp_bug_fix("loftr_indoor") is True
    assert default_temp_bug_fix("loftr_outdoor") is False and default_temp_bug_fix("loftr_indoor_ot") is False
    assert default_temp_bug_fix("/w/indoor_ds_new.ckpt") is True
    assert default_temp_bug_fix("/w/outdoor_ot.ckpt") is False and default_temp_bug_fix("indoor_ds.ckpt") is False


def test_config_validation_names_the_key():
    from slam.config import load_config

    with pytest.raises(ConfigError, match="loftr.match_type"):
        load_config([], ["matcher=loftr", "loftr.match_type=nearest"])
    with pytest.raises(ConfigError, match="loftr.precision"):
        LoFTR(LoFTRConfig(precision="int8"), "cpu", state_dict=_random_state_dict())
    with pytest.raises(ConfigError, match="loftr.threshold"):
        load_config([], ["loftr.threshold=1.5"])
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        LoFTR(LoFTRConfig(precision="fp16"), "cpu", state_dict=_random_state_dict())


# ----------------------------------------------------------------------------- matching


def test_output_shapes_dtypes_and_bounds_at_odd_sizes(matcher):
    img0, img1 = _texture(77, 93, 1), _texture(61, 100, 2)
    m = matcher.match_images(img0, img1, return_conf=True)
    assert len(m) > 0
    assert m.pts0.shape == (len(m), 2) and m.pts0.dtype == np.float32 and m.pts1.dtype == np.float32
    assert m.confidence.shape == (len(m),) and m.confidence.dtype == np.float32
    assert m.idx0.dtype == np.int64 and m.idx1.dtype == np.int64 and m.fine_std.dtype == np.float32
    assert m.grid0 == (10, 12) and m.grid1 == (8, 13)  # ceil(size / 8)
    assert m.size0 == (93, 77) and m.size1 == (100, 61)
    assert m.conf_matrix.shape == (120, 104)
    for pts, (w, h) in ((m.pts0, m.size0), (m.pts1, m.size1)):
        assert (pts >= 0).all() and (pts[:, 0] <= w - 1).all() and (pts[:, 1] <= h - 1).all()
    # image 0's points are the cells' pixels (8 x, 8 y), border cells excluded
    np.testing.assert_array_equal(m.pts0, np.stack([m.idx0 % 12, m.idx0 // 12], 1) * 8.0)
    assert (m.idx0 // 12 >= 2).all() and (m.idx0 % 12 <= 12 - 3).all()
    assert len(set(m.idx0.tolist())) == len(m) and len(set(m.idx1.tolist())) == len(m)
    # image 1's points stay within the fine window (+-4 px) of their cell
    cell1 = np.stack([m.idx1 % 13, m.idx1 // 13], 1) * 8.0
    assert np.abs(m.pts1 - cell1).max() <= 4.0 + 1e-4
    np.testing.assert_allclose(m.confidence, m.conf_matrix[m.idx0, m.idx1], rtol=1e-6)


def test_padded_image_equals_the_unpadded_one_in_a_batch(matcher):
    """A pair padded (with masks) to the grid of a larger pair in the same batch gives the same
    confidence matrix and matches as the pair alone, unpadded."""
    small = _pair(96, 128, seed=3)
    large = _pair(136, 168, seed=4)
    alone = matcher.match_images(*small, return_conf=True)
    both = matcher.match_image_pairs([large[0], small[0]], [large[1], small[1]], return_conf=True)
    in_batch = both[1]
    assert in_batch.conf_matrix.shape == alone.conf_matrix.shape == (12 * 16, 12 * 16)
    # float32 rounding: P = exp(2 s - lse_row - lse_col) with logits s of 60-100 here (random
    # weights), where one ulp of s is 8e-6, so a relative tolerance as well as an absolute one
    np.testing.assert_allclose(in_batch.conf_matrix, alone.conf_matrix, rtol=5e-5, atol=1e-5)
    assert len(alone) > 10
    np.testing.assert_array_equal(in_batch.idx0, alone.idx0)
    np.testing.assert_array_equal(in_batch.idx1, alone.idx1)
    np.testing.assert_allclose(in_batch.pts1, alone.pts1, atol=1e-3)


def test_zero_padded_input_equals_internal_padding(matcher):
    """An image whose size is not a multiple of 8 is zero-padded bottom/right: the same result
    as the caller padding it, and all points stay in the original image."""
    img0, img1 = _pair(90, 125, seed=5)
    got = matcher.match_images(img0, img1, return_conf=True)
    pad = lambda im: cv2.copyMakeBorder(im, 0, 6, 0, 3, cv2.BORDER_CONSTANT, value=0)  # noqa: E731
    ref = matcher.match_images(pad(img0), pad(img1), return_conf=True)
    inside = (ref.pts1[:, 0] <= 124) & (ref.pts1[:, 1] <= 89)
    np.testing.assert_allclose(got.conf_matrix, ref.conf_matrix, atol=1e-6)
    np.testing.assert_array_equal(got.idx0, ref.idx0[inside])
    np.testing.assert_allclose(got.pts1, ref.pts1[inside], atol=1e-4)


def test_batch_equals_single(matcher):
    pairs = [_pair(96, 128, seed=6), _pair(80, 112, seed=7), (_texture(72, 100, 8), _texture(88, 96, 9))]
    batch = matcher.match_image_pairs([p[0] for p in pairs], [p[1] for p in pairs])
    for (a, b), got in zip(pairs, batch):
        want = matcher.match_images(a, b)
        assert len(want) > 0
        np.testing.assert_array_equal(got.idx0, want.idx0)
        np.testing.assert_array_equal(got.idx1, want.idx1)
        np.testing.assert_allclose(got.confidence, want.confidence, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.pts1, want.pts1, atol=1e-3)


def test_input_forms_agree_and_resizing_keeps_original_pixels(matcher):
    img0, img1 = _pair(96, 128, seed=10)
    ref = matcher.match_images(img0, img1)
    bgr = matcher.match_images(cv2.cvtColor(img0, cv2.COLOR_GRAY2BGR), cv2.cvtColor(img1, cv2.COLOR_GRAY2BGR))
    flt = matcher.match_images(img0.astype(np.float32) / 255, torch.from_numpy(img1)[None])
    for other in (bgr, flt):
        np.testing.assert_array_equal(other.idx0, ref.idx0)
        np.testing.assert_allclose(other.pts1, ref.pts1, atol=1e-3)
    # the same pair at twice the size, shrunk back by max_size: points in the big images' pixels
    big0 = cv2.resize(img0, (256, 192), interpolation=cv2.INTER_LINEAR)
    big1 = cv2.resize(img1, (256, 192), interpolation=cv2.INTER_LINEAR)
    small = LoFTR(LoFTRConfig(threshold=0.0, temp_bug_fix=True, max_size=128), "cpu", state_dict=_random_state_dict())
    m = small.match_images(big0, big1)
    assert m.size0 == (256, 192) and m.grid0 == (12, 16) and len(m) > 0
    np.testing.assert_allclose(m.pts0, (np.stack([m.idx0 % 16, m.idx0 // 16], 1) * 8.0 + 0.5) * 2 - 0.5)
    assert (m.pts1[:, 0] <= 255).all() and (m.pts1[:, 1] <= 191).all()


def test_bad_images_are_clear_errors(matcher):
    with pytest.raises(InputError, match="at least 8x8"):
        matcher.match_images(np.zeros((5, 40), np.uint8), np.zeros((40, 40), np.uint8))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        matcher.match_images(np.full((40, 40), 200.0, np.float32), np.zeros((40, 40), np.uint8))
    with pytest.raises(InputError, match="grey"):
        matcher.match_images(np.zeros((2, 40, 40, 3), np.uint8), np.zeros((40, 40), np.uint8))


def test_sinkhorn_variant_runs_and_batches(tmp_path):
    m = LoFTR(LoFTRConfig(threshold=0.0), "cpu", state_dict=_random_state_dict("sinkhorn"))
    a, b = _pair(80, 96, seed=11)
    one = m.match_images(a, b)
    two = m.match_image_pairs([a, _texture(104, 120, 12)], [b, _texture(96, 112, 13)])
    assert len(one) > 0
    np.testing.assert_array_equal(two[0].idx0, one.idx0)
    np.testing.assert_allclose(two[0].confidence, one.confidence, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.needs_data
def test_real_frames_and_the_match_command(fr1_xyz, tmp_path):
    """fr1_xyz frames through the command line: the picture is written, the count printed."""
    frames = sorted((fr1_xyz / "rgb").glob("*.jpg"))
    ckpt = tmp_path / "indoor_ds_new.ckpt"
    torch.save({"state_dict": {"matcher." + k: v for k, v in _random_state_dict().items()}}, ckpt)
    out = tmp_path / "m.png"
    proc = subprocess.run([sys.executable, "-m", "slam", "match", str(frames[0]), str(frames[20]), "--matcher", "loftr",
                           f"loftr.weights={ckpt}", "loftr.threshold=0", "loftr.max_size=320", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "LoFTR matches" in proc.stdout
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] == 640 + 10 + 640 and img.shape[0] > 480  # legend strip below


def test_match_command_without_weights_is_one_line(tmp_path):
    env_dir = tmp_path / "empty"
    env_dir.mkdir()
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), _texture(64, 64, 0))
    import os

    env = dict(os.environ, SLAM_WEIGHTS_DIR=str(env_dir))
    proc = subprocess.run([sys.executable, "-m", "slam", "match", str(img), str(img), "--matcher", "loftr"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "indoor_ds_new.ckpt" in proc.stderr and "zju3dv/LoFTR" in proc.stderr


@pytest.mark.gpu
def test_cuda_fp32_equals_cpu_and_fp16_agrees():
    sd = _random_state_dict()
    cfg = dict(threshold=0.0, temp_bug_fix=True)
    cpu = LoFTR(LoFTRConfig(**cfg), "cpu", state_dict=sd).match_images(*_pair(240, 320, seed=20), return_conf=True)
    a, b = _pair(240, 320, seed=20)
    g32 = LoFTR(LoFTRConfig(precision="fp32", **cfg), "cuda", state_dict=sd)
    m32 = g32.match_images(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda(), return_conf=True)
    np.testing.assert_allclose(m32.conf_matrix, cpu.conf_matrix, atol=1e-4)
    m16 = LoFTR(LoFTRConfig(precision="auto", **cfg), "cuda", state_dict=sd).match_images(a, b)
    same = set(zip(m16.idx0.tolist(), m16.idx1.tolist())) & set(zip(cpu.idx0.tolist(), cpu.idx1.tolist()))
    assert len(same) >= 0.8 * len(cpu)


def test_match_picture_inlier_colours_and_legend():
    from slam.viz.draw import INLIER_BGR, OUTLIER_BGR, draw_point_matches, fundamental_inliers

    rng = np.random.default_rng(0)
    k = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    pts3 = np.c_[rng.uniform(-1, 1, (60, 2)), rng.uniform(3, 6, 60)]
    cam1_from_cam0 = np.array([[0.995, 0, 0.0998], [0, 1, 0], [-0.0998, 0, 0.995]]), np.array([-0.3, 0.05, 0.02])
    proj = lambda p: (p @ k.T)[:, :2] / p[:, 2:]  # noqa: E731
    p0 = proj(pts3)
    p1 = proj(pts3 @ cam1_from_cam0[0].T + cam1_from_cam0[1])
    truth = np.ones(60, bool)
    truth[:8] = False
    p1[:8] = rng.uniform([0, 0], [320, 240], (8, 2))
    found = fundamental_inliers(p0, p1, 1.0)
    assert found[truth].mean() >= 0.95 and found[~truth].sum() <= 1
    img = np.full((240, 320), 128, np.uint8)
    pic = draw_point_matches(img, img, p0, p1, rng.random(60), color_by="inlier", ransac_px=1.0, text_lines=[])
    assert pic.shape[0] > 240 and pic.shape[1] == 650  # legend strip under the images
    body, legend = pic[:240].astype(int), pic[240:].astype(int)
    for col in (INLIER_BGR, OUTLIER_BGR):
        assert (np.abs(body - np.array(col)).sum(2) < 40).sum() > 50  # lines / points of both kinds
        assert (np.abs(legend - np.array(col)).sum(2) < 10).sum() > 20  # and their swatches
    with pytest.raises(ValueError, match="color_by"):
        draw_point_matches(img, img, p0, p1, color_by="rainbow")
