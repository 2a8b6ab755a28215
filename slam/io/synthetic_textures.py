"""Procedural textures for the synthetic RGB-D renderer (:mod:`slam.io.synthetic`).

Every generator takes a ``numpy.random.Generator`` and a size in texels and returns a
``(h, w, 3) uint8`` BGR image, deterministic for a given generator state. The textures are
designed for feature-based SLAM: they carry structure at many scales (fractal noise,
shapes, patterns, text-like marks) with enough contrast for FAST/ORB corners and for learned
detectors, while staying plausible for an office: painted walls with posters, wooden floors,
ceiling tiles, a wooden desk with papers, cardboard boxes, books, a monitor, a keyboard.

Sizes are in texels; the caller chooses the texel size in metres (see ``synthetic.py``), and
generators that draw real-world sized things (text lines, tiles, planks) take ``texel`` (metres
per texel) so that physical sizes stay right at any resolution.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_LETTER_ARR = np.frombuffer(_LETTERS.encode("ascii"), dtype=np.uint8)


# ----------------------------------------------------------------------------- primitives
def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def fractal_noise(rng: np.random.Generator, h: int, w: int, cell: float = 64.0, octaves: int = 5,
                  persistence: float = 0.55) -> np.ndarray:
    """(h, w) float32 fractal value noise in [0, 1].

    cell: size in texels of the coarsest octave's lattice cell; each further octave halves it.
    persistence: amplitude ratio between successive octaves. Built coarse-to-fine (each octave
    is added at its own lattice resolution and the sum is upsampled by 2), so the cost is about
    one full-resolution resize whatever the number of octaves.
    """
    cell = max(1.0, float(cell))
    octaves = max(1, min(octaves, int(math.floor(math.log2(cell))) + 1))
    fine = cell / 2 ** (octaves - 1)  # lattice cell of the finest octave, >= 1 texel
    gh0 = max(2, int(math.ceil(h / cell)) + 2)
    gw0 = max(2, int(math.ceil(w / cell)) + 2)
    acc = rng.random((gh0, gw0), dtype=np.float32)
    amp, total = 1.0, 1.0
    for _ in range(octaves - 1):
        acc = cv2.resize(acc, (acc.shape[1] * 2, acc.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
        amp *= persistence
        acc += amp * rng.random(acc.shape, dtype=np.float32)
        total += amp
    up = cv2.resize(acc, (int(round(acc.shape[1] * fine)), int(round(acc.shape[0] * fine))),
                    interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, up.shape[0] - h + 1)))
    ox = int(rng.integers(0, max(1, up.shape[1] - w + 1)))
    out = up[oy:oy + h, ox:ox + w]
    if out.shape != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = np.percentile(out[:: max(1, h // 64), :: max(1, w // 64)], (1, 99))
    out = (out - lo) * np.float32(1.0 / max(hi - lo, 1e-6))
    return np.clip(out, 0.0, 1.0, out=out)


def colorize(t: np.ndarray, c0: Sequence[float], c1: Sequence[float]) -> np.ndarray:
    """Blend two BGR colours by a (h, w) weight in [0, 1]; returns uint8 (h, w, 3) (via a LUT)."""
    idx = cv2.convertScaleAbs(np.asarray(t, np.float32), alpha=255.0)
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]
    c0 = np.asarray(c0, np.float32)[None, :]
    c1 = np.asarray(c1, np.float32)[None, :]
    lut = np.clip(c0 + ramp * (c1 - c0) + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(cv2.merge([idx, idx, idx]), lut)


def scale(img: np.ndarray, alpha: float, beta: float = 0.0) -> np.ndarray:
    """uint8 ``alpha * img + beta`` with saturation (fast, stays uint8)."""
    return cv2.convertScaleAbs(img, alpha=float(alpha), beta=float(beta))


def modulate(img: np.ndarray, field_: np.ndarray) -> np.ndarray:
    """uint8 image times a (h, w) float32 brightness field (around 1), saturated."""
    f = np.asarray(field_, np.float32)
    return cv2.convertScaleAbs(cv2.multiply(img.astype(np.float32), cv2.merge([f, f, f])))


def random_color(rng: np.random.Generator, sat: tuple = (0.3, 0.9), val: tuple = (0.3, 0.95)) -> tuple:
    """A random BGR colour (0..255 floats) from HSV ranges."""
    hsv = np.uint8([[[rng.integers(0, 180), int(255 * rng.uniform(*sat)), int(255 * rng.uniform(*val))]]])
    return tuple(float(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def contrasting(rng: np.random.Generator, bg: Sequence[float]) -> tuple:
    """A colour with strong luminance contrast to ``bg``."""
    lum = 0.114 * bg[0] + 0.587 * bg[1] + 0.299 * bg[2]
    if lum > 128:
        return random_color(rng, sat=(0.2, 1.0), val=(0.05, 0.35))
    return random_color(rng, sat=(0.0, 0.5), val=(0.85, 1.0))


def random_word(rng: np.random.Generator, lo: int = 2, hi: int = 9) -> str:
    return random_words(rng, 1, lo, hi)[0]


def random_words(rng: np.random.Generator, n: int, lo: int = 2, hi: int = 9) -> list:
    """n random words of lo..hi letters/digits (vectorised)."""
    lens = rng.integers(lo, hi + 1, n)
    chars = _LETTER_ARR[rng.integers(0, len(_LETTERS), int(lens.sum()))].tobytes().decode("ascii")
    ends = np.cumsum(lens)
    return [chars[e - k:e] for e, k in zip(ends.tolist(), lens.tolist())]


def put_text(img: np.ndarray, text: str, org: tuple, height_px: float, color, font: int,
             thickness: int | None = None) -> int:
    """Draw ``text`` with its baseline-left at ``org`` and cap height ~``height_px``; returns its width."""
    (tw, th), _ = cv2.getTextSize("Hg", font, 1.0, 1)
    scale = max(0.2, height_px / max(th, 1))
    th_ = thickness if thickness is not None else max(1, int(round(scale * 1.2)))
    cv2.putText(img, text, (int(org[0]), int(org[1])), font, scale, color, th_, cv2.LINE_AA)
    (w, _), _ = cv2.getTextSize(text, font, scale, th_)
    return w


def text_block(img: np.ndarray, rng: np.random.Generator, x0: int, y0: int, x1: int, y1: int,
               color, line_px: float, font: int | None = None) -> None:
    """Fill the box [x0,x1)x[y0,y1) with lines of random words ("text-like marks")."""
    if font is None:
        font = _FONTS[int(rng.integers(0, len(_FONTS)))]
    line_px = max(3.0, line_px)
    (_, th), _ = cv2.getTextSize("Hg", font, 1.0, 1)
    sc = max(0.2, line_px / max(th, 1))
    thick = max(1, int(round(sc * 1.2)))
    n_est = int((y1 - y0) / (1.7 * line_px) * (x1 - x0) / (2.5 * line_px)) + 4
    words = iter(random_words(rng, n_est, 1, 8))
    y = y0 + line_px
    while y < y1:
        x = x0
        for word in words:
            (tw, _), _ = cv2.getTextSize(word, font, sc, thick)
            if x + tw > x1:
                break
            cv2.putText(img, word, (int(x), int(y)), font, sc, color, thick, cv2.LINE_AA)
            x += tw + line_px * rng.uniform(0.4, 0.8)
        else:
            return
        if rng.random() < 0.15:
            y += line_px * 1.6  # paragraph break
        y += line_px * 1.7


def random_shapes(img: np.ndarray, rng: np.random.Generator, n: int, size: tuple, region=None,
                  palette: Sequence[tuple] | None = None) -> None:
    """Draw n random filled/outlined rectangles, circles, ellipses, polygons, lines, stars."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = region if region is not None else (0, 0, w, h)
    for _ in range(n):
        col = palette[int(rng.integers(0, len(palette)))] if palette else random_color(rng)
        s = rng.uniform(*size)
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        kind = int(rng.integers(0, 6))
        filled = rng.random() < 0.6
        th = -1 if filled else max(1, int(s * rng.uniform(0.04, 0.15)))
        if kind == 0:
            cv2.rectangle(img, (int(cx - s / 2), int(cy - s * rng.uniform(0.2, 0.6))),
                          (int(cx + s / 2), int(cy + s * rng.uniform(0.2, 0.6))), col, th, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(img, (int(cx), int(cy)), max(1, int(s / 2)), col, th, cv2.LINE_AA)
        elif kind == 2:
            cv2.ellipse(img, (int(cx), int(cy)), (max(1, int(s / 2)), max(1, int(s * rng.uniform(0.15, 0.5)))),
                        float(rng.uniform(0, 180)), 0, 360, col, th, cv2.LINE_AA)
        elif kind == 3:
            k = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = s / 2 * rng.uniform(0.5, 1.0, k)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            if filled:
                cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
            else:
                cv2.polylines(img, [pts], True, col, th, cv2.LINE_AA)
        elif kind == 4:
            a = rng.uniform(0, np.pi)
            dx, dy = s / 2 * math.cos(a), s / 2 * math.sin(a)
            cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), col,
                     max(1, int(s * rng.uniform(0.03, 0.12))), cv2.LINE_AA)
        else:  # star
            k = int(rng.integers(4, 7))
            ang = np.arange(2 * k) * np.pi / k + rng.uniform(0, np.pi)
            rad = np.where(np.arange(2 * k) % 2 == 0, s / 2, s / 5)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], col, cv2.LINE_AA)


