"""Detector-free matching in the SLAM (slam.tracking.dense_match): monocular initialisation and
relocalisation from 2D-2D image matches, tied to keypoints by snapping.

LoFTR with random weights cannot match, so the end-to-end tests use a stub image matcher that
returns the true correspondences of a synthetic point scene (exact poses): points near the
scene's keypoints (3D jitter of about a pixel, so snapping has work to do) and points where
no keypoint was detected (as LoFTR matches texture that detectors miss). The real weights'
path runs when a checkpoint is installed and the shared data are present (skipped otherwise).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from slam.errors import ConfigError, WeightsError
from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import make_se3, rotation_angle_deg, se3_inverse, so3_exp, transform_points
from slam.mapping.map import Map
from slam.matching.nn import NearestNeighborMatcher
from slam.tracking.config import TrackingConfig
from slam.tracking.dense_match import DenseMatching, snap, unique_best, wants_dense
from slam.tracking.tracker import Tracker
from slam.types import Features, FrameFeatures, Matches

CAM = PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0)
D = 32


def cam_from_world(t: float) -> np.ndarray:
    """Sideways and upwards motion with a slow turn (t in frames)."""
    return se3_inverse(make_se3(so3_exp(np.array([0.002 * t, 0.004 * t, 0.001 * t])), np.array([0.02 * t, 0.005 * t, 0.003 * t])))


class Scene:
    """3D points with random binary descriptors; a frame shows those in view at their exact
    projections. A frame's 'image' is a token (1, 1) array holding its pose's time, which the
    stub matcher reads."""

    def __init__(self, seed: int = 0, n: int = 3000) -> None:
        rng = np.random.default_rng(seed)
        self.pts = np.column_stack([rng.uniform(-4, 4, n), rng.uniform(-3, 3, n), rng.uniform(3, 7, n)])
        self.desc = rng.integers(0, 256, size=(n, D), dtype=np.uint8)
        # surfaces without keypoints: LoFTR matches there too
        m = n // 2
        self.bare = np.column_stack([rng.uniform(-4, 4, m), rng.uniform(-3, 3, m), rng.uniform(3, 7, m)])

    def frame(self, index: int, t: float, depth: bool, max_kp: int = 1500) -> FrameFeatures:
        pc = transform_points(cam_from_world(t), self.pts)
        uv = CAM.project_undistorted(np.where(pc[:, 2:3] > 0.1, pc, 1.0))
        ids = np.nonzero((pc[:, 2] > 0.1) & CAM.in_image(uv))[0]
        ids = np.random.default_rng(index).permutation(ids)[:max_kp]
        n = len(ids)
        feats = Features(torch.from_numpy(uv[ids]).float(), torch.ones(n), torch.from_numpy(self.desc[ids]), (CAM.width, CAM.height))
        return FrameFeatures(index, index / 30.0, feats, uv[ids].copy(), pc[ids, 2].copy() if depth else np.zeros(n), np.ones(n),
                             np.zeros((n, 3), dtype=np.uint8), self.desc[ids].copy(), image=np.array([[t]], dtype=np.float64))


class TruthDenseMatcher:
    """Stub of slam.matching.loftr.matcher.LoFTR's interface returning the scene's true 2D-2D
    correspondences between two frames' images: jittered scene points (about 1 px off the
    keypoints) and bare-surface points, visible in both views, with `noise_px` of noise on the
    image-1 side (LoFTR refines image 1 to sub-pixel)."""

    def __init__(self, scene: Scene, jitter_m: float = 0.01, noise_px: float = 0.1, bare_only: bool = False) -> None:
        self.scene = scene
        self.bare_only = bare_only
        self.jitter_m = jitter_m
        self.noise_px = noise_px
        self.pairs: list[tuple[float, float]] = []

    def match_images(self, image0, image1):
        t0, t1 = float(image0[0, 0]), float(image1[0, 0])
        self.pairs.append((t0, t1))
        rng = np.random.default_rng(int(1000 * t0 + t1))
        pts = np.concatenate([self.scene.pts + rng.normal(0, self.jitter_m, self.scene.pts.shape), self.scene.bare])
        if self.bare_only:
            pts = self.scene.bare
        p0, p1 = transform_points(cam_from_world(t0), pts), transform_points(cam_from_world(t1), pts)
        uv0 = CAM.project_undistorted(np.where(p0[:, 2:3] > 0.1, p0, 1.0))
        uv1 = CAM.project_undistorted(np.where(p1[:, 2:3] > 0.1, p1, 1.0))
        ok = (p0[:, 2] > 0.1) & (p1[:, 2] > 0.1) & CAM.in_image(uv0) & CAM.in_image(uv1)
        uv1 = uv1 + rng.normal(0, self.noise_px, uv1.shape)
        return SimpleNamespace(pts0=uv0[ok].astype(np.float32), pts1=uv1[ok].astype(np.float32),
                               confidence=np.ones(int(ok.sum()), np.float32))

    def match_image_pairs(self, images0, images1):
        return [self.match_images(a, b) for a, b in zip(images0, images1)]


class SwitchableNN(NearestNeighborMatcher):
    """NN matcher that can be made blind (no matches), to show which path relocalised."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.blind = False
        self.calls = 0

    def match_many(self, query, refs):
        self.calls += 1
        if self.blind:
            n = len(query.keypoints)
            return [Matches(np.full(n, -1), np.zeros(n)) for _ in refs]
        return super().match_many(query, refs)


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = a @ se3_inverse(b)
    return float(np.linalg.norm(se3_inverse(a)[:3, 3] - se3_inverse(b)[:3, 3])), rotation_angle_deg(d[:3, :3])


