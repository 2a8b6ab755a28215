"""PinholeCamera: projection, (un)distortion accuracy with TUM fr1 intrinsics, serialisation."""
import numpy as np
import pytest

from slam.errors import InputError
from slam.geometry.camera import PinholeCamera

FR1 = dict(width=640, height=480, fx=517.306408, fy=516.469215, cx=318.643040, cy=255.313989,
           dist=(0.262383, -0.953104, -0.005358, 0.002628, 1.163314))


def grid(cam, step=20):
    u, v = np.meshgrid(np.arange(0, cam.width, step, dtype=float), np.arange(0, cam.height, step, dtype=float))
    uv = np.stack([u.ravel(), v.ravel()], 1)
    # include the exact corners
    corners = np.array([[0, 0], [cam.width - 1, 0], [0, cam.height - 1], [cam.width - 1, cam.height - 1]], float)
    return np.r_[uv, corners]


def test_undistort_round_trip_fr1_whole_image():
    cam = PinholeCamera(**FR1)
    assert cam.has_distortion
    uv_dist = grid(cam)
    und = cam.undistort_points(uv_dist)
    assert und.dtype == np.float64 and und.shape == uv_dist.shape
    assert np.abs(cam.distort_points(und) - uv_dist).max() < 0.01
    # corners move by tens of pixels: make sure something actually happened
    assert np.abs(und - uv_dist).max() > 5.0
    # opposite direction
    und_grid = grid(cam, 40)
    assert np.abs(cam.undistort_points(cam.distort_points(und_grid)) - und_grid).max() < 0.01


def test_project_matches_distort_of_pinhole_and_unproject():
    cam = PinholeCamera(**FR1)
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-1, 1, (50, 2)), rng.uniform(1.5, 5, 50)]
    pts[0, 2] = -1.0
    uv, valid = cam.project(pts)
    assert valid.tolist() == [False] + [True] * 49
    ideal = cam.project_undistorted(pts)
    np.testing.assert_allclose(uv[valid], cam.distort_points(ideal[valid]), atol=1e-9)
    back = cam.unproject(ideal[valid], pts[valid, 2])
    np.testing.assert_allclose(back, pts[valid], atol=1e-12)
    K = cam.K
    np.testing.assert_allclose(K, [[FR1["fx"], 0, FR1["cx"]], [0, FR1["fy"], FR1["cy"]], [0, 0, 1]])
    assert cam.dist_array.shape == (5,)


def test_no_distortion_is_identity():
    cam = PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0)
    assert not cam.has_distortion
    uv = grid(cam, 50)
    np.testing.assert_array_equal(cam.undistort_points(uv), uv)
    np.testing.assert_array_equal(cam.distort_points(uv), uv)


def test_in_image_and_scaled():
    cam = PinholeCamera(**FR1)
    uv = np.array([[0, 0], [639, 479], [639.5, 10], [-0.1, 10], [5, 5]], float)
    assert cam.in_image(uv).tolist() == [True, True, False, False, True]
    assert cam.in_image(uv, margin=10).tolist() == [False, False, False, False, False]
    half = cam.scaled(0.5, 0.5)
    assert (half.width, half.height) == (320, 240)
    assert half.fx == pytest.approx(cam.fx / 2)
    # a 3D point projects to corresponding positions (pixel-centre convention)
    p = np.array([[0.3, -0.2, 2.0]])
    u_full = cam.project_undistorted(p)[0]
    u_half = half.project_undistorted(p)[0]
    np.testing.assert_allclose(u_half, (u_full + 0.5) * 0.5 - 0.5, atol=1e-9)
    assert half.dist == cam.dist


def test_yaml_round_trip_and_errors(tmp_path):
    cam = PinholeCamera(**FR1)
    path = tmp_path / "cam.yaml"
    cam.to_yaml(path)
    again = PinholeCamera.from_yaml(path)
    assert again == cam
    assert PinholeCamera.from_dict(cam.to_dict()) == cam
    assert cam.to_dict()["dist"] == list(FR1["dist"])

    bad = tmp_path / "bad.yaml"
    bad.write_text("width: 640\nheight: 480\nfx: 500\nfy: 500\ncx: 320\n")
    with pytest.raises(ValueError) as err:
        PinholeCamera.from_yaml(bad)
    assert "bad.yaml" in str(err.value) and "cy" in str(err.value)
    with pytest.raises(ValueError, match="does not exist"):
        PinholeCamera.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ValueError):
        PinholeCamera(width=640, height=480, fx=500, fy=500, cx=320, cy=240, dist=(0.1, 0.2))


def test_arguments_are_keyword_only_and_the_principal_point_lies_in_the_image():
    with pytest.raises(TypeError):
        PinholeCamera(640, 480, 500.0, 500.0, 320.0, 240.0)  # positional: width and fx could be swapped
    with pytest.raises(InputError, match="cx=640.0 must lie inside"):
        PinholeCamera(width=520, height=520, fx=320.0, fy=240.0, cx=640.0, cy=480.0)  # the old test's argument order
    with pytest.raises(InputError, match="cy"):
        PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=-1.0)
    with pytest.raises(InputError, match="fx must be positive"):
        PinholeCamera(width=640, height=480, fx=-5.0, fy=500.0, cx=320.0, cy=240.0)
    with pytest.raises(InputError, match="fy must be a number, got 'abc'"):
        PinholeCamera(width=640, height=480, fx=500.0, fy="abc", cx=320.0, cy=240.0)


def test_camera_nested_layout_of_the_manifests_is_accepted(tmp_path):
    f = tmp_path / "cam.yaml"
    f.write_text("camera: {width: 640, height: 480, fx: 517.3, fy: 516.5, cx: 318.6, cy: 255.3}\n"
                 "dist: [0.2624, -0.9531, -0.0054, 0.0026, 1.1633]\n")
    cam = PinholeCamera.from_yaml(f)
    assert (cam.width, cam.fx, cam.cy) == (640, 517.3, 255.3)
    assert cam.dist == (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)
    f.write_text("camera: {width: 640, height: 480, fx: 517.3, fy: abc, cx: 318.6, cy: 255.3}\n")
    with pytest.raises(InputError, match="cam.yaml.*fy must be a number"):
        PinholeCamera.from_yaml(f)


def test_distortion_jacobian_matches_finite_differences_and_is_the_identity_without_distortion():
    cam = PinholeCamera(**FR1)
    uv = np.random.default_rng(3).uniform([0, 0], [640, 480], (200, 2))
    fd = np.empty((len(uv), 2, 2))
    for j in range(2):
        d = np.zeros(2)
        d[j] = 1e-4
        fd[:, :, j] = (cam.distort_points(uv + d) - cam.distort_points(uv - d)) / 2e-4
    assert np.abs(cam.distortion_jacobian(uv) - fd).max() < 1e-6
    plain = PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0)
    assert np.array_equal(plain.distortion_jacobian(uv), np.tile(np.eye(2), (len(uv), 1, 1)))
