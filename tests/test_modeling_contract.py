"""The contracts every transformers model honours, checked on each CLIP2Point class and on `CLIPModel`.

The checks follow what transformers' generic model tests verify (tuple vs dict outputs, hidden states and
attentions, `get_*_features`, initialisation of missing weights, attention backends, activation
checkpointing, `torch.compile`, `torch.export`). Every check also runs on transformers' own `CLIPModel`
(tiny towers of the same shape) as a control: a check that `CLIPModel` fails is a wrong check.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode
from transformers import CLIPModel
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from clip2point_hf import (
    CLIP2PointForPointCloudClassification,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
)
from clip2point_hf.testing_utils import make_tiny_clip, make_tiny_config, make_tiny_tokenizer
from conftest import enable_activation_checkpointing

LAYERS, HEADS, HIDDEN, PROJECTION = 2, 4, 32, 16  # the towers of `tiny_tower_configs`
VISION_SEQ = (32 // 8) ** 2 + 1  # 32 px images, 8 px patches, plus the class token
BATCH, VIEWS = 2, 3

CASES = ["CLIPModel", "CLIP2PointModel", "CLIP2PointForPreTraining", "CLIP2PointForPointCloudClassification"]
CLIP2POINT_CLASSES = {
    "CLIP2PointModel": CLIP2PointModel,
    "CLIP2PointForPreTraining": CLIP2PointForPreTraining,
    "CLIP2PointForPointCloudClassification": CLIP2PointForPointCloudClassification,
}


class seeded_weight_init(TorchFunctionMode):
    """Re-seed before every random fill (`Tensor.normal_`, `uniform_`, ... through torch's public function
    override mode), so that a tensor's initial values depend only on the rule that draws them (its shape and
    distribution), not on how many draws came before: a model loaded with missing weights, which initialises
    only those, can then be compared exactly with one built directly."""

    RANDOM_FILLS = frozenset({"normal_", "uniform_", "bernoulli_", "exponential_", "random_", "cauchy_"})

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in self.RANDOM_FILLS:
            torch.manual_seed(self.seed)
        return func(*args, **(kwargs or {}))


def build(case: str, attn_implementation: str = "sdpa", **config_kwargs):
    """A seeded tiny model; attention weights need `attn_implementation="eager"` (sdpa returns none)."""
    torch.manual_seed(0)
    if case == "CLIPModel":
        clip = make_tiny_clip()
        if config_kwargs:
            clip = CLIPModel(type(clip.config)(**{**clip.config.to_dict(), **config_kwargs})).eval()
    else:
        config = make_tiny_config(num_views=VIEWS, adapter_dropout=0.0, **config_kwargs)
        clip = CLIP2POINT_CLASSES[case](config).eval()
    clip.set_attn_implementation(attn_implementation)
    return clip


def tokens() -> dict:
    return dict(
        make_tiny_tokenizer()(["image of a chair", "image of a lamp"], padding=True, return_tensors="pt")
    )


def inputs_for(case: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    if case == "CLIPModel":
        return {"pixel_values": torch.randn(BATCH, 3, 32, 32, generator=g), **tokens()}
    if case == "CLIP2PointForPreTraining":
        return {
            "pixel_values": torch.randn(BATCH, 3, 32, 32, generator=g),
            "depth_pixel_values": torch.randn(BATCH, 2, 3, 32, 32, generator=g),
        }
    views = torch.randn(BATCH, VIEWS, 3, 32, 32, generator=g)
    if case == "CLIP2PointForPointCloudClassification":
        return {"pixel_values": views, "labels": torch.tensor([0, 1])}
    return {"pixel_values": views, **tokens()}


def tower_runs(case: str, model, inputs: dict) -> dict:
    """For each tower output field: (the tower, the inputs it must have seen, its projection), computed here
    independently of the model's forward."""
    text = {"input_ids": inputs.get("input_ids"), "attention_mask": inputs.get("attention_mask")}
    if case == "CLIPModel":
        return {
            "vision_model_output": (
                model.vision_model,
                {"pixel_values": inputs["pixel_values"]},
                model.visual_projection,
            ),
            "text_model_output": (model.text_model, text, model.text_projection),
        }
    if case == "CLIP2PointModel":
        flat = {"pixel_values": inputs["pixel_values"].flatten(0, 1)}
        return {
            "depth_model_output": (model.depth_model, flat, model.depth_projection),
            "text_model_output": (model.text_model, text, model.text_projection),
        }
    if case == "CLIP2PointForPreTraining":
        depth = {"pixel_values": inputs["depth_pixel_values"].flatten(0, 1)}
        return {
            "depth_model_output": (model.clip2point.depth_model, depth, model.clip2point.depth_projection),
            "image_model_output": (
                model.image_model,
                {"pixel_values": inputs["pixel_values"]},
                model.image_projection,
            ),
        }
    flat = {"pixel_values": inputs["pixel_values"].flatten(0, 1)}
    return {
        "depth_model_output": (model.clip2point.depth_model, flat, model.clip2point.depth_projection),
        "clip_model_output": (model.clip_model, flat, model.clip_projection),
    }


