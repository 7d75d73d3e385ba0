"""Shared fixtures: tiny random CLIP towers, a tiny offline CLIP tokenizer and a tiny saved model folder (no
network, no real weights)."""
# ruff: noqa: F401  (re-exported for the test modules)

from __future__ import annotations

import os

import pytest
import torch

from clip2point_hf import CLIP2PointFeatureExtractor
from clip2point_hf.testing_utils import make_tiny_clip as _make_tiny_clip
from clip2point_hf.testing_utils import make_tiny_config, make_tiny_tokenizer, tiny_tower_configs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def save_tiny_model(folder, *, num_points: int = 256):
    """Save a seeded tiny ``CLIP2PointModel`` (6 views) and its processor (``reference6``, 32 px) into ``folder``:
    the model folder the pipeline, CLI and retrieval tests load by path."""
    from clip2point_hf import CLIP2PointModel, CLIP2PointProcessor

    torch.manual_seed(0)
    CLIP2PointModel(make_tiny_config(num_views=6)).save_pretrained(folder)
    CLIP2PointProcessor(
        CLIP2PointFeatureExtractor(views="reference6", image_size=32, num_points=num_points),
        make_tiny_tokenizer(),
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny model folder (:func:`save_tiny_model`), one per test module."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def make_tiny_clip(seed: int = 0):
    torch.manual_seed(seed)
    return _make_tiny_clip()


@pytest.fixture
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_config():
    return make_tiny_config()


@pytest.fixture
def tiny_clip():
    return make_tiny_clip()


def enable_activation_checkpointing(model) -> None:
    """transformers 5.24 renamed `gradient_checkpointing_enable` (kept as a deprecated alias) to
    `activation_checkpointing_enable`; the oldest supported release has only the first."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


#: Markers that transformers' own generic model tests use (tests/test_modeling_generic.py imports them from the
#: transformers sdist); registered so that `--strict-markers` accepts them.
TRANSFORMERS_TEST_MARKERS = (
    "accelerate_tests",
    "flash_attn_test",
    "flash_attn_3_test",
    "flash_attn_4_test",
    "torch_compile_test",
    "is_training_test",
    "is_pipeline_test",
    "is_staging_test",
    "is_agent_test",
    "is_fsdp_test",
    "is_expert_parallel_test",
    "is_tensor_parallel_test",
    "order",
)


def pytest_configure(config):
    for marker in TRANSFORMERS_TEST_MARKERS:
        config.addinivalue_line("markers", f"{marker}: a marker of transformers' generic model tests")


TETRA_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


def write_tetra_mesh_folder(root, classes=("cone", "cup"), counts=(("train", 2), ("test", 1))):
    """A mesh folder (``<class>/<split>/<class><i>.obj``) of tetrahedra: the smallest input of the mesh loaders."""
    for cls in classes:
        for split, count in counts:
            (root / cls / split).mkdir(parents=True)
            for i in range(count):
                (root / cls / split / f"{cls}{i}.obj").write_text(TETRA_OBJ)
    return root


def capture_hub_uploads(monkeypatch, into):
    """Replace huggingface_hub's repo creation and folder upload (its public boundary): record the calls and copy
    the folder that would be uploaded to `into`."""
    import shutil

    import huggingface_hub

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls.append(("upload_folder", repo_id, kwargs))
        shutil.copytree(folder_path, into)
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls
