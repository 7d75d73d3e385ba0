"""Typed arguments that the training and evaluation scripts share (the CLIP they build on, the dataset they read),
parsed from the command line or from a JSON/YAML file, and where a run records them."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import get_args, get_type_hints

from clip2point_hf.data.formats import DATASET_FORMATS
from clip2point_hf.points_clip2point import UP_AXES

from .console import join_negated_axes, unrecognized_options_message

__all__ = [
    "RUN_ARGS_FILE",
    "BackboneArguments",
    "PointCloudDataArguments",
    "args_to_dict",
    "parse_args",
]

#: A run's arguments (:func:`args_to_dict`), written beside the model it saves: the model card shows them, the
#: evaluation of a fine-tuned model reads the run's seed from them.
RUN_ARGS_FILE = "run_args.json"

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
            "help": "Up axis of the files (default: the loader's: z for ModelNet OFF, y for the rest; README, "
            "'Up axis').",
            "choices": list(UP_AXES),
        },
    )
    cache_dir: OptionalStr = field(default=None, metadata={"help": "Dataset cache folder."})

    def load(self, seed: int, accelerator, splits: Sequence[str | None] = ()) -> tuple:
        """``(DatasetDict, metadata, up_axis)``: the main process builds the dataset first, the others then read
        its cache; every split named in ``splits`` must exist; ``up_axis`` is ``--up_axis`` or the loader's."""
        from clip2point_hf.data.formats import load_point_cloud_dataset
        from clip2point_hf.errors import SCRIPT_USER_ERRORS, MissingFilesError

        failure = None
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
                failure = MissingFilesError(error.path, error.missing, error.listed, hint)
            except SCRIPT_USER_ERRORS as error:
                failure = error
        # Raised once the block is left: the main process has released the others, which then meet the same error
        # themselves, so that every process ends with its one line instead of dying in a barrier.
        if failure is not None:
            raise failure
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


def parse_args(types: Sequence[type], argv: Sequence[str] | None = None, *, prog: str | None = None) -> tuple:
    """Parse `types` (dataclasses) from the command line, or from a JSON/YAML file given as the first argument.

    ``script.py run.yaml`` reads every field from the file; ``script.py run.yaml --seed 3`` lets the command line
    override the file. Unknown keys in a file are an error naming them; so is an unknown option, with the closest
    known one. ``prog`` names the command in ``--help`` (default: the script's file name).
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(list(types), prog=prog)
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
    *parsed, unused = parser.parse_args_into_dataclasses(
        args=join_negated_axes(argv), look_for_args_file=False, return_remaining_strings=True
    )
    if unused:
        # HfArgumentParser's options: --<field>, and --no_<field> for a flag that defaults to True
        options = [f"--{f.name}" for t in types for f in fields(t)]
        options += [f"--no_{f.name}" for t in types for f in fields(t) if f.default is True]
        raise ValueError(unrecognized_options_message(unused, options))
    return tuple(parsed)


def args_to_dict(*args) -> dict:
    """Flat, JSON-serialisable view of dataclass arguments (tokens are left out)."""
    out = {}
    for a in args:
        out.update(asdict(a) if is_dataclass(a) else dict(a))
    out.pop("hub_token", None)
    return out
