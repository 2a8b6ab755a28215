"""The tracker and its parts (slam.tracking) on synthetic point scenes with exact ground truth.

A scene is a cloud of 3D points, each with its own random 32-byte binary descriptor. A frame
shows the points in view at their exact projections (and exact depth in RGB-D), so matching
is unambiguous and every pose can be checked to high precision.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from slam.errors import ConfigError

from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import make_se3, rotation_angle_deg, se3_inverse, so3_exp, transform_points
from slam.mapping.map import Map
from slam.matching.base import DESCRIPTOR, LEARNED, Matcher, matcher_kind
from slam.matching.nn import NearestNeighborMatcher
from slam.runtime.schedule import MappingSchedule
from slam.tracking.config import KeyframePolicyConfig, TrackingConfig
from slam.tracking.initializer import DepthInitializer, MonoInitializer, keypoint_correspondences
from slam.tracking.keyframes import KeyframeFactory
from slam.tracking.local_map import LocalMapTracking
from slam.tracking.pose import PoseEstimator
from slam.tracking.relocalizer import Relocalizer
from slam.tracking.search import CandidateSearch
from slam.tracking.tracker import Tracker
from slam.tracking.trajectory import FrameTrajectory
from slam.types import Features, FrameFeatures, Matches

CAM = PinholeCamera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0)
D = 32


class Scene:
    def __init__(self, seed: int = 0, n: int = 3000) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.pts = np.column_stack([rng.uniform(-4, 4, n), rng.uniform(-3, 3, n), rng.uniform(3, 7, n)])
        self.desc = rng.integers(0, 256, size=(n, D), dtype=np.uint8)

    @staticmethod
    def cam_from_world(t: float) -> np.ndarray:
        """A smooth trajectory: sideways and upwards motion with a slow turn."""
        world_from_cam = make_se3(so3_exp(np.array([0.002 * t, 0.004 * t, 0.001 * t])), np.array([0.02 * t, 0.005 * t, 0.003 * t]))
        return se3_inverse(world_from_cam)

    def frame(self, index: int, cam_from_world: np.ndarray, depth: bool, max_kp: int = 1500) -> FrameFeatures:
        pc = transform_points(cam_from_world, self.pts)
        uv = CAM.project_undistorted(np.where(pc[:, 2:3] > 0.1, pc, 1.0))
        ids = np.nonzero((pc[:, 2] > 0.1) & CAM.in_image(uv))[0]
        ids = np.random.default_rng(index).permutation(ids)[:max_kp]  # keypoint order unrelated to point ids
        n = len(ids)
        feats = Features(torch.from_numpy(uv[ids]).float(), torch.ones(n), torch.from_numpy(self.desc[ids]), (CAM.width, CAM.height))
        return FrameFeatures(index, index / 30.0, feats, uv[ids].copy(), pc[ids, 2].copy() if depth else np.zeros(n), np.ones(n),
                             np.zeros((n, 3), dtype=np.uint8), self.desc[ids].copy())


class OracleLearnedMatcher:
    """A 'learned' matcher that matches equal descriptors; records whether map.lock was free."""

    name = "oracle"
    kind = LEARNED

    def __init__(self, slam_map: Map | None = None) -> None:
        self.map = slam_map
        self.lock_free: list[bool] = []
        self.calls = 0

    def _lock_is_free(self) -> bool:
        out = []

        def probe():
            ok = self.map.lock.acquire(blocking=False)
            out.append(ok)
            if ok:
                self.map.lock.release()

        t = threading.Thread(target=probe)
        t.start()
        t.join()
        return out[0]

    def match(self, f0: Features, f1: Features) -> Matches:
        index = {bytes(d): j for j, d in enumerate(f1.descriptors.numpy())}
        m0 = np.array([index.get(bytes(d), -1) for d in f0.descriptors.numpy()], dtype=np.int64)
        return Matches(m0, (m0 >= 0).astype(np.float32))

    def match_many(self, query, refs):
        self.calls += 1
        if self.map is not None:
            self.lock_free.append(self._lock_is_free())
        return [self.match(query, r) for r in refs]


class CountingNN(NearestNeighborMatcher):
    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.calls = 0

    def match_many(self, query, refs):
        self.calls += 1
        return super().match_many(query, refs)


def new_map() -> Map:
    return Map(D, binary=True, capacity=4096)


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation difference m, rotation difference deg) of two cam_from_world."""
    d = a @ se3_inverse(b)
    return float(np.linalg.norm(se3_inverse(a)[:3, 3] - se3_inverse(b)[:3, 3])), rotation_angle_deg(d[:3, :3])


def run_tracker(tracker: Tracker, scene: Scene, frames, depth: bool):
    out = []
    for i in frames:
        res, job = tracker.process(scene.frame(i, Scene.cam_from_world(i), depth))
        out.append((res, job))
    return out


# ------------------------------------------------------------------ matcher capability
def test_matchers_declare_their_kind():
    from slam.matching.lightglue import LightGlue
    from slam.matching.superglue import SuperGlue

    assert matcher_kind(NearestNeighborMatcher()) == DESCRIPTOR
    assert LightGlue.kind == LEARNED and SuperGlue.kind == LEARNED
    assert isinstance(OracleLearnedMatcher(), Matcher)


def test_matcher_without_kind_is_refused_by_name():
    class Plain:
        name = "plain"

        def match(self, f0, f1):
            raise AssertionError

        def match_many(self, q, refs):
            raise AssertionError

    assert not isinstance(Plain(), Matcher)
    with pytest.raises(TypeError, match="Plain declares kind=None"):
        Tracker(TrackingConfig(), CAM, new_map(), Plain())


# ------------------------------------------------------------------ initialisers
def test_depth_initializer_needs_enough_keypoints_with_depth():
    init = DepthInitializer(TrackingConfig(min_inliers=80))
    fr = Scene().frame(0, Scene.cam_from_world(0), depth=True)
    assert init.ready(fr)
    fr.kp_depth[79:] = 0
    assert not init.ready(fr)
    fr.kp_depth[79] = 1.0
    assert init.ready(fr)


