"""Tests of the self-supervised SuperPoint / SuperGlue training code (slam/training/)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from slam.errors import InputError
from slam.training import checkpoint as ckpt_mod
from slam.training.data import check_training_path, homography_pair
from slam.training.evaluation import pose_auc, relative_pose_error, repeatability, match_metrics
from slam.training.ground_truth import assign_from_projections, gt_from_depth, gt_from_homography
from slam.training.homographic_adaptation import AdaptationConfig, homographic_adaptation, pseudo_points
from slam.training.homographies import HomographyParams, sample_homography, scale_homography, warp_image, warp_points
from slam.training.losses import (IGNORE, UNMATCHED, descriptor_loss, detector_loss, keypoint_map,
                                  points_to_labels, superglue_nll)
from slam.training.synthetic_shapes import ShapesConfig, SyntheticShapes

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ synthetic shapes


def _subpix_offsets(gen: SyntheticShapes, primitive: str, seeds: range) -> np.ndarray:
    """cornerSubPix refinement - label, for labelled corners >= 6 px from the border, started
    0.7 px off the label in four directions."""
    h, w = gen.cfg.height, gen.cfg.width
    out = []
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 0.001)
    for seed in seeds:
        img, pts = gen.sample(np.random.default_rng(seed), primitive, blur_and_noise=False)
        p = pts[(pts[:, 0] >= 6) & (pts[:, 0] <= w - 7) & (pts[:, 1] >= 6) & (pts[:, 1] <= h - 7)]
        for off in ([1, -1], [-1, 1], [1, 1], [-1, -1]):
            start = (p + 0.7 * np.array(off, np.float32)).astype(np.float32).reshape(-1, 1, 2)
            if len(start):
                ref = cv2.cornerSubPix(img, start, (3, 3), (-1, -1), crit).reshape(-1, 2)
                out.append(ref - p)
    return np.concatenate(out)


@pytest.mark.parametrize("primitive,scale", [("checkerboard", 2), ("polygon", 4), ("multiple_polygons", 4), ("cube", 4)])
def test_synthetic_corners_are_where_the_generator_says(primitive, scale):
    gen = SyntheticShapes(ShapesConfig(height=120, width=160, render_scale=scale))
    d = _subpix_offsets(gen, primitive, range(12))
    assert len(d) > 40
    # no systematic offset (pixel-centre convention and anti-aliasing consistent) ...
    assert np.all(np.abs(d.mean(0)) < 0.1), d.mean(0)
    # ... and the image corner lies at the label to a fraction of a pixel
    assert np.median(np.linalg.norm(d, axis=1)) < 0.35


def test_synthetic_shapes_all_primitives_and_determinism():
    gen = SyntheticShapes(ShapesConfig(height=48, width=64, render_scale=1))
    for prim in ("lines", "polygon", "multiple_polygons", "star", "checkerboard", "cube", "ellipses", "gaussian_noise"):
        img, pts = gen.sample(np.random.default_rng(3), prim)
        img2, pts2 = gen.sample(np.random.default_rng(3), prim)
        assert img.shape == (48, 64) and img.dtype == np.uint8
        assert np.array_equal(img, img2) and np.array_equal(pts, pts2)
        assert np.all((pts >= 0) & (pts <= np.array([63, 47])))
        if prim in ("ellipses", "gaussian_noise"):
            assert len(pts) == 0
    with pytest.raises(ValueError, match="unknown synthetic shape"):
        SyntheticShapes(ShapesConfig(primitives={"triangles3d": 1.0}))


# ------------------------------------------------------------------------------ homographies


def test_sampled_homographies_keep_the_warped_image_inside():
    h, w = 60, 80
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)
    white = np.full((h, w), 255, np.uint8)
    outside_with_artifacts = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        hom = sample_homography(h, w, rng)
        src = warp_points(corners, np.linalg.inv(hom))  # where the warped image's corners come from
        assert np.all(src >= -1e-6) and np.all(src <= np.array([w - 1, h - 1]) + 1e-6)
        warped = warp_image(white, hom, interpolation=cv2.INTER_NEAREST)
        assert warped[1:-1, 1:-1].min() == 255  # no empty (black) pixels inside
        hom2 = sample_homography(h, w, rng, HomographyParams(allow_artifacts=True, perspective_amplitude_x=0.4))
        src2 = warp_points(corners, np.linalg.inv(hom2))
        outside_with_artifacts += int(np.any(src2 < -0.5) or np.any(src2 > np.array([w, h])))
    assert outside_with_artifacts > 10  # the check above can fail


def test_homography_round_trip_and_resize():
    rng = np.random.default_rng(0)
    hom = sample_homography(120, 160, rng)
    pts = rng.uniform([0, 0], [159, 119], (20, 2))
    back = warp_points(warp_points(pts, hom), np.linalg.inv(hom))
    assert np.allclose(back, pts, atol=1e-6)
    # scaled homography agrees with the pixel-centre resize mapping
    hs = scale_homography(hom, (0.5, 0.5), (2.0, 2.0))
    p_small = (pts + 0.5) * 0.5 - 0.5
    p_big = (warp_points(pts, hom) + 0.5) * 2.0 - 0.5
    assert np.allclose(warp_points(p_small, hs), p_big, atol=1e-6)


# ------------------------------------------------------------------------------ homographic adaptation


def test_adaptation_of_a_constant_detector_returns_the_constant():
    img = np.random.default_rng(0).integers(0, 255, (48, 64)).astype(np.uint8)
    cfg = AdaptationConfig(num_homographies=12, batch=5)
    res = homographic_adaptation(img, lambda b: np.full(b.shape, 0.3, np.float32), np.random.default_rng(1), cfg)
    seen = res["count"] > 0.5
    assert seen[4:-4, 4:-4].all()  # the identity warp sees everything but the eroded border
    assert np.allclose(res["prob"][seen], 0.3, atol=1e-5)
    assert res["count"].max() <= 12 + 1e-4 and res["count"].max() > 6
    assert np.allclose(res["homographies"][0], np.eye(3))


def test_adaptation_of_an_equivariant_detector_recovers_the_point():
    img = np.zeros((64, 80), np.float32)
    img[30, 41] = 1.0
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img /= img.max()
    cfg = AdaptationConfig(num_homographies=10, threshold=0.05, nms_radius=4, remove_borders=2)
    res = homographic_adaptation(img, lambda b: b.copy(), np.random.default_rng(2), cfg)
    pts = pseudo_points(res["prob"], cfg)
    assert len(pts) == 1 and np.allclose(pts[0], [41, 30])


# ------------------------------------------------------------------------------ losses


def test_points_to_labels_and_detector_loss():
    kmap = keypoint_map([torch.tensor([[3.0, 2.0], [12.2, 9.9]])], 16, 16)
    labels = points_to_labels(kmap)
    assert labels.shape == (1, 2, 2)
    assert labels[0, 0, 0] == 2 * 8 + 3 and labels[0, 1, 1] == 2 * 8 + 4 and labels[0, 0, 1] == 64
    logits = torch.zeros(1, 65, 2, 2)
    assert math.isclose(float(detector_loss(logits, labels)), math.log(65), rel_tol=1e-6)
    valid = torch.tensor([[[True, False], [False, False]]])
    logits[0, 19, 0, 0] = 10.0
    expected = -torch.log_softmax(logits[0, :, 0, 0], 0)[19]
    assert math.isclose(float(detector_loss(logits, labels, valid)), float(expected), abs_tol=1e-5)


def test_descriptor_hinge_loss_by_hand():
    # two cells (h=1, w=2, image 8x16), identity homography: cell centres 8 px apart > 7.5 px,
    # so only (0,0) and (1,1) are positive pairs
    d0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # cell0=[1,0], cell1=[0,1]
    d1 = torch.tensor([[0.6, 0.8], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)
    hom = torch.eye(3)[None]
    loss, _ = descriptor_loss(d0, d1, hom)
    # dots: (0,0)=0.6 pos -> 250*0.4; (0,1)=1.0 neg -> 0.8; (1,0)=0.8 neg -> 0.6; (1,1)=0 pos -> 250
    assert math.isclose(float(loss), (100 + 0.8 + 0.6 + 250) / 4, rel_tol=1e-5)
    valid1 = torch.tensor([[[True, False]]])
    loss_v, _ = descriptor_loss(d0, d1, hom, valid1)
    assert math.isclose(float(loss_v), (100 + 0.6) / 2, rel_tol=1e-5)
    # a shift by one cell swaps the positives: now (0,1) is the only positive pair
    shift = torch.tensor([[[1.0, 0, 8], [0, 1, 0], [0, 0, 1]]])
    loss_s, _ = descriptor_loss(d0, d1, shift)
    assert math.isclose(float(loss_s), (0.4 + 250 * 0.0 + 0.6 + 0.0) / 4, rel_tol=1e-5)


def test_superglue_nll_by_hand():
    la = torch.log(torch.tensor([[[0.7, 0.1, 0.2], [0.2, 0.5, 0.3], [0.1, 0.4, 0.5]]]))  # N = M = 2
    gt0 = torch.tensor([[1, UNMATCHED]])  # 0 <-> 1, point 1 of image 0 unmatched
    gt1 = torch.tensor([[UNMATCHED, 0]])
    loss, st = superglue_nll(la, gt0, gt1)
    expected = -(math.log(0.1) + math.log(0.3) + math.log(0.1)) / 3
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    assert math.isclose(st["nll_matched"], -math.log(0.1), rel_tol=1e-6)
    # ignored points contribute nothing
    loss_i, _ = superglue_nll(la, torch.tensor([[1, IGNORE]]), gt1)
    assert math.isclose(float(loss_i), -(math.log(0.1) + math.log(0.1)) / 2, rel_tol=1e-6)
    loss_b, _ = superglue_nll(la, gt0, gt1, normalize="balanced")
    assert math.isclose(float(loss_b), 0.5 * -math.log(0.1) + 0.5 * -(math.log(0.3) + math.log(0.1)) / 2, rel_tol=1e-6)


def test_superglue_nll_ignores_padding_and_trains_towards_the_truth():
    from slam.matching.superglue import log_optimal_transport
    torch.manual_seed(0)
    scores = torch.randn(1, 3, 4, requires_grad=True)
    alpha = torch.tensor(0.5, requires_grad=True)
    mask1 = torch.tensor([[True, True, True, False]])
    la = log_optimal_transport(scores, alpha, 30, None, mask1)
    gt0 = torch.tensor([[2, 0, UNMATCHED]])
    gt1 = torch.tensor([[1, UNMATCHED, 0, IGNORE]])
    loss, _ = superglue_nll(la, gt0, gt1)
    assert torch.isfinite(loss)
    loss.backward()
    assert scores.grad[0, 0, 2] < 0 and scores.grad[0, 1, 0] < 0  # raising true matches lowers the loss
    assert torch.all(scores.grad[0, :, 3] == 0)  # padded column has no influence


# ------------------------------------------------------------------------------ ground truth


def test_gt_from_homography():
    rng = np.random.default_rng(0)
    gx, gy = np.meshgrid(np.arange(6) * 25.0 + 10, np.arange(5) * 22.0 + 10)
    k0 = np.stack([gx.ravel(), gy.ravel()], 1)  # 30 points >= 20 px apart
    hom = np.array([[1.0, 0.02, 5.0], [0.0, 0.98, -3.0], [0.0, 0.0, 1.0]])
    proj = warp_points(k0, hom)
    k1 = np.concatenate([proj[:20] + rng.normal(0, 0.3, (20, 2)), [[500.0, 500.0]]])  # first 20 have partners
    k1 = np.concatenate([k1, [[proj[25, 0] + 4.0, proj[25, 1]]]])  # 4 px from point 25: ambiguous
    gt0, gt1 = gt_from_homography(k0, k1, hom, (160, 120), (600, 600), pos_th=3, neg_th=5)
    assert np.array_equal(gt0[:20], np.arange(20))
    assert np.array_equal(gt1[:20], np.arange(20))
    assert gt0[25] == IGNORE
    far = [i for i in range(20, 30) if i != 25]
    assert np.all(gt0[far] == UNMATCHED)
    assert gt1[20] == UNMATCHED or gt1[20] == IGNORE  # (500, 500) maps outside image 0 or far
    assert gt1[21] == IGNORE


def test_assignment_is_mutual_and_one_to_one():
    k0 = np.array([[10.0, 10.0], [11.0, 10.0]])
    k1 = np.array([[10.2, 10.0]])
    gt0, gt1 = assign_from_projections(k0, k1, k0, np.ones(2, bool), k1, np.ones(1, bool))
    assert list(gt0) == [0, IGNORE] and list(gt1) == [0]


def test_gt_from_synthetic_rgbd_pair_exact_and_occlusion():
    from slam.geometry.camera import PinholeCamera
    from slam.io.synthetic import FR1_CAMERA, make_scene, sample_pair, warp_points as depth_warp

    cam = PinholeCamera.from_dict(FR1_CAMERA).scaled(0.25, 0.25)  # 160x120
    scene = make_scene(0)
    found = None
    for seed in range(12):
        p = sample_pair(seed, scene=scene, camera=cam, baseline=(0.3, 0.6))
        ys, xs = np.mgrid[4:cam.height - 4:6, 4:cam.width - 4:6]
        k0 = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        t10 = p["cam1_from_world"] @ np.linalg.inv(p["cam0_from_world"])
        proj, vis = depth_warp(k0, p["depth0"], cam, t10, p["depth1"])
        _, in_view = depth_warp(k0, p["depth0"], cam, t10, None)
        occluded = in_view & ~vis
        if occluded.sum() >= 3 and vis.sum() >= 20:
            found = (p, k0, t10, proj, vis, occluded)
            break
    assert found is not None, "no synthetic pair with occlusions found"
    p, k0, t10, proj, vis, occluded = found
    # keypoints of image 1: the exact projections of visible points AND of occluded points
    # (there the occluder is seen), thinned so that no two are closer than 6 px
    cand = np.flatnonzero(vis | occluded)
    keep, k1 = [], []
    for i in cand:
        if all(np.linalg.norm(proj[i] - q) >= 6 for q in k1):
            keep.append(i)
            k1.append(proj[i])
    k1 = np.array(k1)
    gt0, gt1 = gt_from_depth(k0, k1, p["depth0"], p["depth1"], p["camera"], t10, pos_th=3, neg_th=5)
    owner = {i: j for j, i in enumerate(keep)}
    vis_kept = [i for i in keep if vis[i]]
    matched_right = [gt0[i] == owner[i] for i in vis_kept]
    assert np.mean(matched_right) > 0.9  # exact reprojection (a few depth-edge points may be ignored)
    assert all(gt0[i] in (owner[i], IGNORE) for i in vis_kept)
    occ = np.flatnonzero(occluded)
    assert len(occ) >= 3
    assert np.all(gt0[occ] == UNMATCHED)  # occluded points go to the dustbin ...
    assert any(i in owner for i in occ)  # ... even where a keypoint sits exactly on their projection


# ------------------------------------------------------------------------------ data, checkpoints, evaluation


def test_evaluation_data_is_refused(tmp_path):
    with pytest.raises(InputError, match="evaluation"):
        check_training_path(tmp_path / "data" / "pairs" / "churchill")
    with pytest.raises(InputError):
        check_training_path(tmp_path / "tum" / "rgbd_dataset_freiburg1_xyz" / "rgb")
    assert check_training_path(tmp_path / "images") == (tmp_path / "images").resolve()


def test_homography_pair_labels_are_consistent():
    img = np.random.default_rng(0).integers(0, 255, (48, 64)).astype(np.uint8)
    pair = homography_pair(img, np.random.default_rng(1), augment=False)
    assert np.array_equal(pair["image1"], warp_image(img, pair["h1_from_0"]))
    assert pair["valid1"].shape == (48, 64) and pair["valid1"][2:-2, 2:-2].all()


def test_rng_state_round_trip(tmp_path):
    gen = np.random.default_rng(5)
    tgen = torch.Generator().manual_seed(3)
    state = ckpt_mod.rng_state(gen, tgen)
    torch.save(state, tmp_path / "s.pt")
    a = (gen.random(3), torch.rand(2, generator=tgen), np.random.rand(2), torch.rand(2))
    ckpt_mod.set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True), gen, tgen)
    b = (gen.random(3), torch.rand(2, generator=tgen), np.random.rand(2), torch.rand(2))
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_lr_schedule_shape():
    assert ckpt_mod.lr_factor(0, 100, warmup=10) == pytest.approx(0.1)
    assert ckpt_mod.lr_factor(30, 100, warmup=10) == 1.0
    assert ckpt_mod.lr_factor(100, 100, warmup=10, final=0.1) == pytest.approx(0.1)


def test_metrics_by_hand():
    k0 = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [90.0, 90.0]])
    hom = np.array([[1.0, 0, 5], [0, 1, 0], [0, 0, 1]])
    k1 = np.array([[15.0, 10.0], [25.0, 21.0], [70.0, 70.0]])
    # image 1 is 50x50: point 4 (95, 90) is outside; k1 points map back inside image 0 (100x100)
    assert repeatability(k0, k1, hom, (100, 100), (50, 50), 3.0) == pytest.approx(4 / 6)
    mm = match_metrics(k0, k1, np.array([0, 1, 2, -1]), hom, (50, 50), 3.0)
    assert mm["precision"] == pytest.approx(2 / 3) and mm["n_gt"] == 2 and mm["recall"] == pytest.approx(1.0)
    assert pose_auc([0.0, 0.0], [5.0])[0] == pytest.approx(1.0)
    assert pose_auc([float("inf")], [5.0])[0] == 0.0
    # recall 0 -> 0.5 linearly over [0, 2.5] deg, then flat: (0.625 + 1.25) / 5
    assert pose_auc([2.5, float("inf")], [5.0])[0] == pytest.approx(0.375)
    rot = cv2.Rodrigues(np.array([0.0, 0.1, 0.0]))[0]
    t01 = np.eye(4)
    t01[:3, :3], t01[:3, 3] = rot, [1.0, 0, 0]
    er, et = relative_pose_error(t01, rot, np.array([-2.0, 0, 0]))
    assert er == pytest.approx(0.0, abs=1e-6) and et == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------ smoke training + resume


def _weights(path: Path) -> dict:
    return torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_superpoint_smoke_all_stages_and_exact_resume(tmp_path, monkeypatch):
    from slam.features.superpoint import SuperPoint, SuperPointConfig
    from slam.training.superpoint_trainer import export_superpoint, run_stage

    monkeypatch.setenv("SLAM_SHARED_DATA", str(tmp_path / "no_data"))  # synthetic-only pool: CI-independent
    q = dict(printer=None, minutes=5.0, device="cpu")
    run_stage("magicpoint", "smoke", tmp_path / "a", **q)
    assert (tmp_path / "a" / "magicpoint" / "weights.pth").is_file()
    # resume equality: 4 steps in one go == 2 + resume + 2
    run_stage("magicpoint", "smoke", tmp_path / "b", stop_at=2, **q)
    with pytest.raises(InputError, match="--resume"):
        run_stage("magicpoint", "smoke", tmp_path / "b", **q)
    run_stage("magicpoint", "smoke", tmp_path / "b", resume=True, **q)
    assert _same(_weights(tmp_path / "a" / "magicpoint"), _weights(tmp_path / "b" / "magicpoint"))
    log = [json.loads(x) for x in (tmp_path / "b" / "magicpoint" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 4]

    summary = run_stage("adapt", "smoke", tmp_path / "a", **q)
    assert summary["finished"] and (tmp_path / "a" / "adapt_r1" / "labels.npz").is_file()
    run_stage("joint", "smoke", tmp_path / "a", stop_at=2, **q)
    run_stage("joint", "smoke", tmp_path / "a", resume=True, **q)
    (tmp_path / "c").mkdir()
    run_stage("joint", "smoke", tmp_path / "c", labels=tmp_path / "a" / "adapt_r1" / "labels.npz",
              init=tmp_path / "a" / "magicpoint" / "weights.pth", **q)
    assert _same(_weights(tmp_path / "a" / "joint_r1"), _weights(tmp_path / "c" / "joint_r1"))
    dest = export_superpoint(tmp_path / "a" / "joint_r1" / "weights.pth", tmp_path / "sp.pth")
    sd = torch.load(dest, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    sp = SuperPoint(SuperPointConfig(precision="fp32", max_keypoints=50), "cpu", state_dict=torch.load(dest, weights_only=True))
    assert sp.convention == "open"  # BatchNorm model: descriptor cells at 8j + 3.5 px, as in the training loss
    feats = sp.extract(np.random.default_rng(0).integers(0, 255, (48, 64)).astype(np.uint8))
    assert feats.descriptors.shape[1] == 256


@pytest.mark.slow
def test_superglue_smoke_exact_resume_and_export(tmp_path, monkeypatch):
    from slam.matching.superglue import SuperGlue, SuperGlueConfig
    from slam.training.superglue_trainer import export_superglue, run_superglue

    monkeypatch.setenv("SLAM_SHARED_DATA", str(tmp_path / "no_data"))
    q = dict(printer=None, minutes=5.0, device="cpu", superpoint="random")
    run_superglue("smoke", tmp_path / "a", **q)
    run_superglue("smoke", tmp_path / "b", stop_at=2, **q)
    run_superglue("smoke", tmp_path / "b", resume=True, **q)
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    dest = export_superglue(tmp_path / "a" / "weights.pth", tmp_path / "sg.pth")
    sg = SuperGlue(SuperGlueConfig(weights=str(dest)), "cpu")
    assert sg.net.n_layers == 1


@pytest.mark.slow
def test_training_scripts_run_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), SLAM_SHARED_DATA=str(tmp_path / "no_data"))
    out = tmp_path / "sp"
    for stage in ("magicpoint", "adapt", "joint"):
        args = [sys.executable, str(REPO / "tools" / "train_superpoint.py"), "--stage", stage, "--config", "smoke",
                "--out", str(out), "--steps", "2"]
        if stage == "joint":
            args += ["--export", str(tmp_path / "sp.pth")]
        r = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "sp.pth").is_file()
    r = subprocess.run([sys.executable, str(REPO / "tools" / "train_superglue.py"), "--config", "smoke", "--out",
                        str(tmp_path / "sg"), "--superpoint", str(tmp_path / "sp.pth"), "--steps", "2",
                        "--export", str(tmp_path / "sg.pth")], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["finished"] is True
    assert (tmp_path / "sg.pth").is_file()
