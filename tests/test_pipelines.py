"""Both point-cloud pipelines as transformers users meet them: the fine-tuned `point-cloud-classification` task
against the model's own forward, `(B, N, C)` arrays, `Pipeline.save_pretrained`, and loading either task with
`trust_remote_code=True` in a fresh process where `clip2point_hf` cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import pipeline

import clip2point_hf  # noqa: F401  (registers the tasks)
from clip2point_apps.hub import PIPELINE_CODE_FILES, export_hub_folder
from clip2point_apps.web import write_preview_glb
from clip2point_hf import (
    CLIP2PointFeatureExtractor,
    CLIP2PointForPointCloudClassification,
    CLIP2PointModel,
    CLIP2PointProcessor,
)
from clip2point_hf.point_files import read_point_cloud
from clip2point_hf.samples import make_sample_point_cloud
from conftest import make_tiny_clip, make_tiny_config, make_tiny_tokenizer
from test_data_helpers import CUBE_TRIS, CUBE_V, write_off

CLASSES = ["chair", "cone", "lamp", "cup"]
LABELS = ["chair", "cone", "lamp"]


def _processor(image_size: int) -> CLIP2PointProcessor:
    return CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(views="reference6", image_size=image_size, num_points=128),
        make_tiny_tokenizer(),
    )


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A fine-tuned GDPA classifier (random adapters) over CLASSES, saved as finetune_gdpa.py saves it."""
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    model = CLIP2PointForPointCloudClassification.from_clip(make_tiny_clip(), num_views=6)
    model.set_class_names(CLASSES, make_tiny_tokenizer(), ["image of a {}"])
    with torch.no_grad():  # spread the logits so that the ranking is not a near-tie
        model.classifier_logit_scale.fill_(3.0)
    model.save_pretrained(folder)
    _processor(model.config.vision_config.image_size).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def zero_shot_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zero-shot")
    torch.manual_seed(0)
    model = CLIP2PointModel(make_tiny_config(num_views=6))
    model.save_pretrained(folder)
    _processor(model.config.vision_config.image_size).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def weighted_zero_shot_dir(tmp_path_factory):
    """A zero-shot model from CLIP with view weights, a template ensemble and a logit scale (e^3.5) that spreads
    the scores well away from uniform and from one-hot, so that any scaling mistake shows."""
    folder = tmp_path_factory.mktemp("zero-shot-weighted")
    torch.manual_seed(0)
    model = CLIP2PointModel.from_clip(
        make_tiny_clip(),
        num_views=6,
        view_weights=[2.0, 1.0, 1.0, 1.0, 0.5, 0.5],
        prompt_templates=["image of a {}", "a depth map of a {}."],
    )
    with torch.no_grad():
        model.logit_scale.fill_(3.5)
    model.save_pretrained(folder)
    _processor(model.config.vision_config.image_size).save_pretrained(folder)
    return folder


def test_zero_shot_pipeline_scores_are_the_softmax_of_the_models_logits(weighted_zero_shot_dir):
    """`model(**batch).logits_per_point_cloud.softmax(-1)` is what the pipeline answers, as for CLIP's
    `logits_per_image` and the zero-shot-image-classification pipeline."""
    folder = weighted_zero_shot_dir
    model = CLIP2PointModel.from_pretrained(folder).eval()
    processor = CLIP2PointProcessor.from_pretrained(folder)
    clf = pipeline("zero-shot-point-cloud-classification", model=str(folder))
    spread = []
    for cloud in clouds():
        # One template: the processor tokenises the prompts, the model's forward scores them.
        batch = processor([cloud], text=[f"image of a {label}" for label in LABELS])
        with torch.no_grad():
            scores = model(**batch).logits_per_point_cloud.softmax(-1)[0]
        got = clf(cloud, candidate_labels=LABELS, hypothesis_template="image of a {}")
        assert {r["label"]: r["score"] for r in got} == pytest.approx(
            dict(zip(LABELS, scores.tolist(), strict=True)), abs=1e-5
        )
        spread.append(float(scores.max() - scores.min()))
        # The saved ensemble (the pipeline's default): its class embeddings passed as `text_embeds`.
        with torch.no_grad():
            embeds = model.encode_class_prompts(processor.tokenizer, LABELS)
            ensemble = model(pixel_values=batch["pixel_values"], text_embeds=embeds).logits_per_point_cloud
        got = clf(cloud, candidate_labels=LABELS)
        assert {r["label"]: r["score"] for r in got} == pytest.approx(
            dict(zip(LABELS, ensemble.softmax(-1)[0].tolist(), strict=True)), abs=1e-5
        )
    assert all(0.2 < x < 0.95 for x in spread), spread  # neither near-uniform nor one-hot: the scale matters