def paste(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """Copy ``src`` into ``dst`` with its top-left at (x, y), clipped to ``dst``."""
    h, w = dst.shape[:2]
    sh, sw = src.shape[:2]
    xa, ya, xb, yb = max(0, x), max(0, y), min(w, x + sw), min(h, y + sh)
    if xb <= xa or yb <= ya:
        return
    dst[ya:yb, xa:xb] = src[ya - y:yb - y, xa - x:xb - x]


def paste_rotated(dst: np.ndarray, src: np.ndarray, cx: float, cy: float, angle_deg: float,
                  shadow: float = 0.0) -> None:
    """Paste ``src`` centred at (cx, cy) rotated by ``angle_deg``, optionally with a soft shadow.
    Works only inside the bounding box of the rotated rectangle."""
    sh, sw = src.shape[:2]
    h, w = dst.shape[:2]
    corners = cv2.boxPoints(((cx, cy), (sw, sh), -angle_deg))
    k = max(3, int(min(sh, sw) * 0.06) | 1) if shadow > 0 else 1
    x0 = max(0, int(np.floor(corners[:, 0].min())) - k)
    y0 = max(0, int(np.floor(corners[:, 1].min())) - k)
    x1 = min(w, int(np.ceil(corners[:, 0].max())) + k + 1)
    y1 = min(h, int(np.ceil(corners[:, 1].max())) + k + 1)
    if x1 <= x0 or y1 <= y0:
        return
    M = cv2.getRotationMatrix2D((sw / 2.0, sh / 2.0), angle_deg, 1.0)
    M[0, 2] += cx - sw / 2.0 - x0
    M[1, 2] += cy - sh / 2.0 - y0
    bw, bh = x1 - x0, y1 - y0
    region = dst[y0:y1, x0:x1]
    mask = cv2.warpAffine(np.full((sh, sw), 255, np.uint8), M, (bw, bh), flags=cv2.INTER_LINEAR)
    reg = region.astype(np.float32)
    if shadow > 0:
        sm = cv2.GaussianBlur(mask, (k, k), 0).astype(np.float32) * np.float32(shadow / 255.0)
        reg *= (1.0 - sm)[..., None]
    warped = cv2.warpAffine(src, M, (bw, bh), flags=cv2.INTER_LINEAR).astype(np.float32)
    a = mask.astype(np.float32)[..., None] * np.float32(1.0 / 255.0)
    region[:] = _u8(reg * (1.0 - a) + warped * a)


def confetti(img: np.ndarray, rng: np.random.Generator, texel: float, density: float, size_m: tuple,
             palette: Sequence[tuple], region=None) -> None:
    """Scatter small random shapes (dots, dashes, triangles, crosses, rings) over ``img`` in place:
    ``density`` per square metre, sizes ``size_m`` (metres), colours from ``palette``. Random
    (not periodic), so it gives corners everywhere without creating repeated descriptors."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = region if region is not None else (0, 0, w, h)
    area = (x1 - x0) * (y1 - y0) * texel * texel
    n = int(rng.poisson(density * area))
    if n == 0:
        return
    xs, ys = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    sizes = rng.uniform(size_m[0], size_m[1], n) / texel
    kinds = rng.integers(0, 5, n)
    angles = rng.uniform(0, np.pi, n)
    cols = rng.integers(0, len(palette), n)
    for x, y, sz, kd, a, ci in zip(xs, ys, sizes, kinds, angles, cols):
        col = palette[int(ci)]
        r = max(1.0, sz / 2)
        c, s_ = math.cos(a), math.sin(a)
        if kd == 0:
            cv2.circle(img, (int(x), int(y)), int(r), col, -1, cv2.LINE_AA)
        elif kd == 1:
            cv2.line(img, (int(x - r * c), int(y - r * s_)), (int(x + r * c), int(y + r * s_)), col,
                     max(1, int(r / 3)), cv2.LINE_AA)
        elif kd == 2:
            pts = np.array([[x + r * math.cos(a + k * 2.094), y + r * math.sin(a + k * 2.094)] for k in range(3)], np.int32)
            cv2.fillConvexPoly(img, pts, col, cv2.LINE_AA)
        elif kd == 3:
            t = max(1, int(r / 3))
            cv2.line(img, (int(x - r * c), int(y - r * s_)), (int(x + r * c), int(y + r * s_)), col, t, cv2.LINE_AA)
            cv2.line(img, (int(x + r * s_), int(y - r * c)), (int(x - r * s_), int(y + r * c)), col, t, cv2.LINE_AA)
        else:
            cv2.circle(img, (int(x), int(y)), int(r), col, max(1, int(r / 3)), cv2.LINE_AA)


def shades_of(base, rng: np.random.Generator, n: int = 4, lo: float = 0.55, hi: float = 0.8) -> list:
    """n darker / tinted variants of a BGR colour (for patterns on a painted surface)."""
    b = np.asarray(base, float)
    out = []
    for _ in range(n):
        f = rng.uniform(lo, hi)
        tint = rng.uniform(0.85, 1.15, 3)
        out.append(tuple(float(v) for v in np.clip(b * f * tint, 0, 255)))
    return out


# ----------------------------------------------------------------------------- materials
def plaster(rng: np.random.Generator, h: int, w: int, base) -> np.ndarray:
    """Painted wall: base colour with multi-scale plaster noise and an optional wallpaper pattern."""
    f = fractal_noise(rng, h, w, cell=max(16.0, w / 6), octaves=8, persistence=0.6)
    f *= np.float32(0.8)
    f += np.float32(0.2) * fractal_noise(rng, h, w, cell=6.0, octaves=3, persistence=0.5)
    style = int(rng.integers(0, 3))
    if style == 0:  # vertical stripes
        period = int(rng.integers(40, 90))
        stripe = ((np.arange(w) // (period // 2)) % 2).astype(np.float32)
        f += np.float32(0.25) * stripe[None, :]
    elif style == 1:  # diamond / dot wallpaper
        period = int(rng.integers(50, 100))
        yy, xx = np.mgrid[0:2 * period, 0:period]
        d = np.abs(((xx + (yy // period % 2) * (period // 2)) % period) - period / 2) + np.abs((yy % period) - period / 2)
        tile = np.where(d < period * 0.22, np.float32(-0.3), np.float32(0.0)).astype(np.float32)
        f += np.tile(tile, (h // (2 * period) + 1, w // period + 1))[:h, :w]
    f = (f + np.float32(0.3)) * np.float32(1.0 / 1.55)
    base = np.asarray(base, np.float32)
    return colorize(f, base * 0.8, np.minimum(base * 1.12, 255))


def wallpaper(rng: np.random.Generator, h: int, w: int, base, texel: float) -> np.ndarray:
    """Plaster plus a non-repeating speckled pattern (small random marks, 1.5-4 cm)."""
    img = plaster(rng, h, w, base)
    confetti(img, rng, texel, rng.uniform(90, 140), (0.015, 0.04), shades_of(base, rng, 5))
    return img


def wood(rng: np.random.Generator, h: int, w: int, base=None, grain_px: float = 12.0,
         vertical: bool = False) -> np.ndarray:
    """Wood grain running along x (or y): stretched noise, rings and knots."""
    if base is None:
        base = wood_color(rng)
    H, W = (w, h) if vertical else (h, w)
    n = fractal_noise(rng, max(8, H), max(8, int(W / 8) + 8), cell=max(4.0, grain_px), octaves=5)
    n = cv2.resize(n, (int(n.shape[1] * 8), H), interpolation=cv2.INTER_LINEAR)[:, :W]
    rings = 0.5 + 0.5 * np.sin(n * rng.uniform(12, 30))
    t = (0.55 * n + 0.45 * rings).astype(np.float32)
    img = colorize(t, np.asarray(base) * 0.6, np.minimum(np.asarray(base) * 1.1, 255))
    for _ in range(int(rng.integers(1, 4)) * max(1, W // 600)):
        c = (int(rng.uniform(0, W)), int(rng.uniform(0, H)))
        ax = (max(2, int(rng.uniform(6, 18) * grain_px / 12)), max(2, int(rng.uniform(3, 8) * grain_px / 12)))
        cv2.ellipse(img, c, ax, 0, 0, 360, tuple(float(v) for v in np.asarray(base) * 0.45), -1, cv2.LINE_AA)
    return np.ascontiguousarray(img.transpose(1, 0, 2)) if vertical else img


_WOODS = ((95, 140, 190), (60, 95, 140), (45, 70, 110), (130, 175, 215), (70, 105, 165), (140, 150, 160),
          (100, 125, 150))


def wood_color(rng: np.random.Generator) -> tuple:
    """A plausible wood tone (BGR): oak, walnut, cherry, maple, grey-washed..."""
    b = np.asarray(_WOODS[int(rng.integers(0, len(_WOODS)))], float) * rng.uniform(0.85, 1.15, 3)
    return tuple(float(v) for v in np.clip(b, 0, 255))


def planks(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """Wooden floor of planks ~0.15 m wide with staggered joints; every board has its own tint."""
    img = wood(rng, h, w, grain_px=0.012 / texel * 4)
    pw = max(4, int(round(rng.uniform(0.12, 0.2) / texel)))
    pl = max(8, int(round(rng.uniform(0.8, 1.6) / texel)))
    lw = max(1, int(round(0.004 / texel)))
    for y in range(0, h, pw):
        off = int(rng.uniform(0, pl))
        xs = [0] + list(range(pl - off, w, pl)) + [w]
        for xa, xb in zip(xs[:-1], xs[1:]):
            img[y:y + pw, xa:xb] = scale(img[y:y + pw, xa:xb], rng.uniform(0.72, 1.2))
            cv2.line(img, (xa, y), (xa, y + pw), (20, 25, 35), lw, cv2.LINE_AA)
        cv2.line(img, (0, y), (w, y), (15, 20, 30), lw, cv2.LINE_AA)
    return img


def tiles(rng: np.random.Generator, h: int, w: int, texel: float, tile_m: float = 0.6,
          base=None) -> np.ndarray:
    """Square tiles with grout lines, speckle and per-tile tint (floor or ceiling)."""
    if base is None:
        base = random_color(rng, sat=(0.0, 0.25), val=(0.6, 0.9))
    f = fractal_noise(rng, h, w, cell=8.0, octaves=3)
    f[rng.random((h, w), dtype=np.float32) < 0.01] *= 0.3  # speckle
    tp = max(8, int(round(tile_m / texel)))
    for y in range(0, h, tp):
        for x in range(0, w, tp):
            f[y:y + tp, x:x + tp] += rng.uniform(-0.25, 0.25)
    g = max(1, int(round(0.004 / texel)))
    for y in range(0, h, tp):
        f[y:y + g] = -1.2
    for x in range(0, w, tp):
        f[:, x:x + g] = -1.2
    f = (f + 1.4) / 2.8
    base = np.asarray(base, np.float32)
    return colorize(f, base * 0.35, np.minimum(base * 1.15, 255))


def carpet(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A rug: patterned border, motifs, and coarse fibre noise."""
    bg = random_color(rng, sat=(0.4, 0.8), val=(0.3, 0.6))
    fg = random_color(rng, sat=(0.3, 0.9), val=(0.6, 0.95))
    n = fractal_noise(rng, h, w, cell=4.0, octaves=2)
    img = colorize(n, np.asarray(bg) * 0.8, np.minimum(np.asarray(bg) * 1.15, 255))
    b = max(4, min(h, w) // 10)
    cv2.rectangle(img, (b // 2, b // 2), (w - b // 2, h - b // 2), fg, max(2, b // 3))
    step = max(8, b)
    for x in range(b, w - b, step):
        cv2.circle(img, (x, b // 2), max(2, b // 5), fg, -1, cv2.LINE_AA)
        cv2.circle(img, (x, h - b // 2), max(2, b // 5), fg, -1, cv2.LINE_AA)
    pal = [fg, random_color(rng), random_color(rng, val=(0.1, 0.3))]
    random_shapes(img, rng, max(6, (h * w) // (step * step * 2)), (step * 0.5, step * 2.0), (b, b, w - b, h - b), pal)
    light, dark = random_color(rng, sat=(0.0, 0.4), val=(0.85, 1.0)), random_color(rng, sat=(0.0, 0.6), val=(0.02, 0.15))
    confetti(img, rng, 1.0, 0.012, (3.0, 9.0), [light, dark, fg])  # texel units; light and dark marks
    return img


def metal(rng: np.random.Generator, h: int, w: int, base=None) -> np.ndarray:
    """Brushed metal / plastic: streaky noise."""
    if base is None:
        v = rng.uniform(40, 200)
        base = (v, v, v * rng.uniform(0.95, 1.05))
    n = fractal_noise(rng, max(8, h), max(8, w // 6 + 8), cell=4.0, octaves=3)
    n = cv2.resize(n, (n.shape[1] * 6, max(8, h)))[:h, :w]
    return colorize(n, np.asarray(base) * 0.85, np.minimum(np.asarray(base) * 1.15, 255))


def cardboard(rng: np.random.Generator, h: int, w: int, texel: float, printed: bool = True) -> np.ndarray:
    """Cardboard with tape, printed labels, arrows, barcodes and text."""
    base = (rng.uniform(70, 110), rng.uniform(130, 165), rng.uniform(170, 205))
    n = fractal_noise(rng, h, w, cell=max(6.0, min(h, w) / 5), octaves=6)
    img = colorize(n, np.asarray(base) * 0.8, np.minimum(np.asarray(base) * 1.12, 255))
    if not printed:
        return img
    if rng.random() < 0.7:  # tape
        tw = max(2, int(0.05 / texel))
        y = int(rng.uniform(0, max(1, h - tw)))
        img[y:y + tw] = scale(img[y:y + tw], 0.75, 60)
    k = int(rng.integers(1, 4))
    for _ in range(k):
        lw, lh = int(w * rng.uniform(0.3, 0.6)), int(h * rng.uniform(0.2, 0.45))
        if lw < 8 or lh < 8:
            continue
        x, y = int(rng.uniform(0, w - lw)), int(rng.uniform(0, h - lh))
        kind = rng.random()
        if kind < 0.4:
            lab = label(rng, lh, lw, texel)
            paste(img, lab, x, y)
        elif kind < 0.7:
            col = random_color(rng, sat=(0.1, 0.9), val=(0.05, 0.4))
            text_block(img, rng, x, y, x + lw, y + lh, col, rng.uniform(0.01, 0.03) / texel)
        else:
            random_shapes(img, rng, int(rng.integers(2, 6)), (min(lw, lh) * 0.3, min(lw, lh) * 0.9),
                          (x, y, x + lw, y + lh), [random_color(rng, val=(0.05, 0.4))])
    return img


def barcode(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 250, np.uint8)
    x = max(1, w // 20)
    while x < w - w // 20:
        bw = int(rng.integers(1, 4)) * max(1, w // 120)
        if rng.random() < 0.55:
            img[h // 10: h - h // 5, x:x + bw] = 15
        x += bw
    return img


def label(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """White label with a title, small text and a barcode."""
    img = np.full((h, w, 3), int(rng.uniform(225, 250)), np.uint8)
    dark = random_color(rng, sat=(0.0, 0.8), val=(0.0, 0.3))
    put_text(img, random_word(rng, 3, 7).upper(), (w // 20, int(h * 0.3)), h * 0.18, dark,
             _FONTS[int(rng.integers(0, 4))])
    text_block(img, rng, w // 20, int(h * 0.35), w - w // 20, int(h * 0.65), dark, max(3.0, h * 0.07))
    if h > 20 and w > 30:
        paste(img, barcode(rng, int(h * 0.28), int(w * 0.6)), w // 20, int(h * 0.68))
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), dark, max(1, h // 60))
    return img


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A "photograph": sky/ground gradient, fractal hills, blobs and shapes."""
    sky = np.asarray(random_color(rng, sat=(0.2, 0.7), val=(0.6, 1.0)))
    ground = np.asarray(random_color(rng, sat=(0.3, 0.9), val=(0.2, 0.6)))
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    horizon = 0.45 + 0.2 * (fractal_noise(rng, 1, w, cell=max(4.0, w / 4), octaves=4)[0] - 0.5)
    t = 1.0 / (1.0 + np.exp(-(yy - horizon[None, :]) * 40.0))
    img = (sky * (1 - t[..., None]) + ground * t[..., None]).astype(np.float32)
    n = fractal_noise(rng, h, w, cell=max(4.0, min(h, w) / 4), octaves=6)
    img *= (0.7 + 0.6 * n)[..., None]
    img = _u8(img)
    random_shapes(img, rng, int(rng.integers(3, 10)), (min(h, w) * 0.05, min(h, w) * 0.35))
    return img


def poster(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """Poster: coloured background, a photo or big shapes, a title and paragraphs of text."""
    bg = random_color(rng, sat=(0.0, 0.9), val=(0.2, 1.0))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = np.asarray(bg, np.uint8)
    fg = contrasting(rng, bg)
    m = max(2, int(min(h, w) * 0.05))
    layout = rng.random()
    if layout < 0.45:
        ph = int(h * rng.uniform(0.35, 0.6))
        paste(img, photo(rng, ph, w - 2 * m), m, m)
        put_text(img, random_word(rng, 4, 9).upper(), (m, ph + m + int(h * 0.08)), h * 0.06, fg,
                 _FONTS[int(rng.integers(0, 4))])
        text_block(img, rng, m, ph + m + int(h * 0.11), w - m, h - m, fg, max(4.0, 0.012 / texel))
    elif layout < 0.8:
        random_shapes(img, rng, int(rng.integers(6, 18)), (min(h, w) * 0.08, min(h, w) * 0.5),
                      (m, m, w - m, int(h * 0.7)))
        put_text(img, random_word(rng, 3, 8), (m, int(h * 0.8)), h * 0.07, fg, _FONTS[int(rng.integers(0, 4))])
        text_block(img, rng, m, int(h * 0.83), w - m, h - m, fg, max(4.0, 0.01 / texel))
    else:  # chart / diagram
        cv2.rectangle(img, (m, m), (w - m, h - m), fg, max(1, m // 4))
        n = int(rng.integers(4, 10))
        bw = (w - 4 * m) / n
        for i in range(n):
            bh = rng.uniform(0.1, 0.6) * h
            cv2.rectangle(img, (int(2 * m + i * bw), int(h * 0.75 - bh)), (int(2 * m + (i + 0.7) * bw), int(h * 0.75)),
                          random_color(rng), -1)
        text_block(img, rng, 2 * m, int(h * 0.8), w - 2 * m, h - 2 * m, fg, max(4.0, 0.012 / texel))
        put_text(img, random_word(rng, 4, 8).upper(), (2 * m, 2 * m + int(h * 0.06)), h * 0.05, fg, _FONTS[1])
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), (30, 30, 30), max(1, int(0.008 / texel)))
    return img


def paper(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """A printed sheet: white paper with a heading, text lines and sometimes a figure or table."""
    v = rng.uniform(225, 252)
    img = colorize(fractal_noise(rng, h, w, 8.0, 2), (v * 0.96,) * 3, (v,) * 3)
    ink = random_color(rng, sat=(0.0, 0.3), val=(0.0, 0.25))
    m = max(2, int(0.02 / texel))
    line = max(3.0, rng.uniform(0.004, 0.008) / texel)
    put_text(img, random_word(rng, 4, 10).upper(), (m, m + int(line * 2)), line * 1.8, ink, _FONTS[int(rng.integers(0, 4))])
    y = m + int(line * 3.5)
    if rng.random() < 0.5:
        fh = int(h * rng.uniform(0.2, 0.35))
        if rng.random() < 0.5:
            paste(img, photo(rng, fh, w - 2 * m), m, y)
        else:  # table
            rows, cols = int(rng.integers(3, 7)), int(rng.integers(2, 5))
            for r in range(rows + 1):
                yy = y + r * fh // rows
                cv2.line(img, (m, yy), (w - m, yy), ink, 1, cv2.LINE_AA)
            for c in range(cols + 1):
                xx = m + c * (w - 2 * m) // cols
                cv2.line(img, (xx, y), (xx, y + fh), ink, 1, cv2.LINE_AA)
        y += fh + int(line)
    text_block(img, rng, m, y, w - m, h - m, ink, line)
    return img


def sticky_note(rng: np.random.Generator, s: int) -> np.ndarray:
    col = [(120, 240, 250), (180, 250, 180), (230, 190, 250), (160, 210, 255), (250, 220, 170)][int(rng.integers(0, 5))]
    img = np.empty((s, s, 3), np.uint8)
    img[:] = col
    ink = random_color(rng, sat=(0.5, 1.0), val=(0.1, 0.4))
    text_block(img, rng, s // 10, s // 10, s - s // 10, s - s // 10, ink, max(3.0, s * 0.12))
    return img


def keyboard(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Keyboard top: dark body and a grid of keys with letters."""
    body = rng.uniform(20, 60)
    img = np.full((h, w, 3), body, np.uint8)
    keycol = (body + rng.uniform(15, 60),) * 3
    rows = 6
    kh = h / (rows + 0.5)
    for r in range(rows):
        cols = 14 if r else 16
        kw = w * 0.97 / cols
        for c in range(cols):
            x0, y0 = int(w * 0.015 + c * kw + kw * 0.08), int(kh * 0.25 + r * kh + kh * 0.08)
            x1, y1 = int(w * 0.015 + (c + 1) * kw - kw * 0.08), int(kh * 0.25 + (r + 1) * kh - kh * 0.08)
            cv2.rectangle(img, (x0, y0), (x1, y1), keycol, -1)
            ch = _LETTERS[int(rng.integers(0, 36))].upper()
            put_text(img, ch, (x0 + (x1 - x0) // 4, y0 + (y1 - y0) * 2 // 3), (y1 - y0) * 0.45, (235, 235, 235),
                     cv2.FONT_HERSHEY_SIMPLEX, 1)
    return img


def screen(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A monitor showing windows with text, code and an image; dark bezel."""
    desk = np.asarray(random_color(rng, sat=(0.3, 0.8), val=(0.3, 0.7)))
    img = colorize(fractal_noise(rng, h, w, cell=max(4.0, w / 5), octaves=3), desk * 0.8, np.minimum(desk * 1.1, 255))
    for _ in range(int(rng.integers(2, 5))):
        ww, wh = int(w * rng.uniform(0.3, 0.6)), int(h * rng.uniform(0.3, 0.7))
        x, y = int(rng.uniform(0, w - ww)), int(rng.uniform(0, h - wh))
        bg = (250, 250, 250) if rng.random() < 0.6 else (40, 35, 30)
        win = np.empty((wh, ww, 3), np.uint8)
        win[:] = bg
        tb = max(2, wh // 12)
        win[:tb] = random_color(rng, val=(0.3, 0.7))
        if rng.random() < 0.3 and wh > 3 * tb:
            paste(win, photo(rng, wh - tb, ww), 0, tb)
        else:
            text_block(win, rng, ww // 30, tb, ww - ww // 30, wh - 2, contrasting(rng, bg), max(3.0, wh * 0.06))
        cv2.rectangle(win, (0, 0), (ww - 1, wh - 1), (80, 80, 80), 1)
        paste(img, win, x, y)
    b = max(2, int(min(h, w) * 0.04))
    out = np.full((h + 2 * b, w + 2 * b, 3), rng.uniform(15, 45), np.uint8)
    out[b:b + h, b:b + w] = img
    return out


def book_spines(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """Front of a bookshelf: shelves with rows of book spines."""
    img = wood(rng, h, w)
    n_shelves = max(1, int(round(h * texel / 0.35)))
    sh = h / n_shelves
    board = max(2, int(0.02 / texel))
    for s in range(n_shelves):
        y_bot = int((s + 1) * sh) - board
        y_top = int(s * sh) + board
        x = board
        while x < w - board:
            bw = max(2, int(rng.uniform(0.02, 0.06) / texel))
            bh = int((y_bot - y_top) * rng.uniform(0.6, 0.95))
            if x + bw > w - board:
                break
            col = random_color(rng, sat=(0.3, 0.9), val=(0.2, 0.9))
            cv2.rectangle(img, (x, y_bot - bh), (x + bw - 1, y_bot), col, -1)
            ink = contrasting(rng, col)
            for yy in (y_bot - bh + bh // 8, y_bot - bh // 8):
                cv2.line(img, (x, yy), (x + bw - 1, yy), ink, max(1, bw // 10))
            if bw > 6:
                mid = y_bot - bh // 2
                cv2.rectangle(img, (x + bw // 4, mid - bh // 5), (x + bw - bw // 4, mid + bh // 5), ink, -1)
            x += bw + int(rng.integers(0, 2))
        img[y_bot:y_bot + board] = scale(img[y_bot:y_bot + board], 0.6)
    return img


def book_cover(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bg = random_color(rng, sat=(0.3, 1.0), val=(0.2, 0.9))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = np.asarray(bg, np.uint8)
    fg = contrasting(rng, bg)
    put_text(img, random_word(rng, 3, 8).upper(), (w // 12, int(h * 0.22)), h * 0.08, fg, _FONTS[int(rng.integers(0, 4))])
    random_shapes(img, rng, int(rng.integers(2, 6)), (min(h, w) * 0.1, min(h, w) * 0.5), (w // 8, h // 3, w - w // 8, h - h // 5))
    put_text(img, random_word(rng, 4, 10), (w // 12, int(h * 0.92)), h * 0.04, fg, _FONTS[0])
    return img


def pages(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Side of a book: page edges (horizontal lines) between cover edges."""
    img = colorize(fractal_noise(rng, h, w, 3.0, 2), (212,) * 3, (232,) * 3)
    cover = random_color(rng, val=(0.2, 0.7))
    c = max(1, h // 12)
    img[:c] = cover
    img[-c:] = cover
    return img


def drawers(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """Cabinet front: panels, drawers with handles and a keyhole, plus a label."""
    img = wood(rng, h, w) if rng.random() < 0.5 else metal(rng, h, w)
    n = int(rng.integers(2, 5))
    dh = h / n
    g = max(1, int(0.006 / texel))
    for i in range(n):
        y0, y1 = int(i * dh) + g, int((i + 1) * dh) - g
        cv2.rectangle(img, (g, y0), (w - g, y1), (30, 30, 30), g, cv2.LINE_AA)
        hw, hh = int(0.12 / texel), max(2, int(0.02 / texel))
        cx, cy = w // 2, (y0 + y1) // 2
        cv2.rectangle(img, (cx - hw // 2, cy - hh // 2), (cx + hw // 2, cy + hh // 2), (200, 200, 205), -1, cv2.LINE_AA)
        cv2.rectangle(img, (cx - hw // 2, cy - hh // 2), (cx + hw // 2, cy + hh // 2), (40, 40, 40), 1, cv2.LINE_AA)
        if rng.random() < 0.5:
            lw, lh = int(0.1 / texel), int(0.04 / texel)
            if lw > 4 and lh > 4:
                paste(img, label(rng, lh, lw, texel), cx - lw // 2, y0 + 2 * g)
    return img


def whiteboard(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    img = np.full((h, w, 3), 245, np.uint8)
    frame = max(2, int(0.02 / texel))
    for _ in range(int(rng.integers(4, 10))):  # marker scribbles and diagrams
        col = [(200, 40, 30), (30, 30, 200), (30, 140, 30), (20, 20, 20)][int(rng.integers(0, 4))]
        k = int(rng.integers(3, 8))
        pts = np.stack([rng.uniform(frame, w - frame, k), rng.uniform(frame, h - frame, k)], 1).astype(np.int32)
        cv2.polylines(img, [pts], bool(rng.random() < 0.5), col, max(1, int(0.005 / texel)), cv2.LINE_AA)
        x, y = int(rng.uniform(frame, w * 0.6)), int(rng.uniform(frame, h * 0.8))
        text_block(img, rng, x, y, min(w - frame, x + int(w * 0.4)), min(h - frame, y + int(h * 0.2)), col,
                   max(4.0, 0.03 / texel), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), (170, 170, 175), frame)
    return img


def calendar(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 250, np.uint8)
    ph = int(h * 0.45)
    paste(img, photo(rng, ph, w), 0, 0)
    ink = (30, 30, 30)
    put_text(img, random_word(rng, 4, 8).upper(), (w // 20, ph + int(h * 0.08)), h * 0.05, (40, 40, 200), _FONTS[1])
    rows, cols = 5, 7
    gy0 = ph + int(h * 0.12)
    ch, cw = (h - gy0 - h // 30) / rows, (w - w // 10) / cols
    day = 1
    for r in range(rows):
        for c in range(cols):
            x, y = int(w // 20 + c * cw), int(gy0 + r * ch)
            cv2.rectangle(img, (x, y), (int(x + cw), int(y + ch)), (150, 150, 150), 1)
            if day <= 31:
                put_text(img, str(day), (x + 2, int(y + ch * 0.6)), ch * 0.4, ink if c < 5 else (30, 30, 200), _FONTS[0], 1)
            day += 1
    return img


def clock(rng: np.random.Generator, s: int) -> np.ndarray:
    img = np.full((s, s, 3), 0, np.uint8)
    img[:] = random_color(rng, val=(0.2, 0.9))
    c = s // 2
    cv2.circle(img, (c, c), int(s * 0.48), (245, 245, 245), -1, cv2.LINE_AA)
    cv2.circle(img, (c, c), int(s * 0.48), (30, 30, 30), max(1, s // 30), cv2.LINE_AA)
    for i in range(12):
        a = i * np.pi / 6
        r0, r1 = s * 0.36, s * 0.44
        cv2.line(img, (int(c + r0 * np.cos(a)), int(c + r0 * np.sin(a))), (int(c + r1 * np.cos(a)), int(c + r1 * np.sin(a))),
                 (20, 20, 20), max(1, s // 40), cv2.LINE_AA)
    for r, th in ((0.25, s // 25), (0.38, s // 50)):
        a = rng.uniform(0, 2 * np.pi)
        cv2.line(img, (c, c), (int(c + s * r * np.cos(a)), int(c + s * r * np.sin(a))), (10, 10, 10), max(1, th), cv2.LINE_AA)
    return img


def window(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """A window: frame and muntins around an outdoor view."""
    img = photo(rng, h, w)
    img = scale(img, 0.6, 100)  # bright, hazy outdoors
    fr = max(2, int(0.05 / texel))
    col = (235, 235, 235) if rng.random() < 0.6 else (40, 60, 90)
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), col, fr)
    nx, ny = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    for i in range(1, nx):
        x = i * w // nx
        cv2.line(img, (x, 0), (x, h), col, fr // 2)
    for j in range(1, ny):
        y = j * h // ny
        cv2.line(img, (0, y), (w, y), col, fr // 2)
    return img


def door(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    img = wood(rng, h, w, vertical=True)
    m = max(2, int(0.08 / texel))
    for y0, y1 in ((m, h // 2 - m // 2), (h // 2 + m // 2, h - m)):
        cv2.rectangle(img, (m, y0), (w - m, y1), (30, 40, 60), max(1, int(0.01 / texel)), cv2.LINE_AA)
    hx, hy = int(w * 0.85), int(h * 0.5)
    cv2.circle(img, (hx, hy), max(2, int(0.03 / texel)), (190, 200, 210), -1, cv2.LINE_AA)
    cv2.circle(img, (hx, hy), max(2, int(0.03 / texel)), (30, 30, 30), 1, cv2.LINE_AA)
    if rng.random() < 0.7:
        pw = int(0.21 / texel)
        ph = int(0.297 / texel)
        if pw > 4:
            paste(img, paper(rng, ph, pw, texel), (w - pw) // 2, int(h * 0.2))
    return img


def pinboard(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    cork = (rng.uniform(60, 90), rng.uniform(120, 150), rng.uniform(170, 200))
    n = fractal_noise(rng, h, w, cell=3.0, octaves=3)
    img = colorize(n, np.asarray(cork) * 0.7, np.minimum(np.asarray(cork) * 1.15, 255))
    for _ in range(int(rng.integers(4, 10))):
        if rng.random() < 0.5:
            s = int(0.076 / texel)
            note = sticky_note(rng, max(6, s))
        else:
            note = paper(rng, int(0.15 / texel), int(0.1 / texel), texel)
        paste_rotated(img, note, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-12, 12), shadow=0.3)
        cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), max(2, int(0.006 / texel)),
                   random_color(rng, sat=(0.8, 1.0), val=(0.6, 1.0)), -1, cv2.LINE_AA)
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), (60, 80, 110), max(2, int(0.015 / texel)))
    return img


def framed(img: np.ndarray, rng: np.random.Generator, texel: float) -> np.ndarray:
    """Add a picture frame border to an image (in place) and return it."""
    fr = max(2, int(rng.uniform(0.015, 0.04) / texel))
    col = random_color(rng, sat=(0.0, 0.6), val=(0.05, 0.9))
    cv2.rectangle(img, (fr // 2, fr // 2), (img.shape[1] - 1 - fr // 2, img.shape[0] - 1 - fr // 2), col, fr)
    return img


def mug(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Wrap-around texture for a cylinder (mug / can): colour bands, logo, text."""
    bg = random_color(rng, sat=(0.2, 1.0), val=(0.3, 0.95))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = np.asarray(bg, np.uint8)
    fg = contrasting(rng, bg)
    for _ in range(int(rng.integers(1, 4))):
        y = int(rng.uniform(0, h))
        cv2.rectangle(img, (0, y), (w, y + max(1, int(h * rng.uniform(0.03, 0.12)))), random_color(rng), -1)
    random_shapes(img, rng, int(rng.integers(2, 6)), (h * 0.15, h * 0.5), (0, h // 4, w, h * 3 // 4), [fg])
    put_text(img, random_word(rng, 3, 7).upper(), (int(w * rng.uniform(0.05, 0.4)), int(h * 0.45)), h * 0.14, fg,
             _FONTS[int(rng.integers(0, 4))])
    text_block(img, rng, int(w * 0.55), int(h * 0.55), int(w * 0.95), int(h * 0.9), fg, max(3.0, h * 0.05))
    return img


def desk_top(rng: np.random.Generator, h: int, w: int, texel: float, shadows: Sequence[tuple] = ()) -> np.ndarray:
    """Desk surface: wood or laminate, papers, a mouse pad, sticky notes, pens, coffee rings.

    shadows: (cx, cy, sx, sy, angle_deg) footprints in texels of objects standing on the desk;
    a soft contact shadow is baked under each.
    """
    if rng.random() < 0.6:
        img = wood(rng, h, w, grain_px=0.004 / texel)
    else:
        base = random_color(rng, sat=(0.0, 0.3), val=(0.5, 0.9))
        f = 0.35 * fractal_noise(rng, h, w, cell=6.0, octaves=3) + 0.65 * fractal_noise(rng, h, w, cell=max(8.0, w / 5), octaves=8)
        img = colorize(f, np.asarray(base) * 0.8, np.minimum(np.asarray(base) * 1.12, 255))
    mean = img[::16, ::16].reshape(-1, 3).mean(0)
    confetti(img, rng, texel, rng.uniform(60, 100), (0.008, 0.02), shades_of(mean, rng, 4, 0.35, 0.7))  # ink, stains
    if len(shadows):
        m = np.zeros((h, w), np.uint8)
        for cx, cy, sx, sy, ang in shadows:
            box = cv2.boxPoints(((cx, cy), (sx * 1.06, sy * 1.06), ang)).astype(np.int32)
            cv2.fillConvexPoly(m, box, 255, cv2.LINE_AA)
        k = max(3, int(0.03 / texel) | 1)
        m = cv2.GaussianBlur(m, (k, k), 0).astype(np.float32) * np.float32(0.45 / 255.0)
        img = modulate(img, 1.0 - m)
    for _ in range(int(rng.integers(3, 7))):  # papers
        pw, ph = int(0.21 / texel), int(0.297 / texel)
        if rng.random() < 0.5:
            pw, ph = ph, pw
        paste_rotated(img, paper(rng, ph, pw, texel), rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-30, 30), 0.25)
    if rng.random() < 0.8:  # mouse pad
        mp = carpet(rng, int(0.2 / texel), int(0.25 / texel)) if rng.random() < 0.5 else photo(rng, int(0.2 / texel), int(0.25 / texel))
        paste_rotated(img, mp, rng.uniform(0.6, 0.9) * w, rng.uniform(0.5, 0.8) * h, rng.uniform(-10, 10), 0.3)
    for _ in range(int(rng.integers(4, 10))):
        s = int(0.076 / texel)
        paste_rotated(img, sticky_note(rng, max(6, s)), rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-25, 25), 0.2)
    for _ in range(int(rng.integers(2, 6))):  # pens / pencils
        a = rng.uniform(0, np.pi)
        ln = 0.14 / texel
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        p0 = (int(cx - ln / 2 * np.cos(a)), int(cy - ln / 2 * np.sin(a)))
        p1 = (int(cx + ln / 2 * np.cos(a)), int(cy + ln / 2 * np.sin(a)))
        cv2.line(img, p0, p1, random_color(rng, sat=(0.6, 1.0)), max(2, int(0.009 / texel)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):  # coffee rings
        cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(0.04 / texel), (40, 60, 90),
                   max(1, int(0.003 / texel)), cv2.LINE_AA)
    return img
