"""A catalogue of bad inputs, table-driven and fast: each case asserts its category.

- ``error``: one clear line (no newline) naming the culprit (the argument, file, folder or id) and the problem;
- ``result``: a documented outcome (a skipped file with a warning, a normalised huge cloud, a NaN confined to its
  own cloud, a live process's cache folder kept).

The kill cases (a SIGKILL at several points of a checkpoint save) are in ``tests/test_scripts.py``.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clip2point_apps.training.arguments import TrainingRunArguments
from clip2point_apps.training.checkpointing import PROGRESS_FILE, clean_partial_checkpoints, latest_checkpoint
from clip2point_hf import (
    CLIP2PointFeatureExtractor,
    CLIP2PointForPointCloudClassification,
    CLIP2PointForPreTraining,
    CLIP2PointModel,
    CLIP2PointProcessor,
)
from clip2point_hf.atomic import atomic_folder, clean_stale_work_folders, work_folder
from clip2point_hf.conversion_clip2point import load_state_dict_file
from clip2point_hf.data.mesh_folder import load_mesh_folder
from clip2point_hf.errors import ModelLoadError, first_line, run_script
from clip2point_hf.loading import load_pretrained, resolve_model
from clip2point_hf.pipeline_clip2point import CLASSIFICATION_TASK, ZERO_SHOT_TASK, parse_candidate_labels
from clip2point_hf.points_clip2point import normalize_point_cloud
from conftest import make_tiny_config, make_tiny_tokenizer

SIZE = 32  # the tiny towers' image size


def assert_one_line(error: BaseException, *fragments: str) -> None:
    text = str(error)
    assert "\n" not in text.strip(), text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


# --------------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    base = CLIP2PointModel(make_tiny_config(num_views=3)).eval()
    gdpa = CLIP2PointForPointCloudClassification(
        make_tiny_config(num_views=3, id2label={0: "a", 1: "b", 2: "c"})
    ).eval()
    pre = CLIP2PointForPreTraining(make_tiny_config(num_views=3)).eval()
    return {"base": base, "gdpa": gdpa, "pre": pre}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, models):
    """Model folders: a good one, and one damaged in each way a download or copy goes wrong."""
    root = tmp_path_factory.mktemp("bad-folders")
    good = root / "good"
    models["base"].save_pretrained(good)
    CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(views="reference6", image_size=SIZE, num_points=64), make_tiny_tokenizer()
    ).save_pretrained(good)
    weights = (good / "model.safetensors").read_bytes()
    out = {"good": good, "root": root}
    for name, content in {
        "truncated": weights[: len(weights) // 2],
        "garbage": b"not a safetensors file at all" * 10,
        "empty": b"",
    }.items():
        folder = root / name
        folder.mkdir()
        for f in good.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        (folder / "model.safetensors").write_bytes(content)
        out[name] = folder
    (root / "noconfig").mkdir()
    (root / "noconfig" / "model.safetensors").write_bytes(weights)
    out["noconfig"] = root / "noconfig"
    (root / "weights.safetensors").write_bytes(weights)
    out["file"] = root / "weights.safetensors"
    (root / "x.ply").mkdir()
    out["plydir"] = root / "x.ply"
    np.save(root / "cloud.npy", np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32))
    out["cloud"] = root / "cloud.npy"
    # A fine-tuned classifier with its front end alone (it needs no tokenizer); a zero-shot model without a
    # tokenizer; a model without any processor file.
    three_views = CLIP2PointFeatureExtractor(views=[[0, 0], [90, 0], [0, 90]], image_size=SIZE, num_points=64)
    models["gdpa"].save_pretrained(root / "classifier")
    three_views.save_pretrained(root / "classifier")
    models["base"].save_pretrained(root / "no_tokenizer")
    CLIP2PointFeatureExtractor(views="reference6", image_size=SIZE).save_pretrained(root / "no_tokenizer")
    models["base"].save_pretrained(root / "no_processor")
    for name in ("classifier", "no_tokenizer", "no_processor"):
        out[name] = root / name
    # Checkpoints whose keys give their layout (what `convert` checks before loading CLIP)
    torch.save({"adapter1.fusion_ratio": torch.ones(6)}, root / "dpa.pth")
    torch.save(
        {"visual.proj": torch.zeros(2, 2), "token_embedding.weight": torch.zeros(2, 2)}, root / "clip.pth"
    )
    (root / "no_classes.txt").write_text("\n")
    for name in ("dpa.pth", "clip.pth", "no_classes.txt"):
        out[name] = root / name
    return out


def views(batch=2, v=3, c=3, h=SIZE, w=SIZE, dtype=torch.float32):
    return torch.zeros(batch, v, c, h, w, dtype=dtype)


# --------------------------------------------------------------------------------------------------------- processor


PROCESSOR_ARGS = [
    ({"image_size": 100000}, "image_size"),
    ({"image_size": 4097}, "image_size"),
    ({"image_size": 0}, "image_size"),
    ({"image_size": -5}, "image_size"),
    ({"image_size": True}, "image_size"),
    ({"image_size": "224"}, "image_size"),
    ({"image_size": 22.5}, "image_size"),
    ({"num_points": 0}, "num_points"),
    ({"num_points": -1}, "num_points"),
    ({"num_points": "many"}, "num_points"),
    ({"sampling": "grid"}, "sampling"),
    ({"up_axis": "w"}, "up_axis"),
    ({"up_axis": "up"}, "up_axis"),
    ({"point_radius": 0}, "point_radius"),
    ({"point_radius": 2.0}, "point_radius"),
    ({"point_radius": float("nan")}, "point_radius"),
    ({"depth_mode": "foo"}, "depth_mode"),
    ({"views": "no_such_preset"}, "no_such_preset"),
    ({"seed": "x"}, "seed"),
]


@pytest.mark.parametrize("kwargs, culprit", PROCESSOR_ARGS, ids=[f"{k}" for k, _ in PROCESSOR_ARGS])
def test_processor_construction_is_checked(kwargs, culprit):
    with pytest.raises(ValueError) as error:  # refused when built, never at the first call
        CLIP2PointFeatureExtractor(**kwargs)
    assert_one_line(error.value, culprit)


def _cloud(n=100, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def _with(value, index=5):
    cloud = _cloud()
    cloud[index, 1] = value
    return cloud


PROCESSOR_CALLS = [
    ("nan", lambda: {"point_clouds": _with(np.nan)}, "NaN"),
    ("inf", lambda: {"point_clouds": _with(np.inf)}, "NaN or Inf"),
    ("minus_inf", lambda: {"point_clouds": _with(-np.inf)}, "NaN or Inf"),
    ("nan_in_second_cloud", lambda: {"point_clouds": [_cloud(), _with(np.nan)]}, "point_clouds[1]"),
    ("empty_cloud", lambda: {"point_clouds": np.zeros((0, 3), np.float32)}, "empty"),
    ("two_columns", lambda: {"point_clouds": np.zeros((10, 2), np.float32)}, "columns"),
    ("one_dim", lambda: {"point_clouds": np.zeros(30, np.float32)}, "shape"),
    ("strings", lambda: {"point_clouds": [["a", "b", "c"]]}, "point_clouds"),
    ("empty_list", lambda: {"point_clouds": []}, "empty list"),
    ("nothing", lambda: {}, "point_clouds"),
    ("return_tensors", lambda: {"point_clouds": _cloud(), "return_tensors": "tf"}, "return_tensors"),
]


@pytest.mark.parametrize(
    "make, culprit", [c[1:] for c in PROCESSOR_CALLS], ids=[c[0] for c in PROCESSOR_CALLS]
)
def test_processor_inputs_are_checked(make, culprit):
    processor = CLIP2PointFeatureExtractor(image_size=SIZE, num_points=64, views="reference6")
    with pytest.raises(ValueError) as error:
        processor(**make())
    assert_one_line(error.value, culprit)


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-20, 1e-30])
def test_extreme_scales_render_like_the_unit_cloud(scale):
    """Documented result: normalisation is scale-free and never overflows (1e20**2 is inf in float32)."""
    cloud = _cloud(300)
    processor = CLIP2PointFeatureExtractor(
        image_size=SIZE, num_points=300, views="reference6", sampling="fps"
    )
    expected = processor(cloud)["pixel_values"]
    got = processor((cloud.astype(np.float64) * scale).astype(np.float32))["pixel_values"]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    normalized, _, radius = normalize_point_cloud(torch.from_numpy(cloud) * scale)
    assert math.isclose(float(normalized.norm(dim=-1).max()), 1.0, rel_tol=1e-6)
    assert math.isfinite(float(radius)) and float(radius) > 0


def test_normalisation_is_unchanged_for_ordinary_clouds():
    """The power-of-two pre-scaling is exact: same bits as the plain formula."""
    cloud = torch.from_numpy(_cloud(500)) * 3.7 + 1.25
    centred = cloud - cloud.mean(dim=0, keepdim=True)
    expected = centred / centred.norm(dim=-1).max()
    assert torch.equal(normalize_point_cloud(cloud)[0], expected)


# --------------------------------------------------------------------------------------------------------- models

MODEL_CALLS = [
    ("base_4d", "base", lambda: {"pixel_values": torch.zeros(2, 3, SIZE, SIZE)}, "pixel_values"),
    ("base_1_channel", "base", lambda: {"pixel_values": views(c=1)}, "3 channels"),
    ("base_4_channels", "base", lambda: {"pixel_values": views(c=4)}, "3 channels"),
    ("base_image_64", "base", lambda: {"pixel_values": views(h=64, w=64)}, "image_size"),
    ("base_image_16", "base", lambda: {"pixel_values": views(h=16, w=16)}, "image_size"),
    ("base_not_square", "base", lambda: {"pixel_values": views(h=SIZE, w=16)}, "image_size"),
    ("base_int_pixels", "base", lambda: {"pixel_values": views(dtype=torch.int64)}, "floating-point"),
    ("base_ids_beyond_vocab", "base", lambda: {"input_ids": torch.tensor([[0, 10**6]])}, "vocab_size"),
    ("base_negative_ids", "base", lambda: {"input_ids": torch.tensor([[0, -3]])}, "input_ids"),
    ("base_float_ids", "base", lambda: {"input_ids": torch.tensor([[0.0, 1.0]])}, "input_ids"),
    (
        "base_view_weights",
        "base",
        lambda: {"pixel_values": views(), "view_weights": [1.0, 1.0]},
        "view_weights",
    ),
    ("gdpa_views_4", "gdpa", lambda: {"pixel_values": views(v=4)}, "num_views"),
    ("gdpa_views_1", "gdpa", lambda: {"pixel_values": views(v=1)}, "num_views"),
    ("gdpa_1_channel", "gdpa", lambda: {"pixel_values": views(c=1)}, "3 channels"),
    ("gdpa_image_size", "gdpa", lambda: {"pixel_values": views(h=224, w=224)}, "image_size"),
    (
        "gdpa_float_labels",
        "gdpa",
        lambda: {"pixel_values": views(), "labels": torch.tensor([0.0, 1.0])},
        "labels",
    ),
    (
        "gdpa_bool_labels",
        "gdpa",
        lambda: {"pixel_values": views(), "labels": torch.tensor([True, False])},
        "labels",
    ),
    (
        "gdpa_label_too_big",
        "gdpa",
        lambda: {"pixel_values": views(), "labels": torch.tensor([0, 3])},
        "[0, 3)",
    ),
    (
        "gdpa_label_negative",
        "gdpa",
        lambda: {"pixel_values": views(), "labels": torch.tensor([-1, 0])},
        "labels",
    ),
    (
        "gdpa_labels_batch",
        "gdpa",
        lambda: {"pixel_values": views(), "labels": torch.tensor([0, 1, 2])},
        "labels",
    ),
    (
        "gdpa_labels_2d",
        "gdpa",
        lambda: {"pixel_values": views(), "labels": torch.tensor([[0], [1]])},
        "labels",
    ),
    (
        "pre_batch_1",
        "pre",
        # A batch of one has no negatives: asking for the loss is refused (without it, embeddings come back).
        lambda: {
            "pixel_values": torch.zeros(1, 3, SIZE, SIZE),
            "depth_pixel_values": views(1, 2),
            "return_loss": True,
        },
        "at least 2",
    ),
    (
        "pre_depth_3",
        "pre",
        lambda: {"pixel_values": torch.zeros(2, 3, SIZE, SIZE), "depth_pixel_values": views(2, 3)},
        "depth_pixel_values",
    ),
    (
        "pre_batch_mismatch",
        "pre",
        lambda: {"pixel_values": torch.zeros(3, 3, SIZE, SIZE), "depth_pixel_values": views(2, 2)},
        "pixel_values",
    ),
    (
        "pre_rgb_5d",
        "pre",
        lambda: {"pixel_values": views(2, 1), "depth_pixel_values": views(2, 2)},
        "pixel_values",
    ),
    (
        "pre_depth_size",
        "pre",
        lambda: {"pixel_values": torch.zeros(2, 3, SIZE, SIZE), "depth_pixel_values": views(2, 2, h=8, w=8)},
        "image_size",
    ),
    (
        "pre_rgb_channels",
        "pre",
        lambda: {"pixel_values": torch.zeros(2, 1, SIZE, SIZE), "depth_pixel_values": views(2, 2)},
        "3 channels",
    ),
]


@pytest.mark.parametrize(
    "model, make, culprit", [c[1:] for c in MODEL_CALLS], ids=[c[0] for c in MODEL_CALLS]
)
def test_model_inputs_are_checked_at_the_door(models, model, make, culprit):
    with torch.no_grad(), pytest.raises(ValueError) as error:
        models[model](**make())
    assert_one_line(error.value, culprit)


def test_gdpa_batch_of_one_in_training_mode(models):
    gdpa = models["gdpa"]
    gdpa.train()
    try:
        with pytest.raises(ValueError) as error:
            gdpa(pixel_values=views(batch=1))
        assert_one_line(error.value, "BatchNorm", "model.eval()")
    finally:
        gdpa.eval()
    assert gdpa(pixel_values=views(batch=1)).logits.shape == (1, 3)  # eval mode: one cloud is fine


def test_nan_pixel_values_stay_in_their_own_cloud(models):
    """Documented result: the model does not scan values (that would cost a host sync per call); NaN pixels give
    NaN logits for that cloud only. The processor, the path users go through, refuses non-finite points."""
    torch.manual_seed(0)
    pixels = torch.rand(3, 3, 3, SIZE, SIZE)
    ids = torch.tensor([[0, 5, 6, 1], [0, 7, 8, 1]])
    clean = models["base"](pixel_values=pixels, input_ids=ids).logits_per_point_cloud
    pixels[1, 0, 0, 3, 3] = float("nan")
    dirty = models["base"](pixel_values=pixels, input_ids=ids).logits_per_point_cloud
    assert torch.isnan(dirty[1]).all()
    torch.testing.assert_close(dirty[[0, 2]], clean[[0, 2]])


# --------------------------------------------------------------------------------------------------------- pipelines

PIPELINE_FOLDERS = [
    (
        "zero_shot_without_tokenizer",
        ZERO_SHOT_TASK,
        "no_tokenizer",
        ["tokenizer.json", "CLIP2PointProcessor("],
    ),
    (
        "zero_shot_without_processor",
        ZERO_SHOT_TASK,
        "no_processor",
        ["preprocessor_config.json", "tokenizer.json"],
    ),
    (
        "classifier_without_processor",
        CLASSIFICATION_TASK,
        "no_processor",
        ["CLIP2PointFeatureExtractor(", "no tokenizer"],
    ),
]


@pytest.mark.parametrize(
    "task, folder, fragments", [c[1:] for c in PIPELINE_FOLDERS], ids=[c[0] for c in PIPELINE_FOLDERS]
)
def test_a_pipeline_names_the_files_its_model_folder_lacks(folders, task, folder, fragments):
    """Every entry point (`pipeline()`, the CLI, the web page) builds a pipeline: it names the folder, the files
    missing for its task and how to add them, where transformers said "Couldn't instantiate the backend tokenizer"."""
    from transformers import pipeline

    with pytest.raises(ModelLoadError) as error:
        pipeline(task, model=str(folders[folder]))
    assert_one_line(error.value, str(folders[folder]), "save_pretrained(folder)", *fragments)
    assert "Couldn't instantiate" not in str(error.value)


def test_a_fine_tuned_classifier_needs_no_tokenizer(folders, capsys):
    """A classifier folder with its front end alone classifies, through the pipeline and through the CLI."""
    from transformers import pipeline

    classify = pipeline(CLASSIFICATION_TASK, model=str(folders["classifier"]))
    assert sorted(r["label"] for r in classify(str(folders["cloud"]), top_k=3)) == ["a", "b", "c"]
    code, err = run_cli(capsys, "classify", folders["cloud"], "--model", folders["classifier"])
    assert code == 0, err


def test_classifier_scores_with_labels_say_they_are_over_all_classes(folders, capsys):
    from clip2point_apps.cli import main

    capsys.readouterr()
    assert (
        main(["classify", str(folders["cloud"]), "--model", str(folders["classifier"]), "--labels", "b,a"])
        == 0
    )
    out = capsys.readouterr().out
    assert "scores: probabilities over all 3 classes of the model; only the --labels ones are shown" in out
    (answer,) = [line for line in out.splitlines() if line.startswith(str(folders["cloud"]))]
    shown = [part.rsplit(" ", 1)[0] for part in answer.split(": ", 1)[1].split(", ")]
    assert sorted(shown) == ["a", "b"]


@pytest.mark.parametrize("task", [ZERO_SHOT_TASK, CLASSIFICATION_TASK])
def test_pipelines_refuse_a_keyword_they_do_not_take(folders, task):
    """A call-time keyword the task does not take (`views`, a typo) is an error naming it, never ignored."""
    from transformers import pipeline

    folder = folders["good"] if task == ZERO_SHOT_TASK else folders["classifier"]
    classify = pipeline(task, model=str(folder))
    labels = {"candidate_labels": ["a", "b"]} if task == ZERO_SHOT_TASK else {}
    for keyword in ({"views": "reference10"}, {"candidate_lables": ["a"]}):
        with pytest.raises(ValueError) as error:
            classify(str(folders["cloud"]), **labels, **keyword)
        assert_one_line(error.value, f"`{next(iter(keyword))}`", "`seed`", "`up_axis`")


def test_views_at_call_time_are_honoured(folders):
    """`views=` at call time renders those views (the processor routes it to the feature extractor): 6, where the
    saved processor renders 10."""
    processor = CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(views="reference10", image_size=SIZE, num_points=64), make_tiny_tokenizer()
    )
    clouds = [_cloud(), _cloud(seed=1)]
    six = processor(clouds, views="reference6")["pixel_values"]
    assert six.shape == (2, 6, 3, SIZE, SIZE)
    assert processor(clouds)["pixel_values"].shape == (2, 10, 3, SIZE, SIZE)
    alone = CLIP2PointFeatureExtractor(views="reference6", image_size=SIZE, num_points=64)(clouds)[
        "pixel_values"
    ]
    torch.testing.assert_close(six, alone, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------- labels

LABELS = [
    ("blank", ["chair", "   "]),
    ("tab", ["chair", "\t"]),
    ("empty_string", ["", "chair"]),
    ("blank_in_text", "chair, ,lamp"),
    ("empty_list", []),
    ("not_a_string", ["chair", 3]),
    ("none", ["chair", None]),
    ("duplicates", ["chair", "chair"]),
]


@pytest.mark.parametrize("labels", [c[1] for c in LABELS], ids=[c[0] for c in LABELS])
def test_candidate_labels_are_checked(labels):
    with pytest.raises(ValueError) as error:
        parse_candidate_labels(labels)
    assert_one_line(error.value, "candidate_labels")


# --------------------------------------------------------------------------------------------------------- loading

LOAD_CASES = [
    ("missing_folder", lambda f: f["root"] / "absent" / "model", "no such folder"),
    ("file_for_folder", lambda f: f["file"], "is a file"),
    ("no_config", lambda f: f["noconfig"], "config.json"),
    ("truncated", lambda f: f["truncated"], "truncated or corrupt"),
    ("garbage", lambda f: f["garbage"], "truncated or corrupt"),
    ("empty_weights", lambda f: f["empty"], "truncated or corrupt"),
    ("deep_path", lambda f: "a/b/c", "no such folder"),
    ("hub_id_offline", lambda f: "someone/not-cached-model", "offline mode"),
]


@pytest.mark.parametrize("make, problem", [c[1:] for c in LOAD_CASES], ids=[c[0] for c in LOAD_CASES])
def test_model_sources_fail_in_one_line_naming_them(folders, make, problem):
    source = make(folders)
    with pytest.raises(ModelLoadError) as error:
        resolve_model(source)
    culprit = str(source) + ("/model.safetensors" if problem.startswith("truncated") else "")
    assert_one_line(error.value, culprit, problem)


def test_load_pretrained_names_the_damaged_file(folders):
    with pytest.raises(ModelLoadError) as error:
        load_pretrained(CLIP2PointModel, folders["truncated"])
    assert_one_line(error.value, str(folders["truncated"] / "model.safetensors"))
    assert isinstance(load_pretrained(CLIP2PointModel, folders["good"]), CLIP2PointModel)


# --------------------------------------------------------------------------------------------------------- CLI


def run_cli(capsys, *args):
    from clip2point_apps.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    return code, capsys.readouterr().err


CLI_CASES = [
    (
        "folder_named_ply",
        lambda f: ["classify", f["plydir"], "--labels", "a,b", "--model", f["good"]],
        ["x.ply", "is a folder"],
    ),
    (
        "missing_file",
        lambda f: ["classify", f["root"] / "gone.ply", "--labels", "a,b", "--model", f["good"]],
        ["gone.ply", "not found"],
    ),
    (
        "model_no_config",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--model", f["noconfig"]],
        ["noconfig", "config.json"],
    ),
    (
        "model_truncated",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--model", f["truncated"]],
        ["truncated/model.safetensors"],
    ),
    (
        "model_garbage",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--model", f["garbage"]],
        ["garbage/model.safetensors"],
    ),
    (
        "model_is_a_file",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--model", f["file"]],
        ["weights.safetensors", "is a file"],
    ),
    (
        "hub_offline",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--model", "someone/absent"],
        ["someone/absent", "offline"],
    ),
    (
        "blank_label",
        lambda f: ["classify", f["cloud"], "--labels", "chair, ", "--model", f["good"]],
        ["--labels", "non-blank"],
    ),
    (
        "duplicate_label",
        lambda f: ["classify", f["cloud"], "--labels", "chair,chair", "--model", f["good"]],
        ["--labels", "duplicates"],
    ),
    (
        "template_without_braces",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--template", "a photo", "--model", f["good"]],
        ["--template", "{}"],
    ),
    (
        "top_k_0",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--top_k", "0"],
        ["--top_k", "int >= 1"],
    ),
    (
        "zero_shot_model_without_tokenizer",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--model", f["no_tokenizer"]],
        ["no_tokenizer:", "tokenizer.json", "CLIP2PointProcessor(", "save_pretrained(folder)"],
    ),
    (
        "model_without_processor",
        lambda f: ["classify", f["cloud"], "--labels", "a,b", "--model", f["no_processor"]],
        ["no_processor:", "preprocessor_config.json", "save_pretrained(folder)"],
    ),
    ("render_unknown_views", lambda f: ["render", f["cloud"], "--views", "7"], ["--views 7"]),
    ("render_no_points", lambda f: ["render", f["cloud"], "--num_points", "0"], ["--num_points", "int >= 1"]),
    ("serve_port_out_of_range", lambda f: ["serve", "--port", "99999"], ["--port", "1 to 65535", "99999"]),
    ("serve_port_word", lambda f: ["serve", "--port", "http"], ["--port", "1 to 65535"]),
    (
        "convert_blank_class_names",
        lambda f: ["convert", f["dpa.pth"], "-o", f["root"] / "c", "--class_names", ""],
        ["--class_names", "non-blank"],
    ),
    (
        "convert_class_names_file_without_names",
        lambda f: ["convert", f["dpa.pth"], "-o", f["root"] / "c", "--class_names", f["no_classes.txt"]],
        ["--class_names", "no_classes.txt", "non-empty"],
    ),
    (
        "convert_class_names_of_a_clip_checkpoint",
        lambda f: ["convert", f["clip.pth"], "-o", f["root"] / "c", "--class_names", "a,b"],
        ["--class_names", "DPA", "clip layout"],
    ),
    ("render_folder", lambda f: ["render", f["plydir"], "-o", f["root"] / "v.png"], ["x.ply", "is a folder"]),
    ("render_missing", lambda f: ["render", f["root"] / "gone.npy", "-o", f["root"] / "v.png"], ["gone.npy"]),
    ("convert_missing", lambda f: ["convert", f["root"] / "gone.pth", "-o", f["root"] / "c"], ["gone.pth"]),
    (
        "convert_random_bytes",
        lambda f: [
            "convert",
            _write(f["root"] / "rand.pth", b"\x01" + os.urandom(4095)),
            "-o",
            f["root"] / "c",
        ],
        ["rand.pth", "is not a checkpoint"],
    ),
    (
        "convert_empty_file",
        lambda f: ["convert", _write(f["root"] / "empty.pth", b""), "-o", f["root"] / "c"],
        ["empty.pth", "is empty"],
    ),
    (
        "convert_pickled_code",
        lambda f: ["convert", _evil(f["root"] / "evil.pth"), "-o", f["root"] / "c"],
        ["evil.pth", "never unpickled"],
    ),
    (
        "convert_truncated",
        lambda f: ["convert", _write(f["root"] / "t.safetensors", b"\x10\x00"), "-o", f["root"] / "c"],
        ["t.safetensors"],
    ),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _evil(path: Path) -> Path:
    torch.save({"weights": _Payload()}, path)
    return path


@pytest.mark.parametrize("make, fragments", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_user_errors_are_one_line_exit_2(folders, capsys, make, fragments):
    code, err = run_cli(capsys, *make(folders))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "weights_only=False" not in err


# --------------------------------------------------------------------------------------------------------- training


def _checkpoint(root: Path, name: str, complete=True, weights: bytes | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if complete:
        (folder / PROGRESS_FILE).write_text("{}")
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    return folder


TRAINING_ARGS = [
    ("no_output_dir", lambda t: {"output_dir": None}, "--output_dir"),
    ("output_dir_is_file", lambda t: {"output_dir": _write(t / "f.txt", b"x")}, "is a file"),
    ("output_dir_not_empty", lambda t: {"output_dir": _nonempty(t)}, "--overwrite_output_dir"),
    ("resume_missing", lambda t: {"output_dir": t / "o", "resume_from_checkpoint": str(t / "nope")}, "nope"),
    (
        "resume_incomplete",
        lambda t: {"output_dir": t / "o", "resume_from_checkpoint": str(_checkpoint(t, "half", False))},
        PROGRESS_FILE,
    ),
    (
        "resume_truncated",
        lambda t: {
            "output_dir": t / "o",
            "resume_from_checkpoint": str(_checkpoint(t, "cut", weights=b"\x08\x00\x00")),
        },
        "model.safetensors",
    ),
    (
        "batch_0",
        lambda t: {"output_dir": t / "o", "per_device_train_batch_size": 0},
        "--per_device_train_batch_size",
    ),
    (
        "eval_batch_0",
        lambda t: {"output_dir": t / "o", "per_device_eval_batch_size": 0},
        "--per_device_eval_batch_size",
    ),
    (
        "accumulation_0",
        lambda t: {"output_dir": t / "o", "gradient_accumulation_steps": 0},
        "--gradient_accumulation_steps",
    ),
    ("epochs_0", lambda t: {"output_dir": t / "o", "num_train_epochs": 0}, "--num_train_epochs"),
    ("logging_0", lambda t: {"output_dir": t / "o", "logging_steps": 0}, "--logging_steps"),
    ("max_steps_0", lambda t: {"output_dir": t / "o", "max_train_steps": 0}, "--max_train_steps"),
    (
        "checkpointing_word",
        lambda t: {"output_dir": t / "o", "checkpointing_steps": "often"},
        "--checkpointing_steps",
    ),
    (
        "checkpointing_0",
        lambda t: {"output_dir": t / "o", "checkpointing_steps": "0"},
        "--checkpointing_steps",
    ),
    ("eval_steps_0", lambda t: {"output_dir": t / "o", "eval_steps": 0}, "--eval_steps"),
    ("lr_0", lambda t: {"output_dir": t / "o", "learning_rate": 0.0}, "--learning_rate"),
    ("lr_negative", lambda t: {"output_dir": t / "o", "learning_rate": -1e-3}, "--learning_rate"),
    ("report_to_unknown", lambda t: {"output_dir": t / "o", "report_to": "foo"}, "--report_to"),
    (
        "report_to_unknown_in_a_list",
        lambda t: {"output_dir": t / "o", "report_to": "none,foo"},
        "--report_to",
    ),
]


def _nonempty(tmp: Path) -> Path:
    (tmp / "finished").mkdir()
    (tmp / "finished" / "data_splits.json").write_text("{}")
    return tmp / "finished"


@pytest.mark.parametrize("make, culprit", [c[1:] for c in TRAINING_ARGS], ids=[c[0] for c in TRAINING_ARGS])
def test_training_arguments_are_checked_before_anything_is_written(tmp_path, make, culprit):
    kwargs = make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError) as error:
        TrainingRunArguments(
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items()}
        ).validate()
    assert_one_line(error.value, culprit)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("extra", [{"overwrite_output_dir": True}, {"resume_from_checkpoint": "latest"}])
def test_non_empty_output_dir_is_accepted_when_asked(tmp_path, extra):
    TrainingRunArguments(output_dir=str(_nonempty(tmp_path)), **extra).validate()  # documented: no error


SCRIPT_ERRORS = [
    ("value_error", ValueError("--dataset /x: no such folder"), 2),
    ("file_not_found", FileNotFoundError("config file run.yaml does not exist"), 2),
    ("model_load_error", ModelLoadError("/m", "no config.json"), 2),
]


@pytest.mark.parametrize("error, code", [c[1:] for c in SCRIPT_ERRORS], ids=[c[0] for c in SCRIPT_ERRORS])
def test_script_user_errors_are_one_line_exit_2(capsys, monkeypatch, error, code):
    monkeypatch.delenv("CLIP2POINT_DEBUG", raising=False)

    def main(argv):
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run_script(main, [], prog="train.py")
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.strip() == f"train.py: error: {first_line(error)}"


@pytest.mark.parametrize(
    "bug", [KeyError("x"), TypeError("bad operand"), RuntimeError("CUDA error"), AssertionError()]
)
def test_script_bugs_keep_their_traceback(bug):
    def main(argv):
        raise bug

    with pytest.raises(type(bug)):
        run_script(main, [], prog="train.py")


def test_debug_env_shows_the_user_error_traceback(monkeypatch):
    monkeypatch.setenv("CLIP2POINT_DEBUG", "1")

    def main(argv):
        raise ValueError("bad option")

    with pytest.raises(ValueError, match="bad option"):
        run_script(main, [], prog="train.py")


class MainProcessFirst:
    """accelerate's ``main_process_first`` as one process sees it: records whether this process's block ended
    normally (the main process then reaches the barrier that releases the others) or by an exception (the
    others wait in that barrier until the main process dies, then fail with a traceback)."""

    def __init__(self, is_main_process: bool):
        self.is_main_process = is_main_process
        self.block_ended = None

    @contextlib.contextmanager
    def main_process_first(self):
        try:
            yield
        except BaseException:
            self.block_ended = "by an exception"
            raise
        self.block_ended = "normally"


@pytest.mark.parametrize("is_main_process", [True, False], ids=["main", "other"])
def test_a_dataset_error_under_accelerate_ends_every_process_in_one_line(tmp_path, is_main_process):
    """Each process of `accelerate launch` meets the user error itself, after the barrier: one line each, exit 2."""
    from clip2point_apps.arguments import PointCloudDataArguments

    accelerator = MainProcessFirst(is_main_process)
    data = PointCloudDataArguments(dataset=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="absent"):  # an OSError: a user error of the package
        data.load(0, accelerator, ["test"])
    assert accelerator.block_ended == "normally"


def test_partial_checkpoints_never_count_and_are_cleaned(tmp_path):
    root = tmp_path / "checkpoints"
    _checkpoint(root, "checkpoint_0")
    _checkpoint(root, "checkpoint_1", complete=False)  # an old-style half-written folder
    _checkpoint(root, ".checkpoint_2.partial", complete=False)
    _checkpoint(root, ".checkpoint_0.deleting")
    assert latest_checkpoint(root).name == "checkpoint_0"
    removed = sorted(p.name for p in clean_partial_checkpoints(root))
    assert removed == [".checkpoint_0.deleting", ".checkpoint_2.partial"]
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint_0", "checkpoint_1"]


# --------------------------------------------------------------------------------------------------------- data


def _obj(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")


@pytest.fixture
def mesh_folder(tmp_path):
    root = tmp_path / "meshes"
    for cls in ("a", "b"):
        for i in range(2):
            _obj(root / cls / "train" / f"m{i}.obj")
    os.symlink(tmp_path / "nowhere.obj", root / "a" / "train" / "dangling.obj")
    return root


def test_dangling_mesh_link_is_an_error_listing_it(mesh_folder, tmp_path):
    with pytest.raises(ValueError) as error:
        load_mesh_folder(mesh_folder, num_points=16, cache_dir=tmp_path / "cache")
    assert_one_line(error.value, "a/train/dangling.obj", "on_missing='skip'")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("dataset_dict.json"))


def test_dangling_mesh_link_is_skipped_with_a_warning_when_asked(mesh_folder, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_mesh_folder(mesh_folder, num_points=16, cache_dir=tmp_path / "cache", on_missing="skip")
    assert any("a/train/dangling.obj" in str(w.message) for w in caught)
    assert sorted(ds["train"]["path"]) == [
        "a/train/m0.obj",
        "a/train/m1.obj",
        "b/train/m0.obj",
        "b/train/m1.obj",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_mesh_is_an_error_listing_it(tmp_path):
    root = tmp_path / "meshes"
    for cls in ("a", "b"):
        _obj(root / cls / "train" / "m0.obj")
    (root / "b" / "train" / "m0.obj").chmod(0)
    try:
        with pytest.raises(ValueError) as error:
            load_mesh_folder(root, num_points=16, cache_dir=tmp_path / "cache")
        assert_one_line(error.value, "b/train/m0.obj")
    finally:
        (root / "b" / "train" / "m0.obj").chmod(0o644)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_cache_work_folders_are_cleaned_but_live_ones_kept(tmp_path):
    dead = work_folder(tmp_path / "key", "scratch", pid=_dead_pid())
    live = work_folder(tmp_path / "key", "tmp")
    foreign_recent = tmp_path / f".scratch-key-{_dead_pid()}-otherhost-0123abcd"
    foreign_old = tmp_path / ".old-key-1-otherhost-0123abcd"
    entry = tmp_path / "key"  # a finished cache entry
    other_dead = work_folder(tmp_path / "other", "tmp", pid=_dead_pid())
    for folder in (dead, live, foreign_recent, foreign_old, entry, other_dead):
        folder.mkdir()
    os.utime(foreign_old, (time.time() - 2 * 86400,) * 2)
    assert clean_stale_work_folders(tmp_path, "other") == [other_dead]  # only that target's folders
    removed = sorted(p.name for p in clean_stale_work_folders(tmp_path))
    assert removed == sorted([dead.name, foreign_old.name])
    assert live.is_dir() and foreign_recent.is_dir() and entry.is_dir()


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "a.txt").read_text() == "first"
    with pytest.raises(KeyboardInterrupt), atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and sorted(os.listdir(target)) == ["a.txt"]
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and sorted(os.listdir(target)) == ["b.txt"]


# --------------------------------------------------------------------------------------------------------- convert


def test_convert_reader_refuses_without_advising_to_unpickle(tmp_path):
    for path, data in (("a.pth", os.urandom(300)), ("b.bin", b""), ("c.pt", pickle.dumps([1, 2, 3]))):
        (tmp_path / path).write_bytes(data)
        with pytest.raises(ValueError) as error:
            load_state_dict_file(tmp_path / path)
        assert_one_line(error.value, path)
        assert "weights_only" not in str(error.value)


def test_safetensors_state_dict_with_a_scalar_is_read(tmp_path):
    save_file({"weights": torch.tensor(1.0)}, str(tmp_path / "s.safetensors"))
    assert set(load_state_dict_file(tmp_path / "s.safetensors")) == {"weights"}


@pytest.mark.parametrize("resume", ["latest", "folder"])
def test_resuming_a_damaged_checkpoint_names_it(tmp_path, resume):
    from accelerate import Accelerator

    from clip2point_apps.training.checkpointing import TrainingProgress, resume_from_checkpoint

    root = tmp_path / "checkpoints"
    folder = _checkpoint(root, "checkpoint_0")
    (folder / "custom_checkpoint_0.pkl").write_bytes(b"\x80\x04 truncated")
    accelerator, progress = Accelerator(cpu=True), TrainingProgress()
    accelerator.register_for_checkpointing(progress)
    with pytest.raises(ValueError) as error:
        resume_from_checkpoint(accelerator, "latest" if resume == "latest" else str(folder), root, progress)
    assert_one_line(error.value, "--resume_from_checkpoint", str(folder), "cannot be loaded")


def _legacy_pickle(path: Path, cut: int) -> Path:
    torch.save({"w": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
    return _write(path, path.read_bytes()[:cut])


def _zip_archive(path: Path, cut: int) -> Path:
    torch.save({"w": torch.zeros(300)}, path)
    return _write(path, path.read_bytes()[:cut])


CHECKPOINT_FILES = [
    ("random_bytes", lambda d: _write(d / "rand.pth", b"\x01" + os.urandom(4095)), "is not a checkpoint"),
    ("text", lambda d: _write(d / "notes.pth", b"these are my notes\n"), "is not a checkpoint"),
    ("empty", lambda d: _write(d / "empty.bin", b""), "is empty"),
    ("truncated_zip", lambda d: _zip_archive(d / "cut.pth", 900), "is a zip archive but not a readable"),
    (
        "truncated_pickle",
        lambda d: _legacy_pickle(d / "old.pth", 200),
        "is a pickle stream but not a readable",
    ),
    (
        "pickle_of_noise",
        lambda d: _write(d / "noise.pt", b"\x80\x02" + os.urandom(500)),
        "is a pickle stream",
    ),
    ("pickled_code", lambda d: _evil(d / "evil.pth"), "holds pickled Python objects"),
    (
        "bad_safetensors",
        lambda d: _write(d / "w.safetensors", b"\x10\x00" * 8),
        "cannot be read as safetensors",
    ),
]


@pytest.mark.parametrize(
    "make, what", [c[1:] for c in CHECKPOINT_FILES], ids=[c[0] for c in CHECKPOINT_FILES]
)
def test_an_unreadable_checkpoint_says_what_the_file_is(tmp_path, make, what):
    """Told from the file's first bytes: a PyTorch zip archive, a pickle stream (0x80 and a protocol), safetensors,
    or nothing this reader takes; only a pickle naming code is said to hold Python objects."""
    path = make(tmp_path)
    with pytest.raises(ValueError) as error:
        load_state_dict_file(path)
    assert_one_line(error.value, f"{path}: {what}")
    assert "weights_only" not in str(error.value)
    if what != "holds pickled Python objects":
        assert "pickled Python objects" not in str(error.value)


MISFITS = [
    (
        "projection",
        lambda state: state.update({"visual.proj": torch.zeros(state["visual.proj"].shape[0], 3)}),
        "the checkpoint's visual.proj (transposed) is (3, ",
        "the model's visual_projection.weight is (",
    ),
    (
        "fused_attention",
        lambda state: state.update(
            {
                "visual.transformer.resblocks.1.attn.in_proj_weight": torch.zeros(
                    6, state["visual.proj"].shape[0]
                )
            }
        ),
        "the checkpoint's visual.transformer.resblocks.1.attn.in_proj_weight (k third) is (2, ",
        "the model's vision_model.encoder.layers.1.self_attn.k_proj.weight is (",
    ),
    (
        "text_layer_norm",
        lambda state: state.update({"ln_final.bias": torch.zeros(5)}),
        "the checkpoint's ln_final.bias is (5,)",
        "the model's text_model.final_layer_norm.bias is (",
    ),
]


@pytest.mark.parametrize(
    "damage, checkpoint_side, model_side", [c[1:] for c in MISFITS], ids=[c[0] for c in MISFITS]
)
def test_a_misfit_tensor_names_its_key_in_the_checkpoint_and_in_the_model(
    damage, checkpoint_side, model_side
):
    from clip2point_hf.conversion_clip2point import load_openai_clip
    from test_conversion import random_openai_clip

    state = random_openai_clip()
    damage(state)
    with pytest.raises(ValueError) as error:
        load_openai_clip(state)
    assert_one_line(error.value, "do not fit", checkpoint_side, model_side)


def test_convert_says_which_classes_it_assumes_for_a_dpa_checkpoint(tmp_path, capsys):
    """A DPA checkpoint does not record its classes: without --class_names, `convert` says which list it assumed
    and why; with them, nothing is assumed."""
    from clip2point_apps.cli import main
    from test_conversion import random_openai_clip
    from test_conversion_reference_layouts import REFERENCE_6, save_dpa

    torch.save(random_openai_clip(), tmp_path / "clip.pt")
    make_tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    save_dpa(tmp_path / "best_test.pth", views=REFERENCE_6)
    common = ["--clip", str(tmp_path / "clip.pt"), "--tokenizer", str(tmp_path / "tokenizer")]
    assert main(["convert", str(tmp_path / "best_test.pth"), "-o", str(tmp_path / "assumed"), *common]) == 0
    out = capsys.readouterr().out
    assert "class names: modelnet40 (40), assumed: a DPA checkpoint does not record its classes" in out
    assert "--class_names to change" in out
    assert (
        len(CLIP2PointForPointCloudClassification.from_pretrained(tmp_path / "assumed").config.id2label) == 40
    )
    assert main(["convert", str(tmp_path / "best_test.pth"), "-o", str(tmp_path / "named"), *common,
                 "--class_names", "chair,lamp"]) == 0  # fmt: skip
    assert "assumed" not in capsys.readouterr().out
    config = CLIP2PointForPointCloudClassification.from_pretrained(tmp_path / "named").config
    assert config.id2label == {0: "chair", 1: "lamp"}


def test_convert_help_says_what_is_assumed_without_class_names():
    from clip2point_apps.cli import build_parser

    (convert,) = [a for a in build_parser()._subparsers._group_actions if a.dest == "command"]
    text = " ".join(convert.choices["convert"].format_help().split())
    assert "Default: modelnet40, the authors' few-shot dataset (printed when assumed)" in text


# --------------------------------------------------------------------------------------------------------- serve


def test_serve_on_a_busy_port_names_the_option(fake_gradio, capsys):
    """Checked before the model (or Gradio) loads: one line naming --port, not Gradio's GRADIO_SERVER_PORT advice
    (the command sets the port itself)."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = run_cli(capsys, "serve", "--port", port)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--port {port}: 127.0.0.1:{port} is in use" in err and "GRADIO" not in err


