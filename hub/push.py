"""Export a model folder for the Hub (weights, remote code, processor, model card), verify it, upload it.

    python hub/push.py runs/pretrain --repo org/clip2point --results zero_shot.json [--dry-run]

Same as `clip2point push`; the card's model-index is built from the zero-shot result files.
"""

import sys

from clip2point_apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["push", *sys.argv[1:]]))