def test_mono_initializer_recovers_relative_pose_from_matched_points():
    scene = Scene(1)
    init = MonoInitializer(TrackingConfig(), CAM.K)
    f0 = scene.frame(0, Scene.cam_from_world(0), depth=False)
    f1 = scene.frame(12, Scene.cam_from_world(12), depth=False)
    assert init.reference_for(f0) is None and init.ref is f0  # the first usable frame becomes the reference
    assert init.reference_for(f1) is f0
    pairs, x0, x1 = keypoint_correspondences(OracleLearnedMatcher(), f0, f1)
    assert pairs.shape[1] == 2 and len(pairs) > 500
    np.testing.assert_array_equal(x0, f0.kp_uv[pairs[:, 0]])
    res = init.initialise(f1, x0, x1)
    assert res is not None and init.ref is None
    truth = Scene.cam_from_world(12) @ se3_inverse(Scene.cam_from_world(0))
    assert rotation_angle_deg(res.cam1_from_cam0[:3, :3] @ truth[:3, :3].T) < 1e-3
    t, t_true = res.cam1_from_cam0[:3, 3], truth[:3, 3]
    assert np.degrees(np.arccos(np.clip(t @ t_true / np.linalg.norm(t) / np.linalg.norm(t_true), -1, 1))) < 0.05
    # the points, in the reference camera, match the truth up to the monocular scale
    kept = pairs[res.valid, 0]
    truth_pts = transform_points(Scene.cam_from_world(0), scene.pts)[[int(np.nonzero((scene.desc == f0.desc[k]).all(1))[0][0]) for k in kept]]
    scale = np.median(truth_pts[:, 2]) / np.median(res.pts_cam0[res.valid][:, 2])
    np.testing.assert_allclose(res.pts_cam0[res.valid] * scale, truth_pts, atol=1e-4)


def test_mono_initializer_replaces_stale_or_unmatched_reference():
    cfg = TrackingConfig(mono_init_max_gap=10, mono_init_min_matches=100)
    scene = Scene(2)
    init = MonoInitializer(cfg, CAM.K)
    f0, f5, f20 = (scene.frame(i, Scene.cam_from_world(i), False) for i in (0, 5, 20))
    few = scene.frame(3, Scene.cam_from_world(3), False, max_kp=99)
    assert init.reference_for(few) is None and init.ref is None  # too few keypoints: not even a reference
    init.reference_for(f0)
    assert init.reference_for(f20) is None and init.ref is f20  # 20 frames after the reference: replaced
    init.ref = f0
    assert init.initialise(f5, f0.kp_uv[:60], f5.kp_uv[:60]) is None and init.ref is f0  # 60 >= 50: keep waiting
    assert init.initialise(f5, f0.kp_uv[:40], f5.kp_uv[:40]) is None and init.ref is f5  # < 50 matches: restart


# ------------------------------------------------------------------ 2D-3D candidates and pose
def scene_map(scene: Scene, depth: bool = True):
    """A map with one keyframe at frame 0 holding every visible point (RGB-D depth points)."""
    m = new_map()
    fac = KeyframeFactory(CAM, m, "rgbd" if depth else "mono")
    f0 = scene.frame(0, Scene.cam_from_world(0), depth=True)
    kf, ids = fac.insert(f0, Scene.cam_from_world(0), np.full(len(f0.kp_uv), -1, dtype=np.int64))
    return m, fac, f0, kf, ids


def truth_ids(scene: Scene, m: Map, fr: FrameFeatures) -> np.ndarray:
    """The map point each keypoint of fr shows (by descriptor), -1 if the map lacks it."""
    alive = m.alive_point_ids()
    index = {bytes(m.pts_desc[p]): p for p in alive.tolist()}
    return np.array([index.get(bytes(d), -1) for d in fr.desc], dtype=np.int64)


def test_keyframe_factory_creates_depth_points_at_the_true_positions():
    scene = Scene(3)
    m, _, f0, kf, ids = scene_map(scene)
    assert len(ids) == len(f0.kp_uv) and (kf.point_ids == ids).all()
    truth = scene.pts[[int(np.nonzero((scene.desc == d).all(1))[0][0]) for d in f0.desc]]
    np.testing.assert_allclose(m.pts_xyz[ids], truth, atol=1e-9)
    # normals point from the keyframe centre to the point
    v = truth - kf.center
    np.testing.assert_allclose(m.pts_normal[ids], v / np.linalg.norm(v, axis=1, keepdims=True), atol=1e-9)
    assert (m.pts_n_obs[ids] == 1).all()


def test_guided_search_and_pose_from_motion_prior():
    scene = Scene(4)
    m, _, f0, kf, _ = scene_map(scene)
    cfg = TrackingConfig()
    search = CandidateSearch(cfg, CAM, m, DESCRIPTOR)
    pose = PoseEstimator(cfg, CAM, m, "rgbd")
    fr = scene.frame(3, Scene.cam_from_world(3), depth=True)
    pred = Scene.cam_from_world(2)  # the prior is one frame off
    point_ids, enough = search.by_motion(fr, pred, kf.point_ids)
    assert enough
    want = truth_ids(scene, m, fr)
    hit = point_ids >= 0
    assert hit.sum() > 0.9 * (want >= 0).sum()
    np.testing.assert_array_equal(point_ids[hit], want[hit])  # no wrong match
    cam_from_world, inl = pose.estimate(fr, point_ids, pred, pred)
    assert inl.sum() == hit.sum()
    dt, dr = pose_error(cam_from_world, Scene.cam_from_world(3))
    assert dt < 1e-7 and dr < 1e-6
    # PnP without a prior, from far away
    cam_from_world, inl = pose.estimate(fr, point_ids, None, np.eye(4))
    dt, dr = pose_error(cam_from_world, Scene.cam_from_world(3))
    assert dt < 1e-7 and dr < 1e-6


