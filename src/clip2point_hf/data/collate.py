"""Batching point-cloud rows into tensors, and the one data loader: a batch read from Arrow with one query, each
row drawn with its own keyed generator.

``KeyedDataset(ds, transform, seed, stream).loader(batch_size, shuffle=..., drop_last=...)`` applies a transform of
:mod:`clip2point_hf.data.transforms` (or none: tensors only); the order of an epoch comes from ``(seed, epoch)``
and each row's draws from ``(seed, stream, epoch, index)``, so a resumed or multi-process run replays exactly
the same batches and draws (see docs/design.md, "Seeded and keyed randomness"). Call
``loader.sampler.set_epoch(epoch)`` before each epoch (Accelerate's prepared loaders do it).
:func:`collate_point_clouds` stacks a list of examples for a plain ``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..seeding import keyed_generator

__all__ = ["EpochSampler", "KeyedDataset", "batch_to_tensors", "collate_point_clouds"]


def _to_tensor(values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.float()
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return torch.stack([torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in values])


def _stack_column(values):
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(list(values))
    if isinstance(first, np.ndarray):
        return torch.from_numpy(np.stack(values))
    if isinstance(first, (bool, int, np.integer)):
        return torch.as_tensor(np.asarray(values, dtype=np.int64))
    if isinstance(first, (float, np.floating)):
        return torch.as_tensor(np.asarray(values, dtype=np.float32))
    return list(values)


def collate_point_clouds(examples: Sequence[Mapping]) -> dict:
    """Stack a list of examples: arrays/tensors -> one tensor, ints -> ``LongTensor``, strings -> list."""
    if not examples:
        return {}
    out = {}
    for key in examples[0]:
        values = [ex[key] for ex in examples]
        if key in ("points", "normals") and not isinstance(values[0], (torch.Tensor, np.ndarray)):
            out[key] = _to_tensor(values)
        else:
            out[key] = _stack_column(values)
    return out


def batch_to_tensors(batch: Mapping) -> dict:
    """A batch dict (numpy-formatted) -> tensors for numeric arrays, lists for everything else."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, torch.Tensor):
            out[key] = value
        else:
            out[key] = list(value)
    return out


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


def _tensors_only(rows: Mapping, indices: Sequence[int], generators: Sequence[torch.Generator]) -> dict:
    return batch_to_tensors(rows)


class KeyedDataset(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` read a batch at a time, each sample transformed with its own keyed generator.

    ``transform(rows, indices, generators)`` receives the rows (dict of columns; ``points``, ``normals`` and
    ``label`` as numpy arrays), their dataset indices and one ``torch.Generator`` per row keyed by
    ``(seed, stream, epoch, index)``, and returns the batch dict; ``None`` turns the numeric columns into tensors
    and the others into lists. Use with :class:`EpochSampler` and :meth:`loader`.
    """

    def __init__(self, dataset, transform: Callable | None, seed: int, stream: str):
        numeric = [c for c in ("points", "normals", "label") if c in dataset.column_names]
        self.dataset = dataset.with_format("numpy", columns=numeric, output_all_columns=True)
        self.transform = transform if transform is not None else _tensors_only
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
