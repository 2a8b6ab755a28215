"""Training pairs rendered from the synthetic office scenes (:mod:`slam.synth`), with exact
depth and poses: two cameras looking at a common target with a chosen baseline, relative
rotation and overlap. Correspondences follow from :func:`slam.geometry.depth_warp.warp_points`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera, as_pinhole_camera
from slam.geometry.depth_warp import warp_points
from slam.synth.config import Realism, parse_dataclass
from slam.synth.effects import SensorEffects
from slam.synth.motion import look_at
from slam.synth.office import make_office
from slam.synth.profiles import FR1_CAMERA
from slam.synth.raycast import renderer_for
from slam.synth.scene import Scene

__all__ = ["sample_pair"]


def sample_pair(seed: int, scene: Optional[Scene] = None, camera=None, max_rotation_deg: float = 30.0,
                baseline: tuple = (0.05, 0.5), min_overlap: float = 0.3, realism: Optional[dict] = None,
                max_tries: int = 30) -> dict:
    """A random image pair of a synthetic scene with exact geometry, for training.

    seed: drives the poses (and the scene when ``scene`` is None: ``make_office(seed)``; pass a
    prebuilt scene to amortise its ~1 s construction over many pairs). camera: PinholeCamera
    or dict (default TUM fr1). The two cameras look at a common target with a baseline in
    ``baseline`` (m) and a relative rotation <= ``max_rotation_deg``; at least ``min_overlap``
    of image 0 is visible in image 1. realism: optional Realism fields (dict) applied to
    both images (no motion blur).

    Returns dict(image0, image1: (H, W, 3) uint8 BGR; depth0, depth1: (H, W) float32 metres,
    exact, 0 = nothing; cam0_from_world, cam1_from_world: (4, 4) float64; camera:
    PinholeCamera; overlap: float). Use :func:`warp_points` for correspondences.
    """
    cam = as_pinhole_camera(camera) if camera is not None else PinholeCamera.from_dict(FR1_CAMERA)
    if scene is None:
        scene = make_office(seed)
    rng = np.random.default_rng([int(seed), 5])
    rend = renderer_for(cam)
    lo, hi = scene.anchors["room_min"], scene.anchors["room_max"]
    desk = scene.anchors["desk_center"]
    dsz = scene.anchors.get("desk_size", np.array([1.5, 0.8]))
    eff = SensorEffects(parse_dataclass(Realism, realism or {}, "realism"), rend, int(seed), 30.0) if realism else None
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
