"""Which loader reads a dataset folder, and loading it through that loader (what the scripts' ``--dataset``
and ``--dataset_format`` arguments mean)."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

from ..errors import DatasetFormatError
from ..point_files import MESH_EXTENSIONS
from .cache import dataset_metadata
from .mesh_folder import load_mesh_folder
from .modelnet import detect_modelnet_format, load_modelnet
from .scanobjectnn import load_scanobjectnn
from .shapenet import PAIRS_META_FILE, load_shapenet_pairs

__all__ = ["DATASET_FORMATS", "detect_dataset_format", "load_point_cloud_dataset"]

#: ``--dataset_format`` values: ``auto`` detects the format with :func:`detect_dataset_format`.
DATASET_FORMATS = ("auto", "modelnet", "scanobjectnn", "mesh_folder", "shapenet_pairs")
#: Folder names of splits in the ``<class>/<split>/`` layouts: a folder holding them is one class of a dataset.
SPLIT_FOLDERS = {"train", "test"}


def detect_dataset_format(path: str | os.PathLike) -> str:
    """Which loader of :mod:`clip2point_hf.data` reads ``path``, judged from all of its files.

    OFF files beside other mesh types are a mesh folder (its loader reads them all; ModelNet's reads only
    the OFF files). A folder that fits several loaders (e.g. h5 files beside meshes) is refused with the
    choices, rather than read partly by one of them.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if {child.name for child in root.iterdir() if child.is_dir()} & SPLIT_FOLDERS:
        _raise_if_the_dataset_is_above(root)  # split folders directly inside: a class folder of a dataset
    found = _format_evidence(root)
    if len(found) == 1:
        return next(iter(found))
    if not found:
        _raise_if_the_dataset_is_nearby(root)
        return "mesh_folder"  # its loader says what it expected
    choices = "; ".join(f"--dataset_format {fmt} ({why})" for fmt, why in found.items())
    raise DatasetFormatError(root, f"the folder fits several dataset formats; choose one: {choices}")


def _raise_if_the_dataset_is_nearby(root: Path) -> None:
    """A folder with no dataset of its own, but one just below it (``X/ModelNet10/``) or just above it (a class
    folder of one), is named in the error: that is where the user's dataset probably is."""
    below = {
        child: evidence
        for child in sorted(root.iterdir())
        if child.is_dir() and (evidence := _format_evidence(child))
    }
    if len(below) == 1:
        child, evidence = next(iter(below.items()))
        fmt, why = next(iter(evidence.items()))
        raise DatasetFormatError(
            root,
            f"holds no dataset itself, but {child} looks like one ({fmt}: {why}); pass --dataset {child}",
        )
    if below:
        candidates = ", ".join(str(child) for child in below)
        raise DatasetFormatError(
            root, f"holds no dataset itself; its sub-folders {candidates} look like datasets: pass one"
        )
    _raise_if_the_dataset_is_above(root)


def _raise_if_the_dataset_is_above(root: Path) -> None:
    above = root.parent
    if above != root and (evidence := _format_evidence(above)):
        fmt, why = next(iter(evidence.items()))
        raise DatasetFormatError(
            root, f"looks like one folder of the dataset at {above} ({fmt}: {why}); pass --dataset {above}"
        )


def _format_evidence(root: Path) -> dict[str, str]:
    """``{format: what in the folder points to it}`` for every loader the folder could be meant for."""
    found: dict[str, str] = {}
    if (root / PAIRS_META_FILE).is_file() or (root / "shapenet_pc").is_dir():
        found["shapenet_pairs"] = f"{PAIRS_META_FILE} or shapenet_pc/"
    h5 = [p.name.lower() for p in root.rglob("*.h5")]
    if any("objectdataset" in n for n in h5):
        found["scanobjectnn"] = "*objectdataset*.h5 files"
    meshes = Counter(
        p.suffix.lower() for p in root.glob("*/*/*") if p.suffix.lower() in MESH_EXTENSIONS and p.is_file()
    )
    meshes.update(p.suffix.lower() for p in root.glob("*/*") if p.suffix.lower() in MESH_EXTENSIONS)
    with contextlib.suppress(DatasetFormatError):
        kind = detect_modelnet_format(root)
        if kind == "hdf5" and any("objectdataset" not in n for n in h5):
            found["modelnet"] = "ModelNet *.h5 files"
        elif kind == "normal_resampled":
            found["modelnet"] = "modelnet*_shape_names.txt"
        elif kind == "off":
            found["modelnet"] = f"{meshes['.off']} <class>/<split>/*.off files (ModelNet reads only .off)"
    if set(meshes) - {".off"}:
        # Other mesh types beside OFF: not ModelNet; the mesh-folder loader reads every file, OFF included.
        if found.get("modelnet", "").endswith("(ModelNet reads only .off)"):
            del found["modelnet"]
        found["mesh_folder"] = "mesh files: " + ", ".join(f"{n} {ext}" for ext, n in sorted(meshes.items()))
    elif meshes and "modelnet" not in found:
        found["mesh_folder"] = f"{meshes['.off']} .off files"
    return found


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
