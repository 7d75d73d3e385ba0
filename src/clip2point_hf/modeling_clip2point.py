"""CLIP2Point models: zero-shot depth-view encoder, image-depth pre-training and the Gated Dual-Path Adapter.

Every tower is a transformers CLIP tower (`CLIPVisionModel`, `CLIPTextModel`), so attention backends,
activation checkpointing and CLIP checkpoints work unchanged. This file imports only its flat sibling
`configuration_clip2point` and third-party packages, so it can travel to the Hub as remote code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTextModel, CLIPVisionModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple

from .configuration_clip2point import CLIP2PointConfig

# ---------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class CLIP2PointTowersOutput(ModelOutput):
    """Base of the outputs that carry whole tower outputs: `to_tuple` turns those into tuples too (as
    `CLIPOutput` does), so `return_dict=False` gives nested tuples in field order."""

    def to_tuple(self) -> tuple:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class CLIP2PointOutput(CLIP2PointTowersOutput):
    """Zero-shot outputs.

    Args:
        logits_per_point_cloud: (batch, num_texts) sum over views of the cosine similarity between each
            view embedding and each text embedding, weighted by the view weights (design.md, "Zero-shot classification"). Unscaled:
            multiply by `logit_scale.exp() / sum(view_weights)` for CLIP-calibrated probabilities.
        logits_per_text: the transpose of `logits_per_point_cloud`.
        view_embeds: (batch, views, projection_dim) L2-normalised embedding of every depth view.
        point_cloud_embeds: (batch, projection_dim) weighted sum of `view_embeds`, so that
            `logits_per_point_cloud == point_cloud_embeds @ text_embeds.T`.
        text_embeds: (num_texts, projection_dim) L2-normalised text embeddings.
        depth_model_output: the depth tower's output (as `CLIPOutput.vision_model_output`) on the
            batch * views depth images, view `v` of cloud `b` at index `b * views + v`: `pooler_output` is the
            projected, unnormalised (batch * views, projection_dim) embedding; `hidden_states` /
            `attentions` when `output_hidden_states` / `output_attentions` are set.
        text_model_output: the text tower's output (as `CLIPOutput.text_model_output`), `pooler_output` the
            projected, unnormalised (num_texts, projection_dim) embedding.
    """

    logits_per_point_cloud: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    view_embeds: torch.FloatTensor | None = None
    point_cloud_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    depth_model_output: BaseModelOutputWithPooling | None = None
    text_model_output: BaseModelOutputWithPooling | None = None


@dataclass
class CLIP2PointPreTrainingOutput(CLIP2PointTowersOutput):
    """Image-depth pre-training outputs: `loss = loss_cross + loss_intra / w^2 + log(1 + w)`.

    Args:
        loss: the total loss, identical on every process (negatives come from the global batch).
        loss_cross: NT-Xent between the mean of the two depth embeddings and the image embedding.
        loss_intra: NT-Xent between the two depth embeddings.
        depth_embeds: (batch, 2, projection_dim) unnormalised embeddings of the two depth views.
        image_embeds: (batch, projection_dim) unnormalised embeddings of the RGB images (frozen encoder).
        balance_weight: the learned scalar `w`.
        depth_model_output: the depth tower's output on the batch * 2 depth images (depth map `j` of sample
            `b` at index `b * 2 + j`), `pooler_output` the projected (batch * 2, projection_dim) embedding.
        image_model_output: the frozen image tower's output on the batch RGB images, `pooler_output` the
            projected (batch, projection_dim) embedding.
    """

    loss: torch.FloatTensor | None = None
    loss_cross: torch.FloatTensor | None = None
    loss_intra: torch.FloatTensor | None = None
    depth_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    balance_weight: torch.FloatTensor | None = None
    depth_model_output: BaseModelOutputWithPooling | None = None
    image_model_output: BaseModelOutputWithPooling | None = None


@dataclass
class CLIP2PointClassifierOutput(CLIP2PointTowersOutput):
    """Gated Dual-Path Adapter outputs.

    Args:
        loss: cross-entropy of `logits` against `labels`, when labels are given.
        logits: (batch, num_labels) `classifier_logit_scale.exp()` times the cosine similarity between the fused
            embedding and each class text embedding.
        point_cloud_embeds: (batch, projection_dim) L2-normalised fused embedding.
        pretrained_path_embeds: (batch, projection_dim) output of the CLIP2Point-depth-encoder path's aggregator.
        clip_path_embeds: (batch, projection_dim) output of the original-CLIP path's aggregator.
        gate: the weight of the CLIP2Point path in the fusion, broadcastable to (batch, projection_dim).
        depth_model_output: the CLIP2Point depth tower's output on the batch * views depth images (index
            `b * views + v`), `pooler_output` the projected (batch * views, projection_dim) embedding.
        clip_model_output: the original CLIP vision tower's output on the same images, `pooler_output` the
            projected (batch * views, projection_dim) embedding.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    point_cloud_embeds: torch.FloatTensor | None = None
    pretrained_path_embeds: torch.FloatTensor | None = None
    clip_path_embeds: torch.FloatTensor | None = None
    gate: torch.FloatTensor | None = None
    depth_model_output: BaseModelOutputWithPooling | None = None
    clip_model_output: BaseModelOutputWithPooling | None = None


