"""SuperPoint front-end: maths against plain reference code, weight formats, invariants.

All tests use random weights in Magic Leap's key layout (no real weights needed) and small
synthetic images, so they run in seconds on a CPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slam.errors import SlamError
from slam.features.base import Extractor
from slam.features.superpoint import (
    SuperPoint,
    SuperPointConfig,
    SuperPointNet,
    WeightsError,
    heatmap_from_logits,
    load_superpoint_weights,
    nms,
    sample_descriptors,
)

OFFICIAL_LAYERS = {  # name: (out, in, k) of Magic Leap's superpoint_v1.pth
    "conv1a": (64, 1, 3), "conv1b": (64, 64, 3), "conv2a": (64, 64, 3), "conv2b": (64, 64, 3),
    "conv3a": (128, 64, 3), "conv3b": (128, 128, 3), "conv4a": (128, 128, 3), "conv4b": (128, 128, 3),
    "convPa": (256, 128, 3), "convPb": (65, 256, 1), "convDa": (256, 128, 3), "convDb": (256, 256, 1),
}
OPEN_NAMES = {  # glue-factory "SuperPoint open" module prefix for each official layer
    "conv1a": "backbone.0.0", "conv1b": "backbone.0.1", "conv2a": "backbone.1.0", "conv2b": "backbone.1.1",
    "conv3a": "backbone.2.0", "conv3b": "backbone.2.1", "conv4a": "backbone.3.0", "conv4b": "backbone.3.1",
    "convPa": "detector.0", "convPb": "detector.1", "convDa": "descriptor.0", "convDb": "descriptor.1",
}


def random_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """He-normal random weights in the official layout, detector logits scaled up so the
    heatmap has clear peaks (like a trained model) instead of being nearly flat."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (cout, cin, k) in OFFICIAL_LAYERS.items():
        std = (2.0 / (cin * k * k)) ** 0.5 * (4.0 if name == "convPb" else 1.0)
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * std
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01
    return sd


def random_open_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in glue-factory's open layout (conv + BatchNorm per block)."""
    g = torch.Generator().manual_seed(seed + 100)
    sd = {}
    for name, (cout, cin, k) in OFFICIAL_LAYERS.items():
        p = OPEN_NAMES[name]
        std = (2.0 / (cin * k * k)) ** 0.5 * (3.0 if name == "convPb" else 1.0)
        sd[f"{p}.conv.weight"] = torch.randn(cout, cin, k, k, generator=g) * std
        sd[f"{p}.conv.bias"] = torch.randn(cout, generator=g) * 0.01
        sd[f"{p}.bn.weight"] = 1.0 + 0.2 * torch.randn(cout, generator=g)
        sd[f"{p}.bn.bias"] = 0.1 * torch.randn(cout, generator=g)
        sd[f"{p}.bn.running_mean"] = 0.1 * torch.randn(cout, generator=g)
        sd[f"{p}.bn.running_var"] = 0.5 + torch.rand(cout, generator=g)
        sd[f"{p}.bn.num_batches_tracked"] = torch.tensor(1000)
    return sd


