"""Resumable checkpoints (``Accelerator.save_state`` plus a completion marker) and atomic folder saves."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "PROGRESS_FILE",
    "TrainingProgress",
    "find_checkpoints",
    "latest_checkpoint",
    "resume_from_checkpoint",
    "save_checkpoint",
    "save_folder_atomically",
]

#: Written into a checkpoint folder once every process has saved: only such folders are resumed from.
PROGRESS_FILE = "clip2point_progress.json"


@dataclass
class TrainingProgress:
    """Where a run is; registered with ``accelerator.register_for_checkpointing`` so it travels with the state."""

    epoch: int = 0
    step_in_epoch: int = 0  # batches (per process) already consumed in ``epoch``
    completed_steps: int = 0  # optimiser updates
    best_metric: float | None = None
    best_step: int | None = None
    batches_per_epoch: int | None = None
    num_processes: int | None = None
    total_batch_size: int | None = None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: Mapping) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def find_checkpoints(checkpoint_root: str | os.PathLike) -> list[Path]:
    """``checkpoint_<n>`` folders under ``checkpoint_root``, oldest first."""
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(checkpoint_root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint (one with :data:`PROGRESS_FILE`); a folder a killed run left half-written
    is passed over."""
    complete = [p for p in find_checkpoints(checkpoint_root) if (p / PROGRESS_FILE).is_file()]
    return complete[-1] if complete else None


def save_checkpoint(accelerator, progress: TrainingProgress) -> str:
    """``accelerator.save_state()`` (automatic naming, total limit) plus the completion marker."""
    path = accelerator.save_state()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = Path(path) / (PROGRESS_FILE + ".tmp")
        tmp.write_text(json.dumps(progress.state_dict(), indent=2))
        os.replace(tmp, Path(path) / PROGRESS_FILE)
    accelerator.wait_for_everyone()
    return path


def resume_from_checkpoint(
    accelerator, resume: str | None, checkpoint_root: str | os.PathLike, progress: TrainingProgress
):
    """Load the requested checkpoint (``"latest"`` or a folder) into the prepared objects and ``progress``.

    Returns the folder used, or ``None`` (nothing requested, or ``"latest"`` and no complete checkpoint yet).
    Later checkpoints are numbered after every existing folder.
    """
    if not resume:
        return None
    if resume == "latest":
        path = latest_checkpoint(checkpoint_root)
        if path is None:
            accelerator.print(f"No complete checkpoint in {checkpoint_root}: starting from scratch.")
            return None
    else:
        path = Path(resume)
        if not (path / PROGRESS_FILE).is_file():
            raise ValueError(f"{path} is not a complete checkpoint of these scripts (no {PROGRESS_FILE})")
    expected = (progress.batches_per_epoch, progress.num_processes, progress.total_batch_size)
    accelerator.load_state(str(path))
    found = (progress.batches_per_epoch, progress.num_processes, progress.total_batch_size)
    if found != expected:
        raise ValueError(
            f"{path} was written by a run with (batches per epoch, processes, global batch) = {found}, this run has "
            f"{expected}; resuming would not replay the same batches. Resume with the original settings."
        )
    existing = find_checkpoints(checkpoint_root)
    accelerator.project_configuration.iteration = (
        (int(existing[-1].name.split("_")[1]) + 1) if existing else 0
    )
    accelerator.print(
        f"Resumed from {path}: epoch {progress.epoch}, batch {progress.step_in_epoch}, update {progress.completed_steps}"
    )
    return str(path)


def save_folder_atomically(save: Callable[[str], None], target: str | os.PathLike) -> None:
    """``save(tmp)`` then swap ``tmp`` in for ``target``, so a killed run never leaves a half-written folder."""
    import shutil

    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save(str(tmp))
    old = target.parent / f".{target.name}.old"
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
