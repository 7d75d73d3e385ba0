"""Text prompts for point-cloud classes: class-name spellings, prompt templates and prompt encoding.

Used by the loaders (their ``prompt_names`` metadata), the zero-shot pipeline, evaluation, the training
scripts and the CLI. The dataset class lists themselves are in :mod:`clip2point_hf.data.names`.

This module imports only ``torch`` and the standard library: the model and pipeline files import it, and it is
copied flat beside them into Hub folders (``trust_remote_code``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "ENSEMBLE_TEMPLATES",
    "PROMPT_NAMES",
    "PROMPT_NAMINGS",
    "REFERENCE_SHAPENET55_NAMES",
    "REFERENCE_TEMPLATES",
    "encode_class_prompts",
    "prompt_name",
    "prompt_names",
    "resolve_templates",
]

#: Prompt spellings that differ from the plain rule in :func:`prompt_name` (docs/design.md, "Zero-shot classification").
PROMPT_NAMES: dict[str, str] = {
    "night_stand": "night stand",
    "flower_pot": "flower pot",
    "glass_box": "glass box",
    "range_hood": "range hood",
    "tv_stand": "tv stand",
    "trash_bin": "trash bin",
    "file_cabinet": "file cabinet",
    "remote_control": "remote control",
    "myScissor": "scissors",
    "dino_ske": "dinosaur skeleton",
    "two_balls": "two balls",
}

#: The authors' spellings of the 7 ShapeNet-55 classes where ours differ (WordNet style, from the validation
#: prompts of their ``pretraining.py``). Their ModelNet40 and ScanObjectNN prompts (``zeroshot.py``) are
#: ours. ``naming="reference"`` applies them to a class list that holds all 7 classes (ShapeNet-55), and
#: only there: ModelNet40's ``keyboard`` stays ``keyboard``, as in their ``zeroshot.py``.
REFERENCE_SHAPENET55_NAMES: dict[str, str] = {
    "trash_bin": "ashcan",
    "cellphone": "cellular telephone",
    "keyboard": "computer keyboard",
    "file_cabinet": "file",
    "motorbike": "motorcycle",
    "flowerpot": "pot",
    "watercraft": "vessel",
}
#: ``"ours"``: friendly spellings (:data:`PROMPT_NAMES`); ``"reference"``: the authors' where parity is claimed.
PROMPT_NAMINGS = ("ours", "reference")

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def prompt_name(name: str, overrides: Mapping[str, str] | None = None) -> str:
    """The spelling of a class name for a text prompt.

    ``overrides`` first, then :data:`PROMPT_NAMES`, then the plain rule: underscores become spaces,
    camelCase is split, trailing digits are dropped, letters are lower-cased
    (``"night_stand" -> "night stand"``, ``"bird1" -> "bird"``).
    """
    if overrides and name in overrides:
        return overrides[name]
    if name in PROMPT_NAMES:
        return PROMPT_NAMES[name]
    plain = " ".join(_CAMEL.sub(" ", name).replace("_", " ").split()).lower()
    return plain.rstrip("0123456789").rstrip() or plain


def prompt_names(
    dataset_or_names,
    overrides: Mapping[str, str] | None = None,
    distinct: bool = False,
    naming: str = "ours",
) -> list[str]:
    """Prompt-friendly names for a dataset's classes, in label order.

    Accepts a ``datasets.Dataset``/``DatasetDict`` with a ``label`` ``ClassLabel`` column, a
    ``ClassLabel``, or a list of names. ``prompt_names(load_modelnet(...))`` gives
    ``["airplane", ..., "night stand", ...]``.

    ``distinct=True`` is what a classifier needs (the scripts, evaluation): names that would collide under
    the plain rule (SHREC's ``bird1``/``bird2`` -> ``bird``) keep their distinguishing suffix (``bird 1``,
    ``bird 2``), and prompts that still collide are an error. The default is the plain spelling the loaders
    store in their metadata.

    ``naming="reference"`` spells ShapeNet-55 as the authors' code does (:data:`REFERENCE_SHAPENET55_NAMES`),
    for parity with their numbers; ``overrides`` still come first.
    """
    if naming not in PROMPT_NAMINGS:
        raise ValueError(f"prompt naming must be one of {PROMPT_NAMINGS}, got {naming!r}")
    names = _class_names(dataset_or_names)
    if naming == "reference" and set(REFERENCE_SHAPENET55_NAMES) <= set(names):
        overrides = {**REFERENCE_SHAPENET55_NAMES, **(overrides or {})}
    spelled = [prompt_name(n, overrides) for n in names]
    if not distinct:
        return spelled
    counts = {n: spelled.count(n) for n in spelled}
    out = []
    for raw, name in zip(names, spelled):
        if counts[name] > 1:
            plain = " ".join(_CAMEL.sub(" ", raw).replace("_", " ").split()).lower()
            name = re.sub(r"(?<=[a-z])(?=\d)", " ", plain)
        out.append(name)
    if len(set(out)) != len(out):
        raise ValueError(f"class names give duplicate prompts: {out}")
    return out


def _class_names(obj) -> list[str]:
    features = getattr(obj, "features", None)
    if features is not None and "label" in features and hasattr(features["label"], "names"):
        return list(features["label"].names)  # Dataset
    if isinstance(getattr(obj, "names", None), list):
        return list(obj.names)  # ClassLabel
    if isinstance(obj, Mapping) and obj:
        return _class_names(next(iter(obj.values())))  # DatasetDict
    if isinstance(obj, Iterable) and not isinstance(obj, str | Mapping):
        return [str(n) for n in obj]
    raise TypeError(f"cannot find class names in {type(obj).__name__}")


#: The reference's single prompt.
REFERENCE_TEMPLATES = ["image of a {}"]
#: A prompt ensemble for depth renderings (embeddings averaged after normalisation).
ENSEMBLE_TEMPLATES = [
    "image of a {}",
    "a depth map of a {}.",
    "a rendered depth image of a {}.",
    "a grey depth image of a {}.",
    "a point cloud of a {}.",
    "a 3D model of a {}.",
    "a photo of a {}.",
    "a sketch of a {}.",
]


def resolve_templates(prompts: str | Sequence[str] | None) -> list[str]:
    """``"reference"``, ``"ensemble"``, or explicit templates each containing ``{}``."""
    if prompts is None or prompts == "reference" or prompts == ["reference"]:
        return list(REFERENCE_TEMPLATES)
    if prompts == "ensemble" or prompts == ["ensemble"]:
        return list(ENSEMBLE_TEMPLATES)
    templates = [prompts] if isinstance(prompts, str) else list(prompts)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"prompt templates must contain '{{}}' (or be 'reference'/'ensemble'), got {bad}")
    return templates


@torch.no_grad()
def encode_class_prompts(
    model, tokenizer, class_names: Sequence[str], templates: str | Sequence[str]
) -> torch.Tensor:
    """(K, D) L2-normalised float32 class embeddings of a ``CLIP2PointModel``: mean over templates of the normalised
    text embeddings, re-normalised (one template: exactly the reference's embedding).

    The one class-prompt encoder of the package: ``CLIP2PointForPointCloudClassification.set_class_names``, the
    zero-shot pipeline, evaluation and the training scripts all call it. Pass the result to
    ``CLIP2PointModel.forward(text_embeds=...)`` for CLIP-scaled logits.
    """
    templates = [templates] if isinstance(templates, str) else list(templates)
    if not templates:
        raise ValueError("`templates` must hold at least one prompt template")
    device = next(model.parameters()).device
    max_length = model.config.text_config.max_position_embeddings
    total = None
    for template in templates:
        tokens = tokenizer(
            [template.format(n) for n in class_names],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        text = F.normalize(
            model.get_text_features(tokens["input_ids"], tokens.get("attention_mask")).pooler_output.float(),
            dim=-1,
        )
        total = text if total is None else total + text
    return F.normalize(total, dim=-1)
