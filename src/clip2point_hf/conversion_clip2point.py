"""Conversion of original checkpoints into CLIP2Point models.

Three layouts, told apart by their keys (`detect_layout`), never by the file name: OpenAI-layout CLIP state
dicts (`clip.load`'s `.pt`, TorchScript or plain); the authors' pre-training checkpoints (`pretraining.py`
saves `DataParallel(CLIP2Point).state_dict()` as `best_val.pth` and `best_test.pth`; released as
`best_eval.pth`: `point_model.*` = depth encoder, `image_model.*`, `weights`, the view selector's buffers);
and their few-shot DPA (`pre_model.*`, `ori_model.*`, `adapter1.*`, `adapter2.*`, the view selector;
released as `best_test.pth`). Everything is read with `weights_only=True`; every key must be consumed or
set aside by name (and the set-aside list is logged and recorded), anything else is an error listing keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel
from transformers.utils import logging

from .configuration_clip2point import CLIP2PointConfig
from .modeling_clip2point import (
    CLIP2PointForPointCloudClassification,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
    CLIP2PointPreTrainedModel,
)
from .rendering_clip2point import VIEW_PRESETS

logger = logging.get_logger(__name__)

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
        raise CheckpointConversionError(f"{path}: {_unreadable_reason(error, path)}") from None
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


class _Converted(dict[str, torch.Tensor]):
    """Tensors under the model's keys, each with the checkpoint key it came from (and how it was changed), so that
    a tensor that does not fit names both keys."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[str, str] = {}

    def put(self, key: str, tensor: torch.Tensor, source: str) -> None:
        self[key] = tensor
        self.sources[key] = source

    def take(self, reader: _KeyReader, key: str, source: str, *, transpose: bool = False) -> None:
        """Pop ``source`` from ``reader`` and store it under ``key`` (transposed: a Linear weight from a matrix that
        OpenAI's code multiplies from the right)."""
        tensor = reader.pop(source)
        if transpose:
            self.put(key, tensor.T.contiguous(), f"{source} (transposed)")
        else:
            self.put(key, tensor, source)


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


def _convert_blocks(reader: _KeyReader, out: _Converted, source: str, target: str, count: int) -> None:
    """OpenAI's residual blocks under ``source`` -> transformers' encoder layers under ``target``, into ``out``."""
    for i in range(count):
        s, t = f"{source}{i}.", f"{target}{i}."
        for kind in ("weight", "bias"):
            fused = f"{s}attn.in_proj_{kind}"
            for name, part in zip(("q", "k", "v"), reader.pop(fused).chunk(3), strict=True):
                out.put(f"{t}self_attn.{name}_proj.{kind}", part, f"{fused} ({name} third)")
        for old, new in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            for kind in ("weight", "bias"):
                out.take(reader, f"{t}{new}.{kind}", f"{s}{old}.{kind}")


#: transformers' keys of a tower's embeddings and outer layer norms -> OpenAI's, for each tower.
_VISION_KEYS = {
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.class_embedding": "class_embedding",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight",
    "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight",
    "post_layernorm.bias": "ln_post.bias",
}
_TEXT_KEYS = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def _convert_tower(
    reader: _KeyReader, prefix: str, keys: Mapping[str, str], projection: str, num_layers: int
) -> tuple[_Converted, _Converted]:
    """An OpenAI tower under ``prefix`` -> (the transformers tower's state, its projection Linear's state)."""
    tower = _Converted()
    for key, source in keys.items():
        tower.take(reader, key, prefix + source)
    _convert_blocks(reader, tower, prefix + "transformer.resblocks.", "encoder.layers.", num_layers)
    linear = _Converted()
    linear.take(reader, "weight", prefix + projection, transpose=True)
    return tower, linear


def _convert_visual(reader: _KeyReader, prefix: str, num_layers: int) -> tuple[_Converted, _Converted]:
    """OpenAI `visual.*` keys under `prefix` -> (CLIPVisionModel state, projection Linear state)."""
    return _convert_tower(reader, prefix, _VISION_KEYS, "proj", num_layers)


def _convert_text(reader: _KeyReader, num_layers: int) -> tuple[_Converted, _Converted]:
    return _convert_tower(reader, "", _TEXT_KEYS, "text_projection", num_layers)


#: How the PyTorch files this reader takes begin: a zip archive (``torch.save`` since torch 1.6, TorchScript), or a
#: pickle stream (older ``torch.save``), whose protocol 2 to 5 opens with the PROTO opcode 0x80 and the protocol.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_PICKLE_PROTOCOLS = range(2, 6)


