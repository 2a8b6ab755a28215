"""The corridor scene of the synthetic renderer: a long office corridor, deterministic from a seed.

The corridor runs along world +x from x = 0 to x = ``length``, centred on y = 0, floor at z = 0
(metres). Its walls are 4 m segments, each with its own texture (painted wall with doors,
posters, boards, notes, switches: :func:`slam.synth.office.wall_texture`), so nothing repeats;
the floor is tiles of one colour (maybe with a carpet runner), the ceiling tiles carry a light
panel per segment, and a light hangs under each. Benches, cabinets, bins, plants, boxes, water
coolers and fire extinguishers stand along the walls and leave the middle free for a camera
moving along the corridor (:class:`slam.synth.config.ForwardMotion`).

Anchors: ``path_start``/``path_end`` (floor points on the axis 1 m from each end),
``room_min``/``room_max`` (corners of the corridor).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from slam.synth import items as it
from slam.synth import textures as tx
from slam.synth.config import CorridorScene
from slam.synth.office import wall_texture
from slam.synth.scene import Scene
from slam.synth.textures import tex_dims

__all__ = ["make_corridor"]

_SEGMENT = 4.0  # m: nominal length of a wall / floor / ceiling segment
_WALL_TEXEL, _FLOOR_TEXEL, _CEIL_TEXEL, _OBJ_TEXEL = 0.004, 0.004, 0.008, 0.002


def foliage(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Leaves: dark and light greens in blobs at several scales (for the crown of a plant)."""
    n = tx.fractal_noise(rng, h, w, cell=max(4.0, w / 12), octaves=4)
    img = tx.colorize(n, (20, 70, 25), (70, 170, 90))
    greens = [(30, 110 + 30 * k, 40 + 10 * k) for k in range(4)] + [(20, 60, 20)]
    tx.random_shapes(img, rng, max(20, h * w // 300), (3.0, max(4.0, w / 10)), None, greens)
    return img


def _floor_texture(rng: np.random.Generator, runner: bool, base, tile_m: float, length: float,
                   width: float) -> np.ndarray:
    """Floor tiles of one colour along the whole corridor (each segment its own speckle and
    per-tile tint), with a carpet runner down the middle when ``runner``."""
    h, w = tex_dims((length, width), _FLOOR_TEXEL)
    img = tx.tiles(rng, h, w, _FLOOR_TEXEL, tile_m, base=base)
    if runner:
        margin = int(0.35 / _FLOOR_TEXEL)
        tx.paste(img, tx.carpet(rng, h - 2 * margin, w), 0, margin)
    return img


def _ceiling_texture(rng: np.random.Generator, length: float, width: float) -> np.ndarray:
    h, w = tex_dims((length, width), _CEIL_TEXEL)
    img = tx.tiles(rng, h, w, _CEIL_TEXEL, 0.6, base=(225, 228, 230))
    pw, ph = int(1.2 / _CEIL_TEXEL), int(0.6 / _CEIL_TEXEL)  # light panel across the middle
    x0, y0 = (w - pw) // 2, (h - ph) // 2
    cv2.rectangle(img, (x0, y0), (x0 + pw, y0 + ph), (250, 252, 255), -1)
    cv2.rectangle(img, (x0, y0), (x0 + pw, y0 + ph), (150, 150, 150), 2)
    return img


def _add_wall_segment(sc: Scene, rng: np.random.Generator, side: int, x0: float, seg: float, p: CorridorScene,
                      base) -> None:
    """Wall texture of [x0, x0 + seg] on the side ``side`` (+1: y > 0, -1: y < 0), seen from the
    corridor (texture right = the viewer's right, down = -z)."""
    img = wall_texture(rng, seg, p.height, _WALL_TEXEL, base, 1.4, door=rng.random() < 0.6,
                       whiteboard=rng.random() < 0.15)
    y = side * (p.width / 2)
    if side > 0:  # seen looking towards +y: right is +x
        sc.add_quad([x0, y, p.height], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], (seg, p.height), img, name="wall")
    else:  # seen looking towards -y: right is -x
        sc.add_quad([x0 + seg, y, p.height], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], (seg, p.height), img, name="wall")


