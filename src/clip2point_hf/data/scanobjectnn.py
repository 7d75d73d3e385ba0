"""ScanObjectNN (the h5 release) as a ``DatasetDict``: OBJ_BG, OBJ_ONLY and PB_T50_RS by name.

Release layout (``h5_files/``)::

    main_split/training_objectdataset.h5                              OBJ_BG
    main_split/test_objectdataset.h5
    main_split_nobg/training_objectdataset.h5                         OBJ_ONLY
    main_split_nobg/test_objectdataset.h5
    main_split/training_objectdataset_augmentedrot_scale75.h5         PB_T50_RS (hardest)
    main_split/test_objectdataset_augmentedrot_scale75.h5

Each file has ``data`` (N, 2048, 3) float32 and ``label`` (N,) keys (and ``mask``, unused). The
clouds are used as stored (y up) and cut to 1024 points by farthest-point sampling (docs/design.md, "Datasets").
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetFormatError
from ._common import check_root
from .builder import BuildOptions
from .hdf5 import build_h5_dataset, check_h5, h5_tasks
from .names import SCANOBJECTNN_CLASSES

__all__ = ["SCANOBJECTNN_VARIANTS", "load_scanobjectnn", "scanobjectnn_files"]

#: variant -> (sub-folder, training file, test file)
SCANOBJECTNN_VARIANTS: dict[str, tuple[str, str, str]] = {
    "OBJ_BG": ("main_split", "training_objectdataset.h5", "test_objectdataset.h5"),
    "OBJ_ONLY": ("main_split_nobg", "training_objectdataset.h5", "test_objectdataset.h5"),
    "PB_T50_RS": (
        "main_split",
        "training_objectdataset_augmentedrot_scale75.h5",
        "test_objectdataset_augmentedrot_scale75.h5",
    ),
}
_ALIASES = {"HARDEST": "PB_T50_RS", "OBJBG": "OBJ_BG", "OBJONLY": "OBJ_ONLY", "PBT50RS": "PB_T50_RS"}


def _variant(variant: str, root) -> str:
    key = str(variant).upper().replace("-", "_")
    key = _ALIASES.get(key.replace("_", ""), key)
    if key not in SCANOBJECTNN_VARIANTS:
        raise DatasetFormatError(
            root, f"unknown ScanObjectNN variant {variant!r} (expected one of {list(SCANOBJECTNN_VARIANTS)})"
        )
    return key


def scanobjectnn_files(root: str | Path, variant: str = "PB_T50_RS") -> dict[str, Path]:
    """``{"train": path, "test": path}`` of a variant's h5 files under ``root``.

    ``root`` may be the release's ``h5_files`` folder, its parent, or the ``main_split``/
    ``main_split_nobg`` folder itself.
    """
    root = check_root(root, "ScanObjectNN root")
    variant = _variant(variant, root)
    sub, train, test = SCANOBJECTNN_VARIANTS[variant]
    out = {}
    for split, fname in (("train", train), ("test", test)):
        candidates = [root / sub / fname, root / "h5_files" / sub / fname]
        if root.name == sub:
            candidates.insert(0, root / fname)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DatasetFormatError(
                root, f"{variant} {split} file not found (looked for {', '.join(str(c) for c in candidates)})"
            )
        out[split] = found
    return out


def load_scanobjectnn(
    root: str | Path,
    variant: str = "PB_T50_RS",
    num_points: int = 1024,
    seed: int = 0,
    *,
    sampling: str = "fps",
    normalize: bool = True,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    rebuild: bool = False,
):
    """A ScanObjectNN variant as a ``DatasetDict`` (``train``/``test``), built once and cached.

    Args:
        root: the ``h5_files`` folder (or its parent, or ``main_split``/``main_split_nobg``).
        variant: ``"OBJ_BG"``, ``"OBJ_ONLY"`` or ``"PB_T50_RS"`` (case-insensitive; ``"hardest"`` too).
        num_points: points per cloud (the files hold 2048).
        seed: seed for ``sampling="random"``.
        sampling: ``"fps"`` (farthest-point sampling from index 0, deterministic; the default, as in the
            reference), ``"first"`` or ``"random"``.
        normalize: centre and scale each cloud into the unit sphere.
        cache_dir, num_proc, rebuild: see :func:`~clip2point_hf.data.load_mesh_folder`.

    Returns:
        ``DatasetDict``: ``points`` float32 ``(num_points, 3)``, ``label`` ``ClassLabel`` (15 classes),
        ``name`` (``<variant>_<split>_<index>``), ``path`` (``<file relative to root>:<index>``).
        Up axis ``y`` (in the metadata).

    Raises:
        DatasetFormatError: an unknown variant, a missing file, an h5 file without ``data``/``label``,
            labels out of range or NaN coordinates (the message names the file).
    """
    opts = BuildOptions.check(
        num_points,
        seed,
        sampling=sampling,
        normalize=normalize,
        cache_dir=cache_dir,
        num_proc=num_proc,
        rebuild=rebuild,
    )
    root = check_root(root, "ScanObjectNN root")
    variant = _variant(variant, root)
    files = scanobjectnn_files(root, variant)
    classes = list(SCANOBJECTNN_CLASSES)
    tasks = {}
    for split, path in files.items():
        n, npts, labels = check_h5(path)
        if npts < opts.num_points:
            raise DatasetFormatError(path, f"clouds have {npts} points, {opts.num_points} requested")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DatasetFormatError(
                path, f"labels outside [0, {len(classes)}): min {labels.min()}, max {labels.max()}"
            )
        tasks[split] = h5_tasks(root, path, n, len(classes), opts, prefix=f"{variant}_{split}")
    return build_h5_dataset(
        "scanobjectnn",
        root,
        tasks,
        classes,
        opts,
        params=dict(variant=variant, **opts.settings()),
        files=list(files.values()),
        meta={
            "dataset": f"ScanObjectNN {variant}",
            "source": "ScanObjectNN h5_files",
            "variant": variant,
            "up_axis": "y",
        },
        description=(
            f"ScanObjectNN {variant}: {opts.num_points} points per object ({sampling} from 2048). Up axis: y."
        ),
    )