def _file_kind(path: str) -> str:
    """``"zip"``, ``"pickle"``, ``"empty"`` or ``"other"``, from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    is_pickle = len(head) > 1 and head[0] == _PICKLE_PROTO and head[1] in _PICKLE_PROTOCOLS
    return "pickle" if is_pickle else "other"


def _unreadable_reason(error: BaseException, path: str) -> str:
    """Why a file could not be read, from what it is (a PyTorch zip archive, a pickle stream, safetensors, or
    none of these), without torch's advice to retry with ``weights_only=False``: unpickling an untrusted file
    runs its code, so this package never does it and never suggests it."""
    text = str(error)
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not any(word in line for word in ("weights_only", "Weights only", "WeightsUnpickler"))
    ]
    detail = lines[0] if lines else type(error).__name__
    kind = _file_kind(path)
    if kind == "empty":
        return "is empty (0 bytes): not a checkpoint"
    if path.endswith(".safetensors"):
        return f"cannot be read as safetensors (corrupt or truncated: {detail})"
    if kind == "other":
        return (
            "is not a checkpoint: neither a PyTorch file (a zip archive, or a pickle stream starting with byte "
            "0x80) nor a .safetensors file"
        )
    if "Unsupported global" in text:  # a class or function in the pickle: what weights_only refuses to run
        culprit = next((line.strip() for line in text.splitlines() if "Unsupported" in line), "")
        return (
            "holds pickled Python objects besides tensors"
            + (f" ({culprit})" if culprit else "")
            + "; such files are never unpickled here (they could run code): only state dicts of tensors are "
            "read. Re-save the tensors (e.g. as .safetensors) where the file was made, if you trust it"
        )
    what = "a zip archive" if kind == "zip" else "a pickle stream"
    return f"is {what} but not a readable PyTorch checkpoint (corrupt or truncated: {detail})"


def _load_module(model: torch.nn.Module, name: str, state: _Converted, source: str) -> None:
    """Load ``state`` into the submodule ``name`` of ``model``; a tensor that does not fit is named by its key in
    the checkpoint and in the model, with both shapes."""
    module = model.get_submodule(name)
    expected = module.state_dict()
    wrong = [
        f"the checkpoint's {state.sources.get(key, key)} is {tuple(value.shape)}, the model's {name}.{key} is "
        f"{tuple(expected[key].shape)}"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    if wrong:
        raise CheckpointConversionError(
            f"{source}: {len(wrong)} tensors do not fit the model (shape): {'; '.join(wrong)}"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointConversionError(
            f"{source}: tensors do not fit the model's {name} ({' '.join(str(error).split())})"
        ) from None


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
    _load_module(model, "vision_model", vision, str(source))
    _load_module(model, "visual_projection", visual_projection, str(source))
    _load_module(model, "text_model", text, str(source))
    _load_module(model, "text_projection", text_projection, str(source))
    with torch.no_grad():
        model.logit_scale.copy_(logit_scale)
    return model


def load_clip(clip: str | os.PathLike | CLIPModel) -> CLIPModel:
    """A CLIPModel from a model, a Hub id or folder (transformers layout), or an OpenAI-layout file."""
    if isinstance(clip, CLIPModel):
        return clip
    if os.path.isfile(clip):
        return load_openai_clip(clip)
    from .loading import load_pretrained

    return load_pretrained(CLIPModel, clip, "CLIP")


# ---------------------------------------------------------------------------------------------------------
# The authors' CLIP2Point checkpoints

#: Checkpoint layouts the converter reads, and the key groups that identify them.
LAYOUT_KEY_GROUPS: dict[str, tuple[str, ...]] = {
    "clip": ("visual.", "token_embedding."),
    "pretraining": ("point_model.",),
    "dpa": ("pre_model.", "ori_model.", "adapter1.", "adapter2."),
}

#: Written beside the converted weights; `hub.build_model_card` states it on the card.
PROVENANCE_FILE = "provenance.json"

_REFERENCE_REPO = "https://github.com/tyhuang0428/CLIP2Point"
_SELECTOR_PREFIX = "selector.view_selector."
_SELECTOR_BUFFERS = ("views_elev", "views_azim", "views_dist")


@dataclass
class Conversion:
    """A converted checkpoint: the model, the layout found, the views its view selector held and what was
    set aside. `save_pretrained` writes the model, a processor rendering those views, and the provenance."""

    model: CLIP2PointPreTrainedModel
    layout: str
    views: str | list[list[float]] | None = None
    set_aside: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def save_pretrained(self, output_dir: str | os.PathLike, tokenizer=None) -> None:
        from .feature_extraction_clip2point import CLIP2PointFeatureExtractor
        from .processing_clip2point import CLIP2PointProcessor

        self.model.save_pretrained(output_dir)
        views = {} if self.views is None else {"views": self.views}
        front_end = CLIP2PointFeatureExtractor(image_size=self.model.config.vision_config.image_size, **views)
        # Without a tokenizer the front end is saved alone (AutoProcessor loads it as it is).
        (front_end if tokenizer is None else CLIP2PointProcessor(front_end, tokenizer)).save_pretrained(
            output_dir
        )
        (Path(output_dir) / PROVENANCE_FILE).write_text(json.dumps(self.provenance, indent=2) + "\n")


def detect_layout(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """`"clip"`, `"pretraining"` or `"dpa"`, from the keys alone (the authors' file names do not tell:
    their pre-training script writes `best_val.pth` and `best_test.pth`, their few-shot script another
    `best_test.pth`)."""
    found = [
        layout
        for layout, groups in LAYOUT_KEY_GROUPS.items()
        if (all if layout == "clip" else any)(any(k.startswith(g) for k in state) for g in groups)
    ]
    if len(found) == 1:
        return found[0]
    counts: dict[str, int] = {}
    for key in state:
        group = key.split(".")[0]
        counts[group] = counts.get(group, 0) + 1
    seen = ", ".join(f"{group}.* ({n})" for group, n in sorted(counts.items())) or "none"
    expected = "; ".join(
        f"{layout}: {', '.join(g + '*' for g in groups)}" for layout, groups in LAYOUT_KEY_GROUPS.items()
    )
    what = (
        "unknown checkpoint layout" if not found else f"ambiguous checkpoint layout ({' and '.join(found)})"
    )
    raise CheckpointConversionError(f"{source}: {what}; keys seen: {seen}; expected ({expected})")


def _read_view_selector(reader: _KeyReader, set_aside: list[str]) -> str | list[list[float]] | None:
    """Pop the reference's fixed view selector (`selector.view_selector.views_{elev,azim,dist}`, each of
    shape (V,) or (1, V)) and return its views as a preset name or `[elevation, azimuth, distance]` rows.

    Units: the reference passes these buffers to PyTorch3D's `look_at_view_transform` with its default
    `degrees=True`, and its distance is the camera distance in the unit-sphere frame: the same units as
    this package's views, so they compare (and carry over) unchanged.
    """
    selector = [k for k in reader.state if k.startswith("selector.")]
    fixed = {_SELECTOR_PREFIX + name for name in _SELECTOR_BUFFERS}
    learned = sorted(set(selector) - fixed)
    if learned:
        raise CheckpointConversionError(
            f"{reader.source}: a learned view selector ({len(learned)} keys such as {learned[0]!r}; the "
            "reference's --dim 512): its views depend on each cloud, which this package does not render"
        )
    if not selector:
        return None
    buffers = {name: reader.pop(_SELECTOR_PREFIX + name) for name in _SELECTOR_BUFFERS}
    if reader.missing:
        return None  # `finish` names the missing buffer
    shapes = {name: tuple(t.shape) for name, t in buffers.items()}
    if (
        any(len(s) not in (1, 2) or (len(s) == 2 and s[0] != 1) for s in shapes.values())
        or len({s[-1] for s in shapes.values()}) != 1
    ):
        raise CheckpointConversionError(
            f"{reader.source}: view-selector buffers must share one shape (V,) or (1, V), got {shapes}"
        )
    views = torch.stack([buffers[name].reshape(-1).float() for name in _SELECTOR_BUFFERS], dim=1)
    preset = next(
        (
            name
            for name, rows in VIEW_PRESETS.items()
            if len(rows) == len(views) and torch.allclose(views, torch.tensor(rows), atol=1e-4)
        ),
        None,
    )
    carried: str | list[list[float]] = preset or [[round(float(x), 6) for x in row] for row in views]
    what = f"preset {preset!r}" if preset else f"no preset (custom views {carried})"
    set_aside.append(
        f"selector.view_selector.views_{{elev,azim,dist}}: {len(views)} fixed views (degrees) = {what}; "
        "carried into the processor's views"
    )
    return carried


def _selection(layout: str, file_name: str | None) -> str:
    """How the authors' scripts picked a checkpoint of this layout and name (their code, not their claim)."""
    stem = Path(file_name).stem if file_name else ""
    if layout == "dpa":
        return (
            "on ModelNet40 test accuracy: the authors' few-shot script keeps the epoch with the best test "
            "accuracy (it has no validation split)"
        )
    if stem == "best_val":
        return "on zero-shot accuracy over ShapeNet-55's held-out part (the authors' best_val.pth)"
    if stem == "best_test":
        return "on ModelNet40 test accuracy (the authors' best_test.pth)"
    return (
        "not recorded in the file: the authors' pre-training script saves best_val.pth (ShapeNet-55 "
        "held-out accuracy) and best_test.pth (ModelNet40 test accuracy), and the release names neither; "
        "treat it as possibly selected on ModelNet40 test accuracy"
    )


