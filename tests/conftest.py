"""Shared fixtures: tiny random CLIP towers and a tiny offline CLIP tokenizer (no network, no real weights)."""
# ruff: noqa: F401  (re-exported for the test modules)

from __future__ import annotations

import os

import pytest
import torch

from clip2point_hf.testing_utils import make_tiny_clip as _make_tiny_clip
from clip2point_hf.testing_utils import make_tiny_config, make_tiny_tokenizer, tiny_tower_configs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


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
