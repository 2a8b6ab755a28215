"""slam.device: device resolution and the one precision resolver every model uses."""
from __future__ import annotations

import pytest
import torch

from slam import device as dev_mod
from slam.device import autocast, check_precision, resolve_device, resolve_precision
from slam.errors import ConfigError, DeviceError, SlamError

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_one_device_error_line():
    with pytest.raises(DeviceError) as info:
        resolve_device("cuda")
    msg = str(info.value)
    assert isinstance(info.value, SlamError) and "\n" not in msg
    assert "no CUDA GPU" in msg and "--device cpu" in msg


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_per_device(monkeypatch, native):
    monkeypatch.setattr(dev_mod, "native_bf16", lambda device: native)
    assert resolve_precision("auto", CPU, "m") == "fp32"  # default: fp32 on CPU
    assert resolve_precision("auto", CPU, "m", cpu_auto="bf16") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", CUDA, "m") == "fp16"
    assert resolve_precision("auto", CUDA, "m", cuda_auto="bf16") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", torch.device("meta"), "m", cpu_auto="bf16") == "fp32"


@pytest.mark.parametrize("vendor", ["AuthenticAMD", "GenuineIntel", ""])
@pytest.mark.parametrize("avx512_bf16", [True, False])
def test_models_that_opt_in_take_bf16_on_amd_cpus_with_avx512_bf16(monkeypatch, vendor, avx512_bf16):
    # AMD EPYC (AVX512-BF16, no AMX): bf16 products 3.6x fp32's speed, SuperGlue 1.33x; the Intel
    # VM without AMX ran bf16 slower than fp32, so only AMD counts, and only for models that opt in
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(dev_mod, "cpu_vendor", lambda: vendor)
    fast = avx512_bf16 and vendor == "AuthenticAMD"
    assert dev_mod.fast_cpu_bf16_matmul() is fast
    assert dev_mod.native_bf16(CPU) is False
    assert resolve_precision("auto", CPU, "m", cpu_auto="bf16", amd_avx512_bf16=True) == ("bf16" if fast else "fp32")
    assert resolve_precision("auto", CPU, "m", cpu_auto="bf16") == "fp32"  # not opted in
    assert resolve_precision("auto", CPU, "m", amd_avx512_bf16=True) == "fp32"  # the model's auto is fp32
    assert resolve_precision("fp32", CPU, "m", cpu_auto="bf16", amd_avx512_bf16=True) == "fp32"
    assert resolve_precision("auto", CUDA, "m", amd_avx512_bf16=True) == "fp16"
    # a probe still decides where it is given
    assert resolve_precision("auto", CPU, "m", cpu_auto="bf16", amd_avx512_bf16=True, probe=lambda: 0.5,
                             min_quality=0.9) == "fp32"


def test_cpu_vendor_reads_proc_cpuinfo_or_returns_empty():
    v = dev_mod.cpu_vendor()
    assert isinstance(v, str) and "\n" not in v and v == v.strip()


@pytest.mark.parametrize("amx", [True, False])
def test_native_bf16_on_the_cpu_means_amx_not_only_avx512_bf16(monkeypatch, amx):
    # oneDNN reports bf16 support on AVX512-BF16 CPUs, where its bf16 kernels can be slower
    # than fp32 (docs/benchmarks.md section 13): only AMX counts as native here
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert dev_mod.native_bf16(CPU) is amx
    assert resolve_precision("auto", CPU, "m", cpu_auto="bf16") == ("bf16" if amx else "fp32")


def test_explicit_precision_is_kept_and_validated():
    for p in ("fp32", "bf16", "BF16"):
        assert resolve_precision(p, CPU, "m") == p.lower()
    assert resolve_precision("fp16", CUDA, "m") == "fp16"
    with pytest.raises(ConfigError, match=r"m\.precision='fp8' is not valid; choose auto, fp32, fp16 or bf16"):
        resolve_precision("fp8", CPU, "m")
    with pytest.raises(ConfigError, match=r"m\.precision=fp16 needs a CUDA device"):
        check_precision("fp16", CPU, "m")



@pytest.mark.parametrize("avx512_bf16,amx,warned", [(False, False, True), (True, False, False), (False, True, False)])
def test_explicit_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, caplog, avx512_bf16, amx, warned):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    with caplog.at_level("WARNING", logger="slam.device"):
        assert resolve_precision("bf16", CPU, "loftr") == "bf16"  # still what was asked for
        resolve_precision("fp32", CPU, "loftr")
        resolve_precision("auto", CPU, "loftr", cpu_auto="bf16")
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert "loftr.precision=bf16" in lines[0] and "emulated" in lines[0] and "loftr.precision=fp32" in lines[0]

def test_bf16_probe_decides_auto_on_cpu_only(monkeypatch):
    monkeypatch.setattr(dev_mod, "native_bf16", lambda device: True)
    calls = []

    def probe(score):
        return lambda: calls.append(score) or score

    assert resolve_precision("auto", CPU, "m", cpu_auto="bf16", probe=probe(0.95), min_quality=0.9) == "bf16"
    assert resolve_precision("auto", CPU, "m", cpu_auto="bf16", probe=probe(0.85), min_quality=0.9) == "fp32"
    assert calls == [0.95, 0.85]
    # explicit settings and non-bf16 choices never run the probe
    assert resolve_precision("bf16", CPU, "m", probe=probe(0.0), min_quality=0.9) == "bf16"
    assert resolve_precision("auto", CUDA, "m", probe=probe(0.0), min_quality=0.9) == "fp16"
    assert resolve_precision("auto", CPU, "m", probe=probe(0.0), min_quality=0.9) == "fp32"
    assert calls == [0.95, 0.85]


def test_autocast_context():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with autocast(CPU, "fp32"):
        assert (x @ w).dtype == torch.float32
    with autocast(CPU, "bf16"):
        assert (x @ w).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="not resolved"):
        autocast(CPU, "auto")
