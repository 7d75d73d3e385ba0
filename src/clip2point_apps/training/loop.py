"""The update loop every training script runs, and the scaffolding around it: :class:`TrainingRun` (the
accelerator, the output folder, the log) and :class:`PreparedTraining` (what accelerate prepared, the progress,
the resume)."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from clip2point_hf.atomic import atomic_folder

from ..arguments import RUN_ARGS_FILE
from ..hub import HubPushError, push_to_hub
from ..prediction import render_point_clouds
from ..sampling import seed_step
from ..tracking import JsonLogger, resolve_trackers, start_trackers, write_json
from .arguments import TrainingRunArguments
from .checkpointing import (
    TrainingProgress,
    clean_partial_checkpoints,
    resume_from_checkpoint,
    save_checkpoint,
)
from .optimization import build_lr_scheduler

if TYPE_CHECKING:
    from accelerate.optimizer import AcceleratedOptimizer
    from accelerate.scheduler import AcceleratedScheduler

__all__ = [
    "PreparedTraining",
    "TrainingRun",
    "best_metric_line",
    "finish_with_hub",
    "pretraining_inputs",
    "run_training",
    "setup_accelerator",
]


def pretraining_inputs(renderer, batch: Mapping) -> dict:
    """The model inputs of one pre-training step: the two depth maps of every object, rendered on the batch's
    device from the RGB rendering's view at the two zoom distances (a pure scale: nothing is clipped)."""
    angles = batch["view_angles"]
    b = angles.shape[0]
    views = torch.cat([angles[:, None, :].expand(b, 2, 2), batch["distances"][..., None]], dim=-1)
    depth = render_point_clouds(renderer, batch["points"], views)
    return {"pixel_values": batch["image"], "depth_pixel_values": depth}


def run_training(
    accelerator,
    args: TrainingRunArguments,
    model,
    optimizer,
    scheduler,
    train_loader,
    progress: TrainingProgress,
    *,
    compute_loss: Callable,
    total_updates: int,
    log: Callable,
    evaluate: Callable | None = None,
    on_best: Callable | None = None,
    checkpoint_root: str | os.PathLike | None = None,
) -> TrainingProgress:
    """The update loop of every script: gradient accumulation, per-step seeding, logging, validation, model
    selection and resumable checkpoints.

    ``compute_loss(batch) -> (loss, {name: scalar tensor})``; ``evaluate() -> (selection_metric, {name: value})``
    runs every ``eval_steps`` updates (default: every epoch); ``on_best()`` is called whenever the selection
    metric improves (``progress.best_metric`` is already updated). The loop resumes where ``progress`` says: the
    epoch's shuffling is rebuilt from ``(seed, epoch)`` and the consumed batches are skipped.
    """
    from tqdm.auto import tqdm

    batches = len(train_loader)
    updates_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
    num_epochs = math.ceil(total_updates / updates_per_epoch)
    every = None if args.checkpointing_steps in (None, "epoch") else int(args.checkpointing_steps)
    root = Path(checkpoint_root) if checkpoint_root is not None else Path(args.output_dir) / "checkpoints"

    def checkpoint():
        save_checkpoint(accelerator, progress, root, args.checkpoints_total_limit)

    bar = tqdm(
        total=total_updates,
        initial=progress.completed_steps,
        disable=not accelerator.is_local_main_process,
        desc="training",
    )
    sums: dict[str, float] = {}
    count = 0
    last_eval = [None]

    def validate():
        if evaluate is None:
            return
        last_eval[0] = progress.completed_steps
        model.eval()
        value, metrics = evaluate()
        model.train()
        log(metrics, progress.completed_steps)
        if progress.best_metric is None or value > progress.best_metric:
            progress.best_metric, progress.best_step = float(value), progress.completed_steps
            if on_best is not None:
                on_best()

    if progress.step_in_epoch >= batches:  # a checkpoint taken at the very end of an epoch
        progress.epoch, progress.step_in_epoch = progress.epoch + 1, 0
    done = progress.completed_steps >= total_updates
    for epoch in range(progress.epoch, num_epochs):
        if done:
            break
        progress.epoch = epoch
        train_loader.set_epoch(epoch)
        loader = train_loader
        if progress.step_in_epoch > 0:
            loader = accelerator.skip_first_batches(train_loader, progress.step_in_epoch)
            loader.set_epoch(epoch)
        model.train()
        for batch in loader:
            seed_step(args.seed, epoch, progress.step_in_epoch, accelerator.process_index)
            with accelerator.accumulate(model):
                loss, extras = compute_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            progress.step_in_epoch += 1
            for name, value in {"loss": loss, **extras}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach().float())
            count += 1
            if not accelerator.sync_gradients:
                continue
            progress.completed_steps += 1
            bar.update(1)
            if (
                progress.completed_steps % args.logging_steps == 0
                or progress.completed_steps == total_updates
            ):
                keys = sorted(sums)
                mean = accelerator.reduce(
                    torch.tensor([sums[k] / count for k in keys], device=accelerator.device), reduction="mean"
                )
                means = {f"train/{k}": float(v) for k, v in zip(keys, mean.tolist())}
                means["train/learning_rate"] = scheduler.get_last_lr()[0]
                means["train/epoch"] = epoch + progress.step_in_epoch / batches
                log(means, progress.completed_steps)
                bar.set_postfix(loss=f"{means['train/loss']:.4f}")
                sums, count = {}, 0
            if args.eval_steps and progress.completed_steps % args.eval_steps == 0:
                validate()
            if every and progress.completed_steps % every == 0:
                checkpoint()
            if progress.completed_steps >= total_updates:
                done = True
                break
        if progress.step_in_epoch >= batches:
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            if not args.eval_steps:
                validate()
            if args.checkpointing_steps == "epoch":
                checkpoint()
    if evaluate is not None and last_eval[0] != progress.completed_steps and progress.completed_steps > 0:
        validate()  # the final weights are always a candidate
    bar.close()
    return progress