def direct_logits(folder, clouds) -> torch.Tensor:
    """The classifier's logits through the processor and the model's forward (no pipeline); each cloud is
    sampled on its own, from the processor's seed, as the pipeline does."""
    model = CLIP2PointForPointCloudClassification.from_pretrained(folder).eval()
    processor = CLIP2PointProcessor.from_pretrained(folder)
    pixel_values = torch.cat([processor(cloud)["pixel_values"] for cloud in clouds])
    with torch.no_grad():
        return model(pixel_values=pixel_values).logits


def assert_same_answers(got, want, abs=1e-5) -> None:
    """Pipeline answers (a ranked list per input, or one ranked list) agree: labels in order, scores close."""
    if want and isinstance(want[0], dict):
        got, want = [got], [want]
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert [r["label"] for r in a] == [r["label"] for r in b]
        assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=abs)


def clouds(count: int = 3) -> list[np.ndarray]:
    return [
        make_sample_point_cloud(kind, 300, seed=i) for i, kind in enumerate(["cone", "cup", "lamp"][:count])
    ]


def test_classification_pipeline_follows_image_classification(classifier_dir):
    clf = pipeline("point-cloud-classification", model=str(classifier_dir))
    x = clouds(3)
    logits = direct_logits(classifier_dir, x)
    expected = {
        "softmax": logits.softmax(-1),
        "sigmoid": logits.sigmoid(),
        "none": logits,
    }
    for function, scores in expected.items():
        results = clf(x, function_to_apply=function, top_k=10)  # top_k above the class count: all classes
        for ranked, row in zip(results, scores, strict=True):
            want = sorted(zip(CLASSES, row.tolist()), key=lambda t: -t[1])
            assert [r["label"] for r in ranked] == [label for label, _ in want]
            assert [r["score"] for r in ranked] == pytest.approx([s for _, s in want], abs=1e-5)
    default = clf(x[0])  # softmax for several labels, top_k 5 -> all 4 classes
    assert [r["score"] for r in default] == pytest.approx(
        sorted(expected["softmax"][0].tolist(), reverse=True)
    )
    assert len(clf(x[0], top_k=2)) == 2 and len(default) == len(CLASSES)
    with pytest.raises(ValueError, match="function_to_apply"):
        clf(x[0], function_to_apply="relu")
    with pytest.raises(ValueError, match="top_k"):
        clf(x[0], top_k=0)


def test_classification_pipeline_defaults_follow_problem_type(classifier_dir):
    clf = pipeline("point-cloud-classification", model=str(classifier_dir))
    logits = direct_logits(classifier_dir, clouds(1))[0]
    clf.model.config.problem_type = "multi_label_classification"
    scores = sorted(logits.sigmoid().tolist(), reverse=True)
    assert [r["score"] for r in clf(clouds(1)[0])] == pytest.approx(scores, abs=1e-5)
    clf.model.config.problem_type = "regression"
    assert [r["score"] for r in clf(clouds(1)[0])] == pytest.approx(
        sorted(logits.tolist(), reverse=True), abs=1e-5
    )


@pytest.mark.parametrize("task", ["point-cloud-classification", "zero-shot-point-cloud-classification"])
def test_both_pipelines_take_the_same_inputs(task, classifier_dir, zero_shot_dir, tmp_path):
    """Files, arrays, lists, a (B, N, C) array as B clouds, and batching all give the same answers."""
    folder = classifier_dir if task == "point-cloud-classification" else zero_shot_dir
    clf = pipeline(task, model=str(folder))
    kwargs = {"candidate_labels": LABELS} if task.startswith("zero-shot") else {}
    x = clouds(3)
    stacked = np.stack(x)  # (3, 300, 3)
    np.save(tmp_path / "c.npy", x[1])
    one_by_one = [clf(c, **kwargs) for c in x]
    assert_same_answers(clf(stacked, **kwargs), one_by_one)
    assert_same_answers(clf(torch.from_numpy(stacked), batch_size=2, **kwargs), one_by_one)
    assert_same_answers(clf(x, batch_size=3, **kwargs), one_by_one)
    from_file = clf(str(tmp_path / "c.npy"), **kwargs)
    assert_same_answers(from_file, clf(read_point_cloud(tmp_path / "c.npy"), **kwargs))
    assert_same_answers(from_file, one_by_one[1])