class _FakeDemo:
    """What `cmd_serve` calls of a Gradio page: `launch`, recorded (or failing as Gradio does on a taken port)."""

    def __init__(self, error: OSError | None = None):
        self.error, self.launched = error, None

    def launch(self, **kwargs):
        self.launched = kwargs
        if self.error is not None:
            raise self.error


@pytest.fixture
def fake_gradio(monkeypatch):
    import importlib.machinery
    import types

    import clip2point_apps.web

    gradio = types.ModuleType("gradio")
    gradio.__spec__ = importlib.machinery.ModuleSpec("gradio", None)  # found, as an installed Gradio is
    monkeypatch.setitem(sys.modules, "gradio", gradio)
    demo = _FakeDemo()
    monkeypatch.setattr(clip2point_apps.web, "build_demo", lambda **kwargs: demo)
    return demo


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_launches_quietly_on_its_port_and_says_where(fake_gradio, capsys):
    """No public link is made, so Gradio's hint to make one (`share=True`) is not printed: the page is launched
    quiet, with share off, and the command prints where the page is."""
    port = _free_port()
    code, err = run_cli(capsys, "serve", "--port", port)
    assert code == 0, err
    assert fake_gradio.launched == {
        "server_name": "127.0.0.1",
        "server_port": port,
        "share": False,
        "quiet": True,
    }


