"""One point cloud from one file, whatever its type: what the pipeline and the command line read.

Meshes (`.obj`, `.off`, `.stl`, `.ply` with faces) are sampled on their surface (area-weighted, seeded
by the file name); point files (`.ply` without faces, `.npy`, `.npz`, `.txt`/`.xyz`/`.pts`/`.csv`) are
returned as stored, extra columns (normals, colours) dropped.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError
from .mesh_io import _finish, _read_bytes, read_mesh, read_ply_elements, sample_surface, seeded_rng

MESH_FILES = (".obj", ".off", ".stl")
TEXT_FILES = (".txt", ".xyz", ".pts", ".csv")
POINT_FILE_TYPES = (*MESH_FILES, ".ply", ".npy", ".npz", *TEXT_FILES)


def read_point_cloud(path: str | os.PathLike, num_points: int = 8192, seed: int = 0) -> np.ndarray:
    """Read `path` into a float32 `(N, 3)` array (`num_points` surface samples for meshes)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in POINT_FILE_TYPES:
        raise DatasetFormatError(
            path, f"unsupported file type {ext or '(none)'!r}; expected one of {POINT_FILE_TYPES}"
        )
    if path.is_dir():
        raise DatasetFormatError(path, "is a folder, not a point-cloud or mesh file")
    if not path.is_file():
        raise DatasetFormatError(path, "file not found")
    if ext in MESH_FILES:
        points = _sample(read_mesh(path), path, num_points, seed)
    elif ext == ".ply":
        points = _read_ply(path, num_points, seed)
    elif ext in (".npy", ".npz"):
        points = _read_numpy(path)
    else:
        points = _read_text(path)
    return _check(points, path)


def _sample(mesh, path: Path, num_points: int, seed: int) -> np.ndarray:
    return sample_surface(mesh, num_points, seeded_rng(seed, path.name), path=path)


def _read_ply(path: Path, num_points: int, seed: int) -> np.ndarray:
    vertices, faces, _ = read_ply_elements(path)
    if faces is None or len(faces) == 0:  # a scan: the vertices are the cloud
        return np.asarray(vertices, dtype=np.float64)
    return _sample(_finish(path, vertices, faces, "PLY"), path, num_points, seed)


def _read_numpy(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetFormatError(path, f"cannot read as a numpy file ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = next(
                (k for k in ("points", "xyz", "data", "pc") if k in keys), keys[0] if len(keys) == 1 else None
            )
            if key is None:
                raise DatasetFormatError(path, f"npz file has several arrays {keys} and none named 'points'")
            loaded = loaded[key]
    return loaded


def _read_text(path: Path) -> np.ndarray:
    text = _read_bytes(path).decode("utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    try:
        return np.loadtxt(text.splitlines(), delimiter="," if "," in first else None, ndmin=2, comments="#")
    except ValueError as error:
        raise DatasetFormatError(path, f"cannot parse the text as rows of numbers ({error})") from None


def _check(points: np.ndarray, path: Path) -> np.ndarray:
    if points.ndim != 2 or points.shape[1] < 3:
        raise DatasetFormatError(path, f"expected an (N, 3+) array of points, got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise DatasetFormatError(path, f"points have non-numeric dtype {points.dtype}")
    points = points[:, :3].astype(np.float32)
    if len(points) == 0:
        raise DatasetFormatError(path, "the file holds no points")
    if not np.isfinite(points).all():
        raise DatasetFormatError(
            path, f"{int((~np.isfinite(points).all(axis=1)).sum())} points have NaN or Inf"
        )
    return points


__all__ = ["POINT_FILE_TYPES", "read_point_cloud"]
