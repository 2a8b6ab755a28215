"""XFeat's 3x3 convolutions in int8 on CPU (``xfeat.precision=int8``).

The 16 3x3 convolutions (BatchNorm folded, ReLU fused) are about three quarters of XFeat's time on
a CPU. In int8 (PyTorch's quantized kernels, the ``x86``/``fbgemm`` engine: VNNI where the CPU has
it) each runs 3-4x faster than in fp32. The rest (the 1x1 layers, the heads, the sums and the
upsampling of blocks 3-5) stays in fp32.

Quantization (post-training, static, no training involved):
- weights: per output channel, symmetric int8 (scale = max |w| / 127);
- activations: per tensor, uint8 (7 bits on CPUs without VNNI, :func:`cpu_has_vnni`). A layer's input is quantized with the range recorded for it by
  :func:`calibrate`; its output is requantized inside the kernel with its recorded range, and passed
  on quantized to the next 3x3 layer of the same block (no round trip through fp32). Inputs that
  can be negative (the normalised image of the first layer, and block 2's input, which adds
  block 1's skip branch) get zero point 128; post-ReLU values get zero point 0.
- the ranges: for each layer, the median over the calibration images of the per-image maximum
  of |input| and |output| (a rare extreme pixel is clipped rather than coarsening every other
  value). :func:`calibrate` computes them from any image list; the committed calibration
  (``calibration/xfeat_int8.json``) was made by ``tools/calibrate_xfeat_int8.py`` on the training
  pool (``../shared/data/images``), never on the sequences we evaluate on, and is keyed by
  :func:`weights_fingerprint` of the weights it belongs to: other weights need their own.

The result is not the reference's function: on fr1_xyz frames about 98.6 % of the keypoints stay
on the same pixel and the descriptors keep a cosine of 0.999. The network runs 1.7x faster (whole
extraction 44.5 -> 26.1 ms of CPU per 640x480 frame, one thread), RGB-D runs gain 1.35x in fps;
synthetic/fast RGB-D loses 0.55 -> 0.61 cm (median of five jittered runs). It is therefore opt-in
(``auto`` never picks it); docs/benchmarks.md, section 13.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

from slam.errors import ConfigError

#: The committed calibration file (layer ranges per weights fingerprint).
CALIBRATION_FILE = Path(__file__).with_name("calibration") / "xfeat_int8.json"
#: Quantized engines whose int8 convolutions are fast on x86 CPUs.
FAST_ENGINES = ("x86", "fbgemm")


def weights_fingerprint(state_dict: dict) -> str:
    """SHA-256 (first 16 hex digits) of a state dict's float tensors in key order: the key of a
    calibration. The same weights loaded from any file give the same fingerprint."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        v = state_dict[k]
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            h.update(k.encode())
            h.update(v.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def int8_available() -> bool:
    """Whether torch's quantized CPU kernels here are the fast x86 ones."""
    return torch.backends.quantized.engine in FAST_ENGINES


def cpu_has_vnni() -> bool:
    """Whether the CPU multiplies uint8 by int8 with 32-bit sums (AVX512-VNNI or AVX-VNNI, as torch's
    cpuinfo reads it, the way :func:`slam.device.native_bf16` reads AMX; False where torch cannot
    tell). Without it the x86 kernels add pairs of uint8 x int8 products in 16 bits, which saturate
    for activations above 127 (an AVX2-only AMD EPYC here: layer errors beyond the quantization steps)."""
    try:
        return bool(torch.cpu._is_vnni_supported())
    except (AttributeError, RuntimeError):
        return False


def _conv_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every folded 3x3 layer of an XFeatInference, in order: the modules with a
    (C_out, C_in, 3, 3) ``weight`` buffer, a ``bias``, ``stride``, ``padding`` and ``relu``
    (slam.features.xfeat's _FoldedConv; read by shape so that this module does not import that one)."""
    def is_conv(m: nn.Module) -> bool:
        w = getattr(m, "weight", None)
        return (isinstance(w, torch.Tensor) and w.dim() == 4 and tuple(w.shape[-2:]) == (3, 3)
                and all(hasattr(m, a) for a in ("bias", "stride", "padding", "relu")))

    return [(n, m) for n, m in net.named_modules() if is_conv(m)]


@torch.inference_mode()
def calibrate(net: nn.Module, greys: Iterable[torch.Tensor]) -> dict:
    """Activation ranges of an XFeatInference's 3x3 layers over images.

    greys: (1,1,H,W) float32 images in [0,1], sides multiples of 32. Returns
    {layer name: {"in": float, "out": float, "signed_in": bool}}: the median over the images of
    each layer's per-image max |input| and max |output|, and whether any input was negative."""
    layers = _conv_layers(net)
    seen: dict[str, list] = {n: [] for n, _ in layers}
    hooks = []
    for name, m in layers:
        def hook(_mod, inp, out, name=name):
            x = inp[0]
            seen[name].append((float(x.abs().max()), float(out.abs().max()), bool((x < 0).any())))
        hooks.append(m.register_forward_hook(hook))
    try:
        n = 0
        for g in greys:
            net(g.contiguous(memory_format=torch.channels_last))
            n += 1
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ConfigError("XFeat int8 calibration needs at least one image")
    return {name: {"in": float(np.median([s[0] for s in v])), "out": float(np.median([s[1] for s in v])),
                   "signed_in": any(s[2] for s in v)} for name, v in seen.items()}


def load_calibration(fingerprint: str, path: Path = CALIBRATION_FILE) -> Optional[dict]:
    """The layer ranges recorded for weights with this fingerprint, or None."""
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get(fingerprint)
    return None if entry is None else entry["layers"]


class _Int8Conv(nn.Module):
    """A folded 3x3 layer in int8: quint8 activations in and out, per-channel qint8 weights."""

    def __init__(self, conv: nn.Module, rng: dict, reduce_range: bool = False) -> None:
        """reduce_range: activations in 7 bits (0..127), so that no pair of products overflows
        16 bits on CPUs without VNNI (PyTorch's own x86 default for the same reason)."""
        super().__init__()
        import torch.ao.nn.intrinsic.quantized as nniq
        import torch.ao.nn.quantized as nnq

        w = conv.weight.detach().contiguous()
        c_out, c_in, k, _ = w.shape
        cls = nniq.ConvReLU2d if conv.relu else nnq.Conv2d
        with warnings.catch_warnings():  # torch 2.13 marks its quantized-tensor constructors deprecated (they work)
            warnings.simplefilter("ignore", UserWarning)
            self.q = cls(c_in, c_out, k, stride=conv.stride, padding=conv.padding)
            w_scale = (w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127.0).double()
            qw = torch.quantize_per_channel(w, w_scale, torch.zeros(c_out, dtype=torch.long), 0, torch.qint8)
            self.q.set_weight_bias(qw, conv.bias.detach().float())
        # output: uint8 with zero point 0 after a ReLU, centred otherwise (levels 0..255, or
        # 0..127 with reduce_range)
        top, mid = (127, 64) if reduce_range else (255, 128)
        self.q.scale = max(rng["out"], 1e-6) / (float(top) if conv.relu else float(top - mid))
        self.q.zero_point = 0 if conv.relu else mid
        self.in_zero = mid if rng["signed_in"] else 0
        self.in_scale = max(rng["in"], 1e-6) / (float(top - mid) if rng["signed_in"] else float(top))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_quantized:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                x = torch.quantize_per_tensor(x, self.in_scale, self.in_zero, torch.quint8)
        return self.q(x)


class XFeatInt8(nn.Module):
    """An XFeatInference with its 3x3 layers in int8 (module doc); same inputs and outputs."""

    def __init__(self, net: nn.Module, ranges: dict, reduce_range: Optional[bool] = None) -> None:
        """reduce_range: 7-bit activations (:class:`_Int8Conv`); None = where the CPU lacks VNNI."""
        super().__init__()
        import copy

        self.reduce_range = (not cpu_has_vnni()) if reduce_range is None else bool(reduce_range)
        self.net = copy.deepcopy(net)
        layers = _conv_layers(self.net)
        missing = [n for n, _ in layers if n not in ranges]
        if missing:
            raise ConfigError(f"XFeat int8 calibration lacks layers {missing}; recalibrate with tools/calibrate_xfeat_int8.py")
        for name, m in layers:
            parent, _, last = name.rpartition(".")
            setattr(self.net.get_submodule(parent), last, _Int8Conv(m, ranges[name], self.reduce_range))  # ModuleList keys are "0", "1", ...

    def forward(self, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net(grey)
