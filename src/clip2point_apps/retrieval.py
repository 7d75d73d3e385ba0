"""Search a collection of 3D shapes by text, by shape or by photo, over CLIP2Point point-cloud embeddings.

CLIP2Point's depth encoder puts point clouds in CLIP's embedding space (pre-training aligns it with CLIP's image
tower, and CLIP aligns that with its text tower), so a query text (through the text tower and the model's prompt
template), a query shape (through `pipeline("point-cloud-feature-extraction")`) or a query photo (through CLIP's
image tower and CLIP's image processor, :class:`PhotoEncoder`) is ranked against stored shapes by the cosine
similarity of L2-normalised embeddings.

```python
from clip2point_apps.retrieval import ShapeIndex
index = ShapeIndex.build("path/to/folder", "runs/pretrain", "shapes.index")   # resumable, shardable
index = ShapeIndex.load("shapes.index")             # from any working directory
index.search_text("a chair with armrests", k=8)    # [SearchHit(index, name, path, score), ...]
index.search_shape("query.ply", k=8)
index.search_image("photo.jpg", k=8)                # needs a model with an image tower (PhotoEncoder)
save_hits_image(hits, "hits.png", query_image="photo.jpg")
index.push_to_hub("org/shapes-index"); ShapeIndex.from_hub("org/shapes-index")
```

An index is a folder that can be searched from anywhere:
- ``index_config.json``: what a query needs to be embedded like the stored shapes: the model (an absolute folder
  or a Hub id, resolved when the index was built), embedding size, render settings and prompt template;
- ``data/``: a ``datasets.Dataset`` with ``name``, ``path`` and ``embedding`` (L2-normalised float32), saved with
  ``save_to_disk``. Paths are stored relative to the index folder (so an index travels with its shapes) and
  held absolute in memory;
- ``faiss.index`` (optional): an approximate nearest-neighbour index made by datasets' ``add_faiss_index`` with
  faiss-cpu (``pip install clip2point-hf[search]``). Exact search (one matrix product) is always available, is
  the reference, and is the default for small sets;
- ``build.json`` and, while a build runs, ``chunks/``: the build's manifest and its finished chunks.

A build cuts the sorted inputs into chunks of ``chunk_size``; each finished chunk is written atomically (temporary
name, then rename), so a killed build loses at most the chunk it was on and a rerun resumes. Under
``accelerate launch`` with N processes, process ``r`` embeds chunks ``c`` with ``c % N == r`` and the main process
merges once all are done. Without accelerate (e.g. SLURM arrays), ``num_shards`` / ``shard_index`` give chunk ``c``
to shard ``c % num_shards`` over one output folder; running the build without ``shard_index`` then embeds whatever
is missing and merges.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
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
#: 2: shape paths relative to the index folder, the model an absolute folder or a Hub id.
FORMAT_VERSION = 2
#: The split name of an index published with :meth:`ShapeIndex.push_to_hub`.
HUB_SPLIT = "train"
#: The subfolder of a model folder that holds its CLIP image tower and CLIP's image processor (as diffusers'
#: pipelines keep an ``image_encoder/``): what a photo query goes through.
IMAGE_ENCODER_DIR = "image_encoder"
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
    processor's up axis overridden when `up_axis` is given. A name that is neither a folder nor a Hub id, or a Hub
    id that cannot be had, fails at once in one line (`clip2point_hf.loading.resolve_model`)."""
    if isinstance(model, PointCloudFeatureExtractionPipeline):
        embedder = model
    else:
        from transformers import pipeline

        import clip2point_hf  # noqa: F401  (registers the task)
        from clip2point_hf.loading import resolve_model

        embedder = pipeline("point-cloud-feature-extraction", model=resolve_model(model), device=device)
    if up_axis is not None:
        if up_axis not in UP_AXES:
            raise ValueError(f"`up_axis` must be one of {list(UP_AXES)}, got {up_axis!r}")
        embedder.front_end.up_axis = up_axis
    return embedder