def test_prediction_check_replaces_a_missed_prediction_with_the_descriptor_pose():
    """The motion model misses a 6 deg jerk (about 50 px): mutual nearest descriptors to the
    last frame's points and PnP give the true pose, which replaces the prediction. A good
    prediction is kept as it is (the same array)."""
    scene = Scene(6)
    m, _, f0, kf, _ = scene_map(scene)
    search = CandidateSearch(TrackingConfig(), CAM, m, DESCRIPTOR)
    truth = Scene.cam_from_world(2)
    fr = scene.frame(2, truth, depth=True)
    jerk = make_se3(so3_exp(np.array([0.0, np.radians(6.0), 0.0])), np.zeros(3))
    missed = jerk @ truth
    checked, shift = search.check_prediction(fr, missed, kf.point_ids)
    assert shift > 40.0
    dt, dr = pose_error(checked, truth)
    assert dt < 1e-6 and dr < 1e-5
    kept, shift = search.check_prediction(fr, truth, kf.point_ids)
    assert kept is truth and shift < 1e-6
    # switched off: the prediction always stays
    off = CandidateSearch(TrackingConfig(predict_check_px=1e9), CAM, m, DESCRIPTOR)
    assert off.check_prediction(fr, missed, kf.point_ids)[0] is missed
    # too few live points in the last frame: nothing to check with
    few = kf.point_ids.copy()
    few[15:] = -1
    assert search.check_prediction(fr, missed, few) == (missed, 0.0)


def test_guided_search_reports_too_few_matches():
    scene = Scene(5)
    m, _, f0, kf, _ = scene_map(scene)
    search = CandidateSearch(TrackingConfig(min_matches_motion=20), CAM, m, DESCRIPTOR)
    fr = scene.frame(3, Scene.cam_from_world(3), depth=True)
    few = kf.point_ids.copy()
    few[19:] = -1  # the last frame saw 19 points only
    point_ids, enough = search.by_motion(fr, Scene.cam_from_world(3), few)
    assert not enough and 0 < (point_ids >= 0).sum() <= 19


def test_keyframe_matches_fuse_best_score_and_one_keypoint_per_point():
    m = new_map()
    fac = KeyframeFactory(CAM, m, "mono")
    pts = m.add_points(np.ones((4, 3)), np.zeros((4, D), np.uint8), np.zeros((4, 3), np.uint8), 0)
    f = Scene(6).frame(0, Scene.cam_from_world(0), depth=False, max_kp=6)
    ka, _ = fac.insert(f, np.eye(4), np.array([pts[0], pts[1], pts[2], -1, -1, -1]))
    kb, _ = fac.insert(f, np.eye(4), np.array([pts[3], pts[0], -1, -1, -1, pts[2]]))
    m.remove_points(pts[2:3])  # dead points never become candidates
    search = CandidateSearch(TrackingConfig(learned_matching="every_frame"), CAM, m, LEARNED)
    # frame keypoint -> keyframe keypoint
    ma = Matches([0, 1, 2, -1, -1], [0.5, 0.9, 0.9, 0, 0])
    mb = Matches([1, 0, -1, 5, 1], [0.8, 0.3, 0, 0.9, 0.6])
    got = search.from_keyframe_matches(5, [ka.id, kb.id], [ma, mb])
    # kp0: a->p0 (0.5) vs b->p0 (0.8): p0 at 0.8; kp1: a->p1 (0.9) beats b->p3 (0.3); kp2: dead p2;
    # kp3: b->kp5 = dead p2; kp4: b->p0 (0.6) loses p0 to kp0 (0.8)
    np.testing.assert_array_equal(got, [pts[0], pts[1], -1, -1, -1])
    m.remove_keyframe(kb.id)  # a keyframe culled since the matcher ran is skipped
    got = search.from_keyframe_matches(5, [ka.id, kb.id], [ma, mb])
    np.testing.assert_array_equal(got, [pts[0], pts[1], -1, -1, -1])


def test_local_map_tracking_adds_points_and_counts_visibility():
    scene = Scene(7)
    m, fac, f0, kf, _ = scene_map(scene)
    cfg = TrackingConfig()
    search = CandidateSearch(cfg, CAM, m, DESCRIPTOR)
    pose = PoseEstimator(cfg, CAM, m, "rgbd")
    lm = LocalMapTracking(cfg, m, search, pose)
    fr = scene.frame(4, Scene.cam_from_world(4), depth=True)
    want = truth_ids(scene, m, fr)
    seed = np.full(len(fr.kp_uv), -1, dtype=np.int64)
    seed[:40] = want[:40]  # a first estimate from 40 candidates
    visible0, found0 = m.pts_visible.copy(), m.pts_found.copy()
    cam_from_world, point_ids, n_inl, ref = lm.track(fr, Scene.cam_from_world(4) @ make_se3(so3_exp([0.002, 0, 0]), [0.01, 0, 0]),
                                                      seed.copy(), None)
    assert ref == kf.id
    hit = point_ids >= 0
    assert n_inl == hit.sum() > 0.9 * (want >= 0).sum()
    np.testing.assert_array_equal(point_ids[hit], want[hit])
    dt, dr = pose_error(cam_from_world, Scene.cam_from_world(4))
    assert dt < 1e-7 and dr < 1e-6
    assert ((m.pts_found - found0)[point_ids[hit]] == 1).all() and (m.pts_found - found0).sum() == n_inl
    assert ((m.pts_visible - visible0)[point_ids[hit]] == 1).all()
    assert (m.pts_visible - visible0).max() == 1


def test_relocalizer_finds_the_pose_from_keyframe_matches():
    scene = Scene(8)
    m, fac, f0, kf0, _ = scene_map(scene)
    f30 = scene.frame(30, Scene.cam_from_world(30), depth=True)
    kf1, _ = fac.insert(f30, Scene.cam_from_world(30), truth_ids(scene, m, f30))
    cfg = TrackingConfig()
    pose = PoseEstimator(cfg, CAM, m, "rgbd")
    reloc = Relocalizer(cfg, m, pose, LocalMapTracking(cfg, m, CandidateSearch(cfg, CAM, m, DESCRIPTOR), pose))
    assert [k.id for k in reloc.candidates(Scene.cam_from_world(28))] == [kf1.id, kf0.id]  # nearest first
    assert [k.id for k in reloc.candidates(None)] == [kf1.id, kf0.id]  # newest first
    fr = scene.frame(27, Scene.cam_from_world(27), depth=True)
    cands = reloc.candidates(np.eye(4))
    matcher = OracleLearnedMatcher()
    found = reloc.attempt(fr, [k.id for k in cands], matcher.match_many(fr.features, [k.features for k in cands]))
    assert found is not None and found.n_inliers >= cfg.reloc_min_inliers
    dt, dr = pose_error(found.cam_from_world, Scene.cam_from_world(27))
    assert dt < 1e-7 and dr < 1e-6
    want = truth_ids(scene, m, fr)
    hit = found.point_ids >= 0
    np.testing.assert_array_equal(found.point_ids[hit], want[hit])
    # nothing to match: no relocalisation
    assert reloc.attempt(fr, [kf0.id], [Matches(np.full(len(fr.kp_uv), -1), np.zeros(len(fr.kp_uv)))]) is None


