"""``--viewer none``: a viewer that shows nothing (the end-of-run PNG is still written)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from slam.viz.base import MapSnapshot


class NullViewer:
    """Does nothing on update/close; ``save_png`` renders offscreen like every viewer."""

    def __init__(self) -> None:
        self.n_updates = 0

    def update(self, snapshot: MapSnapshot) -> None:
        self.n_updates += 1

    def close(self) -> None:
        pass

    def save_png(self, path: Union[str, Path], snapshot: MapSnapshot) -> Path:
        from slam.viz.render import render_map_png

        return render_map_png(snapshot, path)

    def __enter__(self) -> "NullViewer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
