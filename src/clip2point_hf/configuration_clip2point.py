"""CLIP2Point configuration: a CLIP vision and text tower plus the settings of CLIP2Point's heads."""

from __future__ import annotations

import math
from typing import Literal, get_args

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig

FusionMode = Literal["gated", "mean", "scalar"]
#: The reference's class prompt.
DEFAULT_TEMPLATE = "image of a {}"


@strict
class CLIP2PointConfig(PreTrainedConfig):
    r"""Configuration of every CLIP2Point model.

    The defaults reproduce CLIP ViT-B/32 (the backbone of the paper) and the reference's heads.

    Args:
        vision_config: the CLIP vision tower. The depth encoder, the frozen image encoder of pre-training and
            the frozen CLIP path of the adapter all share this architecture.
        text_config: the CLIP text tower (frozen; it embeds class prompts).
        projection_dim: width of the shared image/depth/text embedding space.
        num_views: number of depth views per point cloud. The adapter's aggregator is sized by it; zero-shot
            classification accepts any number of views unless `view_weights` is set.
        view_weights: optional per-view weights of the zero-shot logits (the reference uses none, i.e. all 1).
        logit_scale_init_value: initial log of CLIP's logit scale (overwritten by a real CLIP checkpoint).
        pretraining_temperature: NT-Xent temperature of image-depth pre-training (0.07 in the paper).
        balance_weight_init_value: initial value of the learned weight `w` in
            `L = L_cross + L_intra / w^2 + log(1 + w)`.
        adapter_hidden_size: width of the hidden layer of each global-view aggregator (defaults to
            `projection_dim`, as in the reference).
        adapter_dropout: dropout of the aggregators (0.075 in the reference).
        adapter_view_scale_init: initial value of the learnable per-view scale (0.5 in the reference).
        fusion: how the two adapter paths are combined. `"gated"`: per-channel gate
            `g = sigmoid(W [A_pre; A_clip] + b)` (ICCV paper; initialised to 0.5 everywhere);
            `"scalar"`: one learned gate `g = sigmoid(s)` shared by all channels and samples;
            `"mean"`: `g = 0.5` fixed, the authors' released DPA.
        classifier_logit_scale_init_value: initial log of the classifier's learned logit scale. The reference
            classifies with raw cosines (no temperature), which trains poorly with cross-entropy.
        prompt_templates: the class-prompt templates, each containing `{}` (default: the reference's single
            `["image of a {}"]`). Several are an ensemble: a class embedding is the mean of its normalised prompt
            embeddings, re-normalised. `set_class_names` records the templates it used here, so a saved
            classifier re-encodes its classes exactly; the zero-shot pipeline uses them when no
            `hypothesis_template` is given. A legacy `prompt_template="..."` string (configs saved before the
            ensemble was kept) is read as a one-template list.
        initializer_factor: scales the initial projections as `CLIPConfig.initializer_factor` scales
            `CLIPModel`'s (each tower follows its own sub-config's `initializer_factor`).
        initializer_range: std of the generic initialisation of the adapters' linear layers.
    """

    model_type = "clip2point"
    # `sub_configs` (not the newer `sub_configs_defaults`) is the attribute every transformers 5 release reads;
    # the towers are built from dicts in `__post_init__`, as transformers 5.17's own CLIPConfig does.
    sub_configs = {"vision_config": CLIPVisionConfig, "text_config": CLIPTextConfig}

    vision_config: dict | CLIPVisionConfig | None = None
    text_config: dict | CLIPTextConfig | None = None
    projection_dim: int = 512
    num_views: int = 10
    view_weights: list[float] | None = None
    logit_scale_init_value: float = 2.6592
    pretraining_temperature: float = 0.07
    balance_weight_init_value: float = 1.0
    adapter_hidden_size: int | None = None
    adapter_dropout: float = 0.075
    adapter_view_scale_init: float = 0.5
    fusion: FusionMode = "gated"
    classifier_logit_scale_init_value: float = math.log(1 / 0.07)
    prompt_templates: list[str] | None = None
    initializer_factor: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        legacy_template = kwargs.pop("prompt_template", None)
        if self.prompt_templates is None:
            self.prompt_templates = [legacy_template] if legacy_template is not None else [DEFAULT_TEMPLATE]
        elif isinstance(self.prompt_templates, str):
            self.prompt_templates = [self.prompt_templates]
        else:
            self.prompt_templates = list(self.prompt_templates)
        for key, config_class in self.sub_configs.items():
            value = getattr(self, key)
            if value is None:
                value = config_class()
            elif isinstance(value, dict):
                value = config_class(**value)
            setattr(self, key, value)
        super().__post_init__(**kwargs)
        if self.adapter_hidden_size is None:
            self.adapter_hidden_size = self.projection_dim
        # The towers' own projection width must agree with ours (CLIP stores it on both sub-configs).
        self.vision_config.projection_dim = self.projection_dim
        self.text_config.projection_dim = self.projection_dim

    def validate_architecture(self):
        """Typed validation (`@strict`): each message names the offending field."""
        for name in ("projection_dim", "num_views", "adapter_hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"`{name}` must be an int, got {value!r}")
        if self.fusion not in get_args(FusionMode):
            raise ValueError(f"`fusion` must be one of {get_args(FusionMode)}, got {self.fusion!r}")
        positive = {
            "projection_dim": self.projection_dim,
            "num_views": self.num_views,
            "adapter_hidden_size": self.adapter_hidden_size,
            "pretraining_temperature": self.pretraining_temperature,
            "balance_weight_init_value": self.balance_weight_init_value,
        }
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value!r}")
        if not 0.0 <= self.adapter_dropout < 1.0:
            raise ValueError(f"`adapter_dropout` must be in [0, 1), got {self.adapter_dropout!r}")
        if self.view_weights is not None:
            if len(self.view_weights) != self.num_views:
                raise ValueError(
                    f"`view_weights` has {len(self.view_weights)} entries but `num_views` is {self.num_views}"
                )
            if not all(math.isfinite(w) for w in self.view_weights):
                raise ValueError(f"`view_weights` must be finite, got {self.view_weights!r}")
            # The zero-shot logits are the weighted MEAN of the per-view cosines (CLIP's scale applies to a cosine).
            if not sum(self.view_weights) > 0:
                raise ValueError(f"`view_weights` must have a positive sum, got {self.view_weights!r}")
        templates = self.prompt_templates
        if not templates or any(not isinstance(t, str) or "{}" not in t for t in templates):
            raise ValueError(
                f"`prompt_templates` must be a non-empty list of templates each containing '{{}}', got {templates!r}"
            )

    @classmethod
    def from_clip_config(cls, clip_config: CLIPConfig, **kwargs) -> CLIP2PointConfig:
        """Build a CLIP2Point config around the towers of a CLIP config (e.g. a Hub CLIP's)."""
        return cls(
            vision_config=clip_config.vision_config.to_dict(),
            text_config=clip_config.text_config.to_dict(),
            projection_dim=clip_config.projection_dim,
            logit_scale_init_value=float(clip_config.logit_scale_init_value),
            **{"initializer_factor": clip_config.initializer_factor or 1.0, **kwargs},
        )


__all__ = ["CLIP2PointConfig"]
