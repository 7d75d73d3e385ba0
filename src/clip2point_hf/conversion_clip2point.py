"""Conversion of original checkpoints into CLIP2Point models.

Three sources: OpenAI-layout CLIP state dicts (`clip.load`'s `.pt`, TorchScript or plain), the authors'
pre-training checkpoint `best_eval.pth` (`point_model.*` = depth encoder, `image_model.*`, `weights`) and
their few-shot checkpoint `best_test.pth` (the DPA: `pre_model.*`, `ori_model.*`, `adapter1.*`,
`adapter2.*`). Everything is read with `weights_only=True`; every key must be consumed or explicitly
ignored, and anything else is an error that lists the keys.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence

import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from .configuration_clip2point import CLIP2PointConfig
from .modeling_clip2point import (
    CLIP2PointForPointCloudClassification,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
)

StateDict = dict[str, torch.Tensor]


class CheckpointConversionError(ValueError):
    """A checkpoint is unreadable, or its keys are not the layout the converter expects."""


# ---------------------------------------------------------------------------------------------------------
# Reading


def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """Read a `.safetensors`, `.pth`/`.pt`/`.bin` (with `weights_only=True`) or TorchScript file into a flat
    state dict, unwrapping `{"state_dict": ...}`/`{"model": ...}` and DataParallel's `module.` prefix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.endswith(".safetensors"):
            state = load_file(path)
        elif _is_torchscript(path):
            # OpenAI's released CLIP files are TorchScript archives; loading one runs no pickled Python code.
            state = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt, truncated or foreign files
        raise CheckpointConversionError(f"{path}: cannot be read as a checkpoint ({error})") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointConversionError(f"{path}: does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


class _KeyReader:
    """Pops keys from a state dict and reports every missing or unused key at the end."""

    def __init__(self, state: StateDict, source: str):
        self.state = dict(state)
        self.source = source
        self.missing: list[str] = []

    def pop(self, key: str) -> torch.Tensor:
        if key not in self.state:
            self.missing.append(key)
            return torch.zeros(3, 1)  # a placeholder that survives the reshaping; `finish` reports the key
        return self.state.pop(key)

    def has_prefix(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.state)

    def ignore_prefix(self, prefix: str) -> None:
        for key in [k for k in self.state if k.startswith(prefix)]:
            del self.state[key]

    def finish(self) -> None:
        problems = []
        if self.missing:
            problems.append(f"missing keys ({len(self.missing)}): {self.missing}")
        if self.state:
            problems.append(f"unexpected keys ({len(self.state)}): {sorted(self.state)}")
        if problems:
            raise CheckpointConversionError(f"{self.source}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------------
# OpenAI CLIP layout


def _count_blocks(state: StateDict, prefix: str) -> int:
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def openai_clip_config(state: StateDict, head_width: int = 64) -> CLIPConfig:
    """Infer a `CLIPConfig` from an OpenAI-layout state dict (heads = width / `head_width`, as OpenAI builds them)."""
    try:
        vision_width, _, patch, _ = state["visual.conv1.weight"].shape
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_positions, text_width = state["positional_embedding"].shape
        vocab_size = state["token_embedding.weight"].shape[0]
        projection_dim = state["text_projection"].shape[1]
    except KeyError as error:
        raise CheckpointConversionError(
            f"not an OpenAI CLIP vision+text state dict: no key {error}"
        ) from error
    vision = {
        "hidden_size": vision_width,
        "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _count_blocks(state, "visual.transformer.resblocks."),
        "num_attention_heads": max(vision_width // head_width, 1),
        "image_size": grid * patch,
        "patch_size": patch,
        "projection_dim": projection_dim,
    }
    text = {
        "hidden_size": text_width,
        "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _count_blocks(state, "transformer.resblocks."),
        "num_attention_heads": max(text_width // head_width, 1),
        "max_position_embeddings": text_positions,
        "vocab_size": vocab_size,
        "projection_dim": projection_dim,
        # OpenAI's start/end tokens are the last two ids of the vocabulary.
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
    }
    return CLIPConfig(vision_config=vision, text_config=text, projection_dim=projection_dim)


def _convert_blocks(reader: _KeyReader, source: str, target: str, count: int) -> StateDict:
    out: StateDict = {}
    for i in range(count):
        s, t = f"{source}{i}.", f"{target}{i}."
        q, k, v = reader.pop(s + "attn.in_proj_weight").chunk(3)
        qb, kb, vb = reader.pop(s + "attn.in_proj_bias").chunk(3)
        out |= {
            t + "self_attn.q_proj.weight": q,
            t + "self_attn.k_proj.weight": k,
            t + "self_attn.v_proj.weight": v,
            t + "self_attn.q_proj.bias": qb,
            t + "self_attn.k_proj.bias": kb,
            t + "self_attn.v_proj.bias": vb,
        }
        for old, new in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            out[f"{t}{new}.weight"] = reader.pop(f"{s}{old}.weight")
            out[f"{t}{new}.bias"] = reader.pop(f"{s}{old}.bias")
    return out


def _convert_visual(reader: _KeyReader, prefix: str, num_layers: int) -> tuple[StateDict, StateDict]:
    """OpenAI `visual.*` keys under `prefix` -> (CLIPVisionModel state, projection Linear state)."""
    tower = {
        "embeddings.patch_embedding.weight": reader.pop(prefix + "conv1.weight"),
        "embeddings.class_embedding": reader.pop(prefix + "class_embedding"),
        "embeddings.position_embedding.weight": reader.pop(prefix + "positional_embedding"),
        "pre_layrnorm.weight": reader.pop(prefix + "ln_pre.weight"),
        "pre_layrnorm.bias": reader.pop(prefix + "ln_pre.bias"),
        "post_layernorm.weight": reader.pop(prefix + "ln_post.weight"),
        "post_layernorm.bias": reader.pop(prefix + "ln_post.bias"),
    }
    tower |= _convert_blocks(reader, prefix + "transformer.resblocks.", "encoder.layers.", num_layers)
    return tower, {"weight": reader.pop(prefix + "proj").T.contiguous()}


def _convert_text(reader: _KeyReader, num_layers: int) -> tuple[StateDict, StateDict]:
    tower = {
        "embeddings.token_embedding.weight": reader.pop("token_embedding.weight"),
        "embeddings.position_embedding.weight": reader.pop("positional_embedding"),
        "final_layer_norm.weight": reader.pop("ln_final.weight"),
        "final_layer_norm.bias": reader.pop("ln_final.bias"),
    }
    tower |= _convert_blocks(reader, "transformer.resblocks.", "encoder.layers.", num_layers)
    return tower, {"weight": reader.pop("text_projection").T.contiguous()}


def _load_module(module: torch.nn.Module, state: StateDict, source: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointConversionError(f"{source}: tensors do not fit the model ({error})") from error


def load_openai_clip(checkpoint: str | os.PathLike | StateDict) -> CLIPModel:
    """Build a transformers `CLIPModel` from an OpenAI-layout CLIP checkpoint (file or state dict)."""
    source = checkpoint if isinstance(checkpoint, str | os.PathLike) else "OpenAI CLIP state dict"
    state = (
        load_state_dict_file(checkpoint) if isinstance(checkpoint, str | os.PathLike) else dict(checkpoint)
    )
    config = openai_clip_config(state)
    model = CLIPModel(config).eval()
    reader = _KeyReader(state, str(source))
    vision, visual_projection = _convert_visual(reader, "visual.", config.vision_config.num_hidden_layers)
    text, text_projection = _convert_text(reader, config.text_config.num_hidden_layers)
    logit_scale = reader.pop("logit_scale")
    for key in ("input_resolution", "context_length", "vocab_size"):  # scalars in OpenAI's JIT files
        reader.state.pop(key, None)
    reader.finish()
    _load_module(model.vision_model, vision, str(source))
    _load_module(model.visual_projection, visual_projection, str(source))
    _load_module(model.text_model, text, str(source))
    _load_module(model.text_projection, text_projection, str(source))
    with torch.no_grad():
        model.logit_scale.copy_(logit_scale)
    return model


def load_clip(clip: str | os.PathLike | CLIPModel) -> CLIPModel:
    """A CLIPModel from a model, a Hub id or folder (transformers layout), or an OpenAI-layout file."""
    if isinstance(clip, CLIPModel):
        return clip
    if os.path.isfile(clip):
        return load_openai_clip(clip)
    return CLIPModel.from_pretrained(clip)


# ---------------------------------------------------------------------------------------------------------
# The authors' CLIP2Point checkpoints


def convert_pretraining_checkpoint(
    checkpoint: str | os.PathLike | StateDict,
    clip: str | os.PathLike | CLIPModel,
    *,
    for_pretraining: bool = False,
    **config_kwargs,
) -> CLIP2PointModel | CLIP2PointForPreTraining:
    """Convert the authors' `best_eval.pth` (image-depth pre-training).

    The checkpoint holds the depth encoder (`point_model.*`), the frozen image encoder (`image_model.*`,
    a copy of CLIP's) and the balance weight (`weights`); the text tower comes from `clip`.
    Returns a `CLIP2PointModel` (zero-shot, GDPA assembly), or with `for_pretraining=True` a
    `CLIP2PointForPreTraining` that resumes training.
    """
    source = str(checkpoint) if isinstance(checkpoint, str | os.PathLike) else "pre-training state dict"
    state = (
        load_state_dict_file(checkpoint) if isinstance(checkpoint, str | os.PathLike) else dict(checkpoint)
    )
    clip_model = load_clip(clip)
    config = CLIP2PointConfig.from_clip_config(clip_model.config, **config_kwargs)
    model = (CLIP2PointForPreTraining if for_pretraining else CLIP2PointModel)(config).eval()
    model.load_clip_weights(clip_model)
    base = model.clip2point if for_pretraining else model
    layers = config.vision_config.num_hidden_layers
    reader = _KeyReader(state, source)
    depth, depth_projection = _convert_visual(reader, "point_model.", layers)
    balance = reader.pop("weights")
    if for_pretraining:
        image, image_projection = _convert_visual(reader, "image_model.", layers)
    else:
        reader.ignore_prefix("image_model.")  # a frozen copy of CLIP's image tower: not needed for inference
    reader.finish()
    _load_module(base.depth_model, depth, source)
    _load_module(base.depth_projection, depth_projection, source)
    if for_pretraining:
        _load_module(model.image_model, image, source)
        _load_module(model.image_projection, image_projection, source)
        with torch.no_grad():
            model.balance_weight.copy_(balance)
    return model


_REFERENCE_ADAPTER_KEYS = {
    "fusion_ratio": "view_scale",
    "global_f.0.bn.weight": "view_norm.weight",
    "global_f.0.bn.bias": "view_norm.bias",
    "global_f.0.bn.running_mean": "view_norm.running_mean",
    "global_f.0.bn.running_var": "view_norm.running_var",
    "global_f.0.bn.num_batches_tracked": "view_norm.num_batches_tracked",
    "global_f.3.weight": "fc1.weight",
    "global_f.3.bias": "fc1.bias",
    "global_f.4.weight": "hidden_norm.weight",
    "global_f.4.bias": "hidden_norm.bias",
    "global_f.4.running_mean": "hidden_norm.running_mean",
    "global_f.4.running_var": "hidden_norm.running_var",
    "global_f.4.num_batches_tracked": "hidden_norm.num_batches_tracked",
    "global_f.7.weight": "fc2.weight",
    "global_f.7.bias": "fc2.bias",
}


def convert_dpa_checkpoint(
    checkpoint: str | os.PathLike | StateDict,
    clip: str | os.PathLike | CLIPModel,
    class_names: Sequence[str],
    tokenizer,
    prompt_template: str | Sequence[str] | None = None,
) -> CLIP2PointForPointCloudClassification:
    """Convert the authors' few-shot `best_test.pth` (their DPA) into the adapter model.

    The reference fuses the paths by their mean and classifies with raw cosines, so the result has
    `fusion="mean"` and a classifier logit scale of exp(0) = 1: its logits equal the reference's.
    The text tower and class embeddings come from `clip`, `class_names` and `prompt_template`.
    """
    source = str(checkpoint) if isinstance(checkpoint, str | os.PathLike) else "DPA state dict"
    state = (
        load_state_dict_file(checkpoint) if isinstance(checkpoint, str | os.PathLike) else dict(checkpoint)
    )
    clip_model = load_clip(clip)
    views = state.get("adapter1.fusion_ratio", torch.empty(0)).numel()
    if views == 0:
        raise CheckpointConversionError(f"{source}: no `adapter1.fusion_ratio`; is this a DPA checkpoint?")
    config = CLIP2PointConfig.from_clip_config(
        clip_model.config,
        num_views=views,
        fusion="mean",
        classifier_logit_scale_init_value=0.0,
        id2label=dict(enumerate(class_names)),
    )
    model = CLIP2PointForPointCloudClassification(config).eval()
    model.load_clip_weights(clip_model)
    layers = config.vision_config.num_hidden_layers
    reader = _KeyReader(state, source)
    reader.ignore_prefix("selector.")  # the fixed view angles of the reference's view selector
    pre, pre_projection = _convert_visual(reader, "pre_model.", layers)
    ori, ori_projection = _convert_visual(reader, "ori_model.", layers)
    adapters = {
        name: {new: reader.pop(f"{old_prefix}.{old}") for old, new in _REFERENCE_ADAPTER_KEYS.items()}
        for name, old_prefix in (("pretrained_adapter", "adapter1"), ("clip_adapter", "adapter2"))
    }
    reader.finish()
    _load_module(model.clip2point.depth_model, pre, source)
    _load_module(model.clip2point.depth_projection, pre_projection, source)
    _load_module(model.clip_model, ori, source)
    _load_module(model.clip_projection, ori_projection, source)
    for name, adapter_state in adapters.items():
        _load_module(getattr(model, name), adapter_state, source)
    model.set_class_names(class_names, tokenizer, prompt_template)
    return model


__all__ = [
    "CheckpointConversionError",
    "convert_dpa_checkpoint",
    "convert_pretraining_checkpoint",
    "load_clip",
    "load_openai_clip",
    "load_state_dict_file",
    "openai_clip_config",
]
