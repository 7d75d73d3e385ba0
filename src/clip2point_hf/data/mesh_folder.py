"""Folders of meshes -> point-cloud ``DatasetDict`` (``<class>/<split>/*.obj|off|ply|stl``).

Used directly by :func:`load_mesh_folder` (e.g. SHREC'16) and by :func:`~clip2point_hf.data.load_modelnet`
for ModelNet's OFF releases.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetFormatError
from ..mesh_io import sample_surface
from ..point_files import MESH_EXTENSIONS, read_mesh
from ..points_clip2point import UP_AXES
from ..seeding import seeded_rng
from ._common import check_choice, check_root, natural_key, normalize_np
from .builder import BuildOptions, build_dataset, point_cloud_features

__all__ = ["load_mesh_folder", "scan_mesh_folder"]

_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")


def _skip(name: str) -> bool:
    return name.startswith((".", "__")) or name == "__MACOSX"


def scan_mesh_folder(
    root: str | Path,
    *,
    extensions: Sequence[str] = MESH_EXTENSIONS,
    default_split: str = "train",
    on_missing: str = "error",
):
    """List ``root/<class>/<split>/**/<mesh>`` (or ``root/<class>/<mesh>`` -> ``default_split``).

    Hidden entries, ``__MACOSX`` folders and macOS ``._*`` resource files are ignored. A mesh file that cannot
    be read (a dangling link, no read permission) is an error listing every such file, or, with
    ``on_missing="skip"``, left out with a warning naming them.

    Returns:
        ``(classes, splits)``: sorted class folder names, and ``{split: [(relative_path, class), ...]}``
        in natural path order.
    """
    root = check_root(root)
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)

    check_choice(on_missing, ("error", "skip"), "on_missing")
    unreadable: list[Path] = []

    def is_mesh(p: Path) -> bool:
        if _skip(p.name) or p.suffix.lower() not in exts or p.is_dir():
            return False
        if not (p.is_file() and os.access(p, os.R_OK)):  # a dangling link, or no read permission
            unreadable.append(p)
            return False
        return True

    classes = sorted((d.name for d in root.iterdir() if d.is_dir() and not _skip(d.name)), key=natural_key)
    if not classes:
        raise DatasetFormatError(root, "no class folders (expected <root>/<class>/<split>/*.obj|off|ply|stl)")
    splits: dict[str, list[tuple[str, str]]] = {}
    for cls in classes:
        cdir = root / cls
        for entry in cdir.iterdir():
            if _skip(entry.name):
                continue
            if entry.is_dir():
                split = entry.name
                files = [
                    p
                    for p in entry.rglob("*")
                    if is_mesh(p) and not any(_skip(q) for q in p.relative_to(entry).parts)
                ]
            elif is_mesh(entry):
                split, files = default_split, [entry]
            else:
                continue
            if files and not _SPLIT_NAME.match(split):
                raise DatasetFormatError(
                    entry, f"folder name {split!r} is not a valid split name (letters, digits, _)"
                )
            splits.setdefault(split, []).extend((p.relative_to(root).as_posix(), cls) for p in files)
    if unreadable:
        names = [p.relative_to(root).as_posix() for p in unreadable]
        if on_missing == "error":
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise DatasetFormatError(
                root,
                f"{len(names)} mesh files cannot be read (dangling links or no read permission): {shown}; "
                "pass on_missing='skip' to leave them out",
            )
        warnings.warn(
            f"{root}: skipping {len(names)} unreadable mesh files (dangling links?): {names}", stacklevel=2
        )
    splits = {s: sorted(items, key=lambda it: natural_key(it[0])) for s, items in splits.items() if items}
    if not splits:
        raise DatasetFormatError(root, f"no mesh files with extensions {list(exts)} under any class folder")
    return classes, splits


def _mesh_example(task):
    root, rel, label, opts = task
    path = Path(root) / rel
    mesh = read_mesh(path)
    pts, normals = sample_surface(
        mesh, opts.num_points, seeded_rng(opts.seed, rel), return_normals=True, path=path
    )
    if opts.normalize:
        pts = normalize_np(pts)
    ex = {"points": pts, "label": label, "name": Path(rel).stem, "path": rel}
    if opts.with_normals:
        ex["normals"] = normals
    return ex


def build_mesh_dataset(
    kind: str,
    root: Path,
    class_names: Sequence[str],
    splits: dict[str, list[tuple[str, str]]],
    opts: BuildOptions,
    *,
    meta: dict,
    description: str,
):
    """Sample every mesh once (seeded by its relative path) and cache the ``DatasetDict``."""
    label_of = {c: i for i, c in enumerate(class_names)}
    params = dict(
        num_points=opts.num_points,
        seed=opts.seed,
        normalize=opts.normalize,
        with_normals=opts.with_normals,
        classes=list(class_names),
        splits={s: [rel for rel, _ in items] for s, items in splits.items()},
    )
    return build_dataset(
        kind,
        _mesh_example,
        {s: [(str(root), rel, label_of[cls], opts) for rel, cls in items] for s, items in splits.items()},
        point_cloud_features(opts.num_points, class_names, opts.with_normals),
        opts,
        params=params,
        root=root,
        files=[root / rel for items in splits.values() for rel, _ in items],
        meta=dict(meta, sampling="surface_area_weighted"),
        description=description,
    )


def load_mesh_folder(
    root: str | Path,
    num_points: int = 1024,
    seed: int = 0,
    *,
    up_axis: str = "y",
    extensions: Sequence[str] = MESH_EXTENSIONS,
    default_split: str = "train",
    normalize: bool = True,
    with_normals: bool = False,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    rebuild: bool = False,
    on_missing: str = "error",
):
    """Load a folder of meshes laid out as ``<class>/<split>/*.obj|off|ply|stl`` as a ``DatasetDict``.

    Every mesh is sampled once: ``num_points`` area-weighted surface points, seeded by ``seed`` and the
    file's path relative to ``root`` (so clouds do not depend on file order, ``num_proc`` or machine),
    then (``normalize=True``) centred and scaled into the unit sphere. The result is cached (see
    :mod:`clip2point_hf.data.cache`); later calls with the same files and arguments load it from disk.

    Args:
        root: the folder; class folders directly below it. Meshes directly inside a class folder go to
            ``default_split``.
        num_points: points per cloud.
        seed: global sampling seed.
        up_axis: which axis of the files points up, recorded in the metadata (``dataset_metadata``),
            never applied to the data. Default ``"y"`` (the OBJ/glTF convention); SHREC'16's meshes have
            no consistent up direction (each is aligned with its largest extent along x).
        extensions: mesh extensions to pick up (case-insensitive).
        normalize: centre and scale each cloud into the unit sphere.
        with_normals: add a ``normals`` column (unit face normals of the sampled points).
        cache_dir: cache root (default ``$CLIP2POINT_HF_CACHE`` or ``$HF_DATASETS_CACHE/clip2point_hf``).
        num_proc: build processes (default: all cores, at most 8, for 64 meshes or more).
        rebuild: ignore an existing cache entry and build again.
        on_missing: mesh files that cannot be read (dangling links, no permission): ``"error"`` lists them,
            ``"skip"`` leaves them out with a warning naming them.

    Returns:
        ``DatasetDict`` with one ``Dataset`` per split folder; columns ``points`` float32
        ``(num_points, 3)``, ``label`` ``ClassLabel`` (class folders, sorted), ``name`` (file stem),
        ``path`` (path relative to ``root``).

    Raises:
        DatasetFormatError: a missing root, no class folders or meshes, or an unreadable/empty/zero-area/
            NaN mesh (the message names the file); nothing is cached then.
    """
    opts = BuildOptions.check(
        num_points,
        seed,
        normalize=normalize,
        with_normals=with_normals,
        cache_dir=cache_dir,
        num_proc=num_proc,
        rebuild=rebuild,
    )
    check_choice(up_axis, UP_AXES, "up_axis")
    root = check_root(root, "mesh folder")
    classes, splits = scan_mesh_folder(
        root, extensions=extensions, default_split=default_split, on_missing=on_missing
    )
    meta = {
        "dataset": root.name,
        "source": "mesh_folder",
        "format": "mesh",
        "up_axis": up_axis,
        "extensions": sorted({Path(rel).suffix.lower() for items in splits.values() for rel, _ in items}),
    }
    description = (
        f"Point clouds sampled from the meshes of {root.name} ({len(classes)} classes), "
        f"{opts.num_points} area-weighted surface points per mesh, seed {opts.seed}. Up axis: {up_axis}."
    )
    return build_mesh_dataset("mesh_folder", root, classes, splits, opts, meta=meta, description=description)
