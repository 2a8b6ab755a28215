"""Tests of the synthetic RGB-D renderer (slam.io.synthetic): exact geometry, TUM output,
determinism and caching. Renders only a few small frames."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation

from slam.geometry.camera import PinholeCamera
from slam.io import synthetic as syn

REPO = Path(__file__).resolve().parents[1]
FR1 = PinholeCamera.from_dict(syn.FR1_CAMERA)
HALF = FR1.scaled(0.5, 0.5)  # 320x240, same distortion


def _pixel_rays(cam: PinholeCamera) -> np.ndarray:
    """(H*W, 3) undistorted rays (xn, yn, 1) of every pixel via cv2.undistortPoints (independent
    of the renderer's own undistortion)."""
    ys, xs = np.mgrid[0:cam.height, 0:cam.width]
    uv = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    xn = cv2.undistortPoints(uv, cam.K, cam.dist_array, criteria=crit).reshape(-1, 2)
    return np.concatenate([xn, np.ones((xn.shape[0], 1))], 1)


def _blob_texture(n: int, centres, sigma: float) -> np.ndarray:
    """Light texture with dark Gaussian blobs at texture coordinates ``centres`` (fractions)."""
    yy, xx = np.mgrid[0:n, 0:n]
    shade = np.ones((n, n))
    for bx, by in centres:
        shade *= 1.0 - 0.9 * np.exp(-(((xx + 0.5) / n - bx) ** 2 + ((yy + 0.5) / n - by) ** 2) / (2 * sigma ** 2))
    return np.repeat((230 * shade)[..., None], 3, axis=2).astype(np.uint8)


def _tilted_quad_scene(tex: np.ndarray) -> syn.Scene:
    sc = syn.Scene()
    ea = np.array([1.0, 0.15, 0.0])
    eb = np.array([0.0, 0.35, -1.0])
    sc.add_quad([-0.5, 2.0, 1.6], ea, eb, (1.0, 1.0), tex, name="panel")
    return sc


CAMS_FROM_WORLD = [np.linalg.inv(syn.look_at(e, t, r)) for e, t, r in (
    (np.array([0.1, 0.8, 1.2]), np.array([0.1, 2.2, 1.1]), 0.1),
    (np.array([-0.3, 0.9, 1.0]), np.array([0.0, 2.3, 1.2]), -0.2),
)]


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("k", range(len(CAMS_FROM_WORLD)))
def test_plane_depth_equals_analytic_depth(k):
    sc = _tilted_quad_scene(np.full((64, 64, 3), 200, np.uint8))
    cam_from_world = CAMS_FROM_WORLD[k]
    _, depth = syn.render_view(sc, HALF, cam_from_world)
    face = sc.faces[0]
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    n_c = R @ face.normal
    dist = n_c @ (R @ face.origin + t)  # plane n.X = dist in the camera frame
    rays = _pixel_rays(HALF)
    z = (dist / (rays @ n_c)).reshape(HALF.height, HALF.width)
    hit = depth > 0
    assert hit.mean() > 0.2, "the plane should cover a good part of the image"
    assert np.abs(depth[hit] - z[hit]).max() < 1e-5  # metres; depth is z, not the ray length
    # every pixel whose analytic ray hits inside the rectangle is drawn (2 px slack at its border)
    P = R.T @ ((rays * z.reshape(-1, 1)) - t).T  # world points
    rel = P.T - face.origin
    u, v = rel @ face.ea, rel @ face.eb
    inside = ((u > 0.01) & (u < 0.99) & (v > 0.01) & (v < 0.99)).reshape(depth.shape)
    assert hit[inside].all()


def test_room_wall_depth_and_face_ids():
    sc = syn.Scene()
    tex = np.full((32, 32, 3), 128, np.uint8)
    sc.add_box([0.0, 0.0, 1.25], [2.0, 3.0, 1.25], [tex] * 6, inside=True, name="room")
    cam_from_world = np.linalg.inv(syn.look_at([0.3, -0.5, 1.4], [1.2, 3.0, 1.0], 0.05))
    out = syn.Renderer(HALF).render(sc, cam_from_world)
    wall = sc.primitives[0].faces[3]  # +y wall at y = 3
    m = out.face == wall
    assert m.mean() > 0.3
    rays = _pixel_rays(HALF)
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    c = -R.T @ t
    d_world = rays @ R  # rows: R^T ray
    z = ((3.0 - c[1]) / d_world[:, 1]).reshape(out.depth.shape)
    assert np.abs(out.depth[m] - z[m]).max() < 1e-5
    assert (out.depth > 0).all(), "inside a closed room every pixel hits a wall"


def test_cylinder_points_lie_on_the_cylinder():
    sc = syn.Scene()
    side = np.full((64, 256, 3), 150, np.uint8)
    cyl = sc.add_cylinder([0.2, 2.0, 0.5], 0.15, 0.4, side, np.full((32, 32, 3), 90, np.uint8))
    cam_from_world = np.linalg.inv(syn.look_at([0.0, 1.2, 1.3], [0.2, 2.0, 0.7]))
    out = syn.Renderer(HALF).render(sc, cam_from_world)
    rays = _pixel_rays(HALF)
    P = (rays * out.depth.reshape(-1, 1)) @ cam_from_world[:3, :3] - cam_from_world[:3, :3].T @ cam_from_world[:3, 3]
    side_px = (out.face == cyl.faces[0]).ravel()
    top_px = (out.face == cyl.faces[1]).ravel()
    assert side_px.sum() > 500 and top_px.sum() > 100
    r = np.hypot(P[side_px, 0] - 0.2, P[side_px, 1] - 2.0)
    assert np.abs(r - 0.15).max() < 1e-4
    assert np.abs(P[top_px, 2] - 0.9).max() < 1e-4


@pytest.mark.parametrize("k", range(len(CAMS_FROM_WORLD)))
def test_projected_marker_lands_where_drawn(k):
    """A known 3D point (centre of a small dark blob drawn on a tilted panel), projected with the
    pose and cv2.projectPoints (with the fr1 distortion), lands within 0.5 px of the blob's
    intensity centroid in the rendered image."""
    centres = [(0.3, 0.6), (0.8, 0.2), (0.12, 0.15), (0.85, 0.85)]
    sc = _tilted_quad_scene(_blob_texture(800, centres, 0.006))
    cam_from_world = CAMS_FROM_WORLD[k]
    bgr, _ = syn.render_view(sc, FR1, cam_from_world)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)
    face = sc.faces[0]
    rvec, _ = cv2.Rodrigues(cam_from_world[:3, :3])
    checked = 0
    for bx, by in centres:
        P = face.origin + bx * face.size[0] * face.ea + by * face.size[1] * face.eb
        uv, _ = cv2.projectPoints(P[None], rvec, cam_from_world[:3, 3], FR1.K, FR1.dist_array)
        u, v = uv.ravel()
        x0, y0, r = int(round(u)), int(round(v)), 12
        if not (r <= x0 < FR1.width - r and r <= y0 < FR1.height - r):
            continue
        patch = 255.0 - grey[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
        patch = np.maximum(patch - np.median(patch), 0.0)
        ys, xs = np.mgrid[-r:r + 1, -r:r + 1]
        cx, cy = (patch * xs).sum() / patch.sum() + x0, (patch * ys).sum() / patch.sum() + y0
        assert np.hypot(cx - u, cy - v) < 0.5, (bx, by, (u, v), (cx, cy))
        checked += 1
    assert checked >= 3


def test_depth_png_roundtrip_and_warp_points():
    sc = _tilted_quad_scene(_blob_texture(400, [(0.5, 0.5)], 0.01))
    c0, c1 = CAMS_FROM_WORLD
    _, d0 = syn.render_view(sc, HALF, c0)
    _, d1 = syn.render_view(sc, HALF, c1)
    d16 = np.round(d0 * syn.DEPTH_FACTOR).astype(np.uint16)
    ok, buf = cv2.imencode(".png", d16)
    back = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float64) / syn.DEPTH_FACTOR
    assert np.abs(back - d0).max() <= 0.5 / syn.DEPTH_FACTOR + 1e-6
    # exact correspondences: the panel's point seen at p0 is seen at warp(p0) in view 1
    ys, xs = np.mgrid[10:HALF.height - 10:20, 10:HALF.width - 10:20]
    p0 = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    p1, valid = syn.warp_points(p0, d0, HALF, c1 @ np.linalg.inv(c0), d1)
    assert valid.sum() > 20
    # back-project both into the world: same 3D point
    rays0 = _pixel_rays(HALF).reshape(HALF.height, HALF.width, 3)
    X0 = rays0[p0[valid, 1].astype(int), p0[valid, 0].astype(int)] * d0[p0[valid, 1].astype(int), p0[valid, 0].astype(int), None]
    W0 = (X0 - c0[:3, 3]) @ c0[:3, :3]
    uv, _ = cv2.projectPoints(W0, cv2.Rodrigues(c1[:3, :3])[0], c1[:3, 3], HALF.K, HALF.dist_array)
    assert np.abs(uv.reshape(-1, 2) - p1[valid]).max() < 1e-3


