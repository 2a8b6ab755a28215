"""Synthetic Shapes: grey images of simple shapes with exactly known corners (SuperPoint, Sec. 4).

Primitives (one kind per image, so that no labelled corner is hidden by another shape):
lines (segment end points; segments never cross), a polygon (triangle/quadrilateral/pentagon;
its vertices), several non-overlapping polygons, a star (centre and tips), a checkerboard seen
under a perspective warp (all grid vertices), a cube (orthographic view of a rotated cube; its
visible vertices), ellipses (no corners: negatives) and plain noise (no corners: negatives).

Images are drawn at ``render_scale`` times the output size with anti-aliased polygons, shrunk
with area averaging, then blurred (Gaussian) and given additive Gaussian noise. A corner drawn
at hi-res pixel p lands at (p + 0.5) / s - 0.5 in the output (pixel-centre convention: the
centre of the top-left pixel is (0, 0)); :meth:`SyntheticShapes.sample` returns corners in
output pixels (x, y), float32, only those inside the image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np

__all__ = ["ShapesConfig", "SyntheticShapes", "PRIMITIVES"]

#: primitive name -> default sampling weight
PRIMITIVES: dict[str, float] = {
    "lines": 1.0, "polygon": 1.0, "multiple_polygons": 1.0, "star": 1.0, "checkerboard": 1.0,
    "cube": 1.0, "ellipses": 0.5, "gaussian_noise": 0.3,
}

_SHIFT = 4  # fixed-point bits for cv2 drawing (sub-pixel vertices)
_ONE = 1 << _SHIFT


@dataclass
class ShapesConfig:
    height: int = 120  # output image height (px)
    width: int = 160  # output image width (px)
    render_scale: int = 2  # draw at this multiple of the output size, then area-downsample
    primitives: dict = field(default_factory=lambda: dict(PRIMITIVES))  # name -> sampling weight
    blur_sigma: tuple = (0.0, 1.0)  # Gaussian blur sigma range (output px); 0 = none
    noise_std: tuple = (0.0, 6.0)  # additive Gaussian noise std range (grey levels)
    min_contrast: int = 40  # minimum grey-level difference between a shape and the background


def _poly_i(pts: np.ndarray) -> np.ndarray:
    """float (N, 2) pixel vertices -> int32 fixed-point array for cv2 with shift=_SHIFT."""
    return np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fill(img: np.ndarray, pts: np.ndarray, color: int) -> None:
    cv2.fillPoly(img, [_poly_i(pts)], int(color), lineType=cv2.LINE_AA, shift=_SHIFT)


def _segments_intersect(p1, p2, q1, q2, margin: float) -> bool:
    """True if segment p1p2 passes within ``margin`` of segment q1q2 (or crosses it)."""
    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    def seg_dist(a, b, c):
        ab = b - a
        t = np.clip(np.dot(c - a, ab) / max(np.dot(ab, ab), 1e-12), 0, 1)
        return np.linalg.norm(a + t * ab - c)

    o1, o2, o3, o4 = orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)
    if o1 * o2 < 0 and o3 * o4 < 0:
        return True
    return min(seg_dist(p1, p2, q1), seg_dist(p1, p2, q2), seg_dist(q1, q2, p1), seg_dist(q1, q2, p2)) < margin


def _min_angle_deg(poly: np.ndarray) -> float:
    n = len(poly)
    worst = 180.0
    for i in range(n):
        a, b, c = poly[i - 1], poly[i], poly[(i + 1) % n]
        u, v = a - b, c - b
        cosang = np.dot(u, v) / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12)
        worst = min(worst, float(np.degrees(np.arccos(np.clip(cosang, -1, 1)))))
    return worst


class SyntheticShapes:
    """Generator of Synthetic Shapes images.

    sample(rng, primitive=None) -> (image (H, W) uint8, corners (N, 2) float32 (x, y) px).
    Everything is drawn from ``rng`` (np.random.Generator), so a seed fixes the image.
    """

    def __init__(self, cfg: Optional[ShapesConfig] = None):
        self.cfg = cfg or ShapesConfig()
        unknown = set(self.cfg.primitives) - set(PRIMITIVES)
        if unknown:
            raise ValueError(f"unknown synthetic shape primitive(s) {sorted(unknown)}; known: {sorted(PRIMITIVES)}")
        if self.cfg.height < 16 or self.cfg.width < 16 or self.cfg.render_scale < 1:
            raise ValueError("ShapesConfig: height and width must be >= 16 and render_scale >= 1")
        names = [k for k, v in self.cfg.primitives.items() if v > 0]
        if not names:
            raise ValueError("ShapesConfig.primitives: at least one primitive needs a positive weight")
        w = np.array([self.cfg.primitives[k] for k in names], np.float64)
        self._names, self._weights = names, w / w.sum()
        self._draw: dict[str, Callable] = {
            "lines": self._lines, "polygon": self._polygon, "multiple_polygons": self._multiple_polygons,
            "star": self._star, "checkerboard": self._checkerboard, "cube": self._cube,
            "ellipses": self._ellipses, "gaussian_noise": self._noise,
        }

    # ------------------------------------------------------------------ helpers
    @property
    def hi_shape(self) -> tuple[int, int]:
        s = self.cfg.render_scale
        return self.cfg.height * s, self.cfg.width * s

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Smooth random background (hi-res, uint8): a base level plus low-frequency blobs."""
        h, w = self.hi_shape
        base = rng.uniform(0, 255)
        small = rng.uniform(-1, 1, (max(2, h // 24), max(2, w // 24))).astype(np.float32)
        blobs = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        blobs = cv2.GaussianBlur(blobs, (0, 0), max(h, w) / 40.0)
        amp = rng.uniform(0, 40)
        img = base + amp * blobs / max(float(np.abs(blobs).max()), 1e-6)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _color(self, rng: np.random.Generator, against: float) -> int:
        """Grey level differing from ``against`` by at least cfg.min_contrast."""
        lo, hi = against - self.cfg.min_contrast, against + self.cfg.min_contrast
        choices = [c for c in range(256) if c <= lo or c >= hi]
        return int(rng.choice(choices)) if choices else int(255 if against < 128 else 0)

    def _random_convex(self, rng, centre, radius, n) -> Optional[np.ndarray]:
        for _ in range(20):
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = radius * rng.uniform(0.5, 1.0, n)
            poly = centre + np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
            hull = cv2.convexHull(poly.astype(np.float32)).reshape(-1, 2)
            if len(hull) == n and _min_angle_deg(poly) > 30:
                return poly
        return None

    # ------------------------------------------------------------------ primitives (hi-res)
    def _lines(self, rng, img):
        h, w = img.shape
        s = self.cfg.render_scale
        mean = float(img.mean())
        segs, pts = [], []
        for _ in range(int(rng.integers(1, 7))):
            for _ in range(10):
                p1 = rng.uniform([0, 0], [w - 1, h - 1])
                p2 = rng.uniform([0, 0], [w - 1, h - 1])
                if np.linalg.norm(p1 - p2) < 0.15 * min(h, w):
                    continue
                if any(_segments_intersect(p1, p2, a, b, 6 * s) for a, b in segs):
                    continue
                segs.append((p1, p2))
                thick = int(rng.integers(1, 3)) * s
                cv2.line(img, tuple(_poly_i(p1).ravel()), tuple(_poly_i(p2).ravel()), self._color(rng, mean),
                         thick, lineType=cv2.LINE_AA, shift=_SHIFT)
                pts += [p1, p2]
                break
        return np.array(pts).reshape(-1, 2)

    def _polygon(self, rng, img):
        h, w = img.shape
        r = rng.uniform(0.15, 0.4) * min(h, w)
        centre = rng.uniform([r, r], [w - 1 - r, h - 1 - r])
        poly = self._random_convex(rng, centre, r, int(rng.integers(3, 6)))
        if poly is None:
            return np.zeros((0, 2))
        _fill(img, poly, self._color(rng, float(img.mean())))
        return poly

    def _multiple_polygons(self, rng, img):
        h, w = img.shape
        placed, pts = [], []
        mean = float(img.mean())
        for _ in range(int(rng.integers(2, 6))):
            for _ in range(20):
                r = rng.uniform(0.08, 0.2) * min(h, w)
                c = rng.uniform([r, r], [w - 1 - r, h - 1 - r])
                if all(np.linalg.norm(c - c2) > r + r2 + 4 * self.cfg.render_scale for c2, r2 in placed):
                    poly = self._random_convex(rng, c, r, int(rng.integers(3, 6)))
                    if poly is None:
                        continue
                    placed.append((c, r))
                    _fill(img, poly, self._color(rng, mean))
                    pts.append(poly)
                    break
        return np.concatenate(pts) if pts else np.zeros((0, 2))

    def _star(self, rng, img):
        h, w = img.shape
        s = self.cfg.render_scale
        r = rng.uniform(0.2, 0.45) * min(h, w)
        centre = rng.uniform([r, r], [w - 1 - r, h - 1 - r])
        n = int(rng.integers(3, 6))
        for _ in range(20):
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            gaps = np.diff(np.concatenate([ang, [ang[0] + 2 * np.pi]]))
            if gaps.min() > np.radians(35):
                break
        else:
            ang = np.arange(n) * 2 * np.pi / n + rng.uniform(0, 2 * np.pi)
        tips = centre + (r * rng.uniform(0.5, 1.0, n))[:, None] * np.stack([np.cos(ang), np.sin(ang)], 1)
        col = self._color(rng, float(img.mean()))
        thick = int(rng.integers(1, 3)) * s
        for t in tips:
            cv2.line(img, tuple(_poly_i(centre).ravel()), tuple(_poly_i(t).ravel()), col, thick,
                     lineType=cv2.LINE_AA, shift=_SHIFT)
        return np.concatenate([centre[None], tips])

    def _checkerboard(self, rng, img):
        h, w = img.shape
        rows, cols = int(rng.integers(3, 8)), int(rng.integers(3, 8))
        # board in its own plane, then a perspective transform onto a random quad in the image
        gx, gy = np.meshgrid(np.linspace(0, 1, cols + 1), np.linspace(0, 1, rows + 1))
        grid = np.stack([gx, gy], -1).reshape(-1, 2)
        margin = 0.15
        for _ in range(20):
            quad = np.array([[rng.uniform(0, margin), rng.uniform(0, margin)],
                             [rng.uniform(1 - margin, 1), rng.uniform(0, margin)],
                             [rng.uniform(1 - margin, 1), rng.uniform(1 - margin, 1)],
                             [rng.uniform(0, margin), rng.uniform(1 - margin, 1)]])
            quad = (quad - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.15, 0.15, 2)
            quad *= np.array([w - 1, h - 1])
            if _min_angle_deg(quad) > 40:
                break
        board_to_img = cv2.getPerspectiveTransform(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32),
                                                   quad.astype(np.float32)).astype(np.float64)
        hom = np.concatenate([grid, np.ones((len(grid), 1))], 1) @ board_to_img.T
        verts = (hom[:, :2] / hom[:, 2:]).reshape(rows + 1, cols + 1, 2)
        c0 = self._color(rng, float(img.mean()))
        c1 = self._color(rng, float(c0))
        # the whole board in one colour, then the other colour's cells (which touch only at
        # corners): no two anti-aliased edges are painted over each other, so edges stay unbiased
        _fill(img, np.array([verts[0, 0], verts[0, -1], verts[-1, -1], verts[-1, 0]]), c0)
        for i in range(rows):
            for j in range(cols):
                if (i + j) % 2:
                    _fill(img, np.array([verts[i, j], verts[i, j + 1], verts[i + 1, j + 1], verts[i + 1, j]]), c1)
        return verts.reshape(-1, 2)

    def _cube(self, rng, img):
        h, w = img.shape
        size = rng.uniform(0.25, 0.45) * min(h, w)
        cube = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64) - 0.5
        cube *= size * rng.uniform(0.7, 1.3, 3)
        ax, ay, az = rng.uniform(0.25, np.pi / 2 - 0.25), rng.uniform(0.25, np.pi / 2 - 0.25), rng.uniform(0, 2 * np.pi)
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        pts3 = cube @ (rz @ ry @ rx).T
        centre = rng.uniform([0.3 * w, 0.3 * h], [0.7 * w, 0.7 * h])
        proj = pts3[:, :2] + centre  # orthographic, camera looks along +z
        faces = [(0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]
        visible = set()
        mean = float(img.mean())
        shades = []
        vis_faces = []
        for f in faces:
            q = pts3[list(f)]
            normal = np.cross(q[1] - q[0], q[3] - q[0])
            if np.dot(normal, q.mean(0)) < 0:  # outward normal
                normal = -normal
            if normal[2] < -1e-6 * size * size:  # faces the camera (camera at z = -inf)
                col = self._color(rng, mean)
                while any(abs(col - c) < 20 for c in shades) and len(shades) < 3:
                    col = self._color(rng, mean)
                    if rng.random() < 0.1:
                        break
                shades.append(col)
                vis_faces.append(f)
                visible.update(f)
        # silhouette first in the first face's shade, then the other faces on top: fewer
        # anti-aliased edges painted over each other (the outline stays unbiased)
        if vis_faces:
            hull = cv2.convexHull(proj[sorted(visible)].astype(np.float32)).reshape(-1, 2)
            _fill(img, hull, shades[0])
            for f, col in zip(vis_faces[1:], shades[1:]):
                _fill(img, proj[list(f)], col)
        return proj[sorted(visible)]

    def _ellipses(self, rng, img):
        h, w = img.shape
        placed = []
        mean = float(img.mean())
        for _ in range(int(rng.integers(1, 6))):
            for _ in range(20):
                a, b = rng.uniform(0.05, 0.2, 2) * min(h, w)
                c = rng.uniform([a, a], [w - 1 - a, h - 1 - a])
                r = max(a, b)
                if all(np.linalg.norm(c - c2) > r + r2 for c2, r2 in placed):
                    placed.append((c, r))
                    cv2.ellipse(img, (int(round(c[0])), int(round(c[1]))), (int(round(a)), int(round(b))),
                                float(rng.uniform(0, 180)), 0, 360, self._color(rng, mean), -1, cv2.LINE_AA)
                    break
        return np.zeros((0, 2))

    def _noise(self, rng, img):
        img[:] = np.clip(rng.normal(128, rng.uniform(20, 60), img.shape), 0, 255).astype(np.uint8)
        return np.zeros((0, 2))

    # ------------------------------------------------------------------ public
    def draw(self, rng: np.random.Generator, primitive: str) -> tuple[np.ndarray, np.ndarray]:
        """Hi-res drawing before downsampling/blur/noise: (image (sH, sW) uint8, corners (N, 2)
        float64 in hi-res pixels)."""
        if primitive not in self._draw:
            raise ValueError(f"unknown primitive {primitive!r}; known: {sorted(self._draw)}")
        img = self._background(rng)
        pts = np.asarray(self._draw[primitive](rng, img), np.float64).reshape(-1, 2)
        return img, pts

    def sample(self, rng: np.random.Generator, primitive: Optional[str] = None,
               blur_and_noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One image: (image (H, W) uint8, corners (N, 2) float32 (x, y) output px inside the image)."""
        c = self.cfg
        if primitive is None:
            primitive = str(rng.choice(self._names, p=self._weights))
        hi, pts = self.draw(rng, primitive)
        s = c.render_scale
        img = cv2.resize(hi, (c.width, c.height), interpolation=cv2.INTER_AREA) if s > 1 else hi
        pts = (pts + 0.5) / s - 0.5
        if blur_and_noise:
            sigma = rng.uniform(*c.blur_sigma)
            f = img.astype(np.float32)
            if sigma > 0.05:
                f = cv2.GaussianBlur(f, (0, 0), sigma)
            std = rng.uniform(*c.noise_std)
            if std > 0:
                f = f + rng.normal(0, std, f.shape).astype(np.float32)
            img = np.clip(np.round(f), 0, 255).astype(np.uint8)
        inside = (pts[:, 0] >= 0) & (pts[:, 0] <= c.width - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= c.height - 1)
        return img, pts[inside].astype(np.float32)
