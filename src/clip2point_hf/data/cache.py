"""Build-once caching of loader output: fingerprints, atomic ``save_to_disk`` and dataset metadata.

A loader call is keyed by a fingerprint of (loader kind, :data:`LOADER_VERSION`, its parameters, and
the relative path, size and modification time of every input file). The first call builds the
``DatasetDict`` into a temporary folder next to the cache entry and renames it into place
(:func:`~clip2point_hf.atomic.atomic_folder`), so an
interrupted or failed build never leaves a half-written entry; later calls ``load_from_disk`` it
(memory-mapped Arrow, nothing re-read or re-sampled).

Cache location: the ``cache_dir`` argument of each loader, else ``$CLIP2POINT_HF_CACHE``, else
``$HF_DATASETS_CACHE/clip2point_hf`` (by default ``~/.cache/huggingface/datasets/clip2point_hf``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..atomic import atomic_folder, clean_stale_work_folders, work_folder
from ..errors import DatasetFormatError

__all__ = [
    "LOADER_VERSION",
    "build_cached",
    "dataset_metadata",
    "default_cache_dir",
    "fingerprint",
    "set_dataset_metadata",
]

logger = logging.getLogger(__name__)

#: Bumped whenever a loader's output for the same input and arguments changes.
LOADER_VERSION = "1"

META_FILE = "clip2point_meta.json"
_META_MARKER = "\n\nclip2point_hf metadata: "


def default_cache_dir() -> Path:
    """``$CLIP2POINT_HF_CACHE``, else ``$HF_DATASETS_CACHE/clip2point_hf``."""
    env = os.environ.get("CLIP2POINT_HF_CACHE")
    if env:
        return Path(env).expanduser()
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "clip2point_hf"


def fingerprint(kind: str, params: Mapping, root: str | Path | None, files: Iterable[str | Path]) -> str:
    """A hex key for (kind, version, params, and each file's relative path, size and mtime)."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"kind": kind, "version": LOADER_VERSION, "params": params}, sort_keys=True, default=str
        ).encode()
    )
    root = Path(root) if root is not None else None
    for f in files:
        f = Path(f)
        try:
            st = f.stat()
        except OSError as exc:
            raise DatasetFormatError(f, f"cannot stat file ({exc.strerror or exc})") from None
        rel = f.relative_to(root).as_posix() if root is not None and f.is_relative_to(root) else str(f)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _description(text: str, meta: Mapping) -> str:
    return text + _META_MARKER + json.dumps(meta, sort_keys=True)


def dataset_metadata(ds) -> dict:
    """The metadata a loader recorded (``up_axis``, ``source``, ``format``, ``num_points``, ``seed``, ...).

    Works on a ``Dataset`` or ``DatasetDict`` returned by any loader of this package (also after
    ``push_to_hub``/``load_dataset`` when the dataset info travelled with it); ``{}`` if none.
    """
    if isinstance(ds, Mapping):
        if not ds:
            return {}
        ds = next(iter(ds.values()))
    desc = getattr(getattr(ds, "info", None), "description", None) or ""
    if _META_MARKER not in desc:
        return {}
    return json.loads(desc.split(_META_MARKER, 1)[1])


def set_dataset_metadata(ds, meta: Mapping) -> None:
    """Record `meta` where :func:`dataset_metadata` reads it, on a ``Dataset`` or every split of a
    ``DatasetDict`` (e.g. after ``load_dataset`` from the Hub, which keeps no description)."""
    for split in ds.values() if isinstance(ds, Mapping) else [ds]:
        text = (split.info.description or "").split(_META_MARKER, 1)[0]
        split.info.description = _description(text, meta)


def build_cached(
    kind: str,
    key: str,
    build: Callable[[Path], dict],
    *,
    meta: Mapping,
    description: str,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
):
    """Return the cached ``DatasetDict`` for ``key``, building it with ``build(scratch_dir)`` if needed.

    ``build`` returns a mapping split -> ``Dataset`` (it may write intermediate files into
    ``scratch_dir``, which is removed afterwards). The result is saved to a temporary folder and
    renamed into ``<cache_dir>/<kind>/<key>`` only when complete; on any error both temporary folders
    are removed and the error propagates.
    """
    from datasets import DatasetDict, load_from_disk

    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    base = base / kind
    final = base / key
    if not rebuild and (final / "dataset_dict.json").is_file():
        try:
            return load_from_disk(str(final))
        except Exception as exc:  # a damaged entry (e.g. files deleted by hand): rebuild it
            logger.warning("cache entry %s is unreadable (%s); rebuilding it", final, exc)
    base.mkdir(parents=True, exist_ok=True)
    clean_stale_work_folders(base)
    scratch = work_folder(final, "scratch")
    try:
        with atomic_folder(final) as tmp:
            splits = build(scratch)
            full_meta = dict(meta, cache_key=key, loader_version=LOADER_VERSION)
            desc = _description(description, full_meta)
            for ds in splits.values():
                ds.info.description = desc
            # an empty split needs one (empty) shard, or load_from_disk cannot read it back
            shards = {s: 1 for s, ds in splits.items() if len(ds) == 0}
            DatasetDict(splits).save_to_disk(str(tmp), num_shards=shards or None)
            (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
            del splits
    except OSError:
        if not (final / "dataset_dict.json").is_file():
            raise
        # a concurrent build of the same key finished first: identical content
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return load_from_disk(str(final))
