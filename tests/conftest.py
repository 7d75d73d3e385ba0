"""Shared fixtures: tiny random CLIP towers and a tiny offline CLIP tokenizer (no network, no real weights)."""

from __future__ import annotations

import os
import string

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def make_tiny_tokenizer():
    """A character-level CLIP BPE tokenizer: every lowercase letter and digit, with and without `</w>`."""
    from transformers import CLIPTokenizer

    symbols = list(string.ascii_lowercase + string.digits + "!,.-'")
    tokens = [t for s in symbols for t in (s, s + "</w>")]
    vocab = {t: i for i, t in enumerate(tokens)}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_tower_configs(tokenizer=None) -> dict:
    tokenizer = tokenizer or make_tiny_tokenizer()
    return {
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        "text_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 32,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        "projection_dim": 16,
    }


def make_tiny_config(**kwargs):
    from clip2point_hf import CLIP2PointConfig

    return CLIP2PointConfig(**{**tiny_tower_configs(), "num_views": 3, **kwargs})


def make_tiny_clip(seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(**tiny_tower_configs())).eval()


@pytest.fixture
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_config():
    return make_tiny_config()


@pytest.fixture
def tiny_clip():
    return make_tiny_clip()
