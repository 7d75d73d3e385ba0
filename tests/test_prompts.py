"""Class-name prompt spellings (plain, and distinct for classifiers) and prompt templates."""

from __future__ import annotations

import pytest

from clip2point_hf.prompts import ENSEMBLE_TEMPLATES, prompt_name, prompt_names, resolve_templates


def test_prompt_names():
    assert prompt_name("night_stand") == "night stand"
    assert prompt_names(["tv_stand", "flower_pot", "glass_box", "range_hood", "airplane"]) == [
        "tv stand",
        "flower pot",
        "glass box",
        "range hood",
        "airplane",
    ]
    assert prompt_names(["bird1", "myScissor", "two_balls", "dino_ske"]) == [
        "bird",
        "scissors",
        "two balls",
        "dinosaur skeleton",
    ]
    assert prompt_names(["a_b"], overrides={"a_b": "custom"}) == ["custom"]


def test_distinct_prompt_names_keep_distinguishing_suffixes():
    assert prompt_names(["night_stand", "bird1", "bird2", "myScissor", "dog1"], distinct=True) == [
        "night stand",
        "bird 1",
        "bird 2",
        "scissors",
        "dog",
    ]
    with pytest.raises(ValueError, match="duplicate prompts"):
        prompt_names(["night_stand", "night stand"], distinct=True)


def test_resolve_templates():
    assert resolve_templates(None) == resolve_templates("reference") == ["image of a {}"]
    assert resolve_templates(["ensemble"]) == ENSEMBLE_TEMPLATES
    assert resolve_templates("a {} shape") == ["a {} shape"]
    with pytest.raises(ValueError, match="must contain"):
        resolve_templates(["no placeholder"])


def test_reference_naming_spells_shapenet55_as_the_authors_pretraining_script():
    from clip2point_hf.data.names import MODELNET40_CLASSES, SCANOBJECTNN_CLASSES, SHAPENET55_SYNSETS

    shapenet = list(SHAPENET55_SYNSETS.values())
    # The validation prompts of the authors' pretraining.py, in synset order (transcribed from their code).
    theirs = [
        "airplane",
        "ashcan",
        "bag",
        "basket",
        "bathtub",
        "bed",
        "bench",
        "birdhouse",
        "bookshelf",
        "bottle",
        "bowl",
        "bus",
        "cabinet",
        "camera",
        "can",
        "cap",
        "car",
        "cellular_telephone",
        "chair",
        "clock",
        "computer_keyboard",
        "dishwasher",
        "display",
        "earphone",
        "faucet",
        "file",
        "guitar",
        "helmet",
        "jar",
        "knife",
        "lamp",
        "laptop",
        "loudspeaker",
        "mailbox",
        "microphone",
        "microwave",
        "motorcycle",
        "mug",
        "piano",
        "pillow",
        "pistol",
        "pot",
        "printer",
        "remote_control",
        "rifle",
        "rocket",
        "skateboard",
        "sofa",
        "stove",
        "table",
        "telephone",
        "tower",
        "train",
        "vessel",
        "washer",
    ]
    assert prompt_names(shapenet, naming="reference") == [n.replace("_", " ") for n in theirs]
    ours = prompt_names(shapenet)
    changed = {a: b for a, b in zip(ours, prompt_names(shapenet, naming="reference")) if a != b}
    assert changed == {
        "trash bin": "ashcan",
        "cellphone": "cellular telephone",
        "keyboard": "computer keyboard",
        "file cabinet": "file",
        "motorbike": "motorcycle",
        "flowerpot": "pot",
        "watercraft": "vessel",
    }
    # Their zeroshot.py spells ModelNet40 and ScanObjectNN as we do (ModelNet40's keyboard stays keyboard).
    for classes in (MODELNET40_CLASSES, SCANOBJECTNN_CLASSES):
        assert prompt_names(classes, naming="reference") == prompt_names(classes)
    assert prompt_names(shapenet, naming="reference", overrides={"trash_bin": "bin"})[1] == "bin"
    with pytest.raises(ValueError, match="prompt naming"):
        prompt_names(shapenet, naming="wordnet")
