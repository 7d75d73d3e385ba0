"""What the training and evaluation scripts share, one file per concern (in the spirit of ``open_clip_train``).

* :mod:`.arguments`: typed arguments, parsed from the command line or a JSON/YAML file;
* :mod:`.backbone`: the CLIP a run builds on, its tokenizer, the processor saved with the run;
* :mod:`.sampling`: the per-step re-seeding that makes a resumed step replay exactly;
* :mod:`.optimization`: optimiser and learning-rate schedule;
* :mod:`.checkpointing`: resumable checkpoints;
* :mod:`.tracking`: trackers and the JSON log;
* :mod:`.loop`: the update loop, prediction, rendering a batch, and :class:`TrainingRun` (the scaffolding around
  them).

The keyed loader, batch transforms, dataset formats and K-shot sampling are in :mod:`clip2point_hf.data`; prompts
in :mod:`clip2point_hf.prompts`; metrics and the confusion-matrix picture in :mod:`clip2point_apps.evaluation`.
"""

from .arguments import (
    BackboneArguments,
    PointCloudDataArguments,
    TrainingArguments,
    args_to_dict,
    parse_args,
)
from .backbone import CLIP_CONFIG_PRESETS, build_clip, load_tokenizer, make_processor
from .checkpointing import (
    PROGRESS_FILE,
    TrainingProgress,
    find_checkpoints,
    latest_checkpoint,
    resume_from_checkpoint,
    save_checkpoint,
)
from .loop import (
    TrainingRun,
    best_metric_line,
    finish_with_hub,
    predict,
    pretraining_inputs,
    render_point_clouds,
    run_training,
    setup_accelerator,
)
from .optimization import build_lr_scheduler, build_optimizer, lr_multiplier
from .sampling import seed_step
from .tracking import JsonLogger, configure_console, resolve_trackers, start_trackers, write_json

__all__ = [
    "CLIP_CONFIG_PRESETS",
    "PROGRESS_FILE",
    "BackboneArguments",
    "JsonLogger",
    "PointCloudDataArguments",
    "TrainingArguments",
    "TrainingProgress",
    "TrainingRun",
    "args_to_dict",
    "best_metric_line",
    "build_clip",
    "build_lr_scheduler",
    "build_optimizer",
    "configure_console",
    "find_checkpoints",
    "finish_with_hub",
    "latest_checkpoint",
    "load_tokenizer",
    "lr_multiplier",
    "make_processor",
    "parse_args",
    "predict",
    "pretraining_inputs",
    "render_point_clouds",
    "resolve_trackers",
    "resume_from_checkpoint",
    "run_training",
    "save_checkpoint",
    "seed_step",
    "setup_accelerator",
    "start_trackers",
    "write_json",
]
