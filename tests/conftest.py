"""Shared pytest fixtures: where the shared data lives, GPU skipping."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


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