def test_serve_when_the_port_is_taken_at_launch_names_the_option(fake_gradio, capsys):
    port = _free_port()
    fake_gradio.error = OSError(
        f"Cannot find empty port in range: {port}-{port}. You can specify a different port by setting the "
        "GRADIO_SERVER_PORT environment variable or passing the `server_port` parameter to `launch()`."
    )
    code, err = run_cli(capsys, "serve", "--port", port)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--port {port}:" in err and "GRADIO_SERVER_PORT" not in err


# --------------------------------------------------------------------------------------------------------- up axis

AXES = ["x", "-x", "y", "-y", "z", "-z"]


@pytest.mark.parametrize("spelling", ["space", "equals"])
@pytest.mark.parametrize("axis", AXES)
def test_every_command_takes_every_up_axis_as_users_type_it(folders, tmp_path, axis, spelling):
    """`--up_axis -z` (a value that starts with -, which argparse would take for an option) and `--up_axis=-z`, on
    each subcommand and script that takes the option."""
    from clip2point_apps.arguments import PointCloudDataArguments, parse_args
    from clip2point_apps.cli import parse_command_line
    from clip2point_apps.evaluation import parse_evaluation_arguments

    option = ["--up_axis", axis] if spelling == "space" else [f"--up_axis={axis}"]
    commands = {
        "classify": ["classify", "x.ply", *option],
        "render": ["render", "x.ply", *option],
        "embed": ["embed", "shapes", "--model", "m", "-o", "i", *option],
        "search": ["search", "chair", "--index", "i", *option],
    }
    for name, argv in commands.items():
        args, unrecognized = parse_command_line(argv)
        assert (args.up_axis, unrecognized) == (axis, []), name
    args, unrecognized = parse_command_line(["evaluate", "--dataset", "d", *option])
    assert parse_evaluation_arguments(unrecognized)[0].up_axis == axis  # `clip2point evaluate`, zero_shot.py
    assert parse_args((PointCloudDataArguments,), ["--dataset", "d", *option])[0].up_axis == axis
    finetune = _example_module("finetune_gdpa")
    assert parse_args((finetune.FinetuneDataArguments,), ["--dataset", "d", *option])[0].up_axis == axis


