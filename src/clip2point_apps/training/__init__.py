"""Training only, one file per concern (in the spirit of ``open_clip_train``):

* :mod:`.arguments`: :class:`TrainingRunArguments`, the settings of a run;
* :mod:`.optimization`: optimiser and learning-rate schedule;
* :mod:`.checkpointing`: resumable checkpoints and atomic folder saves;
* :mod:`.loop`: the update loop and the scaffolding around it (:class:`TrainingRun`, :class:`PreparedTraining`).

What evaluation shares with training sits one layer down, in :mod:`clip2point_apps`: the scripts' arguments
(:mod:`~clip2point_apps.arguments`), the CLIP backbone (:mod:`~clip2point_apps.backbone`), per-step re-seeding
(:mod:`~clip2point_apps.sampling`), trackers and the JSON log (:mod:`~clip2point_apps.tracking`), prediction and
batch rendering (:mod:`~clip2point_apps.prediction`), the console (:mod:`~clip2point_apps.console`), metrics
(:mod:`~clip2point_apps.metrics`) and pictures (:mod:`~clip2point_apps.visualization`). Batch transforms, dataset
formats and K-shot sampling are in :mod:`clip2point_hf.data`; prompts in :mod:`clip2point_hf.prompts`.
"""

from .arguments import TrainingRunArguments
from .checkpointing import (
    PROGRESS_FILE,
    TrainingProgress,
    find_checkpoints,
    latest_checkpoint,
    resume_from_checkpoint,
    save_checkpoint,
)
from .loop import (
    PreparedTraining,
    TrainingRun,
    best_metric_line,
    finish_with_hub,
    pretraining_inputs,
    run_training,
    setup_accelerator,
)
from .optimization import build_lr_scheduler, build_optimizer, lr_multiplier

__all__ = [
    "PROGRESS_FILE",
    "PreparedTraining",
    "TrainingProgress",
    "TrainingRun",
    "TrainingRunArguments",
    "best_metric_line",
    "build_lr_scheduler",
    "build_optimizer",
    "find_checkpoints",
    "finish_with_hub",
    "latest_checkpoint",
    "lr_multiplier",
    "pretraining_inputs",
    "resume_from_checkpoint",
    "run_training",
    "save_checkpoint",
    "setup_accelerator",
]
