"""Open a EuRoC or KITTI sequence for a run: reader, camera, stereo rig, ground truth.

:func:`open_stereo_dataset` is what ``python -m slam run --seq ...`` uses for
``euroc/<name>``, ``kitti/<XX>`` and paths detected as those layouts
(:func:`slam.io.detect.detect_layout`). It returns a :class:`DatasetInput`; the command line
turns that into its run inputs. Light module: no torch.

Modes: "mono" reads the left camera only (EuRoC: raw cam0 images, the camera carries cam0's
radial-tangential distortion and the pipeline undistorts keypoints); "stereo" reads both
cameras paired by timestamp, rectified (EuRoC: by :func:`slam.geometry.stereo.rectify_stereo`;
KITTI already is), and gives the rig; "rgbd" is refused (these datasets have no depth images).

Ground truth is always the pose of the camera of ``Frame.image`` (``world_from_cam``):
EuRoC's body poses times ``T_BS`` of cam0 (and the rectifying rotation in stereo); KITTI's
cam0 poses (moved to cam2 for the colour images), with timestamps from times.txt.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from slam.geometry.camera import PinholeCamera
from slam.geometry.stereo import StereoRig
from slam.errors import InputError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["DatasetInput", "open_stereo_dataset", "open_euroc", "open_kitti", "resolve_named", "TRAJECTORY_FORMATS"]

# Trajectory formats written by default for each dataset, besides TUM.
TRAJECTORY_FORMATS = {"euroc": ("euroc",), "kitti": ("kitti",)}


@dataclass
class DatasetInput:
    """A opened EuRoC or KITTI sequence.

    name:               run name ("euroc/V1_01_easy", "kitti/07", or the folder's name).
    layout:             "euroc" or "kitti".
    folder:             the sequence folder (EuRoC: holding mav0; KITTI: sequences/XX).
    reader:             EuRoCReader or KITTIReader, yielding slam.types.Frame.
    camera:             PinholeCamera of ``Frame.image`` (rectified in stereo).
    rig:                StereoRig (rectified) in stereo mode, else None.
    groundtruth:        (timestamps (N,) s, world_from_cam (N, 4, 4)) of that camera, or None.
    groundtruth_note:   one line saying what the ground truth is and how it was converted.
    trajectory_formats: extra trajectory formats written for this dataset ("euroc", "kitti").
    info:               one line for the log.
    """

    name: str
    layout: str
    folder: Path
    reader: object
    camera: PinholeCamera
    rig: Optional[StereoRig]
    groundtruth: Optional[tuple[np.ndarray, np.ndarray]]
    groundtruth_note: str
    trajectory_formats: tuple
    info: str

    @property
    def n_frames(self) -> int:
        return len(self.reader)  # type: ignore[arg-type]


def _check_mode(mode: str, layout: str, folder: Path) -> bool:
    """-> stereo? Raises InputError for a mode the dataset cannot do."""
    if mode == "stereo":
        return True
    if mode == "mono":
        return False
    what = "EuRoC" if layout == "euroc" else "KITTI"
    raise InputError(f"{folder}: a {what} sequence has no depth images for --mode {mode}; run it with --mode mono")


def open_euroc(folder: PathLike, mode: str = "mono", name: Optional[str] = None, max_frames: int = 0,
               start: int = 0, stride: int = 1) -> DatasetInput:
    """Open a EuRoC sequence folder (holding ``mav0``, or ``mav0`` itself) for ``mode``."""
    from slam.io.euroc import EuRoCReader

    folder = Path(folder)
    stereo = _check_mode(mode, "euroc", folder)
    reader = EuRoCReader(folder, stereo=stereo, rectify=True, max_frames=max_frames, start=start, stride=stride)
    gt = reader.groundtruth()
    if gt is None:
        note = f"no ground truth ({reader.mav0 / 'state_groundtruth_estimate0' / 'data.csv'} absent)"
    elif stereo:
        note = ("EuRoC body (IMU) poses of state_groundtruth_estimate0 turned into rectified-left-camera poses: "
                "world_from_body @ T_BS(cam0) @ inv(rect_from_cam0)")
    else:
        note = "EuRoC body (IMU) poses of state_groundtruth_estimate0 turned into cam0 poses: world_from_body @ T_BS(cam0)"
    seq_name = name or reader.folder.name
    kind = "stereo, rectified" if stereo else "monocular cam0, raw images with rad-tan distortion"
    info = f"EuRoC sequence {reader.folder} ({len(reader)} frames, {kind})"
    return DatasetInput(seq_name, "euroc", reader.folder, reader, reader.camera, reader.rig if stereo else None,
                        gt, note, TRAJECTORY_FORMATS["euroc"], info)


def open_kitti(folder: PathLike, mode: str = "mono", name: Optional[str] = None, max_frames: int = 0,
               start: int = 0, color: Optional[bool] = None, stride: int = 1) -> DatasetInput:
    """Open a KITTI ``sequences/XX`` folder for ``mode``. color None: the grey images
    (image_0/image_1) when present, else the colour ones (image_2/image_3)."""
    from slam.io.kitti import KITTIReader, poses_path

    folder = Path(folder)
    stereo = _check_mode(mode, "kitti", folder)
    if color is None:
        color = not (folder / "image_0").is_dir() and (folder / "image_2").is_dir()
    reader = KITTIReader(folder, color=color, stereo=stereo, max_frames=max_frames, start=start, stride=stride)
    gt = reader.groundtruth()
    if gt is None:
        note = f"no ground truth ({poses_path(folder)} absent; KITTI publishes it for 00-10)"
    elif color:
        note = f"KITTI poses/{poses_path(folder).name} (world_from_cam0) moved to cam2 with calib.txt's P2, timestamps from times.txt"
    else:
        note = f"KITTI poses/{poses_path(folder).name} (world_from_cam0, the left grey camera), timestamps from times.txt"
    seq_name = name or f"kitti_{folder.name}"
    kind = ("colour" if color else "grey") + (" stereo" if stereo else " monocular, left camera")
    info = f"KITTI sequence {folder} ({len(reader)} frames, {kind})"
    return DatasetInput(seq_name, "kitti", folder, reader, reader.camera, reader.rig, gt, note,
                        TRAJECTORY_FORMATS["kitti"], info)


def resolve_named(seq: str, data_root: Optional[PathLike]) -> Optional[tuple[str, str, Path]]:
    """``euroc/<name>`` or ``kitti/<XX>`` -> (canonical name, layout, folder); None for other names.

    Raises InputError (slam.io.sequences) with the paths tried and
    how to get the data. ``euroc/<name>`` without a manifest is accepted when a EuRoC folder of
    that name is under a data root (:func:`slam.io.locate.find_unlisted`)."""
    from slam.io.locate import DATASETS, find_unlisted
    from slam.io.sequences import _labelled_roots, find_sequence

    if seq.split("/", 1)[0] not in DATASETS:
        return None
    try:
        info, folder = find_sequence(seq, data_root)
    except InputError as exc:
        found = find_unlisted(seq.strip("/"), _labelled_roots(data_root))
        if found is None or "unknown sequence" not in str(exc):
            raise
        log.info("%s has no manifest; using the EuRoC folder %s", seq, found[1])
        return seq.strip("/"), found[0], found[1]
    return info.name, info.dataset, folder


def open_stereo_dataset(layout: str, folder: PathLike, mode: str, name: Optional[str] = None,
                        max_frames: int = 0, start: int = 0, stride: int = 1) -> DatasetInput:
    """Open ``folder`` as ``layout`` ("euroc" or "kitti") for ``mode`` ("mono" or "stereo")."""
    if layout == "euroc":
        return open_euroc(folder, mode, name, max_frames, start, stride=stride)
    if layout == "kitti":
        return open_kitti(folder, mode, name, max_frames, start, stride=stride)
    raise ValueError(f"layout must be 'euroc' or 'kitti', got {layout!r}")
