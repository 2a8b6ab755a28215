"""SuperPoint keypoint detector and descriptor.

From the paper: D. DeTone, T. Malisiewicz, A. Rabinovich, "SuperPoint: Self-Supervised
Interest Point Detection and Description", CVPR Workshops 2018 (arXiv:1712.07629).

Model (:class:`SuperPointNet`)
    A VGG-style encoder shared by two heads. Eight 3x3 convolutions with ReLU (64, 64, 64,
    64, 128, 128, 128, 128 channels) and a 2x2 max-pool after the 2nd, 4th and 6th, so one
    feature-map position ("cell") covers 8x8 pixels.
    Interest-point head: 3x3 conv (256) + ReLU, 1x1 conv (65 = 64 positions of the cell +
    a "no interest point" dustbin). Softmax over the 65 channels, dustbin dropped, and
    depth-to-space (pixel shuffle) back to full resolution; nothing learned in the upsampling.
    Descriptor head: 3x3 conv (256) + ReLU, 1x1 conv (256): a semi-dense (1/8 resolution)
    descriptor map, bilinearly interpolated at the keypoints and L2-normalised.

Weights (:func:`load_superpoint_weights`)
    * official: Magic Leap's ``superpoint_v1.pth`` (keys ``conv1a.weight`` ... ``convDb.bias``);
      loaded as is, so a user who owns the file gets the official behaviour.
    * open: glue-factory's "SuperPoint open" layout (``backbone.<stage>.<block>.conv|bn.*``,
      ``detector.<i>.conv|bn.*``, ``descriptor.<i>.conv|bn.*``; e.g. rpautrat's
      ``superpoint_v6_from_tf.pth``). Converted to the official conv names plus BatchNorm
      entries ``bn1a.*`` ... ``bnDb.*`` (that model applies BatchNorm after each ReLU).
    * ours: checkpoints of ``tools/train_superpoint.py`` (official layout, possibly wrapped in
      ``{"state_dict": ...}`` / ``{"model": ...}``).

Post-processing (all on the extractor's device, batched, no Python loop over keypoints or
images, no host round trip between steps): NMS (max-pool form, radius 4), removal of the
padded area and of a border, confidence threshold, per-image top-k, descriptor sampling.

Coordinates: pixels (x, y), centre of the top-left pixel at (0, 0) (OpenCV convention).
A keypoint at heatmap position (row i, column j) has (x, y) = (j, i).
"""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from slam.device import autocast, check_precision, resolve_precision
from slam.errors import WeightsError
from slam.features.base import keypoint_repeatability, nms, synthetic_image, to_gray
from slam.features.config import SuperPointConfig
from slam.types import Features
from slam.weights import load_weights

log = logging.getLogger(__name__)

#: Pixels per cell side: three 2x2 max-pools.
CELL = 8
#: Layer name -> (in channels, out channels, kernel size) of the official model. The
#: descriptor dimension (out channels of convDb) is taken from the weights.
LAYERS: dict[str, tuple[int, int, int]] = {
    "conv1a": (1, 64, 3), "conv1b": (64, 64, 3),
    "conv2a": (64, 64, 3), "conv2b": (64, 64, 3),
    "conv3a": (64, 128, 3), "conv3b": (128, 128, 3),
    "conv4a": (128, 128, 3), "conv4b": (128, 128, 3),
    "convPa": (128, 256, 3), "convPb": (256, CELL * CELL + 1, 1),
    "convDa": (128, 256, 3), "convDb": (256, 256, 1),
}
#: glue-factory "SuperPoint open" module prefix -> official layer name.
OPEN_TO_OFFICIAL: dict[str, str] = {
    "backbone.0.0": "conv1a", "backbone.0.1": "conv1b",
    "backbone.1.0": "conv2a", "backbone.1.1": "conv2b",
    "backbone.2.0": "conv3a", "backbone.2.1": "conv3b",
    "backbone.3.0": "conv4a", "backbone.3.1": "conv4b",
    "detector.0": "convPa", "detector.1": "convPb",
    "descriptor.0": "convDa", "descriptor.1": "convDb",
}
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_OPEN_BN_EPS = 1e-3  # BatchNorm eps of the open model


