"""Text-to-shape and shape-to-shape search over CLIP2Point point-cloud embeddings.

CLIP2Point's depth encoder puts point clouds in CLIP's embedding space, so a query text (through the text tower
and the model's prompt template) or a query shape (through `pipeline("point-cloud-feature-extraction")`) is
ranked against stored shapes by cosine similarity.

```python
from clip2point_apps.retrieval import ShapeIndex
index = ShapeIndex.build("path/to/folder", "runs/pretrain", "shapes.index")   # resumable, shardable
index = ShapeIndex.load("shapes.index")
index.search_text("a chair with armrests", k=8)    # [SearchHit(index, name, path, score), ...]
index.search_shape("query.ply", k=8)
save_hits_image(hits, "hits.png")
```

An index is a folder:
- ``index_config.json``: the model, embedding size, render settings and prompt template (what a query needs to
  be embedded like the stored shapes);
- ``data/``: a ``datasets.Dataset`` with ``name``, ``path`` and ``embedding`` (L2-normalised float32), saved with
  ``save_to_disk`` (``index.dataset.push_to_hub(repo)`` publishes it);
- ``faiss.index`` (optional): an approximate nearest-neighbour index made by datasets' ``add_faiss_index`` with
  faiss-cpu (``pip install clip2point-hf[search]``). Exact search (one matrix product) is always available, is
  the reference, and is the default for small sets;
- ``build.json`` and, while a build runs, ``chunks/``: the build's manifest and its finished chunks.

A build cuts the sorted inputs into chunks of ``chunk_size``; each finished chunk is written atomically (temporary
name, then rename), so a killed build loses at most the chunk it was on and a rerun resumes. ``num_shards`` /
``shard_index`` give chunk ``c`` to shard ``c % num_shards``, for several processes or machines over one output
folder; running the build without ``shard_index`` then embeds whatever is missing and merges.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2point_hf.atomic import atomic_folder
from clip2point_hf.errors import DatasetFormatError
from clip2point_hf.pipeline_point_cloud_feature_extraction import PointCloudFeatureExtractionPipeline
from clip2point_hf.point_files import POINT_FILE_TYPES, read_point_cloud
from clip2point_hf.points_clip2point import UP_AXES

logger = logging.getLogger(__name__)

CONFIG_NAME = "index_config.json"
MANIFEST_NAME = "build.json"
DATA_DIR = "data"
CHUNK_DIR = "chunks"
FAISS_NAME = "faiss.index"
COLUMN = "embedding"
FORMAT_VERSION = 1
# At or below this many stored shapes `faiss="auto"` builds no approximate index: exact search is fast enough.
EXACT_SEARCH_MAX = 10_000


@dataclass(frozen=True)
class SearchHit:
    """One result: its row in the index, the stored name and source path, and the cosine similarity."""

    index: int
    name: str
    path: str
    score: float


def load_embedder(
    model: str | os.PathLike | PointCloudFeatureExtractionPipeline,
    device: str | int | torch.device | None = None,
    up_axis: str | None = None,
) -> PointCloudFeatureExtractionPipeline:
    """`pipeline("point-cloud-feature-extraction")` for a model folder or Hub id (or the given pipeline), with the
    processor's up axis overridden when `up_axis` is given."""
    if isinstance(model, PointCloudFeatureExtractionPipeline):
        embedder = model
    else:
        from transformers import pipeline

        import clip2point_hf  # noqa: F401  (registers the task)

        embedder = pipeline("point-cloud-feature-extraction", model=os.fspath(model), device=device)
    if up_axis is not None:
        if up_axis not in UP_AXES:
            raise ValueError(f"`up_axis` must be one of {list(UP_AXES)}, got {up_axis!r}")
        embedder.front_end.up_axis = up_axis
    return embedder


