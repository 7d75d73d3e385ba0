"""Point-cloud pipelines: from a point-cloud file or array to sorted labels.

- `pipeline("zero-shot-point-cloud-classification")` (`CLIP2PointModel`): any labels, scored against prompts.
- `pipeline("point-cloud-classification")` (`CLIP2PointForPointCloudClassification`, a fine-tuned GDPA model):
  the model's own classes, with the contract of transformers' `image-classification` (`top_k`,
  `function_to_apply`, labels from `config.id2label`).

Both share `PointCloudPipeline`'s input handling: each input (a file path, an `(N, C)` array, a list of them, or a
`(B, N, C)` array as B clouds) is read and sampled by the model's `CLIP2PointProcessor`, then rendered on the
pipeline's device. This file is copied flat into Hub folders (`custom_pipelines`), so it imports only flat
siblings and third-party packages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from transformers import Pipeline

from .errors import ModelLoadError
from .feature_extraction_clip2point import CLIP2PointFeatureExtractor
from .point_files import read_point_cloud
from .points_clip2point import UP_AXES
from .processing_clip2point import point_cloud_front_end
from .prompts import encode_class_prompts

ZERO_SHOT_TASK = "zero-shot-point-cloud-classification"
CLASSIFICATION_TASK = "point-cloud-classification"
FUNCTIONS_TO_APPLY = ("softmax", "sigmoid", "none")


def task_for_architecture(architecture: str | None) -> str:
    """The pipeline task of a saved model (`config.architectures[0]`): a fine-tuned classifier answers with its
    own classes; every other CLIP2Point model is zero-shot."""
    return CLASSIFICATION_TASK if architecture == "CLIP2PointForPointCloudClassification" else ZERO_SHOT_TASK


class PointCloudPipeline(Pipeline):
    """What the point-cloud pipelines share: reading inputs, sampling them on the CPU, rendering their depth
    views on the pipeline's device, and saving the processor with the model.

    The model folder's processor (front end and tokenizer) and its front end alone are both loaded where the
    folder has them (``None``: transformers' optional loading), so that the pipeline itself can say which files a
    folder lacks: the zero-shot pipeline needs a tokenizer to embed its labels, the classifier only the front end.
    """

    _load_processor = None
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = None
    #: The call-time keywords of the task (besides `batch_size` and `num_workers`, which every pipeline takes).
    call_parameters: tuple[str, ...] = ("seed", "up_axis")
    #: How to add the processor files the task needs (the end of `check_processor`'s message).
    processor_files_fix = (
        "save the front end into the folder, CLIP2PointFeatureExtractor(...).save_pretrained(folder) (this task "
        "needs no tokenizer)"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is not None:  # one front end, whichever way it is reached or saved
            self.feature_extractor = point_cloud_front_end(self.processor)
        self.check_processor()

    def check_processor(self) -> None:
        """What the task needs of the model folder (a front end; for zero-shot, a tokenizer too): a missing part
        is one :class:`~clip2point_hf.errors.ModelLoadError` line naming the folder, the files it lacks and how to
        add them."""
        if self.feature_extractor is None:
            raise ModelLoadError(
                self._model_source(),
                "no point-cloud processor files (preprocessor_config.json or processor_config.json); "
                + self.processor_files_fix,
            )

    def _model_source(self) -> str:
        """The folder or Hub id the model came from (``the model`` for one built in memory)."""
        return getattr(self.model, "name_or_path", "") or "the model"

    @property
    def front_end(self) -> CLIP2PointFeatureExtractor:
        """The point-cloud front end: the processor's, or the feature extractor loaded alone (a model folder
        without tokenizer files)."""
        return self.feature_extractor

    def _check_call_parameters(self, unknown: dict) -> None:
        """A keyword the task does not take is refused, never ignored."""
        if unknown:
            raise ValueError(
                f"{self.task or type(self).__name__} takes no {', '.join(f'`{k}`' for k in sorted(unknown))}: "
                f"its keywords are {', '.join(f'`{k}`' for k in (*self.call_parameters, 'batch_size'))} (set "
                "render settings such as `views` on the processor, `pipeline.front_end`)"
            )

    def __call__(self, inputs, **kwargs):
        if isinstance(inputs, np.ndarray | torch.Tensor) and inputs.ndim == 3:
            inputs = list(inputs)  # a (B, N, C) array is B clouds
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _reading_params(seed: int | None, up_axis: str | None) -> dict:
        """`preprocess`'s options: the file-sampling seed and the input's up axis (default: the processor's)."""
        params = {} if seed is None else {"seed": seed}
        if up_axis is not None:
            if up_axis not in UP_AXES:
                raise ValueError(f"`up_axis` must be one of {list(UP_AXES)}, got {up_axis!r}")
            params["up_axis"] = up_axis
        return params

    def preprocess(
        self, inputs: str | os.PathLike | np.ndarray | torch.Tensor, seed: int = 0, up_axis: str | None = None
    ) -> dict:
        points = read_point_cloud(inputs, seed=seed) if isinstance(inputs, str | os.PathLike) else inputs
        # Sampling and normalisation here (CPU, possibly in loader workers); rendering in `_forward`.
        return {"points": self.front_end.prepare_point_clouds([points], up_axis=up_axis)}

    def _pixel_values(self, model_inputs: dict) -> torch.Tensor:
        """The depth views `(B, V, 3, S, S)` of the sampled clouds, rendered on the pipeline's device."""
        points = model_inputs["points"].to(self.device)
        return self.front_end.renderer.render(points, self.front_end.views).to(self.model.dtype)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save the model, this pipeline's code (`custom_pipelines`) and the processor (which transformers'
        `Pipeline.save_pretrained` leaves out), so the folder loads with `trust_remote_code=True`."""
        super().save_pretrained(save_directory, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(save_directory)


class ZeroShotPointCloudClassificationPipeline(PointCloudPipeline):
    """Zero-shot classification of point clouds with a CLIP2Point model.

    Scores are the softmax over labels of the model's `logits_per_point_cloud`: CLIP's logit scale times the
    (view-weighted) mean cosine similarity between the depth views and each prompt, so they are calibrated like
    CLIP's. Prompts: `hypothesis_template` if given, else the model's `config.prompt_templates` (several are an
    ensemble, embedded once per label set and cached).

    Example:
        >>> clf = pipeline("zero-shot-point-cloud-classification", model="org/clip2point")
        >>> clf("chair.ply", candidate_labels=["chair", "table", "lamp"])
        >>> clf("chair.off", candidate_labels=["chair", "table"], up_axis="z")  # a z-up file (ModelNet OFF)

    `up_axis` (one of x, -x, y, -y, z, -z) is the input's up axis; the default is the saved processor's.
    """

    call_parameters = ("candidate_labels", "hypothesis_template", "seed", "up_axis")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._text_cache: dict[tuple, torch.Tensor] = {}

    processor_files_fix = (
        "zero-shot classification also needs CLIP's tokenizer files (tokenizer.json or vocab.json): save both into "
        "the folder with CLIP2PointProcessor(CLIP2PointFeatureExtractor(...), tokenizer).save_pretrained(folder)"
    )

    def check_processor(self) -> None:
        super().check_processor()
        if getattr(self.processor, "tokenizer", None) is None:
            raise ModelLoadError(
                self._model_source(),
                "no usable tokenizer files (tokenizer.json or vocab.json), which zero-shot classification needs to "
                "embed the labels: save CLIP's tokenizer with the front end into the folder, "
                "CLIP2PointProcessor(CLIP2PointFeatureExtractor.from_pretrained(folder), "
                "tokenizer).save_pretrained(folder)",
            )

    def _sanitize_parameters(
        self, candidate_labels=None, hypothesis_template=None, seed=None, up_axis=None, **unknown
    ):
        self._check_call_parameters(unknown)
        forward, postprocess = {}, {}
        if candidate_labels is not None:
            forward["candidate_labels"] = postprocess["candidate_labels"] = parse_candidate_labels(
                candidate_labels
            )
        if hypothesis_template is not None:
            if "{}" not in hypothesis_template:
                raise ValueError(f"`hypothesis_template` must contain '{{}}', got {hypothesis_template!r}")
            forward["hypothesis_template"] = hypothesis_template
        return self._reading_params(seed, up_axis), forward, postprocess

    def __call__(self, inputs, **kwargs):
        if "candidate_labels" not in kwargs:
            raise ValueError("`candidate_labels` is required, e.g. candidate_labels=['chair', 'table']")
        return super().__call__(inputs, **kwargs)

    def _text_embeddings(self, labels: tuple[str, ...], templates: tuple[str, ...]) -> torch.Tensor:
        key = (labels, templates)
        if key not in self._text_cache:
            self._text_cache[key] = encode_class_prompts(
                self.model, self.processor.tokenizer, labels, list(templates)
            )
        return self._text_cache[key]

    def _forward(
        self, model_inputs: dict, candidate_labels: tuple[str, ...], hypothesis_template=None
    ) -> dict:
        templates = (
            (hypothesis_template,) if hypothesis_template else tuple(self.model.config.prompt_templates)
        )
        text_embeds = self._text_embeddings(candidate_labels, templates)
        outputs = self.model(pixel_values=self._pixel_values(model_inputs), text_embeds=text_embeds)
        return {"scores": outputs.logits_per_point_cloud.float().softmax(dim=-1)}

    def postprocess(self, model_outputs: dict, candidate_labels: tuple[str, ...]) -> list[dict]:
        scores = model_outputs["scores"].reshape(-1).tolist()  # (1, K) unbatched, or (K,) from a batch
        ranked = sorted(zip(candidate_labels, scores, strict=True), key=lambda x: -x[1])
        return [{"label": label, "score": score} for label, score in ranked]


class PointCloudClassificationPipeline(PointCloudPipeline):
    """Classification of point clouds into a fine-tuned model's classes (`config.id2label`).

    The contract of transformers' `image-classification` pipeline: `top_k` (default 5, at most the number of
    classes) labels sorted by score, and `function_to_apply` on the logits: `"softmax"` (the default for
    several labels), `"sigmoid"` (the default for one label or `problem_type="multi_label_classification"`), or
    `"none"` (the raw logits; the default for `problem_type="regression"`).

    Example:
        >>> clf = pipeline("point-cloud-classification", model="runs/gdpa16")
        >>> clf("chair.ply", top_k=3)
    """

    call_parameters = ("top_k", "function_to_apply", "seed", "up_axis")
    processor_files_fix = (
        "save the front end the classifier was trained with into the folder, "
        "CLIP2PointFeatureExtractor(...).save_pretrained(folder) (a fine-tuned classifier needs no tokenizer)"
    )

    def _sanitize_parameters(self, top_k=None, function_to_apply=None, seed=None, up_axis=None, **unknown):
        self._check_call_parameters(unknown)
        postprocess = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"`top_k` must be a positive int, got {top_k!r}")
            postprocess["top_k"] = top_k
        if function_to_apply is not None:
            name = str(function_to_apply).lower()
            if name not in FUNCTIONS_TO_APPLY:
                raise ValueError(
                    f"`function_to_apply` must be one of {list(FUNCTIONS_TO_APPLY)}, got {function_to_apply!r}"
                )
            postprocess["function_to_apply"] = name
        return self._reading_params(seed, up_axis), {}, postprocess

    def _forward(self, model_inputs: dict) -> dict:
        return {"logits": self.model(pixel_values=self._pixel_values(model_inputs)).logits}

    def _default_function(self) -> str:
        config = self.model.config
        if config.problem_type == "regression":
            return "none"
        if config.problem_type == "multi_label_classification" or config.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def postprocess(
        self, model_outputs: dict, function_to_apply: str | None = None, top_k: int = 5
    ) -> list[dict]:
        logits = model_outputs["logits"].reshape(-1).float()  # (1, K) unbatched, or (K,) from a batch
        function = function_to_apply or self._default_function()
        if function == "softmax":
            scores = logits.softmax(-1)
        elif function == "sigmoid":
            scores = logits.sigmoid()
        else:
            scores = logits
        id2label = self.model.config.id2label
        ranked = sorted(
            ({"label": id2label[i], "score": score} for i, score in enumerate(scores.tolist())),
            key=lambda x: -x["score"],
        )
        return ranked[: min(top_k, len(ranked))]


def parse_candidate_labels(
    labels: str | Sequence[str], *, name: str = "`candidate_labels`"
) -> tuple[str, ...]:
    """Candidate labels as a tuple, from a list or comma-separated text; a `ValueError` names a blank or
    repeated label, and the argument as the caller's user spells it (``name``: ``--labels`` on a command line)."""
    labels = [label.strip() for label in labels.split(",")] if isinstance(labels, str) else list(labels)
    if not labels or any(not isinstance(label, str) or not label.strip() for label in labels):
        raise ValueError(f"{name} must be a non-empty list of non-blank labels, got {labels!r}")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"{name} has duplicates: {duplicates}")
    return tuple(labels)


__all__ = [
    "CLASSIFICATION_TASK",
    "ZERO_SHOT_TASK",
    "PointCloudClassificationPipeline",
    "PointCloudPipeline",
    "ZeroShotPointCloudClassificationPipeline",
    "parse_candidate_labels",
    "task_for_architecture",
]
