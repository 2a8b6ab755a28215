"""ALIKED: detection post-processing on synthetic maps, the network with random and real weights."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import textured_image
from slam.errors import WeightsError
from slam.features.aliked import (
    ALIKED,
    ALIKED_MODELS,
    ALIKEDConfig,
    ALIKEDNet,
    bilinear_sample_hwc,
    dkd_detect,
)
from slam.features.base import Extractor, nms
from slam.weights import resolve_weights


def weights_or_skip(name: str):
    try:
        return resolve_weights(name)
    except WeightsError as exc:  # message names `python -m slam weights install NAME`
        pytest.skip(f"{name} weights not installed: {exc}")


def random_aliked(**cfg) -> ALIKED:
    torch.manual_seed(0)
    net = ALIKEDNet()
    for m in net.modules():  # non-trivial BN statistics so that eval mode is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return ALIKED(ALIKEDConfig(**cfg), "cpu", state_dict=net.state_dict())


# ----------------------------------------------------------------------------- post-processing


def test_nms_keeps_isolated_maxima_and_suppresses_neighbours():
    s = torch.zeros(1, 1, 20, 20)
    s[0, 0, 5, 5] = 0.9
    s[0, 0, 5, 6] = 0.8  # neighbour of a stronger peak -> suppressed
    s[0, 0, 14, 12] = 0.5  # isolated -> kept
    out = nms(s[:, 0], 2)  # the shared NMS ALIKED uses, on (B, H, W)
    kept = {tuple(p) for p in torch.nonzero(out[0]).tolist()}
    assert kept == {(5, 5), (14, 12)}
    assert out[0, 5, 5] == pytest.approx(0.9)


def test_dkd_subpixel_refinement_recovers_blob_centre():
    h, w = 40, 50
    centres = [(12.3, 10.6), (30.8, 25.2), (40.4, 31.7)]  # (x, y)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    score = torch.zeros(h, w)
    for cx, cy in centres:
        score = torch.maximum(score, 0.9 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.8 ** 2)))
    (kpts, scores), = dkd_detect(score[None, None], radius=2, threshold=0.2, max_keypoints=10)
    assert kpts.shape == (3, 2) and kpts.dtype == torch.float32
    assert torch.all(scores[:-1] >= scores[1:])
    for cx, cy in centres:
        true = torch.tensor([cx, cy])
        d = torch.linalg.norm(kpts - true, dim=1).min()
        d_int = torch.linalg.norm(torch.round(true) - true)
        # Soft-argmax with a fixed temperature is pulled towards the integer maximum but
        # always moves from it towards the true centre.
        assert d < 0.3 and d < d_int, f"blob at ({cx}, {cy}) refined {d:.3f} px away"


def test_dkd_threshold_fallback_border_and_limit():
    score = torch.full((1, 1, 30, 30), 0.05)
    score[0, 0, 1, 15] = 0.15  # within the 2-px border -> never a keypoint
    for i, (y, x) in enumerate([(8, 8), (8, 20), (20, 8), (20, 20)]):
        score[0, 0, y, x] = 0.10 + 0.01 * i
    # No maximum above 0.2: falls back to "above the mean score".
    (kpts, _), = dkd_detect(score, 2, 0.2, 0)
    assert len(kpts) == 4
    assert torch.all((kpts >= 2) & (kpts <= 27))
    (kpts2, scores2), = dkd_detect(score, 2, 0.2, 2)
    assert len(kpts2) == 2 and torch.all(scores2 > 0.11)
    (kpts3, _), = dkd_detect(score, 2, -1.0, 3)  # pure top-k mode
    assert len(kpts3) == 3


def test_bilinear_sample_hwc_matches_grid_sample():
    gen = torch.Generator().manual_seed(0)
    hwc = torch.randn(7, 9, 5, generator=gen)
    pts = torch.rand(300, 2, generator=gen) * torch.tensor([13.0, 11.0]) - torch.tensor([2.0, 2.0])
    grid = torch.stack(((2 * pts[:, 0] + 1) / 9 - 1, (2 * pts[:, 1] + 1) / 7 - 1), dim=-1)
    want = torch.nn.functional.grid_sample(hwc.permute(2, 0, 1)[None], grid.view(1, 1, -1, 2),
                                           align_corners=False)[0, :, 0].t()
    torch.testing.assert_close(bilinear_sample_hwc(hwc, pts), want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- network, random weights


def test_folding_the_batch_norms_keeps_the_outputs():
    torch.manual_seed(0)
    net = ALIKEDNet()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    folded = ALIKEDNet()
    folded.load_state_dict(net.state_dict())
    folded.eval().fold_batchnorm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in (folded.block1.bn1, folded.block2.bn2))
    img = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        (m0,), s0 = net.dense(img)
        (m1,), s1 = folded.dense(img)
    assert (s0 - s0.mean()).abs().max() > 1e-3  # the score map is not flat: the check can fail
    torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m1.dense(), m0.dense(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(64, 96), (50, 70)])
def test_dense_without_the_full_map_equals_the_concatenated_map(size):
    """ALIKEDNet.dense never builds the (dim, H, W) map: the score head's 1x1 layer runs per
    branch before upsampling, and the feature map is evaluated per pixel. Both must equal the
    paper's order (upsample, concatenate, normalise, then the score head), padding included."""
    net = random_aliked().net
    gen = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, *size, generator=gen).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        maps, score = net.dense(img)
        h, w = size
        pad_h, pad_w = (-h) % 32, (-w) % 32
        top, left = pad_h // 2, pad_w // 2
        x = torch.nn.functional.pad(img, (left, pad_w - left, top, pad_h - top), mode="replicate")
        x1 = net.block1(x)
        x2 = net.block2(torch.nn.functional.avg_pool2d(x1, 2))
        x3 = net.block3(torch.nn.functional.avg_pool2d(x2, 4))
        x4 = net.block4(torch.nn.functional.avg_pool2d(x3, 4))
        up = [torch.nn.functional.selu(net.conv1(x1))]
        for conv, xk in ((net.conv2, x2), (net.conv3, x3), (net.conv4, x4)):
            up.append(torch.nn.functional.interpolate(torch.nn.functional.selu(conv(xk)), size=x1.shape[-2:],
                                                      mode="bilinear", align_corners=True))
        cat = torch.cat(up, dim=1)
        want_score = torch.sigmoid(net.score_head(cat))[:, :, top:top + h, left:left + w]
        want_map = torch.nn.functional.normalize(cat, dim=1)[0, :, top:top + h, left:left + w]
        torch.testing.assert_close(score, want_score, rtol=1e-5, atol=1e-6)
        got_map = maps[0].dense()
        assert got_map.shape == (128, h, w)
        torch.testing.assert_close(got_map, want_map, rtol=1e-5, atol=1e-6)
        kpts = torch.rand(40, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
        torch.testing.assert_close(net.desc_head(maps[0], kpts), net.desc_head(want_map, kpts), rtol=1e-4, atol=1e-5)


def test_protocol_shapes_dtypes_and_unit_norm():
    ext = random_aliked(max_keypoints=200)
    assert isinstance(ext, Extractor)
    assert ext.name == "aliked" and ext.descriptor_dim == 128 and ext.binary is False
    img = textured_image(96, 128)
    f = ext.extract(img)
    assert 0 < len(f) <= 200
    assert f.keypoints.dtype == torch.float32 and f.keypoints.shape == (len(f), 2)
    assert f.scores.dtype == torch.float32 and f.descriptors.dtype == torch.float32
    assert f.descriptors.shape == (len(f), 128)
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(len(f)), rtol=1e-4, atol=1e-4)
    assert f.image_size == (128, 96)
    assert torch.all((f.keypoints[:, 0] >= 0) & (f.keypoints[:, 0] <= 127))
    assert torch.all((f.keypoints[:, 1] >= 0) & (f.keypoints[:, 1] <= 95))
    assert torch.all(f.scores[:-1] >= f.scores[1:])
    # Grey input is the same image replicated to RGB.
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    fg = ext.extract(grey)
    fr = ext.extract(np.repeat(grey[:, :, None], 3, axis=2))
    torch.testing.assert_close(fg.keypoints, fr.keypoints)


