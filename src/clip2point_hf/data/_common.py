"""Shared pieces of the loaders: generation through ``Dataset.from_generator``, sub-sampling,
normalisation, missing-file policy and file listing."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError, MissingFilesError

SAMPLING_METHODS = ("first", "fps", "random")
ON_MISSING = ("error", "skip")


def check_root(root, what: str = "dataset root") -> Path:
    if root is None:
        raise DatasetFormatError(None, f"no {what} given")
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetFormatError(path, f"{what} does not exist")
    if not path.is_dir():
        raise DatasetFormatError(path, f"{what} is not a folder")
    return path


def check_num_points(num_points, name: str = "num_points") -> int:
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ValueError(f"`{name}` must be a positive int, got {num_points!r}")
    return int(num_points)


def check_choice(value, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return value


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}")
    return int(seed)


def resolve_num_proc(num_proc, num_tasks: int) -> int:
    """``None`` -> all cores (at most 8) for builds of 64 files or more, else 1."""
    if num_proc is None:
        return min(os.cpu_count() or 1, 8) if num_tasks >= 64 else 1
    if isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"`num_proc` must be a positive int or None, got {num_proc!r}")
    return num_proc


def handle_missing(missing: list[str], listed: int, *, on_missing: str, where, hint: str = "") -> None:
    """Raise :class:`MissingFilesError` (``on_missing="error"``) or warn with the count (``"skip"``)."""
    if not missing:
        return
    if on_missing == "error":
        hint = hint or "pass on_missing='skip' to build from the files that are present"
        raise MissingFilesError(where, missing, listed, hint)
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    warnings.warn(
        f"{where}: skipping {len(missing)} of {listed} listed files that are missing (first: {shown})",
        stacklevel=3,
    )


def normalize_np(points: np.ndarray) -> np.ndarray:
    """Centre on the centroid and scale into the unit sphere (docs/design.md, "Normalisation")."""
    import torch

    from ..points_clip2point import normalize_point_cloud

    out, _, _ = normalize_point_cloud(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)))
    return out.numpy()


def subsample_indices(points: np.ndarray, num_points: int, method: str, rng: np.random.Generator | None):
    """Indices of ``num_points`` of ``points`` (``(N, 3)`` or ``(B, N, 3)``).

    ``first``: the first ``num_points`` (what PointNet-family loaders do); ``fps``: farthest-point
    sampling starting at index 0 (deterministic); ``random``: a seeded random subset, in index order.
    """
    n = points.shape[-2]
    if num_points > n:
        raise ValueError(f"cannot take {num_points} points from a cloud of {n}")
    if method == "first" or num_points == n:
        idx = np.arange(num_points)
        return np.broadcast_to(idx, (*points.shape[:-2], num_points))
    if method == "fps":
        import torch

        from ..points_clip2point import farthest_point_sample

        pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        return farthest_point_sample(pts, num_points, start_index=0).numpy()
    if method == "random":
        if points.ndim != 2:
            raise ValueError("random sub-sampling is per cloud")
        return np.sort(np.argsort(rng.random(n), kind="stable")[:num_points])
    raise ValueError(f"unknown sampling method {method!r}")


def check_finite(points: np.ndarray, path) -> None:
    if not np.isfinite(points).all():
        bad = int((~np.isfinite(points).reshape(-1, points.shape[-1]).all(axis=1)).sum())
        raise DatasetFormatError(path, f"{bad} points have NaN or infinite coordinates")


def _init_worker() -> None:
    try:  # one intra-op thread per build process
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _as_examples(out):
    return [out] if isinstance(out, dict) else out


#: Builds of at least this many tasks show a progress bar (on a terminal).
PROGRESS_MIN_TASKS = 20


def run_tasks(worker, tasks, num_proc: int, desc: str = "reading files", unit: str = "file"):
    """``worker(task)`` for every task, results in task order; a process pool when ``num_proc > 1``
    (forked workers with one torch thread each). A worker's exception reaches the caller as raised.

    Long builds show a tqdm bar in the calling (main) process; ``disable=None`` keeps it off logs and pipes.
    """
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(tasks), desc=desc, unit=unit, disable=None if len(tasks) >= PROGRESS_MIN_TASKS else True
    )
    with bar:
        for out in _run_tasks(worker, tasks, num_proc):
            bar.update()
            yield out


def _run_tasks(worker, tasks, num_proc: int):
    if num_proc <= 1:
        for task in tasks:
            yield worker(task)
        return
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    chunk = max(1, min(16, len(tasks) // (4 * num_proc)))
    with ctx.Pool(num_proc, initializer=_init_worker) as pool:
        yield from pool.imap(worker, tasks, chunksize=chunk)


def _generate(tasks, worker, num_proc):
    """``Dataset.from_generator`` body: ``worker(task)`` gives one example (a dict) or a list of them.

    With ``num_proc > 1`` the tasks run in a process pool (``imap``: results in task order); an
    exception raised by a worker reaches the caller with its own type and message.
    """
    for out in run_tasks(worker, tasks, num_proc):
        yield from _as_examples(out)


def unwrap_generation_error(exc: BaseException) -> BaseException:
    """The exception a worker raised, from inside ``datasets``' ``DatasetGenerationError`` chain."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if not type(cur).__module__.startswith("datasets"):
            return cur
        cur = cur.__cause__ or cur.__context__
    return exc


def generate_split(
    worker: Callable,
    tasks: list,
    features,
    *,
    split: str,
    scratch: Path,
    num_proc: int,
    key: str,
):
    """Run ``worker`` over ``tasks`` (in order) into an Arrow-backed ``Dataset`` under ``scratch``.

    The output order is the task order whatever ``num_proc`` is; every task must be independent
    (its own seed), so the content does not depend on ``num_proc`` either.
    """
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    if not tasks:
        return Dataset.from_dict({k: [] for k in features}, features=features, split=split)
    try:
        return Dataset.from_generator(
            _generate,
            features=features,
            gen_kwargs={"tasks": tuple(tasks), "worker": worker, "num_proc": min(num_proc, len(tasks))},
            cache_dir=str(scratch),
            split=split,
            fingerprint=f"{key}-{split}",
        )
    except DatasetGenerationError as exc:
        inner = unwrap_generation_error(exc)
        if inner is exc:
            raise
        raise inner from None


def natural_key(s: str):
    """Sort key putting ``x2`` before ``x10``."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def read_list_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read list file ({exc.strerror or exc})") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def read_split_list(path: Path, split: str) -> list[str]:
    """The entries of the list file naming ``split``'s examples (it must exist)."""
    if not path.is_file():
        raise DatasetFormatError(path, f"split list for '{split}' not found")
    return read_list_file(path)