# ----------------------------------------------------------------------------- network


def _max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool, stride 2 (H, W even). On CPU as the maximum of the four strided
    sub-grids, about twice as fast as max_pool2d on channels-last bf16/fp32 maps."""
    if x.device.type != "cpu":
        return F.max_pool2d(x, 2, 2)
    return torch.maximum(torch.maximum(x[..., ::2, ::2], x[..., 1::2, ::2]),
                         torch.maximum(x[..., ::2, 1::2], x[..., 1::2, 1::2]))


class SuperPointNet(nn.Module):
    """SuperPoint network in Magic Leap's layout (state-dict keys ``conv1a.*`` ... ``convDb.*``).

    descriptor_dim: channels of the descriptor head (256 for the published model).
    batch_norm:     add BatchNorm after each ReLU (and after convPb/convDb), as in the
                    glue-factory open model; its modules are ``bn1a`` ... ``bnDb``.

    forward(image) with image (B, 1, H, W) float in [0, 1], H and W multiples of 8, returns
      logits:            (B, 65, H/8, W/8) detector logits (64 cell positions + dustbin).
      descriptors_dense: (B, D, H/8, W/8) raw (not normalised) descriptor map.
    Plain module without post-processing, reusable for training.
    """

    def __init__(self, descriptor_dim: int = 256, batch_norm: bool = False):
        super().__init__()
        self.descriptor_dim = int(descriptor_dim)
        self.batch_norm = bool(batch_norm)
        for name, (cin, cout, k) in LAYERS.items():
            if name == "convDb":
                cout = self.descriptor_dim
            setattr(self, name, nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2))
            if self.batch_norm:
                setattr(self, "bn" + name[4:], nn.BatchNorm2d(cout, eps=_OPEN_BN_EPS))

    def _block(self, x: torch.Tensor, name: str, relu: bool = True) -> torch.Tensor:
        x = getattr(self, name)(x)
        if relu:
            x = F.relu(x, inplace=True)
        if self.batch_norm:
            x = getattr(self, "bn" + name[4:])(x)
        return x

    def _block_pool(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """conv -> ReLU -> 2x2 max-pool. Without BatchNorm the ReLU is applied after the pool
        (max and ReLU commute exactly), on a quarter of the data."""
        if self.batch_norm:
            return _max_pool2(self._block(x, name))
        return F.relu(_max_pool2(getattr(self, name)(x)), inplace=True)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) -> (B,128,H/8,W/8) shared features."""
        x = self._block(image, "conv1a")
        x = self._block_pool(x, "conv1b")
        x = self._block(x, "conv2a")
        x = self._block_pool(x, "conv2b")
        x = self._block(x, "conv3a")
        x = self._block_pool(x, "conv3b")
        x = self._block(x, "conv4a")
        return self._block(x, "conv4b")

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"SuperPointNet expects (B,1,H,W) grey images, got {tuple(image.shape)}")
        if image.shape[2] % CELL or image.shape[3] % CELL:
            raise ValueError(f"image height and width must be multiples of {CELL}, got {tuple(image.shape[2:])}")
        x = self.encode(image)
        logits = self._block(self._block(x, "convPa"), "convPb", relu=False)
        desc = self._block(self._block(x, "convDa"), "convDb", relu=False)
        return {"logits": logits, "descriptors_dense": desc}


# ----------------------------------------------------------------------------- pure functions


def heatmap_from_logits(logits: torch.Tensor, cell: int = CELL) -> torch.Tensor:
    """Detector logits (B, cell^2+1, h, w) -> keypoint probability map (B, h*cell, w*cell).

    Softmax over the channels (computed in float32), the last channel (dustbin) dropped,
    then depth-to-space: channel c of cell (i, j) becomes pixel (row, col) =
    (cell*i + c // cell, cell*j + c % cell). Returns float32.
    """
    if logits.ndim != 4 or logits.shape[1] != cell * cell + 1:
        raise ValueError(f"logits must be (B,{cell * cell + 1},h,w), got {tuple(logits.shape)}")
    prob = torch.softmax(logits.float(), dim=1)[:, :-1]
    return F.pixel_shuffle(prob, cell)[:, 0]