# ------------------------------------------------------------------ pieces
def test_snap_takes_the_nearest_keypoint_within_the_radius():
    kps = np.array([[10.0, 10.0], [20.0, 10.0], [100.0, 100.0]])
    pts = np.array([[11.0, 10.0], [16.0, 10.0], [50.0, 50.0], [103.0, 104.0], [104.0, 104.0]])
    idx, off = snap(pts, kps, radius=5.0)
    np.testing.assert_array_equal(idx, [0, 1, -1, 2, -1])  # (103,104) is 5 px away: inside; (104,104) is not
    np.testing.assert_allclose(off, [[-1, 0], [4, 0], [0, 0], [-3, -4], [0, 0]])
    idx, _ = snap(pts, np.zeros((0, 2)), 5.0)
    assert (idx == -1).all()


def test_unique_best_keeps_the_cheapest_row_per_key():
    keys = np.array([3, 1, 3, 2, 1])
    cost = np.array([0.5, 0.9, 0.1, 0.3, 0.2])
    np.testing.assert_array_equal(unique_best(keys, cost), [2, 3, 4])


def test_settings_select_the_dense_paths():
    from slam.config import load_config

    cfg = load_config(None, ["tracking.mono_init_matcher=loftr", "tracking.reloc_matcher=loftr", "mode=mono"])
    assert wants_dense(cfg.tracking, "mono") == (True, True)
    assert wants_dense(cfg.tracking, "rgbd") == (False, True)  # RGB-D starts from one frame
    assert wants_dense(TrackingConfig(), "mono") == (False, False)
    with pytest.raises(ConfigError, match="mono_init_matcher"):
        load_config(None, ["tracking.mono_init_matcher=sift"])
    from slam.system import dense_paths

    assert dense_paths(cfg) == (True, True, False)
    assert dense_paths(load_config(None, ["loop_closing.matcher=loftr"])) == (False, False, True)
    # no loop closing, no loop verification
    assert dense_paths(load_config(None, ["loop_closing.matcher=loftr", "loop_closing.enabled=false"])) == (False, False, False)
    with pytest.raises(ConfigError, match="loop_closing.matcher"):
        load_config(None, ["loop_closing.matcher=superglue"])


