"""Detector-free matching of two images with LoFTR: the API the rest of the project uses.

    matcher = LoFTR(LoFTRConfig(weights="loftr_indoor"), device="cpu")
    m = matcher.match_images(img0, img1)          # LoFTRMatches
    ms = matcher.match_image_pairs([a, a], [b, c])  # one forward pass for several pairs

Images: numpy (H, W) or (H, W, 1) grey, or (H, W, 3) BGR (OpenCV order, as cv2.imread gives),
uint8 (0..255) or float (0..1); or a torch (H, W) / (1, H, W) grey tensor, uint8 or float in
[0, 1], on any device. Colour is converted with OpenCV's BGR -> grey weights (0.114 B + 0.587 G
+ 0.299 R). Any size of at least 8 x 8: the network pads to a multiple of 8 internally (the
reference needs multiples of 8). With ``max_size > 0`` an image whose longer side exceeds it
is first shrunk (aspect kept; cv2.INTER_AREA for numpy, antialiased bilinear for tensors).
Points are always returned in the pixels of the image as given.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from slam.device import resolve_precision
from slam.errors import InputError
from slam.matching.config import LoFTRConfig
from slam.matching.loftr.model import FACTOR, STRIDE, WINDOW, LoFTRNet, read_checkpoint
from slam.params import check_params
from slam.weights import resolve_weights

log = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, torch.Tensor]

#: registry name -> (official file, temp_bug_fix, match type); the configs of the official
#: checkpoints differ only in these two settings.
OFFICIAL = {
    "loftr_indoor": ("indoor_ds_new.ckpt", True, "dual_softmax"),
    "loftr_outdoor": ("outdoor_ds.ckpt", False, "dual_softmax"),
    "loftr_indoor_ot": ("indoor_ot.ckpt", False, "sinkhorn"),
}


@dataclass
class LoFTRMatches:
    """Matches between two images (numpy, on the CPU).

    pts0, pts1:  (M, 2) float32, pixels (x right, y down; centre of the top-left pixel at
                 (0, 0)) in the images as given to the matcher (before any resize). pts0 lies
                 on LoFTR's 8-pixel grid (of the resized image), pts1 is refined to sub-pixel.
    confidence:  (M,) float32 in [0, 1], the coarse match probability (dual-softmax or
                 optimal-transport), every one above the threshold.
    idx0, idx1:  (M,) int64 coarse cells, row-major in each image's grid ``grid0`` / ``grid1``
                 ((rows, cols) = ceil of the network input size / 8). Unique within a side.
    fine_std:    (M,) float32 pixels of image 1: spread of the fine heatmap (sum of the x and
                 y standard deviations); large = uncertain refinement.
    size0, size1: (width, height) of the images as given.
    conf_matrix: (L, S) float32 coarse confidence over all cells (L = cells of image 0, S of
                 image 1), only when asked for (``return_conf=True``), else None.
    """

    pts0: np.ndarray
    pts1: np.ndarray
    confidence: np.ndarray
    idx0: np.ndarray
    idx1: np.ndarray
    fine_std: np.ndarray
    grid0: tuple[int, int]
    grid1: tuple[int, int]
    size0: tuple[int, int]
    size1: tuple[int, int]
    conf_matrix: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.pts0.shape[0])


def default_temp_bug_fix(weights: str) -> bool:
    """Positional-encoding variant a checkpoint was trained with, from its registry name or
    file name: only indoor_ds_new.ckpt (``loftr_indoor``) uses the corrected encoding; the other
    official files (indoor_ds, outdoor_ds, indoor_ot, outdoor_ot) the original one."""
    if weights in OFFICIAL:
        return OFFICIAL[weights][1]
    stem = Path(str(weights)).stem.lower()
    return stem.endswith("_new") or "ds_new" in stem


#: which stages run in half precision, per autocast dtype. fp16 (CUDA): all three networks, as
#: the reference's CUDA inference. bf16 (7 bits of mantissa): the backbone only; measured
#: against fp32 with seeded random weights (docs/benchmarks.md, LoFTR), bf16 transformers moved
#: the refined points several times more than a bf16 backbone.
HALF_STAGES = {None: (), torch.float16: ("backbone", "coarse", "fine"), torch.bfloat16: ("backbone",)}


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """None (float32) or the autocast dtype for loftr.precision on this device (auto: fp16 on
    CUDA, fp32 on the CPU; slam.device.resolve_precision)."""
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[resolve_precision(precision, device, "loftr")]


def to_gray_tensor(image: ImageLike, what: str = "image") -> torch.Tensor:
    """Any accepted image -> (1, H, W) float32 tensor in [0, 1] (on the image's device)."""
    if isinstance(image, torch.Tensor):
        t = image
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 2:
            raise InputError(f"{what}: a tensor image must be (H, W) or (1, H, W) grey, got {tuple(image.shape)}")
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        return t[None]
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        if arr.dtype not in (np.uint8, np.float32):
            arr = arr.astype(np.float32)
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    if arr.ndim != 2:
        raise InputError(f"{what}: expected an (H, W) grey or (H, W, 3) BGR image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if out.size and (out.min() < -1e-3 or out.max() > 1.0 + 1e-3):
            raise InputError(f"{what}: a float image must hold values in [0, 1] (got {out.min():.3g}..{out.max():.3g}); "
                             f"divide by 255 or pass uint8")
    else:
        raise InputError(f"{what}: unsupported dtype {arr.dtype}; pass uint8 (0..255) or float (0..1)")
    return torch.from_numpy(np.ascontiguousarray(out))[None]


def _resize(t: torch.Tensor, image: ImageLike, max_size: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    if max_size <= 0 or max(h, w) <= max_size:
        return t
    s = max_size / max(h, w)
    nh, nw = max(8, int(round(h * s))), max(8, int(round(w * s)))
    if isinstance(image, np.ndarray):
        return torch.from_numpy(cv2.resize(t[0].numpy(), (nw, nh), interpolation=cv2.INTER_AREA))[None]
    return F.interpolate(t[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]


class LoFTR:
    """LoFTR matcher: weights, device, precision, image preparation and output conversion.

    LoFTR(cfg, device, state_dict=None): with state_dict None the weights come from cfg.weights
    (registry name or path). match type and positional-encoding variant follow the checkpoint
    unless set explicitly (see LoFTRConfig).
    """

    name = "loftr"

    def __init__(self, cfg: Optional[LoFTRConfig] = None, device: torch.device | str = "cpu",
                 state_dict: Optional[dict] = None) -> None:
        self.cfg = cfg = cfg if cfg is not None else LoFTRConfig()
        check_params(cfg, "loftr.")
        self.device = torch.device(device)
        source = "state dict"
        if state_dict is None:
            path = resolve_weights(cfg.weights)
            state_dict = read_checkpoint(path)
            source = str(path)
        has_bin = any(k.endswith("coarse_matching.bin_score") for k in state_dict)
        match_type = cfg.match_type if cfg.match_type != "auto" else ("sinkhorn" if has_bin else "dual_softmax")
        fix = cfg.temp_bug_fix if cfg.temp_bug_fix is not None else default_temp_bug_fix(cfg.weights)
        self.autocast_dtype = autocast_dtype(cfg.precision, self.device)
        #: stages run in autocast_dtype (see LoFTRNet.match); bf16 on the CPU: the backbone only
        self.half_stages: tuple[str, ...] = HALF_STAGES[self.autocast_dtype]
        net = LoFTRNet(match_type, fix)
        net.load_official_state_dict(state_dict, source)
        #: backbone layout (see loftr/backbone.py): blocked and winograd only for float32 on the CPU,
        #: where auto is winograd; channels_last otherwise
        self.layout = "channels_last"
        if self.device.type == "cpu" and self.autocast_dtype is None and cfg.backbone_layout != "channels_last":
            self.layout = "winograd" if cfg.backbone_layout == "auto" else cfg.backbone_layout
        self.net = net.prepare_inference(self.device, self.layout)
        log.debug("LoFTR %s: match_type=%s temp_bug_fix=%s precision=%s", source, match_type, fix, cfg.precision)

    @property
    def match_type(self) -> str:
        return self.net.match_type

    @property
    def precision(self) -> str:
        """What runs in half precision, in words: "fp32", "fp16", "bf16 (backbone)"."""
        if self.autocast_dtype is None:
            return "fp32"
        name = "fp16" if self.autocast_dtype == torch.float16 else "bf16"
        return name if len(self.half_stages) == 3 else f"{name} ({', '.join(self.half_stages)})"

    def match_images(self, image0: ImageLike, image1: ImageLike, return_conf: bool = False) -> LoFTRMatches:
        """Match two images; see the module docstring for accepted images. -> LoFTRMatches."""
        return self.match_image_pairs([image0], [image1], return_conf=return_conf)[0]

    def match_image_pairs(self, images0: Sequence[ImageLike], images1: Sequence[ImageLike],
                          return_conf: bool = False) -> list[LoFTRMatches]:
        """Match images0[k] with images1[k] for every k, in batches of cfg.max_batch pairs (0 =
        one forward pass). Each pair's result equals that of match_images on it alone (up to
        float rounding). Sizes may differ between and within pairs."""
        if len(images0) != len(images1):
            raise InputError(f"need as many images0 as images1, got {len(images0)} and {len(images1)}")
        step = self.cfg.max_batch or max(1, len(images0))
        out: list[LoFTRMatches] = []
        for s in range(0, len(images0), step):
            out += self._match_batch(images0[s:s + step], images1[s:s + step], return_conf)
        return out

    def _prepare(self, image: ImageLike, what: str) -> tuple[torch.Tensor, tuple[int, int]]:
        t = to_gray_tensor(image, what)
        h, w = t.shape[-2:]
        if h < FACTOR or w < FACTOR:
            raise InputError(f"{what} is {w}x{h} pixels; LoFTR needs at least {FACTOR}x{FACTOR}")
        return _resize(t, image, self.cfg.max_size).to(self.device, non_blocking=True), (int(w), int(h))

    @torch.inference_mode()
    def _match_batch(self, images0: Sequence[ImageLike], images1: Sequence[ImageLike],
                     return_conf: bool) -> list[LoFTRMatches]:
        prep0 = [self._prepare(im, f"image0 #{k}") for k, im in enumerate(images0)]
        prep1 = [self._prepare(im, f"image1 #{k}") for k, im in enumerate(images1)]
        cfg = self.cfg
        res = self.net.match([p[0] for p in prep0], [p[0] for p in prep1], threshold=cfg.threshold,
                             border_rm=cfg.border_rm, temperature=cfg.dsmax_temperature, skh_iters=cfg.skh_iters,
                             skh_prefilter=cfg.skh_prefilter, return_conf=return_conf, half=self.autocast_dtype,
                             half_stages=self.half_stages)
        # from network pixels to the given images' pixels (pixel centres stay centres), on the device
        dev = self.device
        b_ids = res["b_ids"]
        scale0 = torch.tensor([[sz[0] / t.shape[-1], sz[1] / t.shape[-2]] for t, sz in prep0], device=dev)[b_ids]
        scale1 = torch.tensor([[sz[0] / t.shape[-1], sz[1] / t.shape[-2]] for t, sz in prep1], device=dev)[b_ids]
        pts0 = (res["pts0"] + 0.5) * scale0 - 0.5
        pts1 = (res["pts1"] + 0.5) * scale1 - 0.5
        size0 = torch.tensor([sz for _, sz in prep0], device=dev, dtype=torch.float32)[b_ids]
        size1 = torch.tensor([sz for _, sz in prep1], device=dev, dtype=torch.float32)[b_ids]
        # a refined point can leave its image only where border_rm = 0: such matches are dropped
        keep = ((pts0 >= 0) & (pts0 <= size0 - 1) & (pts1 >= 0) & (pts1 <= size1 - 1)).all(dim=1)
        std_px = res["std"] * float(WINDOW // 2 * (FACTOR // STRIDE)) * scale1.mean(dim=1)
        host = {k: v[keep].cpu().numpy() for k, v in (("b", b_ids), ("pts0", pts0), ("pts1", pts1), ("conf", res["conf"]),
                                                       ("i", res["i_ids"]), ("j", res["j_ids"]), ("std", std_px))}
        grid0, grid1 = res["grid0"].tolist(), res["grid1"].tolist()
        conf = None
        if return_conf:  # (B, Hm0*Wm0, Hm1*Wm1) over the batch's padded grids
            hm0, wm0 = (max(g[i] for g in grid0) for i in (0, 1))
            hm1, wm1 = (max(g[i] for g in grid1) for i in (0, 1))
            conf = res["conf_matrix"].float().cpu().numpy().reshape(-1, hm0, wm0, hm1, wm1)
        out = []
        for k in range(len(prep0)):
            sel = host["b"] == k
            (h0, w0), (h1, w1) = grid0[k], grid1[k]
            cm = None if conf is None else np.ascontiguousarray(conf[k, :h0, :w0, :h1, :w1].reshape(h0 * w0, h1 * w1))
            out.append(LoFTRMatches(
                pts0=host["pts0"][sel].astype(np.float32), pts1=host["pts1"][sel].astype(np.float32),
                confidence=host["conf"][sel].astype(np.float32), idx0=host["i"][sel].astype(np.int64),
                idx1=host["j"][sel].astype(np.int64), fine_std=host["std"][sel].astype(np.float32),
                grid0=(h0, w0), grid1=(h1, w1), size0=prep0[k][1], size1=prep1[k][1], conf_matrix=cm))
        return out


__all__ = ["LoFTR", "LoFTRMatches", "LoFTRConfig", "default_temp_bug_fix", "autocast_dtype", "to_gray_tensor", "OFFICIAL"]
