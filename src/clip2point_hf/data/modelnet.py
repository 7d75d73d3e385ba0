"""ModelNet10 / ModelNet40 from the three releases people download.

- ``"off"``: the original or the manually aligned OFF release, ``<class>/{train,test}/*.off``
  (OFF headers glued to the counts are read). Clouds are sampled from the mesh surfaces
  (area-weighted, seeded per file). Up axis: ``z``.
- ``"normal_resampled"``: ``modelnet40_normal_resampled`` (``<class>/<class>_<nnnn>.txt`` with
  ``x,y,z,nx,ny,nz`` lines, ``modelnet{10,40}_shape_names.txt`` and ``modelnet{10,40}_{train,test}.txt``).
  Up axis: ``y`` (checked on the files: tall classes such as person, bottle and lamp extend along y).
- ``"hdf5"``: PointNet's ``modelnet40_ply_hdf5_2048`` (``ply_data_{train,test}<k>.h5`` with keys
  ``data`` (N, 2048, 3) and ``label``, ``{train,test}_files.txt``, ``shape_names.txt``,
  ``ply_data_*_id2file.json``). Up axis: ``y`` (PointNet rotates these clouds about y).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError
from ..points_clip2point import UP_AXES
from ..seeding import seeded_rng
from ._common import (
    check_choice,
    check_finite,
    check_root,
    handle_missing,
    natural_key,
    normalize_np,
    read_list_file,
    read_split_list,
    subsample_indices,
)
from .builder import BuildOptions, build_dataset, point_cloud_features
from .hdf5 import build_h5_dataset, check_h5, h5_tasks
from .mesh_folder import build_mesh_dataset, scan_mesh_folder
from .names import MODELNET10_CLASSES, MODELNET40_CLASSES

__all__ = ["MODELNET_FORMATS", "MODELNET_UP_AXIS", "detect_modelnet_format", "load_modelnet"]

MODELNET_FORMATS = ("off", "normal_resampled", "hdf5")
#: The up axis of each release's coordinates (recorded in the metadata, never applied).
MODELNET_UP_AXIS = {"off": "z", "normal_resampled": "y", "hdf5": "y"}


def _h5_dir(root: Path) -> Path | None:
    for d in (root, root / "modelnet40_ply_hdf5_2048"):
        if d.is_dir() and any(d.glob("*.h5")):
            return d
    return None


def detect_modelnet_format(root: str | Path) -> str:
    """``"hdf5"``, ``"normal_resampled"`` or ``"off"``, from the files under ``root``."""
    root = check_root(root, "ModelNet root")
    if _h5_dir(root) is not None:
        return "hdf5"
    if any(root.glob("modelnet*_shape_names.txt")):
        return "normal_resampled"
    for cls in root.iterdir():
        if cls.is_dir() and not cls.name.startswith((".", "__")):
            for split in ("train", "test"):
                d = cls / split
                if d.is_dir() and any(p.suffix.lower() == ".off" for p in d.iterdir()):
                    return "off"
    raise DatasetFormatError(
        root,
        "not a ModelNet release: found no *.h5 files (modelnet40_ply_hdf5_2048), no "
        "modelnet*_shape_names.txt (modelnet40_normal_resampled) and no <class>/{train,test}/*.off",
    )


def _descend(root: Path) -> Path:
    """The extraction folder of a zip often holds just ``ModelNet40/`` (plus ``__MACOSX``): use it."""
    try:
        detect_modelnet_format(root)
        return root
    except DatasetFormatError:
        subs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "__"))]
        if len(subs) == 1 and subs[0].name.lower().startswith("modelnet"):
            return subs[0]
        return root


def _dataset_name(num_classes: int) -> str:
    return f"ModelNet{num_classes}" if num_classes in (10, 40) else f"ModelNet ({num_classes} classes)"


def load_modelnet(
    root: str | Path,
    num_points: int = 1024,
    seed: int = 0,
    *,
    format: str = "auto",
    num_classes: int | None = None,
    sampling: str = "first",
    up_axis: str | None = None,
    normalize: bool = True,
    with_normals: bool = False,
    on_missing: str = "error",
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    rebuild: bool = False,
):
    """ModelNet10/40 as a ``DatasetDict`` with ``train`` and ``test`` splits, built once and cached.

    Args:
        root: the release folder (``ModelNet40/``, ``modelnet40_normal_resampled/`` or
            ``modelnet40_ply_hdf5_2048/`` or its parent).
        num_points: points per cloud.
        seed: seed of the mesh surface sampling (OFF) and of ``sampling="random"``.
        format: ``"auto"`` (detected from the files), ``"off"``, ``"normal_resampled"`` or ``"hdf5"``.
        num_classes: ``10`` or ``40`` for ``normal_resampled`` (which split lists and names to use;
            default 40 when its lists are present). OFF: the class folders present; hdf5: the labels.
        sampling: how pre-sampled clouds (``normal_resampled``: 10,000 points, ``hdf5``: 2048) are cut
            to ``num_points``: ``"first"`` (the first points of the file, as the PointNet++/Point-BERT
            loaders and the CLIP2Point reference do; default), ``"fps"`` (farthest-point sampling from
            index 0, deterministic) or ``"random"`` (seeded by ``seed`` and the file). OFF meshes are
            always sampled area-weighted from the surface.
        up_axis: recorded up axis; default per release (:data:`MODELNET_UP_AXIS`).
        normalize: centre and scale each cloud into the unit sphere.
        with_normals: add a ``normals`` column (OFF: face normals; ``normal_resampled``: the file's
            normals; not available for ``hdf5``).
        on_missing: files named by a split list but absent: ``"error"`` (default; the error lists how
            many and which) or ``"skip"`` (a warning gives the count).
        cache_dir, num_proc, rebuild: see :func:`~clip2point_hf.data.load_mesh_folder`.

    Returns:
        ``DatasetDict``: ``points`` float32 ``(num_points, 3)``, ``label`` ``ClassLabel`` (folder
        names such as ``night_stand``; :func:`~clip2point_hf.prompts.prompt_names` gives "night stand"),
        ``name``, ``path`` (relative to ``root``); metadata via
        :func:`~clip2point_hf.data.dataset_metadata` (``up_axis``, ``format``, ...).
    """
    opts = BuildOptions.check(
        num_points,
        seed,
        sampling=sampling,
        normalize=normalize,
        with_normals=with_normals,
        on_missing=on_missing,
        cache_dir=cache_dir,
        num_proc=num_proc,
        rebuild=rebuild,
    )
    root = _descend(check_root(root, "ModelNet root"))
    fmt = (
        detect_modelnet_format(root) if format == "auto" else check_choice(format, MODELNET_FORMATS, "format")
    )
    if up_axis is None:
        up_axis = MODELNET_UP_AXIS[fmt]
    check_choice(up_axis, UP_AXES, "up_axis")
    if fmt == "off":
        return _load_off(root, opts, up_axis)
    if fmt == "normal_resampled":
        return _load_txt(root, opts, up_axis, num_classes)
    if with_normals:
        raise DatasetFormatError(
            root, "with_normals=True is not available for the hdf5 release (no normals kept)"
        )
    return _load_h5(root, opts, up_axis)


# ----------------------------------------------------------------------------------------------- OFF


def _load_off(root: Path, opts: BuildOptions, up_axis: str):
    classes, splits = scan_mesh_folder(root, extensions=(".off",))
    unknown = set(splits) - {"train", "test"}
    if unknown:
        raise DatasetFormatError(
            root, f"unexpected split folders {sorted(unknown)} (ModelNet has train and test)"
        )
    for canon in (MODELNET40_CLASSES, MODELNET10_CLASSES):
        if set(classes) <= set(canon) and len(classes) > len(canon) // 2:
            classes = list(canon)  # a partial download keeps the canonical label order
            break
    name = _dataset_name(len(classes))
    meta = {"dataset": name, "source": "ModelNet OFF meshes", "format": "off", "up_axis": up_axis}
    description = (
        f"{name} point clouds sampled once from the OFF meshes ({opts.num_points} area-weighted surface "
        f"points per mesh, seed {opts.seed}). Up axis: {up_axis}."
    )
    return build_mesh_dataset("modelnet_off", root, classes, splits, opts, meta=meta, description=description)


# ------------------------------------------------------------------------------- normal_resampled txt


def read_point_txt(path: Path, max_points: int | None = None) -> np.ndarray:
    """Read ``x,y,z[,nx,ny,nz]`` lines (comma or whitespace separated); only the first ``max_points``."""
    rows = []
    try:
        with open(path, encoding="latin-1") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                rows.append(line.replace(",", " ").split())
                if max_points is not None and len(rows) >= max_points:
                    break
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not rows:
        raise DatasetFormatError(path, "empty point file")
    width = len(rows[0])
    for k, r in enumerate(rows):
        if len(r) != width:
            raise DatasetFormatError(
                path, f"line {k + 1} has {len(r)} values, line 1 has {width} (truncated?)"
            )
    if width < 3:
        raise DatasetFormatError(path, f"lines have {width} values, need at least x, y, z")
    try:
        arr = np.array(rows, dtype=np.float32)
    except ValueError as exc:
        raise DatasetFormatError(path, f"corrupt point data ({exc})") from None
    return arr


def _txt_example(task):
    root, rel, label, opts = task
    num_points, sampling = opts.num_points, opts.sampling
    path = Path(root) / rel
    arr = read_point_txt(path, num_points if sampling == "first" else None)
    if len(arr) < num_points:
        raise DatasetFormatError(path, f"has only {len(arr)} points, {num_points} needed")
    if opts.with_normals and arr.shape[1] < 6:
        raise DatasetFormatError(path, f"has {arr.shape[1]} values per line, no normals (6 needed)")
    check_finite(arr[:, :3], path)
    idx = subsample_indices(arr[:, :3], num_points, sampling, seeded_rng(opts.seed, rel))
    pts = arr[idx, :3]
    if opts.normalize:
        pts = normalize_np(pts)
    ex = {"points": pts, "label": label, "name": Path(rel).stem, "path": rel}
    if opts.with_normals:
        ex["normals"] = arr[idx, 3:6]
    return ex


def _load_txt(root: Path, opts: BuildOptions, up_axis: str, num_classes: int | None):
    available = sorted(
        int(m.group(1))
        for p in root.glob("modelnet*_shape_names.txt")
        if (m := re.match(r"modelnet(\d+)_shape_names\.txt$", p.name))
    )
    if num_classes is None:
        num_classes = 40 if 40 in available else available[0]
    if num_classes not in available:
        raise DatasetFormatError(root / f"modelnet{num_classes}_shape_names.txt", "class-name list not found")
    names_file = root / f"modelnet{num_classes}_shape_names.txt"
    classes = read_list_file(names_file)
    label_of = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list[tuple[str, int]]] = {}
    list_files = [names_file]
    skipped = {}
    for split in ("train", "test"):
        lst = root / f"modelnet{num_classes}_{split}.txt"
        entries = read_split_list(lst, split)
        list_files.append(lst)
        items, missing = [], []
        for entry in entries:
            stem = entry[:-4] if entry.endswith(".txt") else entry
            cls = stem.rsplit("_", 1)[0] if "_" in stem else stem
            if cls not in label_of:
                raise DatasetFormatError(lst, f"entry {entry!r}: class {cls!r} is not in {names_file.name}")
            rel = f"{cls}/{stem}.txt"
            if (root / rel).is_file():
                items.append((rel, label_of[cls]))
            else:
                missing.append(rel)
        handle_missing(missing, len(entries), on_missing=opts.on_missing, where=lst)
        skipped[split] = len(missing)
        splits[split] = items
    name = _dataset_name(num_classes)
    params = dict(
        fmt="normal_resampled",
        **opts.settings(),
        with_normals=opts.with_normals,
        classes=classes,
        splits={s: [r for r, _ in v] for s, v in splits.items()},
    )
    return build_dataset(
        "modelnet_txt",
        _txt_example,
        {s: [(str(root), rel, lab, opts) for rel, lab in items] for s, items in splits.items()},
        point_cloud_features(opts.num_points, classes, opts.with_normals),
        opts,
        params=params,
        root=root,
        files=list_files + [root / r for v in splits.values() for r, _ in v],
        meta={
            "dataset": name,
            "source": "modelnet40_normal_resampled",
            "format": "normal_resampled",
            "up_axis": up_axis,
            "missing_skipped": skipped,
        },
        description=(
            f"{name} from the modelnet40_normal_resampled release: {opts.num_points} points per object "
            f"({opts.sampling}). Up axis: {up_axis}."
        ),
    )


# ---------------------------------------------------------------------------------------------- hdf5


def _h5_split_files(h5dir: Path, split: str, on_missing: str) -> list[Path]:
    lst = h5dir / f"{split}_files.txt"
    if lst.is_file():
        entries = read_list_file(lst)
        present, missing = [], []
        for e in entries:
            p = h5dir / Path(e).name
            (present if p.is_file() else missing).append(p if p.is_file() else Path(e).name)
        handle_missing([str(m) for m in missing], len(entries), on_missing=on_missing, where=lst)
        return present
    files = sorted(
        (p for p in h5dir.glob("*.h5") if re.search(rf"(^|_){split}\d*\.h5$", p.name)),
        key=lambda p: natural_key(p.name),
    )
    return files


def _id2file(h5: Path) -> list[str] | None:
    m = re.match(r"(.*?)(\d+)\.h5$", h5.name)
    if not m:
        return None
    js = h5.with_name(f"{m.group(1)}_{m.group(2)}_id2file.json")
    if not js.is_file():
        return None
    try:
        entries = json.loads(js.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(js, f"unreadable id-to-file list ({exc})") from None
    return [Path(str(e)).stem for e in entries]


def _load_h5(root: Path, opts: BuildOptions, up_axis: str):
    h5dir = _h5_dir(root)
    if h5dir is None:
        raise DatasetFormatError(root, "no *.h5 files found")
    files = {s: _h5_split_files(h5dir, s, opts.on_missing) for s in ("train", "test")}
    for s, fs in files.items():
        if not fs:
            raise DatasetFormatError(h5dir, f"no h5 files for the '{s}' split (ply_data_{s}<k>.h5)")
    info = {p: check_h5(p) for fs in files.values() for p in fs}
    max_label = max(int(lab.max(initial=-1)) for _, _, lab in info.values())
    names_file = h5dir / "shape_names.txt"
    if names_file.is_file():
        classes = read_list_file(names_file)
    else:
        classes = list(MODELNET10_CLASSES if max_label < 10 and "10" in h5dir.name else MODELNET40_CLASSES)
    if max_label >= len(classes):
        raise DatasetFormatError(
            h5dir, f"labels go up to {max_label} but there are {len(classes)} class names"
        )
    for p, (_, npts, _) in info.items():
        if npts < opts.num_points:
            raise DatasetFormatError(p, f"clouds have {npts} points, {opts.num_points} requested")
    tasks = {}
    for s, fs in files.items():
        tasks[s] = []
        for p in fs:
            n = info[p][0]
            names = _id2file(p)
            if names is not None and len(names) != n:
                names = None
            tasks[s] += h5_tasks(root, p, n, len(classes), opts, prefix=p.stem, names=names)
    name = _dataset_name(len(classes))
    all_files = [p for fs in files.values() for p in fs] + [
        q for q in h5dir.iterdir() if q.suffix in (".txt", ".json")
    ]
    return build_h5_dataset(
        "modelnet_h5",
        root,
        tasks,
        classes,
        opts,
        params=dict(fmt="hdf5", **opts.settings(), classes=classes),
        files=sorted(all_files),
        meta={"dataset": name, "source": "modelnet40_ply_hdf5_2048", "up_axis": up_axis},
        description=(
            f"{name} from PointNet's modelnet40_ply_hdf5_2048: {opts.num_points} points per object "
            f"({opts.sampling}). Up axis: {up_axis}."
        ),
    )
