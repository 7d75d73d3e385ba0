"""The settings of a training run (the arguments every training script shares)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from ..tracking import resolve_trackers
from .checkpointing import check_checkpoint_folder

__all__ = ["TrainingRunArguments"]


@dataclass
class TrainingRunArguments:
    """How a training run goes (output folder, seed, optimiser and schedule, checkpoints, trackers, Hub upload):
    the settings of :class:`~clip2point_apps.training.TrainingRun`. Not transformers' ``TrainingArguments``: each
    training script subclasses it to change defaults."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Where the run, its checkpoints and the model go."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into a non-empty --output_dir that is not being resumed (refused otherwise, so a "
            "finished run is never mixed with a new one)."
        },
    )
    seed: int = field(
        default=42, metadata={"help": "Seed of initialisation, shuffling, sampling and dropout."}
    )
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no, fp16 or bf16 (default: what `accelerate launch`/`accelerate config` says).",
            "choices": ["no", "fp16", "bf16"],
        },
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per process."})
    per_device_eval_batch_size: int = field(
        default=64, metadata={"help": "Evaluation batch size per process."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimiser update."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    min_learning_rate: float = field(default=0.0, metadata={"help": "Floor of the cosine schedules."})
    weight_decay: float = field(
        default=1e-4, metadata={"help": "AdamW/LAMB weight decay (not on biases, norms, scales)."}
    )
    optimizer: str = field(
        default="adamw",
        metadata={"help": "adamw, or lamb (needs the timm package).", "choices": ["adamw", "lamb"]},
    )
    num_train_epochs: int = field(
        default=10, metadata={"help": "Epochs (unless --max_train_steps ends earlier)."}
    )
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimiser updates."}
    )
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={
            "help": "constant, linear, cosine, or cosine_restarts (restart every --restart_epochs epochs).",
            "choices": ["constant", "linear", "cosine", "cosine_restarts"],
        },
    )
    restart_epochs: float = field(default=2.0, metadata={"help": "Period of cosine_restarts, in epochs."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up updates."})
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip the gradient norm (off by default)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N updates."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Validate every N updates (default: every epoch)."}
    )
    checkpointing_steps: str | None = field(
        default=None, metadata={"help": "Save a resumable checkpoint every N updates, or 'epoch'."}
    )
    checkpoints_total_limit: int | None = field(default=3, metadata={"help": "Keep at most N checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Resume: a checkpoint folder, or 'latest' (the default when the flag has no value; a run "
            "without any checkpoint then starts from scratch).",
            "nargs": "?",
            "const": "latest",
        },
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Save the model that scored best on validation (else the last one)."}
    )
    report_to: str = field(
        default="none", metadata={"help": "Trackers: none, tensorboard, wandb, all (only those installed)."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    push_to_hub: bool = field(
        default=False, metadata={"help": "Upload the final folder to the Hub (after saving it)."}
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub repo (default: the output folder's name)."}
    )
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: the stored login)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    verbose: bool = field(
        default=False,
        metadata={"help": "Show the libraries' progress bars (loading, saving, dataset casts)."},
    )

    def validate(self) -> None:
        """Every check that needs no data, before anything is written."""
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        out = Path(self.output_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--output_dir {out} is a file, not a folder")
        if (
            out.is_dir()
            and any(out.iterdir())
            and not (self.resume_from_checkpoint or self.overwrite_output_dir)
        ):
            raise ValueError(
                f"--output_dir {out} is not empty (a previous run?): resume it with --resume_from_checkpoint, "
                "write into it anyway with --overwrite_output_dir, or choose another folder"
            )
        if self.resume_from_checkpoint not in (None, "latest"):
            check_checkpoint_folder(self.resume_from_checkpoint)
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "num_train_epochs",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise ValueError(f"--max_train_steps must be >= 1, got {self.max_train_steps}")
        steps = self.checkpointing_steps
        if steps not in (None, "epoch") and (not str(steps).isdigit() or int(steps) < 1):
            raise ValueError(
                f"--checkpointing_steps must be a positive int or 'epoch', got {self.checkpointing_steps!r}"
            )
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"--eval_steps must be >= 1, got {self.eval_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer == "lamb" and importlib.util.find_spec("timm") is None:
            raise ValueError(
                "--optimizer lamb needs the timm package (pip install timm); or pass --optimizer adamw"
            )
        resolve_trackers(self.report_to)