def _add_furniture(sc: Scene, rng: np.random.Generator, side: int, x: float, p: CorridorScene) -> float:
    """One piece of furniture against the wall ``side`` starting at x; returns its length (m)."""
    wall_y = side * p.width / 2
    kind = rng.choice(["bench", "cabinet", "bin", "plant", "boxes", "cooler", "extinguisher"],
                      p=[0.2, 0.2, 0.15, 0.15, 0.15, 0.08, 0.07])
    if kind == "bench":
        ln, dp, ht = rng.uniform(1.0, 1.6), 0.4, 0.45
        seat = tx.wood(rng, *tex_dims((ln, dp), _OBJ_TEXEL))
        leg = tx.metal(rng, 64, 16, base=(50, 50, 55))
        cy = wall_y - side * (dp / 2 + 0.03)
        sc.add_box([x + ln / 2, cy, ht - 0.02], [ln / 2, dp / 2, 0.02], [seat] * 6, name="bench")
        for lx in (x + 0.08, x + ln - 0.08):
            sc.add_box([lx, cy, (ht - 0.04) / 2], [0.03, dp / 2 - 0.03, (ht - 0.04) / 2], [leg] * 6, name="bench_leg")
        return ln
    if kind == "cabinet":
        ln, dp, ht = rng.uniform(0.6, 1.0), 0.42, rng.uniform(0.8, 1.3)
        front = it.drawers(rng, *tex_dims((ln, ht), _OBJ_TEXEL), texel=_OBJ_TEXEL)
        side_t = tx.metal(rng, 128, 128)
        top = it.cardboard(rng, *tex_dims((ln, dp), _OBJ_TEXEL), texel=_OBJ_TEXEL) if rng.random() < 0.5 else \
            it.paper(rng, *tex_dims((ln, dp), _OBJ_TEXEL), texel=_OBJ_TEXEL)
        faces = [side_t, side_t, front, side_t, side_t, top] if side > 0 else [side_t, side_t, side_t, front, side_t, top]
        sc.add_box([x + ln / 2, wall_y - side * (dp / 2 + 0.02), ht / 2], [ln / 2, dp / 2, ht / 2], faces, name="cabinet")
        return ln
    if kind == "bin":
        r, ht = rng.uniform(0.15, 0.22), rng.uniform(0.4, 0.7)
        sc.add_cylinder([x + r, wall_y - side * (r + 0.03), 0.0], r, ht, it.mug(rng, *tex_dims((2 * math.pi * r, ht), 0.003)),
                        tx.metal(rng, 64, 64, base=(35, 35, 35)), name="bin")
        return 2 * r
    if kind == "plant":
        r, ht = rng.uniform(0.15, 0.22), rng.uniform(0.3, 0.45)
        cx, cy = x + 0.3, wall_y - side * 0.33
        pot = tx.colorize(tx.fractal_noise(rng, 128, 256, cell=16.0, octaves=3), (40, 70, 140), (80, 120, 200))
        sc.add_cylinder([cx, cy, 0.0], r, ht, pot, tx.carpet(rng, 64, 64), name="plant_pot")
        rc, hc = rng.uniform(0.22, 0.3), rng.uniform(0.5, 1.0)
        sc.add_cylinder([cx, cy, ht], rc, hc, foliage(rng, *tex_dims((2 * math.pi * rc, hc), 0.004)),
                        foliage(rng, 64, 64), name="plant")
        return 0.6
    if kind == "boxes":
        ln = 0.0
        for _ in range(int(rng.integers(1, 4))):
            s, hz = rng.uniform(0.3, 0.5), rng.uniform(0.25, 0.5)
            faces = [it.cardboard(rng, *tex_dims((s, hz if j < 4 else s), _OBJ_TEXEL), texel=_OBJ_TEXEL) for j in range(6)]
            sc.add_box([x + ln + s / 2, wall_y - side * (s / 2 + 0.04), hz / 2], [s / 2, s / 2, hz / 2], faces,
                       yaw=rng.uniform(-0.15, 0.15), name="floor_box")
            ln += s + 0.05
        return ln
    if kind == "cooler":
        body = tx.metal(rng, 256, 128, base=(225, 225, 230))
        sc.add_box([x + 0.17, wall_y - side * 0.2, 0.5], [0.16, 0.16, 0.5], [body] * 6, name="water_cooler")
        bottle = tx.colorize(tx.fractal_noise(rng, 64, 128, cell=8.0, octaves=2), (170, 120, 60), (240, 200, 140))
        sc.add_cylinder([x + 0.17, wall_y - side * 0.2, 1.0], 0.13, 0.45, bottle, tx.metal(rng, 32, 32), name="bottle")
        return 0.34
    # extinguisher: red cylinder with a label on a small sign
    red = it.mug(rng, *tex_dims((2 * math.pi * 0.08, 0.55), 0.002))
    red[:] = tx.scale(red, 0.3, 0)
    red[..., 2] = np.maximum(red[..., 2], 170)
    sc.add_cylinder([x + 0.1, wall_y - side * 0.12, 0.1], 0.08, 0.55, red, tx.metal(rng, 32, 32, base=(40, 40, 40)),
                    name="extinguisher")
    return 0.2