def _example_module(name: str):
    """An example script as a module (its `main` is not run), to parse with its own dataclasses."""
    import importlib.util

    module_name = f"example_{name}"
    if module_name not in sys.modules:
        path = Path(__file__).parents[1] / "examples" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        sys.modules[module_name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
        spec.loader.exec_module(sys.modules[module_name])
    return sys.modules[module_name]


@pytest.mark.parametrize("axis", AXES)
def test_classify_uses_and_states_a_negated_axis_given_with_a_space(folders, capsys, axis):
    from clip2point_apps.cli import main

    capsys.readouterr()
    assert main(["classify", str(folders["cloud"]), "--labels", "a,b", "--model", str(folders["good"]),
                 "--up_axis", axis]) == 0  # fmt: skip
    assert f"up axis: {axis} (--up_axis)" in capsys.readouterr().out


def test_a_value_that_is_not_an_axis_is_still_an_option(capsys):
    """Only the six axes are joined to --up_axis: `--up_axis -k 3` (a forgotten value) stays argparse's error."""
    from clip2point_apps.console import join_negated_axes

    assert join_negated_axes(["search", "q", "--up_axis", "-k", "3"]) == [
        "search",
        "q",
        "--up_axis",
        "-k",
        "3",
    ]
    code, err = run_cli(capsys, "search", "q", "--index", "i", "--up_axis", "-k", "3")
    assert code == 2 and "--up_axis" in err


def test_the_console_knows_the_negated_axes_of_the_library():
    from clip2point_apps.console import NEGATED_AXES
    from clip2point_hf.points_clip2point import UP_AXES

    assert set(NEGATED_AXES) == {axis for axis in UP_AXES if axis.startswith("-")}


# --------------------------------------------------------------------------------------------------------- scripts


def test_a_scripts_unknown_tracker_is_one_line_with_its_name_and_exit_2(tmp_path, capsys, monkeypatch):
    """`--report_to foo`, checked with the other arguments before anything is written."""
    from clip2point_apps.arguments import parse_args

    monkeypatch.delenv("CLIP2POINT_DEBUG", raising=False)

    def main(argv):
        (args,) = parse_args((TrainingRunArguments,), argv)
        args.validate()

    with pytest.raises(SystemExit) as exit_info:
        run_script(main, ["--output_dir", str(tmp_path / "o"), "--report_to", "foo"], prog="finetune_gdpa.py")
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("finetune_gdpa.py: error: --report_to: unknown tracker 'foo'")
    assert not (tmp_path / "o").exists()


def test_the_evaluation_checks_report_to_before_writing(tmp_path):
    from clip2point_apps.arguments import BackboneArguments
    from clip2point_apps.evaluation import ZeroShotArguments, run_evaluation

    args = ZeroShotArguments(dataset=str(tmp_path / "d"), output_dir=str(tmp_path / "out"), report_to="foo")
    with pytest.raises(ValueError) as error:
        run_evaluation(args, BackboneArguments(clip_config="tiny"))
    assert_one_line(error.value, "--report_to", "'foo'")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------- help


def _help_texts() -> dict[str, str]:
    """The --help of every subcommand and script, with argparse's line breaks undone."""
    from transformers import HfArgumentParser

    from clip2point_apps.arguments import BackboneArguments
    from clip2point_apps.cli import build_parser
    from clip2point_apps.evaluation import ZeroShotArguments

    (commands,) = [a for a in build_parser()._subparsers._group_actions if a.dest == "command"]
    texts = {f"clip2point {name}": parser.format_help() for name, parser in commands.choices.items()}
    texts["zero_shot.py"] = HfArgumentParser([ZeroShotArguments, BackboneArguments]).format_help()
    finetune = _example_module("finetune_gdpa")
    texts["finetune_gdpa.py"] = HfArgumentParser(
        [
            BackboneArguments,
            finetune.FinetuneDataArguments,
            finetune.GDPAArguments,
            finetune.FinetuneRunArguments,
        ]
    ).format_help()
    return {name: " ".join(text.split()) for name, text in texts.items()}


def test_help_points_to_readme_sections_that_exist():
    """A help text cites the README as `README, 'Section'` (a heading of README.md) or refers to it whole."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    headings = {line.lstrip("#").strip() for line in readme.splitlines() if line.startswith("#")}
    cited, loose = set(), []
    for name, text in _help_texts().items():
        for match in re.finditer(r"README", text):
            section = re.match(r"README, '([^']+)'", text[match.start() :])
            if section:
                cited.add(section.group(1))
            elif not text[match.start() :].startswith("README)"):
                loose.append(f"{name}: ...{text[max(0, match.start() - 40) : match.start() + 40]}...")
    assert {"Up axis", "File types", "Zero-shot protocol"} <= cited
    assert cited <= headings, cited - headings
    assert loose == []
