"""Errors raised by the dataset loaders: every message names the file (or folder) and the problem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["DatasetFormatError", "MissingFilesError"]


class DatasetFormatError(ValueError):
    """A file or folder is missing, unreadable or not in the expected format.

    ``str(err)`` is ``"<path>: <problem>"``; the two parts are also available as ``err.path`` and
    ``err.problem``. The exception pickles (it crosses process boundaries when building with
    ``num_proc > 1``).
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = str(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path is not None else self.problem)

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class MissingFilesError(DatasetFormatError):
    """A split list (or an expected layout) names files that are not on disk.

    ``err.missing`` holds every missing name, ``err.listed`` how many the list named in total.
    """

    def __init__(
        self, path: str | Path | None, missing: Sequence[str], listed: int | None = None, hint: str = ""
    ):
        self.missing = list(missing)
        self.listed = listed
        self.hint = hint
        shown = ", ".join(self.missing[:10]) + (", ..." if len(self.missing) > 10 else "")
        of = f" of {listed}" if listed is not None else ""
        problem = f"{len(self.missing)}{of} listed files are missing (first: {shown})"
        if hint:
            problem += f"; {hint}"
        super().__init__(path, problem)

    def __reduce__(self):
        return (_rebuild_missing, (self.path, self.missing, self.listed, self.hint))


def _rebuild_missing(path, missing, listed, hint):
    return MissingFilesError(path, missing, listed, hint)
