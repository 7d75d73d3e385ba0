"""Zero-shot classification of the package's sample objects, and a picture of each object's depth views.

    python examples/demo.py --output_dir demo_output [--model org/name-or-folder]

With real weights reachable (a local folder, or a Hub id while the Hub answers) the demo uses them. Where
the Hub cannot be reached it says so in one line and runs the same pipeline on a small randomly
initialised model, and labels every answer as untrained. It never waits on the network for long.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from transformers import pipeline

import clip2point_hf  # noqa: F401  (registers the pipeline task)
from clip2point_hf import CLIP2PointModel, CLIP2PointProcessor
from clip2point_hf.samples import SAMPLE_OBJECTS, make_sample_point_cloud
from clip2point_hf.testing_utils import make_tiny_config, make_tiny_tokenizer
from clip2point_hf.training import configure_console

# Where the project publishes its converted ViT-B/32 weights.
DEFAULT_MODEL = "clip2point-hf/clip2point-vit-b-32"
LABELS = ["airplane", "bottle", "bowl", "chair", "cone", "cup", "lamp", "table"]


def hub_answers(model_id: str, timeout: float = 5.0) -> str | None:
    """None if the Hub serves `model_id`, else the reason it cannot be used (one line)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import model_info

    try:
        model_info(model_id, timeout=timeout)
    except Exception as error:  # no network, DNS failure, 404, auth: all mean "not usable here"
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return None


def untrained_model(folder: Path) -> Path:
    """A small random CLIP2Point model at the real rendering settings (10 views, 224 x 224), saved with its
    processor so that the demo exercises the same loading path as a real checkpoint."""
    torch.manual_seed(0)
    vision = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 224,
        "patch_size": 32,
    }
    model = CLIP2PointModel(make_tiny_config(num_views=10, vision_config=vision))
    model.save_pretrained(folder)
    CLIP2PointProcessor(tokenizer=make_tiny_tokenizer()).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model folder or Hub id")
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--device", default=None)
    parser.add_argument("--verbose", action="store_true", help="show the libraries' progress bars")
    args = parser.parse_args()
    configure_console(args.verbose)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    untrained = False
    model = args.model
    if not Path(model).is_dir():
        reason = hub_answers(model)
        if reason is not None:
            print(
                f"Hub model {model!r} cannot be reached ({reason}): using a small UNTRAINED random model instead."
            )
            model, untrained = str(untrained_model(output / "untrained-model")), True
    classifier = pipeline("zero-shot-point-cloud-classification", model=model, device=args.device)
    processor = classifier.processor

    tag = "  [untrained model: scores are meaningless]" if untrained else ""
    for name in SAMPLE_OBJECTS:
        cloud = make_sample_point_cloud(name, num_points=4096, seed=0)
        ranked = classifier(cloud, candidate_labels=LABELS)
        picture = output / f"{name}_views.png"
        answer = f"{name} -> {ranked[0]['label']} {ranked[0]['score']:.2f}" + (
            " (untrained)" if untrained else ""
        )
        processor.save_views_image(cloud, picture, title=answer)
        top = ", ".join(f"{r['label']} {r['score']:.2f}" for r in ranked[:3])
        print(f"{name:>9} -> {top}{tag}   (views: {picture})")
    print(f"Pictures of the rendered views are in {output}/")


if __name__ == "__main__":
    main()
