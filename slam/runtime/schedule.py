"""How tracking and local mapping share the machine: the mapping schedule.

Tracking and mapping take one :class:`MappingSchedule` each, and ask it three things:

- tracking: :meth:`MappingSchedule.mapping_busy` -- whether a keyframe that is merely due
  should wait because local mapping still has work queued (ORB-SLAM's idle condition);
- mapping: :meth:`MappingSchedule.yield_point` -- called between pieces of Python work, so
  the frame path can go first; :meth:`MappingSchedule.backlog` -- whether another keyframe
  job is queued behind the current one (then the current job's optional work is skipped);
  :attr:`MappingSchedule.ba_stop` -- a stop handle for a running local bundle adjustment.

The base class is the no-op default: nothing is busy, nothing waits, nothing is skipped, so a
run's result depends on the frames alone. The live schedule lives beside it (see below).
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["MappingSchedule"]


class MappingSchedule:
    """The no-op schedule (synchronous and dataset runs)."""

    #: stop handle (slam.optim.ba.BAStop) for a running local BA; None = never stopped
    ba_stop: Optional[Any] = None

    def mapping_busy(self) -> bool:
        """Tracking: local mapping still works on earlier keyframe jobs."""
        return False

    def yield_point(self) -> None:
        """Mapping: a point between pieces of work where the frame path may go first."""

    def backlog(self) -> bool:
        """Mapping: another keyframe job waits behind the one being worked on."""
        return False
