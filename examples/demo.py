"""Zero-shot classification of the package's sample objects, and a picture of each object's depth views.

    python examples/demo.py --output_dir demo_output [--model org/name-or-folder]

Without --model it uses the best weights it can reach (`clip2point_apps.weights`): the published CLIP2Point
checkpoint, a folder converted from the authors' best_eval.pth ($CLIP2POINT_MODEL), plain CLIP without depth
pre-training, and only when none of these is here or on the Hub a small random model, labelled untrained.
One line, and each picture's title, name the weights used. It never waits on the network for long.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clip2point_apps.console import configure_console
from clip2point_apps.visualization import save_views_image
from clip2point_apps.weights import build_classifier, resolve_weights
from clip2point_hf.samples import SAMPLE_OBJECTS, make_sample_point_cloud

LABELS = ["airplane", "bottle", "bowl", "chair", "cone", "cup", "lamp", "table"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="a CLIP2Point or CLIP folder or Hub id (default: the best reachable)"
    )
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--device", default=None)
    parser.add_argument("--verbose", action="store_true", help="show the libraries' progress bars")
    args = parser.parse_args()
    configure_console(verbose=args.verbose)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    weights = resolve_weights(args.model)
    print(weights.describe(), flush=True)
    classifier = build_classifier(weights, device=args.device)

    tag = "  [untrained model: scores are meaningless]" if weights.untrained else ""
    for name in SAMPLE_OBJECTS:
        cloud = make_sample_point_cloud(name, num_points=4096, seed=0)
        ranked = classifier(cloud, candidate_labels=LABELS)
        picture = output / f"{name}_views.png"
        title = f"{name} -> {ranked[0]['label']} {ranked[0]['score']:.2f}   weights: {weights.label}"
        save_views_image(classifier.front_end, cloud, picture, title=title)
        top = ", ".join(f"{r['label']} {r['score']:.2f}" for r in ranked[:3])
        print(f"{name:>9} -> {top}{tag}   (views: {picture})")
    print(f"Pictures of the rendered views are in {output}/")


if __name__ == "__main__":
    main()
