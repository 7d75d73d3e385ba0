"""Which weights the demo and `clip2point classify` use: each step of the chain picked from a fake Hub
cache or a local folder, labelled, and never waiting on the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel

from clip2point_apps.weights import (
    CONVERTED_MODEL_ENV,
    DEFAULT_CLIP_ID,
    DEFAULT_MODEL_ID,
    build_classifier,
    converted_model_dir,
    resolve_weights,
)
from clip2point_hf import CLIP2PointFeatureExtractor, CLIP2PointModel, CLIP2PointProcessor
from clip2point_hf.errors import ModelLoadError
from clip2point_hf.testing_utils import make_tiny_clip, make_tiny_config, make_tiny_tokenizer
from test_loading import LoopbackServer, http_reply, put_in_hub_cache, without_proxies

ROOT = Path(__file__).resolve().parents[1]


def save_clip(folder: Path) -> None:
    torch.manual_seed(1)
    make_tiny_clip().save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)


def save_clip2point(folder: Path) -> None:
    torch.manual_seed(2)
    CLIP2PointModel(make_tiny_config()).save_pretrained(folder)
    CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(image_size=32, views="reference6"), make_tiny_tokenizer()
    ).save_pretrained(folder)


def convert_authors_checkpoint(tmp_path: Path, output: Path) -> None:
    """A folder as `clip2point convert best_eval.pth` writes it (random weights in the authors' layout)."""
    from clip2point_apps.cli import main
    from test_conversion import random_openai_clip, random_visual

    torch.save(random_openai_clip(), tmp_path / "clip.pt")
    torch.save({**random_visual("point_model.", 5), "weights": torch.tensor(1.0)}, tmp_path / "best_eval.pth")
    make_tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    argv = ["convert", tmp_path / "best_eval.pth", "-o", output, "--clip", tmp_path / "clip.pt"]
    assert main([str(a) for a in [*argv, "--tokenizer", tmp_path / "tokenizer"]]) == 0


def first_weight(model) -> torch.Tensor:
    return model.depth_model.embeddings.patch_embedding.weight


def test_default_hub_id_from_the_cache(tmp_path):
    snapshot = put_in_hub_cache(tmp_path / "hub", DEFAULT_MODEL_ID, save_clip2point)
    weights = resolve_weights(converted=tmp_path / "absent", cache_dir=tmp_path / "hub")
    assert (weights.kind, weights.source, weights.folder) == ("clip2point", DEFAULT_MODEL_ID, snapshot)
    assert weights.label == f"CLIP2Point ({DEFAULT_MODEL_ID})" and weights.skipped == ()
    classifier = build_classifier(weights)
    expected = CLIP2PointModel.from_pretrained(snapshot)
    assert torch.equal(first_weight(classifier.model), first_weight(expected))
    assert classifier.front_end.num_views == 6  # the saved processor, not a default one


def test_converted_folder_when_the_default_id_is_absent(tmp_path, monkeypatch):
    folder = tmp_path / "converted"
    convert_authors_checkpoint(tmp_path, folder)
    monkeypatch.setenv(CONVERTED_MODEL_ENV, str(folder))
    assert converted_model_dir() == folder
    put_in_hub_cache(tmp_path / "hub", DEFAULT_CLIP_ID, save_clip)  # CLIP is there too, but comes later
    weights = resolve_weights(cache_dir=tmp_path / "hub")
    assert (weights.kind, weights.folder) == ("clip2point", folder)
    assert weights.label == f"the authors' CLIP2Point best_eval.pth, converted ({folder})"
    assert weights.skipped == (
        f"{DEFAULT_MODEL_ID}: not in the Hub cache, and offline mode is on (HF_HUB_OFFLINE=1)",
    )
    classifier = build_classifier(weights)
    assert torch.equal(first_weight(classifier.model), first_weight(CLIP2PointModel.from_pretrained(folder)))


def test_converted_folder_without_tokenizer_is_skipped_with_the_fix(tmp_path):
    folder = tmp_path / "converted"
    torch.manual_seed(0)
    CLIP2PointModel(make_tiny_config()).save_pretrained(folder)
    weights = resolve_weights(converted=folder, clip=str(tmp_path / "no-clip"), cache_dir=tmp_path / "hub")
    assert weights.untrained
    assert (
        f"{folder}: the folder has no tokenizer (convert with --tokenizer {DEFAULT_CLIP_ID})"
        in weights.skipped
    )


def test_plain_clip_from_the_cache_and_from_a_folder(tmp_path):
    snapshot = put_in_hub_cache(tmp_path / "hub", DEFAULT_CLIP_ID, save_clip)
    weights = resolve_weights(converted=tmp_path / "absent", cache_dir=tmp_path / "hub")
    assert (weights.kind, weights.folder) == ("clip", snapshot)
    assert weights.label == f"CLIP without depth pre-training ({DEFAULT_CLIP_ID})"
    assert weights.skipped == (
        f"{DEFAULT_MODEL_ID}: not in the Hub cache, and offline mode is on (HF_HUB_OFFLINE=1)",
        f"{tmp_path / 'absent'}: no such folder (and not a Hub id of the form org/name)",
    )
    classifier = build_classifier(weights)
    # The depth encoder is CLIP's image tower, untouched by any depth pre-training.
    clip = CLIPModel.from_pretrained(snapshot)
    assert torch.equal(first_weight(classifier.model), clip.vision_model.embeddings.patch_embedding.weight)
    assert classifier.front_end.renderer.image_size == clip.config.vision_config.image_size

    # Any CLIP folder given as --model is used the same way, and named as given.
    save_clip(tmp_path / "my-clip")
    weights = resolve_weights(str(tmp_path / "my-clip"))
    assert weights.label == f"CLIP without depth pre-training ({tmp_path / 'my-clip'})"


def test_nothing_reachable_gives_the_untrained_model(tmp_path):
    weights = resolve_weights(
        converted=tmp_path / "absent", clip="someone/absent-clip", cache_dir=tmp_path / "hub"
    )
    assert weights.untrained and "UNTRAINED" in weights.describe()
    assert len(weights.skipped) == 3 and all("HF_HUB_OFFLINE" in s or "no such" in s for s in weights.skipped)
    scores = build_classifier(weights)(torch.rand(300, 3), candidate_labels=["a", "b"])
    assert sum(r["score"] for r in scores) == pytest.approx(1.0)


def test_a_named_model_is_used_or_refused_never_replaced(tmp_path):
    with pytest.raises(ModelLoadError, match=r"org/absent: not in the Hub cache, and offline mode is on"):
        resolve_weights("org/absent", cache_dir=tmp_path / "hub")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json and weights"):
        resolve_weights(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="no such folder"):
        resolve_weights(str(tmp_path / "not" / "here"))


def clean_env(tmp_path: Path, **extra) -> dict:
    """The environment with an empty Hub cache, no converted folder, and no proxy or endpoint of the user's."""
    env = {
        k: v
        for k, v in without_proxies(os.environ).items()
        if k not in {"HF_ENDPOINT", "TRANSFORMERS_OFFLINE"}
    }
    env.update(PYTHONPATH=str(ROOT / "src"), HF_HUB_CACHE=str(tmp_path / "hub"))
    env[CONVERTED_MODEL_ENV] = str(tmp_path / "no-converted-model")
    return {**env, **extra}


def test_the_hub_at_hf_endpoint_is_asked_once_per_id(tmp_path):
    """Online, ``HF_ENDPOINT`` (read at import, hence the process) naming a Hub that answers 503: each id is asked
    there once, not retried, and the chain goes on to the untrained model."""
    hub = LoopbackServer(http_reply("503 Service Unavailable"))
    code = "from clip2point_apps.weights import resolve_weights; print(resolve_weights().describe())"
    try:
        env = clean_env(tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url)
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        hub.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("weights: a small UNTRAINED random model")
    assert hub.model_requests == [
        f"GET /api/models/{DEFAULT_MODEL_ID} HTTP/1.1",
        f"GET /api/models/{DEFAULT_CLIP_ID} HTTP/1.1",
    ]
    for answer in (f"{hub.url} answered: ", "503 Service Unavailable"):  # each id's line names it
        assert result.stdout.count(answer) == 2, result.stdout


def test_classify_without_model_uses_cached_clip(tmp_path):
    """`clip2point classify` with no --model, the Hub cache holding CLIP (found through HF_HUB_CACHE)."""
    snapshot = put_in_hub_cache(tmp_path / "hub", DEFAULT_CLIP_ID, save_clip)
    points = torch.rand(500, 3).numpy()
    np.save(tmp_path / "c.npy", points)
    env = clean_env(tmp_path, HF_HUB_OFFLINE="1")
    command = [
        sys.executable,
        "-m",
        "clip2point_apps.cli",
        "classify",
        str(tmp_path / "c.npy"),
        "--labels",
        "a,b",
    ]
    result = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"weights: CLIP without depth pre-training ({DEFAULT_CLIP_ID})" in result.stderr
    answers = {r["label"]: r["score"] for r in json.loads(result.stdout)[str(tmp_path / "c.npy")]}
    weights = resolve_weights(str(snapshot))
    direct = {r["label"]: r["score"] for r in build_classifier(weights)(points, candidate_labels=["a", "b"])}
    assert answers == pytest.approx(direct, abs=1e-5)


def test_demo_offline_with_nothing_local_finishes_untrained_without_a_request(tmp_path):
    """Offline, the Hub endpoint and both proxies are a server that records requests: it must get none."""
    network = LoopbackServer(http_reply("403 Forbidden"))
    env = clean_env(tmp_path, HF_HUB_OFFLINE="1", HF_ENDPOINT=network.url)
    env.update(HTTPS_PROXY=network.url, HTTP_PROXY=network.url)
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "demo.py"), "--output_dir", str(tmp_path / "out")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        network.close()
    assert network.requests == []
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("weights: a small UNTRAINED random model"), lines[0]
    assert "offline mode is on" in lines[0]
    answers = [line for line in lines if "->" in line]
    assert len(answers) == 8 and all("[untrained model" in line for line in answers)
    picture = np.asarray(Image.open(tmp_path / "out" / "chair_views.png"))
    assert picture[:16].min() < 60  # the title line (answer and weights) is drawn above the views
