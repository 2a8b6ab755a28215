"""Two-view evaluation of detectors and matchers (used by tools/eval_pairs.py).

HPatches-style homography pairs (``pairs/churchill``: image 1 against images 2..6 with
``H_1_k`` mapping image-1 pixels to image-k pixels):
    * repeatability at eps px (SuperPoint's definition): keypoints of either image whose
      projection falls inside the other image; a point is repeated when the nearest keypoint of
      the other image lies within eps px of its projection; repeatability = repeated points of
      both images / shared points of both images;
    * matching precision at eps px: share of the matches whose reprojection error
      |H x0 - x1| < eps; recall: correct matches / ground-truth correspondences (mutual nearest
      keypoints under the reprojection with error < eps);
    * homography accuracy: H estimated from the matches (cv2.findHomography, USAC_MAGSAC, 3 px);
      mean distance of the four image corners mapped by the estimate and the truth; accuracy at
      t px = share of pairs with error < t (failures count as errors).

Relative-pose pairs (``pairs/scannet``, SuperGlue's protocol): images resized to 640x480,
essential matrix from the matches with USAC_MAGSAC (1 px threshold in normalised coordinates)
and cheirality check (cv2.recoverPose); pose error = max(rotation error, angle between the
translation directions, the latter folded to <= 90 deg as the sign of t is not observable);
AUC of the error-recall curve up to 5/10/20 degrees (failures count as infinite error).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from slam.training.homographies import corner_error, scale_homography, warp_points
from slam.types import Features, Matches

__all__ = [
    "resize_max", "load_churchill", "load_scannet", "repeatability", "match_metrics", "homography_error",
    "estimate_relative_pose", "relative_pose_error", "pose_auc", "Method", "build_methods", "evaluate_churchill",
    "evaluate_scannet", "format_table", "METHOD_NAMES", "shapes_detection_metrics",
]

METHOD_NAMES = ("orb+nn", "sift+nn", "superpoint(ours)+nn", "superpoint(ours)+superglue(ours)", "aliked+lightglue",
                "disk+lightglue", "xfeat+nn", "xfeat+lightglue")


# ------------------------------------------------------------------------------------------ data


def resize_max(img: np.ndarray, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Shrink so that the longer side is ``max_side`` (no enlarging). Returns (image, (sx, sy))."""
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w)) if max_side > 0 else 1.0
    if s == 1.0:
        return img, (1.0, 1.0)
    nw, nh = int(round(w * s)), int(round(h * s))
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA), (nw / w, nh / h)


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img


def load_churchill(root: Path, max_side: int = 640) -> list[dict]:
    """Pairs (1, k), k = 2..6: dict(name, image0, image1 (BGR uint8, resized), h1_from_0 (3, 3))."""
    root = Path(root)
    if not (root / "1.png").is_file():
        raise FileNotFoundError(f"{root}: no 1.png; expected the churchill folder of ../shared/data/pairs")
    im0, s0 = resize_max(_read(root / "1.png"), max_side)
    pairs = []
    for k in range(2, 7):
        hfile = root / f"H_1_{k}"
        if not hfile.is_file():
            continue
        im1, s1 = resize_max(_read(root / f"{k}.png"), max_side)
        hom = np.loadtxt(hfile).reshape(3, 3)
        pairs.append({"name": f"1-{k}", "image0": im0, "image1": im1, "h1_from_0": scale_homography(hom, s0, s1)})
    if not pairs:
        raise FileNotFoundError(f"{root}: no H_1_k files")
    return pairs


def load_scannet(root: Path, size: tuple[int, int] = (640, 480)) -> list[dict]:
    """pairs_with_gt.txt -> dict(name, image0, image1 (resized to size = (w, h)), K0, K1 (scaled),
    cam1_from_cam0 (4, 4))."""
    root = Path(root)
    listing = root / "pairs_with_gt.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found; expected the scannet folder of ../shared/data/pairs")
    pairs = []
    for line in listing.read_text().splitlines():
        tok = line.split()
        if len(tok) < 38:
            continue
        n0, n1 = tok[0], tok[1]
        k0 = np.array(tok[4:13], float).reshape(3, 3)
        k1 = np.array(tok[13:22], float).reshape(3, 3)
        t01 = np.array(tok[22:38], float).reshape(4, 4)
        ims, ks = [], []
        for name, kk in ((n0, k0), (n1, k1)):
            img = _read(root / name)
            h, w = img.shape[:2]
            sx, sy = size[0] / w, size[1] / h
            ims.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
            ks.append(np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]]) @ kk)
        pairs.append({"name": f"{n0} {n1}", "image0": ims[0], "image1": ims[1], "K0": ks[0], "K1": ks[1],
                      "cam1_from_cam0": t01})
    return pairs


