"""Tests for slam/matching/superglue.py (SuperGlue middle-end).

No trained weights are needed: networks have random weights. Where matches must exist the final
projection is drawn N(0, 1) ("sharp"), which keeps random descriptors distinctive through the
score matrix; everything else keeps PyTorch's random init.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from slam.device import fast_cpu_bf16_matmul
from slam.matching.base import Matcher
from slam.matching.superglue import (
    SuperGlue,
    SuperGlueConfig,
    SuperGlueNet,
    WeightsError,
    log_optimal_transport,
    sinkhorn,
)
from slam.matching.superglue_fused import FusedSuperGlue
from slam.types import Features
from slam.weights import resolve_weights

SMALL = dict(descriptor_dim=64, n_layers=2, num_heads=4, keypoint_encoder=[16, 32])
OFFICIAL = dict(descriptor_dim=256, n_layers=9, num_heads=4, keypoint_encoder=[32, 64, 128, 256])
W, H = 640, 480


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def random_net(seed: int = 0, sharp: float = 1.0, random_bn: bool = True, **arch) -> SuperGlueNet:
    """Random weights; with random_bn non-trivial BatchNorm statistics (so BN folding is
    exercised); the final projection is drawn N(0, sharp^2 * 256 / D) (0 keeps PyTorch's init)."""
    arch = arch or SMALL
    torch.manual_seed(seed)
    net = SuperGlueNet(**arch)
    with torch.no_grad():
        for mod in net.modules():
            if random_bn and isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.normal_(0.0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0.0, 0.1)
        net.bin_score.fill_(0.7)
        if sharp:
            d = net.descriptor_dim
            net.final_proj.weight.normal_(0.0, sharp * (256.0 / d) ** 0.5)
    return net.eval()


def make_sg(net: SuperGlueNet, **cfg) -> SuperGlue:
    cfg.setdefault("precision", "fp32")  # the maths tests; bf16 (auto on CPUs with native bf16) has its own
    arch = net.architecture()
    c = SuperGlueConfig(descriptor_dim=arch["descriptor_dim"], n_layers=arch["n_layers"],
                        num_heads=arch["num_heads"], keypoint_encoder=arch["keypoint_encoder"], **cfg)
    return SuperGlue(c, "cpu", state_dict=net.state_dict())


def random_features(n: int, dim: int, seed: int, size=(W, H)) -> Features:
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(n, 2, generator=g) * torch.tensor([size[0] - 1.0, size[1] - 1.0])
    desc = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    return Features(kp, torch.rand(n, generator=g), desc, size)


def homography_pair(seed: int, n: int = 300, n_out: int = 60, dim: int = 64, h01=None):
    """Image 0: n random keypoints with random unit descriptors. Image 1: the keypoints that a
    known homography maps inside the image, with IDENTICAL descriptors, plus n_out outliers with
    fresh descriptors, shuffled. Returns f0, f1, gt (n,) index into f1 or -1."""
    g = torch.Generator().manual_seed(seed)
    if h01 is None:
        h01 = np.array([[0.92, 0.06, 25.0], [-0.05, 0.95, 18.0], [8e-5, -6e-5, 1.0]])
    k0 = torch.rand(n, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0])
    p = np.c_[k0.numpy().astype(np.float64), np.ones(n)] @ np.asarray(h01).T
    k1 = torch.tensor(p[:, :2] / p[:, 2:], dtype=torch.float32)
    inside = (k1[:, 0] >= 0) & (k1[:, 0] < W) & (k1[:, 1] >= 0) & (k1[:, 1] < H)
    desc0 = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    idx = torch.nonzero(inside).squeeze(1)
    out_kp = torch.rand(n_out, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0])
    out_desc = torch.nn.functional.normalize(torch.randn(n_out, dim, generator=g), dim=1)
    kp1 = torch.cat([k1[idx], out_kp])
    desc1 = torch.cat([desc0[idx], out_desc])
    perm = torch.randperm(len(kp1), generator=g)
    inv = torch.argsort(perm)
    gt = np.full(n, -1, dtype=np.int64)
    gt[idx.numpy()] = inv[: len(idx)].numpy()
    f0 = Features(k0, torch.rand(n, generator=g), desc0, (W, H))
    f1 = Features(kp1[perm], torch.rand(len(kp1), generator=g), desc1[perm], (W, H))
    return f0, f1, gt


def fused_of(net: SuperGlueNet, dtype=torch.float32) -> FusedSuperGlue:
    return FusedSuperGlue(net, torch.device("cpu"), dtype)