def make_corridor(seed: int = 0, params: CorridorScene = CorridorScene()) -> Scene:
    """Build the corridor described by ``params`` (deterministic from ``seed``); see the module
    docstring for its layout and anchors."""
    p = params
    rng = np.random.default_rng([int(seed), 11])
    sc = Scene(seed=seed)
    L, Wc, Hc = p.length, p.width, p.height
    sc.anchors.update(path_start=np.array([1.0, 0.0, 0.0]), path_end=np.array([L - 1.0, 0.0, 0.0]),
                      room_min=np.array([0.0, -Wc / 2, 0.0]), room_max=np.array([L, Wc / 2, Hc]))
    base = tx.random_color(rng, sat=(0.05, 0.35), val=(0.7, 0.92))
    # enclosure: the ends are textured walls; its long faces are hidden behind the segments
    eps = 0.005
    ends = [wall_texture(rng, Wc, Hc, _WALL_TEXEL, base, 2.0, door=k == 0, window=k == 1) for k in range(2)]
    hidden = tx.plaster(rng, 16, 16, base)
    sc.add_box([L / 2, 0.0, Hc / 2], [L / 2, Wc / 2 + eps, Hc / 2 + eps], [ends[0], ends[1], hidden, hidden, hidden, hidden],
               inside=True, name="corridor")
    n_seg = max(1, int(math.ceil(L / _SEGMENT)))
    seg = L / n_seg
    runner = bool(rng.random() < 0.4)
    floor_base = tx.random_color(rng, sat=(0.0, 0.3), val=(0.45, 0.85))
    tile_m = rng.uniform(0.4, 0.6)
    for k in range(n_seg):
        x0 = k * seg
        for side in (-1, 1):
            _add_wall_segment(sc, rng, side, x0, seg, p, base)
        sc.add_quad([x0, Wc / 2, 0.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], (seg, Wc),
                    _floor_texture(rng, runner, floor_base, tile_m, seg, Wc), name="floor")
        sc.add_quad([x0, -Wc / 2, Hc], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], (seg, Wc), _ceiling_texture(rng, seg, Wc),
                    name="ceiling")
        sc.lights.append((np.array([x0 + seg / 2, 0.0, Hc - 0.5]), 0.6))
    sc.ambient = 0.4
    for side in (-1, 1):
        x = rng.uniform(0.3, 1.5)
        while x < L - 2.0:  # the longest piece is 1.6 m
            x += _add_furniture(sc, rng, side, x, p) + rng.uniform(0.8, 3.5)
    sc.bake_lighting()
    return sc