def run_without_package(script: str, tmp_path) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter where importing clip2point_hf fails."""
    code = 'import sys\nsys.modules["clip2point_hf"] = None  # the package must not be needed\n' + script
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


REMOTE = textwrap.dedent(
    """
    import json
    import numpy as np
    from transformers import pipeline
    clf = pipeline(model=folder, trust_remote_code=True)  # the task comes from config.custom_pipelines
    assert "clip2point_hf" not in type(clf).__module__, type(clf).__module__
    assert "clip2point_hf" not in type(clf.model).__module__, type(clf.model).__module__
    results = clf(np.load(clouds), **kwargs)
    from_files = clf(files, **kwargs)  # read by the folder's own copies of the file readers
    print(json.dumps({"task": clf.task, "class": type(clf).__name__, "results": results, "from_files": from_files}))
    """
)


def shape_files(folder) -> list[str]:
    """A mesh in OFF and a cloud's preview in GLB: files the Hub copy of the pipeline reads by itself."""
    write_off(folder / "box.off", CUBE_V, CUBE_TRIS)
    write_preview_glb(folder / "lamp.glb", clouds(3)[2])
    return [str(folder / "box.off"), str(folder / "lamp.glb")]


def run_remote(folder, kwargs: dict, tmp_path) -> dict:
    """The pipeline's answers on two clouds and two files, loaded from `folder` in a process without
    clip2point_hf."""
    np.save(tmp_path / "clouds.npy", np.stack(clouds(2)))
    code = f"folder, clouds, kwargs = {str(folder)!r}, {str(tmp_path / 'clouds.npy')!r}, {kwargs!r}\n"
    code += f"files = {shape_files(tmp_path)!r}\n" + REMOTE
    result = run_without_package(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "task, kwargs",
    [
        ("point-cloud-classification", {"top_k": 3}),
        ("zero-shot-point-cloud-classification", {"candidate_labels": LABELS}),
    ],
)
def test_hub_export_loads_as_a_remote_code_pipeline(task, kwargs, classifier_dir, zero_shot_dir, tmp_path):
    folder = classifier_dir if task == "point-cloud-classification" else zero_shot_dir
    export = export_hub_folder(folder, tmp_path / "export", repo_id="org/clip2point")
    assert set(PIPELINE_CODE_FILES) <= set(os.listdir(export))
    custom = json.loads((export / "config.json").read_text())["custom_pipelines"]
    assert list(custom) == [task]
    remote = run_remote(export, kwargs, tmp_path)
    assert remote["task"] == task
    local = pipeline(task, model=str(folder))
    assert_same_answers(remote["results"], local(np.stack(clouds(2)), **kwargs))
    assert_same_answers(remote["from_files"], local(shape_files(tmp_path), **kwargs))


def test_pipeline_save_pretrained_round_trips_without_the_package(zero_shot_dir, tmp_path):
    clf = pipeline("zero-shot-point-cloud-classification", model=str(zero_shot_dir))
    clf.save_pretrained(tmp_path / "saved")
    saved = set(os.listdir(tmp_path / "saved"))
    assert {"processor_config.json", "config.json", *PIPELINE_CODE_FILES} <= saved
    remote = run_remote(tmp_path / "saved", {"candidate_labels": LABELS}, tmp_path)
    assert remote["class"] == "ZeroShotPointCloudClassificationPipeline"
    assert_same_answers(remote["results"], clf(np.stack(clouds(2)), candidate_labels=LABELS))
    assert_same_answers(remote["from_files"], clf(shape_files(tmp_path), candidate_labels=LABELS))


def test_cli_classify_chooses_the_pipeline_from_the_config(zero_shot_dir, classifier_dir, tmp_path, capsys):
    from clip2point_apps.cli import main

    np.save(tmp_path / "c.npy", clouds(1)[0])
    file = str(tmp_path / "c.npy")
    assert main(["classify", file, "--model", str(zero_shot_dir)]) == 2
    assert "--labels is required" in capsys.readouterr().err
    assert main(["classify", file, "--model", str(classifier_dir), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)[file]
    assert_same_answers(answer, pipeline("point-cloud-classification", model=str(classifier_dir))(file))
    assert main(["classify", file, "--model", str(classifier_dir), "--template", "a {}"]) == 2
    assert "zero-shot" in capsys.readouterr().err