def assert_nested_equal(a, b, path="output", atol=0.0):
    """`a` and `b` hold the same tensors in the same nesting (tuples, lists, ModelOutputs)."""
    if isinstance(a, ModelOutput):
        a = a.to_tuple()
    if isinstance(b, ModelOutput):
        b = b.to_tuple()
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f"{path}: {type(b)} of another length"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_nested_equal(x, y, f"{path}[{i}]", atol)
    else:
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), path
        torch.testing.assert_close(a, b, atol=atol, rtol=atol, msg=path)


# ------------------------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("flags", [{}, {"output_hidden_states": True, "output_attentions": True}])
@pytest.mark.parametrize("case", CASES)
def test_tuple_outputs_equal_dict_outputs_in_field_order(case, flags):
    model = build(case, "eager")
    inputs = inputs_for(case)
    with torch.no_grad():
        as_dict = model(**inputs, **flags)
        as_tuple = model(**inputs, **flags, return_dict=False)
    assert isinstance(as_tuple, tuple)
    present = [f.name for f in dataclasses.fields(as_dict) if getattr(as_dict, f.name) is not None]
    assert len(as_tuple) == len(present)
    for name, value in zip(present, as_tuple, strict=True):
        assert_nested_equal(value, getattr(as_dict, name), name)


@pytest.mark.parametrize("case", CASES)
def test_each_tower_returns_its_own_output_hidden_states_and_attentions(case):
    model = build(case, "eager")
    inputs = inputs_for(case)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
        plain = model(**inputs)
        for field, (tower, tower_inputs, projection) in tower_runs(case, model, inputs).items():
            tower_out = getattr(out, field)
            assert isinstance(tower_out, BaseModelOutputWithPooling), field
            assert getattr(plain, field).hidden_states is None and getattr(plain, field).attentions is None
            reference = tower(**tower_inputs, output_hidden_states=True, output_attentions=True)
            images = next(iter(tower_inputs.values())).shape[0]
            seq = VISION_SEQ if "pixel_values" in tower_inputs else tower_inputs["input_ids"].shape[1]
            # CLIP's convention: pooler_output is the projected embedding of each image (or text).
            assert tower_out.pooler_output.shape == (images, PROJECTION), field
            torch.testing.assert_close(tower_out.pooler_output, projection(reference.pooler_output))
            assert tower_out.last_hidden_state.shape == (images, seq, HIDDEN), field
            assert len(tower_out.hidden_states) == LAYERS + 1, field
            assert len(tower_out.attentions) == LAYERS, field
            for mine, theirs in zip(tower_out.hidden_states, reference.hidden_states, strict=True):
                assert mine.shape == (images, seq, HIDDEN), field
                torch.testing.assert_close(mine, theirs)
            for mine, theirs in zip(tower_out.attentions, reference.attentions, strict=True):
                assert mine.shape == (images, HEADS, seq, seq), field
                torch.testing.assert_close(mine, theirs)
                torch.testing.assert_close(mine.sum(-1), torch.ones(images, HEADS, seq))


