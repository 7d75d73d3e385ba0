"""PointNet-style h5 files (``data`` ``(N, P, 3)`` float, ``label`` ``(N,)`` or ``(N, 1)`` int), read in
chunks: the format of ModelNet's ``modelnet40_ply_hdf5_2048`` release and of ScanObjectNN."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError
from ..seeding import seeded_rng
from ._common import normalize_np, subsample_indices
from .builder import BuildOptions, build_dataset, point_cloud_features

__all__ = ["H5_CHUNK", "build_h5_dataset", "check_h5", "h5_examples", "h5_tasks"]

#: Clouds read per task (one h5 slice, sub-sampled as a batch).
H5_CHUNK = 256


def check_h5(path: Path) -> tuple[int, int, np.ndarray]:
    """Check ``path`` has ``data`` ``(N, P, 3+)`` and ``label`` ``(N,)``; returns ``(N, P, labels)``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            absent = [k for k in ("data", "label") if k not in f]
            if absent:
                raise DatasetFormatError(path, f"h5 file lacks key(s) {absent} (has {sorted(f.keys())})")
            data, label = f["data"], f["label"]
            if data.ndim != 3 or data.shape[2] < 3:
                raise DatasetFormatError(path, f"'data' has shape {data.shape}, expected (N, P, 3)")
            if label.shape[0] != data.shape[0] or label.size != data.shape[0]:
                raise DatasetFormatError(
                    path, f"'label' has shape {label.shape}, expected ({data.shape[0]},)"
                )
            return int(data.shape[0]), int(data.shape[1]), np.asarray(label).reshape(-1).astype(np.int64)
    except DatasetFormatError:
        raise
    except OSError as exc:
        raise DatasetFormatError(path, f"not a readable HDF5 file ({exc})") from None


def h5_tasks(
    root: Path,
    path: Path,
    num_samples: int,
    num_classes: int,
    opts: BuildOptions,
    *,
    prefix: str,
    names: Sequence[str] | None = None,
) -> list[tuple]:
    """The :func:`h5_examples` tasks of one file: ``H5_CHUNK`` samples each. Examples are named by
    ``names`` (one per sample) or ``<prefix>_<index>``."""
    rel = path.relative_to(root).as_posix()
    return [
        (
            str(root),
            rel,
            a,
            min(num_samples, a + H5_CHUNK),
            list(names[a : a + H5_CHUNK]) if names else None,
            num_classes,
            opts,
            prefix,
        )
        for a in range(0, num_samples, H5_CHUNK)
    ]


def h5_examples(task) -> list[dict]:
    """Worker: one chunk of an h5 file -> a list of examples (batched FPS when ``sampling="fps"``)."""
    import h5py

    root, rel, start, stop, names, num_classes, opts, prefix = task
    num_points, sampling = opts.num_points, opts.sampling
    path = Path(root) / rel
    with h5py.File(path, "r") as f:
        data = np.asarray(f["data"][start:stop, :, :3], dtype=np.float32)
        labels = np.asarray(f["label"][start:stop]).reshape(-1).astype(np.int64)
    for k in range(len(data)):
        if not np.isfinite(data[k]).all():
            raise DatasetFormatError(path, f"sample {start + k}: NaN or infinite coordinates")
        if not 0 <= labels[k] < num_classes:
            raise DatasetFormatError(
                path, f"sample {start + k}: label {labels[k]} outside [0, {num_classes})"
            )
    if num_points > data.shape[1]:
        raise DatasetFormatError(path, f"clouds have {data.shape[1]} points, {num_points} requested")
    if sampling == "random":
        idx = np.stack(
            [
                subsample_indices(data[k], num_points, "random", seeded_rng(opts.seed, f"{rel}:{start + k}"))
                for k in range(len(data))
            ]
        )
    else:
        idx = subsample_indices(data, num_points, sampling, None)
    pts = np.take_along_axis(data, idx[..., None], axis=1)
    out = []
    for k in range(len(pts)):
        cloud = normalize_np(pts[k]) if opts.normalize else pts[k]
        i = start + k
        name = names[k] if names else f"{prefix}_{i:05d}"
        out.append({"points": cloud, "label": int(labels[k]), "name": name, "path": f"{rel}:{i}"})
    return out


def build_h5_dataset(
    kind: str,
    root: Path,
    tasks: Mapping[str, list[tuple]],
    class_names: Sequence[str],
    opts: BuildOptions,
    *,
    params: Mapping,
    files: Sequence[Path],
    meta: Mapping,
    description: str,
):
    """:func:`~clip2point_hf.data.builder.build_dataset` over :func:`h5_tasks` chunks (``format`` hdf5)."""
    return build_dataset(
        kind,
        h5_examples,
        tasks,
        point_cloud_features(opts.num_points, class_names),
        opts,
        params=params,
        root=root,
        files=files,
        meta={"format": "hdf5", **meta},
        description=description,
        num_examples={s: sum(stop - start for _, _, start, stop, *_ in t) for s, t in tasks.items()},
        task_weight=64,
    )