def test_frame_trajectory_follows_keyframes_and_culled_parents():
    scene = Scene(9)
    m, fac, f0, kf0, _ = scene_map(scene)
    f5 = scene.frame(5, Scene.cam_from_world(5), depth=True)
    kf1, _ = fac.insert(f5, Scene.cam_from_world(5), np.full(len(f5.kp_uv), -1, dtype=np.int64))
    traj = FrameTrajectory(m)
    traj.add(6, 0.2, kf1, Scene.cam_from_world(6))
    traj.add(2, 0.1, kf0, Scene.cam_from_world(2))
    idx, ts, poses = traj.poses()
    np.testing.assert_array_equal(idx, [2, 6])
    np.testing.assert_allclose(poses[1], se3_inverse(Scene.cam_from_world(6)), atol=1e-12)
    # moving a keyframe moves its frames rigidly
    shift = make_se3(np.eye(3), [0.1, 0, 0])
    kf1.cam_from_world = kf1.cam_from_world @ shift
    np.testing.assert_allclose(traj.poses()[2][1], se3_inverse(Scene.cam_from_world(6) @ shift), atol=1e-12)
    # culling keyframe 1 under parent 0: the frame keeps its pose
    before = traj.poses()[2][1]
    m.remove_keyframe(kf1.id, parent_id=kf0.id)
    np.testing.assert_allclose(traj.poses()[2][1], before, atol=1e-12)
    assert len(traj) == 2


@pytest.mark.parametrize("depth", [False, True])
def test_frame_trajectory_refine_brings_frames_back_to_the_map(depth):
    """Frames stored with a tracking error (3 cm, 0.6 deg) relative to their keyframe come back
    to their exact pose against the map; a frame with too few live points keeps its pose; the
    live keyframe's own frame is left to bundle adjustment."""
    scene = Scene(10)
    m, fac, f0, kf0, _ = scene_map(scene)
    bf = 40.0 if depth else 0.0
    traj = FrameTrajectory(m, max_obs=128)
    err = make_se3(so3_exp(np.array([0.0, 0.01, 0.0])), np.array([0.03, -0.01, 0.0]))

    def obs(fr, n=None):
        ids = truth_ids(scene, m, fr)
        kp = np.nonzero(ids >= 0)[0][:n]
        inv_depth = 1.0 / fr.kp_depth[kp] if depth else np.full(len(kp), np.nan)  # what the tracker keeps
        return ids[kp], fr.kp_uv[kp], np.ones(len(kp)), inv_depth

    frames = [scene.frame(i, Scene.cam_from_world(i), depth=True) for i in (0, 3, 6)]
    traj.add(0, 0.0, kf0, Scene.cam_from_world(0) @ err, obs(frames[0]))  # the keyframe's own frame
    traj.add(3, 0.1, kf0, err @ Scene.cam_from_world(3), obs(frames[1]))
    traj.add(6, 0.2, kf0, err @ Scene.cam_from_world(6), obs(frames[2], n=25))
    m.remove_points(traj._obs[2][0][:10])  # 15 live points left: too few
    out = traj.refine(CAM.K, bf)
    assert out["frames"] == 1 and out["skipped"] == 1
    assert 0.02 < out["median_shift_m"] < 0.1
    _, _, poses = traj.poses()
    np.testing.assert_allclose(poses[1], se3_inverse(Scene.cam_from_world(3)), atol=1e-6)
    np.testing.assert_allclose(poses[0], se3_inverse(Scene.cam_from_world(0) @ err), atol=1e-12)  # untouched
    np.testing.assert_allclose(poses[2], se3_inverse(err @ Scene.cam_from_world(6)), atol=1e-12)  # untouched
    # nothing is kept without max_obs
    plain = FrameTrajectory(m)
    plain.add(3, 0.1, kf0, Scene.cam_from_world(3), obs(frames[1]))
    assert plain._obs == {} and plain.refine(CAM.K)["frames"] == 0


@pytest.mark.parametrize("two_maps", [False, True])
def test_frame_trajectory_refine_with_the_smooth_motion_prior(two_maps):
    """accel_per_depth > 0: the frames between keyframes 0 and 9 are solved together. On the
    scene's constant-velocity path with exact pixels they land on the truth; frame 6, which kept
    too few matches for the pose-only pass, gets its centre from its neighbours (its rotation
    stays). With the second keyframe in another atlas map, the stretch keeps only keyframe 0 as
    its anchor and the result is the same."""
    scene = Scene(11)
    m, fac, f0, kf0, _ = scene_map(scene)
    f9 = scene.frame(9, Scene.cam_from_world(9), depth=True)
    kf9, _ = fac.insert(f9, Scene.cam_from_world(9), np.full(len(f9.kp_uv), -1, dtype=np.int64))
    traj = FrameTrajectory(m, max_obs=300)
    err = make_se3(so3_exp(np.array([0.0, 0.01, 0.0])), np.array([0.03, -0.01, 0.0]))

    def obs(i, n=None):
        fr = scene.frame(i, Scene.cam_from_world(i), depth=True)
        ids = truth_ids(scene, m, fr)
        kp = np.nonzero(ids >= 0)[0][:n]
        return ids[kp], fr.kp_uv[kp], np.ones(len(kp)), np.full(len(kp), np.nan)

    traj.add(0, 0.0, kf0, Scene.cam_from_world(0))
    traj.add(3, 0.1, kf0, err @ Scene.cam_from_world(3), obs(3))
    traj.add(6, 0.2, kf0, err @ Scene.cam_from_world(6), obs(6, n=15))  # too few matches to keep
    traj.add(9, 0.3, kf9, Scene.cam_from_world(9))
    map_of = (lambda kf_id: 0 if kf_id == kf0.id else 1) if two_maps else None
    out = traj.refine(CAM.K, accel_per_depth=0.5, map_of=map_of)
    assert out["frames"] == 1 and out["skipped"] == 0 and out["smoothed"] == 2
    _, _, poses = traj.poses()
    np.testing.assert_allclose(poses[1], se3_inverse(Scene.cam_from_world(3)), atol=1e-6)
    np.testing.assert_allclose(poses[2][:3, 3], se3_inverse(Scene.cam_from_world(6))[:3, 3], atol=1e-6)
    np.testing.assert_allclose(poses[2][:3, :3], se3_inverse(err @ Scene.cam_from_world(6))[:3, :3], atol=1e-9)


