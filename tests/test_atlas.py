"""The atlas (issue 17): a monocular tracker that stays lost starts a new map and keeps the old
one; two maps of the same scene, started apart, merge into one with the right relative pose.

Unit tests on the exact point scenes of test_tracking (tracker + local mapping, synchronous),
and (slow) the whole system on a rendered synthetic room with a long blackout.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from slam.geometry.se3 import make_se3, rotation_angle_deg, se3_inverse, so3_exp
from slam.loop.config import LoopClosingConfig, MapMergingConfig
from slam.loop.merge import MapMerger
from slam.loop.verification import LoopVerifier
from slam.mapping.atlas import Atlas
from slam.mapping.config import MappingConfig
from slam.mapping.local_mapper import LocalMapper
from slam.tracking.config import TrackingConfig
from slam.tracking.tracker import Tracker
from test_tracking import CAM, CountingNN, Scene, new_map

N_A, N_BLACK, N_B = 26, 8, 70  # frames of map A, black frames, frames of map B
B0 = N_A + N_BLACK  # first frame of map B's path


def path_a(i: int) -> np.ndarray:
    return Scene.cam_from_world(i)


def path_b(i: int) -> np.ndarray:
    """Starts 11 m to the side of A's start (looking at another part of the wall: relocalisation
    in map A fails), turned 6 degrees, and moves back towards A's start."""
    t = i - B0
    world_from_cam = make_se3(so3_exp(np.array([0.0, np.radians(-6.0) + 0.002 * t, 0.001 * t])),
                              np.array([11.0 - 0.145 * t, -0.15 + 0.004 * t, 0.05]))
    return se3_inverse(world_from_cam)


def truth(i: int) -> np.ndarray:
    """cam_from_world of frame i."""
    return path_a(i) if i < B0 else path_b(i)


class _System:
    """Tracker + local mapping (synchronous) with an atlas, as slam.system wires them."""

    def __init__(self, path=None) -> None:
        self.scene = Scene(31)
        rng = np.random.default_rng(32)  # a wall 32 m wide: A's and B's starts see different parts of it
        n = 12000
        self.scene.pts = np.column_stack([rng.uniform(-16, 16, n), rng.uniform(-3, 3, n), rng.uniform(3, 7, n)])
        self.scene.desc = rng.integers(0, 256, size=(n, self.scene.desc.shape[1]), dtype=np.uint8)
        self.path = path or truth
        self.map = new_map()
        self.matcher = CountingNN()
        self.tracker = Tracker(TrackingConfig(new_map_after_lost_frames=5), CAM, self.map, self.matcher, mode="mono")
        self.mapper = LocalMapper(MappingConfig(), CAM, self.map, self.matcher, mode="mono")
        self.atlas = Atlas()
        self.tracker.atlas = self.atlas
        self.tracker.relocalizer.usable = self.atlas.in_active
        self.states: list[str] = []

    def run(self, frames) -> None:
        for i in frames:
            black = N_A <= i < B0
            res, job = self.tracker.process(self.scene.frame(i, self.path(i), depth=False, max_kp=0 if black else 1500))
            self.states.append(res.state)
            if job is not None:
                self.mapper.process(job)

    def merger(self) -> MapMerger:
        lc_cfg = LoopClosingConfig()
        closing = SimpleNamespace(map=self.map, mapper=self.mapper, tracker=self.tracker, cfg=lc_cfg, verify_ms=[],
                                  verifier=LoopVerifier(lc_cfg, CAM.K, CAM, self.matcher, "mono", self.mapper.max_desc))
        return MapMerger(MapMergingConfig(), self.atlas, closing, CAM, fix_scale=False)


def _centres(kf_ids, m) -> np.ndarray:
    return np.stack([m.keyframes[k].center for k in kf_ids])


def _true_centres(kf_ids, m) -> np.ndarray:
    return np.stack([se3_inverse(truth(m.keyframes[k].frame_index))[:3, 3] for k in kf_ids])


def _alignment(kf_ids, m):
    """(scale, R (3,3), t (3,)) taking map points of the map of kf_ids to the true world: the
    first keyframe's pose against its true pose, the scale fitted over all of kf_ids (the
    straight paths make a free Sim(3) fit ill-posed)."""
    k0 = kf_ids[0]
    cfw = m.keyframes[k0].cam_from_world
    wfc = se3_inverse(truth(m.keyframes[k0].frame_index))
    q = _centres(kf_ids, m) @ cfw[:3, :3].T + cfw[:3, 3]  # in k0's camera, map units
    rq = q @ wfc[:3, :3].T
    d = _true_centres(kf_ids, m) - wfc[:3, 3]
    scale = float((rq * d).sum() / (rq * rq).sum())
    return scale, wfc[:3, :3] @ cfw[:3, :3], scale * wfc[:3, :3] @ cfw[:3, 3] + wfc[:3, 3]


