"""PLY point clouds: write the map (binary little-endian), read it back (binary or ASCII)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np

from slam.errors import InputError


log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["write_ply", "read_ply"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def write_ply(
    path: PathLike,
    points: np.ndarray,
    colors: Optional[np.ndarray] = None,
    comment: Optional[str] = None,
) -> int:
    """Write a point cloud as binary little-endian PLY.

    points: (P, 3) metres in the world frame (stored as float32 x, y, z).
    colors: (P, 3) uint8 RGB (stored as uchar red, green, blue), or None.
    comment: optional single-line comment for the header.
    Points with NaN/inf coordinates are dropped (with a warning). Returns the number written.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be (P, 3), got {pts.shape}")
    cols = None
    if colors is not None:
        cols = np.asarray(colors)
        if cols.shape != pts.shape:
            raise ValueError(f"colors must be (P, 3) like points {pts.shape}, got {cols.shape}")
        if cols.dtype != np.uint8:
            if np.issubdtype(cols.dtype, np.floating) and cols.size and cols.max() <= 1.0:
                raise ValueError("colors must be uint8 0..255 RGB; multiply float colours in [0, 1] by 255 first")
            cols = np.clip(cols, 0, 255).astype(np.uint8)
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        log.warning("write_ply(%s): dropping %d non-finite points", path, int((~finite).sum()))
        pts = pts[finite]
        cols = cols[finite] if cols is not None else None
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if cols is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    data = np.empty(len(pts), dtype=fields)
    data["x"], data["y"], data["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if cols is not None:
        data["red"], data["green"], data["blue"] = cols[:, 0], cols[:, 1], cols[:, 2]
    header = ["ply", "format binary_little_endian 1.0"]
    if comment:
        header.append("comment " + comment.replace("\n", " "))
    header += [f"element vertex {len(pts)}", "property float x", "property float y", "property float z"]
    if cols is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    return len(pts)


def read_ply(path: PathLike) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Read the vertices of a PLY file -> (points (P, 3) float32, colors (P, 3) uint8 RGB or None).

    Supports ``binary_little_endian``, ``binary_big_endian`` and ``ascii`` with scalar vertex
    properties; other elements (faces, ...) after the vertices are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: PLY file not found")
    with open(path, "rb") as f:
        raw = f.read()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise InputError(f"{path}: not a PLY file (no 'ply' magic or no 'end_header')")
    nl = raw.find(b"\n", end)
    body = raw[nl + 1:] if nl >= 0 else b""
    header = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for lineno, line in enumerate(header, start=1):
        tok = line.split()
        if not tok or tok[0] in ("ply", "comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if not elements:
                raise InputError(f"{path}:{lineno}: property before any element")
            if tok[1] == "list":
                if elements[-1][0] == "vertex":
                    raise InputError(f"{path}:{lineno}: list properties on vertices are not supported")
                elements[-1][2].append((tok[-1], "list"))
                continue
            if tok[1] not in _PLY_TYPES:
                raise InputError(f"{path}:{lineno}: unknown property type {tok[1]!r}")
            elements[-1][2].append((tok[2], _PLY_TYPES[tok[1]]))
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise InputError(f"{path}: unsupported PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise InputError(f"{path}: the first element must be 'vertex'")
    _, n, props = elements[0]
    names = [p[0] for p in props]
    for axis in ("x", "y", "z"):
        if axis not in names:
            raise InputError(f"{path}: vertex element has no {axis!r} property")
    if fmt == "ascii":
        rows = body.decode("ascii", errors="replace").split("\n")[:n]
        try:
            table = np.array([[float(v) for v in r.split()[: len(props)]] for r in rows], dtype=np.float64)
        except ValueError as exc:
            raise InputError(f"{path}: malformed ASCII vertex data ({exc})") from exc
        if table.shape != (n, len(props)):
            raise InputError(f"{path}: expected {n} vertices with {len(props)} values, file is truncated")
        col = {name: table[:, i] for i, name in enumerate(names)}
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(name, order + t) for name, t in props])
        if len(body) < n * dtype.itemsize:
            raise InputError(f"{path}: expected {n} vertices ({n * dtype.itemsize} bytes), file is truncated")
        arr = np.frombuffer(body, dtype=dtype, count=n)
        col = {name: arr[name] for name in names}
    points = np.stack([col["x"], col["y"], col["z"]], axis=1).astype(np.float32)
    colors = None
    if all(c in col for c in ("red", "green", "blue")):
        colors = np.stack([col["red"], col["green"], col["blue"]], axis=1).astype(np.uint8)
    return points, colors
