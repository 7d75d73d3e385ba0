"""The zero-shot pipeline on every supported file type, the `clip2point` command line, and Hub publishing."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from transformers import pipeline

import clip2point_hf  # noqa: F401  (registers the task)
from clip2point_apps.hub import build_model_card, export_hub_folder, verify_hub_folder
from clip2point_hf import CLIP2PointModel, CLIP2PointProcessor
from clip2point_hf.point_files import read_point_cloud
from clip2point_hf.samples import make_sample_point_cloud
from conftest import make_tiny_tokenizer

LABELS = ["chair", "cone", "lamp"]


def write_point_files(folder, cloud: np.ndarray) -> dict[str, str]:
    """The cone as a point file of every type, plus a one-triangle-fan mesh of every mesh type."""
    files = {}
    np.save(folder / "c.npy", cloud)
    np.savez(folder / "c.npz", points=cloud)
    np.savetxt(folder / "c.txt", np.hstack([cloud, np.zeros_like(cloud)]), delimiter=",")  # x,y,z,nx,ny,nz
    np.savetxt(folder / "c.xyz", cloud)
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(cloud)}\n"
    header += "property float x\nproperty float y\nproperty float z\nend_header\n"
    (folder / "points.ply").write_bytes(header.encode() + cloud.astype("<f4").tobytes())
    files |= {k: str(folder / k) for k in ("c.npy", "c.npz", "c.txt", "c.xyz", "points.ply")}
    # A tetrahedron as OBJ, OFF (glued header), ASCII PLY and binary STL.
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    f = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]
    (folder / "t.obj").write_text(
        "".join(f"v {a} {b} {c}\n" for a, b, c in v)
        + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f)
    )
    (folder / "t.off").write_text(
        "OFF4 4 0\n"
        + "".join(f"{a} {b} {c}\n" for a, b, c in v)
        + "".join(f"3 {a} {b} {c}\n" for a, b, c in f)
    )
    ply = "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
    ply += "element face 4\nproperty list uchar int vertex_indices\nend_header\n"
    ply += "".join(f"{a} {b} {c}\n" for a, b, c in v) + "".join(f"3 {a} {b} {c}\n" for a, b, c in f)
    (folder / "t.ply").write_text(ply)
    stl = b"\0" * 80 + struct.pack("<I", len(f))
    for tri in f:
        stl += struct.pack("<12fH", 0, 0, 0, *v[list(tri)].ravel(), 0)
    (folder / "t.stl").write_bytes(stl)
    return files | {k: str(folder / k) for k in ("t.obj", "t.off", "t.ply", "t.stl")}


def expected_scores(tiny_model_dir, cloud: np.ndarray) -> dict[str, float]:
    """Zero-shot scores computed directly with the model and processor: the softmax of the model's CLIP-scaled
    logits, exactly as `CLIPModel(...).logits_per_image.softmax(-1)`."""
    model = CLIP2PointModel.from_pretrained(tiny_model_dir).eval()
    processor = CLIP2PointProcessor.from_pretrained(tiny_model_dir)
    batch = processor([cloud], text=[f"image of a {label}" for label in LABELS])
    with torch.no_grad():
        out = model(**batch)
    scores = out.logits_per_point_cloud.softmax(-1)[0]
    # Independently of the model's own scaling: CLIP's scale times the mean over the views of the cosines.
    cosines = torch.einsum("bvd,kd->bk", out.view_embeds, out.text_embeds) / batch["pixel_values"].shape[1]
    torch.testing.assert_close(scores, (model.logit_scale.exp() * cosines).softmax(-1)[0], atol=1e-6, rtol=0)
    return dict(zip(LABELS, scores.tolist(), strict=True))


def test_pipeline_reads_every_file_type_and_matches_the_model(tiny_model_dir, tmp_path):
    cloud = make_sample_point_cloud("cone", 500, seed=1)
    files = write_point_files(tmp_path, cloud)
    classifier = pipeline("zero-shot-point-cloud-classification", model=str(tiny_model_dir))
    inputs = [*files.values(), cloud]
    results = classifier(inputs, candidate_labels=LABELS, batch_size=4)
    assert len(results) == len(inputs)
    for name, ranked in zip([*files, "array"], results, strict=True):
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True), name
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert {r["label"] for r in ranked} == set(LABELS)
    # The point files hold the same cloud: identical answers, equal to the direct computation.
    direct = expected_scores(tiny_model_dir, cloud)
    for name in ("c.npy", "c.npz", "c.txt", "c.xyz", "points.ply", "array"):
        ranked = results[[*files, "array"].index(name)]
        assert {r["label"]: r["score"] for r in ranked} == pytest.approx(direct, abs=1e-5), name
    # Meshes are sampled on their surface: every point of the tetrahedron satisfies x, y, z >= 0, x+y+z <= 1.
    for name in ("t.obj", "t.off", "t.ply", "t.stl"):
        points = read_point_cloud(files[name], num_points=300)
        assert points.shape == (300, 3) and (points >= -1e-6).all() and (points.sum(1) <= 1 + 1e-5).all()
    single = classifier(files["c.npy"], candidate_labels=["chair", "cone"])
    assert [r["label"] for r in single] and len(single) == 2


def test_pipeline_rejects_bad_labels_and_files(tiny_model_dir, tmp_path):
    classifier = pipeline("zero-shot-point-cloud-classification", model=str(tiny_model_dir))
    cloud = make_sample_point_cloud("cup", 300)
    with pytest.raises(ValueError, match="candidate_labels"):
        classifier(cloud, candidate_labels=[])
    with pytest.raises(ValueError, match="duplicates"):
        classifier(cloud, candidate_labels=["cup", "cup"])
    with pytest.raises(ValueError, match="required"):
        classifier(cloud)
    (tmp_path / "x.vtk").write_text("nope")
    with pytest.raises(ValueError, match=r"x\.vtk: unsupported file type"):
        classifier(str(tmp_path / "x.vtk"), candidate_labels=LABELS)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"bad\.npy"):
        classifier(str(tmp_path / "bad.npy"), candidate_labels=LABELS)
    np.save(tmp_path / "nan.npy", np.full((10, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        classifier(str(tmp_path / "nan.npy"), candidate_labels=LABELS)


# --------------------------------------------------------------------------------------------------------- CLI


def run_cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "clip2point_apps.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def assert_user_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def run_cli_in_process(capsys, *args):
    """The same entry point without a new interpreter (for the many error cases)."""
    from clip2point_apps.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_cli_classify_and_render(tiny_model_dir, tmp_path, capsys):
    cloud = make_sample_point_cloud("chair", 400)
    files = write_point_files(tmp_path, cloud)
    result = run_cli(
        "classify",
        files["c.npy"],
        files["t.obj"],
        "--labels",
        "chair,cone,lamp",
        "--model",
        tiny_model_dir,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    direct = expected_scores(tiny_model_dir, cloud)
    assert {r["label"]: r["score"] for r in answers[files["c.npy"]]} == pytest.approx(direct, abs=1e-5)

    result = run_cli("render", files["c.npy"], "--views", "6", "-o", tmp_path / "v.png")
    assert result.returncode == 0, result.stderr
    from PIL import Image

    image = Image.open(tmp_path / "v.png")
    assert image.size[0] > 5 * 224 and np.asarray(image).min() < 100  # 5 columns of views, dark points

    assert_user_error(
        run_cli("classify", files["c.npy"], "--labels", ",", "--model", tiny_model_dir), "--labels"
    )  # the option typed, not the pipeline's keyword
    assert_user_error(
        run_cli("classify", files["c.npy"], "--labels", "a,a", "--model", tiny_model_dir), "duplicates"
    )
    assert_user_error(
        run_cli("classify", tmp_path / "absent.ply", "--labels", "a,b", "--model", tiny_model_dir),
        "absent.ply",
    )
    (tmp_path / "scan.vtk").write_text("x")
    assert_user_error(run_cli_in_process(capsys, "render", tmp_path / "scan.vtk"), "unsupported file type")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    assert_user_error(
        run_cli("classify", files["c.npy"], "--labels", "a,b", "--model", broken), "broken-model"
    )


STARTUP_PROBE = """
import contextlib, io, json, sys
from clip2point_apps.cli import main

