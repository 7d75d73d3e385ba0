"""The one way every loader turns its listing into a cached ``DatasetDict``.

A loader says what is specific to its format: how to list the files (one task per file or chunk, per
split), how to read one task (a worker returning one example or a list of them), its ``Features`` and
its metadata (source, format, up axis). :func:`build_dataset` does the rest the same way for all of
them: the cache key, the number of build processes, one Arrow split per task list, the recorded
sampling settings, class names and example counts, and the build-once cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..prompts import prompt_names
from ._common import (
    ON_MISSING,
    SAMPLING_METHODS,
    check_choice,
    check_num_points,
    check_seed,
    generate_split,
    resolve_num_proc,
)
from .cache import build_cached, fingerprint

__all__ = ["BuildOptions", "build_dataset", "point_cloud_features"]


def point_cloud_features(num_points: int, class_names: Sequence[str], with_normals: bool = False):
    """``Features`` of the point-cloud datasets: ``points`` (fixed-size ``Array2D`` float32),
    ``label`` (``ClassLabel``), ``name`` and ``path`` (strings), optionally ``normals``."""
    from datasets import Array2D, ClassLabel, Features, Value

    feats = {
        "points": Array2D(shape=(num_points, 3), dtype="float32"),
        "label": ClassLabel(names=list(class_names)),
        "name": Value("string"),
        "path": Value("string"),
    }
    if with_normals:
        feats["normals"] = Array2D(shape=(num_points, 3), dtype="float32")
    return Features(feats)


@dataclass(frozen=True)
class BuildOptions:
    """The loader arguments every format shares; :meth:`check` validates them (one message each)."""

    num_points: int | None
    seed: int = 0
    sampling: str = "first"
    normalize: bool = True
    with_normals: bool = False
    on_missing: str = "error"
    cache_dir: str | Path | None = None
    num_proc: int | None = None
    rebuild: bool = False

    @classmethod
    def check(cls, num_points, seed, **kwargs) -> BuildOptions:
        """``BuildOptions`` after checking ``num_points`` (``None``: decided by the loader later),
        ``seed``, ``sampling`` and ``on_missing``."""
        opts = cls(None if num_points is None else check_num_points(num_points), check_seed(seed), **kwargs)
        check_choice(opts.sampling, SAMPLING_METHODS, "sampling")
        check_choice(opts.on_missing, ON_MISSING, "on_missing")
        return opts

    def settings(self) -> dict:
        """How each cloud was made (``num_points``, ``seed``, ``sampling``, ``normalize``): recorded with
        every dataset, and part of the cache key of every loader that cuts stored clouds."""
        return {
            "num_points": self.num_points,
            "seed": self.seed,
            "sampling": self.sampling,
            "normalize": self.normalize,
        }


def build_dataset(
    kind: str,
    read: Callable,
    tasks: Mapping[str, Sequence],
    features,
    opts: BuildOptions,
    *,
    params: Mapping,
    root: Path,
    files: Sequence[Path],
    meta: Mapping,
    description: str,
    num_examples: Mapping[str, int] | None = None,
    task_weight: int = 1,
):
    """``read`` over each split's ``tasks`` (in order) into a ``DatasetDict``, built once and cached.

    Args:
        kind: the cache folder and fingerprint kind (``"modelnet_txt"``, ``"mesh_folder"``, ...).
        read: worker taking one task, returning one example dict or a list of them; picklable (it
            runs in a process pool) and deterministic given its task.
        tasks: ``{split: [task, ...]}``.
        features: the ``Features``; its ``label`` names are recorded as ``class_names``.
        opts: the shared loader arguments (recorded: ``num_points``, ``seed``, ``sampling``,
            ``normalize``; used: ``num_proc``, ``cache_dir``, ``rebuild``).
        params, root, files: what the cache key covers, besides ``kind``: the arguments that change
            the output, and every input file (its path relative to ``root``, size and mtime).
        meta: the format's own metadata (``dataset``, ``source``, ``format``, ``up_axis``, ...); its
            keys win over the recorded ones (e.g. meshes record ``sampling="surface_area_weighted"``).
        description: the datasets' ``info.description``.
        num_examples: examples per split when a task yields several (default: one per task).
        task_weight: how many files one task counts as when ``num_proc`` is chosen automatically.
    """
    key = fingerprint(kind, params, root, files)
    nproc = resolve_num_proc(opts.num_proc, task_weight * sum(len(t) for t in tasks.values()))

    def build(scratch: Path) -> dict:
        return {
            split: generate_split(
                read, list(t), features, split=split, scratch=scratch, num_proc=nproc, key=key
            )
            for split, t in tasks.items()
        }

    classes = list(features["label"].names)
    if num_examples is None:
        num_examples = {s: len(t) for s, t in tasks.items()}
    recorded = {
        **opts.settings(),
        "class_names": classes,
        "prompt_names": prompt_names(classes),
        "num_examples": dict(num_examples),
    }
    return build_cached(
        kind,
        key,
        build,
        meta={**recorded, **meta},
        description=description,
        cache_dir=opts.cache_dir,
        rebuild=opts.rebuild,
    )
