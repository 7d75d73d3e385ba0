"""Which weights the demo and `clip2point classify` use: the one named, else the best that can be reached.

Without ``--model`` the order is: the package's published CLIP2Point checkpoint
(:data:`DEFAULT_MODEL_ID`), a folder written by ``clip2point convert`` from the authors' ``best_eval.pth``
(``$CLIP2POINT_MODEL``, else :data:`DEFAULT_CONVERTED_DIR`), plain CLIP as the depth encoder without depth
pre-training (:data:`DEFAULT_CLIP_ID`), and only then a small random model labelled untrained.

Each candidate is found by `clip2point_hf.loading.resolve_model`: a folder, else the id's snapshot in the local
Hub cache, else the Hub, asked once through huggingface_hub (its proxy, endpoint, timeout and offline settings)
and never under ``HF_HUB_OFFLINE``; a download shows progress. So no step waits on an unreachable network.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from clip2point_hf.errors import ModelLoadError
from clip2point_hf.loading import TOKENIZER_FILES, resolve_model

__all__ = [
    "CONVERTED_MODEL_ENV",
    "DEFAULT_CLIP_ID",
    "DEFAULT_CONVERTED_DIR",
    "DEFAULT_MODEL_ID",
    "UNTRAINED_LABEL",
    "Weights",
    "build_classifier",
    "converted_model_dir",
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
UNTRAINED_LABEL = "a small UNTRAINED random model (scores are meaningless)"


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


def _locate(spec: str, cache_dir: str | os.PathLike | None) -> Path:
    """The folder holding ``spec`` (`resolve_model`), download progress showing."""
    with _progress_bars():
        return Path(resolve_model(spec, cache_dir=cache_dir))


def _describe(spec: str, folder: Path, *, candidate: bool) -> Weights:
    """What the folder holds, labelled for the console and the pictures. A ``candidate`` of the chain without a
    tokenizer is refused here, so that the chain goes on to the next; a named CLIP2Point folder is checked by the
    pipeline it builds, which says which files it lacks (a fine-tuned classifier needs no tokenizer)."""
    from clip2point_hf.pipeline_clip2point import ZERO_SHOT_TASK, task_for_architecture

    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type")
    has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES)
    if model_type == "clip":
        if not has_tokenizer:  # `build_classifier` pairs CLIP's own tokenizer with a front end
            raise ModelLoadError(
                spec, f"a CLIP folder without tokenizer files ({' or '.join(TOKENIZER_FILES)})"
            )
        return Weights("clip", spec, folder, f"CLIP without depth pre-training ({spec})")
    if model_type != "clip2point":
        raise ModelLoadError(spec, f"a {model_type!r} model, neither CLIP2Point nor CLIP")
    zero_shot = task_for_architecture((config.get("architectures") or [None])[0]) == ZERO_SHOT_TASK
    if candidate and zero_shot and not has_tokenizer:
        raise ModelLoadError(
            spec, f"the folder has no tokenizer (convert with --tokenizer {DEFAULT_CLIP_ID})"
        )
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
) -> Weights:
    """The weights to classify with.

    ``model`` given (a CLIP2Point or CLIP folder or Hub id): exactly that one, or :class:`ModelLoadError`.
    Otherwise the first that can be reached of :data:`DEFAULT_MODEL_ID`, the converted folder (``converted``,
    default :func:`converted_model_dir`), ``clip`` without depth pre-training, and the untrained model.
    """
    if model is not None:
        return _describe(model, _locate(model, cache_dir), candidate=False)
    skipped: list[str] = []
    for spec in (DEFAULT_MODEL_ID, str(converted or converted_model_dir()), clip):
        try:
            described = _describe(spec, _locate(spec, cache_dir), candidate=True)
            return replace(described, skipped=tuple(skipped))
        except ModelLoadError as error:
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
    from clip2point_hf.pipeline_clip2point import ZERO_SHOT_TASK, task_for_architecture
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
    return pipeline(ZERO_SHOT_TASK, model=model, processor=processor, device=device)
