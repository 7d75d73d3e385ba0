"""Seeded subsets of a labelled split: validation hold-outs, K-shot training sets, ``--max_*_samples`` limits.

Both draw from a generator keyed by the seed and a stream name (:func:`clip2point_hf.seeding.keyed_seed`), so a
split is the same on every process and every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..seeding import keyed_seed

__all__ = ["random_subset", "sample_k_shot", "stratified_split"]


def stratified_split(labels: Sequence[int], fraction: float, seed: int, stream: str = "validation"):
    """Split indices per class: ``round(n_c * fraction)`` of each class (at least one when the class has two or
    more examples and ``fraction > 0``) go to the held-out part. Returns ``(kept, held_out)``, sorted."""
    labels = np.asarray(labels)
    g = np.random.default_rng(keyed_seed(seed, stream))
    kept, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[g.permutation(len(idx))]
        k = round(len(idx) * fraction)
        if fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        held.extend(idx[:k].tolist())
        kept.extend(idx[k:].tolist())
    return sorted(kept), sorted(held)


def sample_k_shot(
    labels: Sequence[int], indices: Sequence[int], shots: int, seed: int
) -> tuple[list[int], dict]:
    """``shots`` examples per class from ``indices`` (seeded); classes with fewer keep all (reported)."""
    labels = np.asarray(labels)
    indices = np.asarray(sorted(indices))
    g = np.random.default_rng(keyed_seed(seed, "k-shot", shots))
    chosen, short = [], {}
    for c in np.unique(labels):
        idx = indices[labels[indices] == c]
        if len(idx) < shots:
            short[int(c)] = len(idx)
        chosen.extend(idx[g.permutation(len(idx))[:shots]].tolist())
    return sorted(chosen), short


def random_subset(indices: Sequence[int], limit: int | None, seed: int, *stream) -> list[int]:
    """At most ``limit`` of ``indices`` (sorted), drawn with a generator keyed by ``(seed, *stream)``; all of
    them (unchanged) when ``limit`` is ``None`` or not smaller."""
    if limit is None or limit >= len(indices):
        return indices
    g = np.random.default_rng(keyed_seed(seed, *stream))
    return sorted(np.asarray(indices)[g.permutation(len(indices))[:limit]].tolist())
