"""Drawing keypoints and matches for a person to look at (OpenCV only).

The match plot follows the style of Magic Leap's SuperGlue demo: both images side by side on
a white background, one line per match coloured by its confidence with a jet-like colormap
(blue = low, red = high) or by the verdict of a fundamental-matrix RANSAC (green inlier, red
outlier), the keypoints as small dots, a few lines of text at the top left and a legend strip
underneath (colour bar or swatches, match / inlier / outlier counts).
All functions return an (H, W, 3) uint8 BGR image and optionally write it to ``out_path``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from slam.types import Features, Matches

PathLike = Union[str, Path]


def _to_bgr(image: np.ndarray, gray: bool = False) -> np.ndarray:
    """(H,W) or (H,W,1|3) uint8 -> (H,W,3) uint8 BGR copy (grey look when gray=True)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        if gray:
            return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        return image.copy()
    raise ValueError(f"expected an (H,W) or (H,W,3) image, got shape {image.shape}")


def confidence_colors(confidence: np.ndarray) -> np.ndarray:
    """(N,) values in [0, 1] -> (N, 3) uint8 BGR colours of OpenCV's jet colormap
    (0 = dark blue, 0.5 = green-yellow, 1 = dark red). Values outside [0, 1] are clipped."""
    conf = np.clip(np.nan_to_num(np.asarray(confidence, np.float64).reshape(-1)), 0.0, 1.0)
    if conf.size == 0:
        return np.zeros((0, 3), np.uint8)
    lut_in = np.round(conf * 255).astype(np.uint8)[:, None]
    return cv2.applyColorMap(lut_in, cv2.COLORMAP_JET)[:, 0, :]


def _put_text(canvas: np.ndarray, lines: Sequence[str], origin: tuple[int, int] = (8, 0),
              scale: Optional[float] = None) -> None:
    """White text with a black outline, one line below the other, from the top-left corner."""
    if not lines:
        return
    h = canvas.shape[0]
    sc = scale if scale is not None else max(0.4, min(1.0, h / 640.0))
    step = int(round(30 * sc))
    x, y = origin
    for i, line in enumerate(lines):
        pos = (x, y + step * (i + 1))
        # outline by offsets: a thicker stroke would also widen OpenCV's glyph advance
        for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, 2), (2, 0), (0, -2), (-2, 0)):
            cv2.putText(canvas, str(line), (pos[0] + dx, pos[1] + dy), cv2.FONT_HERSHEY_DUPLEX, sc,
                        (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, str(line), pos, cv2.FONT_HERSHEY_DUPLEX, sc, (255, 255, 255), 1, cv2.LINE_AA)


def _write(canvas: np.ndarray, out_path: Optional[PathLike]) -> None:
    if out_path is None:
        return
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"could not write image {path} (is the extension one OpenCV knows, e.g. .png or .jpg?)")


def _keypoints_np(feats: Features) -> np.ndarray:
    return np.asarray(feats.keypoints_np, dtype=np.float64).reshape(-1, 2)


