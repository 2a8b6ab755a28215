"""The office scene of the synthetic renderer: a furnished room, deterministic from a seed.

A room (inside-out box) with painted walls carrying posters, photos, boards, notes, a clock,
a window, a door and a whiteboard; a wooden or tiled floor with a rug; a tiled ceiling with
light panels; a desk with a monitor, a keyboard, boxes, books and mugs; a PC tower, a crate,
a bookshelf, a cabinet, a bin, boxes on the floor and a chair. Every surface is textured
(:mod:`slam.synth.textures`, :mod:`slam.synth.items`) and lit by static lights baked into the
textures.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from slam.synth import items as it
from slam.synth import textures as tx
from slam.synth.scene import Scene
from slam.synth.textures import tex_dims

__all__ = ["make_office", "wall_texture"]


def wall_texture(rng: np.random.Generator, width_m: float, height_m: float, texel: float, base,
                  density: float, window: bool = False, door: bool = False, whiteboard: bool = False) -> np.ndarray:
    """A painted wall with posters, photos, boards, notes, a clock, maybe a window and a door."""
    h, w = tex_dims((width_m, height_m), texel)
    img = tx.wallpaper(rng, h, w, base, texel)
    px = 1.0 / texel  # texels per metre
    occupied: list = []

    def free(x0, y0, x1, y1, gap=0.05 * px):
        for a0, b0, a1, b1 in occupied:
            if x0 < a1 + gap and a0 < x1 + gap and y0 < b1 + gap and b0 < y1 + gap:
                return False
        return 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h

    def place(iw, ih, y_range, tries=40):
        for _ in range(tries):
            x0 = rng.uniform(0.05 * px, w - iw - 0.05 * px) if w - iw > 0.1 * px else 0
            yc = height_m - rng.uniform(*y_range)  # y_range = heights (m) of the item centre above the floor
            y0 = yc * px - ih / 2
            if free(x0, y0, x0 + iw, y0 + ih):
                occupied.append((x0, y0, x0 + iw, y0 + ih))
                return int(x0), int(y0)
        return None

    # skirting board
    sb = int(0.08 * px)
    img[h - sb:] = tx.scale(img[h - sb:], 0.55, 30)
    img[h - sb:h - sb + max(1, int(0.006 * px))] = 40
    if door:
        dw, dh = int(0.9 * px), int(2.05 * px)
        x0 = int(rng.uniform(0.2 * px, w - dw - 0.2 * px))
        tx.paste(img, it.door(rng, dh, dw, texel), x0, h - dh)
        occupied.append((x0, h - dh, x0 + dw, h))
    if window:
        ww, wh = int(rng.uniform(1.0, 1.6) * px), int(rng.uniform(0.9, 1.3) * px)
        pos = place(ww, wh, (1.4, 1.6))
        if pos:
            tx.paste(img, it.window(rng, wh, ww, texel), *pos)
    if whiteboard:
        bw, bh = int(rng.uniform(1.2, 1.8) * px), int(rng.uniform(0.8, 1.0) * px)
        pos = place(bw, bh, (1.45, 1.65))
        if pos:
            tx.paste(img, it.whiteboard(rng, bh, bw, texel), *pos)
    n_items = int(density * width_m * height_m)
    for _ in range(n_items):
        kind = rng.random()
        if kind < 0.35:
            iw = rng.uniform(0.3, 0.75)
            ih = iw * rng.uniform(1.2, 1.5)
            item = it.poster(rng, int(ih * px), int(iw * px), texel)
        elif kind < 0.55:
            iw = rng.uniform(0.2, 0.5)
            ih = iw * rng.uniform(0.6, 1.4)
            item = it.framed(it.photo(rng, int(ih * px), int(iw * px)), rng, texel)
        elif kind < 0.65:
            iw, ih = rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.7)
            item = it.pinboard(rng, int(ih * px), int(iw * px), texel)
        elif kind < 0.72:
            iw = rng.uniform(0.3, 0.45)
            ih = iw * 1.4
            item = it.calendar(rng, int(ih * px), int(iw * px))
        elif kind < 0.77:
            iw = ih = rng.uniform(0.25, 0.4)
            item = it.clock(rng, int(iw * px))
        elif kind < 0.92:
            iw, ih = 0.21, 0.297
            item = it.paper(rng, int(ih * px), int(iw * px), texel)
        else:
            iw = ih = 0.076
            item = it.sticky_note(rng, int(iw * px))
        pos = place(item.shape[1], item.shape[0], (0.9, min(2.45, height_m - 0.25)))
        if pos:
            tx.paste(img, item, *pos)
    for _ in range(int(rng.integers(2, 5))):  # outlets / switches near the floor or door height
        sw_ = int(0.08 * px)
        y_c = rng.choice([0.3, 1.1])
        pos = place(sw_, sw_, (y_c, y_c + 0.01), tries=5)
        if pos:
            x0, y0 = pos
            cv2.rectangle(img, (x0, y0), (x0 + sw_, y0 + sw_), (235, 235, 235), -1, cv2.LINE_AA)
            cv2.rectangle(img, (x0, y0), (x0 + sw_, y0 + sw_), (90, 90, 90), 1, cv2.LINE_AA)
            cv2.circle(img, (x0 + sw_ // 2, y0 + sw_ // 2), max(2, sw_ // 5), (60, 60, 60), -1, cv2.LINE_AA)
    return img


def make_office(seed: int = 0) -> Scene:
    """Build a furnished office room, deterministic from ``seed``.

    World frame: z up, floor at z = 0, room centred on x = y = 0. A desk stands against the
    +y wall; ``scene.anchors["desk_center"]`` is the centre of its top surface. The desk carries
    a monitor, a keyboard, boxes, books, mugs/cans; the room has a bookshelf, a cabinet, a
    chair, a bin and boxes on the floor; every surface is textured.
    """
    rng = np.random.default_rng(seed)
    sc = Scene(seed=seed)
    W, D, Hr = rng.uniform(4.6, 5.6), rng.uniform(5.0, 6.0), rng.uniform(2.5, 2.9)
    wall_texel, floor_texel, ceil_texel, obj_texel = 0.003, 0.004, 0.006, 0.0012

    # ---------------------------------------------------------------- desk layout first (shadows)
    dw, dd, dh = rng.uniform(1.4, 1.8), rng.uniform(0.7, 0.85), rng.uniform(0.72, 0.78)
    desk_x = rng.uniform(-0.6, 0.6)
    desk_y = D / 2 - 0.12 - dd / 2
    desk_top = np.array([desk_x, desk_y, dh])
    sc.anchors.update(desk_center=desk_top.copy(), room_min=np.array([-W / 2, -D / 2, 0.0]),
                      room_max=np.array([W / 2, D / 2, Hr]), desk_size=np.array([dw, dd]))

    items = []  # (kind, cx, cy, sx, sy, yaw) in desk-top local coords (x along desk, y towards wall)
    footprints = []

    def fits(cx, cy, sx, sy, yaw, gap=0.03):
        r = 0.5 * math.hypot(sx, sy)
        if abs(cx) + r > dw / 2 - 0.02 or abs(cy) + r > dd / 2 - 0.02:
            # allow axis-aligned fit when the circumscribed circle is too large
            ex = 0.5 * (abs(sx * math.cos(yaw)) + abs(sy * math.sin(yaw)))
            ey = 0.5 * (abs(sx * math.sin(yaw)) + abs(sy * math.cos(yaw)))
            if abs(cx) + ex > dw / 2 - 0.01 or abs(cy) + ey > dd / 2 - 0.01:
                return False
        for fx, fy, fr in footprints:
            if math.hypot(cx - fx, cy - fy) < r + fr + gap:
                return False
        footprints.append((cx, cy, r))
        return True

    mon_w = rng.uniform(0.5, 0.62)
    mon_x = rng.uniform(-0.15, 0.15) * dw
    items.append(("monitor", mon_x, dd / 2 - 0.18, mon_w, 0.2, 0.0))
    footprints.append((mon_x, dd / 2 - 0.18, 0.17))
    kb_x = mon_x + rng.uniform(-0.05, 0.05)
    items.append(("keyboard", kb_x, -dd / 2 + 0.17, 0.44, 0.14, rng.uniform(-0.05, 0.05)))
    footprints.append((kb_x, -dd / 2 + 0.17, 0.2))
    wanted = ["box"] * int(rng.integers(3, 5)) + ["books"] * int(rng.integers(1, 3)) + ["cyl"] * int(rng.integers(2, 4))
    for kind in wanted:
        for _ in range(60):
            if kind == "box":
                sx, sy = rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.25)
            elif kind == "books":
                sx, sy = rng.uniform(0.15, 0.24), rng.uniform(0.2, 0.3)
            else:
                sx = sy = 2 * rng.uniform(0.03, 0.045)
            cx, cy = rng.uniform(-dw / 2, dw / 2), rng.uniform(-dd / 2, dd / 2)
            yaw = rng.uniform(-0.5, 0.5)
            if fits(cx, cy, sx, sy, yaw):
                items.append((kind, cx, cy, sx, sy, yaw))
                break

    # ---------------------------------------------------------------- room
    wall_base = tx.random_color(rng, sat=(0.05, 0.35), val=(0.7, 0.92))
    walls = []
    # face order -x, +x, -y, +y; +y is behind the desk (seen most): densest
    for k, (wm, dens) in enumerate(((D, 2.0), (D, 2.0), (W, 1.8), (W, 3.0))):
        walls.append(wall_texture(rng, wm, Hr, wall_texel, wall_base, dens, window=(k == 0),
                                   door=(k == 2), whiteboard=(k == 3)))
    fh, fw = tex_dims((W, D), floor_texel)
    floor = tx.planks(rng, fh, fw, floor_texel) if rng.random() < 0.6 else tx.tiles(rng, fh, fw, floor_texel, 0.5)
    rug_w, rug_h = rng.uniform(2.0, 2.8), rng.uniform(1.6, 2.2)
    rug = tx.carpet(rng, int(rug_h / floor_texel), int(rug_w / floor_texel))
    # floor texture: column = x + W/2, row = D/2 - y; the rug reaches under the desk
    rx = desk_x + rng.uniform(-0.3, 0.3)
    ry = desk_y - rug_h / 2 + rng.uniform(0.0, 0.3)
    tx.paste(floor, rug, int((rx + W / 2 - rug_w / 2) / floor_texel), int((D / 2 - ry - rug_h / 2) / floor_texel))
    ch, cw = tex_dims((W, D), ceil_texel)
    ceiling = tx.tiles(rng, ch, cw, ceil_texel, 0.6, base=(225, 228, 230))
    for lx in (-W / 4, W / 4):  # light panels
        x0, y0 = int((lx + W / 2 - 0.3) / ceil_texel), int((D / 2 - 0.6) / ceil_texel)
        cv2.rectangle(ceiling, (x0, y0), (x0 + int(0.6 / ceil_texel), y0 + int(1.2 / ceil_texel)), (250, 252, 255), -1)
        cv2.rectangle(ceiling, (x0, y0), (x0 + int(0.6 / ceil_texel), y0 + int(1.2 / ceil_texel)), (150, 150, 150), 2)
    sc.add_box([0.0, 0.0, Hr / 2], [W / 2, D / 2, Hr / 2], [walls[0], walls[1], walls[2], walls[3], floor, ceiling],
               inside=True, name="room")
    sc.lights = [(np.array([-W / 4, 0.0, Hr - 0.05]), 0.55), (np.array([W / 4, 0.0, Hr - 0.05]), 0.55),
                 (np.array([desk_x, desk_y - 1.2, Hr - 0.05]), 0.35)]
    sc.ambient = 0.42

    # ---------------------------------------------------------------- desk
    shadows = []
    for kind, cx, cy, sx, sy, yaw in items:
        if kind == "monitor":
            shadows.append(((cx + dw / 2) / obj_texel, (dd / 2 - cy) / obj_texel, 0.22 / obj_texel, 0.16 / obj_texel, 0.0))
        else:
            shadows.append(((cx + dw / 2) / obj_texel, (dd / 2 - cy) / obj_texel, sx / obj_texel, sy / obj_texel,
                            -math.degrees(yaw)))
    th, tw = tex_dims((dw, dd), obj_texel)
    top = it.desk_top(rng, th, tw, obj_texel, shadows)
    edge = tx.wood(rng, 16, 512) if rng.random() < 0.5 else tx.metal(rng, 16, 512)
    leg = tx.metal(rng, 256, 32)
    thick = 0.03
    sc.add_box([desk_x, desk_y, dh - thick / 2], [dw / 2, dd / 2, thick / 2], [edge, edge, edge, edge, edge, top],
               name="desk")
    legi = sc.add_texture(leg)
    for sx_ in (-1, 1):
        for sy_ in (-1, 1):
            sc.add_box([desk_x + sx_ * (dw / 2 - 0.04), desk_y + sy_ * (dd / 2 - 0.04), (dh - thick) / 2],
                       [0.02, 0.02, (dh - thick) / 2], [legi] * 6, name="desk_leg")
    # modesty panel at the back of the desk
    panel = tx.metal(rng, 128, 512)
    sc.add_box([desk_x, desk_y + dd / 2 - 0.03, (dh - thick) / 2 + 0.15], [dw / 2 - 0.07, 0.008, (dh - thick) / 2 - 0.15],
               [panel] * 6, name="desk_panel")

    def local_to_world(cx, cy):
        return desk_x + cx, desk_y + cy

    for kind, cx, cy, sx, sy, yaw in items:
        wx, wy = local_to_world(cx, cy)
        if kind == "monitor":
            mh = mon_w * rng.uniform(0.56, 0.62)
            plastic = tx.metal(rng, 64, 64, base=(30, 30, 32))
            scr_h, scr_w = tex_dims((mon_w, mh), 0.001)
            screen = it.screen(rng, scr_h, scr_w)
            z0 = dh + 0.11
            sc.add_box([wx, wy, z0 + mh / 2], [mon_w / 2, 0.015, mh / 2], [plastic, plastic, screen, plastic, plastic, plastic],
                       name="monitor")
            sc.add_box([wx, wy + 0.04, dh + 0.06], [0.03, 0.015, 0.06], [plastic] * 6, name="monitor_neck")
            sc.add_box([wx, wy + 0.01, dh + 0.006], [0.11, 0.08, 0.006], [plastic] * 6, name="monitor_base")
        elif kind == "keyboard":
            kbh, kbw = tex_dims((sx, sy), 0.001)
            kb = it.keyboard(rng, kbh, kbw)
            side = tx.metal(rng, 16, 256, base=(35, 35, 38))
            sc.add_box([wx, wy, dh + 0.012], [sx / 2, sy / 2, 0.012], [side, side, side, side, side, kb], yaw=yaw,
                       name="keyboard")
        elif kind == "box":
            hz = rng.uniform(0.06, 0.3)
            faces = []
            printed = rng.random() < 0.5
            for k in range(6):
                sz = ((sy, hz), (sy, hz), (sx, hz), (sx, hz), (sx, sy), (sx, sy))[k]
                th_, tw_ = tex_dims(sz, obj_texel)
                if printed:
                    t = it.book_cover(rng, th_, tw_) if k != 4 else it.cardboard(rng, th_, tw_, obj_texel, False)
                else:
                    t = it.cardboard(rng, th_, tw_, obj_texel, k != 4)
                faces.append(t)
            sc.add_box([wx, wy, dh + hz / 2], [sx / 2, sy / 2, hz / 2], faces, yaw=yaw, name="box")
        elif kind == "books":
            z = dh
            for _ in range(int(rng.integers(1, 4))):
                bt = rng.uniform(0.02, 0.05)
                bsx, bsy = sx * rng.uniform(0.85, 1.0), sy * rng.uniform(0.85, 1.0)
                cover_h, cover_w = tex_dims((bsx, bsy), obj_texel)
                cover = it.book_cover(rng, cover_h, cover_w)
                ph, pw = tex_dims((max(bsx, bsy), bt), obj_texel)
                pg = it.pages(rng, ph, pw)
                spine = it.book_cover(rng, ph, pw)
                sc.add_box([wx + rng.uniform(-0.01, 0.01), wy + rng.uniform(-0.01, 0.01), z + bt / 2], [bsx / 2, bsy / 2, bt / 2],
                           [pg, spine, pg, pg, cover, cover], yaw=yaw + rng.uniform(-0.15, 0.15), name="book")
                z += bt
        else:  # mug / can / bottle
            r = sx / 2
            hgt = rng.choice([rng.uniform(0.09, 0.11), rng.uniform(0.11, 0.13), rng.uniform(0.2, 0.26)])
            side_h, side_w = tex_dims((2 * math.pi * r, hgt), 0.0008)
            side = it.mug(rng, side_h, side_w)
            lid = tx.metal(rng, 64, 64)
            sc.add_cylinder([wx, wy, dh], r, hgt, side, lid, name="cylinder")

    # ---------------------------------------------------------------- under the desk
    tw_, td_, th_ = 0.2, 0.45, rng.uniform(0.4, 0.48)
    side_x = desk_x + rng.choice([-1, 1]) * (dw / 2 - 0.25)
    pc_front = it.drawers(rng, *tex_dims((tw_, th_), 0.001), texel=0.001)
    pc_side = it.poster(rng, *tex_dims((td_, th_), 0.001), texel=0.001) if rng.random() < 0.5 else \
        it.cardboard(rng, *tex_dims((td_, th_), 0.001), texel=0.001)
    pc_top = tx.metal(rng, 128, 128, base=(40, 40, 45))
    sc.add_box([side_x, desk_y - 0.05, th_ / 2], [tw_ / 2, td_ / 2, th_ / 2],
               [pc_side, pc_side, pc_front, pc_top, pc_top, pc_top], name="pc_tower")
    crate = [it.cardboard(rng, *tex_dims((0.4, 0.3), 0.0015), texel=0.0015) for _ in range(6)]
    sc.add_box([desk_x - 0.6 * (side_x - desk_x), desk_y + 0.05, 0.15], [0.2, 0.2, 0.15], crate,
               yaw=rng.uniform(-0.3, 0.3), name="crate")

    # ---------------------------------------------------------------- furniture on the floor
    # bookshelf against the -x wall, cabinet right of the desk, bin, floor boxes, a chair
    bs_w, bs_d, bs_h = rng.uniform(0.8, 1.2), 0.32, rng.uniform(1.6, 2.0)
    bs_y = rng.uniform(-0.5, D / 2 - bs_w / 2 - 0.3)
    spines = it.book_spines(rng, *tex_dims((bs_w, bs_h), 0.002)[::1], texel=0.002)
    side = tx.wood(rng, 256, 128, vertical=True)
    sc.add_box([-W / 2 + bs_d / 2 + 0.01, bs_y, bs_h / 2], [bs_d / 2, bs_w / 2, bs_h / 2],
               [side, spines, side, side, side, side], name="bookshelf")
    cab_w, cab_d, cab_h = rng.uniform(0.45, 0.6), 0.5, rng.uniform(0.6, 0.72)
    cab_x = min(W / 2 - cab_w / 2 - 0.05, desk_x + dw / 2 + cab_w / 2 + 0.1)
    front = it.drawers(rng, *tex_dims((cab_w, cab_h), 0.002), texel=0.002)
    cab_side = tx.metal(rng, 128, 128)
    cab_top = it.cardboard(rng, 256, 256, 0.002) if rng.random() < 0.5 else it.paper(rng, 256, 256, 0.002)
    sc.add_box([cab_x, D / 2 - cab_d / 2 - 0.02, cab_h / 2], [cab_w / 2, cab_d / 2, cab_h / 2],
               [cab_side, cab_side, front, cab_side, cab_side, cab_top], name="cabinet")
    bin_side = it.mug(rng, *tex_dims((2 * math.pi * 0.15, 0.35), 0.003))
    bin_x = desk_x - dw / 2 - 0.25 if desk_x - dw / 2 - 0.25 > -W / 2 + 0.5 else desk_x + 0.2
    sc.add_cylinder([bin_x, desk_y + 0.1, 0.0], 0.15, 0.35, bin_side, tx.metal(rng, 64, 64, base=(30, 30, 30)), name="bin")
    for k in range(int(rng.integers(1, 4))):
        s = rng.uniform(0.3, 0.55)
        hz = rng.uniform(0.25, 0.5)
        x = rng.uniform(0.4, W / 2 - 0.4) * (1 if k % 2 else -1)
        y = -D / 2 + s / 2 + 0.05 + rng.uniform(0.0, 1.5)
        faces = [it.cardboard(rng, *tex_dims(((s, s, s, s, s, s)[j], hz if j < 4 else s), 0.002), texel=0.002) for j in range(6)]
        sc.add_box([x, y, hz / 2], [s / 2, s / 2, hz / 2], faces, yaw=rng.uniform(-0.4, 0.4), name="floor_box")
    # chair pushed to the side of the desk front
    cx = desk_x + rng.choice([-1, 1]) * rng.uniform(0.45, 0.6) * dw
    cy = desk_y - dd / 2 - 0.35
    fabric = tx.carpet(rng, 128, 128)
    cleg = tx.metal(rng, 64, 16, base=(40, 40, 40))
    sc.add_box([cx, cy, 0.47], [0.23, 0.23, 0.03], [fabric] * 6, name="chair_seat")
    sc.add_box([cx, cy - 0.21, 0.78], [0.22, 0.025, 0.25], [fabric] * 6, name="chair_back")
    sc.add_box([cx, cy, 0.22], [0.025, 0.025, 0.22], [cleg] * 6, name="chair_post")
    sc.add_box([cx, cy, 0.02], [0.28, 0.28, 0.02], [cleg] * 6, name="chair_base")
    sc.bake_lighting()
    return sc
