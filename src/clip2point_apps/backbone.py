"""The CLIP a script builds on (a Hub id, a folder, an OpenAI ``.pt`` file, or a seeded random one from a
preset), its tokenizer, and the processor saved with a run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .arguments import BackboneArguments

__all__ = ["CLIP_CONFIG_PRESETS", "build_clip", "load_tokenizer", "make_processor"]

#: Random-initialisation presets. ``tiny``: unit tests (32 px). ``small``: CPU learning runs (64 px).
#: ``vit-b-32``: the shapes of CLIP ViT-B/32 (throughput measurements).
CLIP_CONFIG_PRESETS: dict[str, dict] = {
    "tiny": {  # the towers of clip2point_hf.testing_utils.tiny_tower_configs()
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
            "max_position_embeddings": 64,
        },
        "projection_dim": 16,
        "initializer_factor": 5.0,
    },
    "small": {
        "vision_config": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "image_size": 64,
            "patch_size": 8,
        },
        "text_config": {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
        },
        "projection_dim": 64,
        "initializer_factor": 5.0,
    },
    "vit-b-32": {},
}
#: Why ``initializer_factor`` 5 for the small random presets: with CLIP's default initialisation a random tower's
#: pooled output hardly depends on its input (cosine ~0.999 between the embeddings of unrelated renderings), so
#: frozen random features carry little and contrastive training from scratch collapses to identical embeddings.


def load_tokenizer(args: BackboneArguments):
    """The tokenizer named by ``--tokenizer``, else the one of ``--clip``, else (random backbones) ``char``."""
    from transformers import AutoTokenizer

    name = args.tokenizer
    if name is None:
        if args.clip is not None and not os.path.isfile(args.clip):
            name = args.clip
        elif args.clip_config is not None:
            name = "char"
        else:
            raise ValueError(
                "--tokenizer is required with an OpenAI-layout .pt backbone (e.g. --tokenizer openai/clip-vit-base-patch32)"
            )
    if name == "char":
        from clip2point_hf.testing_utils import make_tiny_tokenizer

        return make_tiny_tokenizer()
    from clip2point_hf.loading import resolve_tokenizer

    return AutoTokenizer.from_pretrained(resolve_tokenizer(name))


def _clip_config(spec: str, tokenizer):
    from transformers import CLIPConfig

    if spec in CLIP_CONFIG_PRESETS:
        values = json.loads(json.dumps(CLIP_CONFIG_PRESETS[spec]))
    elif os.path.isdir(spec) or os.path.isfile(spec):
        path = os.path.join(spec, "config.json") if os.path.isdir(spec) else spec
        values = json.loads(Path(path).read_text())
    else:
        raise ValueError(
            f"--clip_config {spec!r} is neither a preset ({', '.join(CLIP_CONFIG_PRESETS)}) nor a config file"
        )
    text = dict(values.get("text_config") or {})
    if tokenizer is not None:  # the random text tower must fit the tokenizer
        text["vocab_size"] = len(tokenizer)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokenizer, key, None)
            if value is not None:
                text[key] = value
    values["text_config"] = text
    factor = values.get("initializer_factor")
    if (
        factor is not None
    ):  # CLIPModel initialises with the top-level factor, standalone towers with their own
        for key in ("text_config", "vision_config"):
            values[key] = {"initializer_factor": factor, **(values.get(key) or {})}
    return CLIPConfig(**{k: v for k, v in values.items() if k not in ("architectures", "model_type")})


def build_clip(args: BackboneArguments, tokenizer=None, seed: int = 0):
    """A ``CLIPModel`` from ``--clip`` (Hub id, folder, OpenAI ``.pt``) or a seeded random one from ``--clip_config``."""
    from transformers import CLIPModel

    from clip2point_hf.conversion_clip2point import load_clip

    if (args.clip is None) == (args.clip_config is None):
        raise ValueError("give exactly one of --clip (pretrained CLIP) and --clip_config (random CLIP)")
    if args.clip is not None:
        return load_clip(args.clip)
    config = _clip_config(args.clip_config, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config)


def make_processor(
    tokenizer,
    image_size: int,
    views,
    num_points: int = 1024,
    point_radius: float = 0.02,
    depth_mode: str = "parity",
    up_axis: str = "y",
):
    """The ``CLIP2PointProcessor`` saved with a run; its feature extractor's ``renderer`` is the one the run's
    steps use."""
    from clip2point_hf.feature_extraction_clip2point import CLIP2PointFeatureExtractor
    from clip2point_hf.processing_clip2point import CLIP2PointProcessor

    front_end = CLIP2PointFeatureExtractor(
        num_points=num_points,
        views=views,
        image_size=image_size,
        point_radius=point_radius,
        depth_mode=depth_mode,
        up_axis=up_axis,
    )
    return CLIP2PointProcessor(front_end, tokenizer)
