"""XFeat: the post-processing restated by hand on random weights, the fast inference network
against the checkpoint-layout one, batching, input handling, and the released weights (skip
when not installed: ``python -m slam weights install xfeat``)."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slam.errors import ConfigError, InputError, WeightsError
from slam.features.base import Extractor
from slam.features.xfeat import (
    XFeat,
    XFeatConfig,
    XFeatInference,
    XFeatNet,
    detect,
    keypoint_heatmap,
    nms_candidates,
    sample_descriptors,
    two_grid_heatmap,
)
from slam.weights import resolve_weights
from conftest import textured_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_net(seed: int = 0) -> XFeatNet:
    """XFeatNet with random weights and random BatchNorm statistics (so folding them matters)."""
    torch.manual_seed(seed)
    net = XFeatNet()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def random_xfeat(seed: int = 0, **cfg) -> XFeat:
    cfg.setdefault("detection_threshold", 0.0)  # random logits give probabilities near 1/65
    cfg.setdefault("precision", "fp32")  # the restatements are exact in fp32 (auto may pick bf16 on this CPU)
    return XFeat(XFeatConfig(**{"subpixel": False, "shifted_grid": False, **cfg}), "cpu", state_dict=random_net(seed).state_dict())


# ----------------------------------------------------------------------------- hand-written restatements


def hand_heatmap(logits: np.ndarray) -> np.ndarray:
    """(65, h, w) logits -> (8h, 8w): per cell softmax over 65, channel 8i+j -> pixel (8r+i, 8c+j)."""
    _, h, w = logits.shape
    out = np.zeros((8 * h, 8 * w))
    for r in range(h):
        for c in range(w):
            z = logits[:, r, c].astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            for i in range(8):
                for j in range(8):
                    out[8 * r + i, 8 * c + j] = p[8 * i + j]
    return out


def hand_nms(heat: np.ndarray, size: int, threshold: float) -> list[tuple[int, int]]:
    """(x, y) of pixels above threshold that are >= every in-image pixel of their window, raster order."""
    h, w = heat.shape
    r = size // 2
    out = []
    for y in range(h):
        for x in range(w):
            v = heat[y, x]
            if v > threshold and v >= heat[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].max():
                out.append((x, y))
    return out


def hand_bilinear(img: np.ndarray, u: float, v: float) -> np.ndarray:
    """(C, h, w) map at continuous pixel (u, v) (pixel centres at integers), zero outside."""
    c, h, w = img.shape
    x0, y0 = math.floor(u), math.floor(v)
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (v - y0)), (y0 + 1, v - y0)):
        for xx, wx in ((x0, 1 - (u - x0)), (x0 + 1, u - x0)):
            if 0 <= xx < w and 0 <= yy < h:
                out += wx * wy * img[:, yy, xx]
    return out


def cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel (a = -0.75, as grid_sample's bicubic)."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    if t < 2:
        return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    return 0.0


def hand_bicubic(img: np.ndarray, u: float, v: float) -> np.ndarray:
    c, h, w = img.shape
    x0, y0 = math.floor(u), math.floor(v)
    out = np.zeros(c)
    for yy in range(y0 - 1, y0 + 3):
        for xx in range(x0 - 1, x0 + 3):
            if 0 <= xx < w and 0 <= yy < h:
                out += cubic(u - xx) * cubic(v - yy) * img[:, yy, xx]
    return out


def model_position(p: float, side: int, map_side: int) -> float:
    """Where the released model samples a map of side ``map_side`` for pixel p of an image of side ``side``."""
    return p * map_side / (side - 1) - 0.5


def hand_detect(heat: np.ndarray, rel: np.ndarray, size: int, threshold: float, k: int):
    """Full detection by hand: NMS, score = heat (pixel itself; last row/column read outside = 0;
    corner (0,0) never) x bilinear reliability at the model's position; > 0; top-k."""
    hh, ww = heat.shape
    cands = []
    for x, y in hand_nms(heat, size, threshold):
        hv = heat[y, x] if (x < ww - 1 and y < hh - 1 and (x, y) != (0, 0)) else 0.0
        rv = hand_bilinear(rel[None], model_position(x, ww, rel.shape[1]), model_position(y, hh, rel.shape[0]))[0]
        if hv * rv > 0:
            cands.append((hv * rv, x, y))
    cands.sort(key=lambda t: -t[0])
    return cands[:k] if k > 0 else cands