def test_odd_sizes_and_mixed_batch_equal_single():
    ext = random_aliked(max_keypoints=100)
    imgs = [textured_image(67, 91, 1), textured_image(67, 91, 2), textured_image(45, 33, 3)]
    batch = ext.extract_batch(imgs)
    assert [f.image_size for f in batch] == [(91, 67), (91, 67), (33, 45)]
    for img, fb in zip(imgs, batch):
        fs = ext.extract(img)
        assert len(fs) == len(fb) > 0
        torch.testing.assert_close(fb.keypoints, fs.keypoints, rtol=0, atol=1e-4)
        torch.testing.assert_close(fb.descriptors, fs.descriptors, rtol=0, atol=1e-4)
        h, w = img.shape[:2]
        assert torch.all(fb.keypoints[:, 0] <= w - 1) and torch.all(fb.keypoints[:, 1] <= h - 1)


def test_bad_inputs_raise_clear_errors():
    ext = random_aliked()
    with pytest.raises(ValueError, match="uint8"):
        ext.extract(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="BGR"):
        ext.extract(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="at least"):
        ext.extract(np.zeros((8, 64), np.uint8))
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        random_aliked(precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        random_aliked(precision="half")
    with pytest.raises(WeightsError, match="not an ALIKED checkpoint"):
        ALIKED(ALIKEDConfig(), "cpu", state_dict={"foo": torch.zeros(1)})
    with pytest.raises(WeightsError, match="aliked-n16"):
        ALIKED(ALIKEDConfig(model="aliked-n99"), "cpu")


# ----------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def aliked_n16() -> ALIKED:
    weights_or_skip("aliked-n16")
    return ALIKED(ALIKEDConfig(model="aliked-n16", max_keypoints=512), "cpu")


@pytest.mark.parametrize("model", ALIKED_MODELS)
def test_real_weights_load_strictly(model):
    weights_or_skip(model)
    ext = ALIKED(ALIKEDConfig(model=model, max_keypoints=64), "cpu")
    assert ext.descriptor_dim == (64 if model == "aliked-t16" else 128)
    assert ext.net.desc_head.n_pos == (32 if model == "aliked-n32" else 16)
    f = ext.extract(textured_image(64, 96))
    assert 0 < len(f) <= 64 and f.descriptors.shape[1] == ext.descriptor_dim
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(len(f)), rtol=1e-4, atol=1e-4)
    assert torch.all((f.scores > 0) & (f.scores < 1))


