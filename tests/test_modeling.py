"""CLIP2Point models: shapes, exact save/load, Auto classes, remote code, attention backends, freezing, losses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from clip2point_hf import (
    CLIP2PointConfig,
    CLIP2PointForPointCloudClassification,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
)
from clip2point_hf.modeling_clip2point import nt_xent_loss, pretraining_loss
from conftest import enable_activation_checkpointing, make_tiny_config, make_tiny_tokenizer

MODEL_CLASSES = [CLIP2PointModel, CLIP2PointForPreTraining, CLIP2PointForPointCloudClassification]


def views(batch=2, num_views=3, size=32, seed=0):
    return torch.randn(batch, num_views, 3, size, size, generator=torch.Generator().manual_seed(seed))


def inputs_for(model, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, CLIP2PointForPreTraining):
        return {
            "pixel_values": torch.randn(batch, 3, 32, 32, generator=g),
            "depth_pixel_values": torch.randn(batch, 2, 3, 32, 32, generator=g),
        }
    if isinstance(model, CLIP2PointForPointCloudClassification):
        return {
            "pixel_values": torch.randn(batch, 3, 3, 32, 32, generator=g),
            "labels": torch.arange(batch) % 2,
        }
    tokens = make_tiny_tokenizer()(["image of a chair", "image of a lamp"], padding=True, return_tensors="pt")
    return {"pixel_values": torch.randn(batch, 3, 3, 32, 32, generator=g), **tokens}


def trained_once(cls):
    """A model whose every buffer differs from its initial value (BN statistics, class embeddings)."""
    torch.manual_seed(0)
    model = cls(make_tiny_config(id2label={0: "chair", 1: "lamp"}))
    if isinstance(model, CLIP2PointForPointCloudClassification):
        model.set_class_names(["chair", "lamp"], make_tiny_tokenizer())
    model.train()
    out = model(**inputs_for(model))
    if getattr(out, "loss", None) is not None:
        out.loss.backward()
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    return model.eval()


def first_tensor(output):
    for key in ("loss", "logits", "logits_per_point_cloud", "depth_embeds"):
        if getattr(output, key, None) is not None:
            return getattr(output, key)
    raise AssertionError("no output tensor")


# --------------------------------------------------------------------------------------------------------- config


def test_default_config_has_vit_b32_shapes_and_parameter_counts():
    config = CLIP2PointConfig()
    assert (config.vision_config.hidden_size, config.vision_config.patch_size) == (768, 32)
    assert (config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers) == (12, 12)
    with torch.device("meta"):
        model = CLIP2PointModel(config)
    # openai/clip-vit-base-patch32 has 151,277,313 parameters: the same towers, projections and logit scale.
    assert sum(p.numel() for p in model.parameters()) == 151_277_313


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fusion": "sum"}, "fusion"),
        ({"num_views": 0}, "num_views"),
        ({"num_views": "ten"}, "num_views"),
        ({"view_weights": [1.0, 2.0]}, "view_weights"),
        ({"adapter_dropout": 1.0}, "adapter_dropout"),
        ({"pretraining_temperature": -0.07}, "pretraining_temperature"),
        ({"prompt_templates": ["image of a {}", "no slot"]}, "prompt_templates"),
        ({"prompt_templates": []}, "prompt_templates"),
        ({"prompt_template": "image of a"}, "prompt_templates"),  # a legacy single template is checked too
        ({"view_weights": [1.0, -1.0, -0.5]}, "positive sum"),
        # Sub-configs validate themselves (transformers' CLIP message).
        ({"vision_config": {"hidden_size": 30, "num_attention_heads": 4}}, r"hidden size \(30\)"),
    ],
)
def test_invalid_config_values_name_the_field(kwargs, field):
    with pytest.raises(Exception, match=field):
        make_tiny_config(**kwargs)


def test_config_round_trip(tmp_path):
    config = make_tiny_config(view_weights=[1.0, 0.5, 2.0], fusion="scalar")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CLIP2PointConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.view_weights == [1.0, 0.5, 2.0] and loaded.fusion == "scalar"


# --------------------------------------------------------------------------------------------------------- outputs


def test_zero_shot_logits_are_clip_scaled_weighted_means_of_per_view_cosines(tiny_tokenizer):
    torch.manual_seed(0)
    model = CLIP2PointModel(make_tiny_config(view_weights=[1.0, 0.5, 2.0], logit_scale_init_value=3.0)).eval()
    pixel_values = views()
    tokens = tiny_tokenizer(["image of a chair", "image of a cup", "lamp"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=pixel_values, **tokens)
        # Independent computation: encode each view and each prompt one by one.
        expected = torch.zeros(2, 3)
        for b in range(2):
            for k in range(3):
                text = model.text_projection(
                    model.text_model(input_ids=tokens["input_ids"][k : k + 1]).pooler_output
                )[0]
                for v, weight in enumerate([1.0, 0.5, 2.0]):
                    image = model.depth_projection(
                        model.depth_model(pixel_values[b, v : v + 1]).pooler_output
                    )[0]
                    expected[b, k] += weight * F.cosine_similarity(image, text, dim=0)
    assert out.logits_per_point_cloud.shape == (2, 3)
    assert out.view_embeds.shape == (2, 3, 16) and out.text_embeds.shape == (3, 16)
    # The authors' logits: the weighted sum of cosines, unscaled.
    torch.testing.assert_close(out.cosine_sum_per_point_cloud, expected, atol=1e-5, rtol=1e-5)
    # CLIP's: exp(logit_scale) times the weighted mean cosine (total weight 3.5).
    scaled = math.exp(3.0) * expected / 3.5
    torch.testing.assert_close(out.logits_per_point_cloud, scaled, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out.logits_per_text, scaled.T, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(
        model.get_point_cloud_features(pixel_values).pooler_output, out.point_cloud_embeds
    )


def test_zero_shot_logits_match_clip_model_on_one_view(tiny_clip, tiny_tokenizer):
    """One view, no weights: our logits are exactly `CLIPModel`'s (same towers, same scale) on that image."""
    model = CLIP2PointModel.from_clip(tiny_clip, num_views=1).eval()
    images = views(batch=2, num_views=1, seed=5)
    tokens = tiny_tokenizer(
        ["image of a chair", "image of a lamp", "a cup"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        ours = model(pixel_values=images, **tokens)
        clip = tiny_clip(pixel_values=images[:, 0], **tokens)
    torch.testing.assert_close(ours.logits_per_point_cloud, clip.logits_per_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.logits_per_text, clip.logits_per_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        ours.logits_per_point_cloud.softmax(-1), clip.logits_per_image.softmax(-1), atol=1e-6, rtol=0
    )


def test_precomputed_text_embeds_give_the_same_logits_as_input_ids(tiny_tokenizer):
    from clip2point_hf.prompts import encode_class_prompts

    torch.manual_seed(0)
    model = CLIP2PointModel(make_tiny_config()).eval()
    pixel_values = views(seed=6)
    names = ["chair", "lamp"]
    tokens = tiny_tokenizer([f"image of a {n}" for n in names], padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = model(pixel_values=pixel_values, **tokens)
        embeds = encode_class_prompts(model, tiny_tokenizer, names, "image of a {}")
        cached = model(pixel_values=pixel_values, text_embeds=embeds)
    torch.testing.assert_close(
        cached.logits_per_point_cloud, direct.logits_per_point_cloud, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(cached.cosine_sum_per_point_cloud, direct.cosine_sum_per_point_cloud)
    with pytest.raises(ValueError, match="not both"):
        model(pixel_values=pixel_values, text_embeds=embeds, **tokens)
    with pytest.raises(ValueError, match="text_embeds"):
        model(pixel_values=pixel_values, text_embeds=embeds[:, :5])


def test_zero_shot_accepts_any_number_of_views_without_view_weights():
    model = CLIP2PointModel(make_tiny_config()).eval()
    assert model(pixel_values=views(num_views=7)).view_embeds.shape == (2, 7, 16)
    with pytest.raises(ValueError, match="view_weights"):
        model(pixel_values=views(num_views=7), view_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="pixel_values"):
        model(pixel_values=torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("cls", MODEL_CLASSES)
def test_forward_shapes(cls):
    model = cls(make_tiny_config()).eval()
    out = model(**inputs_for(model))
    if cls is CLIP2PointForPreTraining:
        assert out.loss is None  # eval mode: a loss only when asked for, as CLIPModel's `return_loss`
        assert out.depth_embeds.shape == (4, 2, 16) and out.image_embeds.shape == (4, 16)
        assert model(**inputs_for(model), return_loss=True).loss.shape == ()
    elif cls is CLIP2PointForPointCloudClassification:
        assert out.logits.shape == (4, 2) and out.point_cloud_embeds.shape == (4, 16) and out.loss.shape == ()
    else:
        assert out.logits_per_point_cloud.shape == (4, 2)


# --------------------------------------------------------------------------------------------------------- save/load


@pytest.mark.parametrize("cls", MODEL_CLASSES)
def test_save_load_is_bit_exact(cls, tmp_path):
    model = trained_once(cls)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = cls.from_pretrained(tmp_path).eval()
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    # Non-persistent buffers (position ids) are rebuilt by _init_weights, not garbage from the meta device.
    for (name, a), (_, b) in zip(model.named_buffers(), loaded.named_buffers(), strict=True):
        assert torch.equal(a, b), name
    inputs = inputs_for(model, seed=1)
    with torch.no_grad():
        assert torch.equal(first_tensor(model(**inputs)), first_tensor(loaded(**inputs)))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, p in loaded.named_parameters() if p.requires_grad
    ]


def test_auto_classes_load_each_checkpoint(tmp_path):
    from transformers import AutoModelForImageClassification, AutoModelForPreTraining

    for cls, auto in (
        (CLIP2PointModel, AutoModel),
        (CLIP2PointForPreTraining, AutoModelForPreTraining),
        (CLIP2PointForPointCloudClassification, AutoModelForImageClassification),
    ):
        model = trained_once(cls)
        model.save_pretrained(tmp_path / cls.__name__)
        assert type(auto.from_pretrained(tmp_path / cls.__name__)) is cls
    # The base model loads from any CLIP2Point checkpoint (the head's prefix is stripped).
    base = AutoModel.from_pretrained(tmp_path / "CLIP2PointForPreTraining")
    pretraining = trained_once(CLIP2PointForPreTraining)
    assert torch.equal(base.depth_projection.weight, pretraining.clip2point.depth_projection.weight), (
        "AutoModel must load the pre-trained depth encoder"
    )


def test_trust_remote_code_loads_without_the_package(tmp_path):
    model = trained_once(CLIP2PointForPointCloudClassification)
    model.save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    assert "auto_map" in config and (tmp_path / "modeling_clip2point.py").is_file()
    inputs = inputs_for(model, seed=3)
    torch.save(inputs["pixel_values"], tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(model(pixel_values=inputs["pixel_values"]).logits, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["clip2point_hf"] = None  # importing the package now raises ImportError
        import torch
        from transformers import AutoModel, AutoModelForImageClassification
        folder = {str(tmp_path)!r}
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert "clip2point_hf" not in type(model).__module__, type(model).__module__
        pixel_values = torch.load(folder + "/inputs.pt", weights_only=True)
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits
        assert torch.equal(logits, torch.load(folder + "/expected.pt", weights_only=True))
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        print(type(model).__name__, type(base).__name__)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["CLIP2PointForPointCloudClassification", "CLIP2PointModel"]


# --------------------------------------------------------------------------------------------------------- backends


def test_eager_and_sdpa_agree(tmp_path):
    trained_once(CLIP2PointModel).save_pretrained(tmp_path)
    eager = CLIP2PointModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = CLIP2PointModel.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.depth_model.config._attn_implementation == "eager"
    assert sdpa.text_model.config._attn_implementation == "sdpa"
    inputs = inputs_for(eager, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(
            eager(**inputs).logits_per_point_cloud,
            sdpa(**inputs).logits_per_point_cloud,
            atol=1e-5,
            rtol=1e-5,
        )


def test_bf16_load(tmp_path):
    model = trained_once(CLIP2PointModel)
    model.save_pretrained(tmp_path)
    half = CLIP2PointModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    inputs = inputs_for(model, seed=4)
    with torch.no_grad():
        full = model(**inputs).logits_per_point_cloud
        low = half(**{k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()})
    torch.testing.assert_close(low.logits_per_point_cloud.float(), full, atol=0.1, rtol=0.05)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = CLIP2PointForPreTraining(make_tiny_config()).train()
    model.freeze_for_training()
    inputs = inputs_for(model)
    model(**inputs).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    enable_activation_checkpointing(model)
    assert model.clip2point.depth_model.encoder.gradient_checkpointing
    model(**inputs).loss.backward()
    for name, grad in reference.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------- freezing


#: What the method trains in each model (everything else is frozen by `freeze_for_training`).
TRAINABLE_PREFIXES = {
    CLIP2PointModel: ("depth_model.", "depth_projection."),
    CLIP2PointForPreTraining: ("clip2point.depth_model.", "clip2point.depth_projection.", "balance_weight"),
    CLIP2PointForPointCloudClassification: (
        "pretrained_adapter.",
        "clip_adapter.",
        "fusion.",
        "classifier_logit_scale",
    ),
}
ADAPTER_PARAMETERS = [
    f"{path}.{name}"
    for path in ("pretrained_adapter", "clip_adapter")
    for name in (
        "view_scale",
        "view_norm.weight",
        "view_norm.bias",
        "fc1.weight",
        "fc1.bias",
        "hidden_norm.weight",
        "hidden_norm.bias",
        "fc2.weight",
        "fc2.bias",
    )
]


@pytest.mark.parametrize("cls", MODEL_CLASSES)
def test_building_and_loading_freeze_nothing(cls, tmp_path):
    """As any transformers model: every parameter trains until a script freezes what it wants."""
    model = cls(make_tiny_config())
    assert all(p.requires_grad for p in model.parameters())
    model.save_pretrained(tmp_path)
    for loaded in (cls.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert all(p.requires_grad for p in loaded.parameters()), type(loaded).__name__
    model.freeze_for_training()
    model.save_pretrained(
        tmp_path / "frozen"
    )  # requires_grad is not saved: loading a frozen model freezes nothing
    assert all(p.requires_grad for p in cls.from_pretrained(tmp_path / "frozen").parameters())


@pytest.mark.parametrize("cls", MODEL_CLASSES)
def test_freeze_for_training_leaves_exactly_the_methods_trainable_set(cls):
    model = cls(make_tiny_config())
    # An earlier, different freeze does not change the outcome.
    (model if cls is CLIP2PointModel else model.clip2point).depth_model.requires_grad_(False)
    names = [n for n, _ in model.named_parameters()]
    trainable = model.freeze_for_training()
    assert trainable == [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [n for n in names if n.startswith(TRAINABLE_PREFIXES[cls])]
    if cls is CLIP2PointForPointCloudClassification:  # GDPA: the adapter parameters, named one by one
        expected = [*ADAPTER_PARAMETERS, "fusion.gate_weight", "fusion.gate_bias", "classifier_logit_scale"]
        assert sorted(trainable) == sorted(expected)
    else:  # the depth tower: every one of the vision tower's tensors (a CLIP vision tower has the same names)
        from transformers import CLIPVisionModel

        tower = [
            f"depth_model.{n}" for n, _ in CLIPVisionModel(model.config.vision_config).named_parameters()
        ]
        prefix = "clip2point." if cls is CLIP2PointForPreTraining else ""
        extra = ["balance_weight"] if cls is CLIP2PointForPreTraining else []
        assert sorted(trainable) == sorted(
            [*(prefix + n for n in tower), f"{prefix}depth_projection.weight", *extra]
        )
    assert model.freeze_for_training() == trainable  # idempotent


@pytest.mark.parametrize(
    ("cls", "fusion", "count"),
    [
        (CLIP2PointModel, "gated", 87_849_216),
        (CLIP2PointForPreTraining, "gated", 87_849_217),
        (CLIP2PointForPointCloudClassification, "gated", 6_298_133),
        (CLIP2PointForPointCloudClassification, "mean", 5_773_333),
    ],
)
def test_trainable_parameter_counts_of_vit_b32_are_the_documented_ones(cls, fusion, count):
    """The README's table of trainable parameters (ViT-B/32 defaults), on the meta device."""
    with torch.device("meta"):
        model = cls(CLIP2PointConfig(fusion=fusion))
    model.freeze_for_training()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count


@pytest.mark.parametrize("cls", [CLIP2PointForPreTraining, CLIP2PointForPointCloudClassification])
def test_frozen_parts_get_no_gradient_and_do_not_move(cls):
    torch.manual_seed(0)
    model = cls(make_tiny_config()).train()
    model.freeze_for_training()
    trainable_prefixes = TRAINABLE_PREFIXES[cls]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model(**inputs_for(model)).loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        trainable = name.startswith(trainable_prefixes)
        assert param.requires_grad == trainable, name
        if trainable:
            assert param.grad is not None, name
        else:
            assert param.grad is None and torch.equal(param, before[name]), name
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert moved and all(n.startswith(trainable_prefixes) for n in moved)


# --------------------------------------------------------------------------------------------------------- losses


def loop_nt_xent(a, b, temperature):
    """NT-Xent of docs/design.md, "Image-depth pre-training": one positive, 2B - 2 negatives per row; mean -log softmax."""
    z = [F.normalize(x, dim=0) for x in torch.cat([a, b])]
    n, batch = len(z), len(a)
    total = 0.0
    for i in range(n):
        positive = (i + batch) % n
        scores = {j: float(z[i] @ z[j]) / temperature for j in range(n) if j != i}
        total += -(scores[positive] - math.log(sum(math.exp(s) for s in scores.values())))
    return total / n


def test_nt_xent_equals_loop_computation():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert nt_xent_loss(a, b, 0.07).item() == pytest.approx(loop_nt_xent(a, b, 0.07), rel=1e-5)
    assert nt_xent_loss(a, a, 0.5).item() < nt_xent_loss(a, b, 0.5).item()


def test_pretraining_forward_on_one_object_gives_embeddings_and_no_loss():
    torch.manual_seed(0)
    model = CLIP2PointForPreTraining(make_tiny_config()).eval()
    batch = inputs_for(model, batch=3, seed=7)
    one = {k: v[:1] for k, v in batch.items()}
    with torch.no_grad():
        single, full = model(**one), model(**batch)
        assert single.loss is None and single.loss_cross is None and single.loss_intra is None
        assert full.loss is None  # eval mode: no loss unless asked for
        assert model(**batch, return_loss=True).loss is not None  # a validation loss
        # The one object's embeddings are those it has inside a larger batch.
        torch.testing.assert_close(single.depth_embeds, full.depth_embeds[:1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(single.image_embeds, full.image_embeds[:1], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="at least 2"):
            model(**one, return_loss=True)
    model.train()
    with pytest.raises(ValueError, match="at least 2"):  # a training step on one object has no negatives
        model(**one)
    assert model(**one, return_loss=False).loss is None
    assert model(**batch).loss.requires_grad


def test_pretraining_loss_equals_spec_formula():
    torch.manual_seed(0)
    model = CLIP2PointForPreTraining(make_tiny_config(balance_weight_init_value=1.7)).eval()
    inputs = inputs_for(model, batch=5)
    out = model(**inputs, return_loss=True)
    with torch.no_grad():
        f1 = model.clip2point.get_depth_features(inputs["depth_pixel_values"][:, 0]).pooler_output
        f2 = model.clip2point.get_depth_features(inputs["depth_pixel_values"][:, 1]).pooler_output
        fi = model.image_projection(model.image_model(inputs["pixel_values"]).pooler_output)
    intra = loop_nt_xent(f1, f2, 0.07)
    cross = loop_nt_xent((f1 + f2) / 2, fi, 0.07)
    w = 1.7
    assert out.loss_intra.item() == pytest.approx(intra, rel=1e-4)
    assert out.loss_cross.item() == pytest.approx(cross, rel=1e-4)
    assert out.loss.item() == pytest.approx(cross + intra / w**2 + math.log(1 + w), rel=1e-4)


def _distributed_worker(rank, world, port, depth1, depth2, image, result_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    chunk = len(depth1) // world
    mine = slice(rank * chunk, (rank + 1) * chunk)
    d1 = depth1[mine].clone().requires_grad_(True)
    d2 = depth2[mine].clone().requires_grad_(True)
    w = torch.tensor(1.3, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss, _, _ = pretraining_loss(d1, d2, image[mine], w, 0.07)
        loss.backward()
    # DDP averages parameter gradients over processes; do the same for the inputs' gradients.
    grads = torch.cat([d1.grad, d2.grad]) / world
    gathered = [torch.zeros_like(grads) for _ in range(world)]
    dist.all_gather(gathered, grads)
    w_grad = w.grad / world
    dist.all_reduce(w_grad)
    if rank == 0:
        torch.save(
            {
                "loss": loss.detach(),
                "grads": gathered,
                "w_grad": w_grad,
                "warnings": [str(c.message) for c in caught],
            },
            result_path,
        )
    dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes
def test_distributed_loss_equals_single_process_loss_on_the_global_batch(tmp_path):
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(0)
    depth1, depth2, image = (torch.randn(8, 16, generator=g) for _ in range(3))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(
        _distributed_worker, args=(2, port, depth1, depth2, image, tmp_path / "r.pt"), nprocs=2, join=True
    )
    result = torch.load(tmp_path / "r.pt", weights_only=True)

    d1, d2 = depth1.clone().requires_grad_(True), depth2.clone().requires_grad_(True)
    w = torch.tensor(1.3, requires_grad=True)
    loss, _, _ = pretraining_loss(d1, d2, image, w, 0.07)
    loss.backward()
    torch.testing.assert_close(result["loss"], loss.detach())
    rank0, rank1 = result["grads"]
    torch.testing.assert_close(torch.cat([rank0[:4], rank1[:4]]), d1.grad)
    torch.testing.assert_close(torch.cat([rank0[4:], rank1[4:]]), d2.grad)
    torch.testing.assert_close(result["w_grad"], w.grad)
    assert result["warnings"] == []  # no deprecated collective (torch.distributed.nn.functional.all_gather)


# --------------------------------------------------------------------------------------------------------- GDPA


def test_fusion_modes():
    torch.manual_seed(0)
    pre, clip = torch.randn(4, 16), torch.randn(4, 16)
    for mode in ("mean", "gated", "scalar"):
        model = CLIP2PointForPointCloudClassification(make_tiny_config(fusion=mode))
        fused, gate = model.fusion(pre, clip)
        # Every mode starts as the reference's mean fusion.
        torch.testing.assert_close(fused, (pre + clip) / 2)
    gated = CLIP2PointForPointCloudClassification(make_tiny_config(fusion="gated")).fusion
    with torch.no_grad():
        gated.gate_bias.fill_(3.0)
    fused, gate = gated(pre, clip)
    g = torch.sigmoid(torch.tensor(3.0))
    torch.testing.assert_close(fused, g * pre + (1 - g) * clip)
    assert gate.shape == (4, 16)


def test_aggregator_follows_the_spec_order():
    torch.manual_seed(0)
    model = CLIP2PointForPointCloudClassification(make_tiny_config(adapter_hidden_size=24)).eval()
    adapter = model.pretrained_adapter
    with torch.no_grad():
        adapter.view_scale.copy_(torch.tensor([0.2, 0.5, 1.5]))
        adapter.view_norm.running_mean.normal_()
        adapter.hidden_norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 16)
    bn1, bn2 = adapter.view_norm, adapter.hidden_norm
    expected = []
    for b in range(2):
        flat = []
        for v in range(3):
            scaled = x[b, v] * adapter.view_scale[v]
            flat.append(
                (scaled - bn1.running_mean) / torch.sqrt(bn1.running_var + bn1.eps) * bn1.weight + bn1.bias
            )
        hidden = adapter.fc1.weight @ torch.cat(flat) + adapter.fc1.bias
        hidden = (hidden - bn2.running_mean) / torch.sqrt(bn2.running_var + bn2.eps) * bn2.weight + bn2.bias
        expected.append(adapter.fc2.weight @ hidden.clamp(min=0) + adapter.fc2.bias)
    with torch.no_grad():
        torch.testing.assert_close(adapter(x), torch.stack(expected), atol=1e-5, rtol=1e-5)
    assert adapter.fc1.in_features == 3 * 16 and adapter.fc1.out_features == 24


def test_class_names_are_embedded_with_the_text_tower(tiny_tokenizer):
    torch.manual_seed(0)
    model = CLIP2PointForPointCloudClassification(make_tiny_config()).eval()
    model.set_class_names(["chair", "lamp", "cup"], tiny_tokenizer, ["image of a {}", "a depth map of a {}"])
    assert model.config.id2label == {0: "chair", 1: "lamp", 2: "cup"} and model.config.num_labels == 3
    with torch.no_grad():
        expected = []
        for name in ("chair", "lamp", "cup"):
            ensemble = sum(
                F.normalize(
                    model.clip2point.get_text_features(
                        **tiny_tokenizer([t.format(name)], return_tensors="pt")
                    ).pooler_output[0],
                    dim=0,
                )
                for t in ("image of a {}", "a depth map of a {}")
            )
            expected.append(F.normalize(ensemble, dim=0))
    torch.testing.assert_close(model.class_embeddings, torch.stack(expected), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="duplicates"):
        model.set_class_names(["chair", "chair"], tiny_tokenizer)
    with pytest.raises(ValueError, match="class_names"):
        model.set_class_names([], tiny_tokenizer)
    with pytest.raises(ValueError, match="labels"):
        model(pixel_values=views(), labels=torch.tensor([0, 3]))


def test_class_name_templates_survive_save_and_load(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    model = CLIP2PointForPointCloudClassification(make_tiny_config()).eval()
    templates = ["image of a {}", "a depth map of a {}", "a 3D model of a {}"]
    model.set_class_names(["chair", "lamp"], tiny_tokenizer, templates)
    assert model.config.prompt_templates == templates
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["prompt_templates"] == templates
    loaded = CLIP2PointForPointCloudClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.prompt_templates == templates
    saved = loaded.class_embeddings.clone()
    assert torch.equal(saved, model.class_embeddings)
    loaded.set_class_names(["chair", "lamp"], tiny_tokenizer)  # default: the saved ensemble
    torch.testing.assert_close(loaded.class_embeddings, saved, atol=1e-6, rtol=0)
    loaded.set_class_names(["chair", "lamp"], tiny_tokenizer, templates[0])  # control: one template differs
    assert not torch.allclose(loaded.class_embeddings, saved, atol=1e-3)
    assert loaded.config.prompt_templates == templates[:1]


def test_a_legacy_single_prompt_template_loads_as_a_list(tmp_path):
    make_tiny_config().save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    stored.pop("prompt_templates", None)
    stored["prompt_template"] = "a depth image of a {}"
    (tmp_path / "config.json").write_text(json.dumps(stored))
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.prompt_templates == ["a depth image of a {}"] and not hasattr(config, "prompt_template")


def test_from_clip_and_assembly_copy_the_right_towers(tiny_clip, tiny_tokenizer, tmp_path):
    model = CLIP2PointModel.from_clip(tiny_clip, num_views=3)
    assert torch.equal(
        model.depth_model.encoder.layers[1].mlp.fc1.weight,
        tiny_clip.vision_model.encoder.layers[1].mlp.fc1.weight,
    )
    assert torch.equal(model.text_projection.weight, tiny_clip.text_projection.weight)
    with torch.no_grad():
        model.depth_projection.weight.mul_(2)  # pretend pre-training changed the depth encoder
    model.save_pretrained(tmp_path / "c2p")
    tiny_clip.save_pretrained(tmp_path / "clip")
    gdpa = CLIP2PointForPointCloudClassification.from_pretrained_models(
        str(tmp_path / "c2p"), str(tmp_path / "clip"), ["chair", "lamp"], tiny_tokenizer, fusion="scalar"
    )
    assert gdpa.config.fusion == "scalar" and gdpa.config.num_labels == 2
    assert torch.equal(gdpa.clip2point.depth_projection.weight, model.depth_projection.weight)
    assert torch.equal(gdpa.clip_projection.weight, tiny_clip.visual_projection.weight)
    assert all(p.requires_grad for p in gdpa.parameters())  # nothing frozen until a script asks
    gdpa.freeze_for_training()
    assert not any(p.requires_grad for p in gdpa.clip2point.parameters())