def test_missing_loftr_weights_say_where_they_are_published(tmp_path, monkeypatch):
    from slam.config import load_config
    from slam.system import build_dense

    monkeypatch.setenv("SLAM_WEIGHTS_DIR", str(tmp_path))
    cfg = load_config(None, ["tracking.reloc_matcher=loftr", "loftr.weights=loftr_indoor"])
    with pytest.raises(WeightsError) as err:
        build_dense(cfg, CAM, torch.device("cpu"))
    msg = str(err.value)
    assert "Apache-2.0" in msg and "github.com/zju3dv/LoFTR" in msg and "indoor_ds_new.ckpt" in msg


def test_matcher_loftr_for_tracking_points_to_the_dense_settings():
    from slam.config import load_config
    from slam.system import build_matcher

    with pytest.raises(ConfigError, match="tracking.reloc_matcher=loftr"):
        build_matcher(load_config(None, ["matcher=loftr", "features=orb"]), torch.device("cpu"))


# ------------------------------------------------------------------ initialisation
def test_dense_mono_initialisation_puts_map_points_on_keypoints_at_true_positions():
    scene = Scene(21)
    m = Map(D, binary=True, capacity=8192)
    matcher = SwitchableNN()
    stub = TruthDenseMatcher(scene)
    cfg = TrackingConfig()
    tracker = Tracker(cfg, CAM, m, matcher, mode="mono", dense=DenseMatching(stub, CAM, cfg, init=True, reloc=False))
    states = []
    for i in range(30):
        res, job = tracker.process(scene.frame(i, i, depth=False))
        states.append(res.state)
        if job is not None and job.is_initial:
            assert matcher.calls == 0  # the keypoint matcher was not asked to initialise
    first = states.index("OK")
    assert 0 < first < 20 and states[first:] == ["OK"] * (30 - first)
    assert stub.pairs and all(t0 == 0.0 for t0, _ in stub.pairs)  # every attempt against the reference frame 0
    kf0 = m.keyframes[min(m.keyframes)]
    assert kf0.frame_index == 0
    # the initial map: points on kf0's keypoints, at the true positions up to the monocular scale
    obs = np.nonzero(kf0.point_ids >= 0)[0]
    assert len(obs) >= cfg.mono_init_min_matches // 2
    truth = {bytes(d): p for d, p in zip(scene.desc, scene.pts)}
    true_xyz = np.stack([truth[bytes(kf0.desc[k])] for k in obs])  # frame 0 is the world origin
    est = m.pts_xyz[kf0.point_ids[obs]]
    s = np.median(true_xyz[:, 2]) / np.median(est[:, 2])
    rel = np.linalg.norm(est * s - true_xyz, axis=1) / true_xyz[:, 2]
    # the pose comes from noisy dense matches (0.1 px), the points from exact keypoints
    assert np.median(rel) < 2e-3 and rel.max() < 1e-2, (np.median(rel), np.sort(rel)[-5:])
    # and tracking goes on with the frames' own matcher, up to scale
    # (frame 0 is the world origin of both, so only the scale differs)
    idx, _, poses = tracker.trajectory()
    truth_c = np.stack([se3_inverse(cam_from_world(i))[:3, 3] for i in idx])
    est_c = poses[:, :3, 3]
    scale = float(np.sum(est_c * truth_c) / np.sum(est_c * est_c))
    assert np.abs(est_c * scale - truth_c).max() < 2e-3


def test_dense_initialise_keeps_the_reference_when_matches_miss_the_keypoints():
    scene = Scene(22)
    cfg = TrackingConfig()
    tracker = Tracker(cfg, CAM, Map(D, binary=True), SwitchableNN(), mode="mono",
                      dense=DenseMatching(TruthDenseMatcher(scene, bare_only=True), CAM, cfg, init=True, reloc=False))
    ref = scene.frame(0, 0, depth=False)
    tracker.mono_init.reference_for(ref)
    cur = scene.frame(15, 15, depth=False)
    # matches only where no keypoint was detected: the geometry is fine (true correspondences),
    # but no map point can be made (chance neighbours fail the descriptor test)
    assert tracker.dense.initialise(tracker.mono_init, ref, cur) is None
    assert tracker.mono_init.ref is ref