# ----------------------------------------------------------------------------- sequences
def _small_manifest(name: str = "tiny", frames: int = 3) -> dict:
    """The default profile on a 320x240 fr1-like camera at 3 Hz (so that frames differ)."""
    m = copy.deepcopy(syn.PROFILES["default"])
    m.update(name=name, frames=frames, camera=HALF.to_dict(), fps=3.0)
    m["realism"]["exposure_time"] = 0.02
    return m


@pytest.fixture(scope="module")
def tiny_seq(tmp_path_factory) -> Path:
    return syn.render_sequence(_small_manifest(), tmp_path_factory.mktemp("syn") / "tiny")


def _read_list(path: Path) -> list:
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return rows


def test_tum_files_parse(tiny_seq: Path):
    rgb, depth, gt = (_read_list(tiny_seq / f) for f in ("rgb.txt", "depth.txt", "groundtruth.txt"))
    assert len(rgb) == len(depth) == len(gt) == 3
    for (ts_r, f_r), (ts_d, f_d), g in zip(rgb, depth, gt):
        assert ts_r == ts_d == g[0]
        assert len(g) == 8
        img = cv2.imread(str(tiny_seq / f_r), cv2.IMREAD_UNCHANGED)
        dep = cv2.imread(str(tiny_seq / f_d), cv2.IMREAD_UNCHANGED)
        assert img.shape == (HALF.height, HALF.width, 3) and img.dtype == np.uint8
        assert dep.shape == (HALF.height, HALF.width) and dep.dtype == np.uint16
        z = dep[dep > 0] / 5000.0
        assert 0.9 * z.size > 0 and 0.3 <= z.min() and z.max() < 6.0  # metres: factor 5000
        q = np.array(g[4:8], float)
        assert abs(np.linalg.norm(q) - 1.0) < 1e-6
    ts = np.array([float(r[0]) for r in rgb])
    assert np.allclose(np.diff(ts), 1 / 3.0, atol=2e-6)
    cam = yaml.safe_load((tiny_seq / "camera.yaml").read_text())
    assert cam["dataset"] == "synthetic" and cam["depth_factor"] == 5000 and cam["fps"] == 3.0
    assert PinholeCamera.from_dict(cam["camera"]) == HALF
    assert syn.read_camera_manifest(tiny_seq) == HALF == PinholeCamera.from_yaml(tiny_seq / "camera.yaml")
    stamp = json.loads((tiny_seq / "stamp.json").read_text())
    assert stamp["hash"] == syn.manifest_hash(syn.load_manifest(_small_manifest()))