def _provenance(layout: str, checkpoint, views, set_aside: list[str]) -> dict:
    """What `hub.build_model_card` states about converted weights (`checkpoint`: the file, if any)."""
    from . import __version__

    name = digest = None
    if isinstance(checkpoint, str | os.PathLike):
        name = Path(checkpoint).name
        with open(checkpoint, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    origin = (
        "OpenAI CLIP (no CLIP2Point training: the depth encoder starts as CLIP's image tower)"
        if layout == "clip"
        else f"the authors' release of CLIP2Point ({_REFERENCE_REPO})"
    )
    return {
        "converted_from": origin,
        "layout": layout,
        "checkpoint": name,
        "sha256": digest,
        "selection": "not applicable" if layout == "clip" else _selection(layout, name),
        "views": views,
        "set_aside": list(set_aside),
        "converter": f"clip2point_hf {__version__}",
    }


def _read(checkpoint: str | os.PathLike | StateDict, default: str) -> tuple[StateDict, str]:
    if isinstance(checkpoint, str | os.PathLike):
        return load_state_dict_file(checkpoint), str(checkpoint)
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}, default


def _finish(reader: _KeyReader, set_aside: list[str]) -> None:
    reader.finish()
    for line in set_aside:
        logger.info(f"{reader.source}: set aside {line}")