# ---------------------------------------------------------------------------------------------------- text queries

#: Words that open a noun phrase of their own. A query starting with one keeps it, in place of the template's
#: article: "a horse" under "image of a {}" is "image of a horse", not "image of a a horse".
QUERY_DETERMINERS = frozenset(
    {
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "every",
        "each",
        "no",
        "several",
        "many",
    }
    | {"few", "my", "your", "his", "her", "its", "our", "their"}
    | {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
)
_ARTICLES = frozenset({"a", "an", "the"})


def query_prompt(text: str, template: str) -> str:
    """The prompt a search text becomes under `template` (e.g. the model's ``"image of a {}"``).

    - A text that already starts with the template's words before its article ("image of a red car" under
      "image of a {}") is used as it is.
    - A text that starts with a determiner ("a horse", "an old chair", "the lamp", "two chairs": see
      :data:`QUERY_DETERMINERS`) replaces the template's own article: "image of a horse".
    - Any other text goes whole into the template: "chair with armrests" -> "image of a chair with armrests"
      (a bare class name thus gives exactly the zero-shot prompt).
    """
    if "{}" not in template:
        raise ValueError(f"the prompt template must contain '{{}}', got {template!r}")
    query = " ".join(text.split())
    if not query:
        raise ValueError("the query text is empty")
    before, _, after = template.partition("{}")
    words = before.split()
    article = words[-1] if words and words[-1].lower() in _ARTICLES else None
    lead = " ".join(words[:-1] if article else words)
    if lead and (query.lower() + " ").startswith(lead.lower() + " "):
        return query
    if article and query.split()[0].lower() in QUERY_DETERMINERS:
        before = before.rstrip()[: -len(article)]
    return f"{before}{query}{after}"


def embed_texts(
    embedder: PointCloudFeatureExtractionPipeline,
    texts: Sequence[str],
    template: str | Sequence[str] | None = None,
) -> np.ndarray:
    """(len(texts), D) L2-normalised text embeddings: each text made a prompt by :func:`query_prompt` under each
    `template` -- one, or several averaged as an ensemble (default: the model's ``config.prompt_templates``, e.g.
    ``["image of a {}"]``) -- then CLIP's text tower."""
    from clip2point_hf.prompts import encode_class_prompts

    tokenizer = getattr(embedder.processor, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("the model's processor has no tokenizer, so it cannot embed a query text")
    templates = template or embedder.model.config.prompt_templates
    templates = [templates] if isinstance(templates, str) else list(templates)
    if not templates:
        raise ValueError("no prompt template given")
    with torch.inference_mode():
        total = sum(
            encode_class_prompts(embedder.model, tokenizer, [query_prompt(text, t) for text in texts], ["{}"])
            for t in templates
        )
        return torch.nn.functional.normalize(total, dim=-1).cpu().numpy()


def embed_shapes(
    embedder: PointCloudFeatureExtractionPipeline, shapes: Sequence[Any], batch_size: int = 32
) -> np.ndarray:
    """(len(shapes), D) L2-normalised point-cloud embeddings of files or `(N, 3+)` arrays."""
    inputs = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in shapes]
    vectors = embedder(inputs, batch_size=batch_size, return_tensors=True)
    return torch.stack(list(vectors)).numpy()


# ---------------------------------------------------------------------------------------------------- photo queries

#: Model classes that hold a CLIP image tower: (tower, projection) attribute names.
IMAGE_TOWERS = {
    "CLIP2PointForPreTraining": (
        "image_model",
        "image_projection",
    ),  # the frozen image encoder of pre-training
    "CLIP2PointForPointCloudClassification": ("clip_model", "clip_projection"),  # the GDPA's CLIP path
    "CLIPModel": ("vision_model", "visual_projection"),
}


def open_photo(photo: Any):
    """A PIL RGB image from a path, a PIL image or an (H, W, 3) uint8 array; transparency is composited onto white
    (the background of the renderings pre-training aligns with)."""
    from PIL import Image, UnidentifiedImageError

    from clip2point_hf.data.transforms import composite_on_white

    if isinstance(photo, str | os.PathLike):
        try:
            with Image.open(photo) as opened:
                opened.load()
                photo = opened.copy()
        except FileNotFoundError:
            raise DatasetFormatError(photo, "photo not found") from None
        except (UnidentifiedImageError, OSError) as error:
            raise DatasetFormatError(photo, f"not an image PIL can read ({error})") from None
    elif isinstance(photo, np.ndarray):
        photo = Image.fromarray(photo)
    if not isinstance(photo, Image.Image):
        raise TypeError(f"a photo must be a file path, a PIL image or an array, got {type(photo).__name__}")
    return composite_on_white(photo)


class PhotoEncoder:
    """CLIP's image tower with its projection, and CLIP's image processor: photos -> L2-normalised embeddings.

    CLIP2Point's pre-training aligns the depth encoder with exactly this tower (frozen), so a photo embedded here
    is ranked against stored shapes like a text or a shape. Load it with :meth:`from_pretrained` (a model folder
    with ``image_encoder/``, a CLIP folder or Hub id, or a saved model class that holds an image tower) or build
    it from a loaded model with :meth:`from_model`; :meth:`save_pretrained` writes the ``image_encoder/`` layout.
    """

    def __init__(self, model, image_processor, source: str = ""):
        self.model = model.eval()
        self.image_processor = image_processor
        self.source = source

    def __repr__(self) -> str:
        return f"PhotoEncoder({self.source or 'in memory'}, dim {self.dim})"

    @property
    def dim(self) -> int:
        return self.model.config.projection_dim

    @staticmethod
    def default_image_processor(image_size: int):
        """CLIP's image processing (resize the short side, centre crop, CLIP mean/std) at the tower's size."""
        from transformers import CLIPImageProcessor

        size = int(image_size)
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    @classmethod
    def from_model(cls, model, image_processor=None, source: str = "") -> PhotoEncoder:
        """The image tower of a loaded model (see :data:`IMAGE_TOWERS`) as a ``CLIPVisionModelWithProjection``."""
        from transformers import CLIPVisionModelWithProjection

        kind = type(model).__name__
        if kind not in IMAGE_TOWERS:
            raise _no_image_tower(source or kind, kind)
        tower_name, projection_name = IMAGE_TOWERS[kind]
        config = _with_projection(model.config.vision_config, model.config.projection_dim)
        tower = CLIPVisionModelWithProjection(config).to(model.dtype)
        tower.vision_model.load_state_dict(getattr(model, tower_name).state_dict())
        tower.visual_projection.load_state_dict(getattr(model, projection_name).state_dict())
        processor = image_processor or cls.default_image_processor(config.image_size)
        return cls(tower, processor, source)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> PhotoEncoder:
        """From a model folder or Hub id: its ``image_encoder/`` when it has one, else its own weights when it is a
        CLIP or a CLIP2Point class with an image tower; a model without image weights is one line saying so."""
        from transformers import AutoConfig, CLIPImageProcessor, CLIPVisionModelWithProjection

        import clip2point_hf
        from clip2point_hf.loading import resolve_model

        source = resolve_model(name_or_path)
        subfolder = IMAGE_ENCODER_DIR if _has_file(source, f"{IMAGE_ENCODER_DIR}/config.json") else ""
        config = AutoConfig.from_pretrained(source, subfolder=subfolder)
        kind = (config.architectures or [type(config).__name__])[0]
        if config.model_type in ("clip", "clip_vision_model"):
            if config.model_type == "clip":  # the projection's width is the full config's, not the tower's
                config = _with_projection(config.vision_config, config.projection_dim)
            model = CLIPVisionModelWithProjection.from_pretrained(source, subfolder=subfolder, config=config)
            processor_file = (
                f"{subfolder}/preprocessor_config.json" if subfolder else "preprocessor_config.json"
            )
            processor = (
                CLIPImageProcessor.from_pretrained(source, subfolder=subfolder)
                if _has_file(source, processor_file)
                else cls.default_image_processor(model.config.image_size)
            )
            return cls(model, processor, os.fspath(name_or_path))
        if kind in IMAGE_TOWERS and hasattr(clip2point_hf, kind):
            return cls.from_model(
                getattr(clip2point_hf, kind).from_pretrained(source), source=os.fspath(name_or_path)
            )
        raise _no_image_tower(os.fspath(name_or_path), kind)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The tower and the image processor, loadable by :meth:`from_pretrained` (and by transformers' own
        ``CLIPVisionModelWithProjection`` / ``CLIPImageProcessor``)."""
        self.model.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)

    def embed(self, photos: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """(len(photos), D) L2-normalised embeddings of image files, PIL images or uint8 arrays."""
        device = next(self.model.parameters()).device
        vectors = []
        for start in range(0, len(photos), batch_size):
            images = [open_photo(photo) for photo in photos[start : start + batch_size]]
            pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                embeds = self.model(pixel_values=pixels.to(device, self.model.dtype)).image_embeds
            vectors.append(torch.nn.functional.normalize(embeds.float(), dim=-1).cpu())
        return torch.cat(vectors).numpy()


def _with_projection(vision_config, projection_dim: int):
    """A copy of a CLIP vision config whose projection is `projection_dim` wide."""
    config = copy.deepcopy(vision_config)
    config.projection_dim = projection_dim
    return config


def _has_file(source: str, filename: str) -> bool:
    """Whether a folder, or a Hub repo (asked through huggingface_hub), holds `filename`."""
    if Path(source).is_dir():
        return (Path(source) / filename).is_file()
    from huggingface_hub import file_exists

    return file_exists(source, filename)


def _no_image_tower(source: str, kind: str):
    from clip2point_hf.loading import ModelLoadError

    return ModelLoadError(
        source,
        f"a {kind} has no image tower to embed a photo with (it holds depth and text towers only): give the CLIP "
        "it was pre-trained from (--image_model, e.g. openai/clip-vit-base-patch32) or a model folder with "
        f"{IMAGE_ENCODER_DIR}/, or search by text or --like SHAPE",
    )


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
        root = Path(os.path.abspath(source))  # held absolute: the index is searched from any folder
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
            paths = [os.path.abspath(os.path.join(paths_root, p)) if p else p for p in paths]
        up_axis = dataset_metadata(source).get("up_axis")
        return _Source(f"dataset {source.info.dataset_name or ''}".strip(), names, paths, source, up_axis)
    raise TypeError(
        f"`source` must be a folder, a datasets.Dataset or DatasetDict, got {type(source).__name__}"
    )


# ---------------------------------------------------------------------------------------------------- the index


class ShapeIndex:
    """Stored shape embeddings with their names and paths, searchable by text, by shape, by photo or by vector.

    Args:
        dataset: a ``datasets.Dataset`` with ``name``, ``path`` and ``embedding`` (L2-normalised float32) columns.
        config: what queries need (``model``, ``up_axis``, ``template`` -- a string, or a list for a template
            ensemble --, ...), as in ``index_config.json``.
        embedder: the feature-extraction pipeline for queries; by default loaded from ``config["model"]`` on the
            first text or shape query.
        image_encoder: the :class:`PhotoEncoder` for photo queries; by default loaded from ``config["model"]`` on
            the first photo query.
    """

    def __init__(
        self,
        dataset,
        config: dict | None = None,
        embedder: PointCloudFeatureExtractionPipeline | None = None,
        image_encoder: PhotoEncoder | None = None,
    ) -> None:
        for column in ("name", "path", COLUMN):
            if column not in dataset.column_names:
                raise ValueError(
                    f"the index dataset has no `{column}` column (columns: {dataset.column_names})"
                )
        self.dataset = dataset
        self.config = dict(config or {})
        self._embedder = embedder
        self._image_encoder = image_encoder
        self.folder: Path | None = None  # the folder it was loaded from or saved to: errors name it
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
            self._embedder = load_embedder(self.model_location(), up_axis=self.config.get("up_axis"))
        return self._embedder

    @embedder.setter
    def embedder(self, embedder: PointCloudFeatureExtractionPipeline) -> None:
        self._embedder = embedder

    @property
    def image_encoder(self) -> PhotoEncoder:
        if self._image_encoder is None:
            self._image_encoder = PhotoEncoder.from_pretrained(self.model_location())
        return self._image_encoder

    @image_encoder.setter
    def image_encoder(self, image_encoder: PhotoEncoder) -> None:
        self._image_encoder = image_encoder

    def model_location(self) -> str:
        """The index's model: a folder that must exist, or a Hub id. A folder name is never sent to the Hub: a
        model folder that is gone is one line naming it and this index."""
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        from clip2point_hf.errors import ModelLoadError

        model = self.config.get("model")
        where = f"the index {self.folder}" if self.folder else "this index"
        if not model:
            raise ValueError(f"{where} names no model: pass --model (or `embedder=`) to embed queries")
        if Path(model).is_dir():
            return model
        # Format 2 stores folders absolute; format 1 stored `--model` as typed, so only org/name is a Hub id there.
        legacy = self.config.get("format_version", FORMAT_VERSION) < 2
        if not os.path.isabs(model) and ("/" in model or not legacy):
            try:
                validate_repo_id(model)
                return model
            except HFValidationError:
                pass
        raise ModelLoadError(
            model,
            f"model folder not found (named by {where}); pass --model with its folder or Hub id",
        )

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
            model: a CLIP2Point model folder or Hub id, or a feature-extraction pipeline. The index records a folder
                as an absolute path and a Hub id as it is, so that it is searched from any working directory.
            output: the index folder. A rerun with the same source and settings resumes there.
            split: the split of a ``DatasetDict`` source.
            up_axis: the shapes' up axis, one of ``x``, ``y``, ``z``, ``-x``, ``-y``, ``-z`` (``"z"`` for ModelNet-style
                files); default: what the dataset's loader recorded, else the model processor's.
            paths_root: for a dataset source, the folder its ``path`` column is relative to (the package's loaders
                store paths relative to the dataset folder): stored joined, so that hits can be read and drawn.
            num_shards, shard_index: for schedulers without accelerate (SLURM arrays): embed only the chunks ``c``
                with ``c % num_shards == shard_index`` and return ``None``; a later call without ``shard_index`` (in
                one process, once the shards are done) embeds whatever is still missing and merges. Under
                ``accelerate launch`` leave them out: the processes split the chunks by accelerate's process index
                and the main process merges once every process is done (the others return ``None``).
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
        from clip2point_hf.distributed import launched_processes

        processes = launched_processes()
        if processes is not None:
            if shard_index is not None or num_shards != 1:
                raise ValueError(
                    f"`num_shards`/`shard_index` are for runs without accelerate; this is one of "
                    f"{processes.num_processes} processes of `accelerate launch`, which share the work already"
                )
            num_shards, shard_index = processes.num_processes, processes.process_index
            device = processes.device if device is None else device
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
            return (
                cls.load(output, embedder=embedder)
                if processes is None or processes.is_main_process
                else None
            )
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
        if processes is not None:  # the main process merges once every process has written its chunks
            processes.wait_for_everyone()
            index = (
                cls._merge(output, manifest, num_chunks, embedder, faiss)
                if processes.is_main_process
                else None
            )
            processes.wait_for_everyone()
            return index
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
        index.folder = output
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
        """Write ``index_config.json``, ``data/`` and (if any) ``faiss.index`` to the folder `path`; shape paths are
        written relative to it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        stored = self.stored_dataset(path)
        with atomic_folder(path / DATA_DIR) as tmp:
            stored.save_to_disk(os.fspath(tmp))
        if self.has_faiss_index:
            self._searchable.save_faiss_index(COLUMN, os.fspath(path / f"{FAISS_NAME}.tmp"))
            os.replace(path / f"{FAISS_NAME}.tmp", path / FAISS_NAME)
        elif (path / FAISS_NAME).exists():
            (path / FAISS_NAME).unlink()
        self.config["saved_in"] = os.path.abspath(path)
        _write_json(path / CONFIG_NAME, self.config)
        self.folder = path

    def stored_dataset(self, folder: str | os.PathLike):
        """The dataset as written into `folder`: shape paths relative to it (absolute where no relative path
        exists, e.g. another drive)."""
        base = os.path.abspath(folder)

        def relative(directory: str) -> str:
            try:
                return os.path.relpath(os.path.abspath(directory), base)
            except ValueError:
                return os.path.abspath(directory)

        return _with_paths(self.dataset, _rebase(self.paths(), relative))

    def paths(self) -> list[str]:
        """The stored shapes' paths, in row order ("" where a row has none)."""
        return self.dataset.with_format("arrow", columns=["path"])[:].column("path").to_pylist()

    def _resolve_paths(self, folder: Path) -> None:
        """Hold the paths stored relative to `folder` as absolute ones. An index moved without its shapes still
        finds them where it was saved (``saved_in``), when they are there and not beside the index."""
        paths = self.paths()
        first = next((p for p in paths if p and not os.path.isabs(p)), None)
        if first is None:
            return
        base = os.path.abspath(folder)
        saved_in = self.config.get("saved_in")

        def found(folder: str) -> bool:  # normalised first: "gone-folder/../x" exists for no file system
            return os.path.exists(os.path.normpath(os.path.join(folder, first)))

        if saved_in and not found(base) and found(saved_in):
            base = saved_in
        self.dataset = _with_paths(
            self.dataset, _rebase(paths, lambda d: os.path.normpath(os.path.join(base, d)))
        )

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
        index.folder = path
        if config.get("format_version", 1) >= 2:  # format 1 kept paths as the build was given them
            index._resolve_paths(path)
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
        """Shapes that match a description (one text: a list of hits; several: a list per text). Each text becomes
        a prompt by :func:`query_prompt` under `template` (default: the index's, else the model's)."""
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

    def search_image(
        self, image: Any, k: int = 8, exact: bool | None = None
    ) -> list[SearchHit] | list[list[SearchHit]]:
        """Shapes that a photo shows: an image file, PIL image or uint8 array (one: a list of hits; a list of them:
        a list per photo), through CLIP's image tower (:attr:`image_encoder`)."""
        single = not isinstance(image, list | tuple)
        encoder = self.image_encoder
        if encoder.dim != self.dim:
            raise ValueError(
                f"the image tower of {encoder.source or 'the image encoder'} gives {encoder.dim}-d embeddings, the "
                f"index holds {self.dim}-d ones: it is not the CLIP this index's model was pre-trained from"
            )
        hits = self.search_vectors(encoder.embed([image] if single else list(image)), k, exact)
        return hits[0] if single else hits

    # -- sharing on the Hub -----------------------------------------------------------------------

    def push_to_hub(
        self,
        repo_id: str,
        *,
        model: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload shape index",
    ):
        """Publish the index as a Hub dataset repo: ``data/train-*.parquet`` (``name``, ``path`` relative to the
        index folder, ``embedding``; ``datasets.load_dataset(repo_id)`` reads it), ``index_config.json`` and a
        card. ``model``: the Hub id queries should use, when the index names a local folder. Returns the commit."""
        from datasets import DatasetDict

        from clip2point_hf.data.sharing import upload_hub_folder, write_hub_folder

        config = {key: value for key, value in self.config.items() if key != "saved_in"}
        config["model"] = model or config.get("model")
        if config["model"] and os.path.isabs(config["model"]):
            logger.warning(
                "the index names the local model folder %s: pass model= (a Hub id) so that others can query it",
                config["model"],
            )
        card = (
            f"A CLIP2Point shape index: {len(self)} shapes, {self.dim}-d L2-normalised embeddings of "
            f"{config.get('model')}. Search it with `ShapeIndex.from_hub({repo_id!r})` "
            "(`clip2point_apps.retrieval`); `index_config.json` holds what queries need."
        )
        with tempfile.TemporaryDirectory() as tmp:
            write_hub_folder(
                DatasetDict({HUB_SPLIT: self.stored_dataset(self.folder or os.getcwd())}),
                tmp,
                metadata=config,
                metadata_file=CONFIG_NAME,
                card_text=card,
                tags=["clip2point", "shape-retrieval"],
            )
            return upload_hub_folder(
                tmp, repo_id, private=private, token=token, commit_message=commit_message
            )

    @classmethod
    def from_hub(
        cls,
        repo_id_or_folder: str | os.PathLike,
        *,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        embedder: PointCloudFeatureExtractionPipeline | None = None,
    ) -> ShapeIndex:
        """An index published by :meth:`push_to_hub`, from its Hub repo or a folder in that layout (a folder
        written by :meth:`save` loads too). Its faiss index, if it had one, is built again."""
        from datasets import load_dataset

        from clip2point_hf.data.sharing import hub_folder

        folder = hub_folder(repo_id_or_folder, revision=revision, token=token)
        if (folder / DATA_DIR / "state.json").is_file() or (
            folder / DATA_DIR / "dataset_info.json"
        ).is_file():
            return cls.load(folder, embedder)
        if not (folder / CONFIG_NAME).is_file():
            raise DatasetFormatError(folder, f"not a shape index (no {CONFIG_NAME})")
        config = json.loads((folder / CONFIG_NAME).read_text())
        dataset = load_dataset(
            os.fspath(folder), split=HUB_SPLIT, cache_dir=None if cache_dir is None else os.fspath(cache_dir)
        )
        index = cls(dataset, config, embedder)
        index.folder = folder
        index._resolve_paths(folder)
        faiss = config.pop("faiss", None)
        if faiss:
            index.add_faiss_index(
                faiss["factory"], nprobe=faiss.get("nprobe"), ef_search=faiss.get("ef_search")
            )
        return index


# ---------------------------------------------------------------------------------------------------- build steps


def _query_config(embedder: PointCloudFeatureExtractionPipeline, model: Any) -> dict:
    """What a query needs; the model as an absolute folder or a Hub id, so that any working directory finds it."""
    front_end = embedder.front_end
    name = os.fspath(model if isinstance(model, str | os.PathLike) else embedder.model.name_or_path or "")
    if name and Path(name).is_dir():
        name = os.path.abspath(name)
    templates = list(embedder.model.config.prompt_templates)
    return {
        "model": name or None,
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


def _rebase(paths: list[str], convert_folder) -> list[str]:
    """Each non-empty path with its folder converted by `convert_folder`, called once per distinct folder (a million
    rows hold few folders)."""
    converted: dict[str, str] = {}
    out = []
    for path in paths:
        if not path:
            out.append(path)
            continue
        folder, name = os.path.split(path)
        if folder not in converted:
            converted[folder] = convert_folder(folder)
        out.append(name if converted[folder] in ("", ".") else os.path.join(converted[folder], name))
    return out


def _with_paths(dataset, paths: list[str]):
    """`dataset` with its ``path`` column replaced, columns in the same order."""
    from datasets.fingerprint import generate_random_fingerprint

    order = dataset.column_names
    return (
        dataset.remove_columns("path", new_fingerprint=generate_random_fingerprint())
        .add_column("path", paths, new_fingerprint=generate_random_fingerprint())
        .select_columns(order, new_fingerprint=generate_random_fingerprint())
    )


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
    query_image: Any = None,
):
    """Write a PNG of the hits' front views (depth, near = dark), each captioned with rank, file name and score;
    with `query_image` (a photo query: path, PIL image or array) the photo comes first, captioned "query".

    Shapes are read from their stored paths; a hit that cannot be drawn shows a grey cell naming the path it tried.
    Returns the PIL image.
    """
    from PIL import Image, ImageDraw, ImageOps

    from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor

    if not hits:
        raise ValueError("no hits to draw")
    front_end = CLIP2PointFeatureExtractor(
        num_points=2048, up_axis=up_axis, views=[[0.0, 0.0]], image_size=image_size
    )
    cells = []  # (picture, first caption line, second caption line)
    if query_image is not None:
        photo = ImageOps.contain(open_photo(query_image), (image_size, image_size))
        framed = Image.new("RGB", (image_size, image_size), (255, 255, 255))
        framed.paste(photo, ((image_size - photo.width) // 2, (image_size - photo.height) // 2))
        name = Path(query_image).name if isinstance(query_image, str | os.PathLike) else "photo"
        cells.append((framed, "query", name))
    for rank, hit in enumerate(hits, 1):
        cells.append(
            (
                _hit_picture(front_end, hit, image_size),
                f"{rank}. {Path(hit.path).name or hit.name}",
                f"score {hit.score:.3f}",
            )
        )
    cols = min(columns, len(cells))
    rows = -(-len(cells) // cols)
    pad, caption, head = 6, 28, 18 if title else 0
    sheet = Image.new(
        "RGB", (cols * (image_size + pad) + pad, head + rows * (image_size + caption + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title[: (sheet.width - 2 * pad) // 6], fill="black")
    for i, (picture, first, second) in enumerate(cells):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (image_size + pad), head + pad + r * (image_size + caption + pad)
        sheet.paste(picture, (x0, y0))
        draw.text((x0, y0 + image_size + 2), _fit(first, image_size), fill="black")
        draw.text((x0, y0 + image_size + 14), _fit(second, image_size), fill="black")
    sheet.save(os.fspath(path))
    return sheet


def _hit_picture(front_end, hit: SearchHit, image_size: int):
    """The hit's front view, or a grey cell saying which path could not be drawn and why."""
    from PIL import Image, ImageDraw

    try:
        if not hit.path:
            raise DatasetFormatError(None, "no path stored")
        points = front_end.prepare_point_clouds([read_point_cloud(hit.path)])
        grey = front_end.renderer.render_intensity(points, front_end.views)[0, 0]
        return Image.fromarray((grey.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).convert("RGB")
    except (DatasetFormatError, OSError, ValueError) as error:
        cell = Image.new("RGB", (image_size, image_size), (230, 230, 230))
        why = "file not found" if hit.path and not os.path.exists(hit.path) else "cannot draw"
        width = max(8, image_size // 6 - 1)
        text = hit.path or str(error)
        chunks = [text[i : i + width] for i in range(0, len(text), width)]
        lines = [f"{why}:", *chunks[: (image_size - 12) // 12 - 1]]
        ImageDraw.Draw(cell).multiline_text((4, 6), "\n".join(lines), fill="black", spacing=2)
        return cell


def _fit(text: str, image_size: int) -> str:
    """`text` cut at its start to a cell's width (about 6 px per character): a path's end says the most."""
    width = image_size // 6
    return text if len(text) <= width else "..." + text[-(width - 3) :]


__all__ = [
    "EXACT_SEARCH_MAX",
    "IMAGE_ENCODER_DIR",
    "QUERY_DETERMINERS",
    "PhotoEncoder",
    "SearchHit",
    "ShapeIndex",
    "embed_shapes",
    "embed_texts",
    "load_embedder",
    "open_photo",
    "query_prompt",
    "save_hits_image",
]
