"""Procedural textures of things in an office, for the synthetic renderer: cardboard, labels,
photos, posters, paper, sticky notes, a keyboard, a screen, books, drawers, a whiteboard, a
calendar, a clock, a window, a door, a pinboard, mugs and a desk top.

Same conventions as :mod:`slam.synth.textures`: a ``numpy.random.Generator`` and a size in
texels in, a ``(h, w, 3) uint8`` BGR image out, deterministic for a given generator state;
``texel`` is metres per texel where a generator draws real-world sized things.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from slam.synth.textures import (
    FONTS,
    LETTERS,
    to_u8,
    fractal_noise,
    colorize,
    scale,
    modulate,
    random_color,
    contrasting,
    random_word,
    put_text,
    text_block,
    random_shapes,
    paste,
    paste_rotated,
    confetti,
    shades_of,
    wood,
    carpet,
    metal,
)


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
             FONTS[int(rng.integers(0, 4))])
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
    img = to_u8(img)
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
                 FONTS[int(rng.integers(0, 4))])
        text_block(img, rng, m, ph + m + int(h * 0.11), w - m, h - m, fg, max(4.0, 0.012 / texel))
    elif layout < 0.8:
        random_shapes(img, rng, int(rng.integers(6, 18)), (min(h, w) * 0.08, min(h, w) * 0.5),
                      (m, m, w - m, int(h * 0.7)))
        put_text(img, random_word(rng, 3, 8), (m, int(h * 0.8)), h * 0.07, fg, FONTS[int(rng.integers(0, 4))])
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
        put_text(img, random_word(rng, 4, 8).upper(), (2 * m, 2 * m + int(h * 0.06)), h * 0.05, fg, FONTS[1])
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), (30, 30, 30), max(1, int(0.008 / texel)))
    return img


def paper(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """A printed sheet: white paper with a heading, text lines and sometimes a figure or table."""
    v = rng.uniform(225, 252)
    img = colorize(fractal_noise(rng, h, w, 8.0, 2), (v * 0.96,) * 3, (v,) * 3)
    ink = random_color(rng, sat=(0.0, 0.3), val=(0.0, 0.25))
    m = max(2, int(0.02 / texel))
    line = max(3.0, rng.uniform(0.004, 0.008) / texel)
    put_text(img, random_word(rng, 4, 10).upper(), (m, m + int(line * 2)), line * 1.8, ink, FONTS[int(rng.integers(0, 4))])
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
            ch = LETTERS[int(rng.integers(0, 36))].upper()
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
    put_text(img, random_word(rng, 3, 8).upper(), (w // 12, int(h * 0.22)), h * 0.08, fg, FONTS[int(rng.integers(0, 4))])
    random_shapes(img, rng, int(rng.integers(2, 6)), (min(h, w) * 0.1, min(h, w) * 0.5), (w // 8, h // 3, w - w // 8, h - h // 5))
    put_text(img, random_word(rng, 4, 10), (w // 12, int(h * 0.92)), h * 0.04, fg, FONTS[0])
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
    put_text(img, random_word(rng, 4, 8).upper(), (w // 20, ph + int(h * 0.08)), h * 0.05, (40, 40, 200), FONTS[1])
    rows, cols = 5, 7
    gy0 = ph + int(h * 0.12)
    ch, cw = (h - gy0 - h // 30) / rows, (w - w // 10) / cols
    day = 1
    for r in range(rows):
        for c in range(cols):
            x, y = int(w // 20 + c * cw), int(gy0 + r * ch)
            cv2.rectangle(img, (x, y), (int(x + cw), int(y + ch)), (150, 150, 150), 1)
            if day <= 31:
                put_text(img, str(day), (x + 2, int(y + ch * 0.6)), ch * 0.4, ink if c < 5 else (30, 30, 200), FONTS[0], 1)
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
             FONTS[int(rng.integers(0, 4))])
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