def convert_pretraining_checkpoint(
    checkpoint: str | os.PathLike | StateDict,
    clip: str | os.PathLike | CLIPModel,
    *,
    for_pretraining: bool = False,
    source: str | None = None,
    **config_kwargs,
) -> Conversion:
    """Convert the authors' pre-training checkpoint (`best_eval.pth`, `best_val.pth`, `best_test.pth` of
    `pretraining.py`: `DataParallel(CLIP2Point).state_dict()`).

    It holds the depth encoder (`point_model.*`), the frozen image encoder (`image_model.*`, a copy of
    CLIP's), the balance weight (`weights`) and the view selector's buffers; the text tower comes from
    `clip`. The model is a `CLIP2PointModel` (zero-shot, GDPA assembly), or with `for_pretraining=True` a
    `CLIP2PointForPreTraining` that resumes training. `source` names a state dict in error messages.
    """
    state, source = _read(checkpoint, source or "pre-training state dict")
    clip_model = load_clip(clip)
    config = CLIP2PointConfig.from_clip_config(clip_model.config, **config_kwargs)
    model = (CLIP2PointForPreTraining if for_pretraining else CLIP2PointModel)(config).eval()
    model.load_clip_weights(clip_model)
    base = "clip2point." if for_pretraining else ""  # where the zero-shot model's towers are
    layers = config.vision_config.num_hidden_layers
    reader = _KeyReader(state, source)
    set_aside: list[str] = []
    views = _read_view_selector(reader, set_aside)
    depth, depth_projection = _convert_visual(reader, "point_model.", layers)
    balance = reader.pop("weights")
    if for_pretraining:
        image, image_projection = _convert_visual(reader, "image_model.", layers)
    else:
        n = sum(k.startswith("image_model.") for k in reader.state)
        reader.ignore_prefix("image_model.")
        set_aside.append(f"image_model.* ({n} tensors): the frozen copy of CLIP's image tower")
        if "weights" not in reader.missing:
            set_aside.append(f"weights = {float(balance):.4g}: the pre-training loss's balance weight")
    _finish(reader, set_aside)
    _load_module(model, f"{base}depth_model", depth, source)
    _load_module(model, f"{base}depth_projection", depth_projection, source)
    if for_pretraining:
        _load_module(model, "image_model", image, source)
        _load_module(model, "image_projection", image_projection, source)
        with torch.no_grad():
            model.balance_weight.copy_(balance)
    provenance = _provenance("pretraining", checkpoint, views, set_aside)
    return Conversion(model, "pretraining", views, set_aside, provenance)


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
    *,
    source: str | None = None,
) -> Conversion:
    """Convert the authors' few-shot checkpoint (their DPA: `fewshot.py`'s `best.pth`, released as
    `best_test.pth`; with or without a DataParallel `module.` prefix) into the adapter model.

    The reference fuses the paths by their mean and classifies with raw cosines, so the result has
    `fusion="mean"` and a classifier logit scale of exp(0) = 1: its logits equal the reference's.
    The text tower and class embeddings come from `clip`, `class_names` and `prompt_template`; `source`
    names a state dict in error messages.
    """
    state, source = _read(checkpoint, source or "DPA state dict")
    clip_model = load_clip(clip)
    num_views = state.get("adapter1.fusion_ratio", torch.empty(0)).numel()
    if num_views == 0:
        raise CheckpointConversionError(f"{source}: no `adapter1.fusion_ratio`; is this a DPA checkpoint?")
    reader = _KeyReader(state, source)
    set_aside: list[str] = []
    views = _read_view_selector(reader, set_aside)
    selector_views = len(VIEW_PRESETS[views]) if isinstance(views, str) else len(views or [None] * num_views)
    if selector_views != num_views:
        raise CheckpointConversionError(
            f"{source}: the view selector holds {selector_views} views but the adapters are sized for "
            f"{num_views} (`adapter1.fusion_ratio`)"
        )
    config = CLIP2PointConfig.from_clip_config(
        clip_model.config,
        num_views=num_views,
        fusion="mean",
        classifier_logit_scale_init_value=0.0,
        id2label=dict(enumerate(class_names)),
    )
    model = CLIP2PointForPointCloudClassification(config).eval()
    model.load_clip_weights(clip_model)
    layers = config.vision_config.num_hidden_layers
    pre, pre_projection = _convert_visual(reader, "pre_model.", layers)
    ori, ori_projection = _convert_visual(reader, "ori_model.", layers)
    adapters = {}
    for name, old_prefix in (("pretrained_adapter", "adapter1"), ("clip_adapter", "adapter2")):
        adapters[name] = _Converted()
        for old, new in _REFERENCE_ADAPTER_KEYS.items():
            adapters[name].take(reader, new, f"{old_prefix}.{old}")
    _finish(reader, set_aside)
    _load_module(model, "clip2point.depth_model", pre, source)
    _load_module(model, "clip2point.depth_projection", pre_projection, source)
    _load_module(model, "clip_model", ori, source)
    _load_module(model, "clip_projection", ori_projection, source)
    for name, adapter_state in adapters.items():
        _load_module(model, name, adapter_state, source)
    model.set_class_names(class_names, tokenizer, prompt_template)
    return Conversion(model, "dpa", views, set_aside, _provenance("dpa", checkpoint, views, set_aside))


