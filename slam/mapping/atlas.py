"""The atlas: several maps of one run (ORB-SLAM3's Atlas), kept in the one map container.

When monocular tracking stays lost (``tracking.new_map_after_lost_frames``), the tracker starts
a new map instead of staying lost: the old map is kept, the new one initialises in its own
world frame (its first keyframe at the origin, its own monocular scale). Place recognition
(slam.loop.merge) later finds a place both maps saw and merges them into one frame.

All maps live in the same :class:`slam.mapping.map.Map` (one lock, one id space for keyframes
and points). A map is the set of keyframes created between two map starts, so a keyframe's map
follows from its id alone (keyframe ids only grow): map segments are id ranges, and a merge
joins segments (union-find). Keyframes of different maps share no map points until a merge
fuses them, so covisibility (local maps, local BA, fusion, culling) never crosses maps. Points
belong to the map of the keyframe that created them (``Map.pts_first_kf``).

Map ids are segment numbers, 0 for the first map; after a merge the merged map keeps the id of
the map that was kept (the other map's keyframes moved into its frame).
"""
from __future__ import annotations

import bisect
from typing import Iterable

import numpy as np


class Atlas:
    def __init__(self) -> None:
        self._starts: list[int] = [0]  # first keyframe id of each segment, ascending
        self._parent: list[int] = [0]  # union-find over segments
        self._created_frame: list[int] = [0]
        self._active_seg = 0
        self.merges: list[dict] = []  # one record per merge (slam.loop.merge fills it)
        self.n_dropped = 0  # new maps forgotten before their first keyframe (tracking came back to the old map)

    # ------------------------------------------------------------------ ids
    def _find(self, seg: int) -> int:
        while self._parent[seg] != seg:
            self._parent[seg] = self._parent[self._parent[seg]]
            seg = self._parent[seg]
        return seg

    def map_of(self, kf_id: int) -> int:
        """The map id of keyframe kf_id (also for culled keyframes)."""
        return self._find(bisect.bisect_right(self._starts, int(kf_id)) - 1)

    def maps_of(self, kf_ids: Iterable[int]) -> np.ndarray:
        """(K,) int64 map ids of keyframe ids (vectorised :meth:`map_of`)."""
        ids = np.asarray(list(kf_ids) if not isinstance(kf_ids, np.ndarray) else kf_ids, dtype=np.int64)
        seg = np.searchsorted(np.asarray(self._starts, dtype=np.int64), ids, side="right") - 1
        roots = np.array([self._find(s) for s in range(len(self._starts))], dtype=np.int64)
        return roots[seg] if len(ids) else np.zeros(0, dtype=np.int64)

    @property
    def active(self) -> int:
        """The map the tracker works in."""
        return self._find(self._active_seg)

    def in_active(self, kf_id: int) -> bool:
        return self.map_of(kf_id) == self.active

    def map_ids(self) -> list[int]:
        """Every map id (merged maps once), ascending."""
        return sorted({self._find(s) for s in range(len(self._starts))})

    def created_frame(self, map_id: int) -> int:
        return self._created_frame[map_id]

    # ------------------------------------------------------------------ changes
    def new_map(self, next_kf_id: int, frame_index: int) -> int:
        """Start a new map whose keyframes get ids from next_kf_id on; it becomes the active
        map. Returns its id."""
        self._starts.append(int(next_kf_id))
        seg = len(self._starts) - 1
        self._parent.append(seg)
        self._created_frame.append(int(frame_index))
        self._active_seg = seg
        return seg

    def drop_last_map(self) -> None:
        """Forget the newest map, which must have no keyframe (tracking came back to the map it
        replaced before it started); the map before it becomes active."""
        if len(self._starts) < 2:
            return
        gone = len(self._starts) - 1
        self._starts.pop()
        self._parent.pop()
        self._created_frame.pop()
        if self._active_seg == gone:
            self._active_seg = gone - 1
        self.n_dropped += 1

    def merge(self, keep: int, absorb: int) -> int:
        """Map ``absorb`` joins map ``keep`` (its keyframes were moved into keep's frame).
        Returns the merged map's id (= keep's)."""
        keep, absorb = self._find(keep), self._find(absorb)
        if keep != absorb:
            self._parent[absorb] = keep
        return keep

    def activate(self, map_id: int) -> None:
        """Make map_id the active map."""
        self._active_seg = self._find(map_id)

    def keyframes_of(self, map_id: int, kf_ids: Iterable[int]) -> list[int]:
        """Those of kf_ids in map map_id, ascending."""
        ids = np.array(sorted(kf_ids), dtype=np.int64)
        return ids[self.maps_of(ids) == self._find(map_id)].tolist() if len(ids) else []

    def stats(self, kf_ids: Iterable[int]) -> dict:
        """Figures for metrics.json: maps created, live keyframes per map, merges."""
        ids = np.array(sorted(kf_ids), dtype=np.int64)
        maps = self.maps_of(ids) if len(ids) else np.zeros(0, dtype=np.int64)
        return {
            "maps_created": len(self._starts),
            "new_maps_dropped": self.n_dropped,
            "maps": [{"id": k, "created_at_frame": self._created_frame[k], "keyframes": int((maps == k).sum())}
                     for k in self.map_ids()],
            "merges": self.merges,
        }
