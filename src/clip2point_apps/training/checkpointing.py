"""Resumable checkpoints: ``Accelerator.save_state`` into a temporary folder, a completion marker, an atomic rename,
then pruning."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from clip2point_hf.atomic import replace_folder
from clip2point_hf.errors import first_line

__all__ = [
    "PROGRESS_FILE",
    "TrainingProgress",
    "check_checkpoint_folder",
    "clean_partial_checkpoints",
    "find_checkpoints",
    "latest_checkpoint",
    "resume_from_checkpoint",
    "save_checkpoint",
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


def clean_partial_checkpoints(checkpoint_root: str | os.PathLike) -> list[Path]:
    """Remove what a killed save left behind: ``.checkpoint_<n>.partial`` (being written) and
    ``.checkpoint_<n>.deleting`` (being pruned) folders. Returns the removed folders."""
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    stale = [
        p
        for p in root.iterdir()
        if p.is_dir() and re.fullmatch(r"\.checkpoint_\d+\.(partial|deleting)", p.name)
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _next_checkpoint_number(checkpoint_root: Path) -> int:
    existing = find_checkpoints(checkpoint_root)
    return int(existing[-1].name.split("_")[1]) + 1 if existing else 0


def _prune_checkpoints(checkpoint_root: Path, total_limit: int | None) -> None:
    """Drop the oldest complete checkpoints beyond ``total_limit`` (each renamed away first, so a kill while
    deleting never leaves a half-deleted ``checkpoint_<n>``); incomplete ``checkpoint_<n>`` folders never count."""
    if total_limit is None:
        return
    complete = [p for p in find_checkpoints(checkpoint_root) if (p / PROGRESS_FILE).is_file()]
    for old in complete[: max(len(complete) - total_limit, 0)]:
        doomed = old.parent / f".{old.name}.deleting"
        os.rename(old, doomed)
        shutil.rmtree(doomed)


def save_checkpoint(
    accelerator,
    progress: TrainingProgress,
    checkpoint_root: str | os.PathLike,
    total_limit: int | None = None,
) -> Path:
    """Save a resumable checkpoint so that a kill at any moment leaves the last complete one intact.

    ``accelerator.save_state`` writes ``.checkpoint_<n>.partial``; the main process adds :data:`PROGRESS_FILE`,
    renames the folder to ``checkpoint_<n>`` (atomic) and only then prunes the oldest complete checkpoints beyond
    ``total_limit``. (accelerate's automatic naming prunes *before* writing, so a kill lost the only checkpoint.)
    """
    root = Path(checkpoint_root)
    final = root / f"checkpoint_{_next_checkpoint_number(root)}"
    partial = root / f".{final.name}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = partial / (PROGRESS_FILE + ".tmp")
        tmp.write_text(json.dumps(progress.state_dict(), indent=2))
        os.replace(tmp, partial / PROGRESS_FILE)
        replace_folder(partial, final)  # the atomic step: the complete folder becomes checkpoint_<n>
        _prune_checkpoints(root, total_limit)
    accelerator.wait_for_everyone()
    return final


def check_checkpoint_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a complete checkpoint of these scripts whose weight files are readable, else a
    ``ValueError`` naming the folder or the damaged file (a truncated copy is common)."""
    from clip2point_hf.loading import check_safetensors_files

    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
    if not (path / PROGRESS_FILE).is_file():
        raise ValueError(
            f"--resume_from_checkpoint {path}: not a complete checkpoint of these scripts (no {PROGRESS_FILE})"
        )
    try:
        check_safetensors_files(path)
    except OSError as error:
        raise ValueError(f"--resume_from_checkpoint {error}") from None
    return path


def resume_from_checkpoint(
    accelerator, resume: str | None, checkpoint_root: str | os.PathLike, progress: TrainingProgress
):
    """Load the requested checkpoint (``"latest"`` or a folder) into the prepared objects and ``progress``.

    Returns the folder used, or ``None`` (nothing requested, or ``"latest"`` and no complete checkpoint yet).
    Later checkpoints are numbered after every existing folder (:func:`save_checkpoint`).
    """
    if not resume:
        return None
    if resume == "latest":
        path = latest_checkpoint(checkpoint_root)
        if path is None:
            accelerator.print(f"No complete checkpoint in {checkpoint_root}: starting from scratch.")
            return None
    path = check_checkpoint_folder(path if resume == "latest" else resume)
    expected = (progress.batches_per_epoch, progress.num_processes, progress.total_batch_size)
    try:
        accelerator.load_state(str(path))
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:  # damaged files, another model
        raise ValueError(f"--resume_from_checkpoint {path}: cannot be loaded ({first_line(error)})") from None
    found = (progress.batches_per_epoch, progress.num_processes, progress.total_batch_size)
    if found != expected:
        raise ValueError(
            f"{path} was written by a run with (batches per epoch, processes, global batch) = {found}, this run has "
            f"{expected}; resuming would not replay the same batches. Resume with the original settings."
        )
    accelerator.print(
        f"Resumed from {path}: epoch {progress.epoch}, batch {progress.step_in_epoch}, update {progress.completed_steps}"
    )
    return str(path)