# ------------------------------------------------------------------ relocalisation
@pytest.mark.parametrize("mode", ["rgbd", "mono"])
def test_dense_relocalisation_finds_the_pose_where_keypoint_matching_cannot(mode):
    scene = Scene(23)
    m = Map(D, binary=True, capacity=8192)
    matcher = SwitchableNN()
    stub = TruthDenseMatcher(scene)
    cfg = TrackingConfig()
    dense = DenseMatching(stub, CAM, cfg, init=False, reloc=True)
    tracker = Tracker(cfg, CAM, m, matcher, mode=mode, dense=dense)
    depth = mode == "rgbd"
    for i in range(25):
        res, _ = tracker.process(scene.frame(i, i, depth=depth))
    assert res.state == "OK"
    assert all(kf.image is not None for kf in m.keyframes.values())  # keyframes keep their images
    res, _ = tracker.process(scene.frame(25, 25, depth=depth, max_kp=0))  # nothing seen: lost
    assert res.state == "LOST"
    matcher.blind = True  # keypoint relocalisation cannot succeed from here on
    n_pairs = len(stub.pairs)
    res, _ = tracker.process(scene.frame(26, 12.5, depth=depth))  # back near frame 12
    assert res.state == "OK" and tracker.n_relocalised == 1
    dt, dr = pose_error(se3_inverse(res.world_from_cam), cam_from_world(12.5)) if depth else (None, None)
    if depth:
        assert dt < 1e-3 and dr < 0.05
    else:  # monocular: frame 0 is the world origin of both; the map has its own scale
        got, want = res.world_from_cam, se3_inverse(cam_from_world(12.5))
        assert rotation_angle_deg(got[:3, :3] @ want[:3, :3].T) < 0.05
        cos = got[:3, 3] @ want[:3, 3] / np.linalg.norm(got[:3, 3]) / np.linalg.norm(want[:3, 3])
        assert np.degrees(np.arccos(min(cos, 1.0))) < 0.5
    new = stub.pairs[n_pairs:]
    assert 1 <= len(new) <= cfg.reloc_dense_candidates and all(t1 == 12.5 for _, t1 in new)
    # the frame's keypoints now carry the points they show
    assert res.n_inliers >= cfg.reloc_min_inliers


def test_dense_relocalisation_gives_up_on_a_frame_from_elsewhere():
    scene = Scene(24)
    m = Map(D, binary=True, capacity=8192)
    cfg = TrackingConfig()
    tracker = Tracker(cfg, CAM, m, SwitchableNN(), mode="rgbd",
                      dense=DenseMatching(TruthDenseMatcher(scene), CAM, cfg, init=False, reloc=True))
    for i in range(10):
        tracker.process(scene.frame(i, i, depth=True))
    tracker.process(scene.frame(10, 10, depth=True, max_kp=0))
    other = Scene(99).frame(11, 5, depth=True)  # other points, other descriptors
    other.image = np.array([[400.0]])  # a view the stub sees nothing shared with
    res, _ = tracker.process(other)
    assert res.state == "LOST"


# ------------------------------------------------------------------ loop verification
class BlindMatcher:
    """A learned-matcher stand-in that finds nothing: keypoint verification cannot pass."""

    def match(self, f0, f1):
        n = len(f0.keypoints)
        return Matches(np.full(n, -1), np.zeros(n))


def _two_visits(mode: str, scene: Scene, stub, t_cur: float):
    """One map, two trackers: the first maps frames 0-14, the second starts afresh at t_cur
    (a later visit of the same place, with its own points: a loop to close). Returns (map,
    DenseMatching, first visit's keyframe nearest t_cur - 5 (a baseline that fixes the
    translation's direction), the second visit's first keyframe)."""
    m = Map(D, binary=True, capacity=16384)
    cfg = TrackingConfig()
    dense = DenseMatching(stub, CAM, cfg, init=False, reloc=False, loop=True)
    depth = mode == "rgbd"
    first = Tracker(cfg, CAM, m, SwitchableNN(), mode=mode, dense=dense)
    for i in range(15):
        first.process(scene.frame(i, i, depth=depth))
    n_first = set(m.keyframes)
    second = Tracker(cfg, CAM, m, SwitchableNN(), mode=mode, dense=dense)
    for i in range(12):
        res, _ = second.process(scene.frame(100 + i, t_cur + 0.5 * i, depth=depth))
    assert res.state == "OK"
    assert all(kf.image is not None for kf in m.keyframes.values())  # loop verification keeps keyframe images
    old = min(n_first, key=lambda k: abs(m.keyframes[k].frame_index - (t_cur - 5)))
    new = min(set(m.keyframes) - n_first)
    return m, dense, old, new