def log_space_sinkhorn(z: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, iters: int):
    """The log-space iteration written out directly (float64): u = log_mu - LSE_j(z + v), ..."""
    z, log_mu, log_nu = z.double(), log_mu.double(), log_nu.double()
    u = torch.zeros_like(log_mu).masked_fill(torch.isneginf(log_mu), float("-inf"))
    v = torch.zeros_like(log_nu).masked_fill(torch.isneginf(log_nu), float("-inf"))
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(z + u[:, :, None], dim=1)
    return u, v


def batch_of(f0: Features, f1: Features) -> dict:
    return {
        "kpts0": f0.keypoints[None], "scores0": f0.scores[None], "desc0": f0.descriptors[None],
        "image_size0": torch.tensor([f0.image_size], dtype=torch.float32),
        "kpts1": f1.keypoints[None], "scores1": f1.scores[None], "desc1": f1.descriptors[None],
        "image_size1": torch.tensor([f1.image_size], dtype=torch.float32),
    }


def official_shapes(d: int = 256, n_layers: int = 9, enc=(32, 64, 128, 256), with_nbt: bool = True) -> dict:
    """Key -> shape of Magic Leap's superglue_{indoor,outdoor}.pth, written out from the
    published model structure (Conv1d MLPs with BatchNorm1d + ReLU between convs)."""
    shapes: dict = {"bin_score": ()}

    def conv(prefix, cin, cout):
        shapes[f"{prefix}.weight"] = (cout, cin, 1)
        shapes[f"{prefix}.bias"] = (cout,)

    def bn(prefix, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{k}"] = (c,)
        if with_nbt:
            shapes[f"{prefix}.num_batches_tracked"] = ()

    chans = [3, *enc, d]
    for i in range(len(chans) - 1):
        conv(f"kenc.encoder.{3 * i}", chans[i], chans[i + 1])
        if i < len(chans) - 2:
            bn(f"kenc.encoder.{3 * i + 1}", chans[i + 1])
    for layer in range(2 * n_layers):
        p = f"gnn.layers.{layer}"
        conv(f"{p}.attn.merge", d, d)
        for j in range(3):
            conv(f"{p}.attn.proj.{j}", d, d)
        conv(f"{p}.mlp.0", 2 * d, 2 * d)
        bn(f"{p}.mlp.1", 2 * d)
        conv(f"{p}.mlp.3", 2 * d, d)
    conv("final_proj", d, d)
    return shapes


def random_official_state_dict(seed: int = 0, **kw) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_shapes(**kw).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.05
    sd["bin_score"] = torch.tensor(2.3)
    return sd


def reference_forward(sd: dict, data: dict, num_heads: int, iters: int) -> torch.Tensor:
    """The published model's maths written out directly in its (B, D, N) layout with interleaved
    heads (channel = d * num_heads + h), unfused BatchNorm and a plain log-space Sinkhorn.
    Returns the log assignment (B, N+1, M+1)."""

    def conv(x, p):
        return torch.einsum("oi,bin->bon", sd[f"{p}.weight"][..., 0], x) + sd[f"{p}.bias"][None, :, None]

    def bn(x, p):
        mean, var = sd[f"{p}.running_mean"][None, :, None], sd[f"{p}.running_var"][None, :, None]
        return (x - mean) / torch.sqrt(var + 1e-5) * sd[f"{p}.weight"][None, :, None] + sd[f"{p}.bias"][None, :, None]

    def mlp(x, p, n_conv):
        for i in range(n_conv):
            x = conv(x, f"{p}.{3 * i}")
            if i < n_conv - 1:
                x = torch.relu(bn(x, f"{p}.{3 * i + 1}"))
        return x

    def normalise(k, size):
        center = size[:, None, :] / 2
        scale = size.max(dim=1).values[:, None, None] * 0.7
        return (k - center) / scale

    def attention(x, src, p):
        b, d, _ = x.shape
        hd = d // num_heads
        q = conv(x, f"{p}.proj.0").view(b, hd, num_heads, -1)
        k = conv(src, f"{p}.proj.1").view(b, hd, num_heads, -1)
        v = conv(src, f"{p}.proj.2").view(b, hd, num_heads, -1)
        prob = (torch.einsum("bdhn,bdhm->bhnm", q, k) / hd ** 0.5).softmax(dim=-1)
        out = torch.einsum("bhnm,bdhm->bdhn", prob, v).reshape(b, d, -1)
        return conv(out, f"{p}.merge")

    n_kenc = len([k for k in sd if k.startswith("kenc.encoder.") and k.endswith(".weight") and sd[k].ndim == 3])
    n_gnn = len({k.split(".")[2] for k in sd if k.startswith("gnn.layers.")})
    d0, d1 = data["desc0"].transpose(1, 2), data["desc1"].transpose(1, 2)
    k0 = normalise(data["kpts0"], data["image_size0"])
    k1 = normalise(data["kpts1"], data["image_size1"])
    d0 = d0 + mlp(torch.cat([k0.transpose(1, 2), data["scores0"][:, None]], 1), "kenc.encoder", n_kenc)
    d1 = d1 + mlp(torch.cat([k1.transpose(1, 2), data["scores1"][:, None]], 1), "kenc.encoder", n_kenc)
    for layer in range(n_gnn):
        p = f"gnn.layers.{layer}"
        s0, s1 = (d1, d0) if layer % 2 else (d0, d1)
        m0 = mlp(torch.cat([d0, attention(d0, s0, f"{p}.attn")], 1), f"{p}.mlp", 2)
        m1 = mlp(torch.cat([d1, attention(d1, s1, f"{p}.attn")], 1), f"{p}.mlp", 2)
        d0, d1 = d0 + m0, d1 + m1
    f0, f1 = conv(d0, "final_proj"), conv(d1, "final_proj")
    scores = torch.einsum("bdn,bdm->bnm", f0, f1) / f0.shape[1] ** 0.5
    b, n, m = scores.shape
    alpha = sd["bin_score"]
    z = torch.cat([torch.cat([scores, alpha.expand(b, n, 1)], 2), alpha.expand(b, 1, m + 1)], 1)
    norm = -torch.log(torch.tensor(float(n + m)))
    log_mu = torch.cat([norm.expand(n), (torch.log(torch.tensor(float(m))) + norm)[None]])[None].expand(b, -1)
    log_nu = torch.cat([norm.expand(m), (torch.log(torch.tensor(float(n))) + norm)[None]])[None].expand(b, -1)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(z + u[:, :, None], dim=1)
    return z + u[:, :, None] + v[:, None, :] - norm


# ---------------------------------------------------------------------------------------------
# optimal matching layer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True], ids=["differentiable", "inference"])
def test_sinkhorn_marginals_rows_and_columns_including_dustbins(fast):
    torch.manual_seed(1)
    b, n, m = 2, 37, 23
    scores = torch.randn(b, n, m) * 3.0
    with torch.set_grad_enabled(not fast):
        la = log_optimal_transport(scores, torch.tensor(0.5), iters=500)
    p = la.exp()
    assert la.shape == (b, n + 1, m + 1)
    rows, cols = p.sum(2), p.sum(1)
    torch.testing.assert_close(rows[:, :n], torch.ones(b, n), atol=1e-4, rtol=0)
    torch.testing.assert_close(cols[:, :m], torch.ones(b, m), atol=1e-4, rtol=0)
    torch.testing.assert_close(rows[:, n], torch.full((b,), float(m)), atol=1e-3, rtol=0)  # dustbin row
    torch.testing.assert_close(cols[:, m], torch.full((b,), float(n)), atol=1e-3, rtol=0)  # dustbin column


@pytest.mark.parametrize("fast", [False, True], ids=["differentiable", "inference"])
def test_sinkhorn_padding_zero_mass_and_real_part_unchanged(fast):
    torch.manual_seed(2)
    sizes = [(30, 20), (12, 25), (0, 7)]
    n, m = 30, 25
    scores = torch.randn(len(sizes), n, m) * 2.0
    mask0 = torch.zeros(len(sizes), n, dtype=torch.bool)
    mask1 = torch.zeros(len(sizes), m, dtype=torch.bool)
    for i, (a, c) in enumerate(sizes):
        mask0[i, :a] = True
        mask1[i, :c] = True
    alpha = torch.tensor(1.1)
    with torch.set_grad_enabled(not fast):
        la = log_optimal_transport(scores, alpha, 100, mask0, mask1)
        assert not torch.isnan(la).any()
        for i, (a, c) in enumerate(sizes):
            p = la[i].exp()
            pad_rows = torch.cat([~mask0[i], torch.tensor([False])])
            pad_cols = torch.cat([~mask1[i], torch.tensor([False])])
            assert (p[pad_rows] == 0).all() and (p[:, pad_cols] == 0).all()
            alone = log_optimal_transport(scores[i:i + 1, :a, :c], alpha, 100)[0]
            real = la[i][torch.cat([mask0[i], torch.tensor([True])])][:, torch.cat([mask1[i], torch.tensor([True])])]
            torch.testing.assert_close(real, alone, atol=1e-4, rtol=1e-5)
            assert abs(p[:, :-1].sum(0)[mask1[i]] - 1).max() < 1e-3 if c else True
    # the (0, 7) sample: every column of image 1 goes to the dustbin row
    assert torch.allclose(la[2].exp()[n, :7], torch.ones(7), atol=1e-4)


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "autograd"])
def test_sinkhorn_equals_the_log_space_iteration_even_for_extreme_scores(grad):
    torch.manual_seed(3)
    mask0 = torch.ones(2, 60, dtype=torch.bool)
    mask0[1, 40:] = False
    for scale in (1.0, 40.0, 300.0, 5000.0):  # 300, 5000: far beyond float32 scalings (absorption, log steps)
        scores = (torch.randn(2, 60, 45) * scale).requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            la = log_optimal_transport(scores, torch.tensor(1.0), 30, mask0)
        b, n, m = scores.shape
        alpha = torch.tensor(1.0)
        z = torch.cat([torch.cat([scores.detach(), alpha.expand(b, n, 1)], 2), alpha.expand(b, 1, m + 1)], 1)
        n_real = mask0.sum(1).double()
        norm = -torch.log(n_real + m)
        log_mu = torch.cat([torch.where(mask0, norm[:, None], -math.inf), (torch.log(torch.tensor(float(m))) + norm)[:, None]], 1)
        log_nu = torch.cat([norm[:, None].expand(b, m), (torch.log(n_real) + norm)[:, None]], 1)
        u, v = log_space_sinkhorn(z, log_mu, log_nu, 30)
        ref = (z.double() + u[:, :, None] + v[:, None, :] - norm[:, None, None]).float()
        assert torch.equal(torch.isfinite(la), torch.isfinite(ref)) and not torch.isnan(la).any()
        fin = torch.isfinite(ref)
        torch.testing.assert_close(la.detach()[fin], ref[fin], atol=1e-4 * scale, rtol=1e-5)
        if grad:
            la[torch.isfinite(la)].sum().backward()
            assert torch.isfinite(scores.grad).all()
    # a matrix without the dustbin structure whose scalings leave every float range: the
    # iterations that lose range run in log space, so the duals are still the log-space ones
    z = torch.tensor([[[0.0, -2000.0, 0.5], [0.3, -2000.0, 0.0], [0.1, -2000.0, 0.2]]])
    log_m = torch.full((1, 3), -math.log(3.0))
    u, v = sinkhorn(z, log_m, log_m, 10)
    u_ref, v_ref = log_space_sinkhorn(z, log_m, log_m, 10)
    torch.testing.assert_close(u.double(), u_ref, atol=2e-3, rtol=1e-5)
    torch.testing.assert_close(v.double(), v_ref, atol=2e-3, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# network maths and symmetries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("equal_sizes", [False, True], ids=["N!=M", "N==M"])
def test_forward_matches_reference_maths_with_official_layout(equal_sizes):
    """Official layout + random weights: our (fused and differentiable) forward = the published maths."""
    sd = random_official_state_dict(seed=4)
    sg = SuperGlue(SuperGlueConfig(sinkhorn_iterations=50), "cpu", state_dict=sd)
    f0, f1, _ = homography_pair(5, n=48, n_out=10, dim=256)
    if equal_sizes:  # both images go through the layers as one batch
        f1 = f1.subset(np.arange(len(f0)))
    data = batch_of(f0, f1)
    ref = reference_forward(sd, data, num_heads=4, iters=50)
    fused = sg.net(data, sg.fused)["log_assignment"]  # what the matcher runs
    plain = sg.net(data)["log_assignment"].detach()
    torch.testing.assert_close(fused, ref, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(plain, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["N!=M", "N==M", "padded_batch"])
def test_fused_inference_path_equals_differentiable_path(mode):
    net = random_net(6)
    f0, f1, _ = homography_pair(7, n=80, n_out=20)
    if mode == "N==M":
        f1 = f1.subset(np.arange(len(f0)))
    assert (len(f0) == len(f1)) == (mode == "N==M")
    data = batch_of(f0, f1)
    plain = net(data)
    fused = net(data, fused_of(net))
    torch.testing.assert_close(fused["log_assignment"], plain["log_assignment"].detach(), atol=1e-4, rtol=1e-4)
    assert torch.equal(fused["matches0"], plain["matches0"])
    assert (fused["matches0"] >= 0).sum() > 40
    if mode == "padded_batch":  # padded batch with masks on both sides, through the matcher
        sg = make_sg(net, precision="fp32")
        pairs = [(f0, f1), (f0.subset(np.arange(50)), f1), (f1, f0.subset(np.arange(30)))]
        for (a, c), got in zip(pairs, sg.match_pairs(pairs)):
            alone = net(batch_of(a, c))
            np.testing.assert_array_equal(got.matches0, alone["matches0"][0].numpy())


def test_fused_path_is_built_once_from_the_loaded_weights():
    """The matcher folds its weights at load time: equal to the plain path of its network; a
    snapshot, so an edited network needs a new FusedSuperGlue (which then follows the edit)."""
    net = random_net(41)
    sg = make_sg(net, precision="fp32")
    f0, f1, _ = homography_pair(42, n=40, n_out=5)
    data = batch_of(f0, f1)
    before = sg.net(data, sg.fused)["log_assignment"]
    torch.testing.assert_close(before, sg.net(data)["log_assignment"].detach(), atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        net.gnn.layers[1].mlp[3].weight.mul_(3.0)  # edit in place
    after = net(data, fused_of(net))["log_assignment"]
    torch.testing.assert_close(after, net(data)["log_assignment"].detach(), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(sg.net(data, sg.fused)["log_assignment"], before)  # the matcher's snapshot
    net.load_state_dict(random_net(43).state_dict())
    reloaded = net(data, fused_of(net))["log_assignment"]
    torch.testing.assert_close(reloaded, random_net(43)(data)["log_assignment"].detach(), atol=1e-4, rtol=1e-4)


def test_permuting_keypoints_permutes_matches():
    net = random_net(8)
    sg = make_sg(net)
    f0, f1, _ = homography_pair(9, n=120, n_out=30)
    g = torch.Generator().manual_seed(10)
    p0 = torch.randperm(len(f0), generator=g)
    p1 = torch.randperm(len(f1), generator=g)
    base = sg.match(f0, f1)
    perm = sg.match(f0.subset(p0), f1.subset(p1))
    assert len(base) > 80
    inv1 = torch.argsort(p1).numpy()
    expected = base.matches0[p0.numpy()]
    expected = np.where(expected >= 0, inv1[np.maximum(expected, 0)], -1)
    np.testing.assert_array_equal(perm.matches0, expected)
    np.testing.assert_allclose(perm.scores0, base.scores0[p0.numpy()], atol=1e-4)
    with torch.inference_mode():
        la = net(batch_of(f0, f1))["log_assignment"][0]
        la_p = net(batch_of(f0.subset(p0), f1.subset(p1)))["log_assignment"][0]
    idx0 = torch.cat([p0, torch.tensor([len(f0)])])
    idx1 = torch.cat([p1, torch.tensor([len(f1)])])
    torch.testing.assert_close(la_p, la[idx0][:, idx1], atol=1e-4, rtol=1e-4)


def test_swapping_images_transposes_the_result():
    # moderate score scale: Sinkhorn converges, so the row-first iteration order does not show
    net = random_net(11, sharp=0.4)
    f0, f1, _ = homography_pair(12, n=100, n_out=25)
    with torch.inference_mode():
        a = net({**batch_of(f0, f1), "sinkhorn_iterations": 200})
        b = net({**batch_of(f1, f0), "sinkhorn_iterations": 200})
    torch.testing.assert_close(b["log_assignment"][0], a["log_assignment"][0].T, atol=1e-3, rtol=1e-4)
    assert torch.equal(b["matches0"], a["matches1"]) and torch.equal(b["matches1"], a["matches0"])
    torch.testing.assert_close(b["matching_scores0"], a["matching_scores1"], atol=1e-4, rtol=1e-4)
    assert (a["matches0"] >= 0).sum() > 80


# ---------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------


def test_match_many_padded_batch_equals_separate_calls():
    net = random_net(13)
    sg = make_sg(net)
    f0, f1, _ = homography_pair(14, n=90, n_out=20)
    refs = [f1, f1.subset(np.arange(0, len(f1), 2)), random_features(33, 64, 15), f1.subset(np.arange(40)),
            Features.empty(64, (W, H))]
    many = sg.match_many(f0, refs)
    assert len(many) == len(refs)
    for ref, got in zip(refs, many):
        alone = sg.match(f0, ref)
        assert got.matches0.shape == (len(f0),)
        np.testing.assert_array_equal(got.matches0, alone.matches0)
        np.testing.assert_allclose(got.scores0, alone.scores0, atol=1e-4)
    assert len(many[0]) > 50 and (many[4].matches0 == -1).all()


def test_padded_forward_equals_unpadded_on_both_sides():
    net = random_net(16, sharp=0.4)  # moderate logits: float noise stays far below the tolerance
    pairs = [homography_pair(17 + i, n=n, n_out=k)[:2] for i, (n, k) in enumerate([(70, 10), (45, 30), (20, 5)])]
    sg = make_sg(net)
    batched = sg.match_pairs(pairs)
    for (f0, f1), got in zip(pairs, batched):
        alone = sg.match(f0, f1)
        np.testing.assert_array_equal(got.matches0, alone.matches0)
        np.testing.assert_allclose(got.scores0, alone.scores0, atol=1e-4)
    # network level: the real block of the padded log assignment equals the unpadded one
    kp0 = torch.zeros(3, 70, 2); kp1 = torch.zeros(3, 80, 2)
    de0 = torch.zeros(3, 70, 64); de1 = torch.zeros(3, 80, 64)
    sc0 = torch.zeros(3, 70); sc1 = torch.zeros(3, 80)
    mk0 = torch.zeros(3, 70, dtype=torch.bool); mk1 = torch.zeros(3, 80, dtype=torch.bool)
    for i, (f0, f1) in enumerate(pairs):
        a, c = len(f0), len(f1)
        kp0[i, :a], de0[i, :a], sc0[i, :a], mk0[i, :a] = f0.keypoints, f0.descriptors, f0.scores, True
        kp1[i, :c], de1[i, :c], sc1[i, :c], mk1[i, :c] = f1.keypoints, f1.descriptors, f1.scores, True
    size = torch.tensor([[W, H]] * 3, dtype=torch.float32)
    data = {"kpts0": kp0, "scores0": sc0, "desc0": de0, "mask0": mk0, "image_size0": size,
            "kpts1": kp1, "scores1": sc1, "desc1": de1, "mask1": mk1, "image_size1": size}
    for grad, scorer in ((False, fused_of(net)), (True, None)):
        with torch.set_grad_enabled(grad):
            out = net(data, scorer)
        for i, (f0, f1) in enumerate(pairs):
            a, c = len(f0), len(f1)
            with torch.no_grad():
                alone = net(batch_of(f0, f1))
            la = out["log_assignment"][i].detach()
            rows = torch.cat([torch.arange(a), torch.tensor([70])])
            cols = torch.cat([torch.arange(c), torch.tensor([80])])
            torch.testing.assert_close(la[rows][:, cols], alone["log_assignment"][0], atol=1e-4, rtol=1e-4)
            assert torch.isneginf(la[a:70]).all() and torch.isneginf(la[:, c:80]).all()
            assert (out["matches0"][i, a:] == -1).all() and (out["matches1"][i, c:] == -1).all()
            assert torch.equal(out["matches0"][i, :a], alone["matches0"][0])


def test_training_mode_with_padding_is_finite_and_batchnorm_ignores_padding():
    torch.manual_seed(18)
    (f0, f1, gt) = homography_pair(19, n=40, n_out=8)
    data = batch_of(f0, f1)
    padded = {}
    for k, v in data.items():
        if k.startswith(("kpts", "scores", "desc")):
            pad = torch.zeros((1, 9, *v.shape[2:]), dtype=v.dtype)
            padded[k] = torch.cat([v, pad], dim=1)
        else:
            padded[k] = v
    padded["mask0"] = torch.cat([torch.ones(1, len(f0), dtype=torch.bool), torch.zeros(1, 9, dtype=torch.bool)], 1)
    padded["mask1"] = torch.cat([torch.ones(1, len(f1), dtype=torch.bool), torch.zeros(1, 9, dtype=torch.bool)], 1)
    net_a, net_b = random_net(20).train(), random_net(20).train()
    out_a = net_a(data)
    out_b = net_b(padded)
    for (name, buf_a), buf_b in zip(net_a.named_buffers(), net_b.buffers()):
        torch.testing.assert_close(buf_b, buf_a, msg=f"BatchNorm buffer {name} differs with padding")
    rows = torch.arange(len(f0))
    cols = torch.as_tensor(np.where(gt >= 0, gt, len(f1)))
    loss = -out_b["log_assignment"][0, rows, cols].mean()
    loss.backward()
    grads = [p.grad for p in net_b.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out_b["log_assignment"][0, :len(f0) + 0][:, :len(f1)],
                               out_a["log_assignment"][0, :len(f0)][:, :len(f1)], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_nbt", [True, False])
def test_loads_official_key_layout_with_random_weights(with_nbt, tmp_path):
    sd = random_official_state_dict(seed=21, with_nbt=with_nbt)
    assert set(SuperGlueNet(**OFFICIAL).state_dict()) == set(official_shapes())
    sg = SuperGlue(SuperGlueConfig(), "cpu", state_dict=sd)
    assert sg.net.n_layers == 9 and len(sg.net.gnn.layers) == 18
    torch.testing.assert_close(sg.net.gnn.layers[17].attn.proj[2].weight, sd["gnn.layers.17.attn.proj.2.weight"])
    torch.testing.assert_close(sg.net.bin_score, sd["bin_score"])
    if not with_nbt:
        return
    # from a file, by path and by registered name in $SLAM_WEIGHTS_DIR
    torch.save(sd, tmp_path / "superglue_indoor.pth")
    by_path = SuperGlue(SuperGlueConfig(weights=str(tmp_path / "superglue_indoor.pth")), "cpu")
    torch.testing.assert_close(by_path.net.final_proj.weight, sd["final_proj.weight"])
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
        assert resolve_weights("superglue_indoor") == tmp_path / "superglue_indoor.pth"
        by_name = SuperGlue(SuperGlueConfig(weights="superglue_indoor"), "cpu")
        torch.testing.assert_close(by_name.net.final_proj.weight, sd["final_proj.weight"])
    finally:
        mp.undo()


def test_wrong_shape_or_missing_key_is_a_clear_error():
    sd = random_official_state_dict(seed=22)
    bad = dict(sd)
    bad["gnn.layers.3.attn.merge.weight"] = torch.zeros(256, 128, 1)
    with pytest.raises(WeightsError, match=r"gnn\.layers\.3\.attn\.merge\.weight.*\(256, 128, 1\).*\(256, 256, 1\)"):
        SuperGlue(SuperGlueConfig(), "cpu", state_dict=bad)
    missing = dict(sd)
    del missing["gnn.layers.5.mlp.1.running_var"]
    with pytest.raises(WeightsError, match=r"missing keys.*gnn\.layers\.5\.mlp\.1\.running_var"):
        SuperGlue(SuperGlueConfig(), "cpu", state_dict=missing)
    extra = dict(sd)
    extra["gnn.layers.0.attn.gate.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"unexpected keys.*attn\.gate\.weight"):
        SuperGlue(SuperGlueConfig(), "cpu", state_dict=extra)
    odd = {k: v for k, v in sd.items() if not k.startswith("gnn.layers.17.")}
    with pytest.raises(WeightsError, match="even"):
        SuperGlue(SuperGlueConfig(), "cpu", state_dict=odd)


def test_own_smaller_checkpoint_sets_the_architecture(tmp_path):
    net = random_net(23, **SMALL)
    path = tmp_path / "superglue_ours.pth"
    torch.save(net.checkpoint(step=10), path)
    sg = SuperGlue(SuperGlueConfig(weights=str(path)), "cpu")  # defaults say 9 layers / 256 dims
    assert sg.net.architecture() == net.architecture() and sg.net.n_layers == 2
    f0, f1, _ = homography_pair(24, n=60, n_out=10)
    with torch.inference_mode():
        a = net(batch_of(f0, f1))["log_assignment"]
    b = sg.net.eval()
    with torch.inference_mode():
        torch.testing.assert_close(b(batch_of(f0, f1))["log_assignment"], a)
    # a plain state dict of a smaller model: the layer count still comes from the keys
    sg2 = SuperGlue(SuperGlueConfig(num_heads=4), "cpu", state_dict=net.state_dict())
    assert sg2.net.n_layers == 2 and sg2.net.descriptor_dim == 64 and sg2.net.keypoint_encoder == [16, 32]


def test_missing_weights_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WeightsError, match=r"magicleap/SuperGluePretrainedNetwork.*|non-commercial") as err:
        SuperGlue(SuperGlueConfig(weights="superglue_outdoor"), "cpu")
    assert "non-commercial" in str(err.value) and "superglue_outdoor.pth" in str(err.value)
    with pytest.raises(WeightsError, match=r"tools/train_superglue\.py"):
        SuperGlue(SuperGlueConfig(weights="superglue_ours"), "cpu")
    with pytest.raises(WeightsError, match="does not exist"):
        SuperGlue(SuperGlueConfig(weights=str(tmp_path / "nope.pth")), "cpu")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        SuperGlue(SuperGlueConfig(weights=str(tmp_path / "junk.pth")), "cpu")


# ---------------------------------------------------------------------------------------------
# matcher behaviour
# ---------------------------------------------------------------------------------------------


def test_synthetic_homography_pair_is_matched_near_perfectly():
    # official size, PyTorch's random init, sharp final projection
    net = random_net(25, random_bn=False, **OFFICIAL)
    sg = make_sg(net)
    assert isinstance(sg, Matcher) and sg.name == "superglue"
    f0, f1, gt = homography_pair(26, n=250, n_out=60, dim=256)
    m = sg.match(f0, f1)
    pred = m.matches0
    correct = ((pred == gt) & (gt >= 0)).sum()
    precision = correct / max((pred >= 0).sum(), 1)
    recall = correct / (gt >= 0).sum()
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)
    assert m.scores0.dtype == np.float32 and (m.scores0[pred < 0] == 0).all()
    assert (m.scores0[pred >= 0] > 0.2).all() and (m.scores0 <= 1.0 + 1e-6).all()
    # matches are one-to-one
    used = pred[pred >= 0]
    assert len(np.unique(used)) == len(used)


def test_match_many_against_keyframes_with_different_homographies():
    net = random_net(27)
    sg = make_sg(net, max_batch=0)
    hs = [None, np.array([[1.0, 0.0, -40.0], [0.0, 1.0, 10.0], [0.0, 0.0, 1.0]]),
          np.array([[0.8, -0.1, 90.0], [0.1, 0.85, 30.0], [1e-4, 0.0, 1.0]])]
    f0 = None
    refs, gts = [], []
    for i, h in enumerate(hs):
        a, b, gt = homography_pair(28, n=150, n_out=20 + 10 * i, h01=h)
        f0 = a
        refs.append(b)
        gts.append(gt)
    for m, gt in zip(sg.match_many(f0, refs), gts):
        correct = ((m.matches0 == gt) & (gt >= 0)).sum()
        assert correct >= 0.95 * (gt >= 0).sum()
        assert correct >= 0.97 * len(m)
    chunked = make_sg(net, max_batch=2).match_many(f0, refs)
    for a, b in zip(chunked, sg.match_many(f0, refs)):
        np.testing.assert_array_equal(a.matches0, b.matches0)


def test_empty_and_unsuitable_inputs():
    sg = make_sg(random_net(29))
    f = random_features(20, 64, 30)
    empty = Features.empty(64, (W, H))
    m = sg.match(f, empty)
    assert m.matches0.shape == (20,) and (m.matches0 == -1).all() and (m.scores0 == 0).all()
    assert sg.match(empty, f).matches0.shape == (0,)
    orb = Features(f.keypoints, f.scores, torch.zeros(20, 32, dtype=torch.uint8), (W, H))
    with pytest.raises(ValueError, match="binary"):
        sg.match(orb, f)
    with pytest.raises(ValueError, match="128-dim"):
        sg.match(random_features(5, 128, 31), f)
    with pytest.raises(ValueError, match="image_size"):
        sg.match(Features(f.keypoints, f.scores, f.descriptors, (0, 0)), f)
    with pytest.raises(ValueError, match="precision"):
        make_sg(random_net(29), precision="fp8")


@pytest.mark.parametrize("vendor,avx512_bf16,want", [("AuthenticAMD", True, "bf16"), ("GenuineIntel", True, "fp32"),
                                                       ("AuthenticAMD", False, "fp32")])
def test_auto_precision_on_a_cpu_without_amx_follows_the_vendor_rule(monkeypatch, vendor, avx512_bf16, want):
    import slam.device as dev_mod

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(dev_mod, "cpu_vendor", lambda: vendor)
    net = random_net(3, descriptor_dim=32, n_layers=1, num_heads=2, keypoint_encoder=[8])
    assert make_sg(net, precision="auto").precision == want
    assert make_sg(net, precision="fp32").precision == "fp32"


@pytest.mark.slow
def test_bf16_stays_close_to_fp32():
    """bf16 (auto on CPUs with fast bf16 products: AMX, or AVX512-BF16 on AMD) loses a little: on
    this deliberately rough random network fp32 gets precision 0.95 / recall 0.92 and bf16 0.93 / 0.91; on real pairs bf16 keeps
    >= 99 % of fp32's matches (tools/superglue_bf16_agreement.py, docs/benchmarks.md)."""
    net = random_net(32, **OFFICIAL)
    f0, f1, gt = homography_pair(33, n=200, n_out=40, dim=256)
    a = make_sg(net, precision="fp32").match(f0, f1)
    b = make_sg(net, precision="bf16").match(f0, f1)
    assert make_sg(net, precision="auto").precision == ("bf16" if fast_cpu_bf16_matmul() else "fp32")

    def pr(m):
        correct = ((m.matches0 == gt) & (gt >= 0)).sum()
        return correct / max(len(m), 1), correct / (gt >= 0).sum()

    (pa, ra), (pb, rb) = pr(a), pr(b)
    assert pb >= pa - 0.04 and rb >= ra - 0.04, (pa, ra, pb, rb)
    assert (a.matches0 == b.matches0).mean() >= 0.95


@pytest.mark.gpu
def test_cuda_fp16_agrees_with_cpu_fp32():
    net = random_net(34, **OFFICIAL)
    f0, f1, _ = homography_pair(35, n=300, n_out=50, dim=256)
    cpu = make_sg(net, precision="fp32").match(f0, f1)
    c = SuperGlueConfig(precision="auto")
    gpu = SuperGlue(c, "cuda", state_dict=net.state_dict())
    assert gpu.precision == "fp16"
    out = gpu.match(f0.to("cuda"), f1.to("cuda"))
    assert (out.matches0 == cpu.matches0).mean() >= 0.98
    many = gpu.match_many(f0.to("cuda"), [f1.to("cuda"), f1.subset(np.arange(100)).to("cuda")])
    np.testing.assert_array_equal(many[0].matches0, out.matches0)
