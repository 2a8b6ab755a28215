"""Exact ray caster of the synthetic renderer.

For every DISTORTED pixel the ray is built from its UNDISTORTED normalised coordinate (computed
once per camera), so the image carries the real lens distortion (OpenCV 5-coefficient model)
and ``cv2.projectPoints`` of a 3D point with the ground-truth pose lands on the pixel where the
renderer drew it. Boxes, vertical cylinders and rectangles are intersected analytically per
pixel, within a conservative pixel bounding box of each primitive. Depth is exact: z in the
camera frame (TUM convention), not the ray length. Textures are sampled trilinearly from mip
pyramids, the level chosen per pixel from the footprint of the pixel on the surface.

Conventions: camera frame OpenCV (x right, y down, z forward); ``cam_from_world`` (4, 4)
float64; images (H, W, 3) uint8 BGR; depth (H, W) float32 metres, 0 = nothing hit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import cv2
import numpy as np

from slam.geometry.camera import PinholeCamera, as_pinhole_camera
from slam.synth.scene import Box, Cylinder, Face, Quad, Scene, Texture

__all__ = ["RenderOutput", "Renderer", "renderer_for", "render_view", "NEAR"]

NEAR = 0.02  # metres: nearest valid hit along the optical axis


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


class Renderer:
    """Ray caster for one camera. Precomputes, for every distorted pixel (x, y), the ray
    ``(xn, yn, 1)`` in the camera frame where (xn, yn) is its undistorted normalised coordinate;
    a hit at ray parameter t is at camera-frame point t * (xn, yn, 1), so t is the depth z."""

    def __init__(self, camera) -> None:
        self.camera = as_pinhole_camera(camera)
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
        if np.all(z <= NEAR):
            return None
        if np.any(z <= NEAR):
            # clip the convex hull to z >= near: keep the corners in front and add the points
            # where segments between corners cross the near plane (all pairs: conservative)
            front, back = pts_cam[z > NEAR], pts_cam[z <= NEAR]
            zf, zb = front[:, None, 2], back[None, :, 2]
            w = (zf - NEAR) / (zf - zb)  # in [0, 1): the crossing of z = near
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
            hit = np.isfinite(best_t) & (best_t > NEAR)
        else:
            hit = (best_t <= tfar) & (best_t > NEAR)
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
        hit_s = (disc >= 0) & (ts > NEAR) & (zs >= 0) & (zs <= h) & (a > 1e-12)
        t = np.where(hit_s, ts, np.float32(np.inf))
        fid = np.full(sx.shape, cyl.faces[0], np.int32)
        for cap_z, face in ((h, cyl.faces[1]), (np.float32(0.0), cyl.faces[2])):
            if (cap_z == h and o[2] > h) or (cap_z == 0 and o[2] < 0):
                tc = (cap_z - o[2]) / sz
                px, py = o[0] + tc * sx, o[1] + tc * sy
                hc = (tc > NEAR) & (px * px + py * py <= r * r) & (tc < t)
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
        hit = (t > NEAR) & (u >= 0) & (u <= face.size[0]) & (v >= 0) & (v <= face.size[1])
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
def _renderer_for_key(key: tuple) -> Renderer:
    w, h, fx, fy, cx, cy, dist = key
    return Renderer(PinholeCamera(width=w, height=h, fx=fx, fy=fy, cx=cx, cy=cy, dist=dist))


def renderer_for(camera) -> Renderer:
    """A shared :class:`Renderer` for ``camera`` (PinholeCamera or dict), cached for the last
    four cameras (building one computes the ray of every pixel). Renderers hold no per-render
    state, so threads may share one."""
    cam = as_pinhole_camera(camera)
    return _renderer_for_key((cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy, tuple(cam.dist)))


def render_view(scene: Scene, camera, cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render a clean (noise-free) view.

    scene: a :class:`Scene`; camera: PinholeCamera (or dict with width/height/fx/fy/cx/cy/dist);
    cam_from_world: (4, 4) float64. Returns (bgr (H, W, 3) uint8, depth (H, W) float32 metres
    along the optical axis, 0 where nothing was hit).
    """
    out = renderer_for(camera).render(scene, cam_from_world)
    return out.bgr, out.depth
