"""Errors naming the culprit (every message names the file, folder or argument and the problem), and how the
scripts print them: a user's mistake is one line and exit code 2, a bug keeps its traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "SCRIPT_USER_ERRORS",
    "DatasetFormatError",
    "MissingFilesError",
    "ModelLoadError",
    "first_line",
    "run_script",
]

#: What a script treats as the user's mistake (a bad path, option value, file or checkpoint): the checks of this
#: package raise ``ValueError`` (``DatasetFormatError``...) or ``OSError`` (``ModelLoadError``, missing files).
SCRIPT_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def first_line(error: BaseException) -> str:
    """The first line of ``str(error)`` (the type's name when empty)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def run_script(main: Callable, argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Run a script's ``main(argv)``: a user error ends in ``<prog>: error: <one line>`` on stderr and exit code 2
    (``CLIP2POINT_DEBUG=1`` re-raises it with its traceback); any other exception (a bug) keeps its traceback."""
    prog = prog or Path(sys.argv[0]).name
    try:
        main(list(sys.argv[1:] if argv is None else argv))
    except SCRIPT_USER_ERRORS as error:
        if os.environ.get("CLIP2POINT_DEBUG"):
            raise
        print(f"{prog}: error: {first_line(error)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


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


class ModelLoadError(OSError):
    """A model or tokenizer folder or Hub id cannot be loaded: ``str(err)`` is ``"<source>: <problem>"``.

    An ``OSError`` because that is what ``from_pretrained`` raises, so existing handlers keep working.
    """

    def __init__(self, source: str | os.PathLike, problem: str):
        self.source, self.problem = str(source), problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self):
        return (type(self), (self.source, self.problem))
