"""XFeat in int8 (slam.features.xfeat_int8): calibration, the quantized layers against fp32, the
precision choice, and the committed calibration with the released weights (skip when not
installed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slam.errors import ConfigError, WeightsError
from slam.features import xfeat_int8
from slam.features.xfeat import XFeat, XFeatConfig, network_input
from slam.weights import resolve_weights
from conftest import textured_image
from test_xfeat import random_net

pytestmark = [pytest.mark.skipif(not xfeat_int8.int8_available(), reason="torch's quantized engine here is not x86/fbgemm"),
              pytest.mark.usefixtures("one_torch_thread")]


def greys(n: int, h: int = 96, w: int = 128, first_seed: int = 20) -> list[torch.Tensor]:
    return [network_input([textured_image(h, w, first_seed + i)], torch.device("cpu"))[0] for i in range(n)]


def calibrated(seed: int = 0) -> tuple[XFeat, dict]:
    ext = XFeat(XFeatConfig(detection_threshold=0.0, max_keypoints=60, subpixel=False, precision="fp32"), "cpu",
                state_dict=random_net(seed).state_dict())
    return ext, xfeat_int8.calibrate(ext.net, greys(4))


def test_calibration_records_every_3x3_layer_and_which_inputs_can_be_negative():
    ext, ranges = calibrated()
    assert len(ranges) == 16
    signed = {name for name, r in ranges.items() if r["signed_in"]}
    # the normalised image (first layer) and block 2's input (block 1 plus its skip branch, no ReLU)
    assert signed == {"block1.0.first", "block2.0"}
    # within a block each layer's input is the previous layer's output
    assert ranges["block1.1"]["in"] == pytest.approx(ranges["block1.0.second"]["out"])
    assert ranges["block4.2"]["in"] == pytest.approx(ranges["block4.1"]["out"])
    assert all(r["in"] > 0 and r["out"] > 0 for r in ranges.values())


def test_calibration_needs_an_image():
    ext, _ = calibrated()
    with pytest.raises(ConfigError):
        xfeat_int8.calibrate(ext.net, [])


@pytest.mark.parametrize("reduce_range", [True, False])
def test_an_int8_layer_equals_the_fp32_convolution_within_its_quantization_steps(reduce_range):
    if not reduce_range and not xfeat_int8.cpu_has_vnni():
        pytest.skip("8-bit activations overflow 16-bit pair sums on a CPU without VNNI (the network uses 7 bits there)")
    ext, ranges = calibrated()
    conv = ext.net.block2[0]
    r = ranges["block2.0"]
    layer = xfeat_int8._Int8Conv(conv, r, reduce_range)
    x = torch.randn(1, conv.weight.shape[1], 24, 32) * r["in"] / 3
    y_ref = conv(x.contiguous(memory_format=torch.channels_last))
    y = layer(x).dequantize()
    # error budget: input step x |w| summed over the kernel, the weights' step, and the output step
    w = conv.weight.detach()
    in_step = layer.in_scale
    assert in_step == pytest.approx(r["in"] / (63 if reduce_range else 127))
    bound = (in_step / 2 * w.abs().sum(dim=(1, 2, 3)) + (w.abs().amax(dim=(1, 2, 3)) / 254) * x.abs().max() * 9 * w.shape[1]
             + layer.q.scale)[None, :, None, None]
    inside = y_ref.abs() <= r["out"]  # beyond the calibrated range the output saturates
    assert bool(((y - y_ref).abs() <= bound)[inside.expand_as(y)].all())
    assert float((y - y_ref)[inside].abs().mean()) < 0.05 * float(y_ref[inside].abs().mean())
    # the sign of the input matters: with an unsigned input zero point, negative inputs are lost
    unsigned = xfeat_int8._Int8Conv(conv, {**r, "signed_in": False}, reduce_range)
    assert float((unsigned(x).dequantize() - y_ref).abs().mean()) > 3 * float((y - y_ref).abs().mean())


def test_activations_take_7_bits_where_the_cpu_lacks_vnni(monkeypatch):
    ext, ranges = calibrated()
    for vnni in (True, False):
        monkeypatch.setattr(xfeat_int8, "cpu_has_vnni", lambda vnni=vnni: vnni)
        q = xfeat_int8.XFeatInt8(ext.net, ranges)
        assert q.reduce_range is (not vnni)
        layer = q.net.block2[0]  # its input can be negative: zero point at mid-range
        assert layer.in_zero == (128 if vnni else 64)
    assert isinstance(xfeat_int8.cpu_has_vnni(), bool)


def test_the_int8_network_gives_the_fp32_outputs_up_to_quantization():
    ext, ranges = calibrated(1)
    q = xfeat_int8.XFeatInt8(ext.net, ranges).eval()
    g = greys(1, first_seed=40)[0].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, out = ext.net(g), q(g)
    for a, b in zip(ref, out):
        assert a.shape == b.shape and not b.is_quantized
        cos = torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0)
        assert float(cos) > 0.99
    # the dense descriptors, per cell
    cos_cells = torch.nn.functional.cosine_similarity(ref[0], out[0], dim=1)
    assert float(cos_cells.median()) > 0.99


def test_int8_extraction_batch_equals_single(monkeypatch):
    ext, ranges = calibrated(2)
    sd = random_net(2).state_dict()
    monkeypatch.setattr(xfeat_int8, "load_calibration", lambda fp, path=None: ranges)
    q = XFeat(XFeatConfig(detection_threshold=0.0, max_keypoints=60, subpixel=False, precision="int8"), "cpu", state_dict=sd)
    assert q.precision == "int8"
    imgs = [textured_image(96, 128, 50), textured_image(96, 128, 51)]
    for img, fb in zip(imgs, q.extract_batch(imgs)):
        fs = q.extract(img)
        torch.testing.assert_close(fb.keypoints, fs.keypoints)
        torch.testing.assert_close(fb.descriptors, fs.descriptors, rtol=0, atol=1e-5)


def test_int8_is_opt_in_and_needs_a_calibration(monkeypatch):
    ext, ranges = calibrated(3)
    sd = random_net(3).state_dict()
    cfg = dict(detection_threshold=0.0, max_keypoints=60)
    monkeypatch.setattr(xfeat_int8, "load_calibration", lambda fp, path=None: None)
    with pytest.raises(ConfigError, match="calibration"):
        XFeat(XFeatConfig(precision="int8", **cfg), "cpu", state_dict=sd)
    monkeypatch.setattr(xfeat_int8, "load_calibration", lambda fp, path=None: ranges)
    assert XFeat(XFeatConfig(**cfg), "cpu", state_dict=sd).precision in ("fp32", "bf16")  # auto never picks int8
    assert XFeat(XFeatConfig(precision="int8", **cfg), "cpu", state_dict=sd).precision == "int8"
    plain = XFeat(XFeatConfig(precision="fp32", **cfg), "cpu", state_dict=sd)
    with pytest.raises(ConfigError):  # no int8 network was built for it
        plain.compare_precision("int8", textured_image(64, 64, 1))


def test_fingerprint_follows_the_weights_not_the_file():
    a, b = random_net(5).state_dict(), random_net(5).state_dict()
    assert xfeat_int8.weights_fingerprint(a) == xfeat_int8.weights_fingerprint(b)
    b["block1.0.layer.0.weight"] = b["block1.0.layer.0.weight"] + 1e-3
    assert xfeat_int8.weights_fingerprint(a) != xfeat_int8.weights_fingerprint(b)


def test_load_calibration_reads_the_entry_of_the_fingerprint(tmp_path: Path):
    f = tmp_path / "cal.json"
    f.write_text(json.dumps({"abc": {"layers": {"block1.1": {"in": 1.0, "out": 2.0, "signed_in": False}}}}))
    assert xfeat_int8.load_calibration("abc", f) == {"block1.1": {"in": 1.0, "out": 2.0, "signed_in": False}}
    assert xfeat_int8.load_calibration("other", f) is None
    assert xfeat_int8.load_calibration("abc", tmp_path / "missing.json") is None


# ----------------------------------------------------------------------------- released weights


@pytest.fixture(scope="module")
def real_state_dict() -> dict:
    try:
        path = resolve_weights("xfeat")
    except WeightsError as exc:
        pytest.skip(f"XFeat weights not installed: {exc}")
    return torch.load(path, map_location="cpu", weights_only=True)


def test_the_released_weights_have_a_committed_calibration(real_state_dict):
    assert xfeat_int8.load_calibration(xfeat_int8.weights_fingerprint(real_state_dict)) is not None
    assert XFeat(XFeatConfig(precision="int8"), "cpu", state_dict=real_state_dict).precision == "int8"


def test_real_weights_int8_keeps_the_keypoints_and_descriptors(real_state_dict):
    ext = XFeat(XFeatConfig(precision="int8"), "cpu", state_dict=real_state_dict)
    rng = np.random.default_rng(0)
    for seed in rng.integers(0, 1000, 2):
        check = ext.compare_precision("int8", textured_image(480, 640, int(seed)))
        assert check["n_test"] == check["n_fp32"] == 1024
        assert check["exact"] >= 0.9 and check["repeatability"] >= 0.93
        assert check["descriptor_cosine"] > 0.99