# ---------------------------------------------------------------------------------------------------------
# Losses


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from all processes along dim 0, keeping gradients (rank order).

    `accelerator.gather` is not differentiable; contrastive negatives from the global batch need this.
    Without an initialised process group it returns `tensor` itself.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    # torch's replacement for the deprecated `torch.distributed.nn.functional.all_gather` (its own warning
    # names it): differentiable, the backward is the reduce-scatter of the gradient.
    from torch.distributed._functional_collectives import all_gather_single

    return all_gather_single(tensor.contiguous(), 0, dist.group.WORLD)


def nt_xent_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent in SimCLR form: row i of `a` is positive with row i of `b` and vice versa.

    Each of the 2B rows is scored against the 2B - 1 other rows (its positive and 2B - 2 negatives drawn
    from both `a` and `b`); the loss is the mean of -log softmax of the positive.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"nt_xent_loss needs two (batch, dim) tensors of one shape, got {a.shape} and {b.shape}"
        )
    batch = a.shape[0]
    z = F.normalize(torch.cat([a, b], dim=0).float(), dim=-1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return F.cross_entropy(sim, positives)


def pretraining_loss(
    depth1: torch.Tensor,
    depth2: torch.Tensor,
    image: torch.Tensor,
    balance_weight: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLIP2Point's loss on the global batch: returns (loss, loss_cross, loss_intra)."""
    depth1, depth2, image = gather_with_grad(depth1), gather_with_grad(depth2), gather_with_grad(image)
    loss_intra = nt_xent_loss(depth1, depth2, temperature)
    loss_cross = nt_xent_loss((depth1 + depth2) / 2, image, temperature)
    loss = loss_cross + loss_intra / balance_weight**2 + torch.log1p(balance_weight)
    return loss, loss_cross, loss_intra


# ---------------------------------------------------------------------------------------------------------
# Adapter blocks


class CLIP2PointGlobalViewAggregator(nn.Module):
    """One path of the Dual-Path Adapter: per-view scale, BN over all view vectors, MLP over the flat views."""

    def __init__(self, config: CLIP2PointConfig):
        super().__init__()
        dim, hidden = config.projection_dim, config.adapter_hidden_size
        self.num_views = config.num_views
        self.view_scale = nn.Parameter(torch.full((config.num_views,), config.adapter_view_scale_init))
        self.view_norm = nn.BatchNorm1d(dim)
        self.fc1 = nn.Linear(config.num_views * dim, hidden)
        self.hidden_norm = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(config.adapter_dropout)

    def forward(self, view_features: torch.Tensor) -> torch.Tensor:
        batch, views, dim = view_features.shape
        if views != self.num_views:
            raise ValueError(f"the adapter was built for {self.num_views} views, got {views}")
        x = view_features * self.view_scale.view(1, views, 1)
        x = self.view_norm(x.reshape(batch * views, dim)).reshape(batch, views * dim)
        x = self.dropout(F.relu(self.hidden_norm(self.fc1(self.dropout(x)))))
        return self.fc2(x)


class CLIP2PointFusion(nn.Module):
    """`F = g * A_pre + (1 - g) * A_clip`; `g` is gated (per channel), scalar (learned) or 0.5 (mean)."""

    def __init__(self, config: CLIP2PointConfig):
        super().__init__()
        self.mode = config.fusion
        dim = config.projection_dim
        # Parameters are held directly (not in an nn.Linear) so that `_init_weights` sees this module.
        if self.mode == "gated":
            self.gate_weight = nn.Parameter(torch.zeros(dim, 2 * dim))
            self.gate_bias = nn.Parameter(torch.zeros(dim))
        elif self.mode == "scalar":
            self.gate_logit = nn.Parameter(torch.zeros(()))

    def forward(self, pretrained: torch.Tensor, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "gated":
            gate = torch.sigmoid(
                F.linear(torch.cat([pretrained, clip], dim=-1), self.gate_weight, self.gate_bias)
            )
        elif self.mode == "scalar":
            gate = torch.sigmoid(self.gate_logit).expand(1, 1)
        else:
            gate = pretrained.new_full((1, 1), 0.5)
        return gate * pretrained + (1 - gate) * clip, gate


# ---------------------------------------------------------------------------------------------------------
# Models


# Input checks at the model's door. Shape and dtype checks are static (free, torch.compile-safe); the few that
# read values (token ids, labels) need one host sync and are skipped while compiling.


def _check_images(
    pixel_values: torch.Tensor, config: CLIP2PointConfig, name: str, views: int | None = None
) -> None:
    """``pixel_values`` (B, V, 3, S, S) -- or (B, 3, S, S) when ``views`` is 0 -- with S the vision tower's
    image size and, when ``views`` is given, exactly that many views."""
    ndim, layout = (
        (4, "(batch, channels, height, width)")
        if views == 0
        else (5, "(batch, views, channels, height, width)")
    )
    shape = tuple(pixel_values.shape)
    if pixel_values.ndim != ndim:
        raise ValueError(f"`{name}` must be {layout}, got shape {shape}")
    if views and shape[1] != views:
        raise ValueError(
            f"`{name}` has {shape[1]} views but the model was configured for {views} (config.num_views)"
        )
    if shape[-3] != 3:
        raise ValueError(
            f"`{name}` must have 3 channels (depth replicated as RGB), got {shape[-3]} in shape {shape}"
        )
    size = config.vision_config.image_size
    if shape[-2:] != (size, size):
        raise ValueError(
            f"`{name}` must be {size}x{size} pixels (the vision tower's image_size), got {shape[-2]}x{shape[-1]}"
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"`{name}` must be a floating-point tensor, got {pixel_values.dtype}")


def _check_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"`input_ids` must be an integer tensor, got {input_ids.dtype}")
    if (
        not torch.compiler.is_compiling()
        and input_ids.numel()
        and (input_ids.min() < 0 or input_ids.max() >= vocab_size)
    ):
        raise ValueError(
            f"`input_ids` must be token ids in [0, {vocab_size}) (the text tower's vocab_size), got values in "
            f"[{int(input_ids.min())}, {int(input_ids.max())}]: was it tokenized with another tokenizer?"
        )


def _check_labels(labels: torch.Tensor, batch: int, num_classes: int) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"`labels` must be integer class indices, got {labels.dtype}")
    if tuple(labels.shape) != (batch,):
        raise ValueError(
            f"`labels` must have shape ({batch},) (one per point cloud of `pixel_values`), got {tuple(labels.shape)}"
        )
    if not torch.compiler.is_compiling() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"`labels` must be in [0, {num_classes}) (the classifier's classes), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


class CLIP2PointPreTrainedModel(PreTrainedModel):
    config: CLIP2PointConfig
    config_class = CLIP2PointConfig
    base_model_prefix = "clip2point"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]

    @classmethod
    def is_custom_code(cls) -> bool:
        """False, so that weights a checkpoint lacks are initialised as in a model built from its config.

        For custom code, transformers skips initialising every module whose own parameters and buffers are all
        loaded (a guard for remote `_init_weights` that write tensors in place). That skip also hits modules
        without parameters of their own, such as `CLIPAttention` and `CLIPMLP`, so a missing q/k/v/out or fc
        weight got the generic N(0, initializer_range) instead of CLIP's rule (and a missing projection did
        whenever `logit_scale` was loaded). Every initialisation here and in CLIP goes through
        `transformers.initialization`, which skips each loaded tensor itself, so the guard is not needed.
        `is_remote_code()` is unchanged: `save_pretrained` still copies this file for `trust_remote_code`. The
        flag's other uses (weight-conversion lookup by model type, cleanup after module tying) find nothing here.
        """
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """CLIP2Point's own modules; the towers follow `CLIPPreTrainedModel._init_weights`.

        The towers are CLIP `PreTrainedModel`s, so transformers hands each of their modules to the tower's own
        `_init_weights` (CLIP's rules per module type, with the tower config's `initializer_factor` /
        `initializer_range`). The projections follow `CLIPModel`'s rule, `hidden_size**-0.5 *
        initializer_factor`, text projection first as in CLIP.
        """
        super()._init_weights(module)
        config = self.config
        factor = config.initializer_factor
        vision_std = config.vision_config.hidden_size**-0.5 * factor
        if isinstance(module, CLIP2PointModel):
            init.normal_(module.text_projection.weight, std=config.text_config.hidden_size**-0.5 * factor)
            init.normal_(module.depth_projection.weight, std=vision_std)
            init.constant_(module.logit_scale, config.logit_scale_init_value)
        elif isinstance(module, CLIP2PointForPreTraining):
            init.normal_(module.image_projection.weight, std=vision_std)
            init.constant_(module.balance_weight, config.balance_weight_init_value)
        elif isinstance(module, CLIP2PointForPointCloudClassification):
            init.normal_(module.clip_projection.weight, std=vision_std)
            init.constant_(module.classifier_logit_scale, config.classifier_logit_scale_init_value)
            init.zeros_(module.class_embeddings)
        elif isinstance(module, CLIP2PointGlobalViewAggregator):
            init.constant_(module.view_scale, config.adapter_view_scale_init)
        elif isinstance(module, CLIP2PointFusion):
            # A zero gate layer starts every fusion at g = 0.5, i.e. at the reference's mean fusion.
            if module.mode == "gated":
                init.zeros_(module.gate_weight)
                init.zeros_(module.gate_bias)
            elif module.mode == "scalar":
                init.zeros_(module.gate_logit)

    @classmethod
    def from_clip(cls, clip: str | CLIPModel, **config_kwargs) -> CLIP2PointPreTrainedModel:
        """Build this model with every tower initialised from a CLIP checkpoint (Hub id, folder or model).

        `config_kwargs` set the CLIP2Point fields (e.g. `num_views`, `fusion`). Original OpenAI `.pt` files
        go through `clip2point_hf.conversion_clip2point.load_openai_clip` first.
        """
        if isinstance(clip, str):
            clip = CLIPModel.from_pretrained(clip)
        config = CLIP2PointConfig.from_clip_config(clip.config, **config_kwargs)
        model = cls(config)
        model.load_clip_weights(clip)
        return model

    def load_clip_weights(self, clip: CLIPModel) -> None:
        """Copy CLIP's towers into this model's towers (each subclass knows which)."""
        raise NotImplementedError

    def freeze_frozen_parts(self) -> None:
        """Set `requires_grad=False` on what this model never trains (each subclass knows what)."""
        raise NotImplementedError

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers writes only the saved class into `auto_map`; the base model loads from every
        # CLIP2Point checkpoint (its prefix is stripped), so remote code offers `AutoModel` as well.
        if self._auto_class is not None:
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": ("modeling_clip2point.CLIP2PointModel"),
            }
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading builds fresh parameters with requires_grad=True: re-freeze what the method keeps frozen.
        model = super().from_pretrained(*args, **kwargs)
        if isinstance(model, CLIP2PointPreTrainedModel):
            model.freeze_frozen_parts()
        return model


