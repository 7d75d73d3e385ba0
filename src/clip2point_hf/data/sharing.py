"""Datasets on the Hub without losing what they are.

A loader records what its dataset is (up axis, source layout, class names, sampling: :func:`dataset_metadata`) in
``DatasetInfo.description``. ``Dataset.push_to_hub`` writes only the config name, sizes, features and splits into
the card, so that record would not come back from the Hub. Here a dataset travels as a Hub dataset repo of:

    data/<split>-00000-of-0000N.parquet   the rows; the features (``ClassLabel`` names, ``Array2D`` shapes) ride in
                                          the Parquet schema, as ``push_to_hub`` writes them
    clip2point_meta.json                  the recorded metadata (the file the build cache keeps next to the data)
    README.md                             a card whose YAML ``configs`` name the data files per split

``datasets.load_dataset(repo)`` reads the rows; :func:`load_dataset_from_hub` also puts the metadata back, so
:func:`dataset_metadata` answers as it did before the upload. The repo is written as one folder and uploaded in one
commit (``HfApi.upload_folder``), which is also the boundary a test replaces to see exactly what would be uploaded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .cache import META_FILE, dataset_metadata, set_dataset_metadata

__all__ = [
    "MAX_SHARD_BYTES",
    "hub_folder",
    "load_dataset_from_hub",
    "push_dataset_to_hub",
    "upload_hub_folder",
    "write_hub_folder",
]

#: Parquet files are cut at about this size (``push_to_hub``'s default shard size).
MAX_SHARD_BYTES = 500 * 2**20


def write_hub_folder(
    dataset,
    folder: str | os.PathLike,
    *,
    metadata: Mapping | None = None,
    metadata_file: str = META_FILE,
    card_text: str = "",
    tags: Sequence[str] = (),
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Path:
    """Write `dataset` (a ``Dataset``: one ``train`` split, or a ``DatasetDict``) into `folder` in the layout above,
    with `metadata` (default: the dataset's :func:`dataset_metadata`) as `metadata_file`. Returns the folder."""
    from datasets import DatasetDict
    from huggingface_hub import DatasetCardData

    splits = dataset if isinstance(dataset, DatasetDict) else DatasetDict({"train": dataset})
    metadata = dict(dataset_metadata(splits) if metadata is None else metadata)
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        count = max(1, math.ceil(rows.data.nbytes / max_shard_bytes))
        for shard in range(count):
            part = rows.shard(num_shards=count, index=shard, contiguous=True)
            part.to_parquet(os.fspath(folder / "data" / f"{split}-{shard:05d}-of-{count:05d}.parquet"))
    (folder / metadata_file).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    card = DatasetCardData(
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split in splits],
            }
        ],
        tags=list(tags) or None,
    )
    title = metadata.get("dataset") or folder.name
    body = card_text or _card_text(metadata, splits)
    (folder / "README.md").write_text(f"---\n{card.to_yaml()}\n---\n\n# {title}\n\n{body}\n")
    return folder


def _card_text(metadata: Mapping, splits) -> str:
    sizes = ", ".join(f"{split}: {len(rows)}" for split, rows in splits.items())
    lines = [
        f"Point clouds built by clip2point_hf ({sizes}).",
        "",
        f"- up axis: {metadata.get('up_axis', 'not recorded')}",
        f"- source: {metadata.get('source', 'not recorded')} ({metadata.get('format', 'format not recorded')})",
        f"- classes: {len(metadata.get('class_names') or [])}",
        f"- sampling: {metadata.get('sampling', 'not recorded')}, {metadata.get('num_points')} points, "
        f"seed {metadata.get('seed')}",
        "",
        f"Everything recorded is in `{META_FILE}`. Load with `clip2point_hf.data.load_dataset_from_hub(repo)` to keep "
        "it (`dataset_metadata(ds)`), or with `datasets.load_dataset(repo)` for the rows alone.",
    ]
    return "\n".join(lines)


def upload_hub_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload dataset",
):
    """Create the dataset repo if needed and upload `folder` to it in one commit; returns the ``CommitInfo``."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id, folder_path=os.fspath(folder), repo_type="dataset", commit_message=commit_message
    )


def hub_folder(
    repo_id_or_folder: str | os.PathLike, *, revision: str | None = None, token: str | None = None
) -> Path:
    """A local folder as it is, else the dataset repo's snapshot (through huggingface_hub: its cache, offline mode
    and endpoint)."""
    if Path(repo_id_or_folder).is_dir():
        return Path(repo_id_or_folder)
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(os.fspath(repo_id_or_folder), repo_type="dataset", revision=revision, token=token)
    )


def push_dataset_to_hub(
    dataset,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload dataset",
):
    """Publish a loader's ``Dataset``/``DatasetDict`` with its metadata (see the module's docstring)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_hub_folder(dataset, tmp, tags=["clip2point", "point-cloud"])
        return upload_hub_folder(tmp, repo_id, private=private, token=token, commit_message=commit_message)


def load_dataset_from_hub(
    repo_id_or_folder: str | os.PathLike,
    *,
    split: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """``datasets.load_dataset`` on a repo (or folder) written by :func:`push_dataset_to_hub`, with the recorded
    metadata put back where :func:`dataset_metadata` reads it."""
    from datasets import load_dataset

    folder = hub_folder(repo_id_or_folder, revision=revision, token=token)
    loaded = load_dataset(
        os.fspath(folder), split=split, cache_dir=None if cache_dir is None else os.fspath(cache_dir)
    )
    meta_file = folder / META_FILE
    if meta_file.is_file():
        set_dataset_metadata(loaded, json.loads(meta_file.read_text()))
    return loaded
