"""Loop closing: covisibility graph, detection's consistency rule, the tracker's correction,
disabled == the run without loop closing, and (slow) the short synthetic loop end to end in both
modes with ORB and with the CPU default XFeat + LighterGlue (a loop is found, its relative pose
matches the ground truth, the ATE drops), and monocular with ALIKED + LightGlue."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.geometry.se3 import make_se3, rotation_angle_deg, se3_inverse, so3_exp
from slam.geometry.sim3 import make_sim3, se3_from_sim3, sim3_decompose, sim3_inverse
from slam.loop.config import LoopClosingConfig, PlaceRecognitionConfig
from slam.loop.correction import spanning_parents
from slam.loop.database import KeyframeDatabase
from slam.loop.detection import LoopDetector, covisibility
from slam.loop.verification import LoopVerifier
from slam.loop.vocabulary import BowVector
from slam.mapping.map import Keyframe, Map
from slam.optim.ba import BAProblem
from slam.optim.ba_schur import bundle_adjust_schur


def _kf(m: Map, n_kp: int = 50) -> Keyframe:
    kid = m.new_keyframe_id()
    z = np.zeros(n_kp)
    kf = Keyframe(kid, kid, float(kid), np.eye(4), None, np.zeros((n_kp, 2)), z, np.ones(n_kp), np.zeros((n_kp, 3), np.uint8),
                  np.zeros((n_kp, 32), np.uint8), np.full(n_kp, -1, dtype=np.int64))
    m.add_keyframe(kf)
    return kf


def test_covisibility_matches_the_maps_own_count_and_spanning_tree():
    rng = np.random.default_rng(0)
    m = Map(32, True)
    pts = m.add_points(rng.normal(size=(200, 3)), np.zeros((200, 32), np.uint8), np.zeros((200, 3), np.uint8), 0)
    kfs = [_kf(m) for _ in range(6)]
    for i, kf in enumerate(kfs):
        sel = pts[20 * i: 20 * i + 50]  # consecutive keyframes overlap by 30 points, then 10
        m.add_observations(kf.id, np.arange(len(sel)), sel)
    with m.lock:
        cov = covisibility(m)
    for kf in kfs:
        want = dict(m.keyframe_covisibility(kf.id, min_shared=1))
        got = {k: cov.weight(kf.id, k) for k in cov.kf_ids.tolist() if k != kf.id and cov.weight(kf.id, k) > 0}
        assert got == want
    assert cov.neighbours(2, min_shared=15) == [1, 3] or cov.neighbours(2, min_shared=15) == [3, 1]
    assert spanning_parents(cov).tolist() == [-1, 0, 1, 2, 3, 4]
    m.remove_keyframe(3, parent_id=2)
    with m.lock:
        cov = covisibility(m)
    assert cov.kf_ids.tolist() == [0, 1, 2, 4, 5] and cov.weight(2, 4) == 10


def _bow(words) -> BowVector:
    w = np.array(sorted(words), np.int32)
    return BowVector(w, np.full(len(w), 1.0 / len(w), np.float32))


class _Cov:
    """A covisibility stand-in: keyframes 0..n-1 in a chain (each sees its two neighbours)."""

    def __init__(self, n: int) -> None:
        self.kf_ids = np.arange(n)

    def neighbours(self, k: int, min_shared: int = 15, n=None) -> list[int]:
        return [j for j in (k - 1, k + 1) if 0 <= j < len(self.kf_ids)][:n]

    def index(self, k: int) -> int:
        return int(k) if 0 <= k < len(self.kf_ids) else -1


def test_detection_needs_three_consistent_keyframes_and_excludes_neighbours():
    cfg = LoopClosingConfig(min_keyframes=1)
    det = LoopDetector(cfg, PlaceRecognitionConfig(), None, KeyframeDatabase(merge_every=4))
    places = [set(range(100 * p, 100 * p + 60)) for p in range(12)]  # 12 distinct places
    for k in range(12):
        assert det.detect(k, _bow(places[k]), _Cov(30), k + 1) == []  # new places: no candidate
    # the camera comes back to places 2, 3, 4 as keyframes 12, 13, 14
    found = [det.detect(12 + i, _bow(places[2 + i] | {5000 + i}), _Cov(30), 13 + i) for i in range(3)]
    assert found[0] == [] and found[1] == []  # consistency 1, 2
    assert found[2] == [4]  # consistent over three keyframes
    # a place seen by a covisible neighbour is never a candidate
    det2 = LoopDetector(cfg, PlaceRecognitionConfig(), None, KeyframeDatabase())
    for k in range(2):
        det2.detect(k, _bow(places[0]), _Cov(30), k + 1)
    assert det2.n_queries == 1 and det2.n_candidates == 0  # keyframe 1 sees the same place as 0, its covisible neighbour


def test_tracker_last_frame_follows_a_similarity_correction():
    from slam.tracking.tracker import Tracker, _LastFrame

    tr = Tracker.__new__(Tracker)
    cam_from_world = make_se3(so3_exp([0.1, -0.2, 0.05]), np.array([0.3, -0.1, 1.0]))
    tr.last = _LastFrame(None, cam_from_world.copy(), np.zeros(0, np.int64))
    tr.velocity = make_se3(np.eye(3), np.array([0.01, 0.0, 0.02]))
    tr.ref_kf_id = 7
    W = make_sim3(1.3, so3_exp([0.0, 0.3, 0.0]), np.array([1.0, 2.0, -0.5]))  # world_new <- world_old
    tr.apply_world_correction({7: W})
    np.testing.assert_allclose(tr.last.cam_from_world, se3_from_sim3(cam_from_world @ sim3_inverse(W)), atol=1e-12)
    # a world point keeps its place in the camera, up to the map's new scale
    p = np.array([0.5, 0.2, 3.0])
    np.testing.assert_allclose((tr.last.cam_from_world @ np.r_[W[:3, :3] @ p + W[:3, 3], 1])[:3],
                               1.3 * (cam_from_world @ np.r_[p, 1])[:3], atol=1e-9)
    np.testing.assert_allclose(tr.velocity[:3, 3], 1.3 * np.array([0.01, 0.0, 0.02]))


# ------------------------------------------------------------------ end to end
def _cfg(out: Path, *overrides: str):
    from slam.config import load_config

    return load_config(None, ["features=orb", "matcher=nn", "device=cpu", "runtime.progress=false", "output.plot=false",
                              f"output.root={out}", *overrides])


def _run(seq: Path, out: Path, *overrides: str) -> dict:
    from slam.app import open_input, run_slam

    cfg = _cfg(out, *overrides)
    return run_slam(cfg, open_input(str(seq), cfg))


@pytest.fixture(scope="module")
def default_seq(tmp_path_factory) -> Path:
    from slam.synth.dataset import ensure_sequence

    return ensure_sequence("default", tmp_path_factory.getbasetemp() / "synthetic_data", n_frames=40)


@pytest.mark.slow
def test_disabled_loop_closing_is_the_run_without_it(default_seq, tmp_path):
    """loop_closing.enabled=false: no loop stage, no database; where no loop is accepted the
    run with loop closing on is the same run, bit for bit (loop closing only reads the map)."""
    from slam.system import build_system

    cfg = _cfg(tmp_path, "loop_closing.enabled=false")
    from slam.app import open_input

    inputs = open_input(str(default_seq), cfg)
    from slam.system import resolve_config

    system = build_system(resolve_config(cfg), inputs.camera)
    assert system.loop is None and [n for n, _ in system.stages] == ["features", "tracking", "mapping"]
    assert system.tracker.relocalizer.place is None
    off = _run(default_seq, tmp_path / "off", "loop_closing.enabled=false", "runtime.threaded=false")
    on = _run(default_seq, tmp_path / "on", "runtime.threaded=false")
    assert off["loop_closing"] == {"enabled": False}
    assert on["loop_closing"]["enabled"] and on["loop_closing"]["accepted"] == 0
    a = (Path(off["run_dir"]) / "trajectory.txt").read_text()
    b = (Path(on["run_dir"]) / "trajectory.txt").read_text()
    assert a == b


def _gt_timestamps(seq: Path) -> np.ndarray:
    return np.array([float(ln.split()[0]) for ln in (seq / "rgb.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")])


#: front-ends of the end-to-end loop tests: ORB + NN (descriptor verification, the fallback when
#: no weights are installed) and the CPU default, XFeat + LighterGlue (learned verification on the
#: map-point keypoints, learned matching at keyframes only), both in the loop_short fixture; ALIKED
#: + LightGlue in its own monocular test (about four times slower per frame on CPU)
FRONT_ENDS = {"orb": ("features=orb", "matcher=nn"), "xfeat": ("features=xfeat", "matcher=lightglue"),
              "aliked": ("features=aliked", "matcher=lightglue")}
_WEIGHTS = {"orb": (), "xfeat": ("xfeat", "xfeat_lighterglue"), "aliked": ("aliked-n16", "aliked_lightglue")}


def _front_end(name: str) -> tuple[str, ...]:
    """The overrides of a front-end of FRONT_ENDS; skips the test when its weights are missing."""
    from slam import system

    missing = [w for w in _WEIGHTS[name] if not system.weights_installed(w)]
    if missing:
        pytest.skip(f"weights {', '.join(missing)} not installed (bash tools/install.sh)")
    return FRONT_ENDS[name]


@pytest.fixture(scope="module", params=[("orb", "rgbd"), ("orb", "mono"), ("xfeat", "rgbd"), ("xfeat", "mono")],
                ids=lambda p: "-".join(p))
def loop_short_runs(request, tmp_path_factory) -> tuple:
    """synthetic/loop_short with loop closing on and off, in one mode and with one front-end:
    (mode, seq, on, off)."""
    from slam.synth.dataset import ensure_sequence

    front, mode = request.param
    overrides = _front_end(front)
    seq = ensure_sequence("loop_short", tmp_path_factory.getbasetemp() / "synthetic_data")
    out = tmp_path_factory.mktemp(f"loop_{front}_{mode}")
    on = _run(seq, out / "on", f"mode={mode}", *overrides)
    off = _run(seq, out / "off", f"mode={mode}", *overrides, "loop_closing.enabled=false")
    assert on["features"] == front and off["features"] == front
    return mode, seq, on, off


@pytest.mark.slow
def test_short_synthetic_loop_is_closed_with_the_true_relative_pose(loop_short_runs):
    """synthetic/loop_short: a loop is accepted and its relative pose is within 5 cm / 2 deg of
    the truth."""
    from slam.loop.report import loop_errors

    mode, seq, on, off = loop_short_runs
    lc = on["loop_closing"]
    assert lc["accepted"] >= 1, json.dumps({k: v for k, v in lc.items() if k != "loops"})
    errs = loop_errors(Path(on["run_dir"]), seq / "groundtruth.txt", _gt_timestamps(seq))
    assert errs and all(e["rot_err_deg"] <= 2.0 and e["trans_err_m"] <= 0.05 for e in errs), errs
    # and the same two frames after the correction and the global BA, in the final trajectory
    assert all(e["final_rot_err_deg"] <= 2.0 and e["final_trans_err_m"] <= 0.05 for e in errs), errs
    if mode == "mono":  # the map's scale where and when the loop was accepted is recorded too
        assert all(e["trans_err_local_m"] <= 0.05 for e in errs), errs


@pytest.mark.slow
def test_short_synthetic_loop_lowers_the_error(loop_short_runs):
    """synthetic/loop_short: the ATE with loop closing is below the ATE without.

    Monocular (ORB) failed this from the keyframe rule of docs/benchmarks.md section 13 until
    the end-of-run frame refinement (section 14): the frames between keyframes kept their
    tracking error (keyframes 0.49 cm, frames 3.94 cm with the loop, 3.49 cm without), which
    hid what the loop did to the keyframes."""
    mode, seq, on, off = loop_short_runs
    assert on["eval"]["ate_rmse_m"] < off["eval"]["ate_rmse_m"], (on["eval"]["ate_rmse_m"], off["eval"]["ate_rmse_m"])


@pytest.mark.slow
def test_short_synthetic_loop_is_closed_with_aliked(tmp_path_factory):
    """ALIKED + LightGlue (the learned verification with 128-D descriptors and their own
    vocabulary), monocular: the loop of synthetic/loop_short is accepted within 5 cm / 2 deg of
    the truth. 2026-12-05: 0.03 deg / 0.25 cm, ATE 0.57 cm (1.28 cm with loop closing off;
    docs/benchmarks.md section 12)."""
    from slam.loop.report import loop_errors
    from slam.synth.dataset import ensure_sequence

    overrides = _front_end("aliked")
    seq = ensure_sequence("loop_short", tmp_path_factory.getbasetemp() / "synthetic_data")
    on = _run(seq, tmp_path_factory.mktemp("loop_aliked"), "mode=mono", *overrides)
    assert on["features"] == "aliked"
    lc = on["loop_closing"]
    assert lc["accepted"] >= 1, json.dumps({k: v for k, v in lc.items() if k != "loops"})
    errs = loop_errors(Path(on["run_dir"]), seq / "groundtruth.txt", _gt_timestamps(seq))
    assert errs and all(e["rot_err_deg"] <= 2.0 and e["trans_err_local_m"] <= 0.05 for e in errs), errs
    assert on["eval"]["ate_rmse_m"] < 0.012, on["eval"]


@pytest.mark.slow
def test_threaded_run_with_a_loop_equals_the_synchronous_one(tmp_path_factory):
    """Dataset mode: detection, the verification after the candidates' background matching,
    correction and the background global BA's write-back happen at frames fixed by the sequence,
    so the threaded run with a loop equals the synchronous one. Short delays, so that tracking
    often has to wait for the loop-closing stage (or do its work) in the threaded run."""
    from slam.synth.dataset import ensure_sequence

    seq = ensure_sequence("loop_short", tmp_path_factory.getbasetemp() / "synthetic_data")
    out = tmp_path_factory.mktemp("loop_det")
    short = ("loop_closing.global_ba_delay_frames=5", "loop_closing.global_ba_delay_per_keyframe=0",
             "loop_closing.verify_delay_frames=2")
    sync = _run(seq, out / "sync", "mode=rgbd", "runtime.threaded=false", *short)
    thr = _run(seq, out / "thr", "mode=rgbd", "runtime.threaded=true", *short)
    assert sync["loop_closing"]["accepted"] >= 1
    assert sync["loop_closing"]["background_matching_jobs"] >= 1
    assert sync["loop_closing"]["background_matching_jobs"] == thr["loop_closing"]["background_matching_jobs"]
    assert [lp["cur_kf"] for lp in sync["loop_closing"]["loops"]] == [lp["cur_kf"] for lp in thr["loop_closing"]["loops"]]
    assert (Path(sync["run_dir"]) / "trajectory.txt").read_text() == (Path(thr["run_dir"]) / "trajectory.txt").read_text()
    assert (Path(sync["run_dir"]) / "keyframes.txt").read_text() == (Path(thr["run_dir"]) / "keyframes.txt").read_text()


@pytest.mark.slow
def test_a_loop_whose_verification_falls_after_the_last_frame_is_still_closed(tmp_path_factory):
    """Dataset runs verify a keyframe's candidates verify_delay_frames after their detection; the
    candidates still pending when the stream ends are verified then, so a loop found in the last
    frames of a sequence is corrected too (here every verification is pushed past the end)."""
    from slam.synth.dataset import ensure_sequence

    seq = ensure_sequence("loop_short", tmp_path_factory.getbasetemp() / "synthetic_data")
    run = _run(seq, tmp_path_factory.mktemp("loop_end"), "mode=rgbd", "features=orb", "matcher=nn",
               "loop_closing.verify_delay_frames=100000")
    lc = run["loop_closing"]
    assert lc["accepted"] >= 1 and lc["loops"][0]["frame"] == run["frames_in"], json.dumps(lc["loops"])


def test_global_ba_is_written_back_later_for_a_larger_map():
    """Dataset runs apply the background global BA at global_ba_delay_frames after the essential
    graph, or global_ba_delay_per_keyframe frames per keyframe it adjusts if that is later."""
    from types import SimpleNamespace

    from slam.loop.closing import LoopClosing
    from slam.loop.config import LoopClosingConfig

    def due(n_kf: int, **cfg) -> int:
        lc = SimpleNamespace(cfg=LoopClosingConfig(**cfg), _job=None)
        gba = SimpleNamespace(problem=SimpleNamespace(kf_ids=np.arange(n_kf)))
        LoopClosing._queue_gba(lc, gba, 100)
        return lc._job["due"]

    assert due(10) == 130  # 30 frames at least
    assert due(67) == 201  # 1.5 frames per keyframe
    assert due(67, global_ba_delay_per_keyframe=0.5) == 134
    assert due(67, global_ba_delay_per_keyframe=0) == 130


@pytest.mark.parametrize("fix_scale", [True, False])
def test_loop_correction_optimises_a_copy_and_late_keyframes_take_their_parents_correction(fix_scale):
    """LoopCorrection: start (propagation) -> run (essential graph on its copy) -> a keyframe is
    created meanwhile -> apply: the first keyframe stays fixed, the copied keyframes take the
    graph's poses, the late keyframe keeps its pose relative to its parent (the keyframe it
    shares most points with), and points keep their coordinates in their reference keyframe."""
    from slam.loop.correction import LoopCorrection
    from slam.loop.verification import LoopMatch

    rng = np.random.default_rng(3)
    m = Map(32, True)
    kfs = []
    for i in range(8):  # odometry: a 0.5 m step along x; the truth closes the loop (kf 7 next to kf 0)
        kf = _kf(m, 80)
        kf.cam_from_world = make_se3(np.eye(3), np.array([-0.5 * i, 0.0, 0.0]))
        kfs.append(kf)
    for i, kf in enumerate(kfs):  # 40 points created by each keyframe, seen by it and the next one
        own = m.add_points(rng.normal(size=(40, 3)) + [0.5 * i, 0, 4], np.zeros((40, 32), np.uint8), np.zeros((40, 3), np.uint8), kf.id)
        m.add_observations(kf.id, np.arange(40), own)
        if i + 1 < len(kfs):
            m.add_observations(kfs[i + 1].id, np.arange(40, 80), own)
    cur_from_loop = make_sim3(1.0 if fix_scale else 0.9, so3_exp([0, 0.02, 0]), np.array([-0.3, 0, 0]))
    lm = LoopMatch(7, 0, cur_from_loop, np.zeros(0, np.int64), np.zeros(0, np.int64), 30, 30, 60, 40)
    task = LoopCorrection(fix_scale, neighbourhood=2, loop_edge_min_shared=20, iterations=20)
    with m.lock:
        W0 = task.start(m, lm, lambda kf, pts: None, np.zeros((0, 2), np.int64))
    p7 = m.pts_xyz[m.keyframes[7].point_ids[:40]].copy()
    assert set(W0) == {7, 6}
    task.run()  # no lock: works on its own copy
    late = _kf(m, 80)  # created while the graph ran, next to kf 7 (already corrected by the propagation)
    late.cam_from_world = make_se3(np.eye(3), np.array([-0.5, 0, 0])) @ m.keyframes[7].cam_from_world
    m.add_observations(late.id, np.arange(40, 80), m.keyframes[7].point_ids[:40])
    rel_before = late.cam_from_world @ sim3_inverse(m.keyframes[7].cam_from_world)
    k0 = m.keyframes[0].cam_from_world.copy()
    c7 = m.keyframes[7].cam_from_world @ np.c_[p7, np.ones(40)].T  # kf 7's own points in its camera frame
    with m.lock:
        W = task.apply(m)
    assert set(W) == set(m.keyframes)
    np.testing.assert_array_equal(m.keyframes[0].cam_from_world, k0)
    res = task.result
    for i, k in enumerate(res.kf_ids.tolist()):
        np.testing.assert_allclose(m.keyframes[k].cam_from_world, res.cam_from_world[i], atol=1e-9)
    moved = m.keyframes[7].cam_from_world @ np.c_[m.pts_xyz[m.keyframes[7].point_ids[:40]], np.ones(40)].T
    f = 1.0 if fix_scale else moved[2, 0] / c7[2, 0]  # monocular: the map's scale there changed by one factor
    np.testing.assert_allclose(moved[:3], c7[:3] * f, atol=1e-9)
    rel = late.cam_from_world @ sim3_inverse(m.keyframes[7].cam_from_world)  # same rotation, translation in the new scale
    np.testing.assert_allclose(rel[:3, :3], rel_before[:3, :3], atol=1e-9)
    np.testing.assert_allclose(rel[:3, 3], rel_before[:3, 3] * f, atol=1e-9)
    # the loop closed: the 3.2 m gap between kf 7 and where the loop puts it is spread over the 8 edges
    gap = lambda c: np.linalg.norm(sim3_inverse(c)[:3, 3] - sim3_inverse(se3_from_sim3(cur_from_loop @ k0))[:3, 3])  # noqa: E731
    assert gap(make_se3(np.eye(3), np.array([-3.5, 0, 0]))) > 3.0 and gap(m.keyframes[7].cam_from_world) < 0.6
    assert task.info.n_late_keyframes == 1 and task.info.iterations >= 1


def _weld_scene(n_cur_side: int, seed: int = 5):
    """A loop between an old monocular map (3 keyframes 7 cm apart, its points triangulated over
    those baselines alone) and the current map (the current keyframe 1 m away, turned 20 deg,
    and n_cur_side more keyframes 10 cm apart beside it; its own points, its own frame and
    scale 1.7). Returns (map, current keyframe, candidate, loop point ids, truth cur_from_cand
    in metres, S0: the Sim(3) that fits the old map's points held fixed, as steps 3-5 leave it)."""
    rng = np.random.default_rng(seed)
    K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
    n = 160
    X = np.column_stack([rng.uniform(-1.6, 1.6, n), rng.uniform(-1.1, 1.1, n), rng.uniform(2.5, 3.6, n)])

    def project(cfw, P):
        q = P @ cfw[:3, :3].T + cfw[:3, 3]
        return q[:, :2] / q[:, 2:] * 520.0 + [320.0, 240.0]

    def triangulate(poses, obs, init):
        k = len(poses)
        return bundle_adjust_schur(BAProblem(
            kf_ids=np.arange(k), cam_from_world=np.stack(poses), fixed=np.ones(k, bool), point_ids=np.arange(n),
            points_world=init, obs_kf=np.repeat(np.arange(k), n), obs_pt=np.tile(np.arange(n), k),
            obs_uv=np.concatenate(obs), obs_inv_sigma2=np.ones(k * n), obs_ur=np.full(k * n, np.nan), bf=0.0, K=K),
            iterations=20).points_world

    def add_kf(m, T, uv, pids, frame):
        kid = m.new_keyframe_id()
        kf = Keyframe(kid, frame, float(frame), T.copy(), None, uv, np.zeros(n), np.ones(n), np.zeros((n, 3), np.uint8),
                      np.zeros((n, 32), np.uint8), pids.copy())
        m.add_keyframe(kf)
        return kf

    m = Map(32, True)
    side = [se3_inverse(make_se3(np.eye(3), np.array([x, 0.0, 0.0]))) for x in (0.0, 0.07, 0.14)]
    obs = [project(T, X) + rng.normal(0.0, 0.5, (n, 2)) for T in side]
    loop_ids = m.add_points(triangulate(side, obs, X * rng.uniform(0.9, 1.1, (n, 1))), np.zeros((n, 32), np.uint8),
                            np.zeros((n, 3), np.uint8), 0)
    for i, (T, uv) in enumerate(zip(side, obs)):
        add_kf(m, T, uv, loop_ids, i)
    cand = m.keyframes[1]
    R_cur = so3_exp(np.array([0.0, np.radians(-20.0), 0.0]))
    cur_true = [se3_inverse(make_se3(R_cur, np.array([1.0 - 0.1 * i, 0.05 + 0.03 * i, 0.3]))) for i in range(1 + n_cur_side)]
    cur_obs = [project(T, X) + rng.normal(0.0, 0.5, (n, 2)) for T in cur_true]
    # the current map: the world drifted by 1 deg and scaled 1.7 (G: current map <- world)
    G = make_sim3(1.7, so3_exp(np.array([0.0, 0.0, np.radians(1.0)])), np.array([0.2, 0.0, 0.0]))
    G_inv = sim3_inverse(G)
    in_map = [se3_from_sim3(T @ G_inv) for T in cur_true]  # rigid poses in the current map
    if n_cur_side:
        Xc = triangulate(cur_true, cur_obs, X * rng.uniform(0.9, 1.1, (n, 1))) @ G[:3, :3].T + G[:3, 3]
        cur_ids = m.add_points(Xc, np.zeros((n, 32), np.uint8), np.zeros((n, 3), np.uint8), 3)
    else:
        cur_ids = np.full(n, -1, dtype=np.int64)
    cur = add_kf(m, in_map[0], cur_obs[0], cur_ids, 500)
    for i in range(1, 1 + n_cur_side):
        add_kf(m, in_map[i], cur_obs[i], cur_ids, 500 + 3 * i)
    truth = cur_true[0] @ se3_inverse(cand.cam_from_world)  # cur_from_cand, metres
    ok, rv, tv = cv2.solvePnP(m.pts_xyz[loop_ids], cur_obs[0], K, None, flags=cv2.SOLVEPNP_ITERATIVE)
    fixed_pose = make_se3(cv2.Rodrigues(rv)[0], tv.ravel()) @ se3_inverse(cand.cam_from_world)
    S0 = make_sim3(1.7, fixed_pose[:3, :3], 1.7 * fixed_pose[:3, 3])
    return m, cur, cand, loop_ids, truth, S0, K


def _sim3_errors(S, truth):
    sc, R, t = sim3_decompose(S)
    return rotation_angle_deg(R @ truth[:3, :3].T), float(np.linalg.norm(t / sc - truth[:3, 3])), sc


def test_loop_pose_refinement_re_triangulates_the_old_maps_points():
    """Step 6 of verification, the current keyframe alone: an old monocular map's points,
    triangulated over 7 and 14 cm baselines, carry depth errors; seen again from 1 m away they put
    the loop's pose centimetres off when they are held fixed (as steps 3-5 hold them). With them
    free and the loop side's keyframes fixed, the loop's baseline triangulates them again: the
    error falls several-fold, and the Sim(3)'s scale is kept."""
    m, cur, cand, ids, truth, S0, K = _weld_scene(0)
    n = len(ids)
    v = LoopVerifier(LoopClosingConfig(refine_keyframes=0), K, None, None, "mono", 100.0)
    S1, n_in = v._refine_with_structure(m, cur, cand, S0, np.arange(n), ids, [1, 0, 2])
    assert S1 is not None and n_in >= 0.9 * n
    rot0, tr0, _ = _sim3_errors(S0, truth)
    rot1, tr1, sc1 = _sim3_errors(S1, truth)
    assert tr0 > 0.01  # the fixed points put the loop's pose more than 1 cm off
    assert tr1 < tr0 / 3 and rot1 < rot0
    assert sc1 == pytest.approx(1.7, rel=1e-12)
    # one fixed loop-side view (or none) leaves the monocular points' scale free: the estimate is left alone
    for loop_kfs in ([1], []):
        assert v._refine_with_structure(m, cur, cand, S0, np.arange(n), ids, loop_kfs)[0] is None


def test_loop_pose_refinement_welds_the_current_side_in(monkeypatch):
    """With the current keyframe's neighbours free too (``refine_keyframes``), the problem holds
    the current side's keyframes (moved into the loop side's frame and scale) and their own
    points, one point per verified match: the loop's pose comes out several-fold closer to the
    truth than with the points held fixed, the scale is kept, and the map is not written."""
    import slam.loop.verification as verification

    seen = []

    def spy(prob, **kw):
        seen.append(prob)
        return bundle_adjust_schur(prob, **kw)

    monkeypatch.setattr(verification, "bundle_adjust_schur", spy)
    m, cur, cand, ids, truth, S0, K = _weld_scene(3)
    n = len(ids)
    before = {k: kf.cam_from_world.copy() for k, kf in m.keyframes.items()}
    xyz = m.pts_xyz[: m.n_points].copy()
    v = LoopVerifier(LoopClosingConfig(refine_keyframes=3), K, None, None, "mono", 100.0)
    S2, n_in = v._refine_with_structure(m, cur, cand, S0, np.arange(n), ids, [1, 0, 2])
    prob = seen[-1]
    assert sorted(prob.kf_ids[~prob.fixed].tolist()) == [3, 4, 5, 6]  # the current side
    assert sorted(prob.kf_ids[prob.fixed].tolist()) == [0, 1, 2]  # the loop side
    assert np.array_equal(np.sort(prob.point_ids), np.sort(ids))  # the current map's duplicates are the loop points
    assert n_in >= 0.9 * n
    rot0, tr0, _ = _sim3_errors(S0, truth)
    rot2, tr2, sc2 = _sim3_errors(S2, truth)
    assert tr2 < tr0 / 2 and rot2 < rot0, (rot0, tr0, rot2, tr2)
    assert sc2 == pytest.approx(1.7, rel=1e-12)
    assert all(np.array_equal(kf.cam_from_world, before[k]) for k, kf in m.keyframes.items())
    assert np.array_equal(m.pts_xyz[: m.n_points], xyz)