answers = []
for argv in (["--help"], ["classify", "--lables", "x"], ["classify", "missing.ply", "--labels", "a,b"]):
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    answers.append([code, stderr.getvalue()])
loaded = sorted(name for name in ("torch", "transformers") if name in sys.modules)
import clip2point_hf  # the control: the library itself loads both
control = sorted(name for name in ("torch", "transformers") if name in sys.modules)
print(json.dumps({"answers": answers, "loaded": loaded, "control": control}))
"""


def test_cli_answers_help_typos_and_missing_files_before_torch_loads(tmp_path):
    """What a fresh interpreter has imported once the command answered (its start-up time: BENCHMARKS.md)."""
    result = subprocess.run(
        [sys.executable, "-c", STARTUP_PROBE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["loaded"] == [] and probe["control"] == ["torch", "transformers"]
    (help_code, _), (typo_code, typo), (missing_code, missing) = probe["answers"]
    assert help_code == 0
    assert (typo_code, typo) == (
        2,
        "clip2point classify: error: unrecognized option --lables (did you mean --labels?)\n",
    )
    assert (missing_code, missing) == (2, "clip2point classify: error: missing.ply: file not found\n")


def test_cli_evaluate_takes_the_evaluations_options(capsys):
    """One declaration per option: `clip2point evaluate` hands its options to the evaluation's own parser."""
    result = run_cli_in_process(capsys, "evaluate", "--dataset", "d", "--modle", "m")
    assert_user_error(
        result, "clip2point evaluate: error: unrecognized option --modle (did you mean --model?)"
    )
    with pytest.raises(SystemExit) as exit:
        run_cli_in_process(capsys, "evaluate", "--help")
    assert exit.value.code == 0
    assert "usage: clip2point evaluate" in capsys.readouterr().out