def feature_methods(case: str, model, inputs: dict) -> dict:
    """method name -> (kwargs, tower that must have run, its input count, the expected `pooler_output`)."""
    text = {"input_ids": inputs.get("input_ids"), "attention_mask": inputs.get("attention_mask")}
    with torch.no_grad():
        if case == "CLIPModel":
            image = {"pixel_values": inputs["pixel_values"]}
            return {
                "get_image_features": (
                    image,
                    BATCH,
                    model.visual_projection(model.vision_model(**image).pooler_output),
                ),
                "get_text_features": (text, 2, model.text_projection(model.text_model(**text).pooler_output)),
            }
        if case == "CLIP2PointForPreTraining":
            image = {"pixel_values": inputs["pixel_values"]}
            return {
                "get_image_features": (
                    image,
                    BATCH,
                    model.image_projection(model.image_model(**image).pooler_output),
                )
            }
        if case == "CLIP2PointForPointCloudClassification":
            return {}
        views = inputs["pixel_values"]
        depth = model.depth_projection(model.depth_model(pixel_values=views.flatten(0, 1)).pooler_output)
        view_embeds = F.normalize(depth, dim=-1).view(BATCH, VIEWS, -1)
        return {
            "get_depth_features": ({"pixel_values": views.flatten(0, 1)}, BATCH * VIEWS, depth),
            "get_view_features": ({"pixel_values": views}, BATCH * VIEWS, view_embeds),
            "get_point_cloud_features": ({"pixel_values": views}, BATCH * VIEWS, view_embeds.sum(1)),
            "get_text_features": (text, 2, model.text_projection(model.text_model(**text).pooler_output)),
        }


@pytest.mark.parametrize("case", CASES)
def test_get_features_return_base_model_outputs_with_the_embedding_as_pooler_output(case):
    model = build(case, "eager")
    inputs = inputs_for(case)
    methods = feature_methods(case, model, inputs)
    if case == "CLIP2PointForPointCloudClassification":
        pytest.skip("the classifier has no get_*_features")
    for name, (kwargs, images, expected) in methods.items():
        method = getattr(model, name)
        with torch.no_grad():
            out = method(**kwargs)
            full = method(**kwargs, output_hidden_states=True, output_attentions=True)
            as_tuple = method(**kwargs, return_dict=False)
        assert isinstance(out, BaseModelOutputWithPooling), name
        torch.testing.assert_close(out.pooler_output, expected, msg=name)
        assert out.last_hidden_state.shape[::2] == (images, HIDDEN), name
        assert out.hidden_states is None and out.attentions is None, name
        assert len(full.hidden_states) == LAYERS + 1 and len(full.attentions) == LAYERS, name
        assert full.attentions[0].shape[:2] == (images, HEADS), name
        assert isinstance(as_tuple, tuple), name
        assert_nested_equal(as_tuple, out, name)


def test_point_cloud_features_honour_view_weights_and_match_the_forward():
    model = build("CLIP2PointModel")
    inputs = inputs_for("CLIP2PointModel")
    weights = torch.tensor([0.5, 1.0, 2.0])
    with torch.no_grad():
        views = model.get_view_features(inputs["pixel_values"]).pooler_output
        clouds = model.get_point_cloud_features(inputs["pixel_values"], view_weights=weights).pooler_output
        out = model(**inputs, view_weights=weights)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
    torch.testing.assert_close(clouds, (views * weights[None, :, None]).sum(1))
    torch.testing.assert_close(out.point_cloud_embeds, clouds)
    torch.testing.assert_close(out.text_embeds, F.normalize(text, dim=-1))


# ------------------------------------------------------------------------------------------------- initialisation


