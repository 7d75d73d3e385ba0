"""CLIP2PointProcessor: the feature extractor plus CLIP's tokenizer, routed, saved and loaded as transformers'
processors are (CLIPProcessor is the control for what a processor folder holds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoProcessor, CLIPImageProcessor, CLIPProcessor

from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
from clip2point_hf.processing_clip2point import CLIP2PointProcessor, point_cloud_front_end
from conftest import make_tiny_tokenizer


def clouds(b=2, n=300, seed=0):
    return np.random.default_rng(seed).normal(size=(b, n, 3)).astype("float32")


def small_front_end(**kwargs) -> CLIP2PointFeatureExtractor:
    return CLIP2PointFeatureExtractor(**{"num_points": 64, "image_size": 32, "views": "reference6", **kwargs})


@pytest.fixture(scope="module")
def processor():
    return CLIP2PointProcessor(small_front_end(), make_tiny_tokenizer())


def test_each_input_goes_to_its_component(processor):
    tok, front_end = processor.tokenizer, processor.feature_extractor
    x, text = clouds(), ["image of a chair", "a lamp"]
    batch = processor(x, text=text, device="cpu")
    expected = tok(text, padding=True, return_tensors="pt")
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask"}
    torch.testing.assert_close(batch["input_ids"], expected["input_ids"], rtol=0, atol=0)
    torch.testing.assert_close(batch["attention_mask"], expected["attention_mask"], rtol=0, atol=0)
    torch.testing.assert_close(batch["pixel_values"], front_end(x)["pixel_values"], rtol=0, atol=0)
    assert set(processor(text="image of a cup")) == {"input_ids", "attention_mask"}
    assert set(processor(x)) == {"pixel_values"}
    assert processor.model_input_names == ["pixel_values", "input_ids", "attention_mask"]


def test_call_options_reach_the_right_component(processor):
    x, text = clouds(seed=5), ["image of a chair", "a lamp"]
    padded = processor(x, text=text, padding="max_length", max_length=24, return_tensors="np")
    assert isinstance(padded["pixel_values"], np.ndarray) and padded["input_ids"].shape == (2, 24)
    ten = processor(x, views="reference10")["pixel_values"]
    torch.testing.assert_close(ten, small_front_end(views="reference10")(x)["pixel_values"], rtol=0, atol=0)
    assert processor.feature_extractor.views == "reference6"  # a call's views do not change the saved setting
    with pytest.raises(ValueError, match="point_clouds"):
        processor(text=text, views="reference10")  # render options without clouds are a mistake, not ignored
    with pytest.raises(ValueError, match="point_clouds"):
        processor()


def test_save_and_load_round_trip(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    loaded = CLIP2PointProcessor.from_pretrained(tmp_path)
    assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    x, text = clouds(seed=11), ["image of a chair", "a lamp"]
    a, b = processor(x, text=text), loaded(x, text=text)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # Each component also loads alone from the processor's folder, as CLIPProcessor's do.
    assert AutoFeatureExtractor.from_pretrained(tmp_path).to_dict() == processor.feature_extractor.to_dict()
    assert type(AutoProcessor.from_pretrained(tmp_path)) is CLIP2PointProcessor


def test_the_folder_holds_what_a_clip_processor_folder_holds(tmp_path, processor):
    """Control: a CLIPProcessor over the same tokenizer writes the same kinds of files."""
    processor.save_pretrained(tmp_path / "ours")
    CLIPProcessor(CLIPImageProcessor(), processor.tokenizer).save_pretrained(tmp_path / "clip")
    assert set(os.listdir(tmp_path / "ours")) >= set(os.listdir(tmp_path / "clip"))


def test_the_front_end_of_whatever_auto_processor_returns(tmp_path, processor):
    assert point_cloud_front_end(processor) is processor.feature_extractor
    front_end = small_front_end()
    assert point_cloud_front_end(front_end) is front_end


def test_remote_code_folder_loads_without_the_package(tmp_path, processor):
    """The saved folder carries the code flat; a process that cannot import clip2point_hf loads it with
    trust_remote_code and gives the same tensors."""
    processor.save_pretrained(tmp_path)
    assert {
        "processing_clip2point.py",
        "feature_extraction_clip2point.py",
        "points_clip2point.py",
        "rendering_clip2point.py",
    } <= set(os.listdir(tmp_path))
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"] == "processing_clip2point.CLIP2PointProcessor"
    x = clouds(seed=12)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["clip2point_hf"] = None  # the package must not be needed
        import numpy as np, torch
        from transformers import AutoFeatureExtractor, AutoProcessor
        folder = {str(tmp_path)!r}
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        front_end = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
        for obj in (processor, front_end):
            assert "clip2point_hf" not in type(obj).__module__, type(obj).__module__
        batch = processor(np.load(folder + "/x.npy"), text=["image of a chair", "a lamp"])
        assert torch.equal(front_end(np.load(folder + "/x.npy"))["pixel_values"], batch["pixel_values"])
        torch.save(dict(batch), folder + "/out.pt")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    remote = torch.load(tmp_path / "out.pt", weights_only=True)
    local = processor(x, text=["image of a chair", "a lamp"])
    for key in local:
        torch.testing.assert_close(remote[key], local[key], rtol=0, atol=0)
