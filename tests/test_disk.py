"""DISK: NMS/top-k on synthetic heatmaps, the U-Net with random and real weights."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slam.errors import WeightsError
from slam.features.aliked import images_to_tensor
from slam.features.base import Extractor
from slam.features.disk import DISK, DISKConfig, DISKNet, heatmap_nms_topk
from slam.weights import resolve_weights


def weights_or_skip(name: str = "disk-depth-save"):
    for alias in (name, "disk-depth"):
        try:
            return resolve_weights(alias)
        except WeightsError as exc:  # message names `python -m slam weights install NAME`
            last = exc
    pytest.skip(f"DISK weights not installed: {last}")


def textured_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 BGR: random filled rectangles and circles on a smooth background."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    for _ in range(max(4, h * w // 300)):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 30)), y + int(rng.integers(5, 30))), color, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(3, 15)), color, -1)
    return img


def random_disk(**cfg) -> DISK:
    torch.manual_seed(0)
    return DISK(DISKConfig(**cfg), "cpu", state_dict={"extractor": DISKNet().state_dict()})


# ----------------------------------------------------------------------------- post-processing


def test_heatmap_nms_topk_on_known_peaks():
    hm = torch.full((2, 1, 24, 32), -1.0)
    peaks = [(3, 4, 2.0), (20, 4, 1.5), (10, 15, 3.0), (30, 22, 0.5)]  # (x, y, logit)
    for x, y, v in peaks:
        hm[0, 0, y, x] = v
    hm[0, 0, 15, 11] = 2.5  # one pixel from the 3.0 peak: suppressed by the 5x5 window
    hm[0, 0, 4, 23] = -0.5  # isolated local maximum below the 0.0 threshold
    out = heatmap_nms_topk(hm, window=5, threshold=0.0, max_keypoints=0)
    xy, logits = out[0]
    assert xy.dtype == torch.int64
    assert xy.tolist() == [[10, 15], [3, 4], [20, 4], [30, 22]]  # sorted by decreasing logit
    torch.testing.assert_close(logits, torch.tensor([3.0, 2.0, 1.5, 0.5]))
    assert len(out[1][0]) == 0  # constant -1 map: nothing above the threshold

    xy2, logits2 = heatmap_nms_topk(hm, 5, 0.0, 2)[0]
    assert xy2.tolist() == [[10, 15], [3, 4]]
    xy3, _ = heatmap_nms_topk(hm, 3, 0.0, 0)[0]  # 3x3 window: (11, 15) is 1 px away -> still suppressed
    assert [11, 15] not in xy3.tolist()
    xy4, _ = heatmap_nms_topk(hm, 1, 0.0, 0)[0]  # window 1 = no suppression
    assert [11, 15] in xy4.tolist()


# ----------------------------------------------------------------------------- network, random weights


def test_unet_layout_matches_checkpoint_names():
    keys = set(DISKNet().state_dict())
    assert "unet.path_down.0.1.3.weight" in keys and "unet.path_down.1.1.1.weight" in keys
    assert "unet.path_up.3.conv.3.weight" in keys
    assert DISKNet().state_dict()["unet.path_up.3.conv.3.weight"].shape == (129, 80, 5, 5)


def test_protocol_shapes_dtypes_unit_norm_and_descriptor_sampling():
    ext = random_disk(max_keypoints=100)
    assert isinstance(ext, Extractor)
    assert ext.name == "disk" and ext.descriptor_dim == 128 and ext.binary is False
    img = textured_image(64, 80)
    f = ext.extract(img)
    assert 0 < len(f) <= 100
    assert f.keypoints.dtype == torch.float32 and f.scores.dtype == torch.float32
    assert f.descriptors.shape == (len(f), 128) and f.descriptors.dtype == torch.float32
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(len(f)), rtol=1e-4, atol=1e-4)
    assert f.image_size == (80, 64)
    assert torch.equal(f.keypoints, f.keypoints.round())
    assert torch.all(f.scores[:-1] >= f.scores[1:]) and torch.all(f.scores > 0)
    # Descriptors are the normalised dense descriptors at the keypoint pixels.
    with torch.inference_mode():
        heat, dense = ext.net.dense(images_to_tensor([img], torch.device("cpu")))
    xy = f.keypoints.long()
    want = F.normalize(dense[0][:, xy[:, 1], xy[:, 0]].t(), dim=1)
    torch.testing.assert_close(f.descriptors, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f.scores, heat[0, 0][xy[:, 1], xy[:, 0]])


def test_odd_sizes_padding_and_mixed_batch_equal_single():
    ext = random_disk(max_keypoints=60)
    imgs = [textured_image(37, 53, 1), textured_image(37, 53, 2), textured_image(48, 64, 3)]
    batch = ext.extract_batch(imgs)
    assert [f.image_size for f in batch] == [(53, 37), (53, 37), (64, 48)]
    for img, fb in zip(imgs, batch):
        fs = ext.extract(img)
        assert len(fb) == len(fs) > 0
        torch.testing.assert_close(fb.keypoints, fs.keypoints)
        torch.testing.assert_close(fb.descriptors, fs.descriptors, rtol=0, atol=1e-4)
        h, w = img.shape[:2]
        assert torch.all(fb.keypoints[:, 0] < w) and torch.all(fb.keypoints[:, 1] < h)
    strict = random_disk(pad_if_not_divisible=False)
    with pytest.raises(ValueError, match="pad_if_not_divisible"):
        strict.extract(imgs[0])
    assert len(strict.extract(imgs[2])) > 0


def test_bad_config_and_weights_raise_clear_errors():
    with pytest.raises(ValueError, match="nms_window_size"):
        random_disk(nms_window_size=4)
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        random_disk(precision="fp16")
    with pytest.raises(ValueError, match="not a DISK checkpoint"):
        DISK(DISKConfig(), "cpu", state_dict={"extractor": {"x": torch.zeros(1)}})
    with pytest.raises(WeightsError):
        DISK(DISKConfig(weights="/nonexistent/disk.pth"), "cpu")


# ----------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def disk_real() -> DISK:
    weights_or_skip()
    return DISK(DISKConfig(max_keypoints=512), "cpu")


def test_real_weights_load_and_describe(disk_real):
    assert disk_real.descriptor_dim == 128
    f = disk_real.extract(textured_image(64, 96))
    assert len(f) > 10
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(len(f)), rtol=1e-4, atol=1e-4)


def test_real_weights_keypoints_follow_a_translation(disk_real):
    """Keypoints are in original-image pixels: cropping shifts them by the crop offset."""
    img = textured_image(128, 160, 7)
    dx, dy = 16, 16  # keeps the crop a multiple of 16 (no padding)
    f_full = disk_real.extract(img)
    f_crop = disk_real.extract(img[dy:, dx:])
    kp = f_crop.keypoints + torch.tensor([dx, dy], dtype=torch.float32)
    inner = (kp[:, 0] > dx + 16) & (kp[:, 1] > dy + 16) & (kp[:, 0] < 160 - 16) & (kp[:, 1] < 128 - 16)
    kp = kp[inner]
    assert len(kp) > 20
    dist = torch.cdist(kp, f_full.keypoints).min(dim=1).values
    assert (dist < 0.5).float().mean() > 0.8


def test_real_weights_batch_equals_single(disk_real):
    imgs = [textured_image(64, 80, 11), textured_image(64, 80, 12)]
    for img, fb in zip(imgs, disk_real.extract_batch(imgs)):
        fs = disk_real.extract(img)
        assert len(fb) == len(fs) > 0
        torch.testing.assert_close(fb.keypoints, fs.keypoints)
        torch.testing.assert_close(fb.descriptors, fs.descriptors, rtol=0, atol=1e-3)


@pytest.mark.needs_data
@pytest.mark.slow
def test_churchill_mutual_nn_precision(shared_data, disk_real):
    """Churchill 1 -> 2 (homography, strong zoom), half resolution: MNN precision at 3 px."""
    root = shared_data / "pairs" / "churchill"
    if not (root / "H_1_2").is_file():
        pytest.skip(f"churchill pair not found at {root}")
    scale = 0.5
    im0, im1 = (cv2.resize(cv2.imread(str(root / f"{k}.png")), None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA) for k in (1, 2))
    s = np.diag([scale, scale, 1.0])
    homography = s @ np.loadtxt(root / "H_1_2") @ np.linalg.inv(s)
    f0, f1 = disk_real.extract_batch([im0, im1])
    sim = f0.descriptors @ f1.descriptors.T
    nn01, nn10 = sim.argmax(1), sim.argmax(0)
    i0 = torch.nonzero(nn10[nn01] == torch.arange(len(f0)))[:, 0]
    p0, p1 = f0.keypoints_np[i0.numpy()], f1.keypoints_np[nn01[i0].numpy()]
    proj = np.c_[p0, np.ones(len(p0))] @ homography.T
    err = np.linalg.norm(proj[:, :2] / proj[:, 2:] - p1, axis=1)
    assert len(i0) >= 150
    assert (err < 3.0).mean() >= 0.8
