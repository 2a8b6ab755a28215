"""Pictures and viewers: the live Open3D viewer, the offscreen map render, plots, drawings of
keypoints and matches. :func:`create_viewer` picks a viewer by name."""
from __future__ import annotations

from typing import Any


def create_viewer(kind: str, **kwargs: Any) -> Any:
    """``"none"`` -> NullViewer, ``"open3d"`` -> Open3DViewer(**kwargs)."""
    if kind == "none":
        from slam.viz.null import NullViewer

        return NullViewer()
    if kind == "open3d":
        from slam.viz.open3d_viewer import Open3DViewer

        return Open3DViewer(**kwargs)
    raise ValueError(f"viewer {kind!r} is not valid; choose one of none, open3d")
