"""What slam.system.resolve_config decides for `auto` settings: the learned default pair from
the installed weights (the weights lookup is monkeypatched), learned_matching per device, and
the guided-search threshold per extractor."""
from __future__ import annotations

import logging

import pytest

import slam.system as system
from slam.config import load_config
from slam.system import resolve_config


def installed(monkeypatch, *names: str) -> None:
    """Pretend exactly these weights are installed."""
    monkeypatch.setattr(system, "weights_installed", lambda name: name in names)


def resolved(device: str, *overrides: str):
    """resolve_config for a device type without needing that device (cuda is only a label here)."""
    cfg = load_config(None, list(overrides))
    cfg.device = "cpu"
    out = resolve_config(cfg)
    if device == "cpu":
        return out
    cfg.features, cfg.matcher = system.choose_features_and_matcher(cfg, device)[:2]
    return cfg


ALL = ("xfeat", "xfeat_lighterglue", "superpoint_ours", "superglue_ours", "aliked_lightglue")


@pytest.mark.parametrize("names, want", [
    (ALL, ("xfeat", "lightglue")),
    (("xfeat",), ("xfeat", "nn")),
    (("superpoint_ours", "superglue_ours"), ("orb", "nn")),  # SuperPoint + SuperGlue are a CUDA default only
    ((), ("orb", "nn")),
])
def test_auto_on_cpu(monkeypatch, names, want):
    installed(monkeypatch, *names)
    cfg = resolved("cpu")
    assert (cfg.features, cfg.matcher) == want
    assert cfg.tracking.learned_matching == "keyframes"


@pytest.mark.parametrize("names, want", [
    (ALL, ("superpoint", "superglue")),
    (("xfeat", "xfeat_lighterglue"), ("xfeat", "lightglue")),
    (("superpoint_ours",), ("orb", "nn")),  # SuperPoint without SuperGlue, XFeat absent: nothing learned pairs
    ((), ("orb", "nn")),
])
def test_auto_on_cuda(monkeypatch, names, want):
    installed(monkeypatch, *names)
    feats, matcher, _, _ = system.choose_features_and_matcher(load_config(), "cuda")
    assert (feats, matcher) == want


def test_auto_on_cuda_takes_magic_leap_weights_when_ours_are_missing(monkeypatch):
    installed(monkeypatch, "superpoint_v1", "superglue_indoor")
    feats, matcher, _, weights = system.choose_features_and_matcher(load_config(), "cuda")
    assert (feats, matcher) == ("superpoint", "superglue") and "superpoint_v1" in weights


def test_auto_with_one_side_given(monkeypatch):
    installed(monkeypatch, *ALL)
    assert resolved("cpu", "features=orb").matcher == "nn"
    assert resolved("cpu", "features=aliked").matcher == "lightglue"
    cfg = resolved("cpu", "features=xfeat")
    assert cfg.matcher == "lightglue" and cfg.lightglue.features == "xfeat"
    assert resolved("cpu", "matcher=superglue").features == "superpoint"
    assert resolved("cpu", "matcher=nn").features == "xfeat"
    installed(monkeypatch)
    assert resolved("cpu", "features=aliked").matcher == "nn"
    assert resolved("cpu", "matcher=lightglue").features == "aliked"


def test_the_choice_is_logged(monkeypatch, caplog):
    installed(monkeypatch, *ALL)
    with caplog.at_level(logging.INFO, logger="slam.system"):
        resolved("cpu")
    assert "features=auto matcher=auto -> xfeat + lightglue" in caplog.text


def test_learned_matching_and_thresholds(monkeypatch):
    installed(monkeypatch, *ALL)
    cfg = resolved("cpu", "features=xfeat")
    assert cfg.tracking.max_desc_dist_float == 0.7 and cfg.mapping.max_desc_dist_float == 0.7
    cfg = resolved("cpu", "features=aliked", "tracking.learned_matching=every_frame")
    assert cfg.tracking.learned_matching == "every_frame"  # an explicit choice is kept
    assert cfg.tracking.max_desc_dist_float == 0.8 and cfg.mapping.max_desc_dist_float == 0.8  # ALIKED's own
    assert resolved("cpu", "features=disk").tracking.max_desc_dist_float == 0.9  # the default for 128/256-D
    assert resolved("cpu", "features=xfeat", "tracking.max_desc_dist_float=0.8").tracking.max_desc_dist_float == 0.8
    from slam.tracking.config import default_learned_matching

    assert default_learned_matching("cuda") == "every_frame" and default_learned_matching("cpu") == "keyframes"


def test_bad_learned_matching_is_a_config_error():
    from slam.errors import ConfigError

    with pytest.raises(ConfigError, match="learned_matching"):
        load_config(None, ["tracking.learned_matching=sometimes"])


def test_real_lookup_sees_installed_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
    assert system.weights_installed("xfeat") is False  # an empty cache
    assert system.weights_installed(str(tmp_path / "none.pt")) is False
    f = tmp_path / "mine.pt"
    f.write_bytes(b"x")
    assert system.weights_installed(str(f)) is True