def test_groundtruth_is_world_from_cam(tiny_seq: Path):
    """The written poses + depth predict where image 0's corners appear in image 2."""
    gt = np.array(_read_list(tiny_seq / "groundtruth.txt"), float)

    def world_from_cam(i):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat(gt[i, 4:8]).as_matrix()
        T[:3, 3] = gt[i, 1:4]
        return T

    im0 = cv2.imread(str(tiny_seq / "rgb" / "000000.png"), cv2.IMREAD_GRAYSCALE)
    im2 = cv2.imread(str(tiny_seq / "rgb" / "000002.png"), cv2.IMREAD_GRAYSCALE)
    d0 = cv2.imread(str(tiny_seq / "depth" / "000000.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 5000.0
    p0 = cv2.goodFeaturesToTrack(im0, 400, 0.01, 6).reshape(-1, 2).astype(np.float64)
    pred, valid = syn.warp_points(p0, d0, HALF, np.linalg.inv(world_from_cam(2)) @ world_from_cam(0))
    assert valid.sum() > 100
    p0, pred = p0[valid].astype(np.float32), pred[valid].astype(np.float32)
    p2, st, _ = cv2.calcOpticalFlowPyrLK(im0, im2, p0, pred.copy(), winSize=(15, 15), maxLevel=2,
                                         flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    err = np.linalg.norm(p2 - pred, axis=1)[st.ravel() == 1]
    assert np.median(err) < 0.3
    moved = np.linalg.norm(pred - p0, axis=1)
    assert np.median(moved) > 2.0  # the camera did move, so a wrong pose would show


def test_render_is_deterministic(tiny_seq: Path, tmp_path: Path):
    again = syn.render_sequence(_small_manifest(), tmp_path / "again")
    files = sorted(p.relative_to(tiny_seq) for p in tiny_seq.rglob("*") if p.is_file() and p.name != "stamp.json")
    assert len(files) == 3 * 2 + 4
    for f in files:
        assert (tiny_seq / f).read_bytes() == (again / f).read_bytes(), f


def test_ensure_sequence_caches(tmp_path: Path, capsys):
    (tmp_path / "synthetic").mkdir()
    m = _small_manifest("cached", frames=2)
    (tmp_path / "synthetic" / "cached.yaml").write_text(yaml.safe_dump(m))
    out = syn.ensure_sequence("cached", tmp_path)
    assert out == tmp_path / "synthetic" / "cached"
    assert "rendering" in capsys.readouterr().out
    stamp_before = (out / "stamp.json").stat().st_mtime_ns
    assert syn.ensure_sequence("cached", tmp_path) == out
    assert capsys.readouterr().out == ""  # reused, not re-rendered
    assert (out / "stamp.json").stat().st_mtime_ns == stamp_before
    # a changed manifest makes the cache stale
    m["realism"]["noise_sigma"] = 2.0
    (tmp_path / "synthetic" / "cached.yaml").write_text(yaml.safe_dump(m))
    assert not syn.sequence_is_current(out, syn.load_manifest("cached", tmp_path))


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(syn.InputError, match="refusing to overwrite"):
        syn.render_sequence(_small_manifest(), tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"


# ----------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("name", sorted(syn.PROFILES))
def test_manifest_files_match_profiles(name):
    path = REPO / "sequences" / "synthetic" / f"{name}.yaml"
    assert path.is_file(), f"missing manifest {path}"
    assert syn.load_manifest(path) == syn.load_manifest(name)


def test_bad_manifest_errors_name_the_key():
    m = _small_manifest()
    m["motion"]["amplitud"] = 0.3
    with pytest.raises(syn.InputError, match="amplitud"):
        syn.load_manifest(m)
    m = _small_manifest()
    m["motion"]["type"] = "spiral"
    with pytest.raises(syn.InputError, match="sweep"):
        syn.load_manifest(m)
    with pytest.raises(syn.InputError, match="default"):
        syn.load_manifest("no_such_profile")


# ----------------------------------------------------------------------------- scene
@pytest.fixture(scope="module")
def default_scene() -> syn.Scene:
    return syn.make_scene(syn.PROFILES["default"]["seed"])


def test_default_view_is_well_textured(default_scene):
    m = syn.load_manifest("default")
    traj = syn.Trajectory(default_scene, m["motion"], m["seed"])
    bgr, depth = syn.render_view(default_scene, FR1, np.linalg.inv(traj.world_from_cam(0.0)))
    assert 1.0 <= np.percentile(depth, 5) and np.percentile(depth, 95) <= 4.0  # scene 1-4 m away
    kps = cv2.ORB_create(2000).detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert len(kps) > 1000
    pts = np.array([k.pt for k in kps])
    cells = np.histogram2d(pts[:, 1], pts[:, 0], bins=[3, 3], range=[[0, 480], [0, 640]])[0]
    assert (cells >= 20).all(), cells  # spread over the whole image


def test_sample_pair_has_exact_correspondences(default_scene):
    pair = syn.sample_pair(7, scene=default_scene, camera=HALF)
    assert pair["image0"].shape == (HALF.height, HALF.width, 3) and pair["depth1"].dtype == np.float32
    assert pair["overlap"] >= 0.3
    c1_from_c0 = pair["cam1_from_world"] @ np.linalg.inv(pair["cam0_from_world"])
    ys, xs = np.mgrid[8:HALF.height - 8:6, 8:HALF.width - 8:6]
    p0 = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    p1, valid = syn.warp_points(p0, pair["depth0"], HALF, c1_from_c0, pair["depth1"])
    assert valid.sum() > 200
    g0 = cv2.cvtColor(pair["image0"], cv2.COLOR_BGR2GRAY).astype(np.float32)
    g1 = cv2.cvtColor(pair["image1"], cv2.COLOR_BGR2GRAY).astype(np.float32)
    v0 = g0[p0[valid, 1].astype(int), p0[valid, 0].astype(int)]
    v1 = cv2.remap(g1, p1[valid, 0].astype(np.float32)[None], p1[valid, 1].astype(np.float32)[None],
                   cv2.INTER_LINEAR)[0]
    # same surface point, same (Lambertian) colour, up to mip-level and interpolation differences
    assert np.median(np.abs(v0 - v1)) < 6.0
    shuffled = np.median(np.abs(v0 - np.roll(v1, 17)))
    assert shuffled > 3 * max(np.median(np.abs(v0 - v1)), 1.0)


def test_culling_is_exact(default_scene):
    """Per-primitive pixel bounding boxes never drop a pixel: same image as testing every pixel."""
    m = syn.load_manifest("desk")
    traj = syn.Trajectory(default_scene, m["motion"], m["seed"])
    culled, brute = syn.Renderer(HALF), syn.Renderer(HALF)
    brute._pixel_bbox = lambda pts: (0, HALF.height, 0, HALF.width)
    for t in (0.0, 4.0, 9.0):
        cam_from_world = np.linalg.inv(traj.world_from_cam(t))
        a, b = culled.render(default_scene, cam_from_world), brute.render(default_scene, cam_from_world)
        assert np.array_equal(a.face, b.face) and np.array_equal(a.bgr, b.bgr)


def test_motion_blur_follows_the_motion(default_scene):
    m = syn.load_manifest("fast")  # fastest yaw at t = 0: mostly horizontal image motion
    traj = syn.Trajectory(default_scene, m["motion"], m["seed"])
    renderer = syn.Renderer(HALF)
    cam_from_world = np.linalg.inv(traj.world_from_cam(0.0))
    out = renderer.render(default_scene, cam_from_world)
    sharp = syn._FrameEffects(syn.Realism(), renderer, 0, 30.0).color(out, 0, traj.world_from_cam, cam_from_world)
    blurred = syn._FrameEffects(syn.Realism(exposure_time=0.35), renderer, 0, 30.0).color(
        out, 0, traj.world_from_cam, cam_from_world)
    assert np.array_equal(sharp, out.bgr)  # no effects configured: the clean render

    def grad(img, axis):
        return np.abs(np.diff(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32), axis=axis)).mean()

    assert grad(blurred, 1) < 0.6 * grad(sharp, 1)  # strongly smoothed along x
    assert grad(blurred, 1) / grad(sharp, 1) < grad(blurred, 0) / grad(sharp, 0)  # less along y
