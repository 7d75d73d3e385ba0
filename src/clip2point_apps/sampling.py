"""Randomness that survives a resume: the global RNG (dropout) is re-seeded from ``(seed, epoch, step, process)``
before every step. The order of an epoch and each sample's draws come from the keyed loader
(:class:`clip2point_hf.data.KeyedDataset`), so a run killed mid-epoch and resumed replays exactly the batches and
draws it would have made, whatever the number of processes, and a ``k``-process run sees the same global batches
as one process.
"""

from __future__ import annotations

import torch

from clip2point_hf.seeding import keyed_seed

__all__ = ["seed_step"]


def seed_step(seed: int, epoch: int, step: int, process_index: int) -> None:
    """Re-seed the global RNGs (dropout, ...) from the step's coordinates, so a resumed step replays exactly."""
    torch.manual_seed(keyed_seed(seed, "step", epoch, step, process_index))
