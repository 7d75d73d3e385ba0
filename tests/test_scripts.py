"""The example scripts, end to end, as a user runs them (subprocesses, tiny random backbones, CPU).

- each script runs a few steps and writes what it promises (model, processor, splits, results, pictures);
- a run killed with SIGKILL mid-epoch and resumed ends with bit-identical weights to an uninterrupted run;
- two processes (gloo) give the same pre-training loss as one process on the same global batch;
- ``--push_to_hub`` without a reachable Hub fails with one clear line, after the local save;
- zero-shot numbers equal a direct computation through the processor and the model's forward;
- supervised GDPA on SHREC'16 learns far above chance (needs ../shared/data; skipped without it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHREC = Path(os.path.dirname(__file__), "..", "..", "shared", "data", "shrec_16").resolve()
#: The scripts run end to end in subprocesses (training, kills, resumes): `make test-slow`, and CI, run them.
pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------------------
# Fixtures: a synthetic mesh folder (3 classes) and its render pairs


def _write_obj(path: Path, vertices, faces) -> None:
    path.write_text(
        "".join(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in vertices)
        + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)
    )


def _box(rng):
    sx, sy, sz = 0.3 + rng.random(3)
    v = [(x, y, z) for x in (-sx, sx) for y in (-sy, sy) for z in (-sz, sz)]
    f = [
        (0, 1, 3),
        (0, 3, 2),
        (4, 6, 7),
        (4, 7, 5),
        (0, 4, 5),
        (0, 5, 1),
        (2, 3, 7),
        (2, 7, 6),
        (0, 2, 6),
        (0, 6, 4),
        (1, 5, 7),
        (1, 7, 3),
    ]
    return v, f


def _pyramid(rng):
    s, h = 0.5 + 0.3 * rng.random(), 1 + rng.random()
    return [(-s, 0, -s), (s, 0, -s), (s, 0, s), (-s, 0, s), (0, h, 0)], [
        (0, 1, 2),
        (0, 2, 3),
        (0, 4, 1),
        (1, 4, 2),
        (2, 4, 3),
        (3, 4, 0),
    ]


def _prism(rng):
    s, h = 0.4 + 0.3 * rng.random(), 0.3 + rng.random()
    return [(-s, 0, -s), (s, 0, -s), (0, 0, s), (-s, h, -s), (s, h, -s), (0, h, s)], [
        (0, 1, 2),
        (3, 5, 4),
        (0, 3, 4),
        (0, 4, 1),
        (1, 4, 5),
        (1, 5, 2),
        (2, 5, 3),
        (2, 3, 0),
    ]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("scripts")


@pytest.fixture(scope="module")
def env(workdir):
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CLIP2POINT_HF_CACHE": str(workdir / "cache"),
        "HF_DATASETS_CACHE": str(workdir / "hf_datasets"),
        "HF_MODULES_CACHE": str(workdir / "hf_modules"),
        "PYTHONWARNINGS": "ignore",
    }


@pytest.fixture(scope="module")
def meshes(workdir):
    root = workdir / "meshes"
    rng = np.random.default_rng(0)
    for name, make in (("box", _box), ("pyramid", _pyramid), ("prism", _prism)):
        for split, count in (("train", 6), ("test", 2)):
            folder = root / name / split
            folder.mkdir(parents=True)
            for i in range(count):
                _write_obj(folder / f"m{i}.obj", *make(rng))
    return root


@pytest.fixture(scope="module")
def pairs(meshes, workdir):
    from clip2point_hf.data import build_render_pairs

    return build_render_pairs(meshes, workdir / "pairs", num_points=1024, render_points=2048, image_size=64)


def run_script(
    script: str, args: list[str], env: dict, check: bool = True, timeout: float = 120, launcher=None
):
    command = [*(launcher or [sys.executable]), str(EXAMPLES / script), *map(str, args)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def run_cli(args: list, env: dict, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "clip2point_apps.cli", *map(str, args)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"clip2point {args[0]} failed ({result.returncode}):\n{result.stderr[-5000:]}")
    return result


def assert_cli_scores_the_fine_tuned_run(run: Path, dataset: Path, test_file: Path, env: dict) -> None:
    """`clip2point classify` answers with the run's classes (no --labels needed); `clip2point evaluate` gives the
    run's own test accuracy and confusion matrix, in `eval_results.json` (the result format the model card reads),
    named for what ran: no "zero-shot" file, bar or card task."""
    from clip2point_apps.hub import read_results
    from clip2point_hf.prompts import prompt_names

    classes = json.loads((run / "test_results.json").read_text())["class_names"]
    labels = prompt_names(classes, distinct=True)  # the classifier's id2label ("bird 1" for SHREC's "bird1")
    answer = json.loads(run_cli(["classify", test_file, "--model", run, "--json"], env).stdout)[
        str(test_file)
    ]
    assert sorted(r["label"] for r in answer) == sorted(labels)  # every class, softmax scores
    assert sum(r["score"] for r in answer) == pytest.approx(1.0, abs=1e-5)
    kept = json.loads(
        run_cli(
            ["classify", test_file, "--model", run, "--labels", ",".join(classes[:2]), "--json"], env
        ).stdout
    )[str(test_file)]
    assert kept == [r for r in answer if r["label"] in classes[:2]]
    bad = run_cli(["classify", test_file, "--model", run, "--labels", "no-such-class"], env, check=False)
    assert bad.returncode == 2 and "no-such-class" in bad.stderr and "Traceback" not in bad.stderr

    out = run / "evaluate"
    evaluated = run_cli(["evaluate", "--dataset", dataset, "--model", run, "--output_dir", out], env)
    assert f"results: {out / 'eval_results.json'}" in evaluated.stdout
    assert (
        "zero-shot" not in evaluated.stdout + evaluated.stderr
        and not (out / "zero_shot_results.json").exists()
    )
    summary = json.loads((out / "eval_results.json").read_text())
    results = json.loads((run / "all_results.json").read_text())
    test = json.loads((run / "test_results.json").read_text())
    assert summary["classifier"] == "fine-tuned" and summary["class_names"] == classes
    assert summary["num_examples"] == results["num_test_examples"]
    assert summary["overall_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-12)
    assert summary["confusion_matrix"] == test["confusion_matrix"]
    assert (out / "confusion_matrix.png").stat().st_size > 0
    (card,) = read_results([out / "eval_results.json"])
    assert card["overall_accuracy"] == summary["overall_accuracy"]


def read_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log_history.jsonl").read_text().splitlines()]


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


PRETRAIN = [
    "--clip_config",
    "tiny",
    "--num_points",
    "256",
    "--validation_split_percentage",
    "20",
    "--logging_steps",
    "1",
]
FINETUNE = [
    "--clip_config",
    "tiny",
    "--num_points",
    "256",
    "--validation_split_percentage",
    "20",
    "--views",
    "reference6",
    "--logging_steps",
    "1",
]


@pytest.fixture(scope="module")
def pretrained(pairs, workdir, env):
    """A few pre-training updates, every argument from a YAML file, one overridden on the command line."""
    out = workdir / "pretrain"
    config = workdir / "pretrain.yaml"
    config.write_text(
        f"pairs_dir: {pairs}\noutput_dir: {out}\nclip_config: tiny\nnum_points: 256\nper_device_train_batch_size: 4\n"
        "validation_split_percentage: 20\nnum_train_epochs: 2\ncheckpointing_steps: '2'\nlogging_steps: 1\n"
        "seed: 1\n"
    )
    run_script("pretrain.py", [config, "--seed", "3"], env)
    return out


# ---------------------------------------------------------------------------------------------------------
# End to end


def test_pretrain_end_to_end(pretrained, pairs):
    from transformers import AutoModel

    from clip2point_hf import CLIP2PointModel
    from clip2point_hf.processing_clip2point import CLIP2PointProcessor

    out = pretrained
    args = json.loads((out / "run_args.json").read_text())
    assert args["seed"] == 3 and args["per_device_train_batch_size"] == 4  # YAML file + command-line override
    log = read_log(out)
    train = [e for e in log if "train/loss" in e]
    assert [e["step"] for e in train] == list(range(1, len(train) + 1)) and len(train) >= 4
    assert all(np.isfinite(e["train/loss"]) for e in train)
    evals = [e for e in log if "eval/zero_shot_accuracy" in e]
    assert evals[0]["step"] == 0 and len(evals) == 3  # before training and after each epoch
    assert (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
    # validation is held out of the TRAIN split; the test split is never used
    splits = json.loads((out / "data_splits.json").read_text())
    test_ids = {
        line.strip()[:-4] for line in (Path(pairs) / "ShapeNet-55" / "test.txt").read_text().splitlines()
    }
    assert splits["validation"] and not set(splits["validation"]) & set(splits["train"])
    assert not (set(splits["train"]) | set(splits["validation"])) & test_ids
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, CLIP2PointModel)
    processor = CLIP2PointProcessor.from_pretrained(out)
    assert processor.feature_extractor.image_size == model.config.vision_config.image_size
    results = json.loads((out / "all_results.json").read_text())
    assert results["best_eval_zero_shot_accuracy"] == max(e["eval/zero_shot_accuracy"] for e in evals)
    # image_encoder/: the frozen image tower the depth encoder was aligned with (photo queries go through it)
    from clip2point_apps.arguments import BackboneArguments
    from clip2point_apps.backbone import build_clip, load_tokenizer
    from clip2point_apps.retrieval import PhotoEncoder

    backbone = BackboneArguments(clip_config="tiny")
    clip = build_clip(backbone, load_tokenizer(backbone), seed=3)
    tower = PhotoEncoder.from_pretrained(out).model
    for name, value in clip.vision_model.state_dict().items():
        torch.testing.assert_close(tower.vision_model.state_dict()[name], value, atol=0, rtol=0)
    torch.testing.assert_close(tower.visual_projection.weight, clip.visual_projection.weight, atol=0, rtol=0)


def test_finetune_kshot_end_to_end(pretrained, meshes, workdir, env):
    from clip2point_apps.arguments import BackboneArguments
    from clip2point_apps.backbone import build_clip, load_tokenizer
    from clip2point_hf import CLIP2PointForPointCloudClassification

    out = workdir / "gdpa"
    config = workdir / "gdpa.json"
    config.write_text(
        json.dumps(
            {
                "dataset": str(meshes),
                "output_dir": str(out),
                "shots": "2",
                "seed": 5,
                "clip2point": str(pretrained),
                "num_train_epochs": 3,
            }
        )
    )
    finished = run_script(
        "finetune_gdpa.py",
        [config, *FINETUNE, "--per_device_train_batch_size", "4", "--checkpointing_steps", "epoch"],
        env,
    )
    summary = finished.stdout.split("Summary\n", 1)[1]  # what a person reads at the end
    assert "best validation accuracy: " in summary and "test accuracy of the saved model: " in summary
    assert f"saved in {out}" in summary and "from_pretrained(" in summary
    assert "Loading weights" not in finished.stdout + finished.stderr  # transformers' bars are off
    splits = json.loads((out / "data_splits.json").read_text())
    train, val = splits["train"], splits["validation"]
    assert len(train) == 6 and sorted(e["label"] for e in train) == [0, 0, 1, 1, 2, 2]  # 2 shots x 3 classes
    assert not {e["path"] for e in train} & {e["path"] for e in val}
    assert all("/train/" in e["path"] for e in train + val)
    results = json.loads((out / "all_results.json").read_text())
    assert results["num_test_examples"] == 6 and 0.0 <= results["test_accuracy"] <= 1.0
    test = json.loads((out / "test_results.json").read_text())
    assert test["overall_accuracy"] == results["test_accuracy"]
    assert (out / "confusion_matrix_test.png").stat().st_size > 0
    log = read_log(out)
    assert any("eval/accuracy" in e for e in log) and any("test/accuracy" in e for e in log)

    # only the adapters trained: the saved towers are the pre-trained depth encoder and the seeded CLIP
    model = CLIP2PointForPointCloudClassification.from_pretrained(out)
    clip = build_clip(
        BackboneArguments(clip_config="tiny"), load_tokenizer(BackboneArguments(clip_config="tiny")), 5
    )
    for key, value in clip.vision_model.state_dict().items():
        torch.testing.assert_close(model.clip_model.state_dict()[key], value, rtol=0, atol=0)
    depth = load_weights(pretrained)
    for key, value in model.clip2point.state_dict().items():
        torch.testing.assert_close(value, depth[key], rtol=0, atol=0)
    assert model.config.id2label == {0: "box", 1: "prism", 2: "pyramid"}


def test_finetune_supervised_without_pretraining(meshes, workdir, env):
    out = workdir / "gdpa_all"
    run_script(
        "finetune_gdpa.py",
        [
            "--dataset",
            meshes,
            "--output_dir",
            out,
            "--shots",
            "all",
            *FINETUNE,
            "--max_train_steps",
            "3",
            "--per_device_train_batch_size",
            "4",
            "--fusion",
            "mean",
            "--prompts",
            "ensemble",
        ],
        env,
    )
    splits = json.loads((out / "data_splits.json").read_text())
    assert len(splits["train"]) + len(splits["validation"]) == 18
    assert json.loads((out / "all_results.json").read_text())["completed_steps"] == 3
    # The fine-tuned folder, as a user then uses it: classify a test mesh, score the test split.
    assert_cli_scores_the_fine_tuned_run(out, meshes, meshes / "prism" / "test" / "m0.obj", env)


def test_zero_shot_matches_direct_computation(pretrained, meshes, workdir, env):
    from clip2point_hf import CLIP2PointModel
    from clip2point_hf.data import load_mesh_folder
    from clip2point_hf.processing_clip2point import CLIP2PointProcessor

    out = workdir / "zero_shot"
    run_script(
        "zero_shot.py",
        [
            "--model",
            pretrained,
            "--dataset",
            meshes,
            "--views",
            "6",
            "--num_points",
            "256",
            "--output_dir",
            out,
            "--cache_dir",
            workdir / "cache",
        ],
        env,
    )
    summary = json.loads((out / "zero_shot_results.json").read_text())
    assert (out / "confusion_matrix.png").stat().st_size > 0
    assert summary["views"] == "reference6" and summary["templates"] == ["image of a {}"]

    # the same numbers from an independent path: the processor renders, the model's forward scores
    data = load_mesh_folder(meshes, num_points=256, cache_dir=workdir / "cache")["test"]
    model = CLIP2PointModel.from_pretrained(pretrained).eval()
    processor = CLIP2PointProcessor.from_pretrained(pretrained, num_points=256, views="reference6")
    clouds = [np.asarray(p, dtype=np.float32) for p in data["points"]]
    names = data.features["label"].names
    inputs = processor(clouds, text=[f"image of a {n}" for n in names])
    with torch.no_grad():
        logits = model(**inputs).logits_per_point_cloud
    predictions = logits.argmax(-1).numpy()
    references = np.asarray(data["label"])
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[4]) for r in rows] == predictions.tolist()
    assert summary["overall_accuracy"] == pytest.approx(float(np.mean(predictions == references)), abs=1e-12)
    per_class = [float(np.mean(predictions[references == c] == c)) for c in range(len(names))]
    assert summary["mean_class_accuracy"] == pytest.approx(float(np.mean(per_class)), abs=1e-12)
    assert list(summary["per_class_accuracy"].values()) == pytest.approx(per_class, abs=1e-12)

    # a prompt ensemble and explicit views also run
    out2 = workdir / "zero_shot_ensemble"
    run_script(
        "zero_shot.py",
        [
            "--model",
            pretrained,
            "--dataset",
            meshes,
            "--views",
            "[[0, 0], [90, 0]]",
            "--prompts",
            "ensemble",
            "--num_points",
            "256",
            "--output_dir",
            out2,
        ],
        env,
    )
    assert len(json.loads((out2 / "zero_shot_results.json").read_text())["templates"]) > 1


# ---------------------------------------------------------------------------------------------------------
# Resuming, distribution, publishing


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_after_first_checkpoint(command: list[str], env: dict, folder: Path, timeout: float = 120) -> int:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    start = time.time()
    try:
        while process.poll() is None and time.time() - start < timeout:
            if any(
                (c / "clip2point_progress.json").is_file()
                for c in (folder / "checkpoints").glob("checkpoint_*")
            ):
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if process.poll() is None and time.time() - start >= timeout:
            process.kill()
    return process.wait()


def test_pretrain_killed_mid_epoch_resumes_bit_exactly(pairs, workdir, env):
    args = [
        "--pairs_dir",
        pairs,
        *PRETRAIN,
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "2",
        "--num_train_epochs",
        "6",
        "--checkpointing_steps",
        "2",
        "--load_best_model_at_end",
        "false",
    ]
    reference, killed = workdir / "resume_ref", workdir / "resume_killed"
    run_script("pretrain.py", [*args, "--output_dir", reference], env)
    returncode = _kill_after_first_checkpoint(
        [sys.executable, str(EXAMPLES / "pretrain.py"), *map(str, args), "--output_dir", str(killed)],
        env,
        killed,
    )
    assert returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "model.safetensors").exists()
    result = run_script("pretrain.py", [*args, "--output_dir", killed, "--resume_from_checkpoint"], env)
    assert "Resumed from" in result.stdout + result.stderr
    found = re.search(
        r"Resumed from \S+: epoch (\d+), batch (\d+), update (\d+)", result.stdout + result.stderr
    )
    assert found, result.stdout[-2000:]
    progress = json.loads(next((killed / "checkpoints").glob("*/clip2point_progress.json")).read_text())
    assert 0 < int(found.group(2)) < progress["batches_per_epoch"]  # the run was resumed mid-epoch
    a, b = load_weights(reference), load_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_finetune_killed_mid_epoch_resumes_bit_exactly(meshes, workdir, env):
    """GDPA has dropout and BatchNorm: both must replay exactly."""
    args = [
        "--dataset",
        meshes,
        *FINETUNE,
        "--per_device_train_batch_size",
        "2",
        "--num_train_epochs",
        "4",
        "--checkpointing_steps",
        "3",
        "--load_best_model_at_end",
        "false",
        "--augment_scale",
        "0.2",
        "--augment_jitter",
        "0.01",
        "--augment_rotate",
    ]
    reference, killed = workdir / "gdpa_resume_ref", workdir / "gdpa_resume_killed"
    run_script("finetune_gdpa.py", [*args, "--output_dir", reference], env)
    returncode = _kill_after_first_checkpoint(
        [sys.executable, str(EXAMPLES / "finetune_gdpa.py"), *map(str, args), "--output_dir", str(killed)],
        env,
        killed,
    )
    assert returncode == -signal.SIGKILL
    run_script("finetune_gdpa.py", [*args, "--output_dir", killed, "--resume_from_checkpoint", "latest"], env)
    a, b = load_weights(reference), load_weights(killed)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_processes_give_the_single_process_loss(pairs, workdir, env):
    """`accelerate launch` with 2 gloo processes x 3 objects == 1 process x 6 objects (global negatives)."""
    args = [
        "--pairs_dir",
        pairs,
        *PRETRAIN,
        "--max_train_steps",
        "2",
        "--eval_before_training",
        "false",
        "--load_best_model_at_end",
        "false",
    ]
    one, two = workdir / "one_process", workdir / "two_processes"
    run_script("pretrain.py", [*args, "--output_dir", one, "--per_device_train_batch_size", "6"], env)
    # `accelerate launch --cpu` always starts ONE process (accelerate issue #2741): ask for the multi-process
    # launcher and keep it on the CPU with ACCELERATE_USE_CPU.
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]
    run_script(
        "pretrain.py",
        [*args, "--output_dir", two, "--per_device_train_batch_size", "3"],
        {**env, "ACCELERATE_USE_CPU": "1"},
        launcher=launcher,
    )
    args_two = json.loads((two / "run_args.json").read_text())
    assert args_two["num_processes"] == 2
    log1 = [e for e in read_log(one) if "train/loss" in e]
    log2 = [e for e in read_log(two) if "train/loss" in e]
    assert len(log1) == len(log2) == 2
    for a, b in zip(log1, log2):
        for key in ("train/loss", "train/loss_cross", "train/loss_intra"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    # the weights after the two updates agree too, up to Adam's sign-like steps on near-zero gradients, where the
    # rounding of the gradient all-reduce can flip a sign: at most 2 x lr (5e-5) per update
    w1, w2 = load_weights(one), load_weights(two)
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=2 * 2 * 5e-5 + 1e-6)


def test_push_to_hub_offline_fails_clearly_after_saving(meshes, workdir, env):
    out = workdir / "push"
    result = run_script(
        "finetune_gdpa.py",
        [
            "--dataset",
            meshes,
            "--output_dir",
            out,
            *FINETUNE,
            "--max_train_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--push_to_hub",
            "--hub_model_id",
            "someone/clip2point-test",
        ],
        env,
        check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "someone/clip2point-test" in errors[0] and str(out.resolve()) in errors[0]
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()


def test_a_run_refused_before_training_leaves_the_output_folder_for_the_corrected_rerun(meshes, workdir, env):
    """A backbone that cannot be loaded (offline, not cached) is found before anything is written: the corrected
    command then runs into the same --output_dir without --overwrite_output_dir."""
    out = workdir / "rerun"
    common = ["--dataset", meshes, "--output_dir", out, *FINETUNE[2:], "--per_device_train_batch_size", "4"]
    refused = run_script("finetune_gdpa.py", ["--clip", "someone/uncached", *common], env, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("finetune_gdpa.py: error: ") and "someone/uncached" in line and "offline" in line
    assert not out.exists()
    run_script("finetune_gdpa.py", [*FINETUNE[:2], *common, "--max_train_steps", "1"], env)
    assert (out / "data_splits.json").is_file() and (out / "model.safetensors").is_file()


def test_resume_latest_without_checkpoint_starts_fresh(meshes, workdir, env):
    out = workdir / "fresh"
    result = run_script(
        "finetune_gdpa.py",
        [
            "--dataset",
            meshes,
            "--output_dir",
            out,
            *FINETUNE,
            "--max_train_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--resume_from_checkpoint",
        ],
        env,
    )
    assert "starting from scratch" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------
# Learning on real data


@pytest.mark.slow
@pytest.mark.skipif(not SHREC.is_dir(), reason="SHREC'16 is not in ../shared/data (a user's machine)")
def test_supervised_gdpa_learns_on_shrec(workdir, env):
    """The fast version of the BENCHMARKS.md run: 30 classes (chance 3.3%), a tiny random backbone trained with
    the adapters (--train_backbone), 6 epochs; this machine measured 20.0% test accuracy (about 30 s). Then the
    fine-tuned folder through `clip2point classify` and `clip2point evaluate` (the same test accuracy); the
    fast variant of that on a generated dataset is in `test_finetune_supervised_without_pretraining`."""
    out = workdir / "shrec"
    run_script(
        "finetune_gdpa.py",
        [
            "--dataset",
            SHREC,
            "--output_dir",
            out,
            "--clip_config",
            "tiny",
            "--shots",
            "all",
            "--views",
            "reference6",
            "--num_train_epochs",
            "6",
            "--train_backbone",
            "--learning_rate",
            "3e-3",
            "--backbone_learning_rate",
            "3e-3",
            "--per_device_train_batch_size",
            "16",
            "--point_radius",
            "0.05",
            "--logging_steps",
            "13",
        ],
        env,
        timeout=600,
    )
    results = json.loads((out / "all_results.json").read_text())
    assert results["num_test_examples"] == 120 and results["chance"] == pytest.approx(1 / 30)
    assert results["test_accuracy"] >= 0.10, results  # 3x chance; measured 0.20
    test_mesh = next(p for p in sorted(SHREC.rglob("*")) if p.is_file() and "/test/" in p.as_posix())
    assert_cli_scores_the_fine_tuned_run(out, SHREC, test_mesh, env)


# ---------------------------------------------------------------------------------------------------------
# The shared pieces (clip2point_apps.training), in-process


def test_parse_args_from_files_and_overrides(tmp_path):
    from clip2point_apps.arguments import BackboneArguments, parse_args
    from clip2point_apps.training import TrainingRunArguments

    (tmp_path / "a.yaml").write_text("output_dir: x\nlearning_rate: 0.5\nclip_config: tiny\n")
    backbone, args = parse_args(
        (BackboneArguments, TrainingRunArguments), [str(tmp_path / "a.yaml"), "--seed", "7"]
    )
    assert (args.output_dir, args.learning_rate, args.seed, backbone.clip_config) == ("x", 0.5, 7, "tiny")
    (tmp_path / "b.json").write_text(json.dumps({"output_dir": "y", "resume_from_checkpoint": "latest"}))
    _, args = parse_args((BackboneArguments, TrainingRunArguments), [str(tmp_path / "b.json")])
    assert args.resume_from_checkpoint == "latest"
    _, args = parse_args(
        (BackboneArguments, TrainingRunArguments), ["--output_dir", "z", "--resume_from_checkpoint"]
    )
    assert args.resume_from_checkpoint == "latest"  # the flag alone means the latest checkpoint
    (tmp_path / "c.json").write_text(json.dumps({"output_dir": "y", "learning_rat": 1}))
    with pytest.raises(ValueError, match="learning_rat"):
        parse_args((BackboneArguments, TrainingRunArguments), [str(tmp_path / "c.json")])


def test_epoch_sampler_and_keyed_draws_are_reproducible():
    from clip2point_hf.data import EpochSampler
    from clip2point_hf.seeding import keyed_generator

    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(2)
    first = list(sampler)
    assert first == list(sampler) and sorted(i for _, i in first) == list(range(10))
    assert {e for e, _ in first} == {2}
    sampler.set_epoch(3)
    assert [i for _, i in sampler] != [i for _, i in first]
    a = torch.rand(3, generator=keyed_generator(1, "x", 2, 5))
    assert torch.equal(a, torch.rand(3, generator=keyed_generator(1, "x", 2, 5)))
    assert not torch.equal(a, torch.rand(3, generator=keyed_generator(1, "x", 2, 6)))


def test_stratified_split_and_k_shot():
    from clip2point_hf.data import sample_k_shot, stratified_split

    labels = np.repeat(np.arange(4), [10, 10, 3, 1])
    kept, held = stratified_split(labels, 0.2, seed=0)
    assert not set(kept) & set(held) and sorted(kept + held) == list(range(24))
    assert np.bincount(labels[held], minlength=4).tolist() == [2, 2, 1, 0]  # at least one, never the last one
    assert stratified_split(labels, 0.2, seed=0) == (kept, held)
    shots, short = sample_k_shot(labels, kept, 2, seed=0)
    assert np.bincount(labels[shots], minlength=4).tolist() == [2, 2, 2, 1] and short == {3: 1}
    assert set(shots) <= set(kept)
    assert sample_k_shot(labels, kept, 2, seed=1)[0] != shots


def test_random_subset_is_a_seeded_sorted_subset():
    from clip2point_hf.data import random_subset

    indices = list(range(100, 150))
    subset = random_subset(indices, 10, 3, "limit", "train")
    assert len(subset) == 10 and subset == sorted(subset) and set(subset) <= set(indices)
    assert random_subset(indices, 10, 3, "limit", "train") == subset
    assert random_subset(indices, 10, 3, "limit", "test") != subset
    assert random_subset(indices, None, 3, "x") is indices and random_subset(indices, 50, 3, "x") is indices


def test_lr_schedules():
    from clip2point_apps.training import lr_multiplier

    cosine = [lr_multiplier(s, "cosine", 10, 0, 1, 0.0) for s in range(11)]
    assert (
        cosine[0] == 1.0
        and cosine[10] == pytest.approx(0.0, abs=1e-12)
        and cosine == sorted(cosine, reverse=True)
    )
    restarts = [lr_multiplier(s, "cosine_restarts", 100, 0, 4, 0.1) for s in range(9)]
    assert restarts[0] == restarts[4] == restarts[8] == 1.0 and min(restarts) > 0.1
    assert lr_multiplier(0, "constant", 10, 2, 1, 0.0) == 0.5  # warm-up


def test_trackers_are_optional():
    import importlib.util

    from clip2point_apps.tracking import resolve_trackers

    assert resolve_trackers("none") is None
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            resolve_trackers("tensorboard")
    else:
        assert resolve_trackers("tensorboard") == ["tensorboard"]
    with pytest.raises(ValueError, match="unknown tracker"):
        resolve_trackers("nope")


# ---------------------------------------------------------------------------------------------------------
# A kill at any point of a checkpoint save keeps the last complete checkpoint

#: Runs a script's main with a real SIGKILL at one point of its KILL_AT_SAVE-th checkpoint save.
_KILL_DRIVER = """
import os, runpy, shutil, signal, sys, torch
import clip2point_apps.training.checkpointing as ck
import clip2point_apps.training.loop as loop