class CLIP2PointModel(CLIP2PointPreTrainedModel):
    """Depth encoder (a CLIP vision tower with projection, trained by CLIP2Point) and the frozen CLIP text tower."""

    def __init__(self, config: CLIP2PointConfig):
        super().__init__(config)
        self.depth_model = CLIPVisionModel._from_config(config.vision_config)
        self.depth_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_model = CLIPTextModel._from_config(config.text_config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()
        self.freeze_frozen_parts()

    def freeze_frozen_parts(self) -> None:
        """The text tower and logit scale are CLIP's and stay frozen in every CLIP2Point stage."""
        for module in (self.text_model, self.text_projection):
            module.requires_grad_(False)
        self.logit_scale.requires_grad_(False)

    def load_clip_weights(self, clip: CLIPModel) -> None:
        self.depth_model.load_state_dict(clip.vision_model.state_dict())
        self.depth_projection.load_state_dict(clip.visual_projection.state_dict())
        self.text_model.load_state_dict(clip.text_model.state_dict())
        self.text_projection.load_state_dict(clip.text_projection.state_dict())
        with torch.no_grad():
            self.logit_scale.copy_(clip.logit_scale)

    # The `get_*_features` methods follow `CLIPModel.get_image_features` in transformers 5: they return the
    # tower's `BaseModelOutputWithPooling` (hidden states / attentions when asked) with `pooler_output` replaced
    # by the embedding, or a tuple with `return_dict=False`. One habit serves all: `.pooler_output`.

    @can_return_tuple
    def get_depth_features(
        self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """(N, 3, H, W) depth images -> `pooler_output` (N, projection_dim) unnormalised embeddings."""
        outputs = self.depth_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        outputs.pooler_output = self.depth_projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def get_view_features(
        self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """(B, V, 3, H, W) depth views -> `pooler_output` (B, V, projection_dim) L2-normalised view embeddings.

        The tower's hidden states cover the B * V views flattened, view `v` of cloud `b` at `b * V + v`.
        """
        _check_images(pixel_values, self.config, "pixel_values")
        batch, views = pixel_values.shape[:2]
        outputs = self.get_depth_features(pixel_values.flatten(0, 1), return_dict=True, **kwargs)
        outputs.pooler_output = F.normalize(outputs.pooler_output, dim=-1).view(batch, views, -1)
        return outputs

    def _view_weights(
        self, views: int, view_weights: Sequence[float] | torch.Tensor | None, like: torch.Tensor
    ):
        weights = view_weights if view_weights is not None else self.config.view_weights
        if weights is None:
            return like.new_ones(views)
        weights = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
        if weights.shape != (views,):
            raise ValueError(
                f"`view_weights` has shape {tuple(weights.shape)} but the input has {views} views"
            )
        return weights

    @can_return_tuple
    def get_point_cloud_features(
        self,
        pixel_values: torch.Tensor,
        view_weights: Sequence[float] | torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """(B, V, 3, H, W) depth views -> `pooler_output` (B, projection_dim): the view-weighted sum of the
        normalised view embeddings (the zero-shot point-cloud embedding)."""
        outputs = self.get_view_features(pixel_values, return_dict=True, **kwargs)
        view_embeds = outputs.pooler_output
        weights = self._view_weights(view_embeds.shape[1], view_weights, view_embeds)
        outputs.pooler_output = torch.einsum("bvd,v->bd", view_embeds, weights)
        return outputs

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Tokenised prompts -> `pooler_output` (num_texts, projection_dim) unnormalised text embeddings."""
        _check_input_ids(input_ids, self.config.text_config.vocab_size)
        outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            return_dict=True,
            **kwargs,
        )
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        view_weights: Sequence[float] | torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CLIP2PointOutput:
        """`pixel_values`: (B, V, 3, H, W) depth views; `input_ids` / `attention_mask`: tokenised prompts."""
        depth_outputs = text_outputs = view_embeds = point_cloud_embeds = text_embeds = logits = None
        if pixel_values is not None:
            _check_images(pixel_values, self.config, "pixel_values")
            batch, views = pixel_values.shape[:2]
            depth_outputs = self.get_depth_features(pixel_values.flatten(0, 1), return_dict=True, **kwargs)
            view_embeds = F.normalize(depth_outputs.pooler_output, dim=-1).view(batch, views, -1)
            weights = self._view_weights(views, view_weights, view_embeds)
            point_cloud_embeds = torch.einsum("bvd,v->bd", view_embeds, weights)
        if input_ids is not None:
            text_outputs = self.get_text_features(
                input_ids, attention_mask, position_ids, return_dict=True, **kwargs
            )
            text_embeds = F.normalize(text_outputs.pooler_output, dim=-1)
        if point_cloud_embeds is not None and text_embeds is not None:
            logits = point_cloud_embeds @ text_embeds.T
        return CLIP2PointOutput(
            logits_per_point_cloud=logits,
            logits_per_text=None if logits is None else logits.T,
            view_embeds=view_embeds,
            point_cloud_embeds=point_cloud_embeds,
            text_embeds=text_embeds,
            depth_model_output=depth_outputs,
            text_model_output=text_outputs,
        )


class CLIP2PointForPreTraining(CLIP2PointPreTrainedModel):
    """Image-depth pre-training: trainable depth encoder, frozen CLIP image encoder, learned balance weight."""

    def __init__(self, config: CLIP2PointConfig):
        super().__init__(config)
        self.clip2point = CLIP2PointModel(config)
        self.image_model = CLIPVisionModel._from_config(config.vision_config)
        self.image_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.balance_weight = nn.Parameter(torch.tensor(config.balance_weight_init_value))
        self.post_init()
        self.freeze_frozen_parts()

    def freeze_frozen_parts(self) -> None:
        """Only the depth encoder and the balance weight train."""
        self.clip2point.freeze_frozen_parts()
        self.image_model.requires_grad_(False)
        self.image_projection.requires_grad_(False)

    def load_clip_weights(self, clip: CLIPModel) -> None:
        self.clip2point.load_clip_weights(clip)
        self.image_model.load_state_dict(clip.vision_model.state_dict())
        self.image_projection.load_state_dict(clip.visual_projection.state_dict())

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """(B, 3, H, W) RGB images -> `pooler_output` (B, projection_dim) embeddings of the frozen CLIP image
        encoder (`CLIPModel.get_image_features`'s form)."""
        outputs = self.image_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        outputs.pooler_output = self.image_projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        depth_pixel_values: torch.Tensor,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CLIP2PointPreTrainingOutput:
        """`pixel_values`: (B, 3, H, W) RGB renderings; `depth_pixel_values`: (B, 2, 3, H, W), the two
        depth maps rendered from the RGB image's view at two distances."""
        _check_images(depth_pixel_values, self.config, "depth_pixel_values", views=2)
        _check_images(pixel_values, self.config, "pixel_values", views=0)
        batch = depth_pixel_values.shape[0]
        if pixel_values.shape[0] != batch:
            raise ValueError(
                f"`pixel_values` has {pixel_values.shape[0]} images but `depth_pixel_values` {batch} objects"
            )
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if batch * world < 2:
            raise ValueError(
                f"pre-training needs a global batch of at least 2 objects (the others are each one's negatives), "
                f"got {batch} x {world} process(es)"
            )
        depth_outputs = self.clip2point.get_depth_features(
            depth_pixel_values.flatten(0, 1), return_dict=True, **kwargs
        )
        depth = depth_outputs.pooler_output.view(batch, 2, -1)
        image_outputs = self.get_image_features(pixel_values, return_dict=True, **kwargs)
        image = image_outputs.pooler_output.detach()
        loss, loss_cross, loss_intra = pretraining_loss(
            depth[:, 0], depth[:, 1], image, self.balance_weight, self.config.pretraining_temperature
        )
        return CLIP2PointPreTrainingOutput(
            loss=loss,
            loss_cross=loss_cross,
            loss_intra=loss_intra,
            depth_embeds=depth,
            image_embeds=image,
            balance_weight=self.balance_weight,
            depth_model_output=depth_outputs,
            image_model_output=image_outputs,
        )


class CLIP2PointForPointCloudClassification(CLIP2PointPreTrainedModel):
    """Gated Dual-Path Adapter: frozen CLIP2Point depth tower and frozen original CLIP tower see the same views;
    one aggregator per path, a fusion, and a cosine classifier against stored class text embeddings.

    Only the aggregators, the fusion and the logit scale train. Class embeddings are a persistent buffer built
    by `set_class_names` with the frozen text tower and saved with the weights.
    """

    def __init__(self, config: CLIP2PointConfig):
        super().__init__(config)
        self.clip2point = CLIP2PointModel(config)
        self.clip_model = CLIPVisionModel._from_config(config.vision_config)
        self.clip_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.pretrained_adapter = CLIP2PointGlobalViewAggregator(config)
        self.clip_adapter = CLIP2PointGlobalViewAggregator(config)
        self.fusion = CLIP2PointFusion(config)
        self.classifier_logit_scale = nn.Parameter(torch.tensor(config.classifier_logit_scale_init_value))
        self.register_buffer("class_embeddings", torch.zeros(config.num_labels, config.projection_dim))
        self.post_init()
        self.freeze_frozen_parts()

    def freeze_frozen_parts(self) -> None:
        """Freeze both vision towers and the text tower: only adapter parameters train."""
        self.clip2point.requires_grad_(False)
        self.clip_model.requires_grad_(False)
        self.clip_projection.requires_grad_(False)

    def load_clip_weights(self, clip: CLIPModel) -> None:
        """Both paths from CLIP (an untrained CLIP2Point); use `from_pretrained_models` for a trained one."""
        self.clip2point.load_clip_weights(clip)
        self.clip_model.load_state_dict(clip.vision_model.state_dict())
        self.clip_projection.load_state_dict(clip.visual_projection.state_dict())

    @classmethod
    def from_pretrained_models(
        cls,
        clip2point: str | CLIP2PointModel,
        clip: str | CLIPModel,
        class_names: Sequence[str],
        tokenizer,
        prompt_template: str | Sequence[str] | None = None,
        **config_kwargs,
    ) -> CLIP2PointForPointCloudClassification:
        """Assemble the adapter model from a CLIP2Point checkpoint (any CLIP2Point class) and a CLIP checkpoint.

        `tokenizer` is CLIP's tokenizer (e.g. `CLIP2PointProcessor.tokenizer`), used once to embed the classes.
        """
        if isinstance(clip2point, str):
            clip2point = CLIP2PointModel.from_pretrained(clip2point)
        if isinstance(clip, str):
            clip = CLIPModel.from_pretrained(clip)
        config = CLIP2PointConfig(**{**clip2point.config.to_dict(), **config_kwargs})
        model = cls(config)
        model.clip2point.load_state_dict(clip2point.state_dict())
        model.clip_model.load_state_dict(clip.vision_model.state_dict())
        model.clip_projection.load_state_dict(clip.visual_projection.state_dict())
        model.set_class_names(class_names, tokenizer, prompt_template)
        return model

    @torch.no_grad()
    def set_class_names(
        self, class_names: Sequence[str], tokenizer, prompt_template: str | Sequence[str] | None = None
    ) -> None:
        """Embed `class_names` with the frozen text tower and store them (and id2label) in the model.

        Several templates are an ensemble: their normalised embeddings are averaged and re-normalised.
        """
        names = list(class_names)
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(
                f"`class_names` must be a non-empty list of non-empty strings, got {class_names!r}"
            )
        if len(set(names)) != len(names):
            raise ValueError(
                f"`class_names` has duplicates: {sorted({n for n in names if names.count(n) > 1})}"
            )
        templates = prompt_template or self.config.prompt_template
        templates = [templates] if isinstance(templates, str) else list(templates)
        device = self.class_embeddings.device
        embeds = torch.zeros(len(names), self.config.projection_dim, device=device)
        for template in templates:
            tokens = tokenizer(
                [template.format(n) for n in names],
                padding=True,
                truncation=True,
                max_length=self.config.text_config.max_position_embeddings,
                return_tensors="pt",
            ).to(device)
            text = self.clip2point.get_text_features(
                tokens["input_ids"], tokens.get("attention_mask")
            ).pooler_output
            embeds += F.normalize(text.float(), dim=-1)
        self.class_embeddings = F.normalize(embeds, dim=-1).to(self.class_embeddings.dtype)
        self.config.id2label = dict(enumerate(names))
        self.config.label2id = {n: i for i, n in enumerate(names)}
        self.config.prompt_template = templates[0]

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CLIP2PointClassifierOutput:
        """`pixel_values`: (B, V, 3, H, W) depth views; `labels`: (B,) class indices for the loss."""
        _check_images(pixel_values, self.config, "pixel_values", views=self.config.num_views)
        batch, views = pixel_values.shape[:2]
        if self.training and batch < 2:
            raise ValueError(
                "a batch of 1 point cloud in training mode: the adapters' BatchNorm needs at least 2 "
                "(call model.eval() to predict one cloud)"
            )
        if labels is not None:
            _check_labels(labels, batch, self.class_embeddings.shape[0])
        flat = pixel_values.flatten(0, 1)
        depth_outputs = self.clip2point.get_depth_features(flat, return_dict=True, **kwargs)
        clip_outputs = self.clip_model(pixel_values=flat, return_dict=True, **kwargs)
        clip_outputs.pooler_output = self.clip_projection(clip_outputs.pooler_output)
        pretrained_path = self.pretrained_adapter(depth_outputs.pooler_output.view(batch, views, -1))
        clip_path = self.clip_adapter(clip_outputs.pooler_output.view(batch, views, -1))
        fused, gate = self.fusion(pretrained_path, clip_path)
        embeds = F.normalize(fused, dim=-1)
        logits = self.classifier_logit_scale.exp() * embeds @ self.class_embeddings.T
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        return CLIP2PointClassifierOutput(
            loss=loss,
            logits=logits,
            point_cloud_embeds=embeds,
            pretrained_path_embeds=pretrained_path,
            clip_path_embeds=clip_path,
            gate=gate,
            depth_model_output=depth_outputs,
            clip_model_output=clip_outputs,
        )


__all__ = [
    "CLIP2PointClassifierOutput",
    "CLIP2PointForPointCloudClassification",
    "CLIP2PointForPreTraining",
    "CLIP2PointModel",
    "CLIP2PointOutput",
    "CLIP2PointPreTrainedModel",
    "CLIP2PointPreTrainingOutput",
    "gather_with_grad",
    "nt_xent_loss",
    "pretraining_loss",
]