def test_real_weights_keypoints_follow_a_translation(aliked_n16):
    """Keypoints are in original-image pixels: cropping shifts them by the crop offset."""
    img = textured_image(160, 192, 7)
    dx, dy = 13, 6
    f_full = aliked_n16.extract(img)
    f_crop = aliked_n16.extract(img[dy:, dx:])
    kp = f_crop.keypoints + torch.tensor([dx, dy], dtype=torch.float32)
    inner = (kp[:, 0] > dx + 20) & (kp[:, 1] > dy + 20) & (kp[:, 0] < 192 - 20) & (kp[:, 1] < 160 - 20)
    kp = kp[inner]
    assert len(kp) > 20
    dist = torch.cdist(kp, f_full.keypoints).min(dim=1).values
    assert (dist < 0.5).float().mean() > 0.8


def test_real_weights_batch_equals_single(aliked_n16):
    imgs = [textured_image(120, 150, 11), textured_image(120, 150, 12), textured_image(99, 77, 13)]
    for img, fb in zip(imgs, aliked_n16.extract_batch(imgs)):
        fs = aliked_n16.extract(img)
        assert len(fb) == len(fs) > 0
        torch.testing.assert_close(fb.keypoints, fs.keypoints, rtol=0, atol=1e-3)
        torch.testing.assert_close(fb.descriptors, fs.descriptors, rtol=0, atol=1e-3)


@pytest.mark.needs_data
@pytest.mark.slow
def test_churchill_mutual_nn_precision(shared_data, aliked_n16):
    """Churchill 1 -> 2 (homography, strong zoom), half resolution: MNN precision at 3 px."""
    root = shared_data / "pairs" / "churchill"
    if not (root / "H_1_2").is_file():
        pytest.skip(f"churchill pair not found at {root}")
    scale = 0.5
    im0, im1 = (cv2.resize(cv2.imread(str(root / f"{k}.png")), None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA) for k in (1, 2))
    s = np.diag([scale, scale, 1.0])
    homography = s @ np.loadtxt(root / "H_1_2") @ np.linalg.inv(s)
    f0, f1 = aliked_n16.extract_batch([im0, im1])
    sim = f0.descriptors @ f1.descriptors.T
    nn01, nn10 = sim.argmax(1), sim.argmax(0)
    i0 = torch.nonzero(nn10[nn01] == torch.arange(len(f0)))[:, 0]
    p0, p1 = f0.keypoints_np[i0.numpy()], f1.keypoints_np[nn01[i0].numpy()]
    proj = np.c_[p0, np.ones(len(p0))] @ homography.T
    err = np.linalg.norm(proj[:, :2] / proj[:, 2:] - p1, axis=1)
    assert len(i0) >= 150
    assert (err < 3.0).mean() >= 0.8