# ------------------------------------------------------------------------------------------ metrics


def _inside(p: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    f = np.isfinite(p).all(1)
    q = np.where(f[:, None], p, -1)
    return f & (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1)


def repeatability(k0: np.ndarray, k1: np.ndarray, h1_from_0: np.ndarray, size0: tuple[int, int],
                  size1: tuple[int, int], eps: float = 3.0) -> float:
    """SuperPoint's repeatability (see module doc). k0 (N, 2), k1 (M, 2) px; sizes (w, h)."""
    w0 = warp_points(k0, h1_from_0)
    w1 = warp_points(k1, np.linalg.inv(h1_from_0))
    a = _inside(w0, size1)  # shared points of image 0
    b = _inside(w1, size0)
    n = int(a.sum() + b.sum())
    if n == 0:
        return 0.0
    if a.sum() == 0 or b.sum() == 0:
        return 0.0
    d = np.linalg.norm(w0[a][:, None] - np.asarray(k1, float)[b][None], axis=2)  # in image 1
    rep = int((d.min(1) <= eps).sum() + (d.min(0) <= eps).sum())
    return rep / n


def match_metrics(k0: np.ndarray, k1: np.ndarray, matches0: np.ndarray, h1_from_0: np.ndarray,
                  size1: tuple[int, int], eps: float = 3.0) -> dict:
    """Precision / recall at eps px of matches (matches0 (N,) index into k1 or -1)."""
    m = np.asarray(matches0)
    valid = m >= 0
    w0 = warp_points(k0, h1_from_0)
    err = np.full(len(k0), np.inf)
    if valid.any():
        err[valid] = np.linalg.norm(w0[valid] - np.asarray(k1, float)[m[valid]], axis=1)
    correct = valid & (err < eps)
    # ground truth correspondences: mutual nearest under the projection, error < eps
    n_gt = 0
    if len(k0) and len(k1):
        ins = _inside(w0, size1)
        d = np.linalg.norm(np.where(ins[:, None], w0, 1e9)[:, None] - np.asarray(k1, float)[None], axis=2)
        j = d.argmin(1)
        i_back = d.argmin(0)
        n_gt = int(((i_back[j] == np.arange(len(k0))) & (d[np.arange(len(k0)), j] < eps)).sum())
    n_m = int(valid.sum())
    return {"precision": float(correct.sum() / n_m) if n_m else 0.0,
            "recall": float(correct.sum() / n_gt) if n_gt else 0.0,
            "n_matches": n_m, "n_correct": int(correct.sum()), "n_gt": n_gt}


def homography_error(k0: np.ndarray, k1: np.ndarray, matches0: np.ndarray, h1_from_0: np.ndarray,
                     size0: tuple[int, int]) -> float:
    """Mean corner error (px) of the homography estimated from the matches (inf on failure)."""
    m = np.asarray(matches0)
    valid = m >= 0
    if valid.sum() < 4:
        return float("inf")
    p0 = np.asarray(k0, np.float64)[valid]
    p1 = np.asarray(k1, np.float64)[m[valid]]
    cv2.setRNGSeed(0)  # USAC is randomised: same matches -> same result, whatever ran before
    est, _ = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, 3.0, maxIters=10000, confidence=0.9999)
    if est is None:
        return float("inf")
    return corner_error(est, h1_from_0, size0[0], size0[1])


