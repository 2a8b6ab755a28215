"""LightGlue: weight layouts, equality with an independent dense reference, adaptivity, batching.

Fast tests use randomly initialised networks on synthetic keypoints. Tests that need the
released aliked_lightglue weights skip when they are not installed
(``python -m slam weights install aliked_lightglue``).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slam.errors import WeightsError
from slam.matching.base import Matcher
from slam.matching.lightglue import (
    LightGlue,
    LightGlueConfig,
    LightGlueNet,
    adaptivity,
    architecture,
    confidence_threshold,
    convert_state_dict,
    filter_matches,
)
from slam.types import Features
from slam.weights import resolve_weights

W, H = 640, 480

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_net(seed: int = 0, **kw) -> LightGlueNet:
    torch.manual_seed(seed)
    cfg = LightGlueConfig(**kw)
    return LightGlueNet.from_cfg(cfg).eval()


def _easy_pair(n0: int = 160, n1: int = 140, n_common: int = 120, seed: int = 1, shift=(12.0, -7.0)):
    """Keypoints in a 640x480 image; image 1 sees n_common of them shifted, plus outliers.

    Returns k0 (n0,2), k1 (n1,2), d0 (n0,128), d1 (n1,128), gt (n0,) index into image 1 or -1.
    """
    g = torch.Generator().manual_seed(seed)
    k0 = torch.rand(n0, 2, generator=g) * torch.tensor([W, H])
    d0 = F.normalize(torch.randn(n0, 128, generator=g), dim=-1)
    common = torch.randperm(n0, generator=g)[:n_common]
    k1 = torch.rand(n1, 2, generator=g) * torch.tensor([W, H])
    d1 = F.normalize(torch.randn(n1, 128, generator=g), dim=-1)
    slots = torch.randperm(n1, generator=g)[:n_common]
    k1[slots] = k0[common] + torch.tensor(shift) + 0.5 * torch.randn(n_common, 2, generator=g)
    d1[slots] = F.normalize(d0[common] + 0.03 * torch.randn(n_common, 128, generator=g), dim=-1)
    gt = torch.full((n0,), -1, dtype=torch.long)
    gt[common] = slots
    return k0, k1, d0, d1, gt


def _features(k: torch.Tensor, d: torch.Tensor, size=(W, H)) -> Features:
    return Features(k.float(), torch.ones(len(k)), d.float(), size)


def _real_state_dict(name: str = "aliked_lightglue") -> dict:
    try:
        path = resolve_weights(name)
    except WeightsError as exc:
        pytest.skip(str(exc))
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- independent reference


def _reference_match(sd: dict, k0, k1, d0, d1, size, heads=4, threshold=0.1):
    """Plain dense LightGlue for one pair, all layers, written from the paper's equations.

    Rotary encoding as complex rotation of channel pairs; explicit softmax attention.
    Returns matches0 (M,) numpy, scores0 (M,) numpy.
    """
    sd = convert_state_dict(sd)

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    def ffn(x, msg, name):
        h = lin(torch.cat([x, msg], -1), name + ".ffn.0")
        h = F.layer_norm(h, h.shape[-1:], sd[name + ".ffn.1.weight"], sd[name + ".ffn.1.bias"])
        return x + lin(F.gelu(h), name + ".ffn.3")

    size = torch.tensor(size, dtype=torch.float32)

    def rot(pts):  # complex phases e^{i theta}, theta = Wr p, one per channel pair
        p = (pts - size / 2) / (size.max() / 2)
        return torch.polar(torch.ones(1), p @ sd["posenc.Wr.weight"].T)  # (N, c/2)

    def rotate(t, ph):  # t (H,N,c) real -> rotate each channel pair (2k, 2k+1) by ph[:, k]
        z = torch.view_as_complex(t.reshape(*t.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(z * ph).flatten(-2)

    def attn(q, k, v):
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        return a @ v

    x0 = lin(d0, "input_proj")
    x1 = lin(d1, "input_proj")
    ph0, ph1 = rot(k0), rot(k1)
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformers."))
    for i in range(n_layers):
        pre = f"transformers.{i}.self_attn"
        new = []
        for x, ph in ((x0, ph0), (x1, ph1)):
            qkv = lin(x, pre + ".Wqkv").reshape(len(x), heads, -1, 3).permute(1, 0, 2, 3)  # (H,N,c,3)
            q, k, v = rotate(qkv[..., 0], ph), rotate(qkv[..., 1], ph), qkv[..., 2]
            msg = attn(q, k, v).permute(1, 0, 2).reshape(len(x), -1)
            new.append(ffn(x, lin(msg, pre + ".out_proj"), pre))
        x0, x1 = new
        pre = f"transformers.{i}.cross_attn"
        qk0 = lin(x0, pre + ".to_qk").reshape(len(x0), heads, -1).transpose(0, 1)
        qk1 = lin(x1, pre + ".to_qk").reshape(len(x1), heads, -1).transpose(0, 1)
        v0 = lin(x0, pre + ".to_v").reshape(len(x0), heads, -1).transpose(0, 1)
        v1 = lin(x1, pre + ".to_v").reshape(len(x1), heads, -1).transpose(0, 1)
        m0 = attn(qk0, qk1, v1).transpose(0, 1).reshape(len(x0), -1)
        m1 = attn(qk1, qk0, v0).transpose(0, 1).reshape(len(x1), -1)
        x0, x1 = ffn(x0, lin(m0, pre + ".to_out"), pre), ffn(x1, lin(m1, pre + ".to_out"), pre)
    pre = f"log_assignment.{n_layers - 1}"
    dim = x0.shape[-1]
    f0, f1 = lin(x0, pre + ".final_proj") / dim ** 0.25, lin(x1, pre + ".final_proj") / dim ** 0.25
    s = f0 @ f1.T
    z0, z1 = lin(x0, pre + ".matchability"), lin(x1, pre + ".matchability")
    logp = s.log_softmax(1) + s.log_softmax(0) + F.logsigmoid(z0) + F.logsigmoid(z1).T
    p = logp.exp().numpy()
    best1, best0 = p.argmax(1), p.argmax(0)
    m = np.full(len(p), -1)
    sc = np.zeros(len(p), np.float32)
    for i, j in enumerate(best1):
        if best0[j] == i and p[i, j] > threshold:
            m[i], sc[i] = j, p[i, j]
    return m, sc


# ----------------------------------------------------------------------------- loading


def _to_old_layout(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "transformers":
            k = ".".join([parts[2], parts[1]] + parts[3:])  # transformers.i.self_attn.X -> self_attn.i.X
        out[k] = v
    return out


def test_loads_new_and_old_key_layouts():
    net = _random_net(0)
    sd_new = net.state_dict()
    assert any(k.startswith("transformers.3.cross_attn.") for k in sd_new)
    sd_old = _to_old_layout(sd_new)
    assert "self_attn.3.Wqkv.weight" in sd_old and not any(k.startswith("transformers.") for k in sd_old)
    sd_old["log_assignment.0.r"] = torch.zeros(1)  # present in disk_lightglue.pth, unused
    k0, k1, d0, d1, _ = _easy_pair()
    size = torch.tensor([[W, H]], dtype=torch.float32)
    outs = []
    for sd in (sd_new, sd_old):
        other = _random_net(123)
        other.load_cvg_state_dict(sd)
        for name, p in other.state_dict().items():
            assert torch.equal(p, sd_new[name]), name
        with torch.no_grad():
            outs.append(other(k0[None], k1[None], d0[None], d1[None], size, size))
    assert torch.equal(outs[0]["matches0"], outs[1]["matches0"])


def test_bad_state_dict_error_names_the_problem():
    sd = _random_net(0).state_dict()
    del sd["transformers.2.self_attn.Wqkv.weight"]
    with pytest.raises(WeightsError, match="missing 1 keys.*transformers.2.self_attn.Wqkv.weight"):
        _random_net(1).load_cvg_state_dict(sd, "bad.pth")
    sd = _random_net(0, n_layers=5).state_dict()
    with pytest.raises(ValueError, match="5 transformer layers but lightglue.n_layers=9"):
        LightGlue(LightGlueConfig(n_layers=9), "cpu", state_dict=sd)
    assert LightGlue(LightGlueConfig(), "cpu", state_dict=sd).net.n_layers == 5  # 0 = from the weights


def test_released_weights_load_in_both_layouts():
    sd_aliked = _real_state_dict("aliked_lightglue")
    sd_disk = _real_state_dict("disk_lightglue")
    assert any(k.startswith("transformers.0.") for k in sd_aliked)  # new layout
    assert any(k.startswith("self_attn.0.") for k in sd_disk)  # old layout
    for features, sd in (("aliked", sd_aliked), ("disk", sd_disk)):
        lg = LightGlue(LightGlueConfig(features=features), "cpu")
        assert lg.descriptor_dim == 128
        assert torch.equal(lg.net.transformers[8].cross_attn.to_qk.weight, convert_state_dict(sd)["transformers.8.cross_attn.to_qk.weight"])


def test_missing_weights_error_gives_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="python -m slam weights install disk_lightglue"):
        LightGlue(LightGlueConfig(features="disk"), "cpu")
    with pytest.raises(ValueError, match="lightglue.features='orb'") as info:
        LightGlue(LightGlueConfig(features="orb"), "cpu")
    assert "needs float descriptors" in str(info.value) and "--features aliked" in str(info.value)


def test_feature_checkpoint_as_lightglue_weights_is_named(tmp_path):
    """A feature checkpoint in lightglue.weights: say it is not a LightGlue file (not 'n_layers=0')."""
    path = tmp_path / "aliked-n16.pth"
    torch.save({"block1.conv1.weight": torch.zeros(16, 3, 3, 3), "desc_head.agg_weights": torch.zeros(16, 128, 128)}, path)
    with pytest.raises(WeightsError, match=r"aliked-n16\.pth is not a LightGlue checkpoint.*ALIKED") as info:
        LightGlue(LightGlueConfig(weights=str(path)), "cpu")
    assert "n_layers" not in str(info.value)


# ----------------------------------------------------------------------------- maths


def test_confidence_threshold_schedule():
    th = [confidence_threshold(i, 9) for i in range(9)]
    assert th[0] == pytest.approx(0.9)
    assert all(a > b for a, b in zip(th, th[1:]))
    assert th[-1] > 0.8


def test_filter_matches_mutual_and_threshold():
    p = torch.tensor([[0.7, 0.1, 0.0], [0.6, 0.05, 0.0], [0.0, 0.0, 0.08]])
    m0, m1, s0, s1 = filter_matches(p.log()[None], 0.1)
    assert m0[0].tolist() == [0, -1, -1]  # row 1 is not mutual, row 2 is below the threshold
    assert m1[0].tolist() == [0, -1, -1]
    assert s0[0, 0].item() == pytest.approx(0.7) and s0[0, 1].item() == 0 and s0[0, 2].item() == 0


@pytest.mark.parametrize("flash", [True, False])
def test_full_model_equals_dense_reference(flash):
    # threshold 0: a random network's match probabilities are all below the default 0.1
    net = _random_net(3, depth_confidence=-1, width_confidence=-1, flash=flash, filter_threshold=0.0)
    k0, k1, d0, d1, _ = _easy_pair(90, 70, 50)
    size = torch.tensor([[W, H]], dtype=torch.float32)
    with torch.no_grad():
        out = net(k0[None], k1[None], d0[None], d1[None], size, size)
        ref_m, ref_s = _reference_match(net.state_dict(), k0, k1, d0, d1, (W, H), threshold=0.0)
    assert (ref_m >= 0).sum() > 10
    assert out["stop"].item() == 9
    assert (out["prune0"] == 9).all()
    np.testing.assert_array_equal(out["matches0"][0].numpy(), ref_m)
    np.testing.assert_allclose(out["matching_scores0"][0].numpy(), ref_s, atol=1e-4)


def test_folded_output_projection_follows_changed_weights_and_equals_the_unfolded_path():
    """Without gradients each block folds its output projection into the MLP's first layer
    (_message_update). The folded weights are rebuilt when the weights change in place (the
    result equals the dense reference of the new weights), and the folded result equals the
    unfolded one that runs with gradients."""
    net = _random_net(5, depth_confidence=-1, width_confidence=-1, filter_threshold=0.0)  # a random net's scores are small
    k0, k1, d0, d1, _ = _easy_pair(80, 60, 40)
    size = torch.tensor([[W, H]], dtype=torch.float32)
    with torch.no_grad():
        net(k0[None], k1[None], d0[None], d1[None], size, size)  # builds the folded weights
        for layer in net.transformers:
            layer.self_attn.out_proj.weight.mul_(-0.7)
            layer.cross_attn.to_out.bias.add_(0.3)
        out = net(k0[None], k1[None], d0[None], d1[None], size, size)
        ref_m, ref_s = _reference_match(net.state_dict(), k0, k1, d0, d1, (W, H), threshold=0.0)
    assert (ref_m >= 0).sum() > 10
    np.testing.assert_array_equal(out["matches0"][0].numpy(), ref_m)
    np.testing.assert_allclose(out["matching_scores0"][0].numpy(), ref_s, atol=1e-4)
    with torch.enable_grad():
        grad = net(k0[None], k1[None], d0[None].requires_grad_(), d1[None], size, size)
    np.testing.assert_array_equal(grad["matches0"][0].numpy(), out["matches0"][0].numpy())
    np.testing.assert_allclose(grad["matching_scores0"][0].detach().numpy(), out["matching_scores0"][0].numpy(), atol=1e-5)


def test_released_weights_equal_dense_reference_and_find_true_matches():
    sd = _real_state_dict()
    lg = LightGlue(LightGlueConfig(depth_confidence=-1, width_confidence=-1), "cpu", state_dict=sd)
    k0, k1, d0, d1, gt = _easy_pair(120, 100, 80)
    m = lg.match(_features(k0, d0), _features(k1, d1))
    with torch.no_grad():
        ref_m, _ = _reference_match(sd, k0, k1, d0, d1, (W, H))
    np.testing.assert_array_equal(m.matches0, ref_m)
    found = m.matches0 >= 0
    assert found.sum() >= 0.8 * (gt >= 0).sum()
    assert (m.matches0[found] == gt.numpy()[found]).mean() > 0.95


# ----------------------------------------------------------------------------- adaptivity


def test_early_exit_disabled_gives_the_full_models_matches():
    """The adaptive code path with exit and pruning off is the full model."""
    net = _random_net(4, depth_confidence=-1, width_confidence=-1)
    sd = net.state_dict()
    k0, k1, d0, d1, _ = _easy_pair()
    full = LightGlue(LightGlueConfig(depth_confidence=-1, width_confidence=-1), "cpu", state_dict=sd)
    # make every point look confident: with exit on this would stop after layer 1
    sd_conf = {k: (v + 50 if k.startswith("token_confidence") and k.endswith("bias") else v) for k, v in sd.items()}
    no_exit = LightGlue(LightGlueConfig(depth_confidence=-1, width_confidence=-1), "cpu", state_dict=sd_conf)
    with_exit = LightGlue(LightGlueConfig(depth_confidence=0.95, width_confidence=-1), "cpu", state_dict=sd_conf)
    a = full.match(_features(k0, d0), _features(k1, d1))
    b = no_exit.match(_features(k0, d0), _features(k1, d1))
    c = with_exit.match(_features(k0, d0), _features(k1, d1))
    assert c.matches0.shape == a.matches0.shape  # an early exit still answers for every keypoint
    np.testing.assert_array_equal(a.matches0, b.matches0)
    np.testing.assert_allclose(a.scores0, b.scores0, atol=1e-6)
    assert no_exit.last_info["stop"] == [9]
    assert with_exit.last_info["stop"] == [1]


def test_early_exit_on_easy_pair_with_released_weights():
    sd = _real_state_dict()
    k0, k1, d0, d1, gt = _easy_pair(200, 180, 160)
    f0, f1 = _features(k0, d0), _features(k1, d1)
    full = LightGlue(LightGlueConfig(depth_confidence=-1, width_confidence=-1), "cpu", state_dict=sd)
    adaptive = LightGlue(LightGlueConfig(), "cpu", state_dict=sd)
    a, b = full.match(f0, f1), adaptive.match(f0, f1)
    assert full.last_info["stop"] == [9]
    assert adaptive.last_info["stop"][0] < 9
    both = (a.matches0 >= 0) | (b.matches0 >= 0)
    assert (a.matches0[both] == b.matches0[both]).mean() > 0.9
    assert len(b) >= 0.8 * (gt >= 0).sum()


def test_pruned_points_come_out_unmatched():
    # random weights: matchability ~ 0.5, so width_confidence=0.5 prunes about half the points
    net = _random_net(5, depth_confidence=-1, width_confidence=0.5)
    k0, k1, d0, d1, _ = _easy_pair()
    size = torch.tensor([[W, H]], dtype=torch.float32)
    with torch.no_grad():
        out = net(k0[None], k1[None], d0[None], d1[None], size, size)
    stop = out["stop"].item()
    pruned0 = out["prune0"][0] < stop
    pruned1 = out["prune1"][0] < stop
    assert 0 < pruned0.sum() < len(k0) and pruned1.sum() > 0
    assert (out["matches0"][0][pruned0] == -1).all()
    assert (out["matches1"][0][pruned1] == -1).all()
    assert (out["matching_scores0"][0][pruned0] == 0).all()
    m0 = out["matches0"][0]
    assert not torch.isin(torch.nonzero(pruned1).squeeze(1), m0[m0 >= 0]).any()


def test_pruning_with_released_weights_removes_outliers_only():
    sd = _real_state_dict()
    k0, k1, d0, d1, gt = _easy_pair(300, 200, 100)  # 200 points of image 0 have no partner
    out = LightGlue(LightGlueConfig(depth_confidence=-1, width_confidence=0.99), "cpu", state_dict=sd)
    m = out.match(_features(k0, d0), _features(k1, d1))
    assert out.last_info["pruned0"][0] > 50
    correct = (m.matches0 >= 0) & (m.matches0 == gt.numpy())
    assert correct.sum() >= 0.8 * (gt >= 0).sum()


# ----------------------------------------------------------------------------- batching


def _check_batched_equals_single(lg: LightGlue, query: Features, refs: list[Features]):
    many = lg.match_many(query, refs)
    stops = list(lg.last_info["stop"])
    assert len(many) == len(refs)
    for j, r in enumerate(refs):
        one = lg.match(query, r)
        assert lg.last_info["stop"] == [stops[j]]
        assert many[j].matches0.shape == (len(query),)
        np.testing.assert_array_equal(many[j].matches0, one.matches0)
        np.testing.assert_allclose(many[j].scores0, one.scores0, atol=1e-4)
    return stops


def test_match_many_equals_single_pairs_with_per_pair_pruning():
    net = _random_net(6)
    lg = LightGlue(LightGlueConfig(depth_confidence=-1, width_confidence=0.5), "cpu", state_dict=net.state_dict())
    assert isinstance(lg, Matcher)
    k0, k1, d0, d1, _ = _easy_pair(150, 130, 100, seed=2)
    k2, _, d2, _, _ = _easy_pair(90, 10, 5, seed=3)
    query = _features(k0, d0)
    refs = [_features(k1, d1), _features(k2, d2, size=(320, 240)), Features.empty(128, (W, H)), _features(k1[:7], d1[:7])]
    stops = _check_batched_equals_single(lg, query, refs)
    assert stops[2] == 0  # empty reference: nothing to do
    assert len(lg.match_many(query, refs)[2]) == 0


def test_match_many_with_released_weights_stops_per_pair():
    sd = _real_state_dict()
    lg = LightGlue(LightGlueConfig(), "cpu", state_dict=sd)
    k0, k1, d0, d1, _ = _easy_pair(160, 150, 140, seed=4)
    g = torch.Generator().manual_seed(9)
    d_hard = F.normalize(d1 + 0.1 * torch.randn(d1.shape, generator=g), dim=-1)  # noisier descriptors
    refs = [_features(k1, d1), _features(k1, d_hard), _features(k1[:60], d1[:60])]
    stops = _check_batched_equals_single(lg, _features(k0, d0), refs)
    assert stops[0] < stops[1] <= 9


def test_rejects_wrong_descriptors():
    lg = LightGlue(LightGlueConfig(), "cpu", state_dict=_random_net(0).state_dict())
    k0, k1, d0, d1, _ = _easy_pair()
    with pytest.raises(ValueError, match="256-D descriptors but these LightGlue weights expect 128-D"):
        lg.match(_features(k0, torch.cat([d0, d0], 1)), _features(k1, d1))
    binary = Features(k1, torch.ones(len(k1)), torch.zeros(len(k1), 32, dtype=torch.uint8), (W, H))
    with pytest.raises(ValueError, match="binary"):
        lg.match(_features(k0, d0), binary)
    m = lg.match(Features.empty(128, (W, H)), _features(k1, d1))
    assert m.matches0.shape == (0,)


# ----------------------------------------------------------------------------- real data


@pytest.mark.needs_data
@pytest.mark.slow
def test_churchill_homography_precision(shared_data: Path):
    cv2 = pytest.importorskip("cv2")
    aliked = pytest.importorskip("slam.features.aliked")
    sd = _real_state_dict()
    try:
        ext = aliked.ALIKED(aliked.ALIKEDConfig(max_keypoints=512), "cpu")
    except WeightsError as exc:
        pytest.skip(str(exc))
    root = shared_data / "pairs" / "churchill"
    if not (root / "H_1_3").is_file():
        pytest.skip(f"{root} has no H_1_3")
    img0, img1 = cv2.imread(str(root / "1.png")), cv2.imread(str(root / "3.png"))
    h_1_3 = np.loadtxt(root / "H_1_3")
    f0, f1 = ext.extract_batch([img0, img1]) if img0.shape == img1.shape else (ext.extract(img0), ext.extract(img1))
    lg = LightGlue(LightGlueConfig(), "cpu", state_dict=sd)
    pairs = lg.match(f0, f1).pairs()
    assert len(pairs) >= 100
    p0 = f0.keypoints_np[pairs[:, 0]]
    p1 = f1.keypoints_np[pairs[:, 1]]
    proj = np.c_[p0, np.ones(len(p0))] @ h_1_3.T
    err = np.linalg.norm(proj[:, :2] / proj[:, 2:] - p1, axis=1)
    assert (err < 3.0).mean() >= 0.9


def test_precision_setting_is_validated():
    sd = _random_net(0).state_dict()
    with pytest.raises(ValueError, match="precision='fp8' is not valid"):
        LightGlue(LightGlueConfig(precision="fp8"), "cpu", state_dict=sd)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        LightGlue(LightGlueConfig(precision="fp16"), "cpu", state_dict=sd)


@pytest.mark.gpu
def test_cuda_fp16_agrees_with_cpu_fp32():
    sd = _real_state_dict()
    k0, k1, d0, d1, _ = _easy_pair(400, 380, 300)
    cpu = LightGlue(LightGlueConfig(), "cpu", state_dict=sd).match(_features(k0, d0), _features(k1, d1))
    lg = LightGlue(LightGlueConfig(precision="auto"), "cuda", state_dict=sd)
    gpu = lg.match(_features(k0, d0).to("cuda"), _features(k1, d1).to("cuda"))
    either = (cpu.matches0 >= 0) | (gpu.matches0 >= 0)
    assert (cpu.matches0[either] == gpu.matches0[either]).mean() > 0.9


# ----------------------------------------------------------------------------- LighterGlue (XFeat)


def _lighterglue_file(net: LightGlueNet) -> dict:
    """A state dict in the layout of xfeat_lighterglue: matcher under 'matcher.', plus a bundled extractor."""
    sd = {f"matcher.{k}": v for k, v in net.state_dict().items()}
    sd["extractor.model.net.block1.0.layer.0.weight"] = torch.zeros(4, 1, 3, 3)
    return sd


def _pair64(*args, **kwargs):
    k0, k1, d0, d1, gt = _easy_pair(*args, **kwargs)
    return k0, k1, F.normalize(d0[:, :64], dim=-1), F.normalize(d1[:, :64], dim=-1), gt


def test_lighterglue_sizes_come_from_the_weights_and_equal_dense_reference():
    torch.manual_seed(7)
    net = LightGlueNet(n_layers=2, num_heads=1, descriptor_dim=96, input_dim=64,
                       depth_confidence=-1, width_confidence=-1).eval()
    sd = _lighterglue_file(net)
    assert architecture(convert_state_dict(sd)) == {"n_layers": 2, "num_heads": 1, "descriptor_dim": 96, "input_dim": 64}
    lg = LightGlue(LightGlueConfig(features="xfeat", width_confidence=-1), "cpu", state_dict=sd)
    assert (lg.net.n_layers, lg.descriptor_dim, lg.net.posenc.Wr.weight.shape) == (2, 64, (48, 2))
    k0, k1, d0, d1, _ = _pair64(80, 70, 50)
    m = lg.match(_features(k0, d0), _features(k1, d1))
    with torch.no_grad():
        ref_m, ref_s = _reference_match(net.state_dict(), k0, k1, d0, d1, (W, H), heads=1)
    np.testing.assert_array_equal(m.matches0, ref_m)
    np.testing.assert_allclose(m.scores0, ref_s, atol=1e-4)
    with pytest.raises(ValueError, match="1 attention heads but lightglue.num_heads=4"):
        LightGlue(LightGlueConfig(features="xfeat", num_heads=4), "cpu", state_dict=sd)
    with pytest.raises(ValueError, match="64-D"):
        lg.match(_features(*_easy_pair(10, 10, 5)[0::2]), _features(*_easy_pair(10, 10, 5)[1::2]))


def test_adaptivity_defaults_follow_the_extractor():
    assert adaptivity(LightGlueConfig(features="xfeat")) == (-1.0, 0.95)  # LighterGlue as published
    assert adaptivity(LightGlueConfig(features="aliked")) == (0.95, 0.99)
    assert adaptivity(LightGlueConfig(features="xfeat", depth_confidence=0.9, width_confidence=-1)) == (0.9, -1.0)
    net = LightGlueNet.from_cfg(LightGlueConfig(features="xfeat"))
    assert (net.depth_confidence, net.width_confidence, net.n_layers) == (-1.0, 0.95, 9)


def test_released_lighterglue_weights_load_and_find_true_matches():
    sd = _real_state_dict("xfeat_lighterglue")
    assert any(k.startswith("extractor.") for k in sd) and any(k.startswith("matcher.") for k in sd)
    lg = LightGlue(LightGlueConfig(features="xfeat"), "cpu")
    assert (lg.net.n_layers, lg.descriptor_dim, lg.net.depth_confidence, lg.net.width_confidence) == (6, 64, -1.0, 0.95)
    assert lg.net.transformers[0].self_attn.heads == 1 and lg.net.input_proj.weight.shape == (96, 64)
    torch.testing.assert_close(lg.net.transformers[5].cross_attn.to_qk.weight, sd["matcher.transformers.5.cross_attn.to_qk.weight"])
    full = LightGlue(LightGlueConfig(features="xfeat", width_confidence=-1), "cpu")
    k0, k1, d0, d1, gt = _pair64(120, 100, 80)
    m = full.match(_features(k0, d0), _features(k1, d1))
    with torch.no_grad():
        ref_m, _ = _reference_match(convert_state_dict(sd), k0, k1, d0, d1, (W, H), heads=1)
    np.testing.assert_array_equal(m.matches0, ref_m)
    found = m.matches0 >= 0
    assert found.sum() >= 0.4 * (gt >= 0).sum()  # random 64-D descriptors are far from what it was trained on
    assert (m.matches0[found] == gt.numpy()[found]).mean() > 0.95
