"""Model cards: converted weights state their provenance apart from this package's guarantees, and every
evaluation is published under the dataset as found (objects scored, split, classes present)."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from clip2point_apps.hub import HubFolderError, build_model_card, export_hub_folder, read_results
from clip2point_hf import CLIP2PointFeatureExtractor, CLIP2PointModel, CLIP2PointProcessor
from clip2point_hf.conversion_clip2point import PROVENANCE_FILE, convert_checkpoint, load_openai_clip
from clip2point_hf.testing_utils import make_tiny_config
from conftest import make_tiny_tokenizer
from test_conversion import random_openai_clip
from test_conversion_reference_layouts import save_pretraining

MODELNET40 = [f"class{i}" for i in range(40)]


def result(dataset_name, split, counts, accuracy=0.5, mean_class=0.4, class_names=MODELNET40, **extra):
    """A zero-shot result as `clip2point_apps.evaluation` writes it; `counts[c]` objects of class c scored."""
    k = len(class_names)
    confusion = [[counts.get(c, 0) if c == r else 0 for c in range(k)] for r in range(k)]
    return {
        "overall_accuracy": accuracy,
        "mean_class_accuracy": mean_class,
        "per_class_accuracy": {n: (1.0 if counts.get(i) else None) for i, n in enumerate(class_names)},
        "confusion_matrix": confusion,
        "class_names": list(class_names),
        "num_examples": sum(counts.values()),
        "dataset": f"/data/{dataset_name}",
        "dataset_name": dataset_name,
        "split": split,
        "views": "reference6",
        **extra,
    }


def spread(total: int, classes: int) -> dict[int, int]:
    return {c: total // classes + (1 if c < total % classes else 0) for c in range(classes)}


def card_sections(text: str) -> dict[str, str]:
    body = text.split("---", 2)[2]
    return {part.split("\n", 1)[0].strip(): part.split("\n", 1)[1] for part in body.split("\n## ")[1:]}


def model_index(text: str) -> list[dict]:
    return yaml.safe_load(text.split("---")[1])["model-index"][0]["results"]


@pytest.fixture(scope="module")
def tiny():
    model = CLIP2PointModel(make_tiny_config(num_views=6))
    return model, CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(views="reference6", image_size=32), make_tiny_tokenizer()
    )


def test_converted_checkpoint_card_states_provenance_apart_from_the_package_protocol(tmp_path):
    openai_state = random_openai_clip()
    checkpoint = tmp_path / "best_test.pth"
    save_pretraining(checkpoint)  # DataParallel state dict with the view selector, as pretraining.py saves
    conversion = convert_checkpoint(checkpoint, clip=load_openai_clip(openai_state))
    conversion.save_pretrained(tmp_path / "converted", make_tiny_tokenizer())
    (tmp_path / "zs.json").write_text(json.dumps(result("ModelNet40", "test", spread(2468, 40))))

    export = export_hub_folder(tmp_path / "converted", tmp_path / "export", [tmp_path / "zs.json"])
    assert json.loads((export / PROVENANCE_FILE).read_text()) == conversion.provenance
    text = (export / "README.md").read_text()
    sections = card_sections(text)
    origin = sections["Provenance of these weights"]
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert "Converted with `clip2point convert` (clip2point_hf " in origin
    assert "the authors' release of CLIP2Point (https://github.com/tyhuang0428/CLIP2Point)" in origin
    assert f"- checkpoint: `best_test.pth` (sha256 `{digest}`), pretraining layout" in origin
    assert "- selection by the authors: on ModelNet40 test accuracy (the authors' best_test.pth)" in origin
    assert "does not apply to these weights" in origin
    assert "- views of the checkpoint's view selector (carried into the processor): reference10" in origin
    assert "- set aside: image_model.* (" in origin and "- set aside: selector.view_selector." in origin
    assert "never on a test set" not in origin  # the package's guarantee is not claimed for these weights
    guarantee = sections["What this package's scripts guarantee"]
    assert guarantee.strip().startswith(
        "These hold for weights trained with this package's scripts, not for the converted weights above."
    )
    assert "never on a test set" in guarantee
    assert CLIP2PointFeatureExtractor.from_pretrained(export).views == "reference10"


def test_cards_without_provenance_say_what_is_known(tiny):
    model, processor = tiny
    unknown = card_sections(str(build_model_card(model, processor)))["Provenance of these weights"]
    assert unknown.strip().startswith("Not recorded: this folder has neither `provenance.json`")
    trained = card_sections(str(build_model_card(model, processor, training_notes="## Training\n\nargs")))
    assert trained["Provenance of these weights"].strip() == (
        "Trained with this package's scripts (arguments under Training below)."
    )
    assert (
        trained["What this package's scripts guarantee"]
        .strip()
        .startswith("These hold for weights trained with this package's scripts.")
    )


def test_model_index_names_each_dataset_as_found(tiny, tmp_path):
    model, processor = tiny
    results = [
        result("ModelNet40", "test", spread(2468, 40), 0.4938, 0.4512, dataset_id="modelnet40"),
        result("ModelNet40", "test", spread(120, 12), 0.61, 0.6, dataset_id="modelnet40"),  # partial download
        result("ModelNet40", "test", spread(2468, 39), 0.5, 0.5),  # every object of 39 classes: not complete
        result("ModelNet40", "train", spread(9843, 40), 0.55, 0.5),
        result("meshes", "test", spread(4, 2), 0.75, 0.75, class_names=["tetra", "flat"]),
    ]
    results[1]["up_axis"] = "z"  # the card states the up axis each evaluation used
    for i, r in enumerate(results):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    read = read_results([tmp_path / f"r{i}.json" for i in range(len(results))])
    text = str(build_model_card(model, processor, read, repo_id="org/clip2point"))
    metadata = yaml.safe_load(text.split("---")[1])
    entries = [(e["dataset"], {m["type"]: m["value"] for m in e["metrics"]}) for e in model_index(text)]
    partial = "ModelNet40 test subset (120 of 2468 objects, 12 of 40 classes)"
    missing_class = "ModelNet40 test subset (2468 of 2468 objects, 39 of 40 classes)"
    expected = [
        ({"name": "ModelNet40", "type": "modelnet40", "split": "test"}, 2468, 40, 49.38, 45.12),
        ({"name": partial, "type": partial, "split": "test"}, 120, 12, 61.0, 60.0),
        ({"name": missing_class, "type": missing_class, "split": "test"}, 2468, 39, 50.0, 50.0),
        ({"name": "ModelNet40", "type": "ModelNet40", "split": "train"}, 9843, 40, 55.0, 50.0),
        (
            {
                "name": "meshes test (4 objects, 2 of 2 classes)",
                "type": "meshes test (4 objects, 2 of 2 classes)",
                "split": "test",
            },
            4,
            2,
            75.0,
            75.0,
        ),
    ]
    assert len(entries) == len(expected)
    for (dataset, metrics), (fields, scored, present, acc, macc) in zip(entries, expected, strict=True):
        for key, value in fields.items():
            assert dataset[key] == value, (key, dataset)
        classes = 2 if fields["name"].startswith("meshes") else 40
        assert dataset["args"] == {"objects_scored": scored, "classes_present": present, "classes": classes}
        assert metrics == {"accuracy": acc, "mean_class_accuracy": macc}
    assert metadata["datasets"] == ["ModelNet40", "modelnet40"]  # only whole splits name a dataset
    assert f"| {partial} | test | 120 | 12 of 40 | reference6 | z | 61.00 | 60.00 |" in text
    assert "| ModelNet40 | train | 9843 | 40 of 40 | reference6 | not recorded | 55.00 | 50.00 |" in text


def test_result_files_that_do_not_say_what_was_scored_are_refused(tmp_path):
    r = result("ModelNet40", "test", spread(2468, 40))
    del r["num_examples"]
    (tmp_path / "old.json").write_text(json.dumps(r))
    with pytest.raises(HubFolderError, match=r"old\.json: result has no 'num_examples'"):
        read_results([tmp_path / "old.json"])


@pytest.mark.parametrize(
    ("kind", "task_type"), [("zero-shot", "zero-shot-classification"), ("fine-tuned", "image-classification")]
)
def test_each_result_is_published_under_the_task_that_ran(tiny, tmp_path, kind, task_type):
    """`eval_results.json` of a fine-tuned classifier is not a zero-shot result: the model index says which ran."""
    model, processor = tiny
    path = tmp_path / ("zero_shot_results.json" if kind == "zero-shot" else "eval_results.json")
    path.write_text(json.dumps(result("ModelNet40", "test", spread(2468, 40), classifier=kind)))
    text = str(build_model_card(model, processor, read_results([path])))
    tasks = {entry["task"]["type"] for entry in model_index(text)}
    assert tasks == {task_type}
