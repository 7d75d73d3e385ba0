"""Where a run's numbers go: accelerate trackers (TensorBoard, W&B) and a JSON-lines log in the output folder
(what the terminal shows is :mod:`clip2point_apps.console`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

__all__ = ["JsonLogger", "resolve_trackers", "start_trackers", "write_json"]


def resolve_trackers(report_to: str | None) -> list[str] | None:
    """The ``log_with`` list for ``Accelerator``; a ``ValueError`` naming ``--report_to`` when a tracker is unknown
    or not installed (a user's option, so the scripts print it as one line).

    ``none`` -> no tracker; ``all`` -> the installed ones among tensorboard and wandb.
    """
    import importlib.util

    if report_to in (None, "", "none"):
        return None
    requested = ["tensorboard", "wandb"] if report_to == "all" else [t.strip() for t in report_to.split(",")]
    usable = []
    for name in requested:
        if name not in ("tensorboard", "wandb"):
            raise ValueError(
                f"--report_to: unknown tracker {name!r} (choose none, tensorboard, wandb or all)"
            )
        if importlib.util.find_spec(name) is None:
            if report_to == "all":
                continue
            raise ValueError(
                f"--report_to {name} needs the {name} package (pip install {name}); or pass --report_to none"
            )
        usable.append(name)
    return usable or None


def start_trackers(accelerator, project_name: str, config: Mapping) -> None:
    """``accelerator.init_trackers`` with a flat config of plain values (what TensorBoard's hparams accept)."""
    if not accelerator.log_with:
        return
    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
    accelerator.init_trackers(project_name, config=clean)


class JsonLogger:
    """Appends one JSON line per logged event to ``<output_dir>/log_history.jsonl`` (main process only)."""

    def __init__(self, accelerator, output_dir: str | os.PathLike):
        self.accelerator = accelerator
        self.path = Path(output_dir) / "log_history.jsonl"

    def __call__(self, values: Mapping, step: int) -> None:
        if self.accelerator.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **{k: _plain(v) for k, v in values.items()}}) + "\n")
        self.accelerator.log(dict(values), step=step)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path: str | os.PathLike, value) -> None:
    """``value`` as indented JSON (tensors and numpy scalars as plain numbers); creates the folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(value, indent=2, default=_plain) + "\n")