def _aligned_error(kf_ids, m, scale, R, t) -> tuple[float, float]:
    """Largest position error (m) and orientation error (deg) of keyframes kf_ids, aligned."""
    err = np.linalg.norm(scale * _centres(kf_ids, m) @ R.T + t - _true_centres(kf_ids, m), axis=1)
    rot = [rotation_angle_deg(m.keyframes[k].cam_from_world[:3, :3] @ R.T @ truth(m.keyframes[k].frame_index)[:3, :3].T)
           for k in kf_ids]
    return float(err.max()), float(max(rot))


def _rescale(s: _System, kf_ids, factor: float) -> None:
    """Scale the map of keyframes kf_ids (and the tracker's last frame) by factor about its origin."""
    m = s.map
    W = np.diag([factor, factor, factor, 1.0])
    with m.lock:
        for k in kf_ids:
            m.keyframes[k].cam_from_world[:3, 3] *= factor
        pts = m.alive_point_ids()
        pts = pts[s.atlas.maps_of(m.pts_first_kf[pts]) == s.atlas.map_of(kf_ids[0])]
        m.pts_xyz[pts] *= factor
        s.tracker.apply_world_correction({k: W for k in kf_ids})


@pytest.fixture(scope="module")
def two_maps():
    s = _System()
    s.run(range(B0 + N_B))
    return s


def test_prolonged_loss_starts_a_new_map_and_keeps_the_old_one(two_maps):
    s = two_maps
    at, m = s.atlas, s.map
    assert s.tracker.n_new_maps == 1 and at.map_ids() == [0, 1] and at.active == 1
    a, b = at.keyframes_of(0, m.keyframes), at.keyframes_of(1, m.keyframes)
    assert len(a) >= 3 and len(b) >= 3
    assert max(m.keyframes[k].frame_index for k in a) < N_A <= min(m.keyframes[k].frame_index for k in b)
    # frames after the gap are tracked (in the new map, after its initialisation)
    first_b = s.states.index("OK", B0)
    assert first_b - B0 <= 15 and all(x == "OK" for x in s.states[first_b:])
    # relocalisation never used the old map, and each map is a consistent reconstruction
    for ids in (a, b):
        dt, dr = _aligned_error(ids, m, *_alignment(ids, m))
        assert dt < 5e-3 and dr < 0.1
    # the trajectory keeps both segments apart
    idx, _, _ = s.tracker.frame_poses.poses(keep=lambda k: at.map_of(k) == 0)
    idx_b, _, _ = s.tracker.frame_poses.poses(keep=lambda k: at.map_of(k) == 1)
    assert idx.max() < N_A and idx_b.min() >= B0 and len(idx_b) >= N_B - 15


def test_two_maps_of_the_same_scene_merge_with_the_true_relative_pose():
    """Two maps started 0.9 m apart (each with its own frame and monocular scale) merge into
    one: every keyframe of the moved map lands where the ground truth puts it in the kept map's
    frame (within 1 cm at the kept map's scale, 0.2 deg), and tracking goes on in that frame."""
    s = _System()
    s.run(range(B0 + N_B))
    at, m = s.atlas, s.map
    a, b = at.keyframes_of(0, m.keyframes), at.keyframes_of(1, m.keyframes)
    _rescale(s, b, 3.0)  # the monocular initialisations gave nearly equal scales: make map B's 3x larger
    cur = b[-1]
    # the candidate: map A's keyframe nearest to the current one in the ground truth
    cand = min(a, key=lambda k: np.linalg.norm(_true_centres([k], m) - _true_centres([cur], m)))
    merger = s.merger()
    with m.lock:
        mm = merger.verify(cur, cand)
        assert mm is not None
        rec = merger.merge(mm, B0 + N_B)
    assert rec is not None and at.map_ids() == [0] and at.active == 0
    assert rec["moved_map"] == 1 and rec["kept_map"] == 0 and rec["fused_points"] > 50
    assert 0.2 < rec["scale"] < 0.5  # map B was made 3x larger than its initialisation's near-equal scale
    # map A's frame vs the world, from A's keyframes only
    scale, R, t = _alignment(a, m)
    dt, dr = _aligned_error(b, m, scale, R, t)
    assert dt < 0.01 and dr < 0.2, (dt, dr)
    # the relative pose of the two keyframes the merge went through
    rel_est = m.keyframes[cur].cam_from_world @ m.keyframes[cand].world_from_cam
    rel_true = truth(m.keyframes[cur].frame_index) @ se3_inverse(truth(m.keyframes[cand].frame_index))
    assert rotation_angle_deg(rel_est[:3, :3] @ rel_true[:3, :3].T) < 0.2
    assert np.linalg.norm(rel_est[:3, 3] * scale - rel_true[:3, 3]) < 0.01
    # tracking goes on in the merged frame
    n = len(s.states)
    s.run(range(B0 + N_B, B0 + N_B + 10))
    assert s.states[n:] == ["OK"] * 10
    idx, _, poses = s.tracker.trajectory()
    last = scale * R @ poses[-1][:3, 3] + t
    assert np.linalg.norm(last - se3_inverse(truth(int(idx[-1])))[:3, 3]) < 0.02


