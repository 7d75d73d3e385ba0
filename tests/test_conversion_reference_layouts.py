"""The authors' checkpoints exactly as their scripts write them, converted through the library and the CLI.

`pretraining.py` saves `nn.DataParallel(CLIP2Point(args)).state_dict()` (`module.` prefix, the view
selector's buffers) as `best_val.pth` and `best_test.pth`; the release calls one `best_eval.pth`.
`fewshot.py` saves the plain `DPA(args).state_dict()` (selector buffers, no prefix) as `best.pth`; the
release calls it `best_test.pth`. The modules below register the same attributes in the same nesting.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clip2point_hf import (
    CLIP2PointFeatureExtractor,
    CLIP2PointForPointCloudClassification,
    CLIP2PointModel,
)
from clip2point_hf.conversion_clip2point import (
    PROVENANCE_FILE,
    CheckpointConversionError,
    convert_checkpoint,
    detect_layout,
    load_openai_clip,
)
from conftest import make_tiny_tokenizer
from test_conversion import (
    GRID,
    PATCH,
    random_adapter,
    random_openai_clip,
    random_visual,
    reference_adapter,
    reference_text,
    reference_visual,
)

REFERENCE_10 = ((0, 90, 180, 270, 225, 225, 315, 315, 0, 0), (0, 0, 0, 0, -45, 45, -45, 45, -90, 90))
REFERENCE_6 = ((0, 0, 0, 0, 90, -90), (0, 90, 180, 270, 0, 180))


def module_tree(state: dict) -> nn.Module:
    """A module whose state dict is `state` (floating tensors as parameters, others as buffers)."""
    root = nn.Module()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        if value.is_floating_point():
            node.register_parameter(leaf, nn.Parameter(value.clone()))
        else:
            node.register_buffer(leaf, value.clone())
    return root


class ViewSelector(nn.Module):
    """The reference's fixed `ViewSelector`: three buffers, azimuth first, as `torch.asarray` makes them."""

    def __init__(self, elev, azim, dist: float = 1.0, shape_1v: bool = False):
        super().__init__()
        shape = (1, -1) if shape_1v else (-1,)
        self.register_buffer("views_azim", torch.asarray(azim, dtype=torch.float).reshape(shape))
        self.register_buffer("views_elev", torch.asarray(elev, dtype=torch.float).reshape(shape))
        self.register_buffer("views_dist", (torch.ones(len(elev)) * dist).reshape(shape))


class Selector(nn.Module):
    def __init__(self, elev, azim, **kwargs):
        super().__init__()
        self.view_selector = ViewSelector(elev, azim, **kwargs)


class ReferenceCLIP2Point(nn.Module):
    """`models/clip2point.py`: selector, renderer (no tensors), point_model, image_model, weights."""

    def __init__(self, point, image, views=REFERENCE_10, **selector_kwargs):
        super().__init__()
        self.selector = Selector(*views, **selector_kwargs)
        self.renderer = nn.Module()
        self.point_model = module_tree({k.removeprefix("point_model."): v for k, v in point.items()})
        self.image_model = module_tree({k.removeprefix("image_model."): v for k, v in image.items()})
        self.weights = nn.Parameter(torch.tensor(0.8))


class ReferenceDPA(nn.Module):
    """`models/dpa.py`: selector, renderer, pre_model, ori_model, adapter1, adapter2."""

    def __init__(self, pre, ori, adapter1, adapter2, views=REFERENCE_10, **selector_kwargs):
        super().__init__()
        self.selector = Selector(*views, **selector_kwargs)
        self.renderer = nn.Module()
        for name, state in (
            ("pre_model", pre),
            ("ori_model", ori),
            ("adapter1", adapter1),
            ("adapter2", adapter2),
        ):
            self.add_module(name, module_tree({k.split(".", 1)[1]: v for k, v in state.items()}))


def save_pretraining(path, views=REFERENCE_10, **selector_kwargs) -> dict:
    point, image = random_visual("point_model.", 7), random_visual("image_model.", 8)
    model = ReferenceCLIP2Point(point, image, views, **selector_kwargs)
    torch.save(nn.DataParallel(model).state_dict(), path)  # as pretraining.py does
    return point


