"""Optimiser (AdamW or LAMB, no decay on biases/norms/scales) and the per-update learning-rate schedule."""

from __future__ import annotations

import math

import torch

from .arguments import TrainingRunArguments

__all__ = ["build_lr_scheduler", "build_optimizer", "lr_multiplier"]


def build_optimizer(model: torch.nn.Module, args: TrainingRunArguments, parameters=None):
    """AdamW (default; LAMB's stand-in, docs/design.md "Image-depth pre-training") or LAMB from timm, over trainable parameters.

    Weight decay skips biases, norm layers and scalar/vector parameters (scales, gates, the balance weight).
    ``parameters`` may be a list of ``(name, parameter)`` or of param-group dicts.
    """
    named = (
        parameters
        if parameters is not None
        else [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    )
    if named and isinstance(named[0], dict):
        groups = named
    else:
        decay = [p for n, p in named if p.ndim >= 2 and "norm" not in n.lower()]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and "norm" not in n.lower())]
        groups = [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if args.optimizer == "lamb":
        try:
            from timm.optim import Lamb
        except ImportError as error:
            raise ImportError("--optimizer lamb needs the timm package (pip install timm)") from error
        return Lamb(groups, lr=args.learning_rate)
    return torch.optim.AdamW(groups, lr=args.learning_rate)


def lr_multiplier(step: int, kind: str, total: int, warmup: int, period: int, floor: float) -> float:
    """The schedule as a multiple of the peak rate at update ``step`` (0-based); ``floor`` = min / peak."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = step - warmup
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, 1.0 - t / max(1, total - warmup))
    if kind == "cosine":
        p = min(1.0, t / max(1, total - warmup))
    elif kind == "cosine_restarts":
        p = (t % max(1, period)) / max(1, period)
    else:
        raise ValueError(f"unknown --lr_scheduler_type {kind!r}")
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def build_lr_scheduler(optimizer, args: TrainingRunArguments, total_updates: int, updates_per_epoch: int):
    """A ``LambdaLR`` stepped once per optimiser update (its state is the update count: exact on resume)."""
    import functools

    floor = args.min_learning_rate / args.learning_rate
    period = max(1, round(args.restart_epochs * updates_per_epoch))
    fn = functools.partial(
        lr_multiplier,
        kind=args.lr_scheduler_type,
        total=total_updates,
        warmup=args.warmup_steps,
        period=period,
        floor=floor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
