"""Conversion of original-layout checkpoints, checked against an independent forward of that layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clip2point_hf import CLIP2PointForPreTraining, CLIP2PointModel
from clip2point_hf.conversion_clip2point import (
    CheckpointConversionError,
    convert_dpa_checkpoint,
    convert_pretraining_checkpoint,
    load_openai_clip,
    load_state_dict_file,
)
from conftest import make_tiny_tokenizer

VISION_WIDTH, TEXT_WIDTH, PATCH, GRID, LAYERS, EMBED = 128, 64, 8, 4, 2, 32


# --------------------------------------------------------------------------------------------------------- the OpenAI layout, written from its definition


def random_blocks(prefix: str, width: int, g: torch.Generator) -> dict:
    state = {}
    for i in range(LAYERS):
        p = f"{prefix}transformer.resblocks.{i}."
        state |= {
            p + "attn.in_proj_weight": torch.randn(3 * width, width, generator=g) * width**-0.5,
            p + "attn.in_proj_bias": torch.randn(3 * width, generator=g) * 0.1,
            p + "attn.out_proj.weight": torch.randn(width, width, generator=g) * width**-0.5,
            p + "attn.out_proj.bias": torch.randn(width, generator=g) * 0.1,
            p + "ln_1.weight": 1 + 0.1 * torch.randn(width, generator=g),
            p + "ln_1.bias": 0.1 * torch.randn(width, generator=g),
            p + "ln_2.weight": 1 + 0.1 * torch.randn(width, generator=g),
            p + "ln_2.bias": 0.1 * torch.randn(width, generator=g),
            p + "mlp.c_fc.weight": torch.randn(4 * width, width, generator=g) * width**-0.5,
            p + "mlp.c_fc.bias": 0.1 * torch.randn(4 * width, generator=g),
            p + "mlp.c_proj.weight": torch.randn(width, 4 * width, generator=g) * (4 * width) ** -0.5,
            p + "mlp.c_proj.bias": 0.1 * torch.randn(width, generator=g),
        }
    return state


def random_visual(prefix: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    w = VISION_WIDTH
    return {
        prefix + "conv1.weight": torch.randn(w, 3, PATCH, PATCH, generator=g) * 0.05,
        prefix + "class_embedding": torch.randn(w, generator=g) * 0.1,
        prefix + "positional_embedding": torch.randn(GRID * GRID + 1, w, generator=g) * 0.1,
        prefix + "ln_pre.weight": 1 + 0.1 * torch.randn(w, generator=g),
        prefix + "ln_pre.bias": 0.1 * torch.randn(w, generator=g),
        prefix + "ln_post.weight": 1 + 0.1 * torch.randn(w, generator=g),
        prefix + "ln_post.bias": 0.1 * torch.randn(w, generator=g),
        prefix + "proj": torch.randn(w, EMBED, generator=g) * w**-0.5,
        **random_blocks(prefix, w, g),
    }


def random_openai_clip(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + 100)
    vocab = len(make_tiny_tokenizer())
    return {
        **random_visual("visual.", seed),
        "token_embedding.weight": torch.randn(vocab, TEXT_WIDTH, generator=g) * 0.1,
        "positional_embedding": torch.randn(32, TEXT_WIDTH, generator=g) * 0.1,
        "ln_final.weight": 1 + 0.1 * torch.randn(TEXT_WIDTH, generator=g),
        "ln_final.bias": 0.1 * torch.randn(TEXT_WIDTH, generator=g),
        "text_projection": torch.randn(TEXT_WIDTH, EMBED, generator=g) * TEXT_WIDTH**-0.5,
        "logit_scale": torch.tensor(4.6052),
        **random_blocks("", TEXT_WIDTH, g),
    }


def reference_blocks(x, state, prefix, width, mask=None):
    heads = width // 64
    for i in range(LAYERS):
        p = f"{prefix}transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), state[p + "ln_1.weight"], state[p + "ln_1.bias"])
        q, k, v = (h @ state[p + "attn.in_proj_weight"].T + state[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        b, n, _ = q.shape
        q, k, v = (t.view(b, n, heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / (width // heads) ** 0.5
        if mask is not None:
            scores = scores + mask
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, width)
        x = x + attended @ state[p + "attn.out_proj.weight"].T + state[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), state[p + "ln_2.weight"], state[p + "ln_2.bias"])
        h = h @ state[p + "mlp.c_fc.weight"].T + state[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + h @ state[p + "mlp.c_proj.weight"].T + state[p + "mlp.c_proj.bias"]
    return x


def reference_visual(state, prefix, images):
    w = VISION_WIDTH
    x = F.conv2d(images, state[prefix + "conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    cls = state[prefix + "class_embedding"].expand(len(images), 1, w)
    x = torch.cat([cls, x], dim=1) + state[prefix + "positional_embedding"]
    x = F.layer_norm(x, (w,), state[prefix + "ln_pre.weight"], state[prefix + "ln_pre.bias"])
    x = reference_blocks(x, state, prefix, w)
    x = F.layer_norm(x[:, 0], (w,), state[prefix + "ln_post.weight"], state[prefix + "ln_post.bias"])
    return x @ state[prefix + "proj"]


def reference_text(state, ids):
    n = ids.shape[1]
    x = state["token_embedding.weight"][ids] + state["positional_embedding"][:n]
    mask = torch.full((n, n), float("-inf")).triu(1)
    x = reference_blocks(x, state, "", TEXT_WIDTH, mask)
    x = F.layer_norm(x, (TEXT_WIDTH,), state["ln_final.weight"], state["ln_final.bias"])
    return x[torch.arange(len(ids)), ids.argmax(-1)] @ state["text_projection"]


def reference_adapter(state, prefix, feats):
    """The authors' SimplifiedAdapter in eval mode: scale, BN over view vectors, Linear, BN, ReLU, Linear."""

    def bn(x, p):
        return (x - state[p + "running_mean"]) / torch.sqrt(state[p + "running_var"] + 1e-5) * state[
            p + "weight"
        ] + state[p + "bias"]

    x = feats * state[prefix + "fusion_ratio"].view(1, -1, 1)
    x = bn(x, prefix + "global_f.0.bn.").flatten(1)
    x = bn(
        x @ state[prefix + "global_f.3.weight"].T + state[prefix + "global_f.3.bias"], prefix + "global_f.4."
    )
    return x.clamp(min=0) @ state[prefix + "global_f.7.weight"].T + state[prefix + "global_f.7.bias"]


