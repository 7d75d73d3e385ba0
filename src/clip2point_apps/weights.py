"""Which weights the demo and `clip2point classify` use: the one named, else the best that can be reached.

Without ``--model`` the order is: the package's published CLIP2Point checkpoint
(:data:`DEFAULT_MODEL_ID`), a folder written by ``clip2point convert`` from the authors' ``best_eval.pth``
(``$CLIP2POINT_MODEL``, else :data:`DEFAULT_CONVERTED_DIR`), plain CLIP as the depth encoder without depth
pre-training (:data:`DEFAULT_CLIP_ID`), and only then a small random model labelled untrained.

Each Hub id is looked up in the local Hub cache first; the Hub itself is asked once (one ``model_info`` call
with a short timeout, which huggingface_hub does not retry) and never under ``HF_HUB_OFFLINE``; only then is
the checkpoint downloaded, with progress bars. So no step waits on an unreachable network.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from clip2point_hf.errors import first_line
from clip2point_hf.loading import ModelLoadError, check_safetensors_files, is_hub_id, is_offline

__all__ = [
    "CONVERTED_MODEL_ENV",
    "DEFAULT_CLIP_ID",
    "DEFAULT_CONVERTED_DIR",
    "DEFAULT_MODEL_ID",
    "UNTRAINED_LABEL",
    "Weights",
    "WeightsUnavailable",
    "build_classifier",
    "converted_model_dir",
    "locate_model",
    "resolve_weights",
]

#: Where the project publishes its converted ViT-B/32 CLIP2Point weights (the one place this id is written).
DEFAULT_MODEL_ID = "clip2point-hf/clip2point-vit-b-32"
#: The CLIP whose image tower serves as a depth encoder when no CLIP2Point weights can be reached.
DEFAULT_CLIP_ID = "openai/clip-vit-base-patch32"
#: Environment variable naming the folder `clip2point convert` wrote from the authors' best_eval.pth.
CONVERTED_MODEL_ENV = "CLIP2POINT_MODEL"
#: That folder when the variable is not set (README, Quick start: the command that fills it).
DEFAULT_CONVERTED_DIR = "~/.cache/clip2point_hf/clip2point-vit-b-32"
#: Seconds the single Hub lookup may take.
HUB_TIMEOUT = 5.0
UNTRAINED_LABEL = "a small UNTRAINED random model (scores are meaningless)"
TASK = "zero-shot-point-cloud-classification"

_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


class WeightsUnavailable(Exception):
    """A model that cannot be used here; the message is one line naming it and why."""


@dataclass(frozen=True)
class Weights:
    """The weights chosen: ``kind`` is ``"clip2point"``, ``"clip"`` (CLIP without depth pre-training) or
    ``"untrained"``; ``folder`` the local folder holding them; ``skipped`` why better sources were not used."""

    kind: str
    source: str
    folder: Path | None
    label: str
    skipped: tuple[str, ...] = ()

    @property
    def untrained(self) -> bool:
        return self.kind == "untrained"

    def describe(self) -> str:
        """The one console line naming the weights (and what could not be reached)."""
        line = f"weights: {self.label}"
        return line + (f"  [not used: {'; '.join(self.skipped)}]" if self.skipped else "")


def converted_model_dir() -> Path:
    """Where the chain looks for a `clip2point convert` folder: ``$CLIP2POINT_MODEL`` or the default folder."""
    return Path(os.environ.get(CONVERTED_MODEL_ENV) or DEFAULT_CONVERTED_DIR).expanduser()


def _usable(folder: Path) -> bool:
    weights = any(folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").is_file()
    return (folder / "config.json").is_file() and weights


@contextlib.contextmanager
def _progress_bars() -> Iterator[None]:
    """Download progress shows even where a caller (the CLI) has turned huggingface_hub's bars off."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    enable_progress_bars()
    try:
        yield
    finally:
        if was_disabled:
            disable_progress_bars()


