"""Tiny random CLIP towers and an offline character-level CLIP tokenizer.

No pretrained CLIP weights are needed to exercise the whole stack: the tests, the demo's untrained
fallback and the CPU learning runs build their models from these.
"""

from __future__ import annotations

import string

from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from .configuration_clip2point import CLIP2PointConfig


def make_tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary is every lowercase letter, digit and some punctuation (with and
    without `</w>`), plus CLIP's start and end tokens: any English prompt tokenizes, one token per character."""
    symbols = list(string.ascii_lowercase + string.digits + "!,.-'")
    tokens = [t for s in symbols for t in (s, s + "</w>")]
    vocab = {t: i for i, t in enumerate(tokens)}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_tower_configs(
    tokenizer: CLIPTokenizer | None = None, hidden_size: int = 32, layers: int = 2, image_size: int = 32
) -> dict:
    """Keyword arguments for `CLIPConfig`/`CLIP2PointConfig` describing small CLIP towers."""
    tokenizer = tokenizer or make_tiny_tokenizer()
    tower = {
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
    }
    return {
        "vision_config": {**tower, "image_size": image_size, "patch_size": image_size // 4},
        "text_config": {
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        "projection_dim": hidden_size // 2,
    }


def make_tiny_clip(**kwargs) -> CLIPModel:
    """A randomly initialised small `CLIPModel` (seed it with `torch.manual_seed` first)."""
    return CLIPModel(CLIPConfig(**tiny_tower_configs(**kwargs))).eval()


def make_tiny_config(num_views: int = 3, **kwargs) -> CLIP2PointConfig:
    return CLIP2PointConfig(**{**tiny_tower_configs(), "num_views": num_views, **kwargs})


__all__ = ["make_tiny_clip", "make_tiny_config", "make_tiny_tokenizer", "tiny_tower_configs"]
