"""Sub-pixel alignment of tracked keypoints to their map point's reference patch.

A detector places a keypoint anew in every image. On blurred frames learned detectors place it
loosely: on synthetic/fast (up to 140 deg/s), XFeat's keypoint in a frame lies a median 2.2 px
from where the keyframe's keypoint of the same point projects at the true pose, ORB's 1.6 px.
Aligning a patch of the current image to the image patch around the point's reference keypoint
brings this to about 0.5 px for both at the same frames (``docs/benchmarks.md`` section 14,
"Keypoints aligned to their reference patch"). So every tracked observation of a point becomes
consistent with one reference observation, as in KLT-based odometry. ``tracking.patch_align``
turns it on in RGB-D and stereo runs by default (``depth``); monocular runs gained on some
sequences and broke on others, so they keep the detections unless it is ``always``.

- :class:`PatchStore` (one per map, ``Map.patches``): per map point a 21 x 21 uint8 grey patch
  around its reference keypoint (distorted pixels of the reference keyframe's image), the
  reference camera's rotation and undistorted position, and the point's depth there.
- :meth:`PatchAligner.on_keyframe` (tracking thread, map lock held): a new keyframe gives patches
  to the points it and the two keyframes before it observe that have none yet (points that
  local mapping triangulated for those keyframes included: the mapping handoff has placed them by
  then, so threaded and synchronous runs stay equal).
- :meth:`PatchAligner.refine` (tracking, after the local-map search, before the final pose):
  for each keypoint matched to a point with a patch, the template is the reference patch warped
  by the predicted image motion (the rotation's homography K R K^-1, the depth ratio and both
  images' distortion, linearised at the point), compared on a 15 x 15 window by zero-mean
  normalised differences; Gauss-Newton on the 2-D shift from the detected position. Accepted
  when the shift stays within ``tracking.patch_align_max_px`` and the normalised correlation
  reaches ``tracking.patch_align_min_zncc``; otherwise the detected position stays. The frame's
  ``kp_uv`` (undistorted) is replaced; its detected positions are kept in ``kp_uv_detected``.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Optional

import cv2
import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import transform_points
from slam.types import has_depth

PATCH = 21  # stored patch side (px); the window is warped inside it
WINDOW = 15  # aligned window side (px)
_HALF_P = PATCH // 2


def _offsets(side: int, half: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y offsets, (1, side * side) float32 each, of a side x side pixel grid from -half,
    row by row. Kept as two rows rather than one (side * side, 2) array: coordinates built from
    them are (n, side * side), whose long last axis numpy broadcasts about 10x faster than an
    (n, k, 2) array's axis of 2."""
    gx, gy = np.meshgrid(np.arange(side) - half, np.arange(side) - half)
    return gx.reshape(1, -1).astype(np.float32), gy.reshape(1, -1).astype(np.float32)


