#!/usr/bin/env python
"""Zero-shot point-cloud classification: accuracy, per-class accuracy, confusion matrix, JSON results.

    python examples/zero_shot.py --model runs/pretrain --dataset path/ModelNet40 --views 6
    accelerate launch examples/zero_shot.py --model runs/pretrain --dataset path/ScanObjectNN --prompts ensemble

The implementation is `clip2point_apps.evaluation` (also behind `clip2point evaluate`); `--help` lists the
arguments, and a JSON/YAML file of them is accepted in their place.
"""

import sys
from collections.abc import Sequence

from clip2point_apps.console import configure_console
from clip2point_apps.evaluation import parse_evaluation_arguments, run_evaluation
from clip2point_hf.errors import run_script


def main(argv: Sequence[str] | None = None) -> dict:
    args, backbone = parse_evaluation_arguments(argv)
    configure_console(verbose=args.verbose)
    return run_evaluation(args, backbone)


if __name__ == "__main__":
    run_script(main, sys.argv[1:])
