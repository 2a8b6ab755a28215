"""Synthetic RGB-D sequences with exact ground truth (TUM format).

A small, exact ray caster renders procedural office scenes (a room with textured walls, floor
and ceiling; a desk with boxes, books, a monitor, a keyboard, mugs; shelves and a cabinet)
through the same camera model as a real sequence: a pinhole camera with OpenCV 5-coefficient
distortion ``(k1, k2, p1, p2, k3)``. For every DISTORTED pixel the ray is built from its
UNDISTORTED normalised coordinate (computed once per camera), so the image carries the real
lens distortion and ``cv2.projectPoints`` of a 3D point with the ground-truth pose lands on the
pixel where the renderer drew it. Depth is exact: z in the camera frame (TUM convention, not
the ray length), written as 16-bit PNG with depth factor 5000 (5000 = 1 m).

Scenes are built from three primitives, intersected analytically per pixel: oriented boxes
(the room is an inside-out box), vertical cylinders and planar rectangles ("quads"). Textures
are sampled trilinearly from mip pyramids (level chosen per pixel from the footprint of the
pixel on the surface) to avoid aliasing; Lambertian lighting from point lights is baked into
per-face light maps when the scene is built, so rendering is a pure texture lookup.

Optional realism (per manifest): sensor noise, motion blur (spatially varying, along the true
optical flow over the exposure), slow auto-exposure changes, vignetting, optics blur, depth
noise and depth holes (edges, grazing angles, random blobs, range limits). Everything is
deterministic given the seed.

Conventions: world frame z up (metres); camera frame OpenCV (x right, y down, z forward);
poses are (4, 4) float64 ``dst_from_src``; images are (H, W, 3) uint8 BGR; depth maps are
(H, W) float32 metres with 0 = invalid.

Public API
----------
- ``PROFILES``: embedded manifests by name ("default", "xyz", "desk", "fast"); the files
  ``sequences/synthetic/<name>.yaml`` hold the same content.
- ``render_sequence(name_or_manifest, out_dir, n_frames=None, seed=None, progress=False)``
- ``ensure_sequence(name, root, n_frames=None)``: cached rendering into ``root/synthetic/name``;
  ``read_camera_manifest(folder)`` -> PinholeCamera of a rendered sequence.
- ``render_view(scene, camera, cam_from_world)`` -> (bgr, depth); ``Renderer(camera).render``
  also gives face ids and incidence angles.
- ``make_scene(seed)`` -> ``Scene``; ``sample_pair(seed, ...)`` -> training pair dict;
  ``warp_points(...)``: exact correspondences from depth and poses.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np
import yaml

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera
from slam.io import synthetic_textures as tx

RENDERER_VERSION = "1.0"
DEPTH_FACTOR = 5000.0  # TUM: depth PNG value / 5000 = metres
TIMESTAMP_BASE = 1700000000.0  # seconds; frame i has timestamp BASE + i / fps

#: TUM Freiburg-1 camera (the fr1_xyz calibration): 640x480, OpenCV 5-coefficient distortion.
FR1_CAMERA = {"width": 640, "height": 480, "fx": 517.3, "fy": 516.5, "cx": 318.6, "cy": 255.3,
              "dist": [0.2624, -0.9531, -0.0054, 0.0026, 1.1633]}

_NEAR = 0.02  # metres: nearest valid hit along the optical axis


# ============================================================================ scene model
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
        are baked into the textures by ``bake_lighting()`` (make_scene does this).
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
            lit = tx.modulate(tex, shade)
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


# ============================================================================ renderer
@dataclass
class RenderOutput:
    """bgr: (H, W, 3) uint8 BGR (noise-free);
    depth: (H, W) float32 metres along the optical axis, 0 where nothing was hit;
    face: (H, W) int32 face id (-1 = nothing); cos_incidence: (H, W) float32 |cos| between the
    ray and the surface normal."""

    bgr: np.ndarray
    depth: np.ndarray
    face: np.ndarray
    cos_incidence: np.ndarray


def _camera_from_any(camera) -> PinholeCamera:
    if isinstance(camera, PinholeCamera):
        return camera
    if isinstance(camera, dict):
        return PinholeCamera.from_dict(camera)
    try:
        return PinholeCamera(width=camera.width, height=camera.height, fx=camera.fx, fy=camera.fy, cx=camera.cx, cy=camera.cy,
                             dist=tuple(getattr(camera, "dist", (0.0,) * 5)))
    except AttributeError as exc:
        raise TypeError(f"camera must be a PinholeCamera, a dict or have width/height/fx/fy/cx/cy/dist: {exc}") from None


def _cam_key(cam: PinholeCamera) -> tuple:
    return (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy, tuple(cam.dist))


class Renderer:
    """Ray caster for one camera. Precomputes, for every distorted pixel (x, y), the ray
    ``(xn, yn, 1)`` in the camera frame where (xn, yn) is its undistorted normalised coordinate;
    a hit at ray parameter t is at camera-frame point t * (xn, yn, 1), so t is the depth z."""

    def __init__(self, camera) -> None:
        self.camera = _camera_from_any(camera)
        cam = self.camera
        H, W = cam.height, cam.width
        ys, xs = np.mgrid[0:H, 0:W]
        uv = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        und = cam.undistort_points(uv) if cam.has_distortion else uv
        self.xn = ((und[:, 0] - cam.cx) / cam.fx).reshape(H, W).astype(np.float32)
        self.yn = ((und[:, 1] - cam.cy) / cam.fy).reshape(H, W).astype(np.float32)
        self.rnorm = np.sqrt(self.xn ** 2 + self.yn ** 2 + 1.0).astype(np.float32)
        # normalised-plane extent of the image, to clip projected bounding boxes
        pad = 0.02
        self.nbounds = (float(self.xn.min()) - pad, float(self.xn.max()) + pad,
                        float(self.yn.min()) - pad, float(self.yn.max()) + pad)
        self.f_mean = 0.5 * (cam.fx + cam.fy)
        self._edge_s = np.linspace(0.0, 1.0, 9)
        rr = ((xs - cam.cx) / (0.5 * W)) ** 2 + ((ys - cam.cy) / (0.5 * W)) ** 2
        self.radius2 = (rr / rr.max()).astype(np.float32)  # 0 at the principal point, 1 in the far corner

    # ------------------------------------------------------------------ helpers
    def _pixel_bbox(self, pts_cam: np.ndarray) -> Optional[tuple]:
        """Conservative pixel bbox (r0, r1, c0, c1) of the projection of the convex hull of
        camera-frame points (K, 3); None if entirely behind the camera or outside the image."""
        z = pts_cam[:, 2]
        H, W = self.camera.height, self.camera.width
        if np.all(z <= _NEAR):
            return None
        if np.any(z <= _NEAR):
            # clip the convex hull to z >= near: keep the corners in front and add the points
            # where segments between corners cross the near plane (all pairs: conservative)
            front, back = pts_cam[z > _NEAR], pts_cam[z <= _NEAR]
            zf, zb = front[:, None, 2], back[None, :, 2]
            w = (zf - _NEAR) / (zf - zb)  # in [0, 1): the crossing of z = near
            cross = front[:, None, :] + w[..., None] * (back[None, :, :] - front[:, None, :])
            pts_cam = np.concatenate([front, cross.reshape(-1, 3)])
            z = pts_cam[:, 2]
        x, y = pts_cam[:, 0] / z, pts_cam[:, 1] / z
        x0, x1, y0, y1 = self.nbounds
        bx0, bx1 = max(x.min(), x0), min(x.max(), x1)
        by0, by1 = max(y.min(), y0), min(y.max(), y1)
        if bx0 >= bx1 or by0 >= by1:
            return None
        if not self.camera.has_distortion:
            px = np.array([bx0, bx1]) * self.camera.fx + self.camera.cx
            py = np.array([by0, by1]) * self.camera.fy + self.camera.cy
        else:  # distortion maps the rectangle's boundary to the boundary of its image
            s = self._edge_s
            bx = np.concatenate([bx0 + (bx1 - bx0) * s, np.full(s.size, bx1), bx0 + (bx1 - bx0) * s, np.full(s.size, bx0)])
            by = np.concatenate([np.full(s.size, by0), by0 + (by1 - by0) * s, np.full(s.size, by1), by0 + (by1 - by0) * s])
            k1, k2, p1, p2, k3 = self.camera.dist
            r2 = bx * bx + by * by
            rad = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
            px = (bx * rad + 2 * p1 * bx * by + p2 * (r2 + 2 * bx * bx)) * self.camera.fx + self.camera.cx
            py = (by * rad + p1 * (r2 + 2 * by * by) + 2 * p2 * bx * by) * self.camera.fy + self.camera.cy
        c0 = max(0, int(math.floor(px.min())) - 2)
        c1 = min(W, int(math.ceil(px.max())) + 3)
        r0 = max(0, int(math.floor(py.min())) - 2)
        r1 = min(H, int(math.ceil(py.max())) + 3)
        if c0 >= c1 or r0 >= r1:
            return None
        return (r0, r1, c0, c1)

    # ------------------------------------------------------------------ main entry
    def render(self, scene: Scene, cam_from_world: np.ndarray) -> RenderOutput:
        """Render ``scene`` seen from ``cam_from_world`` (4, 4); see :class:`RenderOutput`."""
        cam_from_world = np.asarray(cam_from_world, np.float64)
        if cam_from_world.shape != (4, 4):
            raise ValueError(f"cam_from_world must be (4, 4), got {cam_from_world.shape}")
        Rcw = cam_from_world[:3, :3]
        Rwc = Rcw.T
        c = -Rwc @ cam_from_world[:3, 3]  # camera centre in the world
        H, W = self.camera.height, self.camera.width
        xn, yn = self.xn, self.yn
        f32 = np.float32
        dx = (f32(Rwc[0, 0]) * xn + f32(Rwc[0, 1]) * yn + f32(Rwc[0, 2]))
        dy = (f32(Rwc[1, 0]) * xn + f32(Rwc[1, 1]) * yn + f32(Rwc[1, 2]))
        dz = (f32(Rwc[2, 0]) * xn + f32(Rwc[2, 1]) * yn + f32(Rwc[2, 2]))
        zbuf = np.full((H, W), np.inf, np.float32)
        fbuf = np.full((H, W), -1, np.int32)

        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for prim in scene.primitives:
                if isinstance(prim, Box) and prim.inside:
                    self._hit_box(prim, c, dx, dy, dz, zbuf, fbuf, (0, H, 0, W))
                    continue
                corners = prim.corners(scene) if isinstance(prim, Quad) else prim.corners()
                bb = self._pixel_bbox((corners - c) @ Rcw.T)
                if bb is None:
                    continue
                if isinstance(prim, Box):
                    self._hit_box(prim, c, dx, dy, dz, zbuf, fbuf, bb)
                elif isinstance(prim, Cylinder):
                    self._hit_cylinder(prim, c, dx, dy, dz, zbuf, fbuf, bb)
                else:
                    self._hit_quad(scene.faces[prim.face], prim.face, c, dx, dy, dz, zbuf, fbuf, bb)
            return self._shade(scene, c, dx, dy, dz, zbuf, fbuf)

    # ------------------------------------------------------------------ intersections
    @staticmethod
    def _update(zbuf, fbuf, bb, t, fid, hit) -> None:
        r0, r1, c0, c1 = bb
        zb = zbuf[r0:r1, c0:c1]
        m = hit & (t < zb)
        np.copyto(zb, t, where=m)
        np.copyto(fbuf[r0:r1, c0:c1], fid, where=m, casting="unsafe")

    def _hit_box(self, box: Box, c, dx, dy, dz, zbuf, fbuf, bb) -> None:
        r0, r1, c0, c1 = bb
        sx, sy, sz = dx[r0:r1, c0:c1], dy[r0:r1, c0:c1], dz[r0:r1, c0:c1]
        R = box.rotation
        o = R.T @ (c - box.center)
        axis_aligned = bool(np.allclose(R, np.eye(3)))
        faces = np.asarray(box.faces, np.int32)
        best_t = best_f = tfar = None
        for k in range(3):
            d = (sx, sy, sz)[k] if axis_aligned else \
                (np.float32(R[0, k]) * sx + np.float32(R[1, k]) * sy + np.float32(R[2, k]) * sz)
            pos = d > 0
            if box.inside:  # exit face: per axis the plane the ray heads to; keep the nearest
                t = np.where(pos, np.float32(box.half[k] - o[k]), np.float32(-box.half[k] - o[k])) / d
                f = np.where(pos, faces[2 * k + 1], faces[2 * k])
                better = None if best_t is None else t < best_t
            else:  # slabs; entry face = the axis with the largest near distance
                inv = np.float32(1.0) / d
                t1 = np.float32(-box.half[k] - o[k]) * inv
                t2 = np.float32(box.half[k] - o[k]) * inv
                t = np.minimum(t1, t2)
                tf = np.maximum(t1, t2)
                tfar = tf if tfar is None else np.minimum(tfar, tf)
                f = np.where(pos, faces[2 * k], faces[2 * k + 1])
                better = None if best_t is None else t > best_t
            if better is None:
                best_t, best_f = t, f
            else:
                best_t = np.where(better, t, best_t)
                best_f = np.where(better, f, best_f)
        if box.inside:
            hit = np.isfinite(best_t) & (best_t > _NEAR)
        else:
            hit = (best_t <= tfar) & (best_t > _NEAR)
        self._update(zbuf, fbuf, bb, best_t, best_f, hit)

    def _hit_cylinder(self, cyl: Cylinder, c, dx, dy, dz, zbuf, fbuf, bb) -> None:
        r0, r1, c0, c1 = bb
        sx, sy, sz = dx[r0:r1, c0:c1], dy[r0:r1, c0:c1], dz[r0:r1, c0:c1]
        o = (c - cyl.base).astype(np.float32)
        r, h = np.float32(cyl.radius), np.float32(cyl.height)
        a = sx * sx + sy * sy
        b = 2.0 * (o[0] * sx + o[1] * sy)
        cc = o[0] * o[0] + o[1] * o[1] - r * r
        disc = b * b - 4.0 * a * cc
        ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
        zs = o[2] + ts * sz
        hit_s = (disc >= 0) & (ts > _NEAR) & (zs >= 0) & (zs <= h) & (a > 1e-12)
        t = np.where(hit_s, ts, np.float32(np.inf))
        fid = np.full(sx.shape, cyl.faces[0], np.int32)
        for cap_z, face in ((h, cyl.faces[1]), (np.float32(0.0), cyl.faces[2])):
            if (cap_z == h and o[2] > h) or (cap_z == 0 and o[2] < 0):
                tc = (cap_z - o[2]) / sz
                px, py = o[0] + tc * sx, o[1] + tc * sy
                hc = (tc > _NEAR) & (px * px + py * py <= r * r) & (tc < t)
                t = np.where(hc, tc, t)
                fid = np.where(hc, face, fid)
        self._update(zbuf, fbuf, bb, t, fid, np.isfinite(t))

    def _hit_quad(self, face: Face, fid: int, c, dx, dy, dz, zbuf, fbuf, bb) -> None:
        r0, r1, c0, c1 = bb
        sx, sy, sz = dx[r0:r1, c0:c1], dy[r0:r1, c0:c1], dz[r0:r1, c0:c1]
        n = face.normal.astype(np.float32)
        denom = n[0] * sx + n[1] * sy + n[2] * sz
        t = np.float32(n @ (face.origin - c)) / denom
        oc = (c - face.origin).astype(np.float32)
        px, py, pz = oc[0] + t * sx, oc[1] + t * sy, oc[2] + t * sz
        ea, eb = face.ea.astype(np.float32), face.eb.astype(np.float32)
        u = ea[0] * px + ea[1] * py + ea[2] * pz
        v = eb[0] * px + eb[1] * py + eb[2] * pz
        hit = (t > _NEAR) & (u >= 0) & (u <= face.size[0]) & (v >= 0) & (v <= face.size[1])
        self._update(zbuf, fbuf, bb, t, np.int32(fid), hit)

    # ------------------------------------------------------------------ shading
    def _shade(self, scene: Scene, c, dx, dy, dz, zbuf, fbuf) -> RenderOutput:
        """Texture lookup for every pixel, face by face. Pixels are sorted by face id once; all
        per-pixel quantities are gathered in that order so that each face works on contiguous
        slices, and the colours are put back in image order with one gather at the end."""
        H, W = zbuf.shape
        n_pix = H * W
        fflat = fbuf.ravel()
        depth = np.where(fflat >= 0, zbuf.ravel(), np.float32(0.0)).astype(np.float32)
        key = (fflat + 1).astype(np.int16 if len(scene.faces) < 32000 else np.int32)
        order = np.argsort(key, kind="stable")
        counts = np.bincount(key, minlength=len(scene.faces) + 1)
        starts = np.concatenate([[0], np.cumsum(counts)])
        zs = depth.take(order)
        rxs, rys, rzs = dx.ravel().take(order), dy.ravel().take(order), dz.ravel().take(order)
        rns = self.rnorm.ravel().take(order)
        col_s = np.zeros((n_pix, 3), np.uint8)
        cos_s = np.zeros(n_pix, np.float32)
        for fi in np.nonzero(counts[1:])[0]:
            a, b = starts[fi + 1], starts[fi + 2]
            face = scene.faces[fi]
            z, rx, ry, rz = zs[a:b], rxs[a:b], rys[a:b], rzs[a:b]
            oc = c - face.origin  # camera centre relative to the face origin (float64)
            if face.kind == "plane":
                ea, eb, nn = face.ea, face.eb, face.normal
                u = np.float32(ea[0]) * rx + np.float32(ea[1]) * ry + np.float32(ea[2]) * rz
                u *= z
                u += np.float32(oc @ ea)
                v = np.float32(eb[0]) * rx + np.float32(eb[1]) * ry + np.float32(eb[2]) * rz
                v *= z
                v += np.float32(oc @ eb)
                ndotd = np.float32(nn[0]) * rx + np.float32(nn[1]) * ry + np.float32(nn[2]) * rz
            else:  # cylinder side
                qx = np.float32(oc[0]) + z * rx
                qy = np.float32(oc[1]) + z * ry
                ang = np.arctan2(qy, qx)
                u = (ang + np.float32(math.pi)) * np.float32(face.radius)
                v = np.float32(face.size[1] - oc[2]) - z * rz
                ndotd = (qx * rx + qy * ry) * np.float32(1.0 / face.radius)
            cos_i = np.abs(ndotd)
            cos_i /= rns[a:b]
            np.minimum(cos_i, np.float32(1.0), out=cos_i)
            cos_s[a:b] = cos_i
            tex = scene.textures[face.texture]
            if tex.atlas is None:
                tex.prepare()
            h0, w0 = tex.image.shape[:2]
            u *= np.float32(w0 / face.size[0])
            v *= np.float32(h0 / face.size[1])
            texel = 0.5 * (face.size[0] / w0 + face.size[1] / h0)
            # footprint of the pixel on the surface in texels (geometric mean of its two axes):
            # z / f / sqrt(cos) / texel; lod = log2 of it, clamped to the pyramid
            np.maximum(cos_i, np.float32(0.05), out=cos_i)
            foot = z / np.sqrt(cos_i)
            foot *= np.float32(1.0 / (self.f_mean * texel))
            np.maximum(foot, np.float32(1.0), out=foot)
            lod = np.log2(foot)
            np.minimum(lod, np.float32(tex.table.shape[0] - 1), out=lod)
            col_s[a:b] = _sample_trilinear(tex, u, v, lod)
        inv = np.empty(n_pix, np.int64)
        inv[order] = np.arange(n_pix)
        void = np.dtype((np.void, 3))
        bgr = col_s.view(void).ravel().take(inv).view(np.uint8).reshape(H, W, 3)
        cos_out = cos_s.take(inv).reshape(H, W)
        return RenderOutput(bgr, depth.reshape(H, W), fbuf, cos_out)


_ROW = 1024  # remap maps are shaped (rows, _ROW): cv2.remap needs both sides < 32767


def _sample_trilinear(tex: Texture, s: np.ndarray, t: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 trilinear samples at level-0 continuous texel coords (s, t) (texel k spans
    [k, k+1)) and mip level ``lod`` (float, >= 0): bilinear in levels floor(lod) and
    floor(lod) + 1 of the atlas, blended by the fractional part."""
    n = s.shape[0]
    rows = (n + _ROW - 1) // _ROW
    pad = rows * _ROW - n
    if pad:
        s = np.concatenate([s, np.zeros(pad, np.float32)])
        t = np.concatenate([t, np.zeros(pad, np.float32)])
        lod = np.concatenate([lod, np.zeros(pad, np.float32)])
    shape = (rows, _ROW)
    nlev = tex.table.shape[0]
    L0 = lod.astype(np.int32)
    frac = (lod - L0).astype(np.float32)
    L1 = np.minimum(L0 + 1, nlev - 1)
    sx, ox, sy, oy = tex.columns
    res = []
    for L in (L0, L1):
        mx = s * sx.take(L)
        mx += ox.take(L)
        my = t * sy.take(L)
        my += oy.take(L)
        res.append(cv2.remap(tex.atlas, mx.reshape(shape), my.reshape(shape), cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE))
    fr = frac.reshape(shape)
    out = cv2.blendLinear(res[0], res[1], np.float32(1.0) - fr, fr)
    return out.reshape(-1, 3)[:n]