def convert_checkpoint(
    checkpoint: str | os.PathLike | StateDict,
    *,
    layout: str = "auto",
    clip: str | os.PathLike | CLIPModel | None = None,
    class_names: Sequence[str] | None = None,
    tokenizer=None,
    prompt_template: str | Sequence[str] | None = None,
    source_file: str | os.PathLike | None = None,
) -> Conversion:
    """Convert any checkpoint the converter reads; `layout="auto"` detects it from the keys
    (`detect_layout`). The pre-training and DPA layouts need `clip` (their text tower is CLIP's); the DPA
    also needs `class_names` and `tokenizer`. `source_file` names the file an already-read state dict came
    from (for the provenance)."""
    if layout not in ("auto", *LAYOUT_KEY_GROUPS):
        raise ValueError(f"`layout` must be 'auto' or one of {list(LAYOUT_KEY_GROUPS)}, got {layout!r}")
    is_file = isinstance(checkpoint, str | os.PathLike)
    state, source = _read(checkpoint, str(source_file or "state dict"))
    if layout == "auto":
        layout = detect_layout(state, source)
    if layout == "clip":
        conversion = Conversion(CLIP2PointModel.from_clip(load_openai_clip(state)), "clip")
    elif clip is None:
        raise ValueError(f"`clip` is required to convert a {layout} checkpoint (its text tower is CLIP's)")
    elif layout == "pretraining":
        conversion = convert_pretraining_checkpoint(state, clip, source=source)
    elif tokenizer is None or not class_names:
        raise ValueError("a DPA checkpoint needs `class_names` and CLIP's `tokenizer` to embed them")
    else:
        conversion = convert_dpa_checkpoint(
            state, clip, class_names, tokenizer, prompt_template, source=source
        )
    file = checkpoint if is_file else source_file
    conversion.provenance = _provenance(layout, file, conversion.views, conversion.set_aside)
    return conversion


__all__ = [
    "LAYOUT_KEY_GROUPS",
    "PROVENANCE_FILE",
    "CheckpointConversionError",
    "Conversion",
    "convert_checkpoint",
    "convert_dpa_checkpoint",
    "convert_pretraining_checkpoint",
    "detect_layout",
    "load_clip",
    "load_openai_clip",
    "load_state_dict_file",
    "openai_clip_config",
]