def estimate_relative_pose(p0: np.ndarray, p1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                           thresh_px: float = 1.0, conf: float = 0.99999) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Essential matrix (USAC_MAGSAC) + cheirality -> (R (3, 3), t (3,) unit, inlier mask) with
    p1 ~ R p0 + t, or None when fewer than 5 matches or no solution."""
    if len(p0) < 5:
        return None
    n0 = (np.asarray(p0, np.float64) - K0[[0, 1], [2, 2]]) / K0[[0, 1], [0, 1]]
    n1 = (np.asarray(p1, np.float64) - K1[[0, 1], [2, 2]]) / K1[[0, 1], [0, 1]]
    thr = thresh_px / np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    cv2.setRNGSeed(0)  # USAC is randomised: same matches -> same result, whatever ran before
    E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method=cv2.USAC_MAGSAC, prob=conf, threshold=thr)
    if E is None or mask is None:
        return None
    best = None
    for k in range(0, E.shape[0] - E.shape[0] % 3, 3):
        n, R, t, inl = cv2.recoverPose(E[k:k + 3], n0, n1, np.eye(3), 1e9, mask=mask.copy())
        if best is None or n > best[0]:
            best = (n, R, t[:, 0], inl.ravel() > 0)
    if best is None:
        return None
    return best[1], best[2], best[3]


def relative_pose_error(cam1_from_cam0: np.ndarray, R: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(rotation error, translation direction error) in degrees; the latter folded to [0, 90]."""
    R_gt, t_gt = cam1_from_cam0[:3, :3], cam1_from_cam0[:3, 3]
    cos_r = np.clip((np.trace(R.T @ R_gt) - 1) / 2, -1.0, 1.0)
    err_r = float(np.degrees(np.arccos(cos_r)))
    n = np.linalg.norm(t) * np.linalg.norm(t_gt)
    if n < 1e-12:
        return err_r, 0.0 if np.linalg.norm(t_gt) < 1e-12 else 90.0
    err_t = float(np.degrees(np.arccos(np.clip(np.dot(t, t_gt) / n, -1.0, 1.0))))
    return err_r, min(err_t, 180.0 - err_t)


def pose_auc(errors: Sequence[float], thresholds: Sequence[float] = (5.0, 10.0, 20.0)) -> list[float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to [0, 1]
    (SuperGlue's definition: the curve steps up at each sorted error)."""
    e = np.sort(np.asarray(errors, np.float64))
    n = len(e)
    if n == 0:
        return [0.0 for _ in thresholds]
    recall = np.arange(1, n + 1) / n
    e = np.concatenate([[0.0], e])
    recall = np.concatenate([[0.0], recall])
    out = []
    for t in thresholds:
        last = int(np.searchsorted(e, t))
        r = np.concatenate([recall[:last], [recall[last - 1]]])
        x = np.concatenate([e[:last], [t]])
        out.append(float(np.trapezoid(r, x) / t) if hasattr(np, "trapezoid") else float(np.trapz(r, x) / t))
    return out


# ------------------------------------------------------------------------------------------ methods


@dataclass
class Method:
    """A detector/descriptor + matcher pipeline: extract(BGR image) -> Features, match -> Matches."""

    name: str
    extract: Callable[[np.ndarray], Features]
    match: Callable[[Features, Features], Matches]


def _sift_extractor(n_features: int) -> Callable[[np.ndarray], Features]:
    sift = cv2.SIFT_create(nfeatures=n_features)

    def extract(img: np.ndarray) -> Features:
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
        kps, desc = sift.detectAndCompute(gray, None)
        if desc is None or not kps:
            return Features(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, 128), (gray.shape[1], gray.shape[0]))
        order = np.argsort([-k.response for k in kps])[:n_features]
        pts = np.array([kps[i].pt for i in order], np.float32)
        sc = np.array([kps[i].response for i in order], np.float32)
        d = desc[order].astype(np.float32)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-8)
        return Features(torch.from_numpy(pts), torch.from_numpy(sc), torch.from_numpy(d), (gray.shape[1], gray.shape[0]))

    return extract