# ------------------------------------------------------------------ the tracker
@pytest.mark.parametrize("kind, learned_matching", [(DESCRIPTOR, "auto"), (LEARNED, "every_frame"), (LEARNED, "keyframes")])
def test_tracker_rgbd_is_exact_on_a_noise_free_scene(kind, learned_matching):
    scene = Scene(10)
    m = new_map()
    matcher = CountingNN() if kind == DESCRIPTOR else OracleLearnedMatcher(m)
    tracker = Tracker(TrackingConfig(learned_matching=learned_matching), CAM, m, matcher, mode="rgbd")
    out = run_tracker(tracker, scene, range(40), depth=True)
    assert [r.state for r, _ in out] == ["OK"] * 40
    assert out[0][1].is_initial and sum(j is not None for _, j in out) >= 2
    idx, _, poses = tracker.trajectory()
    np.testing.assert_array_equal(idx, np.arange(40))
    for i in range(40):
        dt, dr = pose_error(se3_inverse(poses[i]), Scene.cam_from_world(i))
        assert dt < 1e-6 and dr < 1e-5, (i, dt, dr)
    if kind == DESCRIPTOR or learned_matching == "keyframes":
        assert matcher.calls == 0  # guided search from the motion model never needed the matcher
        assert tracker.n_matched_frames == 0
    else:
        assert matcher.calls == 39  # one batched call per tracked frame
        assert all(matcher.lock_free), "the learned matcher ran while the tracker held map.lock"


@pytest.mark.parametrize("learned_matching", ["every_frame", "keyframes"])
def test_tracker_mono_initialises_and_tracks_up_to_scale(learned_matching):
    scene = Scene(11)
    m = new_map()
    matcher = OracleLearnedMatcher(m)
    tracker = Tracker(TrackingConfig(learned_matching=learned_matching), CAM, m, matcher, mode="mono")
    out = run_tracker(tracker, scene, range(30), depth=False)
    states = [r.state for r, _ in out]
    first = states.index("OK")
    assert 0 < first < 20 and states[first:] == ["OK"] * (30 - first)
    assert out[first][1].is_initial
    idx, _, poses = tracker.trajectory()
    np.testing.assert_array_equal(idx, [0] + list(range(first, 30)))  # the reference frame and every tracked one
    assert all(matcher.lock_free)
    assert (matcher.calls > 0) == (learned_matching == "every_frame")  # keyframes: the matcher only initialised the map
    truth = np.stack([se3_inverse(Scene.cam_from_world(i))[:3, 3] for i in idx])
    # the world is the reference camera (frame 0 at the identity), so only the scale is unknown; a
    # full Sim(3) fit is ill-posed here: the camera path is a straight line
    est = poses[:, :3, 3]
    scale = float((est * truth).sum() / (est * est).sum())
    assert np.sqrt(((scale * est - truth) ** 2).sum(1).mean()) < 1e-5  # 10 um over a 0.6 m path


def test_tracker_relocalises_after_a_lost_frame():
    scene = Scene(12)
    m = new_map()
    tracker = Tracker(TrackingConfig(), CAM, m, CountingNN(), mode="rgbd")
    run_tracker(tracker, scene, range(20), depth=True)
    empty = scene.frame(20, Scene.cam_from_world(20), depth=True, max_kp=0)
    res, job = tracker.process(empty)
    assert res.state == "LOST" and res.world_from_cam is None and job is None and tracker.n_lost == 1
    res, _ = tracker.process(scene.frame(21, Scene.cam_from_world(9), depth=True))  # back where it was at frame 9
    assert res.state == "OK" and tracker.n_relocalised == 1
    dt, dr = pose_error(se3_inverse(res.world_from_cam), Scene.cam_from_world(9))
    assert dt < 1e-6 and dr < 1e-5


class BusySchedule(MappingSchedule):
    def __init__(self) -> None:
        self.asked = 0

    def mapping_busy(self) -> bool:
        self.asked += 1
        return True


def test_tracker_defers_due_keyframes_while_its_schedule_says_mapping_is_busy():
    scene = Scene(13)
    kf_frames = {}
    cfg = TrackingConfig(keyframes=KeyframePolicyConfig(min_interval=2, max_interval=20, ref_ratio_rgbd=1.0))
    for name, schedule in (("idle", None), ("busy", BusySchedule())):
        tracker = Tracker(cfg, CAM, new_map(), CountingNN(), mode="rgbd", schedule=schedule)
        assert isinstance(tracker.schedule, MappingSchedule)
        out = run_tracker(tracker, scene, range(30), depth=True)
        assert all(r.state == "OK" for r, _ in out)
        kf_frames[name] = [r.index for r, j in out if j is not None]
    assert schedule.asked == 29
    assert kf_frames["busy"] == [0, 20]  # only max_interval inserts while mapping is busy
    assert kf_frames["idle"][:2] == [0, 20] and len(kf_frames["idle"]) > 2  # due by min_interval once the policy's ratio allows


