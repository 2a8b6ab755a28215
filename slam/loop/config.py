"""Settings of place recognition (light: no torch; ``slam.config`` builds on them)."""
from __future__ import annotations

from dataclasses import dataclass

from slam.params import param


@dataclass
class PlaceRecognitionConfig:
    vocabulary: str = "auto"  # auto = the vocabulary for the extractor and its weights (slam.loop.store), or a path to an .npz
    direct_level: int = param(2, ge=1)  # tree level (from the root) of the direct index used to restrict BoW matching
    min_common_ratio: float = param(0.8, ge=0.0, le=1.0)  # candidates share more than this x the most words shared (ORB-SLAM: 0.8)
    retain_ratio: float = param(0.75, ge=0.0, le=1.0)  # keep covisibility groups above this x the best group's score (ORB-SLAM: 0.75)
    covisible_neighbours: int = param(10, ge=0)  # neighbours that form a candidate's group (ORB-SLAM: 10)
    merge_every: int = param(16, ge=1)  # keyframe database: new/erased keyframes merged into the index in batches of this many
