"""Keyed randomness: every random draw of the package is seeded from its coordinates (a global seed plus a
file path, an epoch, a step...), so results do not depend on processing order, process count, machine or the
Python hash seed. Flat: the file readers (copied into Hub folders with the pipeline) sample surfaces with it."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["keyed_generator", "keyed_seed", "seeded_rng"]


def keyed_seed(*keys) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes, machines and Python versions)."""
    digest = hashlib.blake2b(repr(tuple(keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keyed_generator(*keys) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(keyed_seed(*keys))
    return generator


def seeded_rng(seed: int, key: str) -> np.random.Generator:
    """A numpy generator seeded from a global ``seed`` and a string ``key`` (e.g. a relative path).

    The stream depends only on ``(seed, key)``: not on the order files are processed in, the number of
    processes, the machine or the Python hash seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}")
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    seed = int(seed)
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, *words]))
    )