def build_methods(names: Sequence[str], superpoint_weights: Optional[str], superglue_weights: Optional[str],
                  device: str = "cpu", max_keypoints: int = 1024, log=print) -> list[Method]:
    """Instantiate the requested methods (see METHOD_NAMES); a method whose weights are missing
    is skipped with a message."""
    from slam.matching.nn import NNConfig, NearestNeighborMatcher

    dev = torch.device(device)
    nn = NearestNeighborMatcher(NNConfig(), dev)
    methods: list[Method] = []
    sp = None
    for name in names:
        try:
            if name == "orb+nn":
                from slam.features.orb import ORBConfig, ORBExtractor
                orb = ORBExtractor(ORBConfig(n_features=max_keypoints), dev)
                methods.append(Method(name, orb.extract, nn.match))
            elif name == "sift+nn":
                methods.append(Method(name, _sift_extractor(max_keypoints), nn.match))
            elif name.startswith("superpoint(ours)"):
                if sp is None:
                    from slam.features.superpoint import SuperPoint, SuperPointConfig, load_superpoint_weights
                    sd = load_superpoint_weights(superpoint_weights or "superpoint_ours")
                    sp = SuperPoint(SuperPointConfig(max_keypoints=max_keypoints, precision="fp32"), dev, state_dict=sd)
                if name == "superpoint(ours)+nn":
                    methods.append(Method(name, sp.extract, nn.match))
                else:
                    from slam.matching.superglue import SuperGlue, SuperGlueConfig
                    sg = SuperGlue(SuperGlueConfig(weights=superglue_weights or "superglue_ours", precision="fp32"), dev)
                    methods.append(Method(name, sp.extract, sg.match))
            elif name in ("aliked+lightglue", "disk+lightglue", "xfeat+nn", "xfeat+lightglue"):
                from slam.matching.lightglue import LightGlue, LightGlueConfig
                if name.startswith("aliked"):
                    from slam.features.aliked import ALIKED as Extractor, ALIKEDConfig as ExtractorConfig
                elif name.startswith("xfeat"):
                    from slam.features.xfeat import XFeat as Extractor, XFeatConfig as ExtractorConfig
                else:
                    from slam.features.disk import DISK as Extractor, DISKConfig as ExtractorConfig
                feature = name.split("+")[0]
                ext = Extractor(ExtractorConfig(max_keypoints=max_keypoints, precision="fp32"), dev)
                if name.endswith("+nn"):
                    methods.append(Method(name, ext.extract, nn.match))
                    continue
                lg = LightGlue(LightGlueConfig(features=feature, precision="fp32"), dev)
                methods.append(Method(name, ext.extract, lg.match))
            else:
                raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
        except (FileNotFoundError, RuntimeError, OSError) as exc:
            if log:
                log(f"skipping {name}: {exc}")
    return methods


def _np(f: Features) -> np.ndarray:
    return f.keypoints.detach().cpu().numpy().astype(np.float64)


def _extract_and_match(m: Method, pair: dict):
    """Keypoints (N0,2), (N1,2) float64 px of both images and the method's Matches."""
    f0, f1 = m.extract(pair["image0"]), m.extract(pair["image1"])
    return _np(f0), _np(f1), m.match(f0, f1)


def evaluate_churchill(methods: Sequence[Method], pairs: list[dict], eps: float = 3.0,
                       thresholds: Sequence[float] = (3.0, 5.0, 10.0)) -> dict:
    out = {}
    for m in methods:
        rows = []
        t0 = time.perf_counter()
        for p in pairs:
            k0, k1, mt = _extract_and_match(m, p)
            size0 = (p["image0"].shape[1], p["image0"].shape[0])
            size1 = (p["image1"].shape[1], p["image1"].shape[0])
            mm = match_metrics(k0, k1, mt.matches0, p["h1_from_0"], size1, eps)
            rows.append({"pair": p["name"], "n_kpts0": len(k0), "n_kpts1": len(k1),
                         "repeatability": repeatability(k0, k1, p["h1_from_0"], size0, size1, eps),
                         **mm, "corner_error": homography_error(k0, k1, mt.matches0, p["h1_from_0"], size0)})
        errs = np.array([r["corner_error"] for r in rows])
        out[m.name] = {
            "repeatability": float(np.mean([r["repeatability"] for r in rows])),
            "precision": float(np.mean([r["precision"] for r in rows])),
            "recall": float(np.mean([r["recall"] for r in rows])),
            **{f"h_acc@{t:g}px": float(np.mean(errs < t)) for t in thresholds},
            "mean_matches": float(np.mean([r["n_matches"] for r in rows])),
            "seconds": time.perf_counter() - t0, "pairs": rows,
        }
    return out