def save_dpa(path, views=REFERENCE_10, data_parallel=False) -> dict:
    n = len(views[0])
    parts = {
        "pre": random_visual("pre_model.", 11),
        "ori": random_visual("ori_model.", 12),
        "adapter1": random_adapter("adapter1.", n, 13),
        "adapter2": random_adapter("adapter2.", n, 14),
    }
    model = ReferenceDPA(*parts.values(), views)
    torch.save((nn.DataParallel(model) if data_parallel else model).state_dict(), path)  # fewshot.py: plain
    return {k: v for part in parts.values() for k, v in part.items()}


@pytest.fixture(scope="module")
def openai_state():
    return random_openai_clip()


@pytest.fixture(scope="module")
def clip(openai_state):
    return load_openai_clip(openai_state)


def reference_zero_shot_logits(point, openai_state, depth, prompts):
    """`CLIP2Point.infer` + pretraining.py's scoring: per-view normalised features, cosine with the
    normalised prompts, summed over views."""
    b, v = depth.shape[:2]
    feats = F.normalize(reference_visual(point, "point_model.", depth.flatten(0, 1)), dim=-1).view(b, v, -1)
    text = F.normalize(reference_text(openai_state, prompts), dim=-1)
    return (feats @ text.T).sum(1)


def reference_dpa_logits(state, openai_state, depth, prompts):
    """`DPA.forward` + fewshot.py's scoring."""
    b, v = depth.shape[:2]
    flat = depth.flatten(0, 1)
    f1 = reference_adapter(state, "adapter1.", reference_visual(state, "pre_model.", flat).view(b, v, -1))
    f2 = reference_adapter(state, "adapter2.", reference_visual(state, "ori_model.", flat).view(b, v, -1))
    return F.normalize((f1 + f2) * 0.5, dim=-1) @ F.normalize(reference_text(openai_state, prompts), dim=-1).T


