"""Torch device and numeric precision: the one place where both are decided.

* :func:`resolve_device`: ``auto`` / ``cpu`` / ``cuda[:i]`` -> ``torch.device``; asking for a
  GPU that torch cannot see is a :class:`~slam.errors.DeviceError` (one line, no traceback).
* :func:`resolve_precision`: a model's ``precision`` setting (``auto`` / ``fp32`` / ``fp16`` /
  ``bf16``) -> the precision it runs in. ``auto`` is fp16 on CUDA and fp32 on CPU unless the
  model asks for bf16 there (only where the CPU has AMX, see :func:`native_bf16`, or, for the
  models that opt in, AVX512-BF16 on AMD, see :func:`fast_cpu_bf16_matmul`; and, when the
  model passes a quality probe, only if the probe's score reaches its bar).
* :func:`autocast`: the context a forward pass runs under for a resolved precision.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Optional

import torch

from slam.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

#: Values of every model's ``precision`` setting.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: Resolved precision -> compute dtype.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: Optional[str] = "auto") -> torch.device:
    """'auto' (or empty) -> cuda when torch sees a GPU, else cpu. A CUDA device that is not
    there is a DeviceError; a name torch does not know is a ConfigError."""
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(name))
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu or cuda (cuda:N for one GPU of several)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={name} was asked for but torch sees no CUDA GPU "
                              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                              "use --device cpu or --device auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device={name}: torch sees {torch.cuda.device_count()} CUDA GPU(s); "
                              f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively and fast on this device: CUDA GPUs with bf16
    support; CPUs with AMX tiles.

    AVX512-BF16 alone is not enough. On this project's CPU without AMX (an "Intel Xeon
    Processor" VM, 2026-12-04), oneDNN's bf16 kernels ran slower than its fp32 ones:
    - XFeat took 55 ms per 640x480 frame in bf16 against 39 ms in fp32 (one thread);
    - a 3x3 128-channel convolution took 289 ms against 160 ms;
    - a 76800 x 1152 x 128 matrix product took 137 ms against 97 ms.
    On an earlier machine of this project, where bf16 paid, XFeat took 43 ms of CPU per frame in
    bf16 against 76 ms in fp32.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.cpu._is_amx_tile_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def cpu_vendor() -> str:
    """The CPU's vendor string as the kernel reports it ("AuthenticAMD", "GenuineIntel", ...), or
    "" where it cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def fast_cpu_bf16_matmul() -> bool:
    """Whether bf16 matrix products beat fp32 on this CPU, for models whose ``auto`` may take bf16
    there beyond :func:`native_bf16`: AMX, or AVX512-BF16 on an AMD CPU (Zen 4 and later).

    Measured on the AMD EPYC VMs of this project (AVX512-BF16, no AMX; one thread): a batch of 36
    (1200 x 128) @ (128 x 128) products 8.4 ms in bf16 against 30.1 ms in fp32 (2026-12-07);
    SuperGlue at 1024 keypoints 779 against 1040 ms (2026-12-07); SuperPoint 304 against 594 ms
    per 640x480 frame (2026-12-06). The Intel VM without AMX of :func:`native_bf16` (its bf16
    kernels slower than fp32) is why AVX512-BF16 alone does not count."""
    if native_bf16(torch.device("cpu")):
        return True
    try:
        avx512_bf16 = bool(torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return avx512_bf16 and cpu_vendor() == "AuthenticAMD"


def cpu_has_bf16_instructions() -> bool:
    """Whether this CPU computes in bf16 in hardware (AVX512-BF16 or AMX). Without either,
    torch emulates bf16: on an AVX2-only AMD EPYC (2026-12-07) one LoFTR pair in bf16 took
    minutes, against 3.7 s in fp32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return True  # cannot tell: no warning


def check_precision(precision: str, device: torch.device, owner: str) -> str:
    """Validate an explicit or 'auto' precision value for ``device``; returns it lower-cased.
    ConfigError names ``owner.precision`` and the valid values."""
    p = str(precision).lower()
    if p not in PRECISIONS:
        raise ConfigError(f"{owner}.precision={precision!r} is not valid; choose auto, fp32, fp16 or bf16")
    if p == "fp16" and device.type != "cuda":
        raise ConfigError(f"{owner}.precision=fp16 needs a CUDA device (got {device}); use fp32 or bf16 on CPU")
    return p


def resolve_precision(precision: str, device: torch.device, owner: str, *, cuda_auto: str = "fp16",
                      cpu_auto: str = "fp32", probe: Optional[Callable[[], float]] = None,
                      min_quality: float = 0.0, amd_avx512_bf16: bool = False) -> str:
    """A model's precision setting -> the precision it runs in: 'fp32', 'fp16' or 'bf16'.

    precision: 'auto' | 'fp32' | 'fp16' | 'bf16' (anything else, or fp16 off CUDA: ConfigError).
    cuda_auto / cpu_auto: what 'auto' means on that device for this model. A 'bf16' choice
        needs native bf16 (:func:`native_bf16`), else it becomes fp32.
    amd_avx512_bf16: on the CPU, a 'bf16' choice also stands where :func:`fast_cpu_bf16_matmul`
        holds (AVX512-BF16 on AMD), for models measured faster there in bf16.
    probe: for 'auto' choosing bf16 on CPU, a callable returning the quality of bf16 against
        fp32 (the model's bf16 quality probe: fp32 and bf16 on the same input, compared);
        bf16 is kept only if it is >= min_quality. Where 'auto' needs no probe, none runs.
    Explicit values are returned as given (bf16 without native support runs, slowly; on a CPU
    with no bf16 instructions at all a warning says so, see :func:`cpu_has_bf16_instructions`).
    """
    p = check_precision(precision, device, owner)
    if p != "auto":
        if p == "bf16" and device.type == "cpu" and not cpu_has_bf16_instructions():
            log.warning("%s.precision=bf16: this CPU has no bf16 instructions (neither AVX512-BF16 nor AMX), "
                        "so bf16 is emulated and usually slower than fp32; use %s.precision=fp32 or auto",
                        owner, owner)
        return p
    choice = {"cuda": cuda_auto, "cpu": cpu_auto}.get(device.type, "fp32")
    if choice == "bf16" and not (native_bf16(device) or (amd_avx512_bf16 and device.type == "cpu" and fast_cpu_bf16_matmul())):
        return "fp32"
    if choice == "bf16" and probe is not None and device.type == "cpu":
        quality = float(probe())
        ok = quality >= min_quality
        log.info("%s: bf16 against fp32: quality %.4f (bar %.4f) -> %s", owner, quality, min_quality,
                 "bf16" if ok else "fp32")
        return "bf16" if ok else "fp32"
    return choice


def autocast(device: torch.device, precision: str) -> ContextManager[Any]:
    """Context for a forward pass in a resolved precision: a no-op for fp32, else torch.autocast
    with fp16 / bf16 on the device's type."""
    if precision == "fp32":
        return nullcontext()
    if precision not in DTYPES:
        raise ConfigError(f"precision {precision!r} is not resolved; expected fp32, fp16 or bf16")
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
