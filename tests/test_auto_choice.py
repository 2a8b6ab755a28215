"""What slam.system.resolve_config decides for `auto` settings: the learned default pair from
the installed weights (the weights lookup is monkeypatched), learned_matching per device, and
the guided-search threshold per extractor."""
from __future__ import annotations

import logging
from types import SimpleNamespace

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


def test_monocular_local_ba_window_per_extractor(monkeypatch):
    """mapping.ba_window_mono / ba_iterations_mono auto (0): the large converged window (20, 10)
    where a heavy extractor bounds the frame rate on a CPU, the light one (6, 5) for XFeat and
    ORB and on CUDA; set values are kept; a LocalMapper given auto uses the light one."""
    installed(monkeypatch, *ALL)
    for feats in ("aliked", "superpoint", "disk"):
        m = resolved("cpu", f"features={feats}").mapping
        assert (m.ba_window_mono, m.ba_iterations_mono) == (20, 10), feats
    for feats in ("xfeat", "orb", "auto"):
        m = resolved("cpu", f"features={feats}").mapping
        assert (m.ba_window_mono, m.ba_iterations_mono) == (6, 5), feats
    m = resolved("cpu", "features=aliked", "mapping.ba_window_mono=8").mapping
    assert (m.ba_window_mono, m.ba_iterations_mono) == (8, 10)  # an explicit value is kept
    m = resolved("cpu", "features=orb", "mapping.ba_iterations_mono=7").mapping
    assert (m.ba_window_mono, m.ba_iterations_mono) == (6, 7)
    cuda = load_config(None, ["features=aliked"])
    cuda.device = "cuda"
    monkeypatch.setattr(system, "resolve_device", lambda name: SimpleNamespace(type=name))  # no GPU needed
    m = resolve_config(cuda).mapping
    assert (m.ba_window_mono, m.ba_iterations_mono) == (6, 5)  # unmeasured on a GPU: the light window
    from slam.mapping.config import MappingConfig, mono_local_ba

    assert mono_local_ba(MappingConfig()) == (6, 5)


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