def clip_name(name: str) -> str | None:
    """The `CLIPModel` parameter that a CLIP2Point tower parameter copies (None for CLIP2Point's own)."""
    name = name.removeprefix("clip2point.")
    name = re.sub(r"^(depth_model|image_model|clip_model)\.", "vision_model.", name)
    return name if name.startswith(("vision_model.", "text_model.")) else None


def tower_prefixes(case: str) -> tuple[str, ...]:
    if case == "CLIPModel":
        return ("vision_model.", "text_model.", "visual_projection.", "text_projection.")
    return (
        "depth_model.",
        "text_model.",
        "image_model.",
        "clip_model.",
        "clip2point.depth_model.",
        "clip2point.text_model.",
        "depth_projection.",
        "text_projection.",
        "image_projection.",
        "clip_projection.",
        "clip2point.depth_projection.",
        "clip2point.text_projection.",
    )


def load_with_missing(case: str, how: str, folder):
    """Load `case` with some or all weights missing: no checkpoint at all (`state_dict={}`), a folder lacking
    every tower and projection key, or the same folder through `trust_remote_code`."""
    reference = build(case)
    if how == "empty":
        return type(reference).from_pretrained(None, config=reference.config, state_dict={})
    reference.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith(tower_prefixes(case))}
    assert len(kept) < len(weights)
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    if how == "remote_code":
        # The class a `trust_remote_code` user gets: the modeling file copied into the folder, not this package's.
        cls = get_class_from_dynamic_module(f"modeling_clip2point.{type(reference).__name__}", folder)
        assert cls.__module__.startswith("transformers_modules") and cls is not type(reference), (
            cls.__module__
        )
        return cls.from_pretrained(folder)
    return type(reference).from_pretrained(folder)