def test_keyframe_pairs_snap_wide_on_the_grid_side_and_tight_on_the_other():
    """Image 0's match points lie on LoFTR's 8 px grid: the keypoint 3 px away is taken, and the
    offset is carried to image 1. There the same point's keypoint is found at the carried spot;
    where image 1's detector missed it, a neighbour 3 px away is not paired under radius1 = 2."""
    from slam.tracking.dense_match import DenseMatches

    cfg = TrackingConfig(dense_snap_px=4.0)
    dense = DenseMatching(TruthDenseMatcher(Scene(0)), CAM, cfg, init=False, reloc=False, loop=True)
    kf0 = SimpleNamespace(kp_uv=np.array([[103.0, 200.0], [203.0, 300.0]]))
    kf1 = SimpleNamespace(kp_uv=np.array([[153.2, 210.1], [256.0, 310.0]]))  # the second: 3 px off its carried spot
    dm = DenseMatches(np.array([[100.0, 200.0], [200.0, 300.0]]), np.array([[150.0, 210.0], [250.0, 310.0]]), np.ones(2))
    i0, i1 = np.array([0, 1]), np.array([0, 1])
    np.testing.assert_array_equal(dense.keyframe_pairs(kf0, kf1, dm, i0, i1, radius1=2.0), [[0, 0]])
    np.testing.assert_array_equal(dense.keyframe_pairs(kf0, kf1, dm, i0, i1, radius1=4.0), [[0, 0], [1, 1]])
    # positions index into i0 / i1 (the keypoints with map points)
    np.testing.assert_array_equal(dense.keyframe_pairs(kf0, kf1, dm, np.array([1]), np.array([1]), radius1=4.0), [[0, 0]])


@pytest.mark.parametrize("mode", ["rgbd", "mono"])
def test_loop_verification_from_dense_matches_finds_the_true_relative_pose(mode):
    from slam.loop.config import LoopClosingConfig
    from slam.loop.verification import LoopVerifier

    scene = Scene(25)
    stub = TruthDenseMatcher(scene)
    m, dense, old, new = _two_visits(mode, scene, stub, t_cur=9.3)
    cur, cand = m.keyframes[new], m.keyframes[old]
    assert not np.intersect1d(cur.point_ids[cur.point_ids >= 0], cand.point_ids[cand.point_ids >= 0]).size  # duplicated points
    verifier = LoopVerifier(LoopClosingConfig(), CAM.K, CAM, BlindMatcher(), mode, 80.0, dense=dense)
    with m.lock:
        assert verifier.verify(m, new, old, []) is None  # the keypoint matcher finds nothing
        assert verifier.n_rejected["matches"] == 1
        pairs = verifier.image_pairs(m, new, [old])
    n = len(stub.pairs)
    dms = verifier.dense_match(pairs)
    assert stub.pairs[n:] == [(float(cur.image[0, 0]), float(cand.image[0, 0]))]
    with m.lock:
        lm = verifier.verify(m, new, old, [], dense=dms[0])
    assert lm is not None and verifier.n_dense == 1
    want = cam_from_world(float(cur.image[0, 0])) @ se3_inverse(cam_from_world(float(cand.image[0, 0])))  # cur_from_cand
    S = lm.cur_from_loop
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    assert rotation_angle_deg(S[:3, :3] / s @ want[:3, :3].T) < 0.05
    if mode == "rgbd":
        assert abs(s - 1.0) < 1e-9 and np.linalg.norm(S[:3, 3] - want[:3, 3]) < 2e-3
    else:  # the two visits have their own scales: the direction of the translation
        cos = S[:3, 3] @ want[:3, 3] / np.linalg.norm(S[:3, 3]) / np.linalg.norm(want[:3, 3])
        assert np.degrees(np.arccos(min(cos, 1.0))) < 1.0
    assert lm.n_final >= LoopClosingConfig().min_final_inliers


