"""`pipeline("zero-shot-point-cloud-classification")`: from a point-cloud file or array to sorted labels.

Each input (a path or an array) is read and sampled by the model's `CLIP2PointProcessor`, then rendered on
the pipeline's device; class prompts are embedded once per label set and reused across batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from transformers import Pipeline

from .data.point_files import read_point_cloud


class ZeroShotPointCloudClassificationPipeline(Pipeline):
    """Zero-shot classification of point clouds with a CLIP2Point model.

    Scores are the softmax over labels of CLIP's logit scale times the (view-weighted) mean cosine
    similarity between the depth views and each prompt, so they are calibrated like CLIP's.

    Example:
        >>> clf = pipeline("zero-shot-point-cloud-classification", model="org/clip2point")
        >>> clf("chair.ply", candidate_labels=["chair", "table", "lamp"])
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._text_cache: dict[tuple, torch.Tensor] = {}

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, seed=None, **kwargs):
        preprocess = {} if seed is None else {"seed": seed}
        forward, postprocess = {}, {}
        if candidate_labels is not None:
            forward["candidate_labels"] = postprocess["candidate_labels"] = _check_labels(candidate_labels)
        if hypothesis_template is not None:
            if "{}" not in hypothesis_template:
                raise ValueError(f"`hypothesis_template` must contain '{{}}', got {hypothesis_template!r}")
            forward["hypothesis_template"] = hypothesis_template
        return preprocess, forward, postprocess

    def __call__(self, inputs, **kwargs):
        if "candidate_labels" not in kwargs:
            raise ValueError("`candidate_labels` is required, e.g. candidate_labels=['chair', 'table']")
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs: str | os.PathLike | np.ndarray | torch.Tensor, seed: int = 0) -> dict:
        return prepare_point_cloud_input(self.processor, inputs, seed)

    def _text_embeddings(self, labels: tuple[str, ...], template: str) -> torch.Tensor:
        key = (labels, template)
        if key not in self._text_cache:
            tokens = self.processor.tokenizer(
                [template.format(label) for label in labels],
                padding=True,
                truncation=True,
                max_length=self.model.config.text_config.max_position_embeddings,
                return_tensors="pt",
            ).to(self.device)
            features = self.model.get_text_features(tokens["input_ids"], tokens["attention_mask"])
            self._text_cache[key] = torch.nn.functional.normalize(features.float(), dim=-1)
        return self._text_cache[key]

    def _forward(
        self, model_inputs: dict, candidate_labels: tuple[str, ...], hypothesis_template=None
    ) -> dict:
        template = hypothesis_template or self.model.config.prompt_template
        points = model_inputs["points"].to(self.device)
        pixel_values = self.processor.renderer.render(points, self.processor.views).to(self.model.dtype)
        point_cloud = self.model.get_point_cloud_features(pixel_values).float()
        logits = point_cloud @ self._text_embeddings(candidate_labels, template).T
        weights = self.model.config.view_weights
        total_weight = sum(weights) if weights else pixel_values.shape[1]
        scale = self.model.logit_scale.exp().float() / total_weight
        return {"scores": (scale * logits).softmax(dim=-1)}

    def postprocess(self, model_outputs: dict, candidate_labels: tuple[str, ...]) -> list[dict]:
        scores = model_outputs["scores"].reshape(-1).tolist()  # (1, K) unbatched, or (K,) from a batch
        ranked = sorted(zip(candidate_labels, scores, strict=True), key=lambda x: -x[1])
        return [{"label": label, "score": score} for label, score in ranked]


def prepare_point_cloud_input(
    processor, inputs: str | os.PathLike | np.ndarray | torch.Tensor, seed: int = 0
) -> dict:
    """One pipeline input (a point or mesh file of any supported type, or an `(N, 3+)` array) -> `{"points":
    (1, num_points, 3)}`. Reading, sampling and normalisation happen here (CPU, possibly in loader workers);
    rendering happens in the pipelines' `_forward`, on their device."""
    points = read_point_cloud(inputs, seed=seed) if isinstance(inputs, str | os.PathLike) else inputs
    return {"points": processor.prepare_point_clouds([points])}


def _check_labels(labels: str | Sequence[str]) -> tuple[str, ...]:
    labels = [label.strip() for label in labels.split(",")] if isinstance(labels, str) else list(labels)
    if not labels or any(not isinstance(label, str) or not label for label in labels):
        raise ValueError(f"`candidate_labels` must be a non-empty list of non-empty strings, got {labels!r}")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"`candidate_labels` has duplicates: {duplicates}")
    return tuple(labels)


__all__ = ["ZeroShotPointCloudClassificationPipeline"]