def test_images_back_before_the_new_map_starts_relocalise_in_the_old_map():
    """Lost longer than tracking.new_map_after_lost_frames (a new map is started), but the images
    come back where map A is: the first frame back relocalises in A and the empty map is dropped."""
    s = _System(path=path_a)
    s.run(range(B0 + 10))
    assert s.tracker.n_new_maps == 1 and s.atlas.map_ids() == [0] and s.atlas.n_dropped == 1
    assert s.states[B0:] == ["OK"] * 10 and s.tracker.n_relocalised == 1
    idx, _, _ = s.tracker.trajectory()
    assert set(range(B0, B0 + 10)) <= set(idx.tolist())


def test_atlas_ids_follow_keyframe_ranges_and_merges():
    at = Atlas()
    assert at.map_of(0) == 0 and at.active == 0
    assert at.new_map(5, 100) == 1 and at.active == 1
    assert at.new_map(9, 200) == 2
    assert [at.map_of(k) for k in (0, 4, 5, 8, 9, 30)] == [0, 0, 1, 1, 2, 2]
    assert at.maps_of([0, 4, 5, 8, 9, 30]).tolist() == [0, 0, 1, 1, 2, 2]
    at.activate(at.merge(0, 2))
    assert at.map_ids() == [0, 1] and at.active == 0 and at.map_of(30) == 0 and at.in_active(3)
    assert at.keyframes_of(0, [0, 6, 10, 2]) == [0, 2, 10]
    at.new_map(12, 300)
    at.drop_last_map()
    assert at.map_ids() == [0, 1] and at.active == 0 and at.map_of(40) == 0 and at.n_dropped == 1
    st = at.stats([0, 1, 6, 10])
    assert st["maps_created"] == 3 and [x["keyframes"] for x in st["maps"]] == [3, 1]


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_end_to_end_long_blackout_new_map_then_merge(tmp_path_factory):
    """synthetic/loop_short (a 5 m lap of the office and back to the start), monocular, frames
    80-119 black: the tracker stays lost for 30 frames and starts a new map; the images come back
    where the old map never looked (relocalisation fails), so the new map initialises and tracks
    the rest of the lap; back at the start, place recognition merges it into the first map. One
    trajectory in one frame, every non-black frame after initialisation tracked; the merge's
    relative pose and the final one against the ground truth."""
    from slam.app import open_input, run_slam
    from slam.config import load_config
    from slam.geometry.sim3 import sim3_decompose, umeyama_alignment
    from slam.io.blackout import Blackout
    from slam.io.trajectory import read_tum
    from slam.synth.dataset import ensure_sequence

    folder = ensure_sequence("loop_short", tmp_path_factory.getbasetemp() / "synthetic_data")
    cfg = load_config(None, ["features=orb", "matcher=nn", "device=cpu", "runtime.progress=false", "mode=mono",
                             "runtime.threaded=false", f"output.root={tmp_path_factory.mktemp('runs')}",
                             "runtime.feature_stage=thread"])
    inputs = open_input(str(folder), cfg)
    inputs.source = Blackout(inputs.source, 80, 40)
    m = run_slam(cfg, inputs)
    at = m["atlas"]
    assert at["new_maps_after_loss"] == 1 and at["maps_created"] == 2 and at["new_maps_dropped"] == 0
    assert len(at["merges"]) == 1 and len(at["maps"]) == 1 and "segments" not in m
    merge = at["merges"][0]
    assert merge["loop_frame"] < 80 and merge["cur_frame"] >= 120
    assert m["frames_tracked"] >= 240 - 40 - m["init_frame"] - 8
    assert m["eval"]["ate_rmse_m"] < 0.04
    ts, est = read_tum(Path(m["run_dir"]) / "trajectory.txt")
    gts, gt_all = read_tum(folder / "groundtruth.txt")  # world_from_cam of every frame, in order
    idx = np.searchsorted(gts, ts - 1e-6)
    gt = gt_all[idx]
    after = idx >= 120
    assert after.sum() >= 100
    # the frames of the second map, under the similarity of the first map's frames alone
    scale, R, t = umeyama_alignment(est[~after, :3, 3], gt[~after, :3, 3], with_scale=True)
    err = np.linalg.norm(scale * est[after, :3, 3] @ R.T + t - gt[after, :3, 3], axis=1)
    assert np.sqrt((err ** 2).mean()) < 0.08, np.sqrt((err ** 2).mean())
    # the merge's relative pose (as verified, before any optimisation): rotation and direction
    _, R_rel, t_rel = sim3_decompose(np.asarray(merge["cur_from_loop"]))
    true_rel = se3_inverse(gt_all[merge["cur_frame"]]) @ gt_all[merge["loop_frame"]]  # cam_cur <- cam_loop
    assert rotation_angle_deg(R_rel @ true_rel[:3, :3].T) < 2.0
    assert float(t_rel @ true_rel[:3, 3]) / (np.linalg.norm(t_rel) * np.linalg.norm(true_rel[:3, 3])) > 0.9
    # the same two frames in the final trajectory (one similarity for the whole run)
    scale, R, t = umeyama_alignment(est[:, :3, 3], gt[:, :3, 3], with_scale=True)
    i_cur, i_loop = np.searchsorted(idx, [merge["cur_frame"], merge["loop_frame"]])
    rel = se3_inverse(est[i_cur]) @ est[i_loop]
    assert rotation_angle_deg(rel[:3, :3] @ true_rel[:3, :3].T) < 1.0
    assert np.linalg.norm(scale * rel[:3, 3] - true_rel[:3, 3]) < 0.03


