"""ShapeNet-55 image-depth pre-training pairs: Point-BERT's clouds plus the 10-view renderings.

Layout read (also what :func:`~clip2point_hf.data.build_render_pairs` writes)::

    <pc_root>/shapenet_pc/<synset>-<model>.npy          (8192, 3) float clouds   (or <pc_root>/*.npy)
    <pc_root>/ShapeNet-55/{train,test}.txt              lines "<synset>-<model>.npy"  (or <pc_root>/*.txt)
    <render_root>/<synset>_<model>/{0..9}.png           224 x 224 views           (or <render_root>/rendering/...)

The cached dataset holds each object's cloud, the paths of its views (an ``Image`` list: decoded
lazily, embedded by ``push_to_hub``) and its class. The reference's pairing -- one random view and
1024 random points per object per step -- is
:class:`~clip2point_hf.data.transforms.PretrainingPairTransform`, applied on the fly
(:class:`~clip2point_hf.data.KeyedDataset`), never cached.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError
from ..seeding import seeded_rng
from ._common import (
    check_finite,
    check_num_points,
    check_root,
    handle_missing,
    normalize_np,
    read_split_list,
    subsample_indices,
)
from .builder import BuildOptions, build_dataset
from .names import SHAPENET55_SYNSETS

__all__ = ["PAIRS_META_FILE", "load_shapenet_pairs"]

#: Written by ``build_render_pairs`` next to the clouds: class names, up axis, provenance.
PAIRS_META_FILE = "clip2point_pairs.json"


def _find_lists(pc_root: Path, split_dir) -> Path:
    if split_dir is not None:
        d = check_root(split_dir, "split-list folder")
        if not (d / "train.txt").is_file():
            raise DatasetFormatError(d, "no train.txt split list")
        return d
    candidates = [pc_root / "ShapeNet-55", pc_root.parent / "ShapeNet-55", pc_root]
    for d in candidates:
        if (d / "train.txt").is_file():
            return d
    raise DatasetFormatError(
        pc_root, f"no split lists found (looked for train.txt in {', '.join(str(c) for c in candidates)})"
    )


def _pc_dir(pc_root: Path) -> Path:
    return pc_root / "shapenet_pc" if (pc_root / "shapenet_pc").is_dir() else pc_root


def _render_dir(render_root: Path, first_id: str | None) -> Path:
    if (render_root / "rendering").is_dir() and (first_id is None or not (render_root / first_id).is_dir()):
        return render_root / "rendering"
    return render_root


def _split_id(entry: str, where: Path) -> tuple[str, str, str]:
    stem = entry[:-4] if entry.endswith(".npy") else entry
    if "-" not in stem:
        raise DatasetFormatError(where, f"entry {entry!r} is not '<synset>-<model>.npy'")
    synset, model = stem.split("-", 1)
    return stem, synset, model


def _pair_features(num_points: int, class_names: Sequence[str]):
    from datasets import Array2D, ClassLabel, Features, Image, List, Value

    return Features(
        {
            "points": Array2D(shape=(num_points, 3), dtype="float32"),
            "images": List(Image()),
            "label": ClassLabel(names=list(class_names)),
            "synset": Value("string"),
            "name": Value("string"),
            "path": Value("string"),
        }
    )


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetFormatError(path, f"not a readable .npy array ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] < 3 or arr.shape[0] < 1:
        raise DatasetFormatError(path, f"array has shape {arr.shape}, expected (N, 3)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DatasetFormatError(path, f"array has dtype {arr.dtype}, expected float")
    return arr


def _pair_example(task):
    pc_dir, rel, label, synset, image_paths, opts, embed = task
    num_points = opts.num_points
    path = Path(pc_dir) / rel
    arr = _load_npy(path)
    try:
        arr = np.asarray(arr[:, :3], dtype=np.float32)
    except (OSError, ValueError) as exc:  # truncated file behind the memory map
        raise DatasetFormatError(path, f"truncated or corrupt .npy data ({exc})") from None
    if len(arr) < num_points:
        raise DatasetFormatError(path, f"has {len(arr)} points, {num_points} needed")
    check_finite(arr, path)
    idx = subsample_indices(arr, num_points, opts.sampling, seeded_rng(opts.seed, rel))
    pts = arr[idx]
    if opts.normalize:
        pts = normalize_np(pts)
    if embed:
        images = []
        for p in image_paths:
            try:
                images.append({"bytes": Path(p).read_bytes(), "path": Path(p).name})
            except OSError as exc:
                raise DatasetFormatError(p, f"cannot read image ({exc.strerror or exc})") from None
    else:
        images = list(image_paths)
    return {
        "points": pts,
        "images": images,
        "label": label,
        "synset": synset,
        "name": Path(rel).stem,
        "path": rel,
    }


def load_shapenet_pairs(
    pc_root: str | Path,
    render_root: str | Path,
    num_points: int | None = None,
    seed: int = 0,
    *,
    num_views: int = 10,
    split_dir: str | Path | None = None,
    sampling: str = "first",
    normalize: bool = True,
    embed_images: bool = False,
    on_missing: str = "error",
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    rebuild: bool = False,
):
    """ShapeNet-55 (or :func:`build_render_pairs` output) point clouds paired with their rendered views.

    Args:
        pc_root: Point-BERT's ``ShapeNet55`` folder (holding ``shapenet_pc/`` and ``ShapeNet-55/``), or
            the folder of ``.npy`` clouds itself.
        render_root: the renderings (``<synset>_<model>/{0..9}.png``), or its parent holding ``rendering/``.
        num_points: points kept per cloud; ``None`` keeps every point (8192 in Point-BERT's release; all
            files must then have the same count). The random per-step subset is taken later by
            :class:`PretrainingPairTransform`.
        seed: seed for ``sampling="random"``.
        num_views: views per object (``0.png`` .. ``{num_views-1}.png``).
        split_dir: folder with ``train.txt``/``test.txt`` (default: found next to the clouds).
        sampling: ``"first"``, ``"fps"`` or ``"random"`` when ``num_points`` is smaller than the files'.
        normalize: centre and scale each cloud into the unit sphere.
        embed_images: store the PNG bytes in the cache (self-contained, larger) instead of their paths.
            ``push_to_hub`` embeds path-referenced images itself.
        on_missing: objects listed whose cloud or any view is absent: ``"error"`` (default) or ``"skip"``.
        cache_dir, num_proc, rebuild: see :func:`~clip2point_hf.data.load_mesh_folder`.

    Returns:
        ``DatasetDict`` (``train``, ``test``): ``points`` float32 ``(P, 3)``, ``images`` (list of
        ``num_views`` ``Image``), ``label`` ``ClassLabel`` (the 55 ShapeNet class names in synset order,
        or the classes recorded by ``build_render_pairs``), ``synset``, ``name`` (``<synset>-<model>``),
        ``path`` (the ``.npy`` relative to the cloud folder). Up axis ``y``.
    """
    opts = BuildOptions.check(
        None,  # checked once known: None keeps every point
        seed,
        sampling=sampling,
        normalize=normalize,
        on_missing=on_missing,
        cache_dir=cache_dir,
        num_proc=num_proc,
        rebuild=rebuild,
    )
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
        raise ValueError(f"`num_views` must be a positive int, got {num_views!r}")
    pc_root = check_root(pc_root, "point-cloud root")
    render_root = check_root(render_root, "rendering root").resolve()
    list_dir = _find_lists(pc_root, split_dir)
    pc_dir = _pc_dir(pc_root)
    meta_file = next((p for p in (pc_root / PAIRS_META_FILE, pc_dir / PAIRS_META_FILE) if p.is_file()), None)
    extra_meta = {}
    if meta_file is not None:
        try:
            extra_meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetFormatError(meta_file, f"unreadable metadata ({exc})") from None

    entries = {}
    for split in ("train", "test"):
        lst = list_dir / f"{split}.txt"
        entries[split] = [_split_id(e, lst) for e in read_split_list(lst, split)]
    first = next((e for v in entries.values() for e in v), None)
    rdir = _render_dir(render_root, f"{first[1]}_{first[2]}" if first else None)

    if "class_names" in extra_meta:
        classes = list(extra_meta["class_names"])
        label_of = {c: i for i, c in enumerate(classes)}
    else:
        synsets = sorted({e[1] for v in entries.values() for e in v})
        if set(synsets) <= set(SHAPENET55_SYNSETS):
            classes = list(SHAPENET55_SYNSETS.values())
            label_of = {s: i for i, s in enumerate(SHAPENET55_SYNSETS)}
        else:
            classes, label_of = synsets, {s: i for i, s in enumerate(synsets)}

    items = {}
    stat_files = [list_dir / "train.txt", list_dir / "test.txt"]
    for split, ents in entries.items():
        items[split], missing = [], []
        for stem, synset, model in ents:
            if synset not in label_of:
                raise DatasetFormatError(
                    list_dir / f"{split}.txt", f"entry {stem!r}: class {synset!r} unknown"
                )
            npy = pc_dir / f"{stem}.npy"
            views = [rdir / f"{synset}_{model}" / f"{v}.png" for v in range(num_views)]
            absent = [p for p in [npy, *views] if not p.is_file()]
            if absent:
                missing.extend(str(p.relative_to(pc_dir if p == npy else rdir)) for p in absent)
                continue
            items[split].append((f"{stem}.npy", label_of[synset], synset, [str(v) for v in views]))
            stat_files.append(npy)
            if embed_images:
                stat_files.extend(views)
        handle_missing(
            missing, len(ents) * (num_views + 1), on_missing=opts.on_missing, where=list_dir / f"{split}.txt"
        )

    if num_points is None:
        first_item = next((it for v in items.values() for it in v), None)
        num_points = _load_npy(pc_dir / first_item[0]).shape[0] if first_item else 8192
    opts = dataclasses.replace(opts, num_points=check_num_points(num_points))
    params = dict(
        **opts.settings(),
        num_views=num_views,
        embed=embed_images,
        render_root=str(rdir),
        classes=classes,
        splits={s: [it[0] for it in v] for s, v in items.items()},
    )
    dataset = extra_meta.get("dataset", "ShapeNet-55 pairs")
    up_axis = extra_meta.get("up_axis", "y")
    return build_dataset(
        "shapenet_pairs",
        _pair_example,
        {
            s: [(str(pc_dir), rel, lab, syn, views, opts, embed_images) for rel, lab, syn, views in its]
            for s, its in items.items()
        },
        _pair_features(opts.num_points, classes),
        opts,
        params=params,
        root=pc_dir,
        files=stat_files,
        meta={
            "dataset": dataset,
            "source": extra_meta.get("source", "Point-BERT shapenet_pc + 10-view renderings"),
            "format": "pairs",
            "up_axis": up_axis,
            "num_views": num_views,
            "render_root": str(rdir),
        },
        description=(
            f"{dataset}: point clouds ({opts.num_points} points) paired with {num_views} rendered views per "
            f"object. Up axis: {up_axis}."
        ),
    )
