"""The matcher protocol every middle-end implements."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from slam.types import Features, Matches


@runtime_checkable
class Matcher(Protocol):
    """Matches the keypoints of two images.

    match(f0, f1) -> Matches with matches0 of length len(f0), indices into f1, -1 unmatched.
    match_many(query, refs) matches one query frame against several reference frames
    (keyframes); learned matchers do this in ONE batched forward pass.
    """

    name: str

    def match(self, feats0: Features, feats1: Features) -> Matches:
        ...

    def match_many(self, query: Features, refs: Sequence[Features]) -> list[Matches]:
        ...