def test_loop_closing_runs_loftr_without_the_map_lock():
    from slam.loop.closing import LoopClosing
    from slam.loop.config import LoopClosingConfig
    from slam.loop.detection import covisibility
    from slam.loop.verification import LoopVerifier

    scene = Scene(26)

    class LockCheckingStub(TruthDenseMatcher):
        def match_images(self, image0, image1):
            self.lock_was_held = m.lock._is_owned()  # threading.RLock: held by this thread
            return super().match_images(image0, image1)

    stub = LockCheckingStub(scene)
    m, dense, old, new = _two_visits("rgbd", scene, stub, t_cur=9.3)
    lc = object.__new__(LoopClosing)  # only the verification scheduling, not a whole run
    lc.map = m
    lc.verifier = LoopVerifier(LoopClosingConfig(), CAM.K, CAM, BlindMatcher(), "rgbd", 80.0, dense=dense)
    seen = []

    def find(k):
        return [old], covisibility(m)

    def verify(k, cand, cov, dm):
        seen.append((k, cand, dm))
        return lc.verifier.verify(m, k, cand, [], dense=dm)

    lm = lc._verify_first(new, find, verify)
    assert stub.lock_was_held is False
    assert lm is not None and lm.loop_kf == old and seen[0][2] is not None and len(seen[0][2]) > 100


# ------------------------------------------------------------------ real weights
@pytest.mark.needs_data
def test_loftr_weights_initialise_fr1_xyz(fr1_xyz):
    from slam.weights import resolve_weights

    try:
        resolve_weights("loftr_indoor")
    except WeightsError as exc:
        pytest.skip(f"no LoFTR checkpoint installed: {exc}")
    import cv2

    from slam.config import load_config
    from slam.system import build_dense, build_frontend
    from slam.tracking.initializer import MonoInitializer
    from slam.types import Frame

    cfg = load_config(None, ["features=orb", "mode=mono", "tracking.mono_init_matcher=loftr"])
    cam = PinholeCamera(width=640, height=480, fx=517.3, fy=516.5, cx=318.6, cy=255.3,
                        dist=(0.2624, -0.9531, -0.0054, 0.0026, 1.1633))
    names = sorted((fr1_xyz / "rgb").glob("*.jpg"))
    front = build_frontend(cfg, cam)
    frames = [front.process(Frame(i, float(i), cv2.imread(str(names[i])), None)) for i in (0, 40)]
    assert all(f.image is not None for f in frames)
    dense = build_dense(cfg, cam, torch.device("cpu"))
    init = MonoInitializer(cfg.tracking, cam.K)
    init.reference_for(frames[0])
    found = dense.initialise(init, frames[0], frames[1])
    assert found is not None and len(found.pairs) >= cfg.tracking.mono_init_min_matches // 2


def test_frames_keep_a_grey_copy_for_the_dense_matcher():
    """LoFTR reads grey images (it converts BGR with cv2.cvtColor): the feature stage keeps that
    grey copy, a third of the colour image's memory per keyframe."""
    import cv2

    from slam.tracking.frontend import FeatureStage, grey_copy
    from slam.types import Frame

    rng = np.random.default_rng(0)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 1.5)
    grey = grey_copy(bgr)
    assert grey.shape == (120, 160) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert grey_copy(grey) is not grey and np.array_equal(grey_copy(grey), grey)

    class NoFeatures:
        def extract(self, image):
            return Features(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, D, dtype=torch.uint8), (160, 120))

    cam = PinholeCamera(width=160, height=120, fx=100.0, fy=100.0, cx=80.0, cy=60.0)
    kept = FeatureStage(NoFeatures(), cam, keep_image=True).process(Frame(0, 0.0, bgr, None))
    np.testing.assert_array_equal(kept.image, grey)
    assert FeatureStage(NoFeatures(), cam).process(Frame(0, 0.0, bgr, None)).image is None