def test_system_gives_the_tracker_the_run_schedule():
    from slam.config import load_config
    from slam.runtime.schedule import LiveSchedule
    from slam.system import build_system

    system = build_system(load_config(None, ["features=orb", "matcher=nn", "device=cpu", "runtime.live=true"]), CAM)
    assert isinstance(system.schedule, LiveSchedule) and system.tracker.schedule is system.schedule
    assert not system.tracker.schedule.mapping_busy()
    system.schedule.add(1)
    assert system.tracker.schedule.mapping_busy()
    system = build_system(load_config(None, ["features=orb", "matcher=nn", "device=cpu"]), CAM)
    assert system.tracker.schedule is system.schedule and not system.tracker.schedule.mapping_busy()


def test_learned_matching_must_be_resolved_for_learned_matchers():
    with pytest.raises(ConfigError, match="learned_matching='auto' must be resolved"):
        Tracker(TrackingConfig(), CAM, new_map(), OracleLearnedMatcher())
    Tracker(TrackingConfig(), CAM, new_map(), CountingNN())  # descriptor matchers ignore it


@pytest.mark.parametrize("check_px", [0.0, 7.5])
def test_hybrid_tracking_calls_the_learned_matcher_where_guided_search_fails(check_px):
    """learned_matching=keyframes: a frame the motion model mispredicts (a jump) is matched by the
    learned matcher against the reference and its covisible keyframes, and tracked exactly.
    With the prediction check on (the default), the descriptor check catches the jump first
    and the learned matcher is not needed."""
    scene = Scene(14)
    m = new_map()
    matcher = OracleLearnedMatcher(m)
    tracker = Tracker(TrackingConfig(learned_matching="keyframes", predict_check_px=check_px), CAM, m, matcher, mode="rgbd")
    run_tracker(tracker, scene, range(30), depth=True)
    assert matcher.calls == 0
    res, _ = tracker.process(scene.frame(30, Scene.cam_from_world(2), depth=True))  # back to where it was at frame 2
    calls = 0 if check_px > 0 else 1
    assert res.state == "OK" and matcher.calls == calls and tracker.n_matched_frames == calls and tracker.n_lost == 0
    assert tracker.n_predictions_replaced == (1 if check_px > 0 else 0)
    assert all(matcher.lock_free)
    dt, dr = pose_error(se3_inverse(res.world_from_cam), Scene.cam_from_world(2))
    assert dt < 1e-6 and dr < 1e-5