def random_adapter(prefix: str, views: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    d = EMBED
    state = {prefix + "fusion_ratio": torch.rand(views, generator=g)}
    for bn, size in (("global_f.0.bn.", d), ("global_f.4.", d)):
        state |= {
            prefix + bn + "weight": 1 + 0.1 * torch.randn(size, generator=g),
            prefix + bn + "bias": 0.1 * torch.randn(size, generator=g),
            prefix + bn + "running_mean": 0.1 * torch.randn(size, generator=g),
            prefix + bn + "running_var": 0.5 + torch.rand(size, generator=g),
            prefix + bn + "num_batches_tracked": torch.tensor(7),
        }
    state |= {
        prefix + "global_f.3.weight": torch.randn(d, views * d, generator=g) * 0.05,
        prefix + "global_f.3.bias": 0.1 * torch.randn(d, generator=g),
        prefix + "global_f.7.weight": torch.randn(d, d, generator=g) * 0.1,
        prefix + "global_f.7.bias": 0.1 * torch.randn(d, generator=g),
    }
    return state


# --------------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def openai_state():
    return random_openai_clip()


def test_openai_clip_conversion_matches_the_original_forward(openai_state, tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    torch.save({f"module.{k}": v for k, v in openai_state.items()}, path)  # DataParallel prefix, plain pickle
    clip = load_openai_clip(path)
    assert clip.config.vision_config.num_attention_heads == 2 and clip.config.projection_dim == EMBED
    images = torch.randn(3, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(1))
    tokens = make_tiny_tokenizer()(["image of a chair", "a lamp"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            clip.get_image_features(pixel_values=images).pooler_output,
            reference_visual(openai_state, "visual.", images),
            atol=1e-4,
            rtol=1e-4,
        )
        torch.testing.assert_close(
            clip.get_text_features(**tokens).pooler_output,
            reference_text(openai_state, tokens["input_ids"]),
            atol=1e-4,
            rtol=1e-4,
        )
    assert clip.logit_scale.item() == pytest.approx(4.6052)


def test_openai_torchscript_file_is_read(openai_state, tmp_path):
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for i, value in enumerate(openai_state.values()):
                self.register_buffer(f"t{i}", value)

        def forward(self):
            return self.t0

    scripted = torch.jit.script(Holder())
    scripted.save(str(tmp_path / "scripted.pt"))
    state = load_state_dict_file(tmp_path / "scripted.pt")
    assert torch.equal(state["t0"], next(iter(openai_state.values())))


def test_pretraining_checkpoint_conversion(openai_state, tmp_path):
    clip = load_openai_clip(openai_state)
    point, image = random_visual("point_model.", 7), random_visual("image_model.", 8)
    ckpt = {f"module.{k}": v for k, v in {**point, **image, "weights": torch.tensor(0.8)}.items()}
    torch.save(ckpt, tmp_path / "best_eval.pth")

    model = convert_pretraining_checkpoint(tmp_path / "best_eval.pth", clip).model
    assert isinstance(model, CLIP2PointModel)
    depth = torch.randn(2, 3, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        view_embeds = model(pixel_values=depth).view_embeds
    expected = F.normalize(reference_visual(point, "point_model.", depth.flatten(0, 1)), dim=-1).view(
        2, 3, -1
    )
    torch.testing.assert_close(view_embeds, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(model.text_projection.weight, clip.text_projection.weight)

    resumed = convert_pretraining_checkpoint(tmp_path / "best_eval.pth", clip, for_pretraining=True).model
    assert isinstance(resumed, CLIP2PointForPreTraining)
    assert resumed.balance_weight.item() == pytest.approx(0.8)
    with torch.no_grad():
        torch.testing.assert_close(
            resumed.get_image_features(depth[:, 0]).pooler_output,
            reference_visual(image, "image_model.", depth[:, 0]),
            atol=1e-4,
            rtol=1e-4,
        )


def test_dpa_checkpoint_conversion_reproduces_the_reference_logits(openai_state, tmp_path):
    clip = load_openai_clip(openai_state)
    tokenizer = make_tiny_tokenizer()
    views = 3
    pre, ori = random_visual("pre_model.", 11), random_visual("ori_model.", 12)
    state = {
        **pre,
        **ori,
        **random_adapter("adapter1.", views, 13),
        **random_adapter("adapter2.", views, 14),
    }
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "best_test.pth")
    names = ["chair", "lamp", "night stand"]
    model = convert_dpa_checkpoint(tmp_path / "best_test.pth", clip, names, tokenizer).model
    assert model.config.fusion == "mean" and model.config.id2label[2] == "night stand"

    depth = torch.randn(2, views, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(3))
    flat = depth.flatten(0, 1)
    with torch.no_grad():
        logits = model(pixel_values=depth).logits
        f1 = reference_adapter(
            state, "adapter1.", reference_visual(pre, "pre_model.", flat).view(2, views, -1)
        )
        f2 = reference_adapter(
            state, "adapter2.", reference_visual(ori, "ori_model.", flat).view(2, views, -1)
        )
        fused = F.normalize((f1 + f2) * 0.5, dim=-1)
        tokens = tokenizer([f"image of a {n}" for n in names], padding=True, return_tensors="pt")
        prompts = F.normalize(reference_text(openai_state, tokens["input_ids"]), dim=-1)
    torch.testing.assert_close(logits, fused @ prompts.T, atol=1e-4, rtol=1e-4)


def test_unexpected_and_missing_keys_are_listed(openai_state, tmp_path):
    clip = load_openai_clip(openai_state)
    point = random_visual("point_model.", 7)
    broken = {**point, "weights": torch.tensor(1.0), "point_model.extra_head.weight": torch.zeros(2)}
    del broken["point_model.ln_post.bias"]
    with pytest.raises(CheckpointConversionError) as error:
        convert_pretraining_checkpoint(broken, clip)
    message = str(error.value)
    assert "point_model.ln_post.bias" in message and "point_model.extra_head.weight" in message
    assert "missing keys (1)" in message and "unexpected keys (1)" in message


def test_wrong_shapes_and_unreadable_files_name_the_file(openai_state, tmp_path):
    clip = load_openai_clip(openai_state)
    point = random_visual("point_model.", 7)
    point["point_model.proj"] = torch.zeros(VISION_WIDTH, EMBED + 1)
    with pytest.raises(CheckpointConversionError, match="do not fit") as error:
        convert_pretraining_checkpoint({**point, "weights": torch.tensor(1.0)}, clip)
    # each misfit named by its key on both sides, with both shapes, on one line (not torch's multi-line "Error(s)
    # in loading state_dict")
    assert (
        f"the checkpoint's point_model.proj (transposed) is ({EMBED + 1}, {VISION_WIDTH}), "
        f"the model's depth_projection.weight is ({EMBED}, {VISION_WIDTH})"
    ) in str(error.value)
    assert "\n" not in str(error.value)

    truncated = tmp_path / "truncated.pth"
    torch.save(random_visual("point_model.", 7), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(CheckpointConversionError, match=r"truncated\.pth"):
        load_state_dict_file(truncated)
    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_state_dict_file(tmp_path / "absent.pth")
    with pytest.raises(CheckpointConversionError, match="no key"):
        load_openai_clip({"visual.conv1.weight": torch.zeros(4, 3, 2, 2)})


def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"weights": Payload()}, path)
    with pytest.raises(CheckpointConversionError, match=r"evil\.pth") as error:
        load_state_dict_file(path)
    assert "never unpickled" in str(error.value)
    assert "weights_only" not in str(error.value)  # never advise unpickling an untrusted file
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointConversionError, match=r"garbage\.pth") as error:
        load_state_dict_file(garbage)
    assert "weights_only" not in str(error.value)
