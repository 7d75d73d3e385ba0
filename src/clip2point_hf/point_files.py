"""One way in for 3D files: the table from file type to reader (:data:`FILE_TYPES`), and the one function
that looks it up (:func:`read_file`), as ``trimesh.load`` looks up one table of loaders.

:func:`read_point_cloud` turns any of these files into one cloud, which is what the pipeline and the
command line read: a mesh is sampled on its surface (area-weighted, seeded by the file name), a lidar
file with more than ``num_points`` points gives a seeded subset of them, any other point file every point
(extra columns such as normals and colours dropped). :func:`read_mesh` reads a mesh file's triangles.

Every reader is ours: trimesh, measured on the same files, misses edge cases ours read and is slower on
the real meshes at hand (BENCHMARKS.md, "Reading files"). Mesh formats are in ``mesh_io.py`` and
``gltf_io.py``, point formats in ``point_io.py``. All of them are flat: they travel into Hub folders with
the pipeline, so optional libraries (laspy) are imported only when a file needs them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .errors import DatasetFormatError
from .gltf_io import read_gltf
from .mesh_io import Mesh, read_obj, read_off, read_ply, read_stl, sample_surface
from .point_io import LidarFile, read_las, read_numpy, read_pcd, read_text
from .points_clip2point import float32_shape_loss, float32_shape_warning
from .seeding import seeded_rng

__all__ = [
    "FILE_TYPES",
    "MESH_EXTENSIONS",
    "POINT_FILE_TYPES",
    "FileType",
    "read_file",
    "read_mesh",
    "read_point_cloud",
]


@dataclass(frozen=True)
class FileType:
    """A row of the table: what files of one type hold, and the function that reads one."""

    holds: Literal["mesh", "points", "mesh or points"]
    read: Callable[[Path], Mesh | np.ndarray | LidarFile]


FILE_TYPES: dict[str, FileType] = {
    ".obj": FileType("mesh", read_obj),
    ".off": FileType("mesh", read_off),
    ".ply": FileType("mesh or points", read_ply),  # a scan's PLY has no faces
    ".stl": FileType("mesh", read_stl),
    ".glb": FileType("mesh", read_gltf),
    ".gltf": FileType("mesh", read_gltf),
    ".npy": FileType("points", read_numpy),
    ".npz": FileType("points", read_numpy),
    ".txt": FileType("points", read_text),
    ".xyz": FileType("points", read_text),
    ".pts": FileType("points", read_text),
    ".csv": FileType("points", read_text),
    ".pcd": FileType("points", read_pcd),
    ".las": FileType("points", read_las),
    ".laz": FileType("points", read_las),
}
#: Every type :func:`read_point_cloud` reads (what the command line, the pipeline and the web page accept).
POINT_FILE_TYPES = tuple(FILE_TYPES)
#: The types that may hold a surface (what mesh folders and :func:`read_mesh` read).
MESH_EXTENSIONS = tuple(ext for ext, file_type in FILE_TYPES.items() if file_type.holds != "points")


def read_file(path: str | os.PathLike) -> Mesh | np.ndarray | LidarFile:
    """What a file holds, read by its type's row of :data:`FILE_TYPES` (the extension, case-insensitive): a
    :class:`~clip2point_hf.mesh_io.Mesh`, an array of points, or a checked lidar file to sample."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FILE_TYPES:
        raise DatasetFormatError(
            path, f"unsupported file type {ext or '(none)'!r}; expected one of {POINT_FILE_TYPES}"
        )
    if path.is_dir():
        raise DatasetFormatError(path, "is a folder, not a point-cloud or mesh file")
    if not path.is_file():
        raise DatasetFormatError(path, "file not found")
    return FILE_TYPES[ext].read(path)


def read_mesh(path: str | os.PathLike) -> Mesh:
    """The triangles of a mesh file (one of :data:`MESH_EXTENSIONS`)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MESH_EXTENSIONS:
        raise DatasetFormatError(
            path, f"unsupported mesh extension {ext!r} (expected one of {MESH_EXTENSIONS})"
        )
    content = read_file(path)
    if not isinstance(content, Mesh):
        raise DatasetFormatError(path, f"holds points, not a surface: its {ext} file has no faces")
    return content


def read_point_cloud(path: str | os.PathLike, num_points: int = 8192, seed: int = 0) -> np.ndarray:
    """Read ``path`` into a float64 ``(N, 3)`` array of its own coordinates: ``num_points`` surface samples of
    a mesh, a subset of ``num_points`` of a lidar file with more, every point of any other point file.

    float64, so that a cloud at map coordinates keeps its shape until it is centred. When the file's
    coordinates are no finer than float32 and that has already lost the shape, one warning says so.
    """
    path = Path(path)
    content = read_file(path)
    rng = seeded_rng(seed, path.name)
    if isinstance(content, Mesh):
        points = sample_surface(content, num_points, rng, path=path, dtype=np.float64)
        stored = content.vertices
    elif isinstance(content, LidarFile):
        points = stored = _checked_points(content.sample(num_points, rng), path)
    else:
        points = stored = _checked_points(content, path)
    if np.array_equal(stored.astype(np.float32), stored):  # no finer than float32: did that lose the shape?
        coordinates = torch.from_numpy(stored)
        if bool(float32_shape_loss(coordinates)):
            warnings.warn(float32_shape_warning(coordinates, str(path)), stacklevel=2)
    return points


def _checked_points(points: np.ndarray, path: Path) -> np.ndarray:
    """x, y, z of a point file's rows as float64, or one line saying why they are not points."""
    if points.ndim != 2 or points.shape[1] < 3:
        raise DatasetFormatError(path, f"expected an (N, 3+) array of points, got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise DatasetFormatError(path, f"points have non-numeric dtype {points.dtype}")
    points = points[:, :3].astype(np.float64)
    if len(points) == 0:
        raise DatasetFormatError(path, "the file holds no points")
    if not np.isfinite(points).all():
        raise DatasetFormatError(
            path, f"{int((~np.isfinite(points).all(axis=1)).sum())} points have NaN or Inf"
        )
    return points