def make_image(h: int, w: int, seed: int = 0, color: bool = False) -> np.ndarray:
    """Blurred noise plus a few bright squares: many well separated maxima."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 1, (h, w))
    k = np.array([1, 4, 6, 4, 1], float) / 16
    img = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, img)
    img = np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, img)
    img = (img - img.min()) / (np.ptp(img) + 1e-9) * 200
    for _ in range(4):
        y, x = rng.integers(0, h), rng.integers(0, w)
        img[y:y + 6, x:x + 6] = 255
    img = img.astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2) if color else img


@pytest.fixture(scope="module")
def official_sd() -> dict[str, torch.Tensor]:
    return random_official_state_dict(0)


def make(sd, **kw) -> SuperPoint:
    kw.setdefault("precision", "fp32")
    return SuperPoint(SuperPointConfig(**kw), torch.device("cpu"), state_dict=sd)


# ----------------------------------------------------------------------------- plain reference


def reference_forward(sd: dict, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Plain float64 statement of the network on the zero-padded image (multiple of 8).
    Returns logits (65, h, w), raw dense descriptors (256, h, w), padded (H, W)."""
    height, width = gray.shape
    ph, pw = -(-height // 8) * 8, -(-width // 8) * 8
    x = np.zeros((ph, pw))
    x[:height, :width] = gray / 255.0
    t = torch.from_numpy(x)[None, None]

    def conv(t, name, relu=True):
        w = sd[f"{name}.weight"].double()
        t = F.conv2d(t, w, sd[f"{name}.bias"].double(), padding=w.shape[-1] // 2)
        return torch.relu(t) if relu else t

    for i, name in enumerate(["conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b"]):
        t = conv(t, name)
        if i in (1, 3, 5):
            t = F.max_pool2d(t, 2)
    logits = conv(conv(t, "convPa"), "convPb", relu=False)[0].numpy()
    dense = conv(conv(t, "convDa"), "convDb", relu=False)[0].numpy()
    return logits, dense, (ph, pw)


def reference_heatmap(logits: np.ndarray) -> np.ndarray:
    """Dense softmax over 65 channels, drop the dustbin, depth-to-space by explicit indexing."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    prob = e / e.sum(axis=0, keepdims=True)
    _, h, w = logits.shape
    heat = np.zeros((h * 8, w * 8))
    for c in range(64):
        heat[c // 8::8, c % 8::8] = prob[c]  # channel c -> row offset c // 8, column offset c % 8
    return heat


def window_max(a: np.ndarray, r: int) -> np.ndarray:
    h, w = a.shape
    out = np.empty_like(a)
    for y in range(h):
        for x in range(w):
            out[y, x] = a[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].max()
    return out


def reference_nms(heat: np.ndarray, r: int) -> np.ndarray:
    """Brute force: maxima of their window; then twice: suppress the surroundings of kept
    maxima and add the maxima among what is left."""
    keep = heat == window_max(heat, r)
    for _ in range(2):
        supp = window_max(keep.astype(float), r) > 0
        rest = np.where(supp, 0.0, heat)
        keep = keep | ((rest == window_max(rest, r)) & ~supp)
    return np.where(keep, heat, 0.0)


def reference_keypoints(sd, gray, threshold=0.005, r=4, border=4):
    logits, dense, _ = reference_forward(sd, gray)
    height, width = gray.shape
    heat = reference_heatmap(logits)
    heat[height:] = 0  # the zero padding added to reach a multiple of 8 takes no part in the NMS
    heat[:, width:] = 0
    heat = reference_nms(heat, r)
    ys, xs = np.nonzero(heat > threshold)
    ok = (xs >= border) & (xs < width - border) & (ys >= border) & (ys < height - border)
    xs, ys = xs[ok], ys[ok]
    scores = heat[ys, xs]
    order = np.argsort(-scores, kind="stable")
    return np.stack([xs, ys], 1)[order].astype(float), scores[order], dense


def reference_descriptors(dense: np.ndarray, kpts: np.ndarray, convention: str = "official") -> np.ndarray:
    """Bilinear sampling by hand: cell centres at integer map coordinates u, v."""
    d = dense / np.linalg.norm(dense, axis=0, keepdims=True)
    c, h, w = d.shape
    out = np.zeros((len(kpts), c))
    for n, (x, y) in enumerate(kpts):
        if convention == "official":
            u = (x - 3.5) / (w * 8 - 4.5) * (w - 1)
            v = (y - 3.5) / (h * 8 - 4.5) * (h - 1)
        else:
            u, v = (x - 3.5) / 8, (y - 3.5) / 8
        u0, v0 = int(np.floor(u)), int(np.floor(v))
        for dv in (0, 1):
            for du in (0, 1):
                uu, vv = u0 + du, v0 + dv
                wgt = (1 - abs(u - uu)) * (1 - abs(v - vv))
                if 0 <= uu < w and 0 <= vv < h:
                    out[n] += wgt * d[:, vv, uu]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- model layout


def test_state_dict_keys_are_official():
    net = SuperPointNet()
    expected = {}
    for name, (cout, cin, k) in OFFICIAL_LAYERS.items():
        expected[f"{name}.weight"] = (cout, cin, k, k)
        expected[f"{name}.bias"] = (cout,)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == expected


def test_net_output_shapes(official_sd):
    net = SuperPointNet()
    net.load_state_dict(official_sd)
    out = net(torch.rand(2, 1, 40, 56))
    assert out["logits"].shape == (2, 65, 5, 7)
    assert out["descriptors_dense"].shape == (2, 256, 5, 7)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 1, 41, 56))


# ----------------------------------------------------------------------------- maths


def test_heatmap_depth_to_space_matches_plain_softmax():
    logits = torch.randn(2, 65, 3, 4, dtype=torch.float64) * 3
    got = heatmap_from_logits(logits).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], reference_heatmap(logits[b].numpy()), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("use_pool", [False, True])  # CPU doubling and the GPU max-pool form
@pytest.mark.parametrize("radius", [1, 2, 4])
def test_nms_matches_brute_force(radius, use_pool):
    rng = np.random.default_rng(radius)
    heat = rng.random((2, 23, 31))
    heat[0, 5:8, 5:8] = 0.5  # a plateau: ties must all survive, as in the reference rule
    got = nms(torch.from_numpy(heat), radius, use_pool).numpy()
    for b in range(2):
        np.testing.assert_array_equal(got[b], reference_nms(heat[b], radius))
    assert (got[1] > 0).sum() < heat[1].size / (radius + 1)  # it really suppresses
    assert torch.equal(nms(torch.from_numpy(heat), 0), torch.from_numpy(heat))


@pytest.mark.parametrize("size", [(48, 64), (45, 70)])  # second one is not a multiple of 8
def test_detector_equals_plain_maths(official_sd, size):
    gray = make_image(*size, seed=1)
    feats = make(official_sd, max_keypoints=0).extract(gray)
    ref_kp, ref_sc, _ = reference_keypoints(official_sd, gray)
    assert len(ref_kp) > 10, "the random model should detect something"
    assert feats.image_size == (size[1], size[0])
    got = {tuple(p) for p in feats.keypoints.numpy().astype(int).tolist()}
    assert got == {tuple(p) for p in ref_kp.astype(int).tolist()}
    np.testing.assert_allclose(feats.scores.numpy(), ref_sc, rtol=1e-4, atol=1e-7)
    assert np.all(np.diff(feats.scores.numpy()) <= 0), "sorted by descending score"


def test_descriptors_equal_bilinear_sampling_by_hand(official_sd):
    gray = make_image(45, 70, seed=2)
    feats = make(official_sd, max_keypoints=0).extract(gray)
    _, _, dense = reference_keypoints(official_sd, gray)
    desc = feats.descriptors.numpy()
    assert desc.shape == (len(feats), 256) and desc.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    ref = reference_descriptors(dense, feats.keypoints.numpy().astype(float))
    np.testing.assert_allclose(desc, ref, atol=2e-4)


@pytest.mark.parametrize("convention", ["official", "open"])
def test_sample_descriptors_by_hand(convention):
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(1, 16, 5, 7))
    kpts = np.array([[0.0, 0.0], [3.5, 3.5], [10.2, 17.9], [55.0, 39.0], [27.0, 4.0], [51.3, 12.6]])
    got = sample_descriptors(torch.from_numpy(dense), torch.from_numpy(kpts)[None], 8, convention)[0].numpy()
    np.testing.assert_allclose(got, reference_descriptors(dense[0], kpts, convention), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_topk_is_best_prefix(official_sd):
    gray = make_image(64, 80, seed=4)
    all_f = make(official_sd, max_keypoints=0).extract(gray)
    top_f = make(official_sd, max_keypoints=15).extract(gray)
    assert len(all_f) > 15 and len(top_f) == 15
    assert torch.equal(top_f.scores, all_f.scores[:15])
    assert torch.equal(top_f.keypoints, all_f.keypoints[:15])


def test_threshold_and_borders(official_sd):
    gray = make_image(61, 83, seed=5)
    f = make(official_sd, max_keypoints=0, detection_threshold=0.02, remove_borders=9).extract(gray)
    assert len(f) > 0
    assert bool((f.scores > 0.02).all())
    kp = f.keypoints
    assert bool(((kp[:, 0] >= 9) & (kp[:, 0] < 83 - 9) & (kp[:, 1] >= 9) & (kp[:, 1] < 61 - 9)).all())


# ----------------------------------------------------------------------------- invariants


def test_batch_equals_single(official_sd):
    sp = make(official_sd, max_keypoints=40)
    images = [make_image(48, 64, 6, color=True), make_image(45, 62, 7), make_image(48, 64, 8), make_image(33, 90, 9)]
    batch = sp.extract_batch(images)
    assert len(batch) == len(images)
    for img, fb in zip(images, batch):
        fs = sp.extract(img)
        assert fb.image_size == fs.image_size == (img.shape[1], img.shape[0])
        assert torch.equal(fb.keypoints, fs.keypoints)
        # float32 sums in another order (a batch of padded images takes other kernels): on an
        # AVX2-only CPU one score in 40 differed by 1.07e-5 relative
        torch.testing.assert_close(fb.scores, fs.scores, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(fb.descriptors, fs.descriptors, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (17, 9), (97, 131)])
def test_odd_sizes(official_sd, size):
    gray = make_image(*size, seed=10) if min(size) > 4 else np.full(size, 128, np.uint8)
    f = make(official_sd, max_keypoints=0, remove_borders=2).extract(gray)
    h, w = size
    assert f.image_size == (w, h)
    assert f.descriptors.shape == (len(f), 256)
    if len(f):
        kp = f.keypoints
        assert bool(((kp[:, 0] >= 2) & (kp[:, 0] < w - 2) & (kp[:, 1] >= 2) & (kp[:, 1] < h - 2)).all())
    if size == (97, 131):
        assert len(f) > 10


def test_color_and_gray_agree(official_sd):
    color = make_image(40, 48, 11, color=True)
    sp = make(official_sd)
    a, b = sp.extract(color), sp.extract(color[:, :, 0])
    assert torch.equal(a.keypoints, b.keypoints)


def test_protocol_and_bad_input(official_sd):
    sp = make(official_sd)
    assert isinstance(sp, Extractor)
    assert (sp.name, sp.descriptor_dim, sp.binary) == ("superpoint", 256, False)
    with pytest.raises(ValueError, match="uint8"):
        sp.extract(np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="precision"):
        SuperPoint(SuperPointConfig(precision="int8"), torch.device("cpu"), state_dict=official_sd)


def test_bf16_path_runs_and_stays_close(official_sd):
    gray = make_image(64, 96, seed=12)
    ref = make(official_sd, precision="fp32", max_keypoints=0).extract(gray)
    fast = make(official_sd, precision="bf16", max_keypoints=0).extract(gray)
    assert fast.descriptors.dtype == torch.float32 and fast.keypoints.dtype == torch.float32
    np.testing.assert_allclose(fast.descriptors.norm(dim=1).numpy(), 1.0, atol=1e-5)
    d = torch.cdist(ref.keypoints, fast.keypoints).min(dim=1).values
    assert float((d <= 1.0).float().mean()) > 0.7


def test_auto_precision_on_cpu_checks_quality(official_sd):
    sp = SuperPoint(SuperPointConfig(precision="auto"), torch.device("cpu"), state_dict=official_sd)
    assert sp.precision in ("fp32", "bf16")
    if sp.precision_check:  # CPU with native bf16: chosen from a measured fp32 comparison
        want = "bf16" if sp.precision_check["repeatability"] >= sp.cfg.bf16_min_repeatability else "fp32"
        assert sp.precision == want
    strict = SuperPoint(SuperPointConfig(precision="auto", bf16_min_repeatability=1.01), torch.device("cpu"),
                        state_dict=official_sd)
    assert strict.precision == "fp32"  # an unreachable quality bar always falls back to fp32


@pytest.mark.parametrize("vendor", ["AuthenticAMD", "GenuineIntel"])
def test_auto_takes_bf16_on_amd_cpus_with_avx512_bf16_when_the_probe_passes(monkeypatch, official_sd, vendor):
    import slam.device as dev_mod

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(dev_mod, "cpu_vendor", lambda: vendor)
    # the probe's score, not a bf16 run (which an AVX2-only test machine would emulate slowly)
    monkeypatch.setattr(SuperPoint, "_bf16_probe", lambda self: 0.95)
    sp = SuperPoint(SuperPointConfig(precision="auto"), torch.device("cpu"), state_dict=official_sd)
    assert sp.precision == ("bf16" if vendor == "AuthenticAMD" else "fp32")
    monkeypatch.setattr(SuperPoint, "_bf16_probe", lambda self: 0.5)  # below the 0.9 bar: fp32
    assert SuperPoint(SuperPointConfig(precision="auto"), torch.device("cpu"), state_dict=official_sd).precision == "fp32"


@pytest.mark.gpu
def test_cpu_and_gpu_agree(official_sd):
    gray = make_image(120, 160, seed=13)
    cpu = make(official_sd, max_keypoints=200).extract(gray)
    gpu = SuperPoint(SuperPointConfig(precision="fp32", max_keypoints=200), torch.device("cuda"),
                     state_dict=official_sd).extract(gray)
    assert gpu.keypoints.device.type == "cuda"
    g = gpu.to("cpu")
    d, j = torch.cdist(cpu.keypoints, g.keypoints).min(dim=1)
    assert float((d == 0).float().mean()) > 0.95
    same = d == 0
    torch.testing.assert_close(cpu.descriptors[same], g.descriptors[j[same]], atol=1e-3, rtol=1e-3)
    fp16 = SuperPoint(SuperPointConfig(precision="fp16", max_keypoints=200), torch.device("cuda"),
                      state_dict=official_sd).extract(gray).to("cpu")
    d16 = torch.cdist(cpu.keypoints, fp16.keypoints).min(dim=1).values
    assert float((d16 <= 1).float().mean()) > 0.8


# ----------------------------------------------------------------------------- weights


def test_load_official_file_and_wrappers(official_sd, tmp_path):
    path = tmp_path / "superpoint_v1.pth"
    torch.save(official_sd, path)
    loaded = load_superpoint_weights(str(path))
    assert set(loaded) == set(official_sd)
    assert all(torch.equal(loaded[k], official_sd[k]) for k in official_sd)
    wrapped = tmp_path / "ours.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official_sd.items()}, "epoch": 3}, wrapped)
    assert torch.equal(load_superpoint_weights(wrapped)["convDb.weight"], official_sd["convDb.weight"])
    gray = make_image(40, 56, 14)
    a = SuperPoint(SuperPointConfig(weights=str(path), precision="fp32")).extract(gray)
    b = make(official_sd).extract(gray)
    assert torch.equal(a.keypoints, b.keypoints)


def test_load_open_layout_matches_plain_open_model():
    open_sd = random_open_state_dict(0)
    sd = load_superpoint_weights(open_sd)
    assert "conv1a.weight" in sd and "bnDb.running_var" in sd and not any(k.startswith("backbone") for k in sd)
    assert torch.equal(sd["conv3b.weight"], open_sd["backbone.2.1.conv.weight"])
    assert torch.equal(sd["bnPb.bias"], open_sd["detector.1.bn.bias"])
    net = SuperPointNet(batch_norm=True)
    net.load_state_dict(sd)
    net.eval()
    x = torch.rand(1, 1, 32, 40, dtype=torch.float64)

    def block(t, prefix, relu=True):  # the open model: conv -> ReLU -> BatchNorm(eps 1e-3)
        t = F.conv2d(t, open_sd[f"{prefix}.conv.weight"].double(), open_sd[f"{prefix}.conv.bias"].double(),
                     padding=open_sd[f"{prefix}.conv.weight"].shape[-1] // 2)
        t = torch.relu(t) if relu else t
        return F.batch_norm(t, open_sd[f"{prefix}.bn.running_mean"].double(), open_sd[f"{prefix}.bn.running_var"].double(),
                            open_sd[f"{prefix}.bn.weight"].double(), open_sd[f"{prefix}.bn.bias"].double(),
                            training=False, eps=1e-3)

    t = x
    for stage in range(4):
        t = block(block(t, f"backbone.{stage}.0"), f"backbone.{stage}.1")
        if stage < 3:
            t = F.max_pool2d(t, 2)
    ref_logits = block(block(t, "detector.0"), "detector.1", relu=False)
    ref_desc = block(block(t, "descriptor.0"), "descriptor.1", relu=False)
    with torch.no_grad():
        out = net.double()(x)
    torch.testing.assert_close(out["logits"], ref_logits)
    torch.testing.assert_close(out["descriptors_dense"], ref_desc)
    sp = SuperPoint(SuperPointConfig(precision="fp32"), torch.device("cpu"), state_dict=open_sd)
    assert sp.convention == "open"
    f = sp.extract(make_image(48, 64, 15))
    assert len(f) > 0 and f.descriptors.shape[1] == 256


def test_wrong_shape_names_the_key(official_sd):
    bad = dict(official_sd)
    bad["conv3b.weight"] = torch.zeros(128, 64, 3, 3)
    with pytest.raises(WeightsError, match=r"conv3b\.weight.*shape"):
        load_superpoint_weights(bad)
    with pytest.raises(WeightsError, match=r"conv3b\.weight"):
        make(bad)


def test_missing_and_unexpected_keys_name_the_key(official_sd, tmp_path):
    missing = {k: v for k, v in official_sd.items() if k != "convPb.bias"}
    path = tmp_path / "broken.pth"
    torch.save(missing, path)
    with pytest.raises(WeightsError, match=r"missing key 'convPb\.bias'") as info:
        load_superpoint_weights(path)
    assert "broken.pth" in str(info.value)
    extra = dict(official_sd, **{"convX.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"unexpected key 'convX\.weight'"):
        load_superpoint_weights(extra)
    open_sd = random_open_state_dict(1)
    del open_sd["backbone.1.0.bn.running_var"]
    with pytest.raises(WeightsError, match=r"bn2a\.running_var"):
        load_superpoint_weights(open_sd)


def test_weights_not_found_says_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
    for name in ("superpoint_no_such_weights", str(tmp_path / "missing.pth")):
        with pytest.raises(WeightsError) as info:
            SuperPoint(SuperPointConfig(weights=name))
        msg = str(info.value)
        assert "superpoint_v1.pth" in msg and "github.com/magicleap/SuperGluePretrainedNetwork" in msg
        assert "non-commercial" in msg
        assert "python -m slam weights list" in msg
        assert "python tools/train_superpoint.py" in msg
        assert isinstance(info.value, SlamError)


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        load_superpoint_weights(path)


# ----------------------------------------------------------------------------- drawing


def _feats(points, scores=None):
    """(N, 2) points -> slam.types.Features with random unit 256-D descriptors, image 64x48."""
    from slam.types import Features

    kp = torch.tensor(points, dtype=torch.float32).reshape(-1, 2)
    sc = torch.tensor(scores if scores is not None else [1.0] * len(kp), dtype=torch.float32)
    return Features(kp, sc, F.normalize(torch.rand(len(kp), 256), dim=1), (64, 48))


def test_draw_keypoints_marks_the_keypoints(tmp_path):
    from slam.viz.draw import draw_keypoints

    img = np.full((48, 64), 128, np.uint8)
    out = draw_keypoints(img, _feats([[10, 20], [50, 40]], [0.2, 0.9]), out_path=tmp_path / "kp" / "a.png",
                         text_lines=[])
    assert out.shape[0] > 48 and out.shape[1:] == (64, 3) and out.dtype == np.uint8  # legend strip underneath
    assert np.all(out[48:] >= 0) and (out[48:] == 255).mean() > 0.5  # a white strip
    assert draw_keypoints(img, _feats([[10, 20]]), legend=False).shape == (48, 64, 3)
    assert not np.array_equal(out[20, 10], [128, 128, 128]) and not np.array_equal(out[40, 50], [128, 128, 128])
    assert np.array_equal(out[5, 30], [128, 128, 128])  # untouched far from keypoints
    assert (tmp_path / "kp" / "a.png").is_file()
    assert not np.array_equal(out[40, 50], out[20, 10])  # coloured by score


def test_draw_matches_side_by_side_coloured_by_confidence():
    from slam.types import Matches
    from slam.viz.draw import confidence_colors, draw_matches

    img0 = np.full((48, 64, 3), 100, np.uint8)
    img1 = np.full((40, 50), 100, np.uint8)
    f0, f1 = _feats([[5, 5], [60, 40], [30, 10]]), _feats([[5, 30], [45, 35]])
    m = Matches(np.array([1, -1, 0]), np.array([0.95, 0.0, 0.05], np.float32))
    with_legend = draw_matches(img0, img1, f0, f1, m, text_lines=[])
    assert with_legend.shape[0] > 48 and with_legend.shape[1] == 64 + 10 + 50  # legend strip below
    out = draw_matches(img0, img1, f0, f1, m, text_lines=[], legend=False)
    assert out.shape == (48, 64 + 10 + 50, 3)
    assert np.array_equal(out[45, 70], [255, 255, 255])  # margin stays white
    assert np.array_equal(out[44, 100], [255, 255, 255])  # below the shorter image 1
    hot, cold = confidence_colors(np.array([1.0, 0.0]))  # colour = rank of the confidence among the matches
    assert hot[2] > hot[0] and cold[0] > cold[2]  # red for the most confident, blue for the least (BGR)
    # each line is drawn in the colour of its confidence, between its two endpoints
    def n_close(color, x0, x1):
        region = out[:, x0:x1].astype(int)
        return int((np.abs(region - color.astype(int)).sum(axis=2) < 30).sum())
    # kp0[0] (5,5) -> kp1[1] (45+74, 35) confident; kp0[2] (30,10) -> kp1[0] (5+74, 30) doubtful
    assert n_close(hot, 10, 110) >= 20 and n_close(cold, 35, 75) >= 5
    assert n_close(cold, 0, 27) == 0 and n_close(cold, 85, 124) == 0  # cold line only between its ends
    with pytest.raises(ValueError, match="out of range"):
        draw_matches(img0, img1, f0, f1, np.array([[0, 5]]))
