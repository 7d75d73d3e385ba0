"""Zero-shot classification of the package's sample objects, and a picture of each object's depth views.

    python examples/demo.py --output_dir demo_output [--model org/name-or-folder]

With real weights reachable (a local folder, or a Hub id while the Hub answers) the demo uses them. Where
the Hub cannot be reached it says so in one line and runs the same pipeline on a small randomly
initialised model, and labels every answer as untrained. It never waits on the network for long.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import pipeline

import clip2point_hf  # noqa: F401  (registers the pipeline task)
from clip2point_hf.samples import SAMPLE_OBJECTS, make_sample_point_cloud
from clip2point_hf.web import DEFAULT_MODEL, choose_weights

LABELS = ["airplane", "bottle", "bowl", "chair", "cone", "cup", "lamp", "table"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model folder or Hub id")
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    weights = choose_weights(args.model, output)
    print(weights.description)
    classifier = pipeline("zero-shot-point-cloud-classification", model=weights.model, device=args.device)
    processor = classifier.processor

    tag = "  [untrained model: scores are meaningless]" if weights.untrained else ""
    for name in SAMPLE_OBJECTS:
        cloud = make_sample_point_cloud(name, num_points=4096, seed=0)
        ranked = classifier(cloud, candidate_labels=LABELS)
        picture = output / f"{name}_views.png"
        processor.save_views_image(cloud, picture)
        top = ", ".join(f"{r['label']} {r['score']:.2f}" for r in ranked[:3])
        print(f"{name:>9} -> {top}{tag}   (views: {picture})")
    print(f"Pictures of the rendered views are in {output}/")


if __name__ == "__main__":
    main()