def depth_batch(views: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(2, views, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------------- library


@pytest.mark.parametrize("name", ["best_val.pth", "best_test.pth", "best_eval.pth"])
@pytest.mark.parametrize("shape_1v", [False, True], ids=["views(V)", "views(1,V)"])
def test_pretraining_checkpoint_as_their_script_saves_it(name, shape_1v, clip, openai_state, tmp_path):
    path = tmp_path / name
    point = save_pretraining(path, shape_1v=shape_1v)
    keys = torch.load(path, weights_only=True).keys()
    assert "module.selector.view_selector.views_azim" in keys and all(k.startswith("module.") for k in keys)

    conversion = convert_checkpoint(path, clip=clip)
    assert conversion.layout == "pretraining" and isinstance(conversion.model, CLIP2PointModel)
    assert conversion.views == "reference10"
    assert any(line.startswith("selector.view_selector.views_") for line in conversion.set_aside)
    assert any(line.startswith("image_model.*") for line in conversion.set_aside)
    depth = depth_batch(10)
    tokenizer = make_tiny_tokenizer()
    tokens = tokenizer(["image of a chair", "image of a lamp"], padding=True, return_tensors="pt")
    with torch.no_grad():
        # Parity is on the authors' logits: the unscaled sum over views of the cosines.
        logits = conversion.model(pixel_values=depth, **tokens).cosine_sum_per_point_cloud
    expected = reference_zero_shot_logits(point, openai_state, depth, tokens["input_ids"])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)

    provenance = conversion.provenance
    assert provenance["layout"] == "pretraining" and provenance["checkpoint"] == name
    assert provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "tyhuang0428/CLIP2Point" in provenance["converted_from"]
    selection = {
        "best_val.pth": "ShapeNet-55",
        "best_test.pth": "ModelNet40 test",
        "best_eval.pth": "not recorded",
    }
    assert selection[name] in provenance["selection"]


@pytest.mark.parametrize("name", ["best_test.pth", "best.pth"])
@pytest.mark.parametrize("data_parallel", [False, True], ids=["plain", "module."])
def test_dpa_checkpoint_as_their_script_saves_it(name, data_parallel, clip, openai_state, tmp_path):
    path = tmp_path / name
    state = save_dpa(path, data_parallel=data_parallel)
    names = ["chair", "lamp", "night stand"]
    tokenizer = make_tiny_tokenizer()
    conversion = convert_checkpoint(path, clip=clip, class_names=names, tokenizer=tokenizer)
    assert conversion.layout == "dpa" and isinstance(conversion.model, CLIP2PointForPointCloudClassification)
    assert conversion.views == "reference10"
    assert "ModelNet40 test accuracy" in conversion.provenance["selection"]
    depth = depth_batch(10, seed=3)
    tokens = tokenizer([f"image of a {n}" for n in names], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = conversion.model(pixel_values=depth).logits
    expected = reference_dpa_logits(state, openai_state, depth, tokens["input_ids"])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_selector_views_are_carried_into_the_saved_processor(clip, tmp_path):
    save_pretraining(tmp_path / "six.pth", views=REFERENCE_6)
    conversion = convert_checkpoint(tmp_path / "six.pth", clip=clip)
    assert conversion.views == "reference6"

    custom = ((10.0, 20.0, 30.0), (0.0, 45.0, 90.0))
    save_pretraining(tmp_path / "custom.pth", views=custom, dist=1.5)
    conversion = convert_checkpoint(tmp_path / "custom.pth", clip=clip)
    expected = [[10.0, 0.0, 1.5], [20.0, 45.0, 1.5], [30.0, 90.0, 1.5]]
    assert conversion.views == expected
    assert any("no preset" in line for line in conversion.set_aside)
    conversion.save_pretrained(tmp_path / "out")
    assert CLIP2PointFeatureExtractor.from_pretrained(tmp_path / "out").views == expected
    saved = json.loads((tmp_path / "out" / PROVENANCE_FILE).read_text())
    assert saved == json.loads(json.dumps(conversion.provenance))  # every field, as written


def test_layout_comes_from_the_keys_and_unknown_layouts_list_what_was_seen(clip, tmp_path):
    save_dpa(tmp_path / "best_test.pth")
    save_pretraining(tmp_path / "best_eval.pth")
    assert detect_layout(torch.load(tmp_path / "best_test.pth", weights_only=True)) == "dpa"
    state = {
        k.removeprefix("module."): v
        for k, v in torch.load(tmp_path / "best_eval.pth", weights_only=True).items()
    }
    assert detect_layout(state) == "pretraining"
    assert detect_layout(random_openai_clip()) == "clip"
    with pytest.raises(CheckpointConversionError) as error:
        detect_layout(
            {"encoder.w": torch.zeros(1), "encoder.b": torch.zeros(1), "head": torch.zeros(1)}, "x.pth"
        )
    message = str(error.value)
    assert (
        "x.pth: unknown checkpoint layout" in message
        and "encoder.* (2)" in message
        and "head.* (1)" in message
    )
    assert "\n" not in message
    with pytest.raises(CheckpointConversionError, match="ambiguous"):
        detect_layout({**state, "adapter1.fusion_ratio": torch.zeros(10)})
    # Forcing the wrong layout fails, naming the file.
    with pytest.raises(CheckpointConversionError, match=r"best_eval\.pth: no `adapter1\.fusion_ratio`"):
        convert_checkpoint(
            tmp_path / "best_eval.pth",
            layout="dpa",
            clip=clip,
            class_names=["a"],
            tokenizer=make_tiny_tokenizer(),
        )


def test_learned_or_inconsistent_selectors_are_refused(clip, tmp_path):
    state = {
        k.removeprefix("module."): v
        for k, v in torch.load(save_pretraining_path(tmp_path), weights_only=True).items()
    }
    learned = {**state, "selector.feature_extractor.fe_model.conv1.weight": torch.zeros(2)}
    with pytest.raises(CheckpointConversionError, match="learned view selector"):
        convert_checkpoint(learned, clip=clip)
    ragged = {**state, "selector.view_selector.views_dist": torch.ones(9)}
    with pytest.raises(CheckpointConversionError, match="share one shape"):
        convert_checkpoint(ragged, clip=clip)
    partial = {k: v for k, v in state.items() if k != "selector.view_selector.views_dist"}
    with pytest.raises(CheckpointConversionError, match="views_dist"):
        convert_checkpoint(partial, clip=clip)
    save_dpa(tmp_path / "dpa.pth", views=REFERENCE_6)
    dpa = torch.load(tmp_path / "dpa.pth", weights_only=True)
    dpa["adapter1.fusion_ratio"] = torch.ones(10)
    with pytest.raises(CheckpointConversionError, match="6 views but the adapters are sized for 10"):
        convert_checkpoint(dpa, clip=clip, class_names=["a"], tokenizer=make_tiny_tokenizer())


def save_pretraining_path(tmp_path):
    save_pretraining(tmp_path / "best_val.pth")
    return tmp_path / "best_val.pth"


# --------------------------------------------------------------------------------------------------------- CLI


def run_convert(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "clip2point_apps.cli", "convert", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow  # the command in subprocesses, end to end
def test_cli_converts_both_layouts_and_the_folders_match_the_reference(openai_state, tmp_path):
    torch.save(openai_state, tmp_path / "clip.pt")
    make_tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "pre").mkdir()
    (tmp_path / "few").mkdir()
    point = save_pretraining(tmp_path / "pre" / "best_test.pth")
    state = save_dpa(tmp_path / "few" / "best_test.pth", views=REFERENCE_6)
    (tmp_path / "classes.txt").write_text("chair\nlamp\n")
    common = ("--clip", tmp_path / "clip.pt", "--tokenizer", tmp_path / "tokenizer")

    result = run_convert(tmp_path / "pre" / "best_test.pth", "-o", tmp_path / "out_pre", *common)
    assert result.returncode == 0, result.stderr
    assert "pretraining layout (detected from its keys)" in result.stdout
    assert "set aside: selector.view_selector.views_{elev,azim,dist}: 10 fixed views" in result.stdout
    assert "set aside: image_model.*" in result.stdout
    result = run_convert(
        tmp_path / "few" / "best_test.pth",
        "-o",
        tmp_path / "out_dpa",
        *common,
        "--class-names",
        tmp_path / "classes.txt",
    )
    assert result.returncode == 0, result.stderr
    assert "dpa layout (detected from its keys)" in result.stdout and "preset 'reference6'" in result.stdout

    tokenizer = make_tiny_tokenizer()
    tokens = tokenizer(["image of a chair", "image of a lamp"], padding=True, return_tensors="pt")
    model = CLIP2PointModel.from_pretrained(tmp_path / "out_pre")
    assert CLIP2PointFeatureExtractor.from_pretrained(tmp_path / "out_pre").views == "reference10"
    depth = depth_batch(10)
    with torch.no_grad():
        logits = model(pixel_values=depth, **tokens).cosine_sum_per_point_cloud  # the authors' unscaled sum
    torch.testing.assert_close(
        logits,
        reference_zero_shot_logits(point, openai_state, depth, tokens["input_ids"]),
        atol=1e-4,
        rtol=1e-4,
    )
    provenance = json.loads((tmp_path / "out_pre" / PROVENANCE_FILE).read_text())
    assert provenance["layout"] == "pretraining" and provenance["checkpoint"] == "best_test.pth"

    classifier = CLIP2PointForPointCloudClassification.from_pretrained(tmp_path / "out_dpa")
    assert CLIP2PointFeatureExtractor.from_pretrained(tmp_path / "out_dpa").views == "reference6"
    depth = depth_batch(6, seed=4)
    with torch.no_grad():
        logits = classifier(pixel_values=depth).logits
    torch.testing.assert_close(
        logits, reference_dpa_logits(state, openai_state, depth, tokens["input_ids"]), atol=1e-4, rtol=1e-4
    )


def test_cli_forced_layout_and_unknown_layout_errors(openai_state, tmp_path, capsys):
    from clip2point_apps.cli import main

    torch.save(openai_state, tmp_path / "clip.pt")
    save_dpa(tmp_path / "best_test.pth")
    # A forced layout is obeyed and said; a wrong one fails in one line naming the file and the keys.
    code = main(
        [
            "convert",
            str(tmp_path / "best_test.pth"),
            "-o",
            str(tmp_path / "x"),
            "--layout",
            "pretraining",
            "--clip",
            str(tmp_path / "clip.pt"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2 and "pretraining layout (forced by --layout)" in out
    (line,) = err.strip().splitlines()
    assert "best_test.pth" in line and "missing keys" in line and "adapter1.fusion_ratio" in line
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "odd.pth")
    assert main(["convert", str(tmp_path / "odd.pth"), "-o", str(tmp_path / "y")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "odd.pth: unknown checkpoint layout; keys seen: encoder.* (1)" in line