point, nth, saves = os.environ["KILL_POINT"], int(os.environ["KILL_AT_SAVE"]), [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def armed():
    return saves[0] == nth

def save_checkpoint(*args, **kwargs):
    saves[0] += 1
    return ck.save_checkpoint(*args, **kwargs)

def wrap(name, when):
    original = getattr(ck, name)
    def wrapper(*args, **kwargs):
        if armed() and when == "before":
            die()
        return original(*args, **kwargs)
    setattr(ck, name, wrapper)

loop.save_checkpoint = save_checkpoint
if point == "mid_state":  # the model's weights are written, the optimizer's are not
    torch_save = torch.save
    torch.save = lambda *a, **k: die() if armed() else torch_save(*a, **k)
elif point == "before_publish":  # complete and marked, not yet renamed
    wrap("replace_folder", "before")
elif point == "before_prune":  # renamed: two complete checkpoints on disk
    wrap("_prune_checkpoints", "before")
elif point == "mid_prune":  # the old checkpoint renamed away, not yet deleted
    rmtree = shutil.rmtree
    shutil.rmtree = lambda path, *a, **k: die() if armed() and str(path).endswith(".deleting") else rmtree(path, *a, **k)
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _complete_checkpoints(folder: Path) -> list[str]:
    return sorted(
        p.name
        for p in (folder / "checkpoints").glob("checkpoint_*")
        if (p / "clip2point_progress.json").is_file()
    )


def test_sigkill_at_any_point_of_a_save_keeps_the_last_checkpoint_and_resumes_bit_exactly(
    pairs, workdir, env
):
    args = [
        "--pairs_dir",
        pairs,
        *PRETRAIN,
        "--per_device_train_batch_size",
        "2",
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "1",
        "--checkpoints_total_limit",
        "1",
        "--eval_before_training",
        "false",
        "--eval_steps",
        "100",
        "--load_best_model_at_end",
        "false",
    ]
    reference = workdir / "kill_ref"
    run_script("pretrain.py", [*args, "--output_dir", reference], env)
    assert _complete_checkpoints(reference) == ["checkpoint_3"]  # the limit holds
    expected = load_weights(reference)
    driver = workdir / "kill_driver.py"
    driver.write_text(_KILL_DRIVER)
    # at the 2nd save: checkpoint_0 is complete and, with the limit 1, due to be pruned
    survivors = {
        "mid_state": ["checkpoint_0"],
        "before_publish": ["checkpoint_0"],
        "before_prune": ["checkpoint_0", "checkpoint_1"],
        "mid_prune": ["checkpoint_1"],
    }
    for point, kept in survivors.items():
        out = workdir / f"kill_{point}"
        killed = subprocess.run(
            [
                sys.executable,
                str(driver),
                str(EXAMPLES / "pretrain.py"),
                *map(str, args),
                "--output_dir",
                str(out),
            ],
            env={**env, "KILL_POINT": point, "KILL_AT_SAVE": "2"},
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
        )
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        assert _complete_checkpoints(out) == kept, point
        assert not (out / "model.safetensors").exists()
        result = run_script("pretrain.py", [*args, "--output_dir", out, "--resume_from_checkpoint"], env)
        resumed_from = re.search(r"Resumed from \S*(checkpoint_\d+)", result.stdout + result.stderr)
        assert resumed_from and resumed_from.group(1) == kept[-1], (point, result.stdout[-1500:])
        leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
        assert leftovers == [], (point, leftovers)  # partial and half-pruned folders were cleaned
        assert len(_complete_checkpoints(out)) == 1
        weights = load_weights(out)
        assert weights.keys() == expected.keys()
        for key in expected:
            assert torch.equal(weights[key], expected[key]), (point, key)


def test_non_empty_output_dir_is_refused_and_left_untouched(pretrained, pairs, env):
    before = {p: p.read_bytes() for p in pretrained.glob("*.json")}
    for extra in ([], ["--resume_from_checkpoint", str(pretrained / "no_such_checkpoint")]):
        result = run_script(
            "pretrain.py",
            ["--pairs_dir", pairs, *PRETRAIN, "--output_dir", pretrained, "--seed", "9", *extra],
            env,
            check=False,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        culprit = "--output_dir" if not extra else "no_such_checkpoint"
        assert culprit in lines[0] and str(pretrained) in lines[0]
    assert {p: p.read_bytes() for p in pretrained.glob("*.json")} == before  # data_splits.json untouched


def test_pretrain_refuses_a_global_batch_of_one(pairs, workdir, env):
    out = workdir / "batch_one"
    result = run_script(
        "pretrain.py",
        ["--pairs_dir", pairs, *PRETRAIN, "--output_dir", out, "--per_device_train_batch_size", "1"],
        env,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--per_device_train_batch_size" in result.stderr and "at least 2" in result.stderr
    assert not out.exists()  # nothing written
    help_text = run_script("pretrain.py", ["--help"], env).stdout
    assert "at least 2" in " ".join(help_text.split())
