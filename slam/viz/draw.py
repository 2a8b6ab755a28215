"""Drawing keypoints and matches for a person to look at (OpenCV only).

The match plot follows the style of Magic Leap's SuperGlue demo: both images side by side on
a white background, one line per match coloured by its confidence with a jet-like colormap
(blue = low, red = high), the keypoints as small dots, and a few lines of text at the top left.
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
                   text_lines: Optional[Sequence[str]] = None, radius: int = 2) -> np.ndarray:
    """Keypoints on the image, coloured by score (jet colormap of the score scaled to the
    image's min..max: blue = weakest, red = strongest).

    image: (H, W, 3) uint8 BGR or (H, W) uint8 grey; feats: Features of that image (pixels,
    any device). text_lines: shown at the top left (default: "<N> keypoints").
    Returns the (H, W, 3) uint8 BGR drawing; writes it to out_path when given.
    """
    canvas = _to_bgr(image)
    kp = _keypoints_np(feats)
    if len(kp):
        scores = feats.scores.detach().float().cpu().numpy()
        lo, hi = float(scores.min()), float(scores.max())
        colors = confidence_colors((scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores))
        for (x, y), col in zip(np.round(kp).astype(int), colors):
            cv2.circle(canvas, (int(x), int(y)), radius + 1, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(canvas, (int(x), int(y)), radius, tuple(int(c) for c in col), -1, cv2.LINE_AA)
    lines = list(text_lines) if text_lines is not None else [f"{len(kp)} keypoints"]
    _put_text(canvas, lines)
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


def draw_matches(image0: np.ndarray, image1: np.ndarray, feats0: Features, feats1: Features,
                 matches: Union[Matches, np.ndarray], out_path: Optional[PathLike] = None,
                 text_lines: Optional[Sequence[str]] = None, margin: int = 10,
                 show_keypoints: bool = True, gray: bool = True) -> np.ndarray:
    """Side-by-side match plot in the style of the SuperGlue demo.

    image0, image1: (H, W, 3) uint8 BGR or (H, W) uint8 grey (heights may differ).
    feats0, feats1: their Features. matches: Matches (from image 0 to image 1; confidences
    from scores0) or an (M, 2) index array (confidence 1) or (M, 3) with a confidence column.
    Lines are coloured by confidence with the jet colormap; keypoints are small dots; text at
    the top left (default "Keypoints: N0:N1" and "Matches: M"). gray=True draws the images in
    grey so the colours stand out, as the demo does.
    Returns the (max(H0,H1), W0 + margin + W1, 3) uint8 BGR image; writes it when out_path.
    """
    img0, img1 = _to_bgr(image0, gray), _to_bgr(image1, gray)
    h0, w0 = img0.shape[:2]
    h1, w1 = img1.shape[:2]
    canvas = np.full((max(h0, h1), w0 + margin + w1, 3), 255, np.uint8)
    canvas[:h0, :w0] = img0
    canvas[:h1, w0 + margin:] = img1
    kp0, kp1 = _keypoints_np(feats0), _keypoints_np(feats1)
    pairs, conf = _match_pairs(matches, len(kp0), len(kp1))
    offset = np.array([w0 + margin, 0.0])
    if show_keypoints:
        for pts in (np.round(kp0).astype(int), np.round(kp1 + offset).astype(int)):
            for x, y in pts:
                cv2.circle(canvas, (int(x), int(y)), 2, (0, 0, 0), -1, cv2.LINE_AA)
                cv2.circle(canvas, (int(x), int(y)), 1, (255, 255, 255), -1, cv2.LINE_AA)
    if len(pairs):
        p0 = np.round(kp0[pairs[:, 0]]).astype(int)
        p1 = np.round(kp1[pairs[:, 1]] + offset).astype(int)
        colors = confidence_colors(conf)
        order = np.argsort(conf, kind="stable")  # confident matches drawn last, on top
        for i in order:
            col = tuple(int(c) for c in colors[i])
            a, b = (int(p0[i, 0]), int(p0[i, 1])), (int(p1[i, 0]), int(p1[i, 1]))
            cv2.line(canvas, a, b, col, 1, cv2.LINE_AA)
            cv2.circle(canvas, a, 2, col, -1, cv2.LINE_AA)
            cv2.circle(canvas, b, 2, col, -1, cv2.LINE_AA)
    lines = list(text_lines) if text_lines is not None else [
        f"Keypoints: {len(kp0)}:{len(kp1)}", f"Matches: {len(pairs)}"]
    _put_text(canvas, lines)
    _write(canvas, out_path)
    return canvas
