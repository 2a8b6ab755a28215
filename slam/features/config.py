"""Settings of the feature extractors (light: no torch; ``slam.config`` builds on them).

Each extractor module re-exports its own class (``from slam.features.orb import ORBConfig``).
"""
from __future__ import annotations

from dataclasses import dataclass

from slam.params import param

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

#: L2 distance between unit float descriptors that guided search (tracking and local mapping)
#: accepts, per extractor, when ``max_desc_dist_float`` is left unset. XFeat's 64-D descriptors
#: are less distinctive: 0.7 (its authors' mutual-NN matcher uses cosine 0.82, L2 0.6;
#: docs/benchmarks.md section 9 measured 0.7). On the Churchill homography pairs (1->2, 1->3;
#: true match within 2 px, impostors 4-15 px away) 0.7 keeps 98.9 % of XFeat's true matches.
#: ALIKED reaches the same recall at 0.8 (99.5 %), where it accepts 14 % of impostors against
#: 29 % at 0.9 (docs/benchmarks.md section 13, 2026-12-04 evening). Others: 0.9.
GUIDED_MAX_L2 = {"xfeat": 0.7, "aliked": 0.8}
DEFAULT_GUIDED_MAX_L2 = 0.9


#: Extractors whose network costs a CPU hundreds of ms per frame (ALIKED about 240 ms, SuperPoint
#: 300-600 ms, DISK more), against XFeat's 26-45 ms and ORB's 12 ms. On a CPU they bound the frame
#: rate, so the rest of the pipeline may spend more: the feature process gets every core
#: (slam.runtime.feature_process.resolve_feature_threads) and the monocular local BA the larger
#: window (slam.mapping.config.mono_local_ba).
HEAVY_CPU_EXTRACTORS = ("aliked", "disk", "superpoint")


def guided_max_l2(features: str) -> float:
    """The guided-search L2 threshold of an extractor's float descriptors (GUIDED_MAX_L2)."""
    return GUIDED_MAX_L2.get(features, DEFAULT_GUIDED_MAX_L2)


@dataclass
class ORBConfig:
    n_features: int = param(1000, ge=1)  # keypoints kept per image (ORB-SLAM2 uses 1000 at 640x480)
    scale_factor: float = param(1.2, gt=1.0)  # pyramid scale between levels
    n_levels: int = param(8, ge=1)  # pyramid levels
    fast_threshold: int = param(12, ge=1, le=255)  # FAST threshold; low so textureless areas still get corners
    grid_cols: int = param(16, ge=1)  # bucketing grid: at most n_features/(cols*rows)*oversample per cell
    grid_rows: int = param(12, ge=1)
    oversample: float = param(10.0, ge=1.0)  # candidate pool = oversample x n_features (cv2 keeps the strongest globally), then per-cell bucketing
    edge_threshold: int = param(19, ge=0)  # border (px) where no keypoint is detected


@dataclass
class SuperPointConfig:
    weights: str = "superpoint_ours"  # path to a .pth, or a name `python -m slam weights list` knows
    max_keypoints: int = 1024  # top-k per image by score; <= 0 keeps all (costs one host sync)
    detection_threshold: float = param(0.005, ge=0.0)  # keep heatmap maxima with probability > this (>= 0)
    nms_radius: int = param(4, ge=0)  # NMS window is (2r+1)x(2r+1) pixels (max-pool form); 0 disables
    remove_borders: int = param(4, ge=0)  # drop keypoints closer than this (px) to the original image border
    precision: str = param("auto", choices=PRECISIONS)  # auto = fp16 on CUDA, bf16 on a CPU with AMX or AVX512-BF16 on AMD (slam.device.fast_cpu_bf16_matmul) if it keeps quality, else fp32
    compile: bool = False  # torch.compile the network (CUDA: mode reduce-overhead = CUDA graphs)
    channels_last: bool = True  # NHWC memory format for the convolutions (faster with oneDNN/cuDNN)
    descriptor_convention: str = param("auto", choices=("auto", "official", "open"))  # where descriptor cells sit (see sample_descriptors)
    bf16_min_repeatability: float = param(0.9, ge=0.0, le=1.0)  # auto on CPU: bf16 only if >= this share of fp32 keypoints within 1 px


@dataclass
class ALIKEDConfig:
    model: str = "aliked-n16"  # aliked-n16 | aliked-n16rot | aliked-n32 | aliked-t16, or a path to a .pth
    max_keypoints: int = 1024  # keep at most this many (highest scores); <= 0 = no limit
    detection_threshold: float = param(0.2, lt=1.0)  # score-map threshold in (0,1) (cvg/LightGlue default 0.2); <= 0 = pure top-k
    nms_radius: int = param(2, ge=0)  # NMS and soft-refinement window radius in pixels (window 2r+1)
    precision: str = param("auto", choices=PRECISIONS)  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 (CUDA only) | bf16


@dataclass
class DISKConfig:
    weights: str = "disk-depth-save"  # registry name of the DISK 'depth' checkpoint, or a path to a .pth
    max_keypoints: int = 1024  # keep at most this many (highest heatmap logits); <= 0 = no limit
    nms_window_size: int = param(5, ge=1)  # odd side of the non-maximum-suppression window, pixels
    detection_threshold: float = 0.0  # minimum heatmap logit of a keypoint
    pad_if_not_divisible: bool = True  # zero-pad sides to a multiple of 16; False = error for such images
    precision: str = param("auto", choices=PRECISIONS)  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 (CUDA only) | bf16


@dataclass
class XFeatConfig:
    weights: str = "xfeat"  # registry name (`python -m slam weights install xfeat`) or a path to xfeat.pt
    max_keypoints: int = 1024  # keep at most this many (highest score = heatmap x reliability); <= 0 = no limit
    detection_threshold: float = param(0.05, ge=0.0, lt=1.0)  # keypoint-heatmap probability a candidate must exceed (reference 0.05)
    nms_size: int = param(5, ge=1)  # odd side of the non-maximum-suppression window, pixels (reference 5)
    shifted_grid: bool = True  # also run the keypoint head on the 8x8 cell grid moved by half a cell (4 px) and detect on the geometric mean of the two heatmaps, so keypoints do not snap to where the grid cuts the image (keypoints 0.59 instead of 0.92 px from the truth on synthetic/loop_short, monocular ATE there halved; docs/benchmarks.md section 14, 2026-12-07); False = the reference's keypoints
    subpixel: bool = True  # refine keypoints to sub-pixel on the heatmap (parabola per axis; synthetic ATE RGB-D 0.21 -> 0.20 cm, mono 0.39 -> 0.36 cm); False = the reference's whole pixels
    precision: str = param("auto", choices=PRECISIONS + ("int8",))  # auto = fp16 on CUDA, bf16 on a CPU with AMX (native bf16) if it keeps the keypoints, and in runs with depth (RGB-D, stereo) also on AMD CPUs with AVX512-BF16 (slam.device.fast_cpu_bf16_matmul), else fp32 | fp32 | fp16 (CUDA only) | bf16 | int8 (CPU, opt-in: the 3x3 convolutions in int8, 1.7x faster, 98 % of the keypoints on the same pixel; slam.features.xfeat_int8)
    bf16_min_repeatability: float = param(0.9, ge=0.0, le=1.0)  # auto on CPU: bf16 only if >= this share of fp32 keypoints within 1 px (synthetic probe image)