# ----------------------------------------------------------------------------- post-processing


def test_keypoint_heatmap_is_cellwise_softmax_placed_on_pixels():
    logits = torch.randn(2, 65, 3, 4) * 2
    heat = keypoint_heatmap(logits)
    assert heat.shape == (2, 1, 24, 32) and heat.dtype == torch.float32
    for b in range(2):
        np.testing.assert_allclose(heat[b, 0].numpy(), hand_heatmap(logits[b].numpy()), rtol=1e-5, atol=1e-7)
    # the same in channels-last memory (what the inference network returns)
    cl = logits.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(keypoint_heatmap(cl), heat)


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_nms_keeps_window_maxima_including_ties(size):
    g = torch.Generator().manual_seed(size)
    heat = (torch.rand(2, 1, 23, 31, generator=g) * 8).floor() / 8  # few levels: many equal neighbours
    got = nms_candidates(heat, size, 0.3)
    for b in range(2):
        want = hand_nms(heat[b, 0].numpy(), size, 0.3)
        idx = got[b]
        assert [(int(i % 31), int(i // 31)) for i in idx] == sorted(want, key=lambda p: (p[1], p[0]))
    # the max-pool form of the rule (pool pads with -inf, so out-of-image pixels do not count)
    keep = (heat == F.max_pool2d(heat, size, 1, size // 2)) & (heat > 0.3)
    assert torch.equal(got[0], torch.nonzero(keep[0, 0].reshape(-1))[:, 0])
    with pytest.raises(ConfigError, match="odd"):
        nms_candidates(heat, 4, 0.3)


def test_nearest_heatmap_read_convention_matches_grid_sample():
    """The rule used for the heatmap read (the pixel itself, the last row/column outside) is
    what grid_sample(nearest) gives with the released model's normalisation 2p/(S-1) - 1."""
    h, w = 64, 96
    heat = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w) + 1
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    xy = torch.stack((xs.reshape(-1), ys.reshape(-1)), 1).float()
    grid = (2 * (xy / torch.tensor([w - 1.0, h - 1.0])) - 1)[None, None]
    got = F.grid_sample(heat, grid, mode="nearest", align_corners=False).view(-1)
    inside = (xy[:, 0] < w - 1) & (xy[:, 1] < h - 1)
    expect = torch.where(inside, heat.view(-1), torch.zeros(()))
    assert torch.equal(got, expect)


def test_detect_scores_border_rules_and_topk():
    h, w = 32, 48
    heat = torch.zeros(1, 1, h, w)
    peaks = {(10, 5): 0.9, (30, 20): 0.6, (12, 6): 0.7, (47, 10): 0.95, (20, 31): 0.8, (0, 0): 0.99, (40, 25): 0.3}
    for (x, y), v in peaks.items():
        heat[0, 0, y, x] = v
    g = torch.Generator().manual_seed(0)
    rel = torch.rand(1, 1, h // 8, w // 8, generator=g) * 0.5 + 0.25
    for k in (0, 2):
        (xy, scores), = detect(heat, rel, 5, 0.5, k)
        want = hand_detect(heat[0, 0].numpy(), rel[0, 0].numpy(), 5, 0.5, k)
        assert [tuple(p) for p in xy.tolist()] == [(x, y) for _, x, y in want]
        np.testing.assert_allclose(scores.numpy(), [s for s, _, _ in want], rtol=1e-5)
        assert xy.dtype == torch.int64 and torch.all(scores[:-1] >= scores[1:])
    # (12,6) lies in (10,5)'s 5x5 window; (47,10) on the last column and (20,31) on the last row score 0;
    # (0,0) is never a keypoint; 0.3 is below the threshold
    assert {(x, y) for _, x, y in hand_detect(heat[0, 0].numpy(), rel[0, 0].numpy(), 5, 0.5, 0)} == {(10, 5), (30, 20)}


def test_descriptor_sampling_is_bicubic_at_the_model_position_then_normalised():
    g = torch.Generator().manual_seed(1)
    dense = F.normalize(torch.randn(5, 6, 8, generator=g), dim=0)  # (C, h/8, w/8) for a 64x48 image
    w, h = 64, 48
    xy = torch.tensor([[0, 0], [1, 40], [63, 47], [17, 9], [33, 24], [62, 3], [5, 46]], dtype=torch.int64)
    got = sample_descriptors(dense, xy, w, h)
    for row, (x, y) in zip(got.numpy(), xy.tolist()):
        d = hand_bicubic(dense.double().numpy(), model_position(x, w, 8), model_position(y, h, 6))
        np.testing.assert_allclose(row, d / np.linalg.norm(d), rtol=1e-5, atol=1e-6)
    assert sample_descriptors(dense, xy[:0], w, h).shape == (0, 5)


def test_two_grid_heatmap_is_the_geometric_mean_of_both_grids_by_hand():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 65, 3, 4, generator=g) * 2
    shifted = torch.randn(1, 65, 4, 5, generator=g) * 2
    heat = two_grid_heatmap(logits, shifted)
    assert heat.shape == (1, 1, 24, 32) and heat.dtype == torch.float32
    base, moved = hand_heatmap(logits[0].numpy()), hand_heatmap(shifted[0].numpy())
    # the shifted grid's cell (r, c) starts at pixel (8r - 4, 8c - 4): image pixel (y, x) is its (y + 4, x + 4)
    np.testing.assert_allclose(heat[0, 0].numpy(), np.sqrt(base * moved[4:28, 4:36]), rtol=1e-5, atol=1e-9)


def test_shifted_grid_logits_are_the_head_on_the_image_moved_by_half_a_cell():
    net = random_net(4)
    inf = XFeatInference(net).eval()
    grey = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        shifted = inf.shifted_keypoint_logits(grey)
        x = net.norm(grey)[..., 4:-4, 4:-4]  # cell (r, c) of this crop is cell (r + 1, c + 1) of the shifted grid
        ref = net.keypoint_head(F.pixel_unshuffle(x, 8))
    assert shifted.shape == (1, 65, 9, 13)
    torch.testing.assert_close(shifted[..., 1:-1, 1:-1], ref, rtol=1e-4, atol=1e-4)


def test_two_grids_make_the_heatmap_follow_a_half_cell_translation():
    """With one grid, where the 8x8 cells cut the image decides the heatmap; with both grids a
    4 px shift of the image swaps the grids, so the heatmap moves with it exactly."""
    inf = XFeatInference(random_net(5)).eval()
    inf.norm = torch.nn.Identity()  # no image statistics: the two crops below differ only by the shift
    big = torch.rand(1, 1, 72, 104)
    a, b = big[..., :64, :96], big[..., 4:68, 4:100]  # b(y, x) = a(y + 4, x + 4)
    with torch.no_grad():
        one = [keypoint_heatmap(inf.keypoint_logits(t)) for t in (a, b)]
        two = [two_grid_heatmap(inf.keypoint_logits(t), inf.shifted_keypoint_logits(t)) for t in (a, b)]
    inner = (slice(None), slice(None), slice(8, 56), slice(8, 88))
    moved = (slice(None), slice(None), slice(12, 60), slice(12, 92))
    torch.testing.assert_close(two[1][inner], two[0][moved], rtol=1e-4, atol=1e-7)
    assert (one[1][inner] - one[0][moved]).abs().max() > 0.1 * one[0].mean()  # the reference's single grid does not


# ----------------------------------------------------------------------------- network


def test_checkpoint_layout_and_inference_network_agree_on_random_weights():
    net = random_net(3)
    assert "keypoint_head.3.weight" in net.state_dict() and "block1.0.layer.1.running_var" in net.state_dict()
    fast = XFeatInference(net).eval()
    x = torch.rand(2, 1, 96, 128)
    with torch.inference_mode():
        ref, got = net(x), fast(x)
    for name, a, b in zip(("feats", "logits", "reliability"), ref, got):
        assert a.shape == b.shape, name
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert ref[0].shape == (2, 64, 12, 16) and ref[1].shape == (2, 65, 12, 16) and ref[2].shape == (2, 1, 12, 16)
    with pytest.raises(InputError, match="multiples of 32"):
        fast(torch.rand(1, 1, 40, 64))


def test_extractor_equals_hand_pipeline_on_random_weights():
    """End to end on random weights: the plain network, then detection and description by hand."""
    net = random_net(5)
    ext = XFeat(XFeatConfig(detection_threshold=0.0, max_keypoints=40, subpixel=False, shifted_grid=False, precision="fp32"), "cpu",
                state_dict=net.state_dict())
    img = textured_image(64, 96, 2)
    f = ext.extract(img)
    grey = torch.from_numpy(img[:, :, ::-1].astype(np.float32) / 255).mean(-1)[None, None]
    with torch.inference_mode():
        feats, logits, rel = net(grey)
    heat = hand_heatmap(logits[0].numpy())
    want = hand_detect(heat, rel[0, 0].numpy(), 5, 0.0, 40)
    assert len(want) == 40
    got_xy = [tuple(p) for p in f.keypoints.long().tolist()]
    assert got_xy == [(x, y) for _, x, y in want]
    np.testing.assert_allclose(f.scores.numpy(), [s for s, _, _ in want], rtol=1e-3)
    dense = F.normalize(feats[0].double(), dim=0).numpy()
    for row, (_, x, y) in zip(f.descriptors.numpy(), want):
        d = hand_bicubic(dense, model_position(x, 96, 12), model_position(y, 64, 8))
        np.testing.assert_allclose(row, d / np.linalg.norm(d), atol=2e-4)


def test_protocol_shapes_dtypes_and_unit_norm():
    ext = random_xfeat(max_keypoints=100)
    assert isinstance(ext, Extractor) and ext.name == "xfeat" and ext.descriptor_dim == 64 and not ext.binary
    f = ext.extract(textured_image(96, 128, 1))
    assert len(f) == 100 and f.image_size == (128, 96)
    assert f.keypoints.dtype == f.scores.dtype == f.descriptors.dtype == torch.float32
    assert f.descriptors.shape == (100, 64)
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(100))
    assert torch.all(f.scores > 0) and torch.all(f.scores[:-1] >= f.scores[1:])
    assert torch.all(f.keypoints >= 0) and torch.all(f.keypoints[:, 0] < 127) and torch.all(f.keypoints[:, 1] < 95)


def test_nothing_detected_gives_empty_features():
    ext = random_xfeat(detection_threshold=0.99)
    for img in (np.zeros((64, 96, 3), np.uint8), textured_image(64, 96, 5)):
        f = ext.extract(img)
        assert len(f) == 0 and f.keypoints.shape == (0, 2) and f.descriptors.shape == (0, 64)


def test_batch_equals_single_mixed_sizes_and_grey():
    ext = random_xfeat(1, max_keypoints=80)
    colour = [textured_image(96, 128, 11), textured_image(96, 128, 12), textured_image(70, 100, 13)]
    grey = cv2.cvtColor(textured_image(96, 128, 14), cv2.COLOR_BGR2GRAY)
    imgs = [colour[0], grey, colour[1], colour[2]]
    batch = ext.extract_batch(imgs)
    assert [f.image_size for f in batch] == [(128, 96), (128, 96), (128, 96), (100, 70)]
    for img, fb in zip(imgs, batch):
        fs = ext.extract(img)
        assert len(fb) == len(fs) > 0
        torch.testing.assert_close(fb.keypoints, fs.keypoints)
        torch.testing.assert_close(fb.scores, fs.scores, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(fb.descriptors, fs.descriptors, rtol=0, atol=1e-4)
    assert ext.extract_batch([]) == []


def test_sides_not_multiple_of_32_are_resized_and_keypoints_scaled_back():
    ext = random_xfeat(2, max_keypoints=60)
    img = textured_image(70, 100, 3)  # -> 64 x 96 inside
    f = ext.extract(img)
    small = cv2.resize(img, (96, 64), interpolation=cv2.INTER_LINEAR)
    assert len(f) == 60 and f.image_size == (100, 70)
    scaled = f.keypoints / torch.tensor([100 / 96, 70 / 64])
    torch.testing.assert_close(scaled, scaled.round(), rtol=0, atol=1e-4)  # integer pixels of the 96x64 image
    assert torch.all(f.keypoints[:, 0] < 100) and torch.all(f.keypoints[:, 1] < 70)
    # same detections as extracting a bilinearly resized copy (up to the resampler's rounding)
    g = ext.extract(small)
    common = set(map(tuple, scaled.round().long().tolist())) & set(map(tuple, g.keypoints.long().tolist()))
    assert len(common) >= 0.8 * len(f)


def test_bad_inputs_and_settings_raise_clear_errors(tmp_path):
    ext = random_xfeat()
    with pytest.raises(InputError, match="at least 32x32"):
        ext.extract(np.zeros((20, 200, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        ext.extract(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match="BGR or"):
        ext.extract(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ConfigError, match="nms_size"):
        random_xfeat(nms_size=4)
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        random_xfeat(precision="fp16")
    with pytest.raises(WeightsError, match="not an XFeat checkpoint"):
        XFeat(XFeatConfig(), "cpu", state_dict={"x": torch.zeros(1)})
    sd = random_net().state_dict()
    sd["block2.0.layer.0.weight"] = torch.zeros(24, 24, 1, 1)
    with pytest.raises(WeightsError, match="does not match the XFeat architecture"):
        XFeat(XFeatConfig(), "cpu", state_dict=sd)
    with pytest.raises(WeightsError, match="does not exist"):
        XFeat(XFeatConfig(weights=str(tmp_path / "none.pt")), "cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read XFeat weights .*bad.pt"):
        XFeat(XFeatConfig(weights=str(bad)), "cpu")


def test_missing_registry_weights_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="python -m slam weights install xfeat"):
        XFeat(XFeatConfig(), "cpu")


def test_bf16_runs_and_mostly_agrees_with_fp32():
    img = textured_image(96, 128, 4)
    f32 = random_xfeat(6, max_keypoints=50).extract(img)
    bf = random_xfeat(6, max_keypoints=50, precision="bf16").extract(img)
    assert bf.descriptors.dtype == torch.float32 and len(bf) == 50
    common = set(map(tuple, f32.keypoints.long().tolist())) & set(map(tuple, bf.keypoints.long().tolist()))
    assert len(common) >= 25


# ----------------------------------------------------------------------------- released weights


@pytest.fixture(scope="module")
def xfeat_real() -> XFeat:
    try:
        resolve_weights("xfeat")
    except WeightsError as exc:
        pytest.skip(f"XFeat weights not installed: {exc}")
    return XFeat(XFeatConfig(subpixel=False, shifted_grid=False, precision="fp32"), "cpu")  # the reference's keypoints, fp32


def test_real_weights_load_strictly_and_give_sane_features(xfeat_real):
    sd = torch.load(resolve_weights("xfeat"), map_location="cpu", weights_only=True)
    assert any(k.startswith("fine_matcher.") for k in sd)  # dropped on purpose: XFeat* refinement
    net = XFeatNet.from_state_dict(sd)
    torch.testing.assert_close(net.keypoint_head[3].weight, sd["keypoint_head.3.weight"])
    f = xfeat_real.extract(textured_image(480, 640, 8))
    assert len(f) == 1024 and f.descriptors.shape == (1024, 64)
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(1024))
    assert torch.all((f.scores > 0) & (f.scores < 1))
    # no two keypoints closer than the NMS window allows (only exact ties may be adjacent)
    d = torch.cdist(f.keypoints, f.keypoints) + 1e3 * torch.eye(len(f))
    assert (d.min(dim=1).values < 2.0).float().mean() < 0.01


def test_real_weights_keypoints_follow_a_translation(xfeat_real):
    img = textured_image(256, 320, 7)
    dx, dy = 32, 32  # crop keeps multiples of 32 (no resize) and the 8x8 cell grid
    f_full = xfeat_real.extract(img)
    f_crop = xfeat_real.extract(img[dy:, dx:])
    kp = f_crop.keypoints + torch.tensor([dx, dy], dtype=torch.float32)
    inner = (kp[:, 0] > dx + 16) & (kp[:, 1] > dy + 16) & (kp[:, 0] < 320 - 16) & (kp[:, 1] < 256 - 16)
    kp = kp[inner]
    assert len(kp) > 100
    dist = torch.cdist(kp, f_full.keypoints).min(dim=1).values
    assert (dist < 0.5).float().mean() > 0.8


def test_real_weights_two_grids_repeat_keypoints_under_sub_cell_translations(xfeat_real):
    """xfeat.shifted_grid: keypoints of an image moved by a few pixels (not a multiple of 8) land
    on the moved keypoints more often than with the reference's single grid."""
    two = XFeat(XFeatConfig(subpixel=False, precision="fp32", shifted_grid=True), "cpu")
    big = textured_image(320, 384, 9)
    shares = {}
    for name, ex in (("one", xfeat_real), ("two", two)):
        hits = []
        for dx, dy in ((3, 0), (0, 5), (3, 5), (6, 2)):
            f0, f1 = ex.extract(big[32:288, 32:352]), ex.extract(big[32 + dy:288 + dy, 32 + dx:352 + dx])
            kp = f1.keypoints + torch.tensor([dx, dy], dtype=torch.float32)
            inner = (kp[:, 0] > 16) & (kp[:, 1] > 16) & (kp[:, 0] < 320 - 16) & (kp[:, 1] < 256 - 16)
            hits.append((torch.cdist(kp[inner], f0.keypoints).min(dim=1).values < 0.5).float().mean())
        shares[name] = float(torch.stack(hits).mean())
    assert shares["two"] > shares["one"] + 0.05, shares


def test_real_weights_batch_equals_single(xfeat_real):
    imgs = [textured_image(192, 256, 11), textured_image(192, 256, 12)]
    for img, fb in zip(imgs, xfeat_real.extract_batch(imgs)):
        fs = xfeat_real.extract(img)
        assert len(fb) == len(fs) > 0
        torch.testing.assert_close(fb.keypoints, fs.keypoints)
        torch.testing.assert_close(fb.descriptors, fs.descriptors, rtol=0, atol=1e-4)


@pytest.mark.needs_data
@pytest.mark.slow
def test_churchill_lighterglue_homography_precision(shared_data: Path, xfeat_real):
    """Churchill 1 -> 2 (homography, strong zoom), half resolution, XFeat + LighterGlue: precision at 3 px."""
    from slam.matching.config import LightGlueConfig
    from slam.matching.lightglue import LightGlue

    try:
        lg = LightGlue(LightGlueConfig(features="xfeat"), "cpu")
    except WeightsError as exc:
        pytest.skip(str(exc))
    root = shared_data / "pairs" / "churchill"
    if not (root / "H_1_2").is_file():
        pytest.skip(f"churchill pairs not found in {root}")
    scale = 0.5
    im0, im1 = (cv2.resize(cv2.imread(str(root / f"{k}.png")), None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA) for k in (1, 2))
    s = np.diag([scale, scale, 1.0])
    hom = s @ np.loadtxt(root / "H_1_2") @ np.linalg.inv(s)
    f0, f1 = xfeat_real.extract_batch([im0, im1])
    pairs = lg.match(f0, f1).pairs()
    assert len(pairs) >= 250
    proj = cv2.perspectiveTransform(f0.keypoints_np[pairs[:, 0]][None], hom)[0]
    err = np.linalg.norm(proj - f1.keypoints_np[pairs[:, 1]], axis=1)
    assert (err < 3.0).mean() >= 0.8


def test_subpixel_refinement_finds_the_peak_of_a_parabola():
    from slam.features.xfeat import refine_subpixel

    ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(16.0), indexing="ij")
    heat = 1.0 - 0.05 * ((xs - 6.3) ** 2 + (ys - 4.8) ** 2)  # a paraboloid: the vertex is exact
    heat[0, 0] = 5.0  # a border maximum stays where it is
    got = refine_subpixel(heat, torch.tensor([[6, 5], [0, 0]]))
    torch.testing.assert_close(got, torch.tensor([[6.3, 4.8], [0.0, 0.0]]), atol=1e-4, rtol=0)


def test_subpixel_keeps_descriptors_and_moves_keypoints_less_than_half_a_pixel():
    img = (np.random.default_rng(3).random((64, 96)) * 255).astype(np.uint8)
    a = random_xfeat(0, max_keypoints=50).extract(img)
    b = random_xfeat(0, max_keypoints=50, subpixel=True).extract(img)
    torch.testing.assert_close(a.descriptors, b.descriptors)
    torch.testing.assert_close(a.scores, b.scores)
    d = (a.keypoints - b.keypoints).abs()
    assert float(d.max()) <= 0.5 and float(d.sum()) > 0


def test_auto_precision_on_cpu_is_bf16_only_with_native_bf16_and_a_passing_probe(monkeypatch):
    import slam.device

    sd = random_net(3).state_dict()
    cfg = XFeatConfig(detection_threshold=0.0, max_keypoints=100)
    monkeypatch.setattr(slam.device, "native_bf16", lambda device: False)
    slow = XFeat(cfg, "cpu", state_dict=sd)
    assert slow.precision == "fp32" and slow.precision_check == {}  # no native bf16: no probe either
    monkeypatch.setattr(slam.device, "native_bf16", lambda device: True)
    monkeypatch.setattr(XFeat, "_bf16_probe", lambda self: 0.5)
    assert XFeat(cfg, "cpu", state_dict=sd).precision == "fp32"  # the probe failed the 0.9 bar
    monkeypatch.setattr(XFeat, "_bf16_probe", lambda self: 0.95)
    assert XFeat(cfg, "cpu", state_dict=sd).precision == "bf16"
    assert XFeat(XFeatConfig(precision="fp32"), "cpu", state_dict=sd).precision == "fp32"  # explicit wins


@pytest.mark.parametrize("vendor,mode,want", [("AuthenticAMD", "rgbd", "bf16"), ("AuthenticAMD", "stereo", "bf16"),
                                               ("AuthenticAMD", "mono", "fp32"), ("GenuineIntel", "rgbd", "fp32")])
def test_auto_takes_bf16_on_amd_avx512_bf16_cpus_only_in_runs_with_depth(monkeypatch, tmp_path, vendor, mode, want):
    """A run's extractor (slam.system.build_frontend, what the feature process builds) is told
    whether the run measures depth; AVX512-BF16 without AMX counts only on AMD, and only there."""
    import slam.device
    from slam.config import load_config
    from slam.geometry.camera import PinholeCamera
    from slam.system import build_extractor, build_frontend

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(slam.device, "cpu_vendor", lambda: vendor)
    # the probe's score, not a bf16 run (which an AVX2-only test machine would emulate slowly)
    monkeypatch.setattr(XFeat, "_bf16_probe", lambda self: 0.95)
    path = tmp_path / "xfeat.pt"
    torch.save(random_net(3).state_dict(), path)
    cfg = load_config(None, ["features=xfeat", "matcher=nn", "device=cpu", f"xfeat.weights={path}", "mode=rgbd"])
    cam = PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0)
    if mode != "stereo":  # stereo's frontend also builds its stereo matcher; its extractor is asked the same way
        cfg.mode = mode
        assert build_frontend(cfg, cam).extractor.precision == want
    assert build_extractor(cfg, torch.device("cpu"), depth_run=mode != "mono").precision == want
    # single images, vocabulary pools and tools: the CPU's maker does not change their descriptors
    assert build_extractor(cfg, torch.device("cpu")).precision == "fp32"
    monkeypatch.setattr(XFeat, "_bf16_probe", lambda self: 0.5)  # below the 0.9 bar: fp32 even with depth
    assert build_extractor(cfg, torch.device("cpu"), depth_run=True).precision == "fp32"


def test_keypoint_head_runs_in_float32_under_a_bf16_autocast():
    """The logits alone place the keypoints (heatmap, NMS, sub-pixel parabola), so a bf16 run keeps
    fp32's keypoint positions; only the backbone (descriptors, reliability) runs in bf16."""
    net = random_xfeat(7).net
    x = torch.randn(1, 1, 64, 96)
    ref = net.keypoint_logits(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = net.keypoint_logits(x)
        shifted = net.shifted_keypoint_logits(torch.rand(1, 1, 64, 96))
        _, logits, _ = net(torch.rand(1, 1, 64, 96).contiguous(memory_format=torch.channels_last))
    assert got.dtype == shifted.dtype == logits.dtype == torch.float32
    assert torch.equal(got, ref)


def test_compare_precision_of_identical_precisions_is_exact():
    ext = random_xfeat(4, max_keypoints=60)
    check = ext.compare_precision("fp32", textured_image(96, 128, 2))
    assert check["repeatability"] == 1.0 and check["exact"] == 1.0 and check["n_fp32"] == check["n_test"] == 60
    assert abs(check["descriptor_cosine"] - 1.0) < 1e-6


def test_real_weights_bf16_keeps_the_keypoints_and_descriptors(xfeat_real):
    check = xfeat_real.compare_precision("bf16", textured_image(480, 640, 5))
    assert check["n_test"] == check["n_fp32"] == 1024
    assert check["repeatability"] >= 0.95 and check["exact"] >= 0.9
    assert check["descriptor_cosine"] > 0.99
