"""Which loader reads a dataset folder, and loading it through that loader (what the scripts' ``--dataset``
and ``--dataset_format`` arguments mean)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .cache import dataset_metadata
from .mesh_folder import load_mesh_folder
from .modelnet import detect_modelnet_format, load_modelnet
from .scanobjectnn import load_scanobjectnn
from .shapenet import PAIRS_META_FILE, load_shapenet_pairs

__all__ = ["DATASET_FORMATS", "detect_dataset_format", "load_point_cloud_dataset"]

#: ``--dataset_format`` values: ``auto`` detects the format with :func:`detect_dataset_format`.
DATASET_FORMATS = ("auto", "modelnet", "scanobjectnn", "mesh_folder", "shapenet_pairs")


def detect_dataset_format(path: str | os.PathLike) -> str:
    """Which loader of :mod:`clip2point_hf.data` reads ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if (root / PAIRS_META_FILE).is_file() or (root / "shapenet_pc").is_dir():
        return "shapenet_pairs"
    names = {p.name.lower() for p in root.rglob("*.h5")} if any(root.rglob("*.h5")) else set()
    if any("objectdataset" in n for n in names):
        return "scanobjectnn"
    with contextlib.suppress(Exception):
        detect_modelnet_format(root)
        if names or any(root.glob("*/*.txt")) or any(root.glob("*/*/*.off")):
            return "modelnet"
    return "mesh_folder"


def load_point_cloud_dataset(
    path: str | os.PathLike,
    dataset_format: str = "auto",
    num_points: int = 1024,
    seed: int = 0,
    variant: str = "PB_T50_RS",
    cache_dir: str | None = None,
    on_missing: str = "error",
):
    """Load ``path`` with the matching loader; returns ``(DatasetDict, metadata)``.

    ``on_missing="skip"`` lets the ModelNet and ShapeNet loaders build from the files present when their split
    lists name absent ones (a partial download); the default is an error that lists them.
    """
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"--dataset_format must be one of {DATASET_FORMATS}, got {dataset_format!r}")
    fmt = detect_dataset_format(path) if dataset_format == "auto" else dataset_format
    if fmt == "modelnet":
        ds = load_modelnet(path, num_points=num_points, seed=seed, cache_dir=cache_dir, on_missing=on_missing)
    elif fmt == "scanobjectnn":
        ds = load_scanobjectnn(path, variant=variant, num_points=num_points, seed=seed, cache_dir=cache_dir)
    elif fmt == "shapenet_pairs":
        ds = load_shapenet_pairs(path, path, cache_dir=cache_dir, on_missing=on_missing)
    else:
        ds = load_mesh_folder(
            path, num_points=num_points, seed=seed, cache_dir=cache_dir, on_missing=on_missing
        )
    meta = dataset_metadata(ds)
    meta.setdefault("format", fmt)
    return ds, meta