def valid_region_mask(shape: tuple[int, int], image_sizes: torch.Tensor, border: int) -> torch.Tensor:
    """(B, H, W) bool: pixel (row y, col x) lies inside image b's original size (w_b, h_b)
    and at least ``border`` px from its edges: border <= x < w_b - border, same for y.

    shape: (H, W) of the (padded) heatmap; image_sizes: (B, 2) int (w, h) on the device.
    """
    height, width = shape
    dev = image_sizes.device
    xs = torch.arange(width, device=dev)
    ys = torch.arange(height, device=dev)
    w = image_sizes[:, 0, None]
    h = image_sizes[:, 1, None]
    ok_x = (xs[None] >= border) & (xs[None] < w - border)  # (B, W)
    ok_y = (ys[None] >= border) & (ys[None] < h - border)  # (B, H)
    return ok_y[:, :, None] & ok_x[:, None, :]


def extract_keypoints(
    scores: torch.Tensor,
    threshold: float,
    max_keypoints: int,
    remove_borders: int = 0,
    image_sizes: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched keypoint selection from an NMS'ed score map, without a loop over images.

    scores:        (B, H, W) float, e.g. nms(heatmap).
    threshold:     keep scores strictly greater than this (must be >= 0).
    max_keypoints: K, top-k per image; <= 0 keeps every detection (K = largest count in the
                   batch: one host sync).
    remove_borders: drop pixels closer than this to the image border.
    image_sizes:   (B, 2) int (w, h) of each original image; pixels outside it (padding) are
                   never selected. None = the whole (H, W) map.
    Returns keypoints (B, K, 2) float32 (x, y) px, scores (B, K) float32 and valid (B, K) bool.
    Per image, the valid entries come first, sorted by descending score; invalid slots have
    score 0. Each row depends only on its own image.
    """
    if threshold < 0:
        raise ValueError(f"detection threshold must be >= 0, got {threshold}")
    b, height, width = scores.shape
    if image_sizes is None:
        image_sizes = torch.tensor([[width, height]], device=scores.device).expand(b, 2)
    mask = valid_region_mask((height, width), image_sizes.to(scores.device), remove_borders)
    flat = scores.float().masked_fill(~mask, -1.0).reshape(b, -1)
    if max_keypoints > 0:
        k = min(int(max_keypoints), height * width)
    else:
        k = max(int((flat > threshold).sum(1).max().item()), 1) if b else 1
    top, idx = torch.topk(flat, k, dim=1, largest=True, sorted=True)
    valid = top > threshold
    kpts = torch.stack([idx % width, torch.div(idx, width, rounding_mode="floor")], dim=-1).float()
    return kpts, top.clamp_min(0.0) * valid, valid


def descriptor_grid(keypoints: torch.Tensor, dense_hw: tuple[int, int], cell: int = CELL,
                    convention: str = "official") -> tuple[torch.Tensor, bool]:
    """Keypoints (B, K, 2) px -> grid_sample coordinates (B, 1, K, 2) and align_corners flag.
    See :func:`sample_descriptors` for the two conventions."""
    h, w = dense_hw
    kp = keypoints.float()
    if convention == "official":
        scale = kp.new_tensor([w * cell - cell / 2 - 0.5, h * cell - cell / 2 - 0.5])
        grid = (kp - (cell / 2 - 0.5)) / scale * 2 - 1
        return grid[:, None], True
    if convention == "open":
        grid = (kp + 0.5) / kp.new_tensor([w * cell, h * cell]) * 2 - 1
        return grid[:, None], False
    raise ValueError(f"descriptor convention must be 'official' or 'open', got {convention!r}")


def sample_descriptors(dense: torch.Tensor, keypoints: torch.Tensor, cell: int = CELL,
                       convention: str = "official") -> torch.Tensor:
    """Descriptors at keypoints from a semi-dense map, L2-normalised.

    dense:      (B, D, h, w) descriptor map (raw network output is fine).
    keypoints:  (B, K, 2) float (x, y) pixels, centre of the top-left pixel at (0, 0).
    Returns (B, K, D) float32, unit L2 norm.

    Steps: the map is L2-normalised along D at every cell; it is then sampled bilinearly
    (cells outside the map count as zero vectors) and each sample is L2-normalised again.

    Where the cells sit, in map units u (column, cell centres at u = 0 .. w-1) and v (row):
      * "official" (Magic Leap's superpoint.py, also our own weights):
            u = (x - (cell/2 - 0.5)) / (w*cell - cell/2 - 0.5) * (w - 1)
            v = (y - (cell/2 - 0.5)) / (h*cell - cell/2 - 0.5) * (h - 1)
        i.e. cell 0 at pixel 3.5 and cell w-1 at pixel w*8 - 1 (for cell 8): the cells are
        spread slightly wider than 8 px apart. This is grid_sample with align_corners=True at
        g = 2*(x - 3.5)/(8w - 4.5) - 1. w and h are the map's size (of the padded image).
      * "open" (glue-factory open model): u = (x - (cell/2 - 0.5)) / cell: cell j centred at
        pixel 8j + 3.5 (grid_sample align_corners=False at g = 2*(x + 0.5)/(8w) - 1).
    """
    if dense.ndim != 4 or keypoints.ndim != 3 or keypoints.shape[-1] != 2 or keypoints.shape[0] != dense.shape[0]:
        raise ValueError(f"expected dense (B,D,h,w) and keypoints (B,K,2), got {tuple(dense.shape)} "
                         f"and {tuple(keypoints.shape)}")
    dense = F.normalize(dense.float(), p=2, dim=1)
    grid, align = descriptor_grid(keypoints, dense.shape[-2:], cell, convention)
    desc = F.grid_sample(dense, grid, mode="bilinear", padding_mode="zeros", align_corners=align)
    return F.normalize(desc[:, :, 0].transpose(1, 2), p=2, dim=2)


# ----------------------------------------------------------------------------- weights


def _unwrap_checkpoint(obj: Any, origin: str) -> dict[str, torch.Tensor]:
    """Find the state dict in a checkpoint: the dict itself, or under 'state_dict', 'model',
    'net', 'model_state_dict', 'superpoint', 'extractor'; strip 'module.' / '_orig_mod.'."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{origin}: expected a state dict (mapping of tensor names), got {type(obj).__name__}")
    for key in ("state_dict", "model", "net", "model_state_dict", "superpoint", "extractor"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue  # metadata (epoch, config, ...) beside the tensors
        name = str(key)
        for prefix in ("module.", "_orig_mod.", "net.", "model."):
            while name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = value
    if not out:
        raise WeightsError(f"{origin}: no tensors found in the checkpoint (keys: {sorted(map(str, obj))[:8]})")
    return out


def is_open_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for glue-factory's 'SuperPoint open' key layout (backbone.* / detector.* / descriptor.*)."""
    return any(k.startswith(("backbone.", "detector.", "descriptor.")) for k in state_dict)


def convert_open_layout(state_dict: Mapping[str, torch.Tensor], origin: str = "state dict") -> dict[str, torch.Tensor]:
    """glue-factory open layout -> official conv names + BatchNorm keys.

    ``backbone.S.B.conv.{weight,bias}`` -> ``conv<S+1><a|b>.*``, ``backbone.S.B.bn.*`` ->
    ``bn<S+1><a|b>.*``; ``detector.0|1`` -> ``convPa|convPb`` / ``bnPa|bnPb``;
    ``descriptor.0|1`` -> ``convDa|convDb`` / ``bnDa|bnDb``. Unknown keys raise WeightsError.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        module, _, rest = key.rpartition(".")  # rest = parameter name
        prefix, _, kind = module.rpartition(".")  # kind = conv | bn
        name = OPEN_TO_OFFICIAL.get(prefix)
        if name is None or kind not in ("conv", "bn"):
            raise WeightsError(f"{origin}: key '{key}' is not part of the SuperPoint open layout "
                               f"(expected e.g. backbone.0.0.conv.weight, detector.1.bn.running_var)")
        out[(name if kind == "conv" else "bn" + name[4:]) + "." + rest] = value
    return out


def expected_shapes(descriptor_dim: int = 256, batch_norm: bool = False) -> dict[str, tuple[int, ...]]:
    """Official key -> tensor shape (with bn* keys when batch_norm)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (cin, cout, k) in LAYERS.items():
        if name == "convDb":
            cout = descriptor_dim
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)
        if batch_norm:
            for p in _BN_PARAMS:
                shapes[f"bn{name[4:]}.{p}"] = () if p == "num_batches_tracked" else (cout,)
    return shapes


def validate_state_dict(state_dict: Mapping[str, torch.Tensor], origin: str = "state dict") -> tuple[int, bool]:
    """Check keys and shapes against the official layout. Returns (descriptor_dim, batch_norm).
    Raises WeightsError naming the first missing, unexpected or wrongly shaped key."""
    db = state_dict.get("convDb.weight")
    descriptor_dim = int(db.shape[0]) if isinstance(db, torch.Tensor) and db.ndim == 4 else 256
    batch_norm = any(k.startswith("bn") for k in state_dict)
    shapes = expected_shapes(descriptor_dim, batch_norm)
    for key, shape in shapes.items():
        if key not in state_dict:
            if key.endswith("num_batches_tracked"):
                continue
            raise WeightsError(f"{origin}: missing key '{key}' (expected shape {shape}); this is not a SuperPoint "
                               f"checkpoint in the official (conv1a...convDb) or glue-factory open layout")
        got = tuple(state_dict[key].shape)
        if got != shape:
            raise WeightsError(f"{origin}: key '{key}' has shape {got}, expected {shape}")
    extra = sorted(set(state_dict) - set(shapes))
    if extra:
        raise WeightsError(f"{origin}: unexpected key '{extra[0]}'" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                           + "; expected only the SuperPoint layers conv1a ... convDb")
    return descriptor_dim, batch_norm


def load_superpoint_weights(source: Union[str, os.PathLike, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Weights from a state dict, a file path or a registered name -> validated state dict in the
    official layout (float32 CPU tensors; BatchNorm keys ``bn*`` only for the open model).

    Accepts Magic Leap's superpoint_v1.pth, glue-factory's open layout (converted), and our
    own checkpoints (possibly wrapped in {'state_dict': ...}). Raises WeightsError naming the
    file and key on a missing key, unexpected key or wrong shape, and
    WeightsError when a name/path cannot be found or read (see slam.weights).
    """
    if isinstance(source, Mapping):
        origin = "state dict"
        raw: Any = source
    else:
        raw, path = load_weights(source, "superpoint", "SuperPoint weights")
        origin = str(path)
    sd = _unwrap_checkpoint(raw, origin)
    if is_open_layout(sd):
        sd = convert_open_layout(sd, origin)
    validate_state_dict(sd, origin)
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu() for k, v in sd.items()}


# ----------------------------------------------------------------------------- extractor


class SuperPoint:
    """SuperPoint front-end implementing the Extractor protocol.

    cfg:        SuperPointConfig.
    device:     torch device for the network, the post-processing and the returned Features.
    state_dict: weights given directly (official or open layout); bypasses cfg.weights.

    extract(image) / extract_batch(images): image (H, W, 3) uint8 BGR or (H, W) uint8 grey,
    any size (zero-padded at the bottom/right to a multiple of 8; keypoints are in the
    original pixel coordinates and never fall in the padding). Returns Features with
    keypoints (N, 2) float32 px (x, y), scores (N,) float32 heatmap probabilities, descriptors
    (N, 256) float32 unit-norm, sorted by descending score, N <= max_keypoints.
    Batches run one forward pass per padded size; each image's result equals the one of a
    single-image call (same network input, per-image top-k).
    """

    name = "superpoint"
    binary = False

    def __init__(self, cfg: Optional[SuperPointConfig] = None, device: Union[torch.device, str] = "cpu",
                 state_dict: Optional[Mapping[str, torch.Tensor]] = None):
        self.cfg = cfg or SuperPointConfig()
        self.device = torch.device(device)
        c = self.cfg
        check_precision(c.precision, self.device, "superpoint")
        if c.descriptor_convention not in ("auto", "official", "open"):
            raise ValueError(f"superpoint.descriptor_convention={c.descriptor_convention!r}; choose auto, official or open")
        if c.nms_radius < 0 or c.remove_borders < 0 or c.detection_threshold < 0:
            raise ValueError("superpoint.nms_radius, remove_borders and detection_threshold must be >= 0")
        sd = load_superpoint_weights(state_dict if state_dict is not None else c.weights)
        self.descriptor_dim, batch_norm = validate_state_dict(sd)
        net = SuperPointNet(self.descriptor_dim, batch_norm=batch_norm)
        net.load_state_dict(sd, strict=not batch_norm)  # num_batches_tracked may be absent
        net.eval().requires_grad_(False).to(self.device)
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.net = net.to(memory_format=self.memory_format)
        self.convention = c.descriptor_convention if c.descriptor_convention != "auto" else (
            "open" if batch_norm else "official")
        self._forward_net = self.net
        self.precision_check: dict[str, float] = {}
        # auto: bf16 where the CPU's bf16 products are fast (AMX, or AVX512-BF16 on AMD, where a
        # 640x480 frame takes 304 against 594 ms), if the probe keeps the keypoints
        self.precision = resolve_precision(c.precision, self.device, "superpoint", cpu_auto="bf16",
                                           probe=self._bf16_probe, min_quality=c.bf16_min_repeatability,
                                           amd_avx512_bf16=True)
        if c.compile:
            # CUDA: reduce-overhead = CUDA graphs (static shapes; one graph per image size).
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._forward_net = torch.compile(self.net, mode=mode, dynamic=False)

    # -- precision ----------------------------------------------------------------------

    def _bf16_probe(self) -> float:
        """Repeatability of bf16 against fp32 on the synthetic image (auto precision on CPU)."""
        self.precision_check = self.compare_precision("bf16")
        return self.precision_check["repeatability"]

    def compare_precision(self, precision: str, image: Optional[np.ndarray] = None) -> dict[str, float]:
        """Run fp32 and ``precision`` on one image (default: a 240x320 synthetic one) and
        return repeatability (share of fp32 keypoints with a keypoint within 1 px), exact
        (same pixel), and the mean cosine between descriptors of keypoints at the same pixel."""
        gray = to_gray(synthetic_image(240, 320, seed=1) if image is None else image)
        ref = self._extract_group([gray], "fp32")[0]
        test = self._extract_group([gray], precision)[0]
        rep = keypoint_repeatability(ref.keypoints, test.keypoints, 1.0)
        exact = keypoint_repeatability(ref.keypoints, test.keypoints, 0.0)
        cos = 1.0
        if len(ref) and len(test):
            dist = torch.cdist(ref.keypoints, test.keypoints)
            d, j = dist.min(dim=1)
            same = d == 0
            if bool(same.any()):
                cos = float((ref.descriptors[same] * test.descriptors[j[same]]).sum(1).mean())
        return {"repeatability": rep, "exact": exact, "descriptor_cosine": cos,
                "n_fp32": float(len(ref)), "n_test": float(len(test))}

    # -- core ---------------------------------------------------------------------------

    def detect_and_describe(self, images: torch.Tensor, image_sizes: torch.Tensor,
                            precision: Optional[str] = None) -> dict[str, torch.Tensor]:
        """Batched, device-only core.

        images:      (B, 1, H, W) float in [0, 1] on self.device, H and W multiples of 8,
                     each image at the top-left, zero padding after it.
        image_sizes: (B, 2) int64 (w, h) of the original images on self.device.
        Returns keypoints (B, K, 2) float32 px, scores (B, K) float32, descriptors (B, K, D)
        float32 unit-norm, valid (B, K) bool (valid entries first in each row).
        """
        precision = precision or self.precision
        c = self.cfg
        x = images.contiguous(memory_format=self.memory_format)
        with torch.inference_mode(), self._cudnn_flags(), autocast(self.device, precision):
            out = self._forward_net(x)
        with torch.inference_mode():
            heat = heatmap_from_logits(out["logits"])
            heat = heat * valid_region_mask(heat.shape[-2:], image_sizes, 0)  # padding must not suppress
            heat = nms(heat, c.nms_radius)
            kpts, scores, valid = extract_keypoints(heat, c.detection_threshold, c.max_keypoints,
                                                    c.remove_borders, image_sizes)
            desc = sample_descriptors(out["descriptors_dense"], kpts, CELL, self.convention)
        return {"keypoints": kpts, "scores": scores, "descriptors": desc, "valid": valid}

    def _cudnn_flags(self):
        if self.device.type != "cuda":
            return nullcontext()
        # benchmark: cuDNN picks the fastest algorithms per input size (scoped, not global);
        # no TF32, so precision=fp32 really is fp32 (the fast path is fp16 autocast).
        return torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=False)

    def _extract_group(self, grays: Sequence[np.ndarray], precision: Optional[str] = None) -> list[Features]:
        """Grey images that share one padded size -> Features (one forward pass)."""
        sizes = [(g.shape[1], g.shape[0]) for g in grays]
        pad_h = -(-max(h for _, h in sizes) // CELL) * CELL
        pad_w = -(-max(w for w, _ in sizes) // CELL) * CELL
        if all(s == sizes[0] for s in sizes):
            host = np.stack(grays) if len(grays) > 1 else grays[0][None]
        else:
            host = np.zeros((len(grays), pad_h, pad_w), np.uint8)
            for i, g in enumerate(grays):
                host[i, : g.shape[0], : g.shape[1]] = g
        batch = torch.from_numpy(np.ascontiguousarray(host)).to(self.device, non_blocking=True)
        batch = batch[:, None].float().div_(255.0)
        if batch.shape[-2:] != (pad_h, pad_w):
            batch = F.pad(batch, (0, pad_w - batch.shape[-1], 0, pad_h - batch.shape[-2]))
        size_t = torch.tensor(sizes, dtype=torch.long).to(self.device, non_blocking=True)
        res = self.detect_and_describe(batch, size_t, precision)
        counts = res["valid"].sum(1).tolist()  # the one host sync: sizes of the outputs
        return [
            Features(res["keypoints"][i, :n], res["scores"][i, :n], res["descriptors"][i, :n], sizes[i])
            for i, n in enumerate(counts)
        ]

    # -- Extractor protocol -------------------------------------------------------------

    def extract(self, image: np.ndarray) -> Features:
        """image: (H, W, 3) uint8 BGR or (H, W) uint8 grey -> Features (see class doc)."""
        return self.extract_batch([image])[0]

    def extract_batch(self, images: Sequence[np.ndarray]) -> list[Features]:
        """Same as extract() on each image; one forward pass per distinct padded size."""
        grays = []
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.dtype != np.uint8:
                raise ValueError(f"image {i}: expected uint8, got {img.dtype} (scale to 0..255 and convert)")
            g = to_gray(img)
            if g.shape[0] < 1 or g.shape[1] < 1:
                raise ValueError(f"image {i}: empty image of shape {img.shape}")
            grays.append(g)
        if not grays:
            return []
        groups: dict[tuple[int, int], list[int]] = {}
        for i, g in enumerate(grays):
            key = (-(-g.shape[0] // CELL), -(-g.shape[1] // CELL))
            groups.setdefault(key, []).append(i)
        out: list[Optional[Features]] = [None] * len(grays)
        for idx in groups.values():
            for i, f in zip(idx, self._extract_group([grays[i] for i in idx])):
                out[i] = f
        return out  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"SuperPoint(device={self.device}, precision={self.precision}, "
                f"max_keypoints={self.cfg.max_keypoints}, convention={self.convention})")
