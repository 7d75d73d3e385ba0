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
from clip2point_hf.pipeline_clip2point import parse_candidate_labels
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
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        CLIP2PointFeatureExtractor(**kwargs)
    assert_one_line(error.value, culprit)
    assert time.perf_counter() - start < 1  # refused when built, never at the first call


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
    code = main([str(a) for a in args])
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
        ["candidate_labels"],
    ),
    ("render_folder", lambda f: ["render", f["plydir"], "-o", f["root"] / "v.png"], ["x.ply", "is a folder"]),
    ("render_missing", lambda f: ["render", f["root"] / "gone.npy", "-o", f["root"] / "v.png"], ["gone.npy"]),
    ("convert_missing", lambda f: ["convert", f["root"] / "gone.pth", "-o", f["root"] / "c"], ["gone.pth"]),
    (
        "convert_random_bytes",
        lambda f: ["convert", _write(f["root"] / "rand.pth", os.urandom(4096)), "-o", f["root"] / "c"],
        ["rand.pth"],
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
    start = time.perf_counter()
    code, err = run_cli(capsys, *make(folders))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "weights_only=False" not in err
    assert time.perf_counter() - start < 10


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
