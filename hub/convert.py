"""Convert an original checkpoint (OpenAI CLIP `.pt`, `best_eval.pth`, `best_test.pth`) into a model folder.

    python hub/convert.py best_eval.pth -o clip2point-vitb32 --clip ViT-B-32.pt --tokenizer clip-tokenizer/

Same as `clip2point convert`; see `clip2point convert --help`.
"""

import sys

from clip2point_apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