@pytest.mark.parametrize("how", ["empty", "folder", "remote_code"])
@pytest.mark.parametrize("case", CASES)
def test_missing_weights_are_initialised_as_in_a_model_built_from_its_config(case, how, tmp_path):
    if how == "remote_code" and case != "CLIP2PointModel":
        pytest.skip("the remote-code path is checked on CLIP2PointModel (CLIPModel is not remote code)")
    with seeded_weight_init():
        built = build(case)
        loaded = load_with_missing(case, how, tmp_path)
    built_state, loaded_state = built.state_dict(), loaded.state_dict()
    assert built_state.keys() == loaded_state.keys()
    different = [k for k in built_state if not torch.equal(built_state[k], loaded_state[k])]
    if case == "CLIPModel" and how == "empty":
        # transformers' own gap: `CLIPPreTrainedModel._init_weights` never sets `logit_scale`, which stays
        # uninitialised memory when it is missing. Everything else in the control must match.
        different.remove("logit_scale")
    assert not different, f"initialised differently after loading: {different}"
    # Non-persistent buffers (position ids) too.
    for (name, a), (_, b) in zip(built.named_buffers(), loaded.named_buffers(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("factor", [1.0, 3.0])
@pytest.mark.parametrize("case", CASES[1:])
def test_towers_are_initialised_exactly_as_clip_initialises_them(case, factor):
    """Each tower parameter starts with the values `CLIPPreTrainedModel._init_weights` gives `CLIPModel`'s,
    and each projection with CLIP's std (hidden_size**-0.5 times the top-level `initializer_factor`)."""
    with seeded_weight_init():
        clip = build("CLIPModel", initializer_factor=factor)
        ours = build(case, initializer_factor=factor)
    clip_params = dict(clip.named_parameters())
    compared = 0
    for name, param in ours.named_parameters():
        if (target := clip_name(name)) is not None:
            torch.testing.assert_close(param, clip_params[target], atol=0, rtol=0, msg=name)
            compared += 1
        elif case == "CLIP2PointModel" and name.endswith("_projection.weight"):
            # Same rule, same order (text first) as `CLIPModel`: the very same values.
            target = "text_projection.weight" if "text" in name else "visual_projection.weight"
            torch.testing.assert_close(param, clip_params[target], atol=0, rtol=0, msg=name)
        elif name.endswith("_projection.weight"):
            expected = clip.text_projection.weight if "text" in name else clip.visual_projection.weight
            assert param.std().item() == pytest.approx(expected.std().item(), rel=0.2), name
            assert param.std().item() == pytest.approx(factor * HIDDEN**-0.5, rel=0.2), name
    assert compared >= 30


@pytest.mark.parametrize("how", ["empty", "folder"])
def test_own_modules_keep_their_initialisation_when_loaded_with_missing_weights(how, tmp_path):
    model = load_with_missing("CLIP2PointForPointCloudClassification", how, tmp_path)
    config = model.config
    for adapter in (model.pretrained_adapter, model.clip_adapter):
        assert torch.equal(adapter.view_scale, torch.full((VIEWS,), config.adapter_view_scale_init))
        assert torch.equal(adapter.view_norm.weight, torch.ones(PROJECTION))
        assert torch.equal(adapter.view_norm.running_var, torch.ones(PROJECTION))
    assert not model.fusion.gate_weight.any() and not model.fusion.gate_bias.any()
    assert model.classifier_logit_scale.item() == pytest.approx(config.classifier_logit_scale_init_value)
    assert model.clip2point.logit_scale.item() == pytest.approx(config.logit_scale_init_value)
    gate = model.fusion(torch.randn(BATCH, PROJECTION), torch.randn(BATCH, PROJECTION))[1]
    assert torch.equal(gate, torch.full_like(gate, 0.5))
    pretraining = load_with_missing("CLIP2PointForPreTraining", how, tmp_path / "pretraining")
    assert pretraining.balance_weight.item() == 1.0


# ------------------------------------------------------------------------------------------------- backends


@pytest.mark.parametrize("case", CASES)
def test_sdpa_and_eager_agree_with_hidden_states(case):
    eager, sdpa = build(case, "eager"), build(case, "sdpa")
    for tower in tower_runs(case, sdpa, inputs_for(case)).values():
        assert tower[0].config._attn_implementation == "sdpa"
    inputs = inputs_for(case, seed=1)
    with torch.no_grad():
        a = eager(**inputs, output_hidden_states=True)
        b = sdpa(**inputs, output_hidden_states=True)
    for field in tower_runs(case, eager, inputs):
        assert len(getattr(a, field).hidden_states) == LAYERS + 1
    assert_nested_equal(a, b, atol=1e-5)


def scalar_objective(case: str, model, inputs: dict) -> torch.Tensor:
    out = model(**inputs, return_loss=True) if case == "CLIPModel" else model(**inputs)
    if getattr(out, "loss", None) is not None:
        return out.loss
    return out.logits_per_point_cloud.square().sum()


@pytest.mark.parametrize("case", CASES)
def test_gradient_checkpointing_gives_the_same_gradients(case):
    model = build(case).train()
    inputs = inputs_for(case)
    scalar_objective(case, model, inputs).backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert reference
    model.zero_grad()
    enable_activation_checkpointing(model)
    assert all(m.gradient_checkpointing for m in model.modules() if hasattr(m, "gradient_checkpointing"))
    scalar_objective(case, model, inputs).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == reference.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("case", ["CLIPModel", "CLIP2PointModel", "CLIP2PointForPointCloudClassification"])
def test_torch_compile_matches_eager(case):
    torch._dynamo.reset()
    model = build(case)
    inputs = inputs_for(case, seed=2)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert_nested_equal(compiled(**inputs), model(**inputs), atol=1e-5)


@pytest.mark.parametrize("case", ["CLIPModel", "CLIP2PointModel"])
def test_torch_export_of_the_zero_shot_forward(case):
    model = build(case)
    inputs = inputs_for(case, seed=3)
    exported = torch.export.export(model, args=(), kwargs=inputs)
    other = inputs_for(case, seed=4)
    with torch.no_grad():
        assert_nested_equal(exported.module()(**other), model(**other), atol=1e-5)