def setup_accelerator(args: TrainingRunArguments):
    """An ``Accelerator`` logging under ``<output_dir>/runs``, with the trackers. Checkpoints are named and pruned
    by :func:`save_checkpoint` (accelerate's automatic naming prunes before it writes)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(
        project_dir=str(args.output_dir),
        logging_dir=str(Path(args.output_dir) / "runs"),
    )
    kwargs = {} if args.mixed_precision is None else {"mixed_precision": args.mixed_precision}
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=resolve_trackers(args.report_to),
        project_config=project,
        step_scheduler_with_optimizer=False,
        **kwargs,
    )


def finish_with_hub(accelerator, args: TrainingRunArguments, folder: str | os.PathLike) -> None:
    """``--push_to_hub``: upload ``folder`` (already saved locally); exit 1 with one clear line on failure."""
    if not args.push_to_hub:
        return
    if accelerator.is_main_process:
        repo = args.hub_model_id or Path(args.output_dir).resolve().name
        try:
            url = push_to_hub(folder, repo, token=args.hub_token, private=args.hub_private_repo)
        except HubPushError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        print(f"Pushed to {url}", flush=True)
    accelerator.wait_for_everyone()


class TrainingRun:
    """The scaffolding every training script shares, in the order a script uses it; each attribute is set once
    the run is constructed.

    ``TrainingRun(args)`` creates the ``Accelerator`` (checkpoints under ``<output_dir>/checkpoints``, trackers)
    and the JSON log (:attr:`log`); :meth:`prepare` prepares model, optimizer and LR schedule and resumes, and
    returns the :class:`PreparedTraining` that trains them; :meth:`record_config` writes ``run_args.json`` and
    starts the trackers; :meth:`save_best` keeps the best model in ``<output_dir>/best_model``; :meth:`finish`
    ends the trackers and pushes to the Hub. What a script computes (its data, model, loss and evaluation) stays
    in the script.
    """

    def __init__(self, args: TrainingRunArguments):
        self.args = args
        self.output_dir = Path(args.output_dir)  # created by the first write, once inputs are validated
        self.accelerator = setup_accelerator(args)
        self.log = JsonLogger(self.accelerator, self.output_dir)
        self.best_dir = self.output_dir / "best_model"
        self.checkpoint_root = self.output_dir / "checkpoints"
        if self.accelerator.is_main_process:
            clean_partial_checkpoints(self.checkpoint_root)  # what a killed save left

    def prepare(self, model, optimizer, train_loader, *, per_device_batch_size: int) -> PreparedTraining:
        """Model, ``optimizer`` and the LR schedule prepared by accelerate, the progress registered for
        checkpointing and, with ``--resume_from_checkpoint``, restored; ``train_loader`` must be prepared already.
        The schedule spans ``--max_train_steps`` or the epochs' updates."""
        args, accelerator = self.args, self.accelerator
        updates_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
        total_updates = args.max_train_steps or args.num_train_epochs * updates_per_epoch
        scheduler = build_lr_scheduler(optimizer, args, total_updates, updates_per_epoch)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        progress = TrainingProgress(
            batches_per_epoch=len(train_loader),
            num_processes=accelerator.num_processes,
            total_batch_size=per_device_batch_size
            * accelerator.num_processes
            * args.gradient_accumulation_steps,
        )
        accelerator.register_for_checkpointing(progress)
        resumed = resume_from_checkpoint(
            accelerator, args.resume_from_checkpoint, self.checkpoint_root, progress
        )
        return PreparedTraining(
            run=self,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            train_loader=train_loader,
            progress=progress,
            total_updates=total_updates,
            resumed=resumed,
        )

    def record_config(self, project_name: str, config: Mapping) -> None:
        """``<output_dir>/run_args.json`` (main process) and the trackers' hyper-parameters."""
        if self.accelerator.is_main_process:
            write_json(self.output_dir / RUN_ARGS_FILE, config)
        start_trackers(self.accelerator, project_name, config)

    def save_best(self, model) -> None:
        """Save ``model`` (unwrapped) as the best one so far, atomically; every process calls it."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with atomic_folder(self.best_dir) as tmp:
                model.save_pretrained(tmp)
        self.accelerator.wait_for_everyone()

    def best_model_dir(self) -> Path | None:
        """The saved best model to finish with (``--load_best_model_at_end`` and one was saved), else ``None``."""
        if self.args.load_best_model_at_end and (self.best_dir / "config.json").is_file():
            return self.best_dir
        return None

    def finish(self, summary: Sequence[str] = ()) -> None:
        """End the trackers and, with ``--push_to_hub``, upload the output folder (saved by then); then print
        ``summary`` (what a person reads at the end: best and test metrics, where the model is, how to use it)."""
        self.accelerator.end_training()
        finish_with_hub(self.accelerator, self.args, self.output_dir)
        if summary and self.accelerator.is_main_process:
            print("\n".join(["", "Summary", *(f"  {line}" for line in summary)]), flush=True)


@dataclass
class PreparedTraining:
    """What :meth:`TrainingRun.prepare` returns: the prepared model, optimizer, schedule and loader, where the run
    is (``progress``, restored on resume), how long it goes (``total_updates``) and the checkpoint folder it
    resumed from (``resumed``, ``None`` for a fresh start)."""

    run: TrainingRun
    model: torch.nn.Module
    optimizer: AcceleratedOptimizer
    scheduler: AcceleratedScheduler
    train_loader: torch.utils.data.DataLoader
    progress: TrainingProgress
    total_updates: int
    resumed: str | None

    def train(
        self, compute_loss: Callable, *, evaluate: Callable | None = None, on_best: Callable | None = None
    ) -> TrainingProgress:
        """:func:`run_training` on the prepared objects, logging to the run's JSON log and trackers."""
        return run_training(
            self.run.accelerator,
            self.run.args,
            self.model,
            self.optimizer,
            self.scheduler,
            self.train_loader,
            self.progress,
            compute_loss=compute_loss,
            total_updates=self.total_updates,
            log=self.run.log,
            evaluate=evaluate,
            on_best=on_best,
            checkpoint_root=self.run.checkpoint_root,
        )


def best_metric_line(name: str, progress: TrainingProgress) -> str:
    """``best validation <name>: 71.25% at step 300 (of 400)``, or why there is none."""
    if progress.best_metric is None:
        return f"best validation {name}: none (no validation ran)"
    return (
        f"best validation {name}: {100 * progress.best_metric:.2f}% at step {progress.best_step} "
        f"(of {progress.completed_steps})"
    )