def embed_texts(
    embedder: PointCloudFeatureExtractionPipeline,
    texts: Sequence[str],
    template: str | Sequence[str] | None = None,
) -> np.ndarray:
    """(len(texts), D) L2-normalised text embeddings: each text through `template` -- one template, or several
    averaged as an ensemble (default: the model's ``config.prompt_templates``, e.g. ``["image of a {}"]``) -- and
    CLIP's text tower."""
    from clip2point_hf.prompts import encode_class_prompts

    tokenizer = getattr(embedder.processor, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("the model's processor has no tokenizer, so it cannot embed a query text")
    templates = template or embedder.model.config.prompt_templates
    templates = [templates] if isinstance(templates, str) else list(templates)
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"the prompt template must contain '{{}}', got {bad or templates!r}")
    with torch.inference_mode():
        return encode_class_prompts(embedder.model, tokenizer, list(texts), templates).cpu().numpy()


def embed_shapes(
    embedder: PointCloudFeatureExtractionPipeline, shapes: Sequence[Any], batch_size: int = 32
) -> np.ndarray:
    """(len(shapes), D) L2-normalised point-cloud embeddings of files or `(N, 3+)` arrays."""
    inputs = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in shapes]
    vectors = embedder(inputs, batch_size=batch_size, return_tensors=True)
    return torch.stack(list(vectors)).numpy()


# ---------------------------------------------------------------------------------------------------- sources


@dataclass
class _Source:
    """What a build embeds: `len(names)` items, each read by `load(i)` into an `(N, 3+)` array."""

    description: str
    names: list[str]
    paths: list[str]
    dataset: Any = None  # a datasets.Dataset with `points`, or None for a folder of files
    up_axis: str | None = None  # what a loader recorded in the dataset's metadata

    def load(self, i: int) -> np.ndarray:
        if self.dataset is None:
            return read_point_cloud(self.paths[i])
        return np.asarray(self.dataset[i]["points"], dtype=np.float32)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name, path in zip(self.names, self.paths, strict=True):
            digest.update(f"{name}\0{path}\n".encode())
        return digest.hexdigest()[:16]


