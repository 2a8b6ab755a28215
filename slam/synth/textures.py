"""Procedural textures for the synthetic renderer: noise, colour, text, shapes and materials.

Every generator takes a ``numpy.random.Generator`` and a size in texels and returns a
``(h, w, 3) uint8`` BGR image, deterministic for a given generator state. The textures are
designed for feature-based SLAM: they carry structure at many scales (fractal noise,
shapes, patterns, text-like marks) with enough contrast for FAST/ORB corners and for learned
detectors, while staying plausible for an office: painted walls, wooden floors, ceiling tiles,
carpets, brushed metal. Textures of things (posters, books, a keyboard, ...) are in
:mod:`slam.synth.items`.

Sizes are in texels; the caller chooses the texel size in metres (:func:`tex_dims`), and
generators that draw real-world sized things (text lines, tiles, planks) take ``texel`` (metres
per texel) so that physical sizes stay right at any resolution.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_LETTER_ARR = np.frombuffer(LETTERS.encode("ascii"), dtype=np.uint8)


# ----------------------------------------------------------------------------- primitives
def to_u8(img: np.ndarray) -> np.ndarray:
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
    chars = _LETTER_ARR[rng.integers(0, len(LETTERS), int(lens.sum()))].tobytes().decode("ascii")
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
        font = FONTS[int(rng.integers(0, len(FONTS)))]
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
    region[:] = to_u8(reg * (1.0 - a) + warped * a)


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


def tex_dims(size_m: tuple, texel: float, max_px: int = 4096) -> tuple:
    """(h, w) texels of a texture covering ``size_m`` = (width, height) metres at ``texel``
    metres per texel, at least 4 and at most ``max_px`` per side."""
    w = int(min(max_px, max(4, round(size_m[0] / texel))))
    h = int(min(max_px, max(4, round(size_m[1] / texel))))
    return h, w