class LearnedStyleNN:
    """Descriptor nearest neighbours behind the learned matchers' interface (``match`` only), so
    verification takes the learned matcher's path."""

    def __init__(self) -> None:
        self.nn = NearestNeighborMatcher(device="cpu")

    def match(self, f0, f1):
        return self.nn.match(f0, f1)


@pytest.mark.parametrize("mode", ["rgbd", "mono"])
def test_verification_from_matches_made_earlier_equals_verification_on_the_spot(mode):
    """Dataset runs match a loop candidate in the loop-closing stage and verify it frames later
    (loop_closing.verify_delay_frames): the same matches give the same loop, and a keypoint whose
    point died or was taken away since the matching drops out instead of failing."""
    from slam.loop.config import LoopClosingConfig
    from slam.loop.verification import LoopVerifier

    scene = Scene(25)
    m, dense, old, new = _two_visits(mode, scene, TruthDenseMatcher(scene), t_cur=9.3)
    verifier = LoopVerifier(LoopClosingConfig(), CAM.K, CAM, LearnedStyleNN(), mode, 80.0)
    with m.lock:
        cur, cand = m.keyframes[new], m.keyframes[old]
        i_cur, i_cand = np.nonzero(cur.point_ids >= 0)[0], np.nonzero(cand.point_ids >= 0)[0]
        pr = verifier.match_pair(cur, cand, i_cur, i_cand)
        now = verifier.verify(m, new, old, [])
        early = verifier.verify(m, new, old, [], matched=(i_cur, i_cand, pr))
    assert now is not None and early is not None
    np.testing.assert_array_equal(now.cur_from_loop, early.cur_from_loop)
    np.testing.assert_array_equal(now.cur_kp, early.cur_kp)
    # since the matching: one matched keypoint's point died, another keypoint lost its point
    with m.lock:
        a = i_cur[pr[:, 0]]
        m.pts_alive[cur.point_ids[a[0]]] = False
        cur.point_ids[a[1]] = -1
        later = verifier.verify(m, new, old, [], matched=(i_cur, i_cand, pr))
    assert later is not None
    assert later.n_ransac <= early.n_ransac


def test_descriptor_prefilter_skips_the_learned_matcher_for_an_unlike_candidate():
    """loop_closing.descriptor_prefilter: a candidate whose map-point descriptors find fewer than
    min_matches mutual nearest neighbours is rejected before the learned matcher runs; a true
    candidate passes, and with the prefilter off the learned matcher always runs."""
    from slam.loop.config import LoopClosingConfig
    from slam.loop.verification import LoopVerifier

    class Counting(LearnedStyleNN):
        calls = 0

        def match(self, f0, f1):
            Counting.calls += 1
            return super().match(f0, f1)

    scene = Scene(25)
    m, dense, old, new = _two_visits("rgbd", scene, TruthDenseMatcher(scene), t_cur=9.3)
    on = LoopVerifier(LoopClosingConfig(), CAM.K, CAM, Counting(), "rgbd", 80.0)
    off = LoopVerifier(LoopClosingConfig(descriptor_prefilter=False), CAM.K, CAM, Counting(), "rgbd", 80.0)
    with m.lock:
        assert on.verify(m, new, old, []) is not None and Counting.calls == 1 and not on.prefiltered
        cand = m.keyframes[old]
        cand.desc = np.random.default_rng(0).integers(0, 256, cand.desc.shape, dtype=np.uint8)  # unlike descriptors
        assert on.verify(m, new, old, []) is None
        assert Counting.calls == 1 and on.prefiltered == [(new, old)] and on.n_rejected["matches"] == 1
        assert off.verify(m, new, old, []) is not None and Counting.calls == 2  # the features themselves still match