@pytest.mark.parametrize("reset", [True, False])
def test_a_map_lost_soon_after_its_start_is_discarded_and_initialisation_starts_again(reset):
    """ORB-SLAM's reset: tracking lost within tracking.reset_young_map_frames frames of the
    initialisation, while the map has few keyframes, discards that map (keyframes, points and
    its frames in the trajectory) and the next frames initialise a new one at once. With the
    rule off the young map is kept and the tracker stays lost in it."""
    s = _System()
    if not reset:
        s.tracker.cfg = TrackingConfig(new_map_after_lost_frames=5, reset_young_map_keyframes=0)
    tr, at, m = s.tracker, s.atlas, s.map
    i = 0
    while tr.state != "OK":  # the first initialisation
        res, job = tr.process(s.scene.frame(i, path_a(i), depth=False))
        if job is not None:
            s.mapper.process(job)
        i += 1
        assert i < 20
    first = i - 1
    young = at.keyframes_of(0, m.keyframes)
    assert 1 <= len(young) <= tr.cfg.reset_young_map_keyframes or not reset
    for j in range(i, i + 2):  # two tracked frames, then the images go black
        res, job = tr.process(s.scene.frame(j, path_a(j), depth=False))
        assert res.state == "OK"
        if job is not None:
            s.mapper.process(job)
    lost_at = i + 2
    res, _ = tr.process(s.scene.frame(lost_at, path_a(lost_at), depth=False, max_kp=0))
    if not reset:
        assert res.state == "LOST" and tr.n_young_resets == 0 and at.keyframes_of(0, m.keyframes) == young
        idx, _, _ = tr.frame_poses.poses()
        assert idx.min() <= first
        return
    assert res.state == "INIT" and tr.n_young_resets == 1 and at.active == 1
    assert at.keyframes_of(0, m.keyframes) == [] and not any(k in m.keyframes for k in young)
    assert m.n_alive_points() == 0  # the young map's points died with its keyframes
    assert len(tr.frame_poses.poses()[0]) == 0  # and its frames left the trajectory
    # the images come back: a new map initialises and tracks from there on
    states = []
    for j in range(lost_at + 1, lost_at + 30):
        res, job = tr.process(s.scene.frame(j, path_a(j), depth=False))
        states.append(res.state)
        if job is not None:
            s.mapper.process(job)
    assert "OK" in states[:10] and all(x == "OK" for x in states[states.index("OK"):])
    idx, _, _ = tr.frame_poses.poses()
    assert idx.min() > lost_at and at.keyframes_of(1, m.keyframes)