def evaluate_scannet(methods: Sequence[Method], pairs: list[dict], thresholds: Sequence[float] = (5.0, 10.0, 20.0),
                     ransac_px: float = 1.0) -> dict:
    out = {}
    for m in methods:
        rows = []
        t0 = time.perf_counter()
        for p in pairs:
            k0, k1, mt = _extract_and_match(m, p)
            valid = mt.matches0 >= 0
            res = estimate_relative_pose(k0[valid], k1[mt.matches0[valid]], p["K0"], p["K1"], ransac_px)
            if res is None:
                err_r = err_t = float("inf")
                n_inl = 0
            else:
                err_r, err_t = relative_pose_error(p["cam1_from_cam0"], res[0], res[1])
                n_inl = int(res[2].sum())
            rows.append({"pair": p["name"], "n_matches": int(valid.sum()), "n_inliers": n_inl,
                         "err_R": err_r, "err_t": err_t, "err": max(err_r, err_t)})
        aucs = pose_auc([r["err"] for r in rows], thresholds)
        out[m.name] = {**{f"auc@{t:g}": a for t, a in zip(thresholds, aucs)},
                       "mean_matches": float(np.mean([r["n_matches"] for r in rows])),
                       "seconds": time.perf_counter() - t0, "pairs": rows}
    return out


def format_table(churchill: Optional[dict], scannet: Optional[dict]) -> str:
    names = list(dict.fromkeys(list((churchill or {}).keys()) + list((scannet or {}).keys())))
    head = (f"{'method':34s} | {'rep@3':>6s} {'P@3':>6s} {'R@3':>6s} {'H@3':>5s} {'H@5':>5s} {'H@10':>5s} "
            f"{'#m':>5s} | {'AUC@5':>6s} {'AUC@10':>6s} {'AUC@20':>6s} {'#m':>5s}")
    lines = [head, "-" * len(head)]
    for n in names:
        c = (churchill or {}).get(n)
        s = (scannet or {}).get(n)
        cp = (f"{c['repeatability']:6.3f} {c['precision']:6.3f} {c['recall']:6.3f} {c['h_acc@3px']:5.2f} "
              f"{c['h_acc@5px']:5.2f} {c['h_acc@10px']:5.2f} {c['mean_matches']:5.0f}") if c else " " * 45
        sp = (f"{100 * s['auc@5']:6.2f} {100 * s['auc@10']:6.2f} {100 * s['auc@20']:6.2f} {s['mean_matches']:5.0f}"
              if s else "")
        lines.append(f"{n:34s} | {cp} | {sp}")
    return "\n".join(lines)


def shapes_detection_metrics(state_dict: dict, n_images: int = 100, seed: int = 12345, height: int = 120,
                             width: int = 160, eps: float = 2.0, threshold: float = 0.015, nms_radius: int = 4) -> dict:
    """Detector precision / recall at ``eps`` px on held-out Synthetic Shapes images (seeds never
    used in training: training draws from one generator seeded with the config seed). A detection
    is correct when a labelled corner lies within eps px; recall counts labelled corners found."""
    from slam.features.superpoint import SuperPointNet, extract_keypoints, heatmap_from_logits, nms
    from slam.training.synthetic_shapes import ShapesConfig, SyntheticShapes

    net = SuperPointNet(batch_norm=any(k.startswith("bn") for k in state_dict))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
    net.eval()
    gen = SyntheticShapes(ShapesConfig(height=height, width=width))
    tp = n_det = n_gt = found = 0
    for i in range(n_images):
        img, pts = gen.sample(np.random.default_rng([seed, i]))
        with torch.inference_mode():
            heat = heatmap_from_logits(net(torch.from_numpy(img).float()[None, None] / 255.0)["logits"])
        k, _, v = extract_keypoints(nms(heat, nms_radius), threshold, 0, 4)
        det = k[0][v[0]].numpy()
        inner = pts[(pts[:, 0] >= 4) & (pts[:, 0] < width - 4) & (pts[:, 1] >= 4) & (pts[:, 1] < height - 4)]
        n_det += len(det)
        n_gt += len(inner)
        if len(det) and len(pts):
            d = np.linalg.norm(det[:, None] - pts[None], axis=2)
            tp += int((d.min(1) <= eps).sum())
        if len(det) and len(inner):
            found += int((np.linalg.norm(inner[:, None] - det[None], axis=2).min(1) <= eps).sum())
    return {"precision": tp / max(n_det, 1), "recall": found / max(n_gt, 1), "detections": n_det, "corners": n_gt,
            "images": n_images, "eps_px": eps, "threshold": threshold}