def draw_keypoints(image: np.ndarray, feats: Features, out_path: Optional[PathLike] = None,
                   text_lines: Optional[Sequence[str]] = None, radius: int = 2, legend: bool = True) -> np.ndarray:
    """Keypoints on the image, coloured by the rank of their score (jet colormap: blue = weakest,
    red = strongest; ranks, because detector scores such as ORB's Harris response are heavily
    skewed), with the score quartiles under the legend's colour bar.

    image: (H, W, 3) uint8 BGR or (H, W) uint8 grey; feats: Features of that image (pixels,
    any device). text_lines: shown at the top left (default: "<N> keypoints"). legend: a white
    strip underneath with the score colour bar and the count.
    Returns the (H + strip, W, 3) uint8 BGR drawing (H, W without the legend); writes it to
    out_path when given.
    """
    canvas = _to_bgr(image)
    kp = _keypoints_np(feats)
    ticks = np.zeros(5)
    if len(kp):
        scores = feats.scores.detach().float().cpu().numpy()
        ticks = np.quantile(scores, [0.0, 0.25, 0.5, 0.75, 1.0])
        colors = confidence_colors(confidence_ranks(scores))
        pts = np.round(kp).astype(int)
        for i in np.argsort(scores, kind="stable"):  # strongest drawn last, on top
            x, y = pts[i]
            cv2.circle(canvas, (int(x), int(y)), radius + 1, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(canvas, (int(x), int(y)), radius, tuple(int(c) for c in colors[i]), -1, cv2.LINE_AA)
    lines = list(text_lines) if text_lines is not None else [f"{len(kp)} keypoints"]
    _put_text(canvas, lines)
    if legend:  # what the colours mean: score ranks, weakest (blue) to strongest (red), quartiles under the bar
        strip = _legend(canvas.shape[1], canvas.shape[0] / 640.0, "confidence" if len(kp) else "none", ticks,
                        [f"keypoints {len(kp)}"], label="detector score")
        canvas = np.concatenate([canvas, strip], axis=0)
    _write(canvas, out_path)
    return canvas


def _match_pairs(matches: Union[Matches, np.ndarray], n0: int, n1: int) -> tuple[np.ndarray, np.ndarray]:
    """(M,2) index pairs and (M,) confidences from Matches or an (M,2) / (M,3) array."""
    if isinstance(matches, Matches):
        pairs = matches.pairs()
        conf = matches.scores0[pairs[:, 0]] if len(pairs) else np.zeros(0, np.float32)
    else:
        arr = np.asarray(matches)
        if arr.ndim != 2 or arr.shape[1] not in (2, 3):
            raise ValueError(f"matches must be a Matches object or an (M,2)/(M,3) array, got shape {arr.shape}")
        pairs = arr[:, :2].astype(np.int64)
        conf = arr[:, 2].astype(np.float32) if arr.shape[1] == 3 else np.ones(len(arr), np.float32)
    if len(pairs) and (pairs[:, 0].max() >= n0 or pairs[:, 1].max() >= n1 or pairs.min() < 0):
        raise ValueError(f"match indices out of range for {n0} and {n1} keypoints")
    return pairs, conf


def fundamental_inliers(pts0: np.ndarray, pts1: np.ndarray, threshold_px: float = 1.0,
                        confidence: float = 0.999) -> Optional[np.ndarray]:
    """Geometric check of point matches: RANSAC fundamental matrix (OpenCV, 8-point samples).

    pts0, pts1: (M, 2) pixels in image 0 / image 1. threshold_px: largest distance to the
    epipolar line of an inlier, in pixels. Returns (M,) bool, or None when fewer than 8 matches
    or no model was found (nothing can be said about them).
    """
    p0 = np.asarray(pts0, np.float64).reshape(-1, 2)
    p1 = np.asarray(pts1, np.float64).reshape(-1, 2)
    if len(p0) < 8:
        return None
    _, mask = cv2.findFundamentalMat(p0, p1, cv2.FM_RANSAC, float(threshold_px), float(confidence), 10000)
    if mask is None or mask.shape[0] != len(p0):
        return None
    return mask.reshape(-1).astype(bool)


INLIER_BGR = (60, 200, 0)  # green
OUTLIER_BGR = (40, 40, 230)  # red


def confidence_ranks(conf: np.ndarray) -> np.ndarray:
    """(M,) confidences -> (M,) float64 in [0, 1]: each value's rank among them (ties share
    their mean rank; 0.5 for all when there is one value or all are equal). Colouring by rank
    spreads the colours over the matches even when a matcher puts most of them near 1."""
    c = np.asarray(conf, np.float64).reshape(-1)
    if c.size < 2:
        return np.full(c.size, 0.5)
    srt = np.sort(c)
    lo = np.searchsorted(srt, c, side="left")
    hi = np.searchsorted(srt, c, side="right") - 1
    if srt[0] == srt[-1]:
        return np.full(c.size, 0.5)
    return (lo + hi) / 2.0 / (c.size - 1)


def _legend(width: int, scale: float, color_by: str, quantiles: Sequence[float], counts: Sequence[str],
            label: str = "confidence") -> np.ndarray:
    """White strip ``width`` wide: "<label> [jet bar]" with the values at 0, 25, 50, 75
    and 100 % of the bar under it (or, for color_by="inlier",
    swatches before the inlier / outlier counts) and the count texts, left to right, wrapped
    onto more rows when the images are narrow."""
    sc = max(0.4, min(0.6, scale))
    font, black = cv2.FONT_HERSHEY_DUPLEX, (0, 0, 0)
    row_h = int(round(34 * sc / 0.6))

    def text_item(text: str) -> np.ndarray:
        (tw, _), _ = cv2.getTextSize(text, font, sc, 1)
        item = np.full((row_h, tw + 2, 3), 255, np.uint8)
        cv2.putText(item, text, (1, int(row_h * 0.68)), font, sc, black, 1, cv2.LINE_AA)
        return item

    def block(color, size: int) -> np.ndarray:
        item = np.full((row_h, size + 4, 3), 255, np.uint8)
        y0 = (row_h - size) // 2
        item[y0:y0 + size, 2:2 + size] = color
        cv2.rectangle(item, (2, y0), (1 + size, y0 + size - 1), black, 1)
        return item

    groups: list[list[np.ndarray]] = []  # items of a group stay on one row
    if color_by == "confidence":
        bar_w, bar_h = max(60, min(240, width // 6)), max(8, row_h // 3)
        tick_sc = sc * 0.75
        bar = np.full((row_h + int(row_h * 0.6), bar_w + 40, 3), 255, np.uint8)
        x0, y0 = 20, max(2, (row_h - bar_h) // 2)
        bar[y0:y0 + bar_h, x0:x0 + bar_w] = confidence_colors(np.linspace(0.0, 1.0, bar_w))[None]
        cv2.rectangle(bar, (x0, y0), (x0 + bar_w - 1, y0 + bar_h - 1), black, 1)
        taken: list[tuple[int, int]] = []  # x spans of the tick labels drawn so far
        # the ends first, then the quartiles where their labels fit between them
        for q, value in sorted(zip((0.0, 0.25, 0.5, 0.75, 1.0), quantiles), key=lambda e: (e[0] not in (0.0, 1.0), e[0])):
            xt = x0 + int(round(q * (bar_w - 1)))
            cv2.line(bar, (xt, y0 + bar_h), (xt, y0 + bar_h + 3), black, 1)
            tick = f"{value:.3g}"
            (tw, th), _ = cv2.getTextSize(tick, font, tick_sc, 1)
            xl = min(max(xt - tw // 2, 0), bar.shape[1] - tw)
            if any(xl < b + 4 and a < xl + tw + 4 for a, b in taken):
                continue
            taken.append((xl, xl + tw))
            cv2.putText(bar, tick, (xl, y0 + bar_h + 5 + th), font, tick_sc, black, 1, cv2.LINE_AA)
        groups.append([text_item(label), bar])
    for text in counts:
        if color_by == "inlier" and text.startswith(("inliers", "outliers")):
            col = INLIER_BGR if text.startswith("inliers") else OUTLIER_BGR
            groups.append([block(col, max(10, row_h // 2)), text_item(text)])
        else:
            groups.append([text_item(text)])
    gap, pad = 6, 10
    rows: list[list[np.ndarray]] = [[]]
    x = pad
    for g in groups:
        gw = sum(i.shape[1] for i in g) + gap * (len(g) - 1)
        if rows[-1] and x + gw > width - pad:
            rows.append([])
            x = pad
        if rows[-1]:
            rows[-1].append(np.full((row_h, 3 * gap, 3), 255, np.uint8))
            x += 3 * gap
        for k, item in enumerate(g):
            rows[-1].append(item)
            if k < len(g) - 1:
                rows[-1].append(np.full((row_h, gap, 3), 255, np.uint8))
        x += gw
    heights = [max(i.shape[0] for i in items) if items else row_h for items in rows]
    strip = np.full((sum(heights) + 6, width, 3), 255, np.uint8)
    y = 3
    for items, rh in zip(rows, heights):
        x = pad
        for item in items:
            w = min(item.shape[1], width - x)
            if w <= 0:
                break
            strip[y:y + item.shape[0], x:x + w] = item[:, :w]
            x += item.shape[1]
        y += rh
    return strip


def draw_point_matches(image0: np.ndarray, image1: np.ndarray, pts0: np.ndarray, pts1: np.ndarray,
                       confidence: Optional[np.ndarray] = None, color_by: str = "confidence",
                       inliers: Optional[np.ndarray] = None, ransac_px: float = 2.0,
                       keypoints0: Optional[np.ndarray] = None, keypoints1: Optional[np.ndarray] = None,
                       out_path: Optional[PathLike] = None, text_lines: Optional[Sequence[str]] = None,
                       margin: int = 10, gray: bool = True, max_lines: int = 300, legend: bool = True) -> np.ndarray:
    """Side-by-side match plot with a legend strip underneath.

    image0, image1: (H, W, 3) uint8 BGR or (H, W) uint8 grey (heights may differ).
    pts0, pts1: (M, 2) matched points, pixels of image 0 / image 1. confidence: (M,) or None.
    color_by: "confidence" (jet colour of each confidence's rank among the matches: blue = least,
    red = most confident, so the colours stay apart when a matcher puts most confidences near 1;
    the colour bar is labelled with the confidences at 0/25/50/75/100 % of the ranks) or
    "inlier" (green inliers, red outliers
    of a fundamental-matrix RANSAC at ``ransac_px``, or of the given ``inliers`` (M,) bool).
    The check runs in both modes and its counts go into the legend. keypoints0/1: (N, 2)
    pixels drawn as small dots (detector-based matchers). With more than ``max_lines``
    matches only an evenly spread subset (by confidence) gets lines, all get end points; the
    legend says how many lines are shown. Beyond 200 lines they are blended at 60 % opacity so
    the image stays visible. text_lines: top-left text. Returns the (max(H0, H1) + legend height,
    W0 + margin + W1, 3) uint8 BGR image (no strip with legend=False); writes it when out_path.
    """
    if color_by not in ("confidence", "inlier"):
        raise ValueError(f"color_by must be 'confidence' or 'inlier', got {color_by!r}")
    img0, img1 = _to_bgr(image0, gray), _to_bgr(image1, gray)
    h0, w0 = img0.shape[:2]
    h1, w1 = img1.shape[:2]
    canvas = np.full((max(h0, h1), w0 + margin + w1, 3), 255, np.uint8)
    canvas[:h0, :w0] = img0
    canvas[:h1, w0 + margin:] = img1
    p0 = np.asarray(pts0, np.float64).reshape(-1, 2)
    p1 = np.asarray(pts1, np.float64).reshape(-1, 2)
    if len(p0) != len(p1):
        raise ValueError(f"pts0 and pts1 must have the same length, got {len(p0)} and {len(p1)}")
    n = len(p0)
    conf = np.ones(n, np.float32) if confidence is None else np.asarray(confidence, np.float32).reshape(-1)
    if len(conf) != n:
        raise ValueError(f"confidence must have {n} values, got {len(conf)}")
    if inliers is None:
        inliers = fundamental_inliers(p0, p1, ransac_px)
    elif len(inliers) != n:
        raise ValueError(f"inliers must have {n} values, got {len(inliers)}")
    if color_by == "inlier" and inliers is None:
        color_by = "confidence"  # fewer than 8 matches: nothing to check
    offset = np.array([w0 + margin, 0.0])
    for kp, off in ((keypoints0, 0.0), (keypoints1, offset)):
        if kp is not None:
            for x, y in np.round(np.asarray(kp, np.float64).reshape(-1, 2) + off).astype(int):
                cv2.circle(canvas, (int(x), int(y)), 2, (0, 0, 0), -1, cv2.LINE_AA)
                cv2.circle(canvas, (int(x), int(y)), 1, (255, 255, 255), -1, cv2.LINE_AA)
    quantiles = np.quantile(conf, [0.0, 0.25, 0.5, 0.75, 1.0]) if n else np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    if color_by == "confidence":
        colors = confidence_colors(confidence_ranks(conf))
        order = np.argsort(conf, kind="stable")  # confident matches drawn last, on top
    else:
        colors = np.where(np.asarray(inliers, bool)[:, None], np.array(INLIER_BGR), np.array(OUTLIER_BGR)).astype(np.uint8)
        order = np.argsort(np.asarray(inliers, bool) == 0, kind="stable")  # outliers last, on top
    a = np.round(p0).astype(int)
    b = np.round(p1 + offset).astype(int)
    with_line = np.zeros(n, bool)
    if n:
        pick = order if n <= max_lines else order[np.round(np.linspace(0, n - 1, max_lines)).astype(int)]
        with_line[pick] = True
        lines = canvas.copy()
        for i in order:
            if with_line[i]:
                cv2.line(lines, (int(a[i, 0]), int(a[i, 1])), (int(b[i, 0]), int(b[i, 1])),
                         tuple(int(c) for c in colors[i]), 1, cv2.LINE_AA)
        alpha = 1.0 if with_line.sum() <= 200 else 0.6  # dense plots: see the image through the lines
        canvas = cv2.addWeighted(lines, alpha, canvas, 1.0 - alpha, 0.0)
        for i in order:
            col = tuple(int(c) for c in colors[i])
            cv2.circle(canvas, (int(a[i, 0]), int(a[i, 1])), 2, col, -1, cv2.LINE_AA)
            cv2.circle(canvas, (int(b[i, 0]), int(b[i, 1])), 2, col, -1, cv2.LINE_AA)
    lines_txt = list(text_lines) if text_lines is not None else [f"Matches: {n}"]
    _put_text(canvas, lines_txt)
    if legend:
        counts = [f"matches {n}"]
        if inliers is not None:
            k = int(np.sum(inliers))
            counts += [f"inliers {k} ({100.0 * k / max(n, 1):.0f}%, F-RANSAC {ransac_px:g} px)", f"outliers {n - k}"]
        if n > max_lines:
            counts.append(f"lines: {max_lines} of {n}")
        strip = _legend(canvas.shape[1], canvas.shape[0] / 640.0, color_by, quantiles, counts)
        canvas = np.concatenate([canvas, strip], axis=0)
    _write(canvas, out_path)
    return canvas


def draw_matches(image0: np.ndarray, image1: np.ndarray, feats0: Features, feats1: Features,
                 matches: Union[Matches, np.ndarray], out_path: Optional[PathLike] = None,
                 text_lines: Optional[Sequence[str]] = None, margin: int = 10,
                 show_keypoints: bool = True, gray: bool = True, color_by: str = "confidence",
                 ransac_px: float = 2.0, legend: bool = True) -> np.ndarray:
    """Match plot of a detector-based matcher (see :func:`draw_point_matches`).

    feats0, feats1: the images' Features. matches: Matches (from image 0 to image 1;
    confidences from scores0) or an (M, 2) index array (confidence 1) or (M, 3) with a
    confidence column. The keypoints are drawn as small dots when show_keypoints.
    Default text: "Keypoints: N0:N1" and "Matches: M".
    """
    kp0, kp1 = _keypoints_np(feats0), _keypoints_np(feats1)
    pairs, conf = _match_pairs(matches, len(kp0), len(kp1))
    lines = list(text_lines) if text_lines is not None else [
        f"Keypoints: {len(kp0)}:{len(kp1)}", f"Matches: {len(pairs)}"]
    return draw_point_matches(image0, image1, kp0[pairs[:, 0]], kp1[pairs[:, 1]], conf, color_by=color_by,
                              ransac_px=ransac_px, keypoints0=kp0 if show_keypoints else None,
                              keypoints1=kp1 if show_keypoints else None, out_path=out_path, text_lines=lines,
                              margin=margin, gray=gray, legend=legend)
