"""The matcher protocol every middle-end implements, and the capability it declares.

A matcher declares its ``kind``, which tells tracking how to obtain 2D-3D candidates:

- ``"descriptor"`` (:data:`DESCRIPTOR`): it scores descriptor pairs one by one (the nearest-
  neighbour matcher). Tracking then matches projected map points to keypoints near their
  predicted position (guided search) and calls the matcher only when that fails.
- ``"learned"`` (:data:`LEARNED`): it matches whole keypoint sets with their context (SuperGlue,
  LightGlue). Tracking then matches each frame against keyframes with the matcher, in one
  batched call, and reads the map points off the keyframes' keypoints.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from slam.types import Features, Matches

__all__ = ["DESCRIPTOR", "LEARNED", "KINDS", "Matcher", "matcher_kind"]

DESCRIPTOR = "descriptor"
LEARNED = "learned"
KINDS = (DESCRIPTOR, LEARNED)


@runtime_checkable
class Matcher(Protocol):
    """Matches the keypoints of two images.

    name: what the config calls it ("nn", "superglue", ...).
    kind: "descriptor" or "learned" (see the module docstring).
    match(f0, f1) -> Matches with matches0 of length len(f0), indices into f1, -1 unmatched.
    match_many(query, refs) matches one query frame against several reference frames
    (keyframes); learned matchers do this in ONE batched forward pass.
    """

    name: str
    kind: str

    def match(self, feats0: Features, feats1: Features) -> Matches:
        ...

    def match_many(self, query: Features, refs: Sequence[Features]) -> list[Matches]:
        ...


def matcher_kind(matcher: object) -> str:
    """The kind a matcher declares; TypeError naming the matcher when it declares none valid."""
    kind = getattr(matcher, "kind", None)
    if kind not in KINDS:
        raise TypeError(f"matcher {type(matcher).__name__} declares kind={kind!r}; a matcher must declare "
                        f"kind = {DESCRIPTOR!r} or {LEARNED!r} (see slam.matching.base)")
    return kind
