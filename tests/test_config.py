"""Configuration machinery: defaults, YAML files and key=value overrides (slam.config)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import pytest
import yaml

from slam.config import Config, apply_dict, dump_yaml, load_config, parse_override
from slam.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def _all_leaf_keys(obj, prefix=""):
    """Dotted names of every non-dataclass field of a config tree."""
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out += _all_leaf_keys(v, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def test_defaults_validate_and_have_expected_values():
    cfg = load_config()
    cfg.validate()
    assert cfg.mode == "rgbd"
    assert cfg.tracking.keyframes.min_interval == Config().tracking.keyframes.min_interval
    # every section is a dataclass and there are many leaf keys
    assert len(_all_leaf_keys(cfg)) > 50


def test_defaults_are_independent_instances():
    a, b = Config(), Config()
    a.tracking.keyframes.min_interval = 99
    a.superglue.keypoint_encoder.append(7)
    assert b.tracking.keyframes.min_interval != 99
    assert 7 not in b.superglue.keypoint_encoder


def test_dump_yaml_round_trips():
    cfg = load_config(overrides=["mode=mono", "tracking.min_inliers=33", "orb.n_features=777"])
    data = yaml.safe_load(dump_yaml(cfg))
    again = Config()
    apply_dict(again, data)
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)


def test_yaml_then_overrides_apply_in_order(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("mode: mono\ntracking:\n  min_inliers: 11\n  search_radius_px: 7.5\norb:\n  n_features: 500\n")
    b.write_text("tracking:\n  min_inliers: 22\n")
    cfg = load_config([a, b], ["orb.n_features=1500", "orb.n_features=1600", "mode=rgbd"])
    assert cfg.tracking.min_inliers == 22  # b after a
    assert cfg.tracking.search_radius_px == 7.5  # a, untouched by b
    assert cfg.orb.n_features == 1600  # last override wins
    assert cfg.mode == "rgbd"  # overrides after files
    # untouched keys keep their defaults
    assert cfg.tracking.max_depth == Config().tracking.max_depth


def test_nested_override_keys():
    cfg = load_config(overrides=["tracking.keyframes.min_interval=3", "runtime.threaded=false",
                                 "superglue.keypoint_encoder=[8, 16]"])
    assert cfg.tracking.keyframes.min_interval == 3
    assert isinstance(cfg.tracking.keyframes.min_interval, int)
    assert cfg.runtime.threaded is False
    assert cfg.superglue.keypoint_encoder == [8, 16]


@dataclasses.dataclass
class _Inner:
    path: Optional[str] = "x"  # Optional field
    sizes: tuple[int, ...] = (1, 2)


@dataclasses.dataclass
class _Outer:
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    ratio: float = 0.5


def test_apply_dict_on_any_dataclass_tree_optional_and_tuple():
    obj = _Outer()
    apply_dict(obj, parse_override("inner.path=null"))
    assert obj.inner.path is None
    apply_dict(obj, parse_override("inner.path=abc"))
    assert obj.inner.path == "abc"
    apply_dict(obj, parse_override("inner.sizes=[3, 4, 5]"))
    assert obj.inner.sizes == (3, 4, 5)
    apply_dict(obj, {"ratio": "0.25"})
    assert obj.ratio == 0.25
    with pytest.raises(ConfigError, match="inner.nope"):
        apply_dict(obj, {"inner": {"nope": 1}})


def test_parse_override_builds_nested_dict_with_yaml_scalars():
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}
    assert parse_override("x=1.5") == {"x": 1.5}
    assert parse_override("flag=true") == {"flag": True}
    assert parse_override("name=hello") == {"name": "hello"}
    assert parse_override("s=a=b") == {"s": "a=b"}  # only the first '=' splits
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("no_equals_sign")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("=3")


def test_type_coercion_of_strings():
    cfg = load_config(overrides=["tracking.bf=40", "orb.n_features=1200.0", "output.kitti=yes"])
    assert isinstance(cfg.tracking.bf, float) and cfg.tracking.bf == 40.0
    assert isinstance(cfg.orb.n_features, int) and cfg.orb.n_features == 1200
    assert cfg.output.kitti is True


def test_unknown_top_level_key_lists_valid_keys():
    with pytest.raises(ConfigError) as ei:
        load_config(overrides=["trackin.min_inliers=3"])
    msg = str(ei.value)
    assert "trackin" in msg
    for valid in ("tracking", "mapping", "runtime", "features", "matcher"):
        assert valid in msg


def test_unknown_nested_key_lists_valid_keys_of_that_section():
    with pytest.raises(ConfigError) as ei:
        load_config(overrides=["tracking.keyframes.min_intervall=3"])
    msg = str(ei.value)
    assert "tracking.keyframes.min_intervall" in msg
    assert "min_interval" in msg and "max_interval" in msg
    assert "tracking.keyframes" in msg


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("tracking:\n  not_a_key: 1\n")
    with pytest.raises(ConfigError) as ei:
        load_config([p])
    assert str(p) in str(ei.value)
    assert "tracking.not_a_key" in str(ei.value)


@pytest.mark.parametrize("override, key", [
    ("tracking.min_inliers=abc", "tracking.min_inliers"),
    ("tracking.bf=[1, 2]", "tracking.bf"),
    ("runtime.threaded=maybe", "runtime.threaded"),
    ("superglue.keypoint_encoder=7", "superglue.keypoint_encoder"),
    ("orb.n_features=1500.7", "orb.n_features"),
    ("orb.n_features=true", "orb.n_features"),
])
def test_bad_type_is_config_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_section_given_a_scalar_is_config_error():
    with pytest.raises(ConfigError, match="tracking"):
        load_config(overrides=["tracking=5"])


@pytest.mark.parametrize("override", ["mode=lidar", "features=sift", "matcher=flann", "device=tpu", "viewer=rerun"])
def test_invalid_choice_is_rejected_with_choices(override):
    with pytest.raises(ConfigError, match="choose one of"):
        load_config(overrides=[override])


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracking: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config([lst])


def test_empty_yaml_is_allowed(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing\n")
    assert dataclasses.asdict(load_config([p])) == dataclasses.asdict(Config())


def test_shipped_configs_exist():
    names = {p.name for p in SHIPPED_CONFIGS}
    assert {"tum_rgbd.yaml", "tum_mono.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config([path])
    cfg.validate()
    data = yaml.safe_load(path.read_text()) or {}
    # every top-level scalar in the file is what the config holds
    for k, v in data.items():
        if not isinstance(v, dict):
            assert getattr(cfg, k) == v, f"{path.name}: {k}"


def test_shipped_tum_configs_content():
    rgbd = load_config([REPO_ROOT / "configs" / "tum_rgbd.yaml"])
    mono = load_config([REPO_ROOT / "configs" / "tum_mono.yaml"])
    assert rgbd.mode == "rgbd" and mono.mode == "mono"
    assert rgbd.features == mono.features == "orb"
    assert rgbd.matcher == mono.matcher == "nn"
    assert rgbd.tracking.keyframes.min_interval == 8


@pytest.mark.parametrize("override, key, words", [
    ("orb.n_features=-5", "orb.n_features", ">= 1"),
    ("orb.n_features=0", "orb.n_features", ">= 1"),
    ("orb.scale_factor=1.0", "orb.scale_factor", "> 1.0"),
    ("tracking.match_ratio=1.5", "tracking.match_ratio", "<= 1.0"),
    ("runtime.queue_size=0", "runtime.queue_size", ">= 1"),
    ("max_frames=-3", "max_frames", ">= 0"),
    ("superglue.keypoint_encoder=[8, -1]", "superglue.keypoint_encoder", ">= 1"),
    ("superpoint.precision=fp8", "superpoint.precision", "choose one of"),
    ("mapping.triangulation_match=all", "mapping.triangulation_match", "choose one of"),
])
def test_values_out_of_their_declared_range_are_config_errors(override, key, words):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value) and words in str(err.value)


def test_whole_numbers_are_taken_for_int_keys():
    assert load_config(overrides=["orb.n_features=1500.0"]).orb.n_features == 1500
    assert load_config(overrides=["orb.n_features=1500"]).orb.n_features == 1500


def test_config_module_is_light():
    import subprocess
    import sys

    code = "import sys, slam.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