@lru_cache(maxsize=4)
def _renderer_for(key: tuple) -> Renderer:
    w, h, fx, fy, cx, cy, dist = key
    return Renderer(PinholeCamera(width=w, height=h, fx=fx, fy=fy, cx=cx, cy=cy, dist=dist))


def render_view(scene: Scene, camera, cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render a clean (noise-free) view.

    scene: a :class:`Scene`; camera: PinholeCamera (or dict with width/height/fx/fy/cx/cy/dist);
    cam_from_world: (4, 4) float64. Returns (bgr (H, W, 3) uint8, depth (H, W) float32 metres
    along the optical axis, 0 where nothing was hit).
    """
    cam = _camera_from_any(camera)
    out = _renderer_for(_cam_key(cam)).render(scene, cam_from_world)
    return out.bgr, out.depth


def _to_u8(img: np.ndarray) -> np.ndarray:
    """float image -> uint8 with rounding and saturation."""
    return cv2.convertScaleAbs(np.maximum(img, np.float32(0.0)))


# ============================================================================ scene builder
def _tex_dims(size_m: tuple, texel: float, max_px: int = 4096) -> tuple:
    w = int(min(max_px, max(4, round(size_m[0] / texel))))
    h = int(min(max_px, max(4, round(size_m[1] / texel))))
    return h, w


def _wall_texture(rng: np.random.Generator, width_m: float, height_m: float, texel: float, base,
                  density: float, window: bool = False, door: bool = False, whiteboard: bool = False) -> np.ndarray:
    """A painted wall with posters, photos, boards, notes, a clock, maybe a window and a door."""
    h, w = _tex_dims((width_m, height_m), texel)
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
        tx.paste(img, tx.door(rng, dh, dw, texel), x0, h - dh)
        occupied.append((x0, h - dh, x0 + dw, h))
    if window:
        ww, wh = int(rng.uniform(1.0, 1.6) * px), int(rng.uniform(0.9, 1.3) * px)
        pos = place(ww, wh, (1.4, 1.6))
        if pos:
            tx.paste(img, tx.window(rng, wh, ww, texel), *pos)
    if whiteboard:
        bw, bh = int(rng.uniform(1.2, 1.8) * px), int(rng.uniform(0.8, 1.0) * px)
        pos = place(bw, bh, (1.45, 1.65))
        if pos:
            tx.paste(img, tx.whiteboard(rng, bh, bw, texel), *pos)
    n_items = int(density * width_m * height_m)
    for _ in range(n_items):
        kind = rng.random()
        if kind < 0.35:
            iw = rng.uniform(0.3, 0.75)
            ih = iw * rng.uniform(1.2, 1.5)
            item = tx.poster(rng, int(ih * px), int(iw * px), texel)
        elif kind < 0.55:
            iw = rng.uniform(0.2, 0.5)
            ih = iw * rng.uniform(0.6, 1.4)
            item = tx.framed(tx.photo(rng, int(ih * px), int(iw * px)), rng, texel)
        elif kind < 0.65:
            iw, ih = rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.7)
            item = tx.pinboard(rng, int(ih * px), int(iw * px), texel)
        elif kind < 0.72:
            iw = rng.uniform(0.3, 0.45)
            ih = iw * 1.4
            item = tx.calendar(rng, int(ih * px), int(iw * px))
        elif kind < 0.77:
            iw = ih = rng.uniform(0.25, 0.4)
            item = tx.clock(rng, int(iw * px))
        elif kind < 0.92:
            iw, ih = 0.21, 0.297
            item = tx.paper(rng, int(ih * px), int(iw * px), texel)
        else:
            iw = ih = 0.076
            item = tx.sticky_note(rng, int(iw * px))
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


def make_scene(seed: int = 0) -> Scene:
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
        walls.append(_wall_texture(rng, wm, Hr, wall_texel, wall_base, dens, window=(k == 0),
                                   door=(k == 2), whiteboard=(k == 3)))
    fh, fw = _tex_dims((W, D), floor_texel)
    floor = tx.planks(rng, fh, fw, floor_texel) if rng.random() < 0.6 else tx.tiles(rng, fh, fw, floor_texel, 0.5)
    rug_w, rug_h = rng.uniform(2.0, 2.8), rng.uniform(1.6, 2.2)
    rug = tx.carpet(rng, int(rug_h / floor_texel), int(rug_w / floor_texel))
    # floor texture: column = x + W/2, row = D/2 - y; the rug reaches under the desk
    rx = desk_x + rng.uniform(-0.3, 0.3)
    ry = desk_y - rug_h / 2 + rng.uniform(0.0, 0.3)
    tx.paste(floor, rug, int((rx + W / 2 - rug_w / 2) / floor_texel), int((D / 2 - ry - rug_h / 2) / floor_texel))
    ch, cw = _tex_dims((W, D), ceil_texel)
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
    th, tw = _tex_dims((dw, dd), obj_texel)
    top = tx.desk_top(rng, th, tw, obj_texel, shadows)
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
            scr_h, scr_w = _tex_dims((mon_w, mh), 0.001)
            screen = tx.screen(rng, scr_h, scr_w)
            z0 = dh + 0.11
            sc.add_box([wx, wy, z0 + mh / 2], [mon_w / 2, 0.015, mh / 2], [plastic, plastic, screen, plastic, plastic, plastic],
                       name="monitor")
            sc.add_box([wx, wy + 0.04, dh + 0.06], [0.03, 0.015, 0.06], [plastic] * 6, name="monitor_neck")
            sc.add_box([wx, wy + 0.01, dh + 0.006], [0.11, 0.08, 0.006], [plastic] * 6, name="monitor_base")
        elif kind == "keyboard":
            kbh, kbw = _tex_dims((sx, sy), 0.001)
            kb = tx.keyboard(rng, kbh, kbw)
            side = tx.metal(rng, 16, 256, base=(35, 35, 38))
            sc.add_box([wx, wy, dh + 0.012], [sx / 2, sy / 2, 0.012], [side, side, side, side, side, kb], yaw=yaw,
                       name="keyboard")
        elif kind == "box":
            hz = rng.uniform(0.06, 0.3)
            faces = []
            printed = rng.random() < 0.5
            for k in range(6):
                sz = ((sy, hz), (sy, hz), (sx, hz), (sx, hz), (sx, sy), (sx, sy))[k]
                th_, tw_ = _tex_dims(sz, obj_texel)
                if printed:
                    t = tx.book_cover(rng, th_, tw_) if k != 4 else tx.cardboard(rng, th_, tw_, obj_texel, False)
                else:
                    t = tx.cardboard(rng, th_, tw_, obj_texel, k != 4)
                faces.append(t)
            sc.add_box([wx, wy, dh + hz / 2], [sx / 2, sy / 2, hz / 2], faces, yaw=yaw, name="box")
        elif kind == "books":
            z = dh
            for _ in range(int(rng.integers(1, 4))):
                bt = rng.uniform(0.02, 0.05)
                bsx, bsy = sx * rng.uniform(0.85, 1.0), sy * rng.uniform(0.85, 1.0)
                cover_h, cover_w = _tex_dims((bsx, bsy), obj_texel)
                cover = tx.book_cover(rng, cover_h, cover_w)
                ph, pw = _tex_dims((max(bsx, bsy), bt), obj_texel)
                pg = tx.pages(rng, ph, pw)
                spine = tx.book_cover(rng, ph, pw)
                sc.add_box([wx + rng.uniform(-0.01, 0.01), wy + rng.uniform(-0.01, 0.01), z + bt / 2], [bsx / 2, bsy / 2, bt / 2],
                           [pg, spine, pg, pg, cover, cover], yaw=yaw + rng.uniform(-0.15, 0.15), name="book")
                z += bt
        else:  # mug / can / bottle
            r = sx / 2
            hgt = rng.choice([rng.uniform(0.09, 0.11), rng.uniform(0.11, 0.13), rng.uniform(0.2, 0.26)])
            side_h, side_w = _tex_dims((2 * math.pi * r, hgt), 0.0008)
            side = tx.mug(rng, side_h, side_w)
            lid = tx.metal(rng, 64, 64)
            sc.add_cylinder([wx, wy, dh], r, hgt, side, lid, name="cylinder")

    # ---------------------------------------------------------------- under the desk
    tw_, td_, th_ = 0.2, 0.45, rng.uniform(0.4, 0.48)
    side_x = desk_x + rng.choice([-1, 1]) * (dw / 2 - 0.25)
    pc_front = tx.drawers(rng, *_tex_dims((tw_, th_), 0.001), texel=0.001)
    pc_side = tx.poster(rng, *_tex_dims((td_, th_), 0.001), texel=0.001) if rng.random() < 0.5 else \
        tx.cardboard(rng, *_tex_dims((td_, th_), 0.001), texel=0.001)
    pc_top = tx.metal(rng, 128, 128, base=(40, 40, 45))
    sc.add_box([side_x, desk_y - 0.05, th_ / 2], [tw_ / 2, td_ / 2, th_ / 2],
               [pc_side, pc_side, pc_front, pc_top, pc_top, pc_top], name="pc_tower")
    crate = [tx.cardboard(rng, *_tex_dims((0.4, 0.3), 0.0015), texel=0.0015) for _ in range(6)]
    sc.add_box([desk_x - 0.6 * (side_x - desk_x), desk_y + 0.05, 0.15], [0.2, 0.2, 0.15], crate,
               yaw=rng.uniform(-0.3, 0.3), name="crate")

    # ---------------------------------------------------------------- furniture on the floor
    # bookshelf against the -x wall, cabinet right of the desk, bin, floor boxes, a chair
    bs_w, bs_d, bs_h = rng.uniform(0.8, 1.2), 0.32, rng.uniform(1.6, 2.0)
    bs_y = rng.uniform(-0.5, D / 2 - bs_w / 2 - 0.3)
    spines = tx.book_spines(rng, *_tex_dims((bs_w, bs_h), 0.002)[::1], texel=0.002)
    side = tx.wood(rng, 256, 128, vertical=True)
    sc.add_box([-W / 2 + bs_d / 2 + 0.01, bs_y, bs_h / 2], [bs_d / 2, bs_w / 2, bs_h / 2],
               [side, spines, side, side, side, side], name="bookshelf")
    cab_w, cab_d, cab_h = rng.uniform(0.45, 0.6), 0.5, rng.uniform(0.6, 0.72)
    cab_x = min(W / 2 - cab_w / 2 - 0.05, desk_x + dw / 2 + cab_w / 2 + 0.1)
    front = tx.drawers(rng, *_tex_dims((cab_w, cab_h), 0.002), texel=0.002)
    cab_side = tx.metal(rng, 128, 128)
    cab_top = tx.cardboard(rng, 256, 256, 0.002) if rng.random() < 0.5 else tx.paper(rng, 256, 256, 0.002)
    sc.add_box([cab_x, D / 2 - cab_d / 2 - 0.02, cab_h / 2], [cab_w / 2, cab_d / 2, cab_h / 2],
               [cab_side, cab_side, front, cab_side, cab_side, cab_top], name="cabinet")
    bin_side = tx.mug(rng, *_tex_dims((2 * math.pi * 0.15, 0.35), 0.003))
    bin_x = desk_x - dw / 2 - 0.25 if desk_x - dw / 2 - 0.25 > -W / 2 + 0.5 else desk_x + 0.2
    sc.add_cylinder([bin_x, desk_y + 0.1, 0.0], 0.15, 0.35, bin_side, tx.metal(rng, 64, 64, base=(30, 30, 30)), name="bin")
    for k in range(int(rng.integers(1, 4))):
        s = rng.uniform(0.3, 0.55)
        hz = rng.uniform(0.25, 0.5)
        x = rng.uniform(0.4, W / 2 - 0.4) * (1 if k % 2 else -1)
        y = -D / 2 + s / 2 + 0.05 + rng.uniform(0.0, 1.5)
        faces = [tx.cardboard(rng, *_tex_dims(((s, s, s, s, s, s)[j], hz if j < 4 else s), 0.002), texel=0.002) for j in range(6)]
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


# ============================================================================ camera motion
def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """world_from_cam (4, 4) of an OpenCV camera at ``eye`` looking at ``target`` with world z up,
    rolled by ``roll`` radians about its optical axis."""
    eye = np.asarray(eye, float)
    fwd = np.asarray(target, float) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], 1)
    if roll:
        c, s = math.cos(roll), math.sin(roll)
        R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = eye
    return out


def _rot_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    v = np.array([rx, ry, rz], float)
    R, _ = cv2.Rodrigues(v)
    return R


class _SmoothNoise:
    """Band-limited smooth random signal (sum of sinusoids), unit RMS per dimension."""

    def __init__(self, rng: np.random.Generator, dims: int, f_lo: float, f_hi: float, n: int = 6) -> None:
        self.f = rng.uniform(f_lo, f_hi, (dims, n))
        self.ph = rng.uniform(0, 2 * np.pi, (dims, n))
        a = 1.0 / self.f
        self.a = a / np.sqrt((a ** 2).sum(1, keepdims=True) / 2.0)

    def __call__(self, t: float) -> np.ndarray:
        return (self.a * np.sin(2 * np.pi * self.f * t + self.ph)).sum(1)


@dataclass
class MotionBase:
    jitter_position: float = 0.002  # m: RMS of hand-held positional jitter (0.5-3 Hz)
    jitter_rotation_deg: float = 0.15  # deg: RMS of hand-held rotational jitter
    roll_deg: float = 1.5  # deg: amplitude of slow roll wander


@dataclass
class SweepMotion(MotionBase):
    """Slow hand-held sweep in front of the desk (TUM fr1_xyz/fr2_desk like), looking at it."""

    distance: float = 1.7  # m: horizontal distance of the camera from the desk centre (into the room)
    height: float = 0.6  # m: camera height above the desk top
    amplitude: list = field(default_factory=lambda: [0.25, 0.08, 0.06])  # m: sweep along desk x, y, z
    period: list = field(default_factory=lambda: [10.0, 13.0, 7.0])  # s: sweep periods per axis
    phase: list = field(default_factory=lambda: [0.0, 1.0, 0.5])  # rad: sweep phases per axis
    target_amplitude: list = field(default_factory=lambda: [0.12, 0.05, 0.04])  # m: look-at target wander
    target_period: list = field(default_factory=lambda: [12.0, 9.0, 8.0])  # s


@dataclass
class XYZMotion(MotionBase):
    """fr1_xyz-like: translation along the camera's x, then y, then z axis, then all together,
    orientation nearly fixed (looking at the desk)."""

    distance: float = 1.5  # m from the desk centre
    height: float = 0.55  # m above the desk top
    amplitude: list = field(default_factory=lambda: [0.15, 0.1, 0.12])  # m along camera right, down, forward
    period: float = 4.0  # s: oscillation period
    segment: float = 6.0  # s: duration of each single-axis segment


@dataclass
class OrbitMotion(MotionBase):
    """fr1_desk-like: arc around the desk looking at its centre."""

    radius: float = 1.5  # m: horizontal distance from the desk centre
    height: float = 0.6  # m above the desk top
    arc_deg: float = 100.0  # deg: total swing of the arc
    period: float = 16.0  # s: period of the back-and-forth swing
    height_amplitude: float = 0.1  # m
    target_amplitude: float = 0.06  # m: look-at target wander


@dataclass
class RotationMotion(MotionBase):
    """Fast rotation on the spot (fr1_rpy / fr1_360 like) in front of the desk."""

    distance: float = 1.8  # m from the desk centre
    height: float = 0.6  # m above the desk top
    yaw_amplitude_deg: float = 70.0
    yaw_period: float = 3.2  # s
    pitch_amplitude_deg: float = 15.0
    pitch_period: float = 4.4  # s
    roll_amplitude_deg: float = 10.0
    roll_period: float = 5.3  # s
    translation_amplitude: float = 0.03  # m


MOTION_TYPES = {"sweep": SweepMotion, "xyz": XYZMotion, "orbit": OrbitMotion, "rotation": RotationMotion}


@dataclass
class Realism:
    """Optional sensor effects. All defaults are "off"."""

    noise_sigma: float = 0.0  # read noise std (grey levels 0..255)
    noise_shot: float = 0.0  # shot noise: variance += noise_shot * intensity
    exposure_time: float = 0.0  # exposure as a fraction of the frame interval (motion blur); 0 = none
    exposure_amplitude: float = 0.0  # relative amplitude of slow auto-exposure gain changes
    exposure_period: float = 8.0  # s: typical period of the gain changes
    vignetting: float = 0.0  # relative brightness loss in the image corners
    blur_sigma: float = 0.0  # optics blur (Gaussian PSF) in pixels
    depth_noise: float = 0.0  # depth noise std = depth_noise * z^2 (metres)
    depth_edge_holes: bool = False  # invalidate depth at depth discontinuities (1-2 px)
    depth_grazing_cos: float = 0.0  # invalidate depth where |cos(incidence)| is below this
    depth_dropout: float = 0.0  # fraction of pixels lost in random blobs
    depth_min: float = 0.0  # m: nearer depth becomes 0 (invalid)
    depth_max: float = 0.0  # m: farther depth becomes 0; 0 = no limit


def _dataclass_from(cls, data, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k)
        try:
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise TypeError
                kwargs[k] = v
            elif isinstance(default, (list, tuple)):
                v = [float(x) for x in v]
                if len(v) != len(default):
                    raise TypeError
                kwargs[k] = v
            else:
                kwargs[k] = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{where}.{k} = {v!r} is invalid; expected {type(default).__name__}"
                                 f" like {default!r}") from None
    return cls(**kwargs)


class Trajectory:
    """Continuous camera trajectory world_from_cam(t) for a motion profile (t in seconds)."""

    def __init__(self, scene: Scene, motion: dict, seed: int, where: str = "motion") -> None:
        if not isinstance(motion, dict) or "type" not in motion:
            raise InputError(f"{where} must be a mapping with a 'type' key, one of {sorted(MOTION_TYPES)}")
        mtype = motion["type"]
        if mtype not in MOTION_TYPES:
            raise InputError(f"{where}.type = {mtype!r} is unknown; choose one of {sorted(MOTION_TYPES)}")
        self.kind = mtype
        self.p = _dataclass_from(MOTION_TYPES[mtype], {k: v for k, v in motion.items() if k != "type"}, where)
        self.desk = np.asarray(scene.anchors.get("desk_center", np.array([0.0, 1.8, 0.75])), float)
        rng = np.random.default_rng([int(seed), 1])
        self.jit_p = _SmoothNoise(rng, 3, 0.5, 3.0)
        self.jit_r = _SmoothNoise(rng, 3, 0.5, 3.0)
        self.wander = _SmoothNoise(rng, 1, 0.05, 0.2)

    def world_from_cam(self, t: float) -> np.ndarray:
        p, d = self.p, self.desk
        roll = math.radians(p.roll_deg) * float(self.wander(t)[0])
        if isinstance(p, SweepMotion):
            w = [2 * math.pi / T for T in p.period]
            off = np.array([a * math.sin(wi * t + ph) for a, wi, ph in zip(p.amplitude, w, p.phase)])
            eye = d + np.array([0.0, -p.distance, p.height]) + off
            tw = [2 * math.pi / T for T in p.target_period]
            target = d + np.array([a * math.sin(wi * t + 0.7 * k) for k, (a, wi) in enumerate(zip(p.target_amplitude, tw))])
            pose = look_at(eye, target, roll)
        elif isinstance(p, XYZMotion):
            base = look_at(d + np.array([0.0, -p.distance, p.height]), d, 0.0)
            seg = max(p.segment, 1e-3)
            k = int(t // seg) % 4
            local = t - (t // seg) * seg
            ramp_in = 1.0 if t < seg else local / 0.75  # the very first segment starts in motion
            ramp = min(1.0, ramp_in, (seg - local) / 0.75)
            ramp = 0.5 - 0.5 * math.cos(math.pi * max(0.0, ramp))
            s = math.sin(2 * math.pi * t / p.period)
            off = np.zeros(3)
            if k < 3:
                off[k] = p.amplitude[k] * s * ramp
            else:
                off = np.array(p.amplitude) * np.array([s, math.sin(2 * math.pi * t / p.period * 0.7),
                                                        math.sin(2 * math.pi * t / p.period * 1.3)]) * ramp * 0.6
            pose = base.copy()
            pose[:3, 3] = base[:3, 3] + base[:3, :3] @ off
            c, s_ = math.cos(roll), math.sin(roll)
            pose[:3, :3] = pose[:3, :3] @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1.0]])
        elif isinstance(p, OrbitMotion):
            ang = math.radians(p.arc_deg) / 2 * math.sin(2 * math.pi * t / p.period)
            eye = d + np.array([p.radius * math.sin(ang), -p.radius * math.cos(ang),
                                p.height + p.height_amplitude * math.sin(2 * math.pi * t / (0.77 * p.period))])
            target = d + p.target_amplitude * np.array([math.sin(1.3 * t), math.sin(0.9 * t + 1), 0.5 * math.sin(0.7 * t)])
            pose = look_at(eye, target, roll)
        else:  # RotationMotion
            eye = d + np.array([0.0, -p.distance, p.height])
            eye = eye + p.translation_amplitude * np.array([math.sin(1.1 * t), math.sin(0.8 * t + 1), math.sin(1.4 * t + 2)])
            base = look_at(eye, d, 0.0)
            yaw = math.radians(p.yaw_amplitude_deg) * math.sin(2 * math.pi * t / p.yaw_period)
            pitch = math.radians(p.pitch_amplitude_deg) * math.sin(2 * math.pi * t / p.pitch_period + 0.6)
            rl = math.radians(p.roll_amplitude_deg) * math.sin(2 * math.pi * t / p.roll_period + 1.3)
            # yaw about world z, then pitch / roll in the camera frame
            pose = base.copy()
            pose[:3, :3] = _rot_xyz(0, 0, yaw) @ base[:3, :3] @ _rot_xyz(pitch, 0, rl)
        # hand-held jitter
        pose = pose.copy()
        pose[:3, 3] += p.jitter_position * self.jit_p(t)
        pose[:3, :3] = pose[:3, :3] @ _rot_xyz(*(math.radians(p.jitter_rotation_deg) * self.jit_r(t)))
        return pose


# ============================================================================ manifests
PROFILES: dict = {
    "default": {
        "name": "default",
        "description": "Slow hand-held sweep in front of the desk, mild realism (the embedded default sequence).",
        "frames": 300, "fps": 30.0, "seed": 1, "camera": "fr1",
        "motion": {"type": "sweep", "distance": 1.7, "height": 0.6, "amplitude": [0.25, 0.08, 0.06],
                   "period": [10.0, 13.0, 7.0], "phase": [0.0, 1.0, 0.5], "target_amplitude": [0.12, 0.05, 0.04],
                   "target_period": [12.0, 9.0, 8.0], "jitter_position": 0.002, "jitter_rotation_deg": 0.15,
                   "roll_deg": 1.5},
        "realism": {"noise_sigma": 1.0, "noise_shot": 0.02, "exposure_time": 0.3, "exposure_amplitude": 0.03,
                    "exposure_period": 8.0, "vignetting": 0.1, "blur_sigma": 0.4, "depth_noise": 0.0005,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.08, "depth_dropout": 0.003,
                    "depth_min": 0.3, "depth_max": 6.0},
    },
    "xyz": {
        "name": "xyz",
        "description": "TUM fr1_xyz-like: translation along the camera x, y, z axes in turn, little rotation.",
        "frames": 600, "fps": 30.0, "seed": 2, "camera": "fr1",
        "motion": {"type": "xyz", "distance": 1.5, "height": 0.55, "amplitude": [0.15, 0.1, 0.12], "period": 4.0,
                   "segment": 6.0, "jitter_position": 0.002, "jitter_rotation_deg": 0.2, "roll_deg": 1.0},
        "realism": {"noise_sigma": 1.0, "noise_shot": 0.02, "exposure_time": 0.3, "exposure_amplitude": 0.03,
                    "exposure_period": 8.0, "vignetting": 0.1, "blur_sigma": 0.4, "depth_noise": 0.0005,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.08, "depth_dropout": 0.003,
                    "depth_min": 0.3, "depth_max": 6.0},
    },
    "desk": {
        "name": "desk",
        "description": "TUM fr1_desk-like: orbit around the desk looking at it, moderate speed.",
        "frames": 600, "fps": 30.0, "seed": 3, "camera": "fr1",
        "motion": {"type": "orbit", "radius": 1.5, "height": 0.6, "arc_deg": 100.0, "period": 16.0,
                   "height_amplitude": 0.1, "target_amplitude": 0.06, "jitter_position": 0.003,
                   "jitter_rotation_deg": 0.25, "roll_deg": 3.0},
        "realism": {"noise_sigma": 1.5, "noise_shot": 0.03, "exposure_time": 0.4, "exposure_amplitude": 0.05,
                    "exposure_period": 6.0, "vignetting": 0.15, "blur_sigma": 0.5, "depth_noise": 0.001,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.1, "depth_dropout": 0.005,
                    "depth_min": 0.4, "depth_max": 5.0},
    },
    "fast": {
        "name": "fast",
        "description": "Fast rotation on the spot (up to ~140 deg/s yaw), strong motion blur.",
        "frames": 300, "fps": 30.0, "seed": 4, "camera": "fr1",
        "motion": {"type": "rotation", "distance": 1.8, "height": 0.6, "yaw_amplitude_deg": 70.0, "yaw_period": 3.2,
                   "pitch_amplitude_deg": 15.0, "pitch_period": 4.4, "roll_amplitude_deg": 10.0, "roll_period": 5.3,
                   "translation_amplitude": 0.03, "jitter_position": 0.003, "jitter_rotation_deg": 0.3,
                   "roll_deg": 0.0},
        "realism": {"noise_sigma": 1.5, "noise_shot": 0.03, "exposure_time": 0.35, "exposure_amplitude": 0.08,
                    "exposure_period": 4.0, "vignetting": 0.15, "blur_sigma": 0.5, "depth_noise": 0.001,
                    "depth_edge_holes": True, "depth_grazing_cos": 0.1, "depth_dropout": 0.005,
                    "depth_min": 0.4, "depth_max": 5.0},
    },
}

_MANIFEST_KEYS = {"name", "description", "frames", "fps", "seed", "camera", "motion", "realism"}


def load_manifest(name_or_path: Union[str, Path, dict], root: Optional[Path] = None) -> dict:
    """Resolve a manifest: a dict (validated copy), a path to a YAML file, or a profile name.

    For a name, ``root/synthetic/<name>.yaml`` is used when ``root`` is given and the file
    exists (so edits to the repository's manifests take effect), else the embedded
    ``PROFILES[name]``.
    """
    if isinstance(name_or_path, dict):
        return validate_manifest(copy.deepcopy(name_or_path), "<manifest dict>")
    s = str(name_or_path)
    path = Path(s)
    if s.endswith((".yaml", ".yml")) or os.sep in s or (os.altsep and os.altsep in s):
        return _read_manifest(path)
    if root is not None:
        p = Path(root) / "synthetic" / f"{s}.yaml"
        if p.is_file():
            return _read_manifest(p)
    if s not in PROFILES:
        raise InputError(f"unknown synthetic profile {s!r}; choose one of {sorted(PROFILES)} "
                             f"or give a path to a manifest .yaml")
    return validate_manifest(copy.deepcopy(PROFILES[s]), f"profile {s!r}")


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"manifest file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"manifest file {path} is not valid YAML: {exc}") from None
    if isinstance(data, dict) and "name" not in data:
        data["name"] = path.stem
    return validate_manifest(data, f"manifest file {path}")


def validate_manifest(m: dict, where: str) -> dict:
    """Check keys and types; returns ``m`` with defaults filled in. Raises InputError."""
    if not isinstance(m, dict):
        raise InputError(f"{where} must be a mapping with keys {sorted(_MANIFEST_KEYS)}")
    unknown = sorted(set(m) - _MANIFEST_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(_MANIFEST_KEYS)}")
    for key in ("frames", "fps", "motion"):
        if key not in m:
            raise InputError(f"{where} is missing the key '{key}'")
    m.setdefault("name", "synthetic")
    m.setdefault("seed", 0)
    m.setdefault("camera", "fr1")
    m.setdefault("realism", {})
    try:
        m["frames"] = int(m["frames"])
        m["fps"] = float(m["fps"])
        m["seed"] = int(m["seed"])
    except (TypeError, ValueError):
        raise InputError(f"{where}: frames, fps and seed must be numbers, got "
                             f"frames={m['frames']!r}, fps={m['fps']!r}, seed={m['seed']!r}") from None
    if m["frames"] < 1 or m["fps"] <= 0:
        raise InputError(f"{where}: frames must be >= 1 and fps > 0")
    _camera_of(m, where)
    _dataclass_from(Realism, m["realism"], f"{where}: realism")
    mt = m["motion"]
    if not isinstance(mt, dict) or mt.get("type") not in MOTION_TYPES:
        raise InputError(f"{where}: motion.type must be one of {sorted(MOTION_TYPES)}, got "
                             f"{mt.get('type') if isinstance(mt, dict) else mt!r}")
    _dataclass_from(MOTION_TYPES[mt["type"]], {k: v for k, v in mt.items() if k != "type"}, f"{where}: motion")
    return m


def _camera_of(m: dict, where: str = "manifest") -> PinholeCamera:
    cam = m.get("camera", "fr1")
    if cam == "fr1":
        return PinholeCamera.from_dict(FR1_CAMERA)
    if isinstance(cam, dict):
        try:
            return PinholeCamera.from_dict(cam, source=f"{where}: camera")
        except ValueError as exc:
            raise InputError(str(exc)) from None
    raise InputError(f"{where}: camera must be 'fr1' or a mapping {{width, height, fx, fy, cx, cy, dist}}, got {cam!r}")


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """sha256 of this module's and the texture module's source: any change to the renderer or
    the scene generator invalidates cached sequences (no version to forget to bump)."""
    h = hashlib.sha256()
    for path in (Path(__file__), Path(tx.__file__)):
        try:
            h.update(path.read_bytes())
        except OSError:  # e.g. running from a zip: fall back to the version string
            h.update(RENDERER_VERSION.encode())
    return h.hexdigest()


def manifest_hash(m: dict) -> str:
    """sha256 of the resolved manifest, the renderer version and the renderer's source code
    (the cache key)."""
    blob = json.dumps({"manifest": m, "renderer": RENDERER_VERSION, "code": _code_digest()}, sort_keys=True,
                      default=float)
    return hashlib.sha256(blob.encode()).hexdigest()


# ============================================================================ realism
class _FrameEffects:
    """Applies :class:`Realism` to rendered frames of one sequence (deterministic per frame)."""

    _BANK = 1 << 21  # size of the per-sequence bank of N(0, 1) samples

    def __init__(self, realism: Realism, renderer: Renderer, seed: int, fps: float) -> None:
        self.r = realism
        self.renderer = renderer
        self.seed = seed
        self.fps = fps
        self.gain = _SmoothNoise(np.random.default_rng([seed, 3]), 1, 0.5 / max(realism.exposure_period, 1e-3),
                                 1.5 / max(realism.exposure_period, 1e-3), 4)
        self._bank: Optional[np.ndarray] = None

    def _normal(self, rng: np.random.Generator, shape: tuple) -> np.ndarray:
        """Standard normal samples: a random window of a per-sequence bank (much cheaper than
        drawing fresh samples every frame; windows differ per frame)."""
        n = int(np.prod(shape))
        if self._bank is None or self._bank.shape[0] < n + 1:
            size = max(self._BANK, 2 * n)
            self._bank = np.random.default_rng([self.seed, 6]).standard_normal(size, dtype=np.float32)
        off = int(rng.integers(0, self._bank.shape[0] - n))
        return self._bank[off:off + n].reshape(shape)

    def color(self, out: RenderOutput, i: int, pose_at: Optional[Callable], cam_from_world: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame ``i`` with motion blur (needs ``pose_at(t)`` ->
        world_from_cam), exposure gain, vignetting, optics blur and noise, as configured."""
        r = self.r
        rng = np.random.default_rng([self.seed, 2, i])
        if r.exposure_time > 0 and pose_at is not None:
            img = self._motion_blur(out.bgr, out.depth, i, pose_at, cam_from_world)
        else:
            img = out.bgr.astype(np.float32)
        gain = 1.0 + r.exposure_amplitude * float(self.gain(i / self.fps)[0])
        if r.vignetting > 0:
            fld = (np.float32(gain) * (np.float32(1.0) - np.float32(r.vignetting) * self.renderer.radius2))
            img *= fld[..., None]
        elif gain != 1.0:
            img *= np.float32(gain)
        if r.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), r.blur_sigma)
        if r.noise_sigma > 0 or r.noise_shot > 0:
            var = np.maximum(img, 0.0)
            var *= np.float32(r.noise_shot)
            var += np.float32(r.noise_sigma ** 2)
            np.sqrt(var, out=var)
            var *= self._normal(rng, img.shape)
            img += var
        return _to_u8(img)

    def _motion_blur(self, img, depth, i, pose_at, cam_from_world) -> np.ndarray:
        """Average the image along each pixel's true optical flow over the exposure (flow from
        the depth and the poses at the start / end of the exposure, on a 1/4-resolution grid)."""
        cam = self.renderer.camera
        H, W = depth.shape
        t = i / self.fps
        half = 0.5 * self.r.exposure_time / self.fps
        step = 4
        ys, xs = np.mgrid[0:H:step, 0:W:step]
        z = depth[::step, ::step].astype(np.float64)
        z = np.where(z > 0, z, np.median(z[z > 0]) if np.any(z > 0) else 1.0)
        pc = np.stack([self.renderer.xn[::step, ::step] * z, self.renderer.yn[::step, ::step] * z, z], -1).reshape(-1, 3)
        world_from_cam = np.linalg.inv(cam_from_world)
        pw = pc @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]
        flows = []
        for ts in (t - half, t + half):
            c_from_w = np.linalg.inv(pose_at(ts))
            uv, ok = cam.project(pw @ c_from_w[:3, :3].T + c_from_w[:3, 3])
            f = uv - np.stack([xs.ravel(), ys.ravel()], 1)
            f[~ok] = 0.0
            flows.append(f.reshape(xs.shape + (2,)).astype(np.float32))
        span = flows[1] - flows[0]  # displacement over the exposure
        mid = 0.5 * (flows[1] + flows[0])
        length = float(np.percentile(np.linalg.norm(span, axis=-1), 99))
        n = int(min(15, math.ceil(length)))
        if n < 2:
            return img.astype(np.float32)
        span = cv2.resize(span, (W, H), interpolation=cv2.INTER_LINEAR)
        mid = cv2.resize(mid, (W, H), interpolation=cv2.INTER_LINEAR)
        gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
        acc = np.zeros(img.shape, np.float32)
        for s in np.linspace(-0.5, 0.5, n, dtype=np.float32):
            # the point seen at pixel x at time t_s came from x - flow_s(x) in the centre image
            fx = mid[..., 0] + s * span[..., 0]
            fy = mid[..., 1] + s * span[..., 1]
            acc += cv2.remap(img, gx - fx, gy - fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        acc *= np.float32(1.0 / n)
        return acc

    def depth(self, out: RenderOutput, i: int) -> np.ndarray:
        r = self.r
        z = out.depth.copy()
        rng = np.random.default_rng([self.seed, 4, i])
        valid = z > 0
        if r.depth_noise > 0:
            z = z + (np.float32(r.depth_noise) * z * z) * self._normal(rng, z.shape)
        if r.depth_edge_holes:
            rel = 0.04
            e = np.zeros(z.shape, bool)
            dxz = np.abs(np.diff(out.depth, axis=1)) > rel * np.minimum(out.depth[:, 1:], out.depth[:, :-1]) + 0.01
            dyz = np.abs(np.diff(out.depth, axis=0)) > rel * np.minimum(out.depth[1:], out.depth[:-1]) + 0.01
            e[:, 1:] |= dxz
            e[:, :-1] |= dxz
            e[1:] |= dyz
            e[:-1] |= dyz
            valid &= ~e
        if r.depth_grazing_cos > 0:
            valid &= out.cos_incidence >= r.depth_grazing_cos
        if r.depth_dropout > 0:
            H, W = z.shape
            field_ = rng.random((H // 16 + 2, W // 16 + 2), dtype=np.float32)
            field_ = cv2.resize(field_, (W + 32, H + 32), interpolation=cv2.INTER_CUBIC)[8:8 + H, 8:8 + W]
            thr = np.quantile(field_[::4, ::4], r.depth_dropout)
            valid &= field_ > thr
        if r.depth_min > 0:
            valid &= z >= r.depth_min
        if r.depth_max > 0:
            valid &= z <= r.depth_max
        return np.where(valid, z, np.float32(0.0)).astype(np.float32)


# ============================================================================ sequences
def _fmt_ts(t: float) -> str:
    return f"{t:.6f}"


def render_sequence(name_or_manifest: Union[str, dict], out_dir: Path, n_frames: Optional[int] = None,
                    seed: Optional[int] = None, progress: bool = False, workers: Optional[int] = None,
                    root: Optional[Path] = None) -> Path:
    """Render a synthetic TUM-format RGB-D sequence into ``out_dir`` and return it.

    Writes rgb/NNNNNN.png (uint8 BGR), depth/NNNNNN.png (uint16, metres * 5000, 0 = invalid),
    rgb.txt / depth.txt / groundtruth.txt (TUM format; groundtruth = world_from_cam as
    ``timestamp tx ty tz qx qy qz qw``), camera.yaml and stamp.json (cache key). The output is
    first written to a temporary sibling folder and moved into place when complete, so an
    interrupted render never looks valid. ``n_frames``/``seed`` override the manifest.
    ``workers``: render threads (default: min(2, CPU count)).
    """
    from scipy.spatial.transform import Rotation

    m = load_manifest(name_or_manifest, root)
    if n_frames is not None:
        if int(n_frames) < 1:
            raise InputError(f"n_frames must be >= 1, got {n_frames}")
        m["frames"] = int(n_frames)
    if seed is not None:
        m["seed"] = int(seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "stamp.json").is_file():
        raise InputError(f"{out_dir} exists and is not a synthetic sequence (no stamp.json); "
                             f"refusing to overwrite it: choose another output folder")
    t_start = time.perf_counter()
    camera = _camera_of(m)
    realism = _dataclass_from(Realism, m["realism"], "realism")
    scene = make_scene(m["seed"])
    traj = Trajectory(scene, m["motion"], m["seed"])
    fps, n = m["fps"], m["frames"]
    poses = [traj.world_from_cam(i / fps) for i in range(n)]
    for i, pose in enumerate(poses):
        what = scene.solid_at(pose[:3, 3], margin=0.05)
        if what is not None:
            raise InputError(f"motion of {m['name']!r} puts the camera inside {what} at frame {i} "
                                 f"(position {np.round(pose[:3, 3], 3).tolist()}); change motion parameters or seed")
    renderer = _renderer_for(_cam_key(camera))
    effects = _FrameEffects(realism, renderer, m["seed"], fps)
    scene.prepare()  # before the worker threads start

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "rgb").mkdir(parents=True)
    (tmp / "depth").mkdir()
    # fast lossless PNG: SUB filter + Huffman-only deflate (~2x faster than zlib level 1, smaller)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
           cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]

    def one(i: int) -> None:
        world_from_cam = poses[i]
        cam_from_world = np.linalg.inv(world_from_cam)
        out = renderer.render(scene, cam_from_world)
        bgr = effects.color(out, i, traj.world_from_cam, cam_from_world)
        depth = effects.depth(out, i)
        d16 = np.clip(np.round(depth * DEPTH_FACTOR), 0, 65535).astype(np.uint16)
        if not cv2.imwrite(str(tmp / "rgb" / f"{i:06d}.png"), bgr, png):
            raise OSError(f"could not write {tmp / 'rgb' / f'{i:06d}.png'}")
        if not cv2.imwrite(str(tmp / "depth" / f"{i:06d}.png"), d16, png):
            raise OSError(f"could not write {tmp / 'depth' / f'{i:06d}.png'}")

    n_workers = workers if workers is not None else max(1, min(2, os.cpu_count() or 1))
    done = 0
    try:
        if n_workers <= 1:
            for i in range(n):
                one(i)
                done += 1
                if progress and (done % max(1, n // 10) == 0 or done == n):
                    print(f"  rendered {done}/{n} frames", file=sys.stderr, flush=True)
        else:
            with ThreadPoolExecutor(n_workers) as ex:
                for _ in ex.map(one, range(n)):
                    done += 1
                    if progress and (done % max(1, n // 10) == 0 or done == n):
                        print(f"  rendered {done}/{n} frames", file=sys.stderr, flush=True)
        stamps = [_fmt_ts(TIMESTAMP_BASE + i / fps) for i in range(n)]
        hdr = f"# synthetic sequence '{m['name']}' rendered by slam.io.synthetic {RENDERER_VERSION}\n"
        (tmp / "rgb.txt").write_text(hdr + "# color images\n# timestamp filename\n"
                                     + "".join(f"{s} rgb/{i:06d}.png\n" for i, s in enumerate(stamps)))
        (tmp / "depth.txt").write_text(hdr + "# depth maps (uint16 PNG, depth factor 5000)\n# timestamp filename\n"
                                       + "".join(f"{s} depth/{i:06d}.png\n" for i, s in enumerate(stamps)))
        lines = []
        for s, pose in zip(stamps, poses):
            q = Rotation.from_matrix(pose[:3, :3]).as_quat()  # x, y, z, w
            tx_, ty_, tz_ = pose[:3, 3]
            lines.append(f"{s} {tx_:.9f} {ty_:.9f} {tz_:.9f} {q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}\n")
        (tmp / "groundtruth.txt").write_text(hdr + "# ground truth trajectory (exact), world_from_cam\n"
                                             "# timestamp tx ty tz qx qy qz qw\n" + "".join(lines))
        # nested "camera" (the manifest format) plus the same intrinsics at the top level, so that
        # flat readers such as PinholeCamera.from_yaml also accept the file
        cam_yaml = {"name": m["name"], "dataset": "synthetic", "camera": camera.to_dict(),
                    "depth_factor": DEPTH_FACTOR, "fps": fps, **camera.to_dict()}
        (tmp / "camera.yaml").write_text(yaml.safe_dump(cam_yaml, sort_keys=False))
        elapsed = time.perf_counter() - t_start
        stamp = {"hash": manifest_hash(m), "renderer_version": RENDERER_VERSION, "frames": n,
                 "manifest": m, "render_seconds": round(elapsed, 2)}
        (tmp / "stamp.json").write_text(json.dumps(stamp, indent=1, sort_keys=True, default=float))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_camera_manifest(seq_dir: Union[str, Path]) -> PinholeCamera:
    """The camera of a rendered sequence from ``seq_dir/camera.yaml`` (nested ``camera:`` mapping,
    or flat intrinsics). Raises InputError naming the file when it is missing or invalid."""
    path = Path(seq_dir) / "camera.yaml"
    if not path.is_file():
        raise InputError(f"{path} does not exist; render the sequence with ensure_sequence / render_sequence")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must be a mapping with a 'camera' key")
    cam = data.get("camera", data)
    try:
        return PinholeCamera.from_dict(cam, source=str(path))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def sequence_is_current(seq_dir: Path, manifest: dict) -> bool:
    """True when ``seq_dir`` holds a complete render of ``manifest`` by this exact renderer code."""
    stamp = Path(seq_dir) / "stamp.json"
    if not stamp.is_file():
        return False
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return data.get("hash") == manifest_hash(manifest) and (Path(seq_dir) / "groundtruth.txt").is_file()


def ensure_sequence(name: str, root: Path, n_frames: Optional[int] = None) -> Path:
    """Return ``root/"synthetic"/name``, rendering it first if missing or stale.

    The manifest is ``root/synthetic/<name>.yaml`` when present, else the embedded
    ``PROFILES[name]``. Staleness = the stamp's hash differs from the hash of the resolved
    manifest (with ``n_frames``), the renderer version and the renderer's source code. Prints
    one line when it renders.
    """
    m = load_manifest(name, root)
    if n_frames is not None:
        m["frames"] = int(n_frames)
    out = Path(root) / "synthetic" / name
    if sequence_is_current(out, m):
        return out
    print(f"rendering synthetic sequence '{name}' ({m['frames']} frames, {m['motion']['type']} motion) "
          f"into {out} ...", flush=True)
    return render_sequence(m, out)


# ============================================================================ training pairs
def warp_points(points0: np.ndarray, depth0: np.ndarray, camera, cam1_from_cam0: np.ndarray,
                depth1: Optional[np.ndarray] = None, occlusion_tol: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Exact correspondences: map (N, 2) distorted pixels of image 0 into image 1.

    depth0/depth1: (H, W) float32 metres (0 = invalid); the depth at a point is bilinear when
    its 4 neighbours agree within 1 %, else the nearest pixel's. cam1_from_cam0: (4, 4).
    Returns ((N, 2) float64 distorted pixels in image 1, (N,) bool valid): valid = depth known,
    in front of camera 1, inside image 1 and, when ``depth1`` is given, not occluded (depth1 at
    the target within ``occlusion_tol`` relative).
    """
    cam = _camera_from_any(camera)
    pts = np.asarray(points0, np.float64).reshape(-1, 2)
    z = _sample_depth(depth0, pts)
    und = cam.undistort_points(pts) if cam.has_distortion else pts
    xn = (und[:, 0] - cam.cx) / cam.fx
    yn = (und[:, 1] - cam.cy) / cam.fy
    p0 = np.stack([xn * z, yn * z, z], 1)
    T = np.asarray(cam1_from_cam0, np.float64)
    p1 = p0 @ T[:3, :3].T + T[:3, 3]
    uv1, front = cam.project(p1)
    valid = (z > 0) & front & cam.in_image(uv1)
    if depth1 is not None and np.any(valid):
        z1 = _sample_depth(depth1, np.where(valid[:, None], uv1, 0.0))
        valid &= (z1 > 0) & (np.abs(z1 - p1[:, 2]) <= occlusion_tol * p1[:, 2])
    return uv1, valid


def _sample_depth(depth: np.ndarray, pts: np.ndarray) -> np.ndarray:
    H, W = depth.shape
    x = np.clip(pts[:, 0], 0, W - 1)
    y = np.clip(pts[:, 1], 0, H - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, W - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, H - 2)
    fx, fy = x - x0, y - y0
    d00, d01 = depth[y0, x0], depth[y0, x0 + 1]
    d10, d11 = depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]
    quad = np.stack([d00, d01, d10, d11], 1).astype(np.float64)
    bil = (d00 * (1 - fx) * (1 - fy) + d01 * fx * (1 - fy) + d10 * (1 - fx) * fy + d11 * fx * fy)
    ok = (quad.min(1) > 0) & (quad.max(1) <= quad.min(1) * 1.01)
    near = depth[np.clip(np.round(y).astype(int), 0, H - 1), np.clip(np.round(x).astype(int), 0, W - 1)]
    return np.where(ok, bil, near).astype(np.float64)


def sample_pair(seed: int, scene: Optional[Scene] = None, camera=None, max_rotation_deg: float = 30.0,
                baseline: tuple = (0.05, 0.5), min_overlap: float = 0.3, realism: Optional[dict] = None,
                max_tries: int = 30) -> dict:
    """A random image pair of a synthetic scene with exact geometry, for training.

    seed: drives the poses (and the scene when ``scene`` is None: ``make_scene(seed)``; pass a
    prebuilt scene to amortise its ~1 s construction over many pairs). camera: PinholeCamera
    or dict (default TUM fr1). The two cameras look at a common target with a baseline in
    ``baseline`` (m) and a relative rotation <= ``max_rotation_deg``; at least ``min_overlap``
    of image 0 is visible in image 1. realism: optional Realism fields (dict) applied to
    both images (no motion blur).

    Returns dict(image0, image1: (H, W, 3) uint8 BGR; depth0, depth1: (H, W) float32 metres,
    exact, 0 = nothing; cam0_from_world, cam1_from_world: (4, 4) float64; camera:
    PinholeCamera; overlap: float). Use :func:`warp_points` for correspondences.
    """
    cam = _camera_from_any(camera) if camera is not None else PinholeCamera.from_dict(FR1_CAMERA)
    if scene is None:
        scene = make_scene(seed)
    rng = np.random.default_rng([int(seed), 5])
    rend = _renderer_for(_cam_key(cam))
    lo, hi = scene.anchors["room_min"], scene.anchors["room_max"]
    desk = scene.anchors["desk_center"]
    dsz = scene.anchors.get("desk_size", np.array([1.5, 0.8]))
    eff = _FrameEffects(_dataclass_from(Realism, realism or {}, "realism"), rend, int(seed), 30.0) if realism else None
    best = None
    for attempt in range(max_tries):
        if rng.random() < 0.6:
            target = desk + np.array([rng.uniform(-0.5, 0.5) * dsz[0], rng.uniform(-0.5, 0.5) * dsz[1], rng.uniform(0, 0.3)])
        else:
            wall = int(rng.integers(0, 4))
            p = rng.uniform(lo + 0.05, hi - 0.05)
            p[2] = rng.uniform(0.5, 2.2)
            if wall < 2:
                p[0] = lo[0] if wall == 0 else hi[0]
            else:
                p[1] = lo[1] if wall == 2 else hi[1]
            target = p
        eye0 = None
        for _ in range(50):
            e = rng.uniform(lo + 0.3, hi - 0.3)
            e[2] = rng.uniform(0.5, min(2.2, hi[2] - 0.2))
            if 0.8 <= np.linalg.norm(e - target) <= 3.0 and scene.solid_at(e, 0.1) is None:
                eye0 = e
                break
        if eye0 is None:
            continue
        w0 = look_at(eye0, target, rng.uniform(-0.2, 0.2))
        ok1 = False
        for _ in range(50):
            dirn = rng.standard_normal(3)
            dirn /= np.linalg.norm(dirn)
            eye1 = eye0 + dirn * rng.uniform(*baseline)
            w1 = look_at(eye1, target + rng.uniform(-0.15, 0.15, 3), rng.uniform(-0.2, 0.2) + rng.uniform(-0.3, 0.3))
            ang = math.degrees(np.arccos(np.clip((np.trace(w0[:3, :3].T @ w1[:3, :3]) - 1) / 2, -1, 1)))
            if ang <= max_rotation_deg and scene.solid_at(eye1, 0.1) is None:
                ok1 = True
                break
        if not ok1:
            continue
        c0, c1 = np.linalg.inv(w0), np.linalg.inv(w1)
        o0, o1 = rend.render(scene, c0), rend.render(scene, c1)
        if np.median(o0.depth) < 0.4 or np.median(o1.depth) < 0.4:
            continue
        ys, xs = np.mgrid[4:cam.height:16, 4:cam.width:16]
        grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        _, v = warp_points(grid, o0.depth, cam, c1 @ w0, o1.depth)
        overlap = float(v.mean())
        cand = (overlap, c0, c1, o0, o1)
        if best is None or overlap > best[0]:
            best = cand
        if overlap >= min_overlap:
            break
    if best is None:
        raise InputError(f"sample_pair(seed={seed}) found no valid camera pair in {max_tries} tries; "
                             f"relax baseline/max_rotation_deg")
    overlap, c0, c1, o0, o1 = best
    if eff is not None:
        im0, im1 = eff.color(o0, 0, None, c0), eff.color(o1, 1, None, c1)
        d0, d1 = eff.depth(o0, 0), eff.depth(o1, 1)
    else:
        im0, im1, d0, d1 = o0.bgr, o1.bgr, o0.depth, o1.depth
    return {"image0": im0, "image1": im1, "depth0": d0, "depth1": d1, "cam0_from_world": c0,
            "cam1_from_world": c1, "camera": cam, "overlap": overlap}
