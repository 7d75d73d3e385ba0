"""Typed arguments of the training scripts, parsed from the command line or from a JSON/YAML file."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import get_args, get_type_hints

from clip2point_hf.data.formats import DATASET_FORMATS
from clip2point_hf.points_clip2point import UP_AXES

from .checkpointing import check_checkpoint_folder

__all__ = ["BackboneArguments", "PointCloudDataArguments", "TrainingArguments", "args_to_dict", "parse_args"]

OptionalStr = str | None


@dataclass
class BackboneArguments:
    """Which CLIP the scripts build on."""

    clip: OptionalStr = field(
        default=None,
        metadata={
            "help": "CLIP backbone: a Hub id (openai/clip-vit-base-patch32), a transformers CLIP folder, "
            "or an OpenAI-layout .pt file."
        },
    )
    clip_config: OptionalStr = field(
        default=None,
        metadata={
            "help": "Instead of --clip: a randomly initialised CLIP (seeded by --seed) from a preset "
            f"({', '.join(['tiny', 'small', 'vit-b-32'])}), a CLIPConfig JSON file or a folder holding config.json."
        },
    )
    tokenizer: OptionalStr = field(
        default=None,
        metadata={
            "help": "CLIP tokenizer (Hub id or folder). Default: the one of --clip; 'char' (the built-in "
            "character-level tokenizer) for a random --clip_config backbone."
        },
    )


@dataclass
class TrainingArguments:
    """Run settings shared by the training scripts (each script overrides some defaults)."""

    output_dir: OptionalStr = field(
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
    mixed_precision: OptionalStr = field(
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
    checkpointing_steps: OptionalStr = field(
        default=None, metadata={"help": "Save a resumable checkpoint every N updates, or 'epoch'."}
    )
    checkpoints_total_limit: int | None = field(default=3, metadata={"help": "Keep at most N checkpoints."})
    resume_from_checkpoint: OptionalStr = field(
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
    hub_model_id: OptionalStr = field(
        default=None, metadata={"help": "Hub repo (default: the output folder's name)."}
    )
    hub_token: OptionalStr = field(default=None, metadata={"help": "Hub token (default: the stored login)."})
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


@dataclass
class PointCloudDataArguments:
    """A labelled point-cloud dataset folder, read by the matching loader of :mod:`clip2point_hf.data`."""

    dataset: OptionalStr = field(
        default=None,
        metadata={
            "help": "Dataset folder (ModelNet, ScanObjectNN, a mesh folder, ...: any loader of clip2point_hf.data)."
        },
    )
    dataset_format: str = field(
        default="auto", metadata={"help": "Which loader.", "choices": list(DATASET_FORMATS)}
    )
    scanobjectnn_variant: str = field(
        default="PB_T50_RS", metadata={"help": "OBJ_BG, OBJ_ONLY or PB_T50_RS."}
    )
    on_missing: str = field(
        default="error",
        metadata={
            "help": "Files a split list names but are absent (partial download): error, or skip them.",
            "choices": ["error", "skip"],
        },
    )
    num_points: int = field(default=1024, metadata={"help": "Points per cloud."})
    up_axis: OptionalStr = field(
        default=None,
        metadata={
            "help": "Up axis of the files (default: the loader's: z for ModelNet OFF, y for the rest; see the "
            "README's table of conventions).",
            "choices": list(UP_AXES),
        },
    )
    cache_dir: OptionalStr = field(default=None, metadata={"help": "Dataset cache folder."})

    def load(self, seed: int, accelerator, splits: Sequence[str | None] = ()) -> tuple:
        """``(DatasetDict, metadata, up_axis)``: the main process builds the dataset first, the others then read
        its cache; every split named in ``splits`` must exist; ``up_axis`` is ``--up_axis`` or the loader's."""
        from clip2point_hf.data.formats import load_point_cloud_dataset
        from clip2point_hf.errors import MissingFilesError

        with accelerator.main_process_first():
            try:
                dataset, meta = load_point_cloud_dataset(
                    self.dataset,
                    self.dataset_format,
                    self.num_points,
                    seed,
                    variant=self.scanobjectnn_variant,
                    cache_dir=self.cache_dir,
                    on_missing=self.on_missing,
                )
            except MissingFilesError as error:  # the library's hint names its keyword, not this option
                hint = "pass --on_missing skip to build from the files that are present"
                raise MissingFilesError(error.path, error.missing, error.listed, hint) from None
        for split in splits:
            if split is None:
                continue
            if split not in dataset:
                raise ValueError(f"{self.dataset} has no split {split!r} (it has {sorted(dataset)})")
            if len(dataset[split]) == 0:
                why = (
                    "--on_missing skip dropped every file its list names"
                    if self.on_missing == "skip"
                    else "no object of it was found"
                )
                raise ValueError(f"{self.dataset}: the {split!r} split is empty ({why}); nothing to score")
        return dataset, meta, self.up_axis or meta.get("up_axis", "y")


def parse_args(types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse `types` (dataclasses) from the command line, or from a JSON/YAML file given as the first argument.

    ``script.py run.yaml`` reads every field from the file; ``script.py run.yaml --seed 3`` lets the command line
    override the file. Unknown keys in a file are an error naming them.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(list(types))
    if argv and argv[0].lower().endswith((".json", ".yaml", ".yml")) and not argv[0].startswith("-"):
        path = Path(argv[0])
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of argument names to values")
        known = {f.name for t in types for f in fields(t)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown arguments {unknown}")
        # A number where a field takes text (`"views": 6`, `"shots": 16`) means its digits, as on the command line.
        text_fields = {
            name
            for t in types
            for name, hint in get_type_hints(t).items()
            if hint is str or str in get_args(hint)
        }
        values = {
            k: str(v) if k in text_fields and isinstance(v, int | float) and not isinstance(v, bool) else v
            for k, v in values.items()
        }
        parser.set_defaults(**values)
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def args_to_dict(*args) -> dict:
    """Flat, JSON-serialisable view of dataclass arguments (tokens are left out)."""
    out = {}
    for a in args:
        out.update(asdict(a) if is_dataclass(a) else dict(a))
    out.pop("hub_token", None)
    return out