def test_cli_bug_keeps_its_traceback_and_only_user_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import clip2point_apps.cli as cli
    from clip2point_hf.errors import DatasetFormatError

    np.save(tmp_path / "c.npy", make_sample_point_cloud("cone", 100))

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_render", bug)
    with pytest.raises(
        KeyError, match="a bug"
    ):  # not turned into one line and exit 2: Python prints it, exit 1
        cli.main(["render", str(tmp_path / "c.npy")])
    assert "error" not in capsys.readouterr().err

    def user_error(args):
        raise DatasetFormatError(args.file, "not a cloud")

    monkeypatch.setattr(cli, "cmd_render", user_error)
    assert_user_error(run_cli_in_process(capsys, "render", tmp_path / "c.npy"), "c.npy: not a cloud")


@pytest.mark.slow  # convert and push end to end
def test_cli_convert_and_push_dry_run(tmp_path, capsys):
    from test_conversion import random_openai_clip, random_visual

    state = random_openai_clip()
    torch.save(state, tmp_path / "clip.pt")
    torch.save({**random_visual("point_model.", 5), "weights": torch.tensor(1.0)}, tmp_path / "best_eval.pth")
    make_tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    result = run_cli(
        "convert",
        tmp_path / "best_eval.pth",
        "-o",
        tmp_path / "converted",
        "--clip",
        tmp_path / "clip.pt",
        "--tokenizer",
        tmp_path / "tokenizer",
    )
    assert result.returncode == 0, result.stderr
    assert "CLIP2PointModel (pretraining checkpoint)" in result.stdout
    assert_user_error(
        run_cli("convert", tmp_path / "best_eval.pth", "-o", tmp_path / "x"), "--clip is required"
    )

    results = {
        "dataset": "ModelNet40",
        "split": "test",
        "overall_accuracy": 0.4938,
        "mean_class_accuracy": 0.4512,
        "num_views": 6,
        "num_examples": 2468,
        "class_names": [f"c{i}" for i in range(40)],
        "per_class_accuracy": {f"c{i}": 0.5 for i in range(40)},
    }
    (tmp_path / "zs.json").write_text(json.dumps(results))
    export = tmp_path / "export"
    result = run_cli(
        "push",
        tmp_path / "converted",
        "--repo",
        "org/clip2point",
        "--results",
        tmp_path / "zs.json",
        "--output",
        export,
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    assert "nothing was uploaded" in result.stdout
    for name in (
        "model.safetensors",
        "config.json",
        "modeling_clip2point.py",
        "processing_clip2point.py",
        "tokenizer.json",
        "README.md",
    ):
        assert (export / name).is_file(), name
    # Without --dry-run the Hub is unreachable here: one line, the local folder is named.
    assert_user_error(
        run_cli("push", tmp_path / "converted", "--repo", "org/clip2point", "--output", export), str(export)
    )


def test_model_card_yaml_carries_the_result_numbers(tiny_model_dir):
    def scope(dataset, num_examples, num_classes):  # what was scored: the whole test split, every class
        names = [f"c{i}" for i in range(num_classes)]
        return {
            "dataset_name": dataset,
            "num_examples": num_examples,
            "class_names": names,
            "per_class_accuracy": dict.fromkeys(names, 0.5),
        }

    results = [
        {
            "split": "test",
            "overall_accuracy": 0.4938,
            "mean_class_accuracy": 0.4512,
            **scope("ModelNet40", 2468, 40),
        },
        {
            "dataset_id": "scanobjectnn",
            "split": "test",
            "overall_accuracy": 0.25,
            "mean_class_accuracy": 0.2,
            **scope("ScanObjectNN PB_T50_RS", 2882, 15),
        },
    ]
    model = CLIP2PointModel.from_pretrained(tiny_model_dir)
    card = build_model_card(
        model, CLIP2PointProcessor.from_pretrained(tiny_model_dir), results, repo_id="org/clip2point"
    )
    text = str(card)
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["library_name"] == "transformers" and "point-cloud" in metadata["tags"]
    values = {
        (r["dataset"]["name"], m["type"]): m["value"]
        for r in metadata["model-index"][0]["results"]
        for m in r["metrics"]
    }
    assert values == {
        ("ModelNet40", "accuracy"): 49.38,
        ("ModelNet40", "mean_class_accuracy"): 45.12,
        ("ScanObjectNN PB_T50_RS", "accuracy"): 25.0,
        ("ScanObjectNN PB_T50_RS", "mean_class_accuracy"): 20.0,
    }
    assert "| ModelNet40 | test |" in text and "never on a test set" in text


def test_exported_folder_loads_as_remote_code_and_matches(tiny_model_dir, tmp_path):
    folder = export_hub_folder(tiny_model_dir, tmp_path / "export", repo_id="org/clip2point")
    verify_hub_folder(folder, reference_dir=tiny_model_dir)  # raises if anything differs
    (folder / "modeling_clip2point.py").unlink()
    with pytest.raises(ValueError, match=r"modeling_clip2point\.py"):
        verify_hub_folder(folder)


def test_cli_evaluate_writes_results_that_the_card_reads(tiny_model_dir, tmp_path):
    import csv

    from clip2point_apps.hub import read_results

    tetra = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    faces = "f 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
    for i in range(2):
        for name, scale in (("tetra", (1, 1, 1)), ("flat", (3, 0.2, 1))):
            path = tmp_path / "meshes" / name / "test" / f"{name}{i}.obj"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in tetra * scale * (1 + i)) + faces)
    out = tmp_path / "zs"
    result = run_cli(
        "evaluate", "--dataset", tmp_path / "meshes", "--model", tiny_model_dir, "--output_dir", out
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "zero_shot_results.json").read_text())
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["num_examples"] == 4
    correct = [r["label"] == r["prediction"] for r in rows]
    assert summary["overall_accuracy"] == pytest.approx(sum(correct) / 4)
    assert (out / "confusion_matrix.png").is_file()
    (card_result,) = read_results([out / "zero_shot_results.json"])
    assert card_result["dataset"] == "meshes" and card_result["num_views"] == "reference6"


def test_card_carries_the_arguments_the_training_scripts_write(tiny_model_dir, tmp_path):
    """`TrainingRun.record_config` writes the run's arguments beside the saved model; the exported card shows
    them under Training (it used to look for a file no script writes, so no card had them)."""
    import shutil

    from clip2point_apps.arguments import RUN_ARGS_FILE
    from clip2point_apps.tracking import write_json

    bare = export_hub_folder(tiny_model_dir, tmp_path / "bare", repo_id="org/clip2point")
    assert "## Training" not in (bare / "README.md").read_text()
    assert "`run_args.json` (written by this package's training scripts)" in (bare / "README.md").read_text()

    run = shutil.copytree(tiny_model_dir, tmp_path / "run")
    write_json(run / RUN_ARGS_FILE, {"learning_rate": 0.00123, "seed": 7, "views": "reference6"})
    assert RUN_ARGS_FILE == "run_args.json"  # the name the scripts' tests read (tests/test_scripts.py)
    card = (export_hub_folder(run, tmp_path / "export", repo_id="org/clip2point") / "README.md").read_text()
    training = card.split("## Training", 1)[1]
    assert '"learning_rate": 0.00123' in training and '"seed": 7' in training
    assert "Trained with this package's scripts" in card
