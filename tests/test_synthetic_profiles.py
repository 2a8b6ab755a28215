"""Ground truth of the synthetic profiles made for loop closing, fast motion, forward motion and
stereo (loop, loop_short, fast_blur, corridor, stereo): depth reprojects between frames with the
known poses, the loops come back to their start, the corridor camera moves along its optical
axis, the stereo pair's disparity is fx * b / depth. Renders small clean views only."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from slam.geometry.camera import PinholeCamera
from slam.geometry.depth_warp import warp_points
from slam.io.trajectory import read_tum
from slam.io.tum import read_file_list
from slam.synth.dataset import DEPTH_FACTOR, make_scene, read_stereo_rig, render_sequence, right_from_left
from slam.synth.manifest import load_manifest, manifest_camera
from slam.synth.motion import Trajectory
from slam.synth.raycast import Renderer

NEW_PROFILES = ("loop", "loop_short", "fast_blur", "corridor", "stereo")


def _manifest(name: str) -> dict:
    m = load_manifest(name)
    if m["scene"]["type"] == "corridor":
        m["scene"]["length"] = 12.0  # the same corridor, shorter: a cheap scene for the test
    return m


@pytest.fixture(scope="module")
def worlds() -> dict:
    """name -> (manifest, scene, trajectory, half-resolution renderer); one scene per seed."""
    scenes: dict = {}
    out = {}
    for name in NEW_PROFILES:
        m = _manifest(name)
        key = (m["seed"], tuple(sorted(m["scene"].items())))
        if key not in scenes:
            scenes[key] = make_scene(m)
        cam = manifest_camera(m).scaled(0.5, 0.5)
        out[name] = (m, scenes[key], Trajectory(scenes[key], m["motion"], m["seed"]), Renderer(cam))
    return out


def _grey(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)


def _angle_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)))


@pytest.mark.parametrize("name", NEW_PROFILES)
def test_depth_reprojects_between_frames_with_the_poses(worlds, name):
    m, scene, traj, rend = worlds[name]
    cam = rend.camera
    step = max(1, int(round(m["fps"] / 10)))  # 0.1 s apart
    middle = m["frames"] // 2
    if m["scene"]["type"] == "corridor":  # stay 3 m before the end of the shortened corridor
        middle = int((m["scene"]["length"] - 4.0) / m["motion"]["speed"] * m["fps"])
    for i in (5, middle):
        w0, w1 = traj.world_from_cam(i / m["fps"]), traj.world_from_cam((i + step) / m["fps"])
        o0, o1 = rend.render(scene, np.linalg.inv(w0)), rend.render(scene, np.linalg.inv(w1))
        assert (o0.depth > 0).mean() > 0.99, "the camera sees the scene everywhere (no holes to the void)"
        ys, xs = np.mgrid[6:cam.height - 6:5, 6:cam.width - 6:5]
        p0 = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        c1_from_c0 = np.linalg.inv(w1) @ w0
        p1, seen = warp_points(p0, o0.depth, cam, c1_from_c0)  # inside image 1
        p1, agree = warp_points(p0, o0.depth, cam, c1_from_c0, o1.depth, occlusion_tol=0.01)
        assert seen.sum() > 500
        assert agree[seen].mean() > 0.9  # the depth of image 1 is where the poses put the points
        moved = np.linalg.norm(p1[agree] - p0[agree], axis=1)
        assert np.median(moved) > 1.0  # the camera moved: wrong poses would show
        g0, g1 = _grey(o0.bgr), _grey(o1.bgr)
        v0 = g0[p0[agree, 1].astype(int), p0[agree, 0].astype(int)]
        v1 = cv2.remap(g1, p1[agree, 0].astype(np.float32)[None], p1[agree, 1].astype(np.float32)[None],
                       cv2.INTER_LINEAR)[0]
        err = np.median(np.abs(v0 - v1))
        assert err < 6.0  # same surface point, same colour (up to mip level and interpolation)
        assert np.median(np.abs(v0 - np.roll(v1, 17))) > 3 * max(err, 1.0)


@pytest.mark.parametrize("name", ["loop", "loop_short"])
def test_loop_returns_to_its_start(worlds, name):
    m, scene, traj, rend = worlds[name]
    fps, lap = m["fps"], m["motion"]["lap_period"]
    n_lap = int(round(lap * fps))
    assert m["frames"] > n_lap + 0.1 * fps * lap / 2, "frames after the lap revisit the start"
    poses = np.stack([traj.world_from_cam(i / fps) for i in range(m["frames"])])
    path = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum()
    assert path > (8.0 if name == "loop" else 4.0), path
    start, back, half = poses[0], poses[n_lap], poses[n_lap // 2]
    assert np.linalg.norm(back[:3, 3] - start[:3, 3]) < 0.03
    assert _angle_deg(start[:3, :3].T @ back[:3, :3]) < 4.0
    assert _angle_deg(start[:3, :3].T @ half[:3, :3]) > 150.0  # half way round it looks the other way

    def overlap(w1):
        o0, o1 = rend.render(scene, np.linalg.inv(start)), rend.render(scene, np.linalg.inv(w1))
        ys, xs = np.mgrid[4:rend.camera.height:8, 4:rend.camera.width:8]
        grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        return warp_points(grid, o0.depth, rend.camera, np.linalg.inv(w1) @ start, o1.depth)[1].mean()

    assert overlap(back) > 0.8  # the same place, seen again from the same viewpoint
    assert overlap(half) < 0.05  # ... after having left it


def test_fast_blur_turns_at_about_70_deg_per_second(worlds):
    m, _, traj, _ = worlds["fast_blur"]
    dt = 1.0 / m["fps"]
    rates = [_angle_deg(traj.world_from_cam(i * dt)[:3, :3].T @ traj.world_from_cam((i + 1) * dt)[:3, :3]) / dt
             for i in range(m["frames"] - 1)]
    assert 60.0 < max(rates) < 90.0 and np.median(rates) > 25.0
    assert m["realism"]["exposure_time"] >= 0.6  # long exposure: blur over most of the frame interval


def test_corridor_moves_forward_along_the_optical_axis(worlds):
    m, scene, traj, _ = worlds["corridor"]
    fps, speed = m["fps"], m["motion"]["speed"]
    for i in range(0, 50, 7):  # the first 5 s (the test corridor is 12 m long)
        w0, w1 = traj.world_from_cam(i / fps), traj.world_from_cam((i + 1) / fps)
        step = w1[:3, 3] - w0[:3, 3]
        assert abs(np.linalg.norm(step) - speed / fps) < 0.15 * speed / fps
        axis = w0[:3, 2]  # optical axis in the world
        assert math.degrees(math.acos(step @ axis / np.linalg.norm(step))) < 10.0
        assert scene.solid_at(w1[:3, 3], 0.1) is None


def test_stereo_sequence_layout_and_disparity(worlds, tmp_path: Path):
    m = copy.deepcopy(load_manifest("stereo"))
    full = manifest_camera(m)
    half = full.scaled(0.5, 0.5)
    m.update(frames=2, camera=half.to_dict())
    seq = render_sequence(m, tmp_path / "stereo")
    b = m["stereo"]["baseline"]
    cam_yaml = yaml.safe_load((seq / "camera.yaml").read_text())
    assert cam_yaml["stereo"]["baseline"] == b
    assert np.allclose(cam_yaml["stereo"]["cam_right_from_cam_left"], right_from_left(b))
    assert PinholeCamera.from_dict(cam_yaml["stereo"]["camera_right"]) == half
    rig = read_stereo_rig(seq)
    assert rig.rectified and rig.left == rig.right == half and abs(rig.baseline - b) < 1e-12
    left, right = read_file_list(seq / "rgb.txt"), read_file_list(seq / "rgb_right.txt")
    assert [t for t, _ in left] == [t for t, _ in right] == list(read_tum(seq / "groundtruth.txt")[0])
    img_l = cv2.imread(str(seq / left[1][1][0]), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    img_r = cv2.imread(str(seq / right[1][1][0]), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    depth = cv2.imread(str(seq / "depth" / "000001.png"), cv2.IMREAD_UNCHANGED).astype(np.float64) / DEPTH_FACTOR
    ys, xs = np.mgrid[4:half.height - 4:3, 4:half.width - 4:3]
    z = depth[ys, xs]
    disparity = np.where(z > 0, half.fx * b / np.maximum(z, 1e-6), 0.0)
    ok = (z > 0) & (xs - disparity > 2)
    assert ok.sum() > 2000

    def diff(shift):
        xr = (xs - disparity + shift)[ok].astype(np.float32)
        v = cv2.remap(img_r, xr[None], ys[ok].astype(np.float32)[None], cv2.INTER_LINEAR)[0]
        return np.median(np.abs(img_l[ys[ok], xs[ok]] - v))

    assert diff(0.0) < 5.0  # noise and blur of both images only
    assert min(diff(-3.0), diff(3.0)) > 1.5 * diff(0.0)
    # geometry of the clean views: the right depth map has the left depth where the disparity points
    _, scene, traj, _ = worlds["stereo"]  # the scene and motion of this manifest
    w_left = traj.world_from_cam(1 / m["fps"])
    rend = Renderer(half)
    dl = rend.render(scene, np.linalg.inv(w_left)).depth
    dr = rend.render(scene, right_from_left(b) @ np.linalg.inv(w_left)).depth
    zl = dl[ys, xs].astype(np.float64)
    xr = np.round(xs - half.fx * b / np.maximum(zl, 1e-6)).astype(int)
    inside = (zl > 0) & (xr >= 0)
    zr = dr[ys[inside], xr[inside]]
    assert np.mean(np.abs(zr - zl[inside]) < 0.01 * zl[inside]) > 0.9  # same depth: pure x translation


def test_a_variant_manifest_changes_only_what_it_names(tmp_path: Path):
    """``python -m slam render fast --as NAME --set realism.exposure_time=0``: the manifest written
    to DATA_ROOT/synthetic/NAME.yaml is the profile's with that value (and the name) changed, and
    ``synthetic/NAME`` then resolves to it."""
    from slam.synth.manifest import write_variant

    path = write_variant("fast", "fast_sharp", ["realism.exposure_time=0", "motion.yaw_amplitude_deg=35"], tmp_path)
    assert path == tmp_path / "synthetic" / "fast_sharp.yaml"
    base, var = load_manifest("fast"), load_manifest("fast_sharp", tmp_path)
    assert base["realism"]["exposure_time"] > 0 and var["realism"]["exposure_time"] == 0
    assert var["motion"]["yaw_amplitude_deg"] == 35 and var["name"] == "fast_sharp"
    for section in ("realism", "motion"):
        for k in base[section]:
            if k not in ("exposure_time", "yaw_amplitude_deg"):
                assert var[section][k] == base[section][k], (section, k)
    assert {k: v for k, v in var.items() if k not in ("realism", "motion", "name")} == \
        {k: v for k, v in base.items() if k not in ("realism", "motion", "name")}


@pytest.mark.parametrize("variant, overrides, message", [
    ("fast", ["realism.exposure_time=0"], "choose a new name"),
    ("v", ["realism.exposure=0"], "no key 'exposure'"),
    ("v", ["foo.bar=1"], "no section 'foo'"),
    ("v", ["realism.exposure_time=-1"], "out of range"),
    ("v", ["realism.exposure_time"], "expected KEY=VALUE"),
])
def test_a_variant_with_a_bad_override_is_refused(tmp_path: Path, variant, overrides, message):
    from slam.errors import InputError
    from slam.synth.manifest import write_variant

    with pytest.raises(InputError, match=message):
        write_variant("fast", variant, overrides, tmp_path)
    assert not (tmp_path / "synthetic" / f"{variant}.yaml").exists()


def test_render_refuses_overrides_without_a_variant_name(tmp_path: Path, capsys):
    from slam.cli import main

    assert main(["render", "fast", "--set", "realism.exposure_time=0", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs --as NAME" in err[0]
    assert not (tmp_path / "synthetic").exists()
