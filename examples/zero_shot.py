#!/usr/bin/env python
"""Zero-shot point-cloud classification: accuracy, per-class accuracy, confusion matrix, JSON results.

    python examples/zero_shot.py --model runs/pretrain --dataset path/ModelNet40 --views 6
    accelerate launch examples/zero_shot.py --model runs/pretrain --dataset path/ScanObjectNN --prompts ensemble

The implementation is `clip2point_apps.evaluation` (also behind `clip2point evaluate`); `--help` lists the
arguments, and a JSON/YAML file of them is accepted in their place.
"""

import sys

from clip2point_apps.evaluation import main
from clip2point_hf.errors import run_script

if __name__ == "__main__":
    run_script(main, sys.argv[1:])