def _open_source(source: Any, split: str | None, paths_root: str | os.PathLike | None = None) -> _Source:
    from datasets import Dataset, DatasetDict, load_from_disk

    from clip2point_hf.data import dataset_metadata

    if isinstance(source, str | os.PathLike):
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a folder")
        if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
            dataset = load_from_disk(os.fspath(root))
            return replace(_open_source(dataset, split, paths_root), description=os.fspath(root))
        suffixes = {s.lower() for s in POINT_FILE_TYPES}
        files = sorted(
            (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not files:
            raise ValueError(f"{root}: no point-cloud or mesh files ({', '.join(POINT_FILE_TYPES)})")
        names = [p.relative_to(root).with_suffix("").as_posix() for p in files]
        return _Source(os.fspath(root), names, [os.fspath(p) for p in files])
    if isinstance(source, DatasetDict):
        if split is None:
            raise ValueError(f"the dataset has splits {list(source)}: choose one with `split`")
        if split not in source:
            raise ValueError(f"split {split!r} not in the dataset's splits {list(source)}")
        return _open_source(source[split], None, paths_root)
    if isinstance(source, Dataset):
        if "points" not in source.column_names:
            raise ValueError(f"the dataset has no `points` column (columns: {source.column_names})")
        columns = source.column_names
        names = list(source["name"]) if "name" in columns else [str(i) for i in range(len(source))]
        paths = list(source["path"]) if "path" in columns else [""] * len(source)
        if paths_root is not None:  # loaders store paths relative to the dataset's folder
            paths = [os.path.join(paths_root, p) if p else p for p in paths]
        up_axis = dataset_metadata(source).get("up_axis")
        return _Source(f"dataset {source.info.dataset_name or ''}".strip(), names, paths, source, up_axis)
    raise TypeError(
        f"`source` must be a folder, a datasets.Dataset or DatasetDict, got {type(source).__name__}"
    )


# ---------------------------------------------------------------------------------------------------- the index


class ShapeIndex:
    """Stored shape embeddings with their names and paths, searchable by text, by shape or by vector.

    Args:
        dataset: a ``datasets.Dataset`` with ``name``, ``path`` and ``embedding`` (L2-normalised float32) columns.
        config: what queries need (``model``, ``up_axis``, ``template`` -- a string, or a list for a template
            ensemble --, ...), as in ``index_config.json``.
        embedder: the feature-extraction pipeline for queries; by default loaded from ``config["model"]`` on the
            first text or shape query.
    """

    def __init__(
        self,
        dataset,
        config: dict | None = None,
        embedder: PointCloudFeatureExtractionPipeline | None = None,
    ) -> None:
        for column in ("name", "path", COLUMN):
            if column not in dataset.column_names:
                raise ValueError(
                    f"the index dataset has no `{column}` column (columns: {dataset.column_names})"
                )
        self.dataset = dataset
        self.config = dict(config or {})
        self._embedder = embedder
        self._searchable = (
            None  # a view of `dataset` carrying the faiss index (a dataset with one cannot be saved)
        )
        self._matrix: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        kind = self.config.get("faiss", {}).get("factory") if self.has_faiss_index else "exact only"
        return f"ShapeIndex({len(self)} shapes, dim {self.dim}, {kind}, model {self.config.get('model')!r})"

    @property
    def dim(self) -> int:
        return self.dataset.features[COLUMN].length

    @property
    def has_faiss_index(self) -> bool:
        return self._searchable is not None

    @property
    def embeddings(self) -> torch.Tensor:
        """(N, D) float32 tensor of the stored embeddings (read once from the Arrow table, without copies per row)."""
        if self._matrix is None:
            table = self.dataset.with_format("arrow", columns=[COLUMN])[:]  # honours a `select`ed view
            values = table.column(COLUMN).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            # A copy: Arrow's buffer is read-only (memory-mapped for a loaded index) and torch wants writable.
            self._matrix = torch.from_numpy(np.array(values, dtype=np.float32).reshape(-1, self.dim))
        return self._matrix

    @property
    def embedder(self) -> PointCloudFeatureExtractionPipeline:
        if self._embedder is None:
            if not self.config.get("model"):
                raise ValueError("this index names no model: pass `embedder=` to embed queries")
            self._embedder = load_embedder(self.config["model"], up_axis=self.config.get("up_axis"))
        return self._embedder

    @embedder.setter
    def embedder(self, embedder: PointCloudFeatureExtractionPipeline) -> None:
        self._embedder = embedder

    # -- creating -------------------------------------------------------------------------------------

    @classmethod
    def from_embeddings(
        cls,
        embeddings: np.ndarray | torch.Tensor,
        names: Sequence[str],
        paths: Sequence[str] | None = None,
        config: dict | None = None,
        embedder: PointCloudFeatureExtractionPipeline | None = None,
    ) -> ShapeIndex:
        """An index over given vectors (normalised here), e.g. from another embedding run or synthetic ones."""
        import pyarrow as pa
        from datasets import Dataset, DatasetInfo, Features, List, Value
        from datasets.table import InMemoryTable

        vectors = torch.as_tensor(embeddings, dtype=torch.float32)
        if vectors.dim() != 2 or len(vectors) != len(names):
            raise ValueError(
                f"`embeddings` must be (len(names)={len(names)}, D), got shape {tuple(vectors.shape)}"
            )
        vectors = np.ascontiguousarray(torch.nn.functional.normalize(vectors, dim=-1).numpy())
        paths = list(paths) if paths is not None else [""] * len(names)
        if len(paths) != len(names):
            raise ValueError(f"`paths` has {len(paths)} entries for {len(names)} names")
        features = Features(
            {
                "name": Value("string"),
                "path": Value("string"),
                COLUMN: List(Value("float32"), length=vectors.shape[1]),
            }
        )
        # Built from Arrow arrays with a fingerprint of our own: `Dataset.from_dict` would convert a million
        # vectors to Python lists and hash the whole table (about a minute per 100k vectors of 512).
        table = pa.table(
            {
                "name": pa.array(list(names), pa.string()),
                "path": pa.array(paths, pa.string()),
                COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
            }
        ).cast(features.arrow_schema)
        digest = hashlib.blake2b(vectors.tobytes(), digest_size=16)
        for name, path in zip(table.column("name").to_pylist(), paths, strict=True):
            digest.update(f"{name}\0{path}\n".encode())
        dataset = Dataset(
            InMemoryTable(table), info=DatasetInfo(features=features), fingerprint=digest.hexdigest()
        )
        config = {"format_version": FORMAT_VERSION, **(config or {}), "dim": int(vectors.shape[1])}
        return cls(dataset, config, embedder)

    @classmethod
    def build(
        cls,
        source: Any,
        model: str | os.PathLike | PointCloudFeatureExtractionPipeline,
        output: str | os.PathLike,
        *,
        split: str | None = None,
        up_axis: str | None = None,
        paths_root: str | os.PathLike | None = None,
        num_shards: int = 1,
        shard_index: int | None = None,
        chunk_size: int = 256,
        batch_size: int = 32,
        device: str | int | torch.device | None = None,
        on_error: str = "raise",
        faiss: str | None = "auto",
        progress: bool = True,
    ) -> ShapeIndex | None:
        """Embed every shape of `source` and save the index to `output`; resumable and shardable.

        Args:
            source: a folder of point/mesh files (searched recursively; names are the relative paths without the
                suffix), a folder saved with ``save_to_disk``, or a ``datasets.Dataset``/``DatasetDict`` with a
                ``points`` column (``name`` and ``path`` columns are kept when present).
            model: a CLIP2Point model folder or Hub id, or a feature-extraction pipeline.
            output: the index folder. A rerun with the same source and settings resumes there.
            split: the split of a ``DatasetDict`` source.
            up_axis: ``"y"`` or ``"z"`` (ModelNet-style files); default: what the dataset's loader recorded, else
                the model processor's.
            paths_root: for a dataset source, the folder its ``path`` column is relative to (the package's loaders
                store paths relative to the dataset folder): stored joined, so that hits can be read and drawn.
            num_shards, shard_index: embed only the chunks ``c`` with ``c % num_shards == shard_index`` and return
                ``None``; a later call without ``shard_index`` (in one process, once the shards are done) embeds
                whatever is still missing and merges.
            chunk_size: shapes per chunk, the unit of resumption (at most this much work is lost by a kill).
            on_error: ``"raise"`` at the first unreadable file, or ``"skip"`` it (listed in ``build.json``).
            faiss: ``"auto"`` (above `EXACT_SEARCH_MAX` shapes and with faiss installed: ``IVF<~sqrt(N)>,Flat``
                visiting 32 cells),
                ``None``/``"none"``, or a faiss factory string such as ``"HNSW32"`` or ``"IVF1024,Flat"``.
        """
        from tqdm.auto import tqdm

        if on_error not in ("raise", "skip"):
            raise ValueError(f'`on_error` must be "raise" or "skip", got {on_error!r}')
        if num_shards < 1:
            raise ValueError(f"`num_shards` must be >= 1, got {num_shards}")
        if shard_index is not None and not 0 <= shard_index < num_shards:
            raise ValueError(f"`shard_index` must be in [0, {num_shards}), got {shard_index}")
        if chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}")
        output = Path(output)
        src = _open_source(source, split, paths_root)
        embedder = load_embedder(model, device, up_axis or src.up_axis)
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": src.description,
            "num_items": len(src.names),
            "fingerprint": src.fingerprint(),
            "chunk_size": chunk_size,
            **_query_config(embedder, model),
        }
        _write_or_check_manifest(output, manifest)
        if (output / CONFIG_NAME).is_file() and (output / DATA_DIR).is_dir():
            logger.info("%s is complete; loading it", output)
            return cls.load(output, embedder=embedder)
        num_chunks = math.ceil(len(src.names) / chunk_size)
        mine = [c for c in range(num_chunks) if shard_index is None or c % num_shards == shard_index]
        chunk_dir = output / CHUNK_DIR
        chunk_dir.mkdir(parents=True, exist_ok=True)
        todo = [c for c in mine if not _chunk_path(chunk_dir, c).is_file()]
        total = sum(min(chunk_size, len(src.names) - c * chunk_size) for c in todo)
        label = "embedding" if shard_index is None else f"embedding (shard {shard_index}/{num_shards})"
        with tqdm(total=total, desc=label, unit="shape", disable=not progress) as bar:
            for chunk in todo:
                _embed_chunk(src, embedder, chunk, chunk_size, batch_size, on_error, chunk_dir, bar)
        if shard_index is not None:  # only a call without `shard_index` merges: shards never race to merge
            return None
        return cls._merge(output, manifest, num_chunks, embedder, faiss)

    @classmethod
    def _merge(cls, output: Path, manifest: dict, num_chunks: int, embedder, faiss: str | None) -> ShapeIndex:
        chunk_dir = output / CHUNK_DIR
        names, paths, vectors, skipped = [], [], [], []
        for chunk in range(num_chunks):
            with np.load(_chunk_path(chunk_dir, chunk), allow_pickle=False) as stored:
                names += stored["names"].tolist()
                paths += stored["paths"].tolist()
                vectors.append(stored["embeddings"])
                skipped += json.loads(str(stored["skipped"]))
        if not names:
            raise ValueError(f"{manifest['source']}: no shape could be read (skipped: {len(skipped)})")
        config = {
            key: manifest[key] for key in ("model", "up_axis", "views", "num_points", "template", "source")
        }
        index = cls.from_embeddings(np.concatenate(vectors), names, paths, config, embedder)
        index._maybe_add_faiss(faiss)
        index.save(output)
        _write_json(output / MANIFEST_NAME, {**manifest, "skipped": skipped})
        shutil.rmtree(chunk_dir)
        return index

    def _maybe_add_faiss(self, faiss: str | None) -> None:
        if faiss in (None, "none"):
            return
        if faiss == "auto":
            if len(self) <= EXACT_SEARCH_MAX:
                return
            try:
                import faiss as _  # noqa: F401
            except ImportError:
                logger.warning("faiss is not installed: %d shapes will be searched exactly", len(self))
                return
            # IVF with about sqrt(N) cells, 32 visited: recall@10 >= 0.99 at 100k-1M stored vectors, 60-100x faster
            # than exact search, and 10x faster to build than HNSW32 (BENCHMARKS.md, "Retrieval").
            self.add_faiss_index(f"IVF{2 ** round(math.log2(math.sqrt(len(self))))},Flat", nprobe=32)
            return
        self.add_faiss_index(faiss)

    # -- approximate index ------------------------------------------------------------------------

    def add_faiss_index(
        self,
        factory: str = "HNSW32",
        nprobe: int | None = None,
        ef_search: int | None = None,
        train_size: int = 100_000,
        seed: int = 0,
    ) -> None:
        """Attach an approximate inner-product index (datasets' ``add_faiss_index``, faiss-cpu).

        ``factory`` is a faiss index-factory string: ``"HNSW32"`` (no training), ``"IVF1024,Flat"`` (k-means
        trained on up to ``train_size`` random rows, so that sorted inputs do not bias the cells), ...
        ``nprobe`` (IVF cells visited) and ``ef_search`` (HNSW beam) trade speed for recall at query time.
        """
        try:
            import faiss
        except ImportError as error:
            raise ImportError(
                "faiss is not installed: pip install 'clip2point-hf[search]' (faiss-cpu)"
            ) from error
        index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            rows = np.random.default_rng(seed).permutation(len(self))[:train_size]
            index.train(np.ascontiguousarray(self.embeddings.numpy()[np.sort(rows)]))
        self._searchable = self.dataset.with_format(None)
        self._searchable.add_faiss_index(COLUMN, custom_index=index)
        self.config["faiss"] = {"factory": factory}
        self.set_search_parameters(nprobe=nprobe, ef_search=ef_search)

    def set_search_parameters(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """IVF's ``nprobe`` and HNSW's ``ef_search`` (kept in ``index_config.json``)."""
        import faiss

        index = self._faiss()
        ivf = faiss.try_extract_index_ivf(index)
        if nprobe is not None:
            if ivf is None:
                raise ValueError(
                    f"`nprobe` needs an IVF index, this one is {self.config['faiss']['factory']!r}"
                )
            ivf.nprobe = nprobe
            self.config["faiss"]["nprobe"] = nprobe
        if ef_search is not None:
            if not hasattr(index, "hnsw"):
                raise ValueError(
                    f"`ef_search` needs an HNSW index, this one is {self.config['faiss']['factory']!r}"
                )
            index.hnsw.efSearch = ef_search
            self.config["faiss"]["ef_search"] = ef_search

    def drop_faiss_index(self) -> None:
        self._searchable = None
        self.config.pop("faiss", None)

    def _faiss(self):
        if self._searchable is None:
            raise ValueError("this index has no faiss index: call add_faiss_index() first")
        return self._searchable.get_index(COLUMN).faiss_index

    # -- saving and loading -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write ``index_config.json``, ``data/`` and (if any) ``faiss.index`` to the folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_folder(path / DATA_DIR) as tmp:
            self.dataset.save_to_disk(os.fspath(tmp))
        if self.has_faiss_index:
            self._searchable.save_faiss_index(COLUMN, os.fspath(path / f"{FAISS_NAME}.tmp"))
            os.replace(path / f"{FAISS_NAME}.tmp", path / FAISS_NAME)
        elif (path / FAISS_NAME).exists():
            (path / FAISS_NAME).unlink()
        _write_json(path / CONFIG_NAME, self.config)

    @classmethod
    def load(
        cls, path: str | os.PathLike, embedder: PointCloudFeatureExtractionPipeline | None = None
    ) -> ShapeIndex:
        """Load an index folder written by :meth:`save` or :meth:`build` (with its faiss index, if any)."""
        from datasets import load_from_disk

        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / DATA_DIR).is_dir():
            hint = (
                " (a build is unfinished: rerun it without --shard_index to merge)"
                if (path / CHUNK_DIR).is_dir()
                else ""
            )
            raise FileNotFoundError(f"{path}: not a shape index (no {CONFIG_NAME} and {DATA_DIR}/){hint}")
        config = json.loads((path / CONFIG_NAME).read_text())
        index = cls(load_from_disk(os.fspath(path / DATA_DIR)), config, embedder)
        if (path / FAISS_NAME).is_file():
            index._searchable = index.dataset.with_format(None)
            index._searchable.load_faiss_index(COLUMN, os.fspath(path / FAISS_NAME))
            params = config.get("faiss", {})
            index.set_search_parameters(nprobe=params.get("nprobe"), ef_search=params.get("ef_search"))
        return index

    # -- searching --------------------------------------------------------------------------------

    def search_vectors(
        self, queries: np.ndarray | torch.Tensor, k: int = 8, exact: bool | None = None
    ) -> list[list[SearchHit]]:
        """The `k` best stored shapes for each of the `(Q, D)` query vectors (normalised here), best first.

        ``exact=None`` uses the faiss index when there is one, else exact search; ``True`` forces exact search
        (the reference), ``False`` requires the faiss index.
        """
        scores, rows = self.search_rows(queries, k, exact)
        found = sorted({int(r) for r in rows.reshape(-1) if r >= 0})
        stored = self.dataset.select_columns(["name", "path"])[found]
        where = {row: i for i, row in enumerate(found)}
        return [
            [
                SearchHit(r, stored["name"][where[r]], stored["path"][where[r]], s)
                for s, r in zip(q_scores, q_rows)
                if r >= 0
            ]
            for q_scores, q_rows in zip(scores.tolist(), rows.tolist())
        ]

    def search_rows(
        self, queries: np.ndarray | torch.Tensor, k: int = 8, exact: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search_vectors` but returns ``(scores, rows)`` arrays of shape ``(Q, k)`` (row -1: none)."""
        q = torch.as_tensor(queries, dtype=torch.float32)
        q = q[None] if q.dim() == 1 else q
        if q.dim() != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}) vectors, got shape {tuple(q.shape)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = torch.nn.functional.normalize(q, dim=-1)
        if exact is False and not self.has_faiss_index:
            raise ValueError("exact=False needs a faiss index: call add_faiss_index() first")
        if exact or not self.has_faiss_index:
            scores, rows = (q @ self.embeddings.T).topk(min(k, len(self)), dim=-1)
            return scores.numpy(), rows.numpy()
        result = self._searchable.search_batch(COLUMN, np.ascontiguousarray(q.numpy()), k=k)
        return np.asarray(result.total_scores), np.asarray(result.total_indices)

    def search_text(
        self,
        text: str | Sequence[str],
        k: int = 8,
        template: str | Sequence[str] | None = None,
        exact: bool | None = None,
    ) -> list[SearchHit] | list[list[SearchHit]]:
        """Shapes that match a description (one text: a list of hits; several: a list per text)."""
        texts = [text] if isinstance(text, str) else list(text)
        hits = self.search_vectors(
            embed_texts(self.embedder, texts, template or self.config.get("template")), k, exact
        )
        return hits[0] if isinstance(text, str) else hits

    def search_shape(
        self, shape: Any, k: int = 8, exact: bool | None = None
    ) -> list[SearchHit] | list[list[SearchHit]]:
        """Shapes like a query file or `(N, 3+)` array (one: a list of hits); a list of them gives a list per query."""
        single = not isinstance(shape, list | tuple)
        hits = self.search_vectors(embed_shapes(self.embedder, [shape] if single else shape), k, exact)
        return hits[0] if single else hits


# ---------------------------------------------------------------------------------------------------- build steps


def _query_config(embedder: PointCloudFeatureExtractionPipeline, model: Any) -> dict:
    front_end = embedder.front_end
    name = model if isinstance(model, str | os.PathLike) else embedder.model.name_or_path
    templates = list(embedder.model.config.prompt_templates)
    return {
        "model": os.fspath(name) if name else None,
        "up_axis": front_end.up_axis,
        "views": front_end.views,
        "num_points": front_end.num_points,
        # One template as a string (as in every index built before template ensembles were kept), several as a list.
        "template": templates[0] if len(templates) == 1 else templates,
    }


def _write_or_check_manifest(output: Path, manifest: dict) -> None:
    path = output / MANIFEST_NAME
    if path.is_file():
        stored = json.loads(path.read_text())
        different = [key for key in manifest if stored.get(key) != manifest[key]]
        if different:
            shown = ", ".join(f"{key}: {stored.get(key)!r} -> {manifest[key]!r}" for key in different)
            raise ValueError(
                f"{output} holds a build with other settings ({shown}); remove it or choose another output"
            )
        return
    output.mkdir(parents=True, exist_ok=True)
    _write_json(path, manifest)


def _chunk_path(chunk_dir: Path, chunk: int) -> Path:
    return chunk_dir / f"chunk-{chunk:06d}.npz"


def _embed_chunk(
    src: _Source,
    embedder: PointCloudFeatureExtractionPipeline,
    chunk: int,
    chunk_size: int,
    batch_size: int,
    on_error: str,
    chunk_dir: Path,
    bar,
) -> None:
    rows = range(chunk * chunk_size, min((chunk + 1) * chunk_size, len(src.names)))
    kept, skipped = [], []

    def clouds() -> Iterator[np.ndarray]:
        for i in rows:
            try:
                cloud = src.load(i)
            except DatasetFormatError as error:
                if on_error == "raise":
                    raise
                skipped.append({"name": src.names[i], "path": src.paths[i], "error": str(error)})
                bar.update(1)
                continue
            kept.append(i)
            yield cloud

    vectors = []
    for vector in embedder(clouds(), batch_size=batch_size, return_tensors=True):
        vectors.append(vector)
        bar.update(1)
    embeddings = (
        torch.stack(vectors).numpy()
        if vectors
        else np.zeros((0, embedder.model.config.projection_dim), np.float32)
    )
    final = _chunk_path(chunk_dir, chunk)
    tmp = final.with_name(f"{final.stem}.{os.getpid()}.tmp.npz")  # unique: shards may share the folder
    np.savez(
        tmp,
        embeddings=embeddings,
        names=np.array([src.names[i] for i in kept], dtype=str),
        paths=np.array([src.paths[i] for i in kept], dtype=str),
        skipped=np.array(json.dumps(skipped)),
    )
    os.replace(tmp, final)


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------- pictures


def save_hits_image(
    hits: Sequence[SearchHit],
    path: str | os.PathLike,
    up_axis: str = "y",
    columns: int = 4,
    image_size: int = 224,
    title: str | None = None,
):
    """Write a PNG of the hits' front views (depth, near = dark), each captioned with rank, name and score.

    Shapes are read from their stored paths; a hit whose file is gone shows an empty cell saying so.
    Returns the PIL image.
    """
    from PIL import Image, ImageDraw

    from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor

    if not hits:
        raise ValueError("no hits to draw")
    front_end = CLIP2PointFeatureExtractor(
        num_points=2048, up_axis=up_axis, views=[[0.0, 0.0]], image_size=image_size
    )
    cols = min(columns, len(hits))
    rows = -(-len(hits) // cols)
    pad, caption, head = 6, 28, 18 if title else 0
    sheet = Image.new(
        "L", (cols * (image_size + pad) + pad, head + rows * (image_size + caption + pad) + pad), 255
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title[: (sheet.width - 2 * pad) // 6], fill=0)
    max_chars = image_size // 6
    for rank, hit in enumerate(hits):
        r, c = divmod(rank, cols)
        x0, y0 = pad + c * (image_size + pad), head + pad + r * (image_size + caption + pad)
        try:
            points = front_end.prepare_point_clouds([read_point_cloud(hit.path)])
            grey = front_end.renderer.render_intensity(points, front_end.views)[0, 0]
            cell = Image.fromarray((grey.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        except (DatasetFormatError, OSError, ValueError):
            cell = Image.new("L", (image_size, image_size), 230)
            ImageDraw.Draw(cell).text((6, image_size // 2), "(file not readable)", fill=0)
        sheet.paste(cell, (x0, y0))
        name = hit.name if len(hit.name) <= max_chars else "..." + hit.name[-(max_chars - 3) :]
        draw.text((x0, y0 + image_size + 2), f"{rank + 1}. {name}", fill=0)
        draw.text((x0, y0 + image_size + 14), f"score {hit.score:.3f}", fill=0)
    sheet.save(os.fspath(path))
    return sheet


__all__ = [
    "EXACT_SEARCH_MAX",
    "SearchHit",
    "ShapeIndex",
    "embed_shapes",
    "embed_texts",
    "load_embedder",
    "save_hits_image",
]
