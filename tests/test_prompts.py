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