def locate_model(spec: str, cache_dir: str | os.PathLike | None = None, timeout: float = HUB_TIMEOUT) -> Path:
    """A local folder holding the model ``spec`` (a folder or a Hub id): the folder itself, its snapshot in the
    Hub cache, or a fresh download (config, tokenizer and safetensors files only, with progress).

    Raises :class:`WeightsUnavailable` (one line) when it is neither here nor served by the Hub; the Hub is asked
    at most once, with ``timeout``, and not at all under ``HF_HUB_OFFLINE``.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    path = Path(spec).expanduser()
    if path.exists() and not path.is_dir():
        raise WeightsUnavailable(f"{spec}: is a file, not a model folder")
    if path.is_dir():
        if not _usable(path):
            raise WeightsUnavailable(
                f"{spec}: the folder has no config.json and weights (not a model folder)"
            )
        try:
            check_safetensors_files(path)
        except ModelLoadError as error:
            raise WeightsUnavailable(str(error)) from None
        return path
    if not is_hub_id(spec):
        raise WeightsUnavailable(f"{spec}: no such folder")
    with contextlib.suppress(Exception):  # not cached (or an id the cache cannot hold)
        cached = Path(snapshot_download(spec, cache_dir=cache_dir, local_files_only=True))
        if _usable(cached):
            return cached
    if is_offline():
        raise WeightsUnavailable(f"{spec}: not in the Hub cache, and offline mode is on (HF_HUB_OFFLINE=1)")
    try:
        info = HfApi().model_info(spec, timeout=timeout)
    except RepositoryNotFoundError:
        raise WeightsUnavailable(f"{spec}: no such folder, and not on the Hub") from None
    except Exception as error:  # DNS failure, refused connection, timeout, HTTP error
        raise WeightsUnavailable(f"{spec}: the Hub cannot be reached ({first_line(error)})") from None
    files = [s.rfilename for s in info.siblings or []]
    weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["pytorch_model.bin"]
    print(f"downloading {spec} from the Hub ...", flush=True)
    try:
        with _progress_bars():
            folder = snapshot_download(
                spec, revision=info.sha, cache_dir=cache_dir, allow_patterns=["*.json", "*.txt", *weights]
            )
    except Exception as error:
        raise WeightsUnavailable(f"{spec}: download failed ({first_line(error)})") from None
    return Path(folder)


def _describe(spec: str, folder: Path) -> Weights:
    """What the folder holds, labelled for the console and the pictures."""
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise WeightsUnavailable(
            f"{spec}: the folder has no tokenizer (convert with --tokenizer {DEFAULT_CLIP_ID})"
        )
    if model_type == "clip":
        return Weights("clip", spec, folder, f"CLIP without depth pre-training ({spec})")
    if model_type != "clip2point":
        raise WeightsUnavailable(f"{spec}: a {model_type!r} model, neither CLIP2Point nor CLIP")
    provenance = folder / "provenance.json"
    if provenance.is_file():
        record = json.loads(provenance.read_text())
        if record.get("layout") == "clip":
            return Weights("clip2point", spec, folder, f"CLIP without depth pre-training (converted, {spec})")
        checkpoint = record.get("checkpoint") or "checkpoint"
        return Weights(
            "clip2point", spec, folder, f"the authors' CLIP2Point {checkpoint}, converted ({spec})"
        )
    return Weights("clip2point", spec, folder, f"CLIP2Point ({spec})")


def resolve_weights(
    model: str | None = None,
    clip: str = DEFAULT_CLIP_ID,
    converted: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    timeout: float = HUB_TIMEOUT,
) -> Weights:
    """The weights to classify with.

    ``model`` given (a CLIP2Point or CLIP folder or Hub id): exactly that one, or :class:`WeightsUnavailable`.
    Otherwise the first that can be reached of :data:`DEFAULT_MODEL_ID`, the converted folder (``converted``,
    default :func:`converted_model_dir`), ``clip`` without depth pre-training, and the untrained model.
    """
    if model is not None:
        return _describe(model, locate_model(model, cache_dir, timeout))
    skipped: list[str] = []
    for spec in (DEFAULT_MODEL_ID, str(converted or converted_model_dir()), clip):
        try:
            return replace(_describe(spec, locate_model(spec, cache_dir, timeout)), skipped=tuple(skipped))
        except WeightsUnavailable as error:
            skipped.append(str(error))
    return Weights("untrained", "", None, UNTRAINED_LABEL, tuple(skipped))


def _untrained_model():
    """A small random CLIP2Point model at the real rendering settings (10 views, 224 x 224) and its processor."""
    import torch

    from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
    from clip2point_hf.modeling_clip2point import CLIP2PointModel
    from clip2point_hf.processing_clip2point import CLIP2PointProcessor
    from clip2point_hf.testing_utils import make_tiny_config, make_tiny_tokenizer

    torch.manual_seed(0)
    vision = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 224,
        "patch_size": 32,
    }
    model = CLIP2PointModel(make_tiny_config(num_views=10, vision_config=vision)).eval()
    return model, CLIP2PointProcessor(CLIP2PointFeatureExtractor(), make_tiny_tokenizer())


def build_classifier(weights: Weights, device: str | None = None):
    """The zero-shot pipeline on ``weights``: a CLIP2Point folder as saved, CLIP through
    ``CLIP2PointModel.from_clip`` with the reference's rendering settings, or the untrained model."""
    from transformers import AutoConfig, AutoTokenizer, pipeline

    from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
    from clip2point_hf.modeling_clip2point import CLIP2PointModel
    from clip2point_hf.pipeline_clip2point import task_for_architecture
    from clip2point_hf.processing_clip2point import CLIP2PointProcessor

    if weights.kind == "clip2point":  # zero-shot, or a fine-tuned classifier's own pipeline
        architecture = (AutoConfig.from_pretrained(weights.folder).architectures or [None])[0]
        return pipeline(task_for_architecture(architecture), model=str(weights.folder), device=device)
    if weights.kind == "clip":
        model = CLIP2PointModel.from_clip(str(weights.folder)).eval()
        processor = CLIP2PointProcessor(
            CLIP2PointFeatureExtractor(image_size=model.config.vision_config.image_size),
            AutoTokenizer.from_pretrained(weights.folder),
        )
    else:
        model, processor = _untrained_model()
    return pipeline(TASK, model=model, processor=processor, device=device)
