"""Shared pytest fixtures: where the shared data lives, GPU skipping."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def textured_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """The extractor tests' procedural image: (h, w, 3) uint8 BGR, random filled rectangles and
    circles on a smooth background (SuperPoint's bf16 probe uses slam.features.base.synthetic_image)."""
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


def shared_data_root() -> Path:
    """../shared/data beside the checkout, or $SLAM_SHARED_DATA."""
    env = os.environ.get("SLAM_SHARED_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def restore_slam_logging():
    """Put the 'slam' logger's level and handlers back after a test (the CLI configures it)."""
    logger = logging.getLogger("slam")
    level, handlers = logger.level, list(logger.handlers)
    yield
    for h in logger.handlers[:]:
        if h not in handlers:
            logger.removeHandler(h)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a test module, restored afterwards: on a CPU shared by many
    processes, OpenMP spin-waiting makes small matrices many times slower with 2 threads than with
    1. Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set SLAM_SHARED_DATA or place it beside the checkout)")
    return root


@pytest.fixture(scope="session")
def fr1_xyz(shared_data: Path) -> Path:
    seq = shared_data / "tum" / "rgbd_dataset_freiburg1_xyz"
    if not (seq / "rgb.txt").is_file():
        pytest.skip(f"TUM fr1_xyz not found at {seq}")
    return seq


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; torch sees none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
