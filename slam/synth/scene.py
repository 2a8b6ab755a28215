"""Scene model of the synthetic renderer: textures with mip pyramids, textured faces, and the
three primitives the ray caster intersects analytically (oriented boxes, vertical cylinders,
planar rectangles), gathered in a :class:`Scene` with static lights baked into the textures.

Conventions: world frame z up, metres; textures are (h, w, 3) uint8 BGR; vectors (3,) float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from slam.synth.textures import modulate

__all__ = ["Texture", "Face", "Box", "Cylinder", "Quad", "Scene"]


@dataclass
class Texture:
    """A texture image with a mip pyramid, built on first use (``prepare``).

    image: (h, w, 3) uint8 BGR, level 0. The pyramid: each level halves the size with
    INTER_AREA, down to a few texels. For sampling, all levels are packed into one padded atlas
    image (``atlas``) so that a trilinear lookup is two bilinear ``cv2.remap`` calls; ``table``
    (L, 4) float32 holds, per level, (scale_x, offset_x, scale_y, offset_y) mapping level-0
    continuous texel coordinates (texel k spans [k, k+1)) to atlas pixel coordinates. Padding
    replicates the border, or wraps horizontally for cylinder textures (``wrap``).
    """

    image: np.ndarray
    wrap: bool = False
    atlas: Optional[np.ndarray] = None
    table: Optional[np.ndarray] = None
    columns: tuple = ()

    _PAD = 2
    _MIN_SIZE = 4

    @classmethod
    def from_image(cls, img: np.ndarray, wrap: bool = False) -> "Texture":
        img = np.ascontiguousarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"texture must be (h, w, 3) uint8 BGR, got {img.shape} {img.dtype}")
        if max(img.shape[:2]) > 8192:
            raise ValueError(f"texture too large ({img.shape[1]}x{img.shape[0]}); use at most 8192 texels per side")
        return cls(img, wrap)

    def prepare(self) -> "Texture":
        """Build the pyramid and the atlas if not done yet (idempotent; ``atlas`` is set last,
        so a texture whose atlas is set is complete)."""
        if self.atlas is None:
            levels = [self.image]
            while min(levels[-1].shape[:2]) > self._MIN_SIZE:
                h, w = levels[-1].shape[:2]
                levels.append(cv2.resize(levels[-1], ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA))
            self._build_atlas(levels)
        return self

    def _build_atlas(self, levels: list) -> None:
        p = self._PAD
        h0, w0 = self.image.shape[:2]
        w1 = levels[1].shape[1] if len(levels) > 1 else 0
        col_h = sum(lv.shape[0] + 2 * p for lv in levels[1:])
        atlas = np.zeros((max(h0 + 2 * p, col_h), w0 + 2 * p + (w1 + 2 * p if w1 else 0), 3), np.uint8)
        table = np.zeros((len(levels), 4), np.float32)
        y = 0
        for L, lv in enumerate(levels):
            hL, wL = lv.shape[:2]
            border = cv2.BORDER_WRAP if self.wrap else cv2.BORDER_REPLICATE
            padded = cv2.copyMakeBorder(lv, p, p, p, p, border)
            if self.wrap:  # wrap horizontally only
                padded[:p] = padded[p:p + 1]
                padded[-p:] = padded[-p - 1:-p]
            if L == 0:
                x0, y0 = 0, 0
            else:
                x0, y0 = w0 + 2 * p, y
                y += hL + 2 * p
            atlas[y0:y0 + hL + 2 * p, x0:x0 + wL + 2 * p] = padded
            # level-L continuous coordinate = s * wL / w0; atlas remap coordinate = that + pad - 0.5
            table[L] = (wL / w0, x0 + p - 0.5, hL / h0, y0 + p - 0.5)
        self.table = table
        self.columns = tuple(np.ascontiguousarray(table[:, k]) for k in range(4))
        self.atlas = atlas


@dataclass
class Face:
    """A textured surface patch.

    kind: "plane" (rectangle) or "cylinder" (side of a vertical cylinder).
    plane: ``origin`` (3,) world position of texture corner (0, 0); ``ea``/``eb`` (3,) unit
        vectors along texture columns (right) and rows (down); ``size`` (su, sv) metres;
        ``normal`` (3,) unit normal of the visible side.
    cylinder: ``origin`` = centre of the base circle, ``ea``/``eb`` = world x/y (angle reference),
        ``normal`` = axis (world z), ``size`` = (2*pi*radius, height), ``radius`` metres.
    texture: index into ``Scene.textures``; albedo: brightness factor; two_sided: shade both sides.
    """

    kind: str
    texture: int
    origin: np.ndarray
    ea: np.ndarray
    eb: np.ndarray
    size: tuple
    normal: np.ndarray
    radius: float = 0.0
    albedo: float = 1.0
    two_sided: bool = False
    name: str = ""
    baked: bool = False  # lighting baked into its texture (Scene.bake_lighting)


@dataclass
class Box:
    """Oriented box. ``rotation`` is world_from_box (3, 3); ``half`` (3,) half extents (m);
    ``faces`` are global face ids in the order -x, +x, -y, +y, -z, +z; ``inside`` marks the room
    (seen from inside)."""

    center: np.ndarray
    rotation: np.ndarray
    half: np.ndarray
    faces: list
    inside: bool = False
    name: str = ""

    def corners(self) -> np.ndarray:
        s = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        return (s * self.half) @ self.rotation.T + self.center

    def contains(self, p: np.ndarray, margin: float = 0.0) -> bool:
        q = self.rotation.T @ (np.asarray(p, float) - self.center)
        return bool(np.all(np.abs(q) < self.half + margin))


@dataclass
class Cylinder:
    """Vertical cylinder standing on ``base`` (3,) with ``radius`` and ``height`` (m);
    ``faces`` = [side, top, bottom] global face ids."""

    base: np.ndarray
    radius: float
    height: float
    faces: list
    name: str = ""

    def corners(self) -> np.ndarray:
        r, h = self.radius, self.height
        return np.array([[sx * r, sy * r, sz * h] for sx in (-1, 1) for sy in (-1, 1) for sz in (0, 1)]) + self.base

    def contains(self, p: np.ndarray, margin: float = 0.0) -> bool:
        q = np.asarray(p, float) - self.base
        return bool(q[0] ** 2 + q[1] ** 2 < (self.radius + margin) ** 2 and -margin < q[2] < self.height + margin)


@dataclass
class Quad:
    """A planar textured rectangle (face id ``face``, a "plane" Face)."""

    face: int
    name: str = ""

    def corners(self, scene: "Scene") -> np.ndarray:
        f = scene.faces[self.face]
        su, sv = f.size
        return np.array([f.origin, f.origin + su * f.ea, f.origin + sv * f.eb, f.origin + su * f.ea + sv * f.eb])


@dataclass
class Scene:
    """Textured geometry, lights and named anchor points.

    textures: list[Texture]; faces: list[Face]; primitives: list of Box | Cylinder | Quad.
    lights: list of (position (3,) world m, intensity); ambient: shade added everywhere; both
        are baked into the textures by ``bake_lighting()`` (scene builders such as ``make_office`` do this).
    anchors: named world points (3,), e.g. "desk_center" (centre of the desk top),
        "room_min"/"room_max" (room corners).
    """

    textures: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    primitives: list = field(default_factory=list)
    lights: list = field(default_factory=list)
    ambient: float = 0.45
    light_falloff: float = 2.5  # metres: distance at which a light's irradiance halves
    # (lights/ambient act through bake_lighting(); the renderer itself shows textures as they are)
    anchors: dict = field(default_factory=dict)
    seed: Optional[int] = None

    # ---------------------------------------------------------------- construction helpers
    def add_texture(self, img: np.ndarray, wrap: bool = False) -> int:
        """Add a (h, w, 3) uint8 BGR texture (``wrap``: horizontally periodic, for cylinder
        sides); returns its id."""
        self.textures.append(Texture.from_image(img, wrap=wrap))
        return len(self.textures) - 1

    def _add_face(self, face: Face) -> int:
        self.faces.append(face)
        return len(self.faces) - 1

    def add_quad(self, origin, ea, eb, size, texture: Union[int, np.ndarray], name: str = "",
                 albedo: float = 1.0) -> int:
        """Add a two-sided textured rectangle: corner ``origin``, texture right ``ea`` and down
        ``eb`` directions (made orthonormal), ``size`` (su, sv) metres. Returns the face id."""
        if not isinstance(texture, (int, np.integer)):
            texture = self.add_texture(texture)
        ea = np.asarray(ea, float)
        ea = ea / np.linalg.norm(ea)
        eb = np.asarray(eb, float)
        eb = eb - ea * (eb @ ea)
        eb = eb / np.linalg.norm(eb)
        n = np.cross(eb, ea)  # visible side: ea right, eb down  => normal towards the viewer
        fid = self._add_face(Face("plane", int(texture), np.asarray(origin, float), ea, eb,
                                  (float(size[0]), float(size[1])), n, albedo=albedo, two_sided=True, name=name))
        self.primitives.append(Quad(fid, name))
        return fid

    def add_box(self, center, half, textures: Sequence[Union[int, np.ndarray]], yaw: float = 0.0,
                inside: bool = False, name: str = "", albedo: float = 1.0) -> Box:
        """Add a box rotated by ``yaw`` (rad) about world z. ``textures``: 6 textures (ids or
        images) for faces -x, +x, -y, +y, -z, +z (box frame)."""
        if len(textures) != 6:
            raise ValueError(f"add_box needs 6 textures (-x, +x, -y, +y, -z, +z), got {len(textures)}")
        c, s = math.cos(yaw), math.sin(yaw)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        half = np.asarray(half, float)
        center = np.asarray(center, float)
        ids = []
        for k in range(6):
            axis, sign = k // 2, (1.0 if k % 2 else -1.0)
            nv = np.zeros(3)
            nv[axis] = -sign if inside else sign  # normal of the visible side
            fc = np.zeros(3)
            fc[axis] = sign * half[axis]
            if axis < 2:  # vertical face: texture up = +z, right = cross(forward, up)
                ea = np.cross(-nv, [0.0, 0.0, 1.0])
                eb = np.array([0.0, 0.0, -1.0])
            else:
                ea = np.array([1.0, 0.0, 0.0])
                eb = np.array([0.0, -1.0, 0.0]) if nv[2] > 0 else np.array([0.0, 1.0, 0.0])
            su = 2 * abs(half @ np.abs(ea))
            sv = 2 * abs(half @ np.abs(eb))
            origin = fc - ea * su / 2 - eb * sv / 2
            tex = textures[k]
            if not isinstance(tex, (int, np.integer)):
                tex = self.add_texture(tex)
            ids.append(self._add_face(Face("plane", int(tex), R @ origin + center, R @ ea, R @ eb, (su, sv), R @ nv,
                                           albedo=albedo, name=f"{name}[{k}]")))
        box = Box(center, R, half, ids, inside, name)
        self.primitives.append(box)
        return box

    def add_cylinder(self, base, radius: float, height: float, side: Union[int, np.ndarray],
                     top: Union[int, np.ndarray], name: str = "", albedo: float = 1.0) -> Cylinder:
        """Add a vertical cylinder with a wrap-around ``side`` texture and a ``top`` texture
        (also used for the bottom)."""
        base = np.asarray(base, float)
        if not isinstance(side, (int, np.integer)):
            side = self.add_texture(side, wrap=True)
        if not isinstance(top, (int, np.integer)):
            top = self.add_texture(top)
        ex, ey, ez = np.eye(3)
        f_side = self._add_face(Face("cylinder", int(side), base, ex, ey, (2 * math.pi * radius, height), ez,
                                     radius=radius, albedo=albedo, name=f"{name}[side]"))
        f_top = self._add_face(Face("plane", int(top), base + [-radius, radius, height], ex, -ey, (2 * radius, 2 * radius),
                                    ez, albedo=albedo, name=f"{name}[top]"))
        f_bot = self._add_face(Face("plane", int(top), base + [-radius, -radius, 0.0], ex, ey, (2 * radius, 2 * radius),
                                    -ez, albedo=albedo, name=f"{name}[bottom]"))
        cyl = Cylinder(base, float(radius), float(height), [f_side, f_top, f_bot], name)
        self.primitives.append(cyl)
        return cyl

    def bake_lighting(self) -> None:
        """Bake Lambertian lighting from ``lights`` + ``ambient`` (and each face's albedo) into
        per-face copies of the textures (light maps at 1/8 texture resolution). Lights are
        static, so this is exact for a Lambertian world and makes rendering lighting-free.
        Idempotent: faces already baked are skipped."""
        for fi, face in enumerate(self.faces):
            if face.baked:
                continue
            tex = self.textures[face.texture].image
            h0, w0 = tex.shape[:2]
            gh, gw = max(2, (h0 + 7) // 8), max(2, (w0 + 7) // 8)
            su, sv = face.size
            u = (np.arange(gw) + 0.5) / gw * su
            v = (np.arange(gh) + 0.5) / gh * sv
            U, V = np.meshgrid(u, v)
            if face.kind == "plane":
                P = face.origin + U[..., None] * face.ea + V[..., None] * face.eb
                N = np.broadcast_to(face.normal, P.shape)
            else:
                ang = U / face.radius - math.pi
                N = np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], -1)
                P = face.origin + face.radius * N + (sv - V)[..., None] * np.array([0.0, 0.0, 1.0])
            shade = np.full(U.shape, self.ambient)
            for lpos, power in self.lights:
                L = np.asarray(lpos, float) - P
                d2 = (L * L).sum(-1)
                ndl = (N * L).sum(-1) / np.sqrt(d2)
                if face.two_sided:
                    ndl = np.abs(ndl)
                shade += power * np.maximum(ndl, 0.0) / (1.0 + d2 / self.light_falloff ** 2)
            shade = cv2.resize((shade * face.albedo).astype(np.float32), (w0, h0), interpolation=cv2.INTER_LINEAR)
            lit = modulate(tex, shade)
            self.textures.append(Texture.from_image(lit, wrap=face.kind == "cylinder"))
            face.texture = len(self.textures) - 1
            face.baked = True
        used = sorted({f.texture for f in self.faces})
        remap = {old: new for new, old in enumerate(used)}
        self.textures = [self.textures[i] for i in used]
        for face in self.faces:
            face.texture = remap[face.texture]

    def prepare(self) -> "Scene":
        """Build every texture's mip pyramid / atlas now (rendering does it lazily otherwise)."""
        for tex in self.textures:
            tex.prepare()
        return self

    def solid_at(self, p: np.ndarray, margin: float = 0.0) -> Optional[str]:
        """Name of the solid (box or cylinder, not the room) containing world point ``p``
        (with ``margin`` metres), or None; also reports points outside the room."""
        for prim in self.primitives:
            if isinstance(prim, Box) and prim.inside:
                if not prim.contains(p, -margin):
                    return "outside the room"
            elif isinstance(prim, (Box, Cylinder)) and prim.contains(p, margin):
                return prim.name or type(prim).__name__
        return None