class FloatScene(Scene):
    """The scene with 64-D unit float descriptors (as XFeat's) and keypoints with 0.5 px noise
    (depth with 0.3 % noise), so the pose comes out of a least-squares fit, not exactly."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        d = self.rng.normal(size=(len(self.pts), 64)).astype(np.float32)
        self.fdesc = d / np.linalg.norm(d, axis=1, keepdims=True)

    def frame(self, index: int, cam_from_world: np.ndarray, depth: bool, max_kp: int = 1000) -> FrameFeatures:
        pc = transform_points(cam_from_world, self.pts)
        uv = CAM.project_undistorted(np.where(pc[:, 2:3] > 0.1, pc, 1.0))
        ids = np.nonzero((pc[:, 2] > 0.1) & CAM.in_image(uv))[0]
        noise = np.random.default_rng(1000 + index)
        ids = noise.permutation(ids)[:max_kp]
        n = len(ids)
        kp = uv[ids] + noise.normal(scale=0.5, size=(n, 2))
        z = pc[ids, 2] * (1 + noise.normal(scale=0.003, size=n)) if depth else np.zeros(n)
        feats = Features(torch.from_numpy(kp).float(), torch.ones(n), torch.from_numpy(self.fdesc[ids]), (CAM.width, CAM.height))
        return FrameFeatures(index, index / 30.0, feats, kp, z, np.ones(n), np.zeros((n, 3), dtype=np.uint8),
                             self.fdesc[ids].copy())


def _ate(tracker: Tracker, mode: str) -> tuple[float, int]:
    """(ATE RMSE m, frames) of a tracker's trajectory; the world is the first camera, so only the
    monocular scale needs aligning."""
    idx, _, poses = tracker.trajectory()
    est = poses[:, :3, 3]
    truth = np.stack([se3_inverse(Scene.cam_from_world(i))[:3, 3] for i in idx])
    if mode == "mono":
        est = est * float((est * truth).sum() / max((est * est).sum(), 1e-12))
    return float(np.sqrt(((est - truth) ** 2).sum(1).mean())), len(idx)


@pytest.mark.parametrize("mode", ["rgbd", "mono"])
def test_hybrid_tracking_equals_every_frame_tracking_within_the_ate_bars(mode):
    """learned_matching=keyframes (guided search on float descriptors) tracks a noisy sequence
    as well as matching every frame with the learned matcher, which it calls far less. Local
    mapping runs after each keyframe, as in a run: a monocular map needs its new points (each
    frame shows a random half of the points in view, so the initial points thin out)."""
    from slam.mapping.config import MappingConfig
    from slam.mapping.local_mapper import LocalMapper

    out = {}
    for lm in ("every_frame", "keyframes"):
        scene = FloatScene(15)
        m = Map(64, binary=False, capacity=8192)
        matcher = OracleLearnedMatcher()
        cfg = TrackingConfig(learned_matching=lm, max_desc_dist_float=0.7)
        tracker = Tracker(cfg, CAM, m, matcher, mode=mode)
        mapper = LocalMapper(MappingConfig(max_desc_dist_float=0.7), CAM, m, OracleLearnedMatcher(), mode=mode)
        n = 60
        states = []
        for i in range(n):
            res, job = tracker.process(scene.frame(i, Scene.cam_from_world(i), depth=mode == "rgbd"))
            states.append(res.state)
            if job is not None:
                mapper.process(job)
        first = states.index("OK")
        assert first < 15 and states[first:] == ["OK"] * (n - first), (lm, states)
        ate, _ = _ate(tracker, mode)
        out[lm] = (ate, matcher.calls, tracker.n_matched_frames)
    # metres over a 1.2 m path seen at 3-7 m with 0.5 px noise: RGB-D the 1 cm bar;
    # monocular 2 cm (measured 1.14 cm both ways)
    bar = 0.01 if mode == "rgbd" else 0.02
    (ate_e, calls_e, _), (ate_k, calls_k, matched_k) = out["every_frame"], out["keyframes"]
    assert ate_e < bar and ate_k < bar, out
    assert ate_k < 1.2 * ate_e + 0.1 * bar, out  # hybrid no worse than every-frame matching
    assert calls_e >= 25 and calls_k == matched_k == 0, out  # keyframes: the matcher never ran on a tracked frame


def _keyframes_sharing_one_view(scene, n_kf: int = 12):
    """A map of n_kf keyframes 3 frames apart, all seeing the same points (made by keyframe 0
    from depth, observed by the others through their true ids). -> (map, n_kf)."""
    m = new_map()
    fac = KeyframeFactory(CAM, m, "rgbd")
    for i in range(n_kf):
        fr = scene.frame(3 * i, Scene.cam_from_world(3 * i), depth=True)
        ids = truth_ids(scene, m, fr) if i else np.full(len(fr.kp_uv), -1, dtype=np.int64)
        fac.insert(fr, Scene.cam_from_world(3 * i), ids, depth_points=(i == 0))
        if i:
            m.add_observations(i, np.flatnonzero(ids >= 0), ids[ids >= 0])
    return m, n_kf


def test_monocular_local_ba_fixes_every_other_observer_and_keeps_the_scale():
    """Monocular local BA with mapping.mono_fix_all_observers: every keyframe outside the window
    that sees its points is fixed (ORB-SLAM), since only they anchor the window's scale (7-DoF
    gauge); RGB-D, and mono without the switch, keep the capped set. Perturbed free keyframes come back at the true scale."""
    from slam.mapping.config import MappingConfig
    from slam.mapping.local_mapper import LocalMapper
    from slam.optim.ba import bundle_adjust

    m, n_kf = _keyframes_sharing_one_view(Scene(21))
    cfg = MappingConfig(ba_window=4, ba_window_mono=4, ba_max_fixed=2, mono_fix_all_observers=True)
    last = n_kf - 1
    observers = {int(k) for k in np.unique(m.obs_kf[m.observation_rows(point_ids=m.alive_point_ids())])}
    rgbd = LocalMapper(cfg, CAM, m, CountingNN(), mode="rgbd")._local_problem(last)
    assert rgbd.fixed.sum() <= 2 + 1  # the cap (and keyframe 0, the origin)
    capped = LocalMapper(MappingConfig(ba_window_mono=4, ba_max_fixed=2), CAM, m, CountingNN(), mode="mono")._local_problem(last)
    assert capped.fixed.sum() <= 2 + 1  # the switch off: the cap, as RGB-D
    mono = LocalMapper(cfg, CAM, m, CountingNN(), mode="mono")._local_problem(last)
    free = set(mono.kf_ids[~mono.fixed].tolist())
    assert last in free and 3 <= len(free) <= 4 and 0 not in free  # the window (keyframe 0 is the origin)
    assert set(mono.kf_ids.tolist()) == observers and len(rgbd.kf_ids) < len(observers)
    # perturb the free keyframes: BA brings them back, at the scale the fixed ones set
    rng = np.random.default_rng(0)
    truth = mono.cam_from_world.copy()
    for k in np.flatnonzero(~mono.fixed):
        mono.cam_from_world[k][:3, 3] += rng.normal(scale=0.02, size=3)
    mono.obs_ur[:] = np.nan  # monocular edges only
    res = bundle_adjust(mono, iterations=10)
    np.testing.assert_array_equal(res.cam_from_world[mono.fixed], truth[mono.fixed])
    for k in np.flatnonzero(~mono.fixed):
        assert pose_error(res.cam_from_world[k], truth[k])[0] < 2e-3


def test_monocular_local_ba_has_its_own_window_and_iterations(monkeypatch):
    """mapping.ba_window_mono / ba_iterations_mono size the monocular local BA, ba_window /
    ba_iterations the RGB-D and stereo ones: a monocular window of 20 takes every keyframe that
    shares points (12 here) while the depth window stays at its 6; each mode's solver gets its
    own iteration count."""
    from slam.mapping.config import MappingConfig
    from slam.mapping.local_mapper import LocalMapper, MappingTask

    m, n_kf = _keyframes_sharing_one_view(Scene(22))
    last = n_kf - 1
    cfg = MappingConfig(ba_window_mono=20)
    free = {}
    for mode in ("mono", "rgbd"):
        prob = LocalMapper(cfg, CAM, m, CountingNN(), mode=mode)._local_problem(last)
        free[mode] = set(prob.kf_ids[~prob.fixed].tolist())
    assert last in free["mono"] and len(free["mono"]) == n_kf - 1  # every keyframe but the origin
    assert last in free["rgbd"] and len(free["rgbd"]) == 5  # 6: five free and the origin (it shares the most points)
    import slam.mapping.local_mapper as lm_mod
    seen = []
    real = {"g2o": lm_mod.bundle_adjust, "numpy": lm_mod.bundle_adjust_schur}

    def spy(solver):
        def solve(problem, iterations, **kw):
            seen.append((solver, iterations))
            return real[solver](problem, iterations=iterations, **kw)
        return solve
    monkeypatch.setattr(lm_mod, "bundle_adjust", spy("g2o"))
    monkeypatch.setattr(lm_mod, "bundle_adjust_schur", spy("numpy"))
    for mode in ("mono", "rgbd"):
        lm = LocalMapper(MappingConfig(ba_window_mono=20, ba_iterations=3, ba_iterations_mono=7),
                         CAM, m, CountingNN(), mode=mode)
        task = MappingTask(kf_id=last, problem=lm._local_problem(last))
        lm.optimize(task)
        assert task.result is not None
        # mono: only the origin is fixed (scale-free), so auto gives it to g2o; RGB-D to numpy
        assert lm.stats()["local_ba_g2o_count"] == (1 if mode == "mono" else 0)
    assert seen == [("g2o", 7), ("numpy", 3)]


class CountingOracle(OracleLearnedMatcher):
    def match(self, f0: Features, f1: Features) -> Matches:
        self.calls += 1
        return super().match(f0, f1)


def test_triangulation_learned_neighbours_moves_the_farther_pairs_to_the_epipolar_search():
    """mapping.triangulation_learned_neighbours: a learned matcher matches the new keyframe
    with only its first N triangulation neighbours, the epipolar search the rest. N = 0 never
    calls it in mapping, and the monocular map still grows and tracks every frame."""
    from slam.mapping.config import MappingConfig
    from slam.mapping.local_mapper import LocalMapper

    out = {}
    for n_learned in (6, 1, 0):
        scene = FloatScene(15)
        m = Map(64, binary=False, capacity=8192)
        tracker = Tracker(TrackingConfig(learned_matching="keyframes", max_desc_dist_float=0.7), CAM, m,
                          OracleLearnedMatcher(), mode="mono")
        matcher = CountingOracle()
        mapper = LocalMapper(MappingConfig(max_desc_dist_float=0.7, triangulation_learned_neighbours=n_learned),
                             CAM, m, matcher, mode="mono")
        states, jobs, neighbours = [], 0, 0
        for i in range(60):
            res, job = tracker.process(scene.frame(i, Scene.cam_from_world(i), depth=False))
            states.append(res.state)
            if job is not None:
                if not job.is_initial:
                    jobs += 1
                    neighbours += len(m.keyframe_covisibility(job.kf_id, min_shared=10)[:6])
                mapper.process(job)
        first = states.index("OK")
        assert first < 15 and states[first:] == ["OK"] * (60 - first), (n_learned, states)
        ate, _ = _ate(tracker, "mono")
        out[n_learned] = (matcher.calls, jobs, neighbours, ate, len(m.keyframes))
    calls6, jobs6, neighbours6, ate6, _ = out[6]
    assert jobs6 >= 3 and calls6 > jobs6, out  # all neighbours learned: several per keyframe
    calls1, jobs1, _, ate1, _ = out[1]
    assert 0 < calls1 <= jobs1, out  # at most one learned pair per keyframe
    calls0, _, _, ate0, _ = out[0]
    assert calls0 == 0, out
    assert max(ate6, ate1, ate0) < 0.02, out  # the hybrid test's monocular bar


class TokenCountingOracle(OracleLearnedMatcher):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0

    def match(self, f0: Features, f1: Features) -> Matches:
        self.calls += 1
        self.tokens += len(f0.keypoints) + len(f1.keypoints)
        return super().match(f0, f1)


def test_triangulation_gate_leaves_out_keypoints_that_cannot_make_a_point():
    """mapping.triangulation_gate: the learned matcher gets fewer keypoints in monocular
    triangulation, and since every true pair lies on its epipolar segment within the scene's
    depths, the map it makes is the same: the same points at the same places, the same track."""
    from slam.mapping.config import MappingConfig
    from slam.mapping.local_mapper import LocalMapper

    out = {}
    for gate in (True, False):
        scene = FloatScene(16)
        m = Map(64, binary=False, capacity=8192)
        tracker = Tracker(TrackingConfig(learned_matching="keyframes", max_desc_dist_float=0.7), CAM, m,
                          OracleLearnedMatcher(), mode="mono")
        matcher = TokenCountingOracle()
        mapper = LocalMapper(MappingConfig(max_desc_dist_float=0.7, triangulation_gate=gate, local_ba=False),
                             CAM, m, matcher, mode="mono")
        for i in range(60):
            _, job = tracker.process(scene.frame(i, Scene.cam_from_world(i), depth=False))
            if job is not None:
                mapper.process(job)
        alive = np.flatnonzero(m.pts_alive[: m.n_points])
        out[gate] = (matcher.tokens, matcher.calls, m.pts_xyz[alive].copy(), _ate(tracker, "mono")[0],
                     mapper.stats()["triangulation_gated_keypoints"])
    (tok_on, calls_on, pts_on, ate_on, gated_on), (tok_off, calls_off, pts_off, ate_off, gated_off) = out[True], out[False]
    assert calls_on == calls_off > 3
    assert gated_off == 0 and gated_on > 0 and tok_on + gated_on == tok_off
    assert tok_on < 0.9 * tok_off, (tok_on, tok_off)
    assert len(pts_on) == len(pts_off) > 100
    np.testing.assert_allclose(pts_on, pts_off, atol=1e-9)
    assert ate_on == pytest.approx(ate_off, abs=1e-9)


@pytest.mark.parametrize("enabled", [True, False])
def test_distinctive_descriptors_option_updates_the_new_keyframes_points(enabled, monkeypatch):
    """mapping.distinctive_descriptors: after fusion the mapper hands the new keyframe's points
    to Map.update_descriptors (ORB-SLAM's ComputeDistinctiveDescriptors); off, it never does."""
    from slam.mapping.config import MappingConfig
    from slam.mapping.local_mapper import LocalMapper

    calls = []
    real = Map.update_descriptors

    def spy(self, point_ids):
        calls.append(np.asarray(point_ids).copy())
        return real(self, point_ids)

    monkeypatch.setattr(Map, "update_descriptors", spy)
    scene = FloatScene(16)
    m = Map(64, binary=False, capacity=8192)
    tracker = Tracker(TrackingConfig(learned_matching="keyframes", max_desc_dist_float=0.7), CAM, m,
                      OracleLearnedMatcher(), mode="rgbd")
    mapper = LocalMapper(MappingConfig(max_desc_dist_float=0.7, distinctive_descriptors=enabled), CAM, m,
                         OracleLearnedMatcher(), mode="rgbd")
    jobs = []
    for i in range(40):
        _, job = tracker.process(scene.frame(i, Scene.cam_from_world(i), depth=True))
        if job is not None:
            mapper.process(job)
            jobs.append(job.kf_id)
    assert len(jobs) >= 3
    if not enabled:
        assert calls == []
        return
    assert len(calls) >= 2  # every job after the first, whose keyframe has neighbours to fuse with
    kf_points = {int(p) for c in calls for p in c}
    assert all(p >= 0 for p in kf_points) and len(kf_points) > 50