_GX, _GY = _offsets(WINDOW, WINDOW // 2)  # the aligned window
_GX_WIDE, _GY_WIDE = _offsets(WINDOW + 2, WINDOW // 2 + 1)  # one pixel wider (template gradients)
_PGX, _PGY = _offsets(PATCH, _HALF_P)  # the stored patch
_RECENT_KEYFRAMES = 3  # the new keyframe and the two before it give patches
_MAX_SCALE = 1.25  # largest scale change between the reference patch and the current view
_PATCH_CHUNK = 1024  # patches per stacked template image (cv2.remap takes images under 32767 rows)


class PatchStore:
    """Reference patches of one map's points, indexed by point id (grown on demand).

    patch (P, 21, 21) uint8 grey; ok (P,) bool (a patch is stored); rot (P, 3, 3) float32
    cam_from_world rotation of the reference keyframe; uv (P, 2) float64 undistorted pixel of the
    reference keypoint; depth (P,) float32 metres (map units) of the point in the reference camera."""

    def __init__(self) -> None:
        self.patch = np.zeros((0, PATCH, PATCH), dtype=np.uint8)
        self.ok = np.zeros(0, dtype=bool)
        self.rot = np.zeros((0, 3, 3), dtype=np.float32)
        self.uv = np.zeros((0, 2))
        self.depth = np.zeros(0, dtype=np.float32)

    def ensure(self, n: int) -> None:
        cap = len(self.ok)
        if n <= cap:
            return
        new = max(n, 2 * cap, 1024)
        for name in ("patch", "ok", "rot", "uv", "depth"):
            old = getattr(self, name)
            arr = np.zeros((new,) + old.shape[1:], dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)


def _sample_xy(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of a float32 (H, W) image at float32 (n, k) x and y -> (n, k) float32
    (edges replicated). OpenCV needs H, W, n, k < 32767."""
    return cv2.remap(image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def patch_align_on(setting: str, mode: str) -> bool:
    """Whether ``tracking.patch_align`` (never | depth | always) aligns keypoints in this mode."""
    return setting == "always" or (setting == "depth" and has_depth(mode))


class PatchAligner:
    """Keeps the map points' reference patches and aligns tracked keypoints to them (module docstring)."""

    def __init__(self, camera: PinholeCamera, max_px: float = 6.0, min_zncc: float = 0.7, iterations: int = 10) -> None:
        self.camera = camera
        self.K = camera.K
        self.K_inv = np.linalg.inv(camera.K)
        self.max_px = float(max_px)
        self.min_zncc = float(min_zncc)
        self.iterations = int(iterations)
        self._recent: deque = deque(maxlen=_RECENT_KEYFRAMES)  # (kf id, grey image); one Map holds every map of the atlas
        self._img: Optional[tuple] = None  # (frame, float32 grey image) of the frame being tracked
        self.n_refined = 0  # tracked observations moved to their aligned position (whole run)
        self.n_tried = 0
        self.ms = 0.0  # time spent aligning (whole run)
        self.n_calls = 0

    def stats(self) -> dict:
        """For metrics.json: observations tried / moved, total and mean time per call."""
        return {"enabled": True, "tried": self.n_tried, "aligned": self.n_refined, "ms_total": round(self.ms, 1),
                "ms_per_call": round(self.ms / max(self.n_calls, 1), 2)}

    # ------------------------------------------------------------------------------ patches
    def on_keyframe(self, m, kf, image: Optional[np.ndarray]) -> None:
        """kf became a keyframe of map m with its frame's grey image ((H, W) uint8, or None).
        Caller holds the map lock."""
        if image is None:
            return
        if m.patches is None:
            m.patches = PatchStore()
        self._recent.append((kf.id, image))
        for kf_id, img in self._recent:
            if kf_id in m.keyframes:
                self._extract(m, m.keyframes[kf_id], img)

    def _extract(self, m, kf, image: np.ndarray) -> None:
        store = m.patches
        store.ensure(m.n_points)
        idx = np.nonzero(kf.point_ids >= 0)[0]
        pids = kf.point_ids[idx]
        need = ~store.ok[pids] & m.pts_alive[pids]
        idx, pids = idx[need], pids[need]
        if len(idx) == 0:
            return
        pc = transform_points(kf.cam_from_world, m.pts_xyz[pids])
        front = pc[:, 2] > 1e-6
        idx, pids, pc = idx[front], pids[front], pc[front]
        raw = kf.features.keypoints_np[idx].astype(np.float64)
        img = image.astype(np.float32)
        vals = _sample_xy(img, (raw[:, 0, None] + _PGX).astype(np.float32), (raw[:, 1, None] + _PGY).astype(np.float32))
        store.patch[pids] = np.clip(np.rint(vals), 0, 255).astype(np.uint8).reshape(-1, PATCH, PATCH)
        store.ok[pids] = True
        store.rot[pids] = kf.cam_from_world[:3, :3].astype(np.float32)
        store.uv[pids] = kf.kp_uv[idx]
        store.depth[pids] = pc[:, 2].astype(np.float32)

    # ------------------------------------------------------------------------------ alignment
    def _image(self, fr) -> np.ndarray:
        """fr's grey image as float32 (H, W), converted once per frame."""
        if self._img is None or self._img[0] is not fr:
            self._img = (fr, fr.image.astype(np.float32))
        return self._img[1]

    def _warps(self, store, pids: np.ndarray, uv_cur: np.ndarray, cam_from_world: np.ndarray, depth_cur: np.ndarray) -> np.ndarray:
        """(N, 2, 2) linear maps from reference-image offsets to current-image offsets (distorted px)."""
        R_rel = cam_from_world[:3, :3] @ store.rot[pids].astype(np.float64).transpose(0, 2, 1)  # (N, 3, 3)
        H = self.K @ R_rel @ self.K_inv
        u_ref = store.uv[pids]
        h = np.einsum("nij,nj->ni", H, np.concatenate([u_ref, np.ones((len(pids), 1))], axis=1))
        u_h = h[:, :2] / h[:, 2:3]
        J = (H[:, :2, :2] - u_h[:, :, None] * H[:, 2:3, :2]) / h[:, 2, None, None]
        J *= (store.depth[pids].astype(np.float64) / np.maximum(depth_cur, 1e-9))[:, None, None]
        D_ref = self.camera.distortion_jacobian(u_ref)
        D_cur = self.camera.distortion_jacobian(uv_cur)
        return D_cur @ J @ np.linalg.inv(D_ref)

    def refine(self, m, fr, cam_from_world: np.ndarray, point_ids: np.ndarray) -> int:
        """Align fr's keypoints matched to points with a patch (point_ids (N,) int64, -1 none)
        at the pose estimate cam_from_world (4, 4); replaces fr.kp_uv (N, 2) undistorted px.
        Returns the number of keypoints moved. Caller holds the map lock."""
        if fr.image is None or m.patches is None:
            return 0
        t0 = time.perf_counter()
        try:
            return self._refine(m, fr, cam_from_world, point_ids)
        finally:
            self.ms += (time.perf_counter() - t0) * 1e3
            self.n_calls += 1

    def _refine(self, m, fr, cam_from_world: np.ndarray, point_ids: np.ndarray) -> int:
        if fr.kp_uv_detected is None:
            fr.kp_uv_detected = fr.kp_uv
        uv = fr.kp_uv_detected.copy()
        store = m.patches
        idx = np.nonzero((point_ids >= 0) & (point_ids < len(store.ok)))[0]
        idx = idx[store.ok[point_ids[idx]]]
        pids = point_ids[idx]
        pc = transform_points(cam_from_world, m.pts_xyz[pids])
        keep = pc[:, 2] > 1e-6
        idx, pids, pc = idx[keep], pids[keep], pc[keep]
        if len(idx) == 0:
            fr.kp_uv = uv
            return 0
        A = self._warps(store, pids, uv[idx], cam_from_world, pc[:, 2])
        det = np.linalg.det(A)  # area ratio: the reference patch must look alike (scale within 1.25x)
        ok = (det > 1.0 / _MAX_SCALE ** 2) & (det < _MAX_SCALE ** 2)
        idx, pids, A = idx[ok], pids[ok], A[ok]
        n = len(idx)
        if n == 0:
            fr.kp_uv = uv
            return 0
        # template: the reference patch at A^-1 g on a grid one pixel wider than the window (for
        # its gradients; stacked patches, clamped inside each one), normalised to zero mean, unit std
        Ai = np.linalg.inv(A).astype(np.float32)
        sx = Ai[:, 0, 0, None] * _GX_WIDE + Ai[:, 0, 1, None] * _GY_WIDE  # (n, (W+2)^2) offsets in the patch
        sy = Ai[:, 1, 0, None] * _GX_WIDE + Ai[:, 1, 1, None] * _GY_WIDE
        sx += np.float32(_HALF_P)
        sy += np.float32(_HALF_P)
        np.clip(sx, 0.0, PATCH - 1.0, out=sx)
        np.clip(sy, 0.0, PATCH - 1.0, out=sy)
        Tw = np.empty((n, (WINDOW + 2) ** 2), dtype=np.float32)
        for i in range(0, n, _PATCH_CHUNK):  # the patches stacked into one image, as tall as OpenCV allows
            j = min(i + _PATCH_CHUNK, n)
            stack = store.patch[pids[i:j]].reshape((j - i) * PATCH, PATCH).astype(np.float32)
            Tw[i:j] = _sample_xy(stack, sx[i:j], sy[i:j] + (np.arange(j - i, dtype=np.float32) * PATCH)[:, None])
        Tw = Tw.reshape(n, WINDOW + 2, WINDOW + 2)
        T = Tw[:, 1:-1, 1:-1].reshape(n, -1)
        mu, sd = T.mean(1, keepdims=True), T.std(1, keepdims=True) + 1e-3
        T = (T - mu) / sd
        # inverse compositional Gauss-Newton on the shift: the template's gradients (zero-mean, so
        # the current window's mean drops out) and Hessian once; per iteration one sampling
        Jx = (Tw[:, 1:-1, 2:] - Tw[:, 1:-1, :-2]).reshape(n, -1) * (0.5 / sd)  # (n, W*W)
        Jy = (Tw[:, 2:, 1:-1] - Tw[:, :-2, 1:-1]).reshape(n, -1) * (0.5 / sd)
        Jx -= Jx.mean(1, keepdims=True)
        Jy -= Jy.mean(1, keepdims=True)
        a, b, c = (Jx * Jx).sum(1), (Jx * Jy).sum(1), (Jy * Jy).sum(1)
        det2 = a * c - b * b
        solvable = det2 > 1e-6 * (a + c) ** 2
        inv_det = np.where(solvable, 1.0 / np.where(solvable, det2, 1.0), 0.0)
        jtx, jty = (Jx * T).sum(1), (Jy * T).sum(1)
        img = self._image(fr)
        start = fr.features.keypoints_np[idx].astype(np.float32)
        xy = start.copy()
        active = np.nonzero(solvable)[0]
        npx = float(WINDOW * WINDOW)
        for _ in range(self.iterations):
            if len(active) == 0:
                break
            Ic = _sample_xy(img, xy[active, 0, None] + _GX, xy[active, 1, None] + _GY)
            m1 = Ic.sum(1) / npx
            sd_c = np.sqrt(np.maximum((Ic * Ic).sum(1) / npx - m1 * m1, 0.0)) + 1e-3
            ex = (Jx[active] * Ic).sum(1) / sd_c - jtx[active]  # J . (normalised window - template)
            ey = (Jy[active] * Ic).sum(1) / sd_c - jty[active]
            dx = (c[active] * ex - b[active] * ey) * inv_det[active]
            dy = (a[active] * ey - b[active] * ex) * inv_det[active]
            norm = np.sqrt(dx * dx + dy * dy)
            f = np.minimum(1.0, 2.0 / np.maximum(norm, 1e-12))
            xy[active, 0] -= dx * f
            xy[active, 1] -= dy * f
            active = active[norm > 0.05]
        Ic = _sample_xy(img, xy[:, 0, None] + _GX, xy[:, 1, None] + _GY)
        Ic = (Ic - Ic.mean(1, keepdims=True)) / (Ic.std(1, keepdims=True) + 1e-3)
        zncc = (Ic * T).mean(1)
        xy = xy.astype(np.float64)
        h, w = img.shape
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)
        acc = solvable & inside & (np.linalg.norm(xy - start, axis=1) <= self.max_px) & (zncc >= self.min_zncc)
        if acc.any():
            uv[idx[acc]] = self.camera.undistort_points(xy[acc])
        fr.kp_uv = uv
        self.n_tried += n
        self.n_refined += int(acc.sum())
        return int(acc.sum())
