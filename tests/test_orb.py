"""ORB baseline extractor (slam.features.orb)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from slam.features.orb import ORBConfig, ORBExtractor
from slam.matching.nn import NearestNeighborMatcher, NNConfig
from slam.types import Features


def textured_image(seed: int = 0, w: int = 640, h: int = 480, right_contrast: float = 1.0) -> np.ndarray:
    """A BGR image with multi-scale texture (blurred noise + random shapes)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    for scale, amp in ((4, 60.0), (16, 50.0), (48, 40.0)):
        small = rng.normal(size=(h // scale + 2, w // scale + 2)).astype(np.float32)
        img += amp * cv2.resize(small, (w + 2 * scale, h + 2 * scale), interpolation=cv2.INTER_CUBIC)[scale:scale + h, scale:scale + w]
    canvas = np.clip(img + 128, 0, 255).astype(np.uint8)
    for _ in range(150):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        col = int(rng.integers(0, 256))
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (x, y), (x + int(rng.integers(5, 40)), y + int(rng.integers(5, 40))), col, -1)
        else:
            cv2.circle(canvas, (x, y), int(rng.integers(3, 20)), col, -1)
    if right_contrast != 1.0:  # the right half gets weaker texture (e.g. a shadow)
        right = canvas[:, w // 2:].astype(np.float32)
        canvas[:, w // 2:] = np.clip((right - 128) * right_contrast + 128, 0, 255).astype(np.uint8)
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(0)


def test_output_types_and_shapes(image):
    cfg = ORBConfig(n_features=800)
    f = ORBExtractor(cfg, "cpu").extract(image)
    n = len(f)
    assert 0.9 * cfg.n_features <= n <= cfg.n_features
    assert f.keypoints.dtype == torch.float32 and f.keypoints.shape == (n, 2)
    assert f.scores.shape == (n,) and f.scores.dtype == torch.float32
    assert f.descriptors.dtype == torch.uint8 and f.descriptors.shape == (n, 32)
    assert f.image_size == (640, 480)
    assert f.binary
    kp = f.keypoints.numpy()
    assert kp[:, 0].min() >= 0 and kp[:, 0].max() < 640 and kp[:, 1].min() >= 0 and kp[:, 1].max() < 480


def test_octave_extra_present_and_multiscale(image):
    ext = ORBExtractor(ORBConfig(n_features=1000), "cpu")
    f = ext.extract(image)
    oct_ = f.extra["octave"]
    assert isinstance(oct_, torch.Tensor) and oct_.shape == (len(f),) and oct_.dtype == torch.int64
    o = oct_.numpy()
    assert o.min() >= 0 and o.max() < ext.cfg.n_levels
    assert len(np.unique(o)) >= 4  # keypoints come from several pyramid levels
    np.testing.assert_allclose(ext.sigma2_per_level, 1.2 ** (2 * np.arange(8)))
    # subset keeps the octave aligned
    sub = f.subset(np.array([0, 5, 7]))
    assert sub.extra["octave"].tolist() == [o[0], o[5], o[7]]


def _cell_counts(kp: np.ndarray, cols: int, rows: int, w: int = 640, h: int = 480) -> np.ndarray:
    cx = np.clip((kp[:, 0] * cols / w).astype(int), 0, cols - 1)
    cy = np.clip((kp[:, 1] * rows / h).astype(int), 0, rows - 1)
    return np.bincount(cy * cols + cx, minlength=cols * rows)


def test_keypoints_cover_the_grid(image):
    cfg = ORBConfig(n_features=1000)
    f = ORBExtractor(cfg, "cpu").extract(image)
    counts = _cell_counts(f.keypoints.numpy(), cfg.grid_cols, cfg.grid_rows)
    # every cell away from the border (edge_threshold) has keypoints
    inner = counts.reshape(cfg.grid_rows, cfg.grid_cols)[1:-1, 1:-1]
    assert (inner > 0).mean() > 0.95
    # no cell hoards keypoints
    assert counts.max() <= 4 * cfg.n_features / (cfg.grid_cols * cfg.grid_rows)


def _right_half_fractions(right_contrast: float, n: int = 1000) -> tuple[float, float, float]:
    """Fractions of keypoints in the right half: ours, plain OpenCV ORB, all FAST corners."""
    img = textured_image(1, right_contrast=right_contrast)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    ours = ORBExtractor(ORBConfig(n_features=n), "cpu").extract(img).keypoints.numpy()
    plain = np.array([k.pt for k in cv2.ORB_create(nfeatures=n, fastThreshold=12).detect(gray, None)])
    fast = np.array([k.pt for k in cv2.FastFeatureDetector_create(12).detect(gray)])
    return float(np.mean(ours[:, 0] >= 320)), float(np.mean(plain[:, 0] >= 320)), float(np.mean(fast[:, 0] >= 320))


def test_bucketing_spreads_keypoints_into_weaker_texture():
    ours, plain, fast = _right_half_fractions(0.8)
    assert fast > 0.4  # corners exist on both sides
    assert ours > 0.3
    assert ours > plain + 0.15  # plain ORB keeps mostly the strong half


def test_bucketing_reaches_low_contrast_half():
    ours, plain, fast = _right_half_fractions(0.5)
    assert fast > 0.4
    assert ours > 0.2


def test_grey_and_bgr_inputs_agree(image):
    ext = ORBExtractor(ORBConfig(n_features=500), "cpu")
    a = ext.extract(image)
    b = ext.extract(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(a.keypoints.numpy(), b.keypoints.numpy())
    np.testing.assert_array_equal(a.descriptors.numpy(), b.descriptors.numpy())


def test_extract_batch_equals_extract(image):
    ext = ORBExtractor(ORBConfig(n_features=400), "cpu")
    imgs = [image, textured_image(3)]
    batch = ext.extract_batch(imgs)
    assert len(batch) == 2
    for f, im in zip(batch, imgs):
        g = ext.extract(im)
        np.testing.assert_array_equal(f.keypoints.numpy(), g.keypoints.numpy())
        np.testing.assert_array_equal(f.descriptors.numpy(), g.descriptors.numpy())


def test_blank_image_gives_empty_features():
    f = ORBExtractor(ORBConfig(), "cpu").extract(np.full((480, 640, 3), 90, np.uint8))
    assert isinstance(f, Features)
    assert len(f) == 0
    assert f.descriptors.shape == (0, 32) and f.descriptors.dtype == torch.uint8
    assert f.image_size == (640, 480)


def test_few_corners_keeps_all_detections():
    img = np.full((480, 640), 100, np.uint8)
    for i in range(6):
        cv2.rectangle(img, (60 + 90 * i, 200), (100 + 90 * i, 240), 230, -1)
    f = ORBExtractor(ORBConfig(n_features=1000), "cpu").extract(img)
    assert 0 < len(f) < 1000


def test_shifted_image_matches_with_nn(image):
    """Keypoints are repeatable: matching an image with a shifted copy recovers the shift."""
    dx, dy = 9, 5
    shifted = np.zeros_like(image)
    shifted[dy:, dx:] = image[:-dy, :-dx]
    ext = ORBExtractor(ORBConfig(n_features=1000), "cpu")
    f0, f1 = ext.extract(image), ext.extract(shifted)
    m = NearestNeighborMatcher(NNConfig(), "cpu").match(f0, f1)
    pairs = m.pairs()
    assert len(pairs) > 300
    d = f1.keypoints.numpy()[pairs[:, 1]] - f0.keypoints.numpy()[pairs[:, 0]]
    good = np.linalg.norm(d - [dx, dy], axis=1) < 1.5
    assert good.mean() > 0.9


def test_pair_extracted_at_once_equals_one_by_one(image):
    """A stereo pair goes through two detectors in two threads; the result must equal extracting
    each image alone (keypoints, octaves, descriptors), on every call."""
    ext = ORBExtractor(ORBConfig(n_features=500))
    other = np.ascontiguousarray(image[:, ::-1])
    for _ in range(2):
        pair = ext.extract_batch([image, other])
        for got, im in zip(pair, (image, other)):
            want = ext.extract(im)
            assert len(got) == len(want) > 100
            assert torch.equal(got.keypoints, want.keypoints)
            assert torch.equal(got.descriptors, want.descriptors)
            assert torch.equal(got.extra["octave"], want.extra["octave"])
