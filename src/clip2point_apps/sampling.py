"""Randomness that survives a resume: every draw keyed by ``(seed, stream, epoch, dataset index)``.

The shuffling of an epoch comes from ``(seed, epoch)``, each sample's draws (point subset, RGB view, zoom,
augmentation) from a generator keyed by ``(seed, stream, epoch, index)``, and the global RNG (dropout) is
re-seeded from ``(seed, epoch, step, process)`` before every step. A run killed mid-epoch and resumed therefore
replays exactly the batches and draws it would have made, whatever the number of processes, and a ``k``-process
run sees the same global batches as one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from clip2point_hf.seeding import keyed_generator, keyed_seed

__all__ = ["EpochSampler", "KeyedDataset", "seed_step"]


def seed_step(seed: int, epoch: int, step: int, process_index: int) -> None:
    """Re-seed the global RNGs (dropout, ...) from the step's coordinates, so a resumed step replays exactly."""
    torch.manual_seed(keyed_seed(seed, "step", epoch, step, process_index))


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` keys; the order of an epoch is a permutation keyed by ``(seed, epoch)``.

    The epoch travels with every key, so a dataset can draw each sample's randomness from
    ``(seed, epoch, index)`` in any worker process. ``set_epoch`` is called by Accelerate's data loader.
    """

    def __init__(self, num_samples: int, seed: int, *, shuffle: bool = True):
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(
                self.num_samples, generator=keyed_generator(self.seed, "order", self.epoch)
            ).tolist()
        else:
            order = range(self.num_samples)
        epoch = self.epoch
        for index in order:
            yield (epoch, index)


def _identity(batch):
    return batch


class KeyedDataset(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` read a batch at a time, each sample transformed with its own keyed generator.

    ``transform(rows, indices, generators)`` receives the rows (dict of columns; ``points`` as one numpy array),
    their dataset indices and one ``torch.Generator`` per row keyed by ``(seed, stream, epoch, index)``, and
    returns the batch dict. Use with :class:`EpochSampler` and :meth:`loader`.
    """

    def __init__(self, dataset, transform: Callable, seed: int, stream: str):
        self.dataset = dataset.with_format("numpy", columns=["points", "label"], output_all_columns=True)
        self.transform = transform
        self.seed = int(seed)
        self.stream = stream

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, keys):
        keys = [k if isinstance(k, tuple) else (0, int(k)) for k in keys]
        indices = [int(i) for _, i in keys]
        rows = self.dataset[indices]
        generators = [keyed_generator(self.seed, self.stream, int(e), int(i)) for e, i in keys]
        return self.transform(rows, indices, generators)

    def __getitem__(self, key):
        return self.__getitems__([key])

    def loader(self, batch_size: int, *, shuffle: bool, drop_last: bool, num_workers: int = 0):
        """A ``DataLoader`` over :class:`EpochSampler` keys: shuffled per epoch from ``(seed, epoch)`` with
        ``shuffle``, else in order."""
        sampler = EpochSampler(len(self), self.seed if shuffle else 0, shuffle=shuffle)
        return torch.utils.data.DataLoader(
            self,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=_identity,
            num_workers=num_workers,
            # the loader's own seed draws come from here, never from the global RNG
            generator=torch.Generator().manual_seed(0),
        )
