"""What a person sees in the terminal: quiet libraries, warnings in one line, and a "did you mean" for a mistyped
option.

Only the command-line entry points (the ``clip2point`` command, the example scripts) call
:func:`configure_console`: a program that imports the package and calls, say, ``evaluation.main`` keeps its own
console. This module imports only the standard library, so the command uses it before torch and transformers load.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Sequence

__all__ = ["NEGATED_AXES", "configure_console", "join_negated_axes", "unrecognized_options_message"]

#: The up axes that start with ``-`` (``clip2point_hf.points_clip2point.UP_AXES`` holds all six; this module may not
#: import the library, which loads torch).
NEGATED_AXES = ("-x", "-y", "-z")
#: The options that take an up axis, in both spellings.
UP_AXIS_OPTIONS = ("--up_axis", "--up-axis")


def configure_console(*, verbose: bool) -> None:
    """The console of a command-line run: the answer, our own progress for long work, and warnings as one line
    (``warning: ...``, without the source line that raised them). ``verbose=True`` leaves the libraries'
    defaults: transformers' load/save bars, datasets' generate/save/cast bars, Hub bars."""
    if verbose:
        return
    import datasets
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    disable_progress_bars()
    logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.formatwarning = one_line_warning


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A ``warnings.formatwarning`` that prints ``warning: <message>`` alone."""
    return f"warning: {message}\n"


def unrecognized_options_message(arguments: Sequence[str], known_options: Iterable[str]) -> str:
    """``unrecognized option --lables (did you mean --labels?)``: names what argparse could not use, with the
    closest known option for each mistyped one. A dashed spelling (``--top-k``) is compared as the underscored
    one it stands for."""
    known = sorted({name for name in known_options if name.startswith("--")})
    unknown = [argument for argument in arguments if argument.startswith("-")]
    if not unknown:
        return f"unrecognized arguments: {' '.join(arguments)}"
    described = []
    for option in unknown:
        name = option.split("=", 1)[0]
        spelled = "--" + name[2:].replace("-", "_") if name.startswith("--") else name
        close = difflib.get_close_matches(spelled, known, n=1)
        described.append(f"{option} (did you mean {close[0]}?)" if close else option)
    return f"unrecognized option{'s' if len(unknown) > 1 else ''} {', '.join(described)}"


def join_negated_axes(arguments: Sequence[str]) -> list[str]:
    """``--up_axis -z`` as ``--up_axis=-z``: argparse takes a value that starts with ``-`` for an option (and then
    says ``--up_axis`` expects one argument), so without this only the ``=`` spelling of a negated axis works."""
    joined: list[str] = []
    arguments = list(arguments)
    i = 0
    while i < len(arguments):
        if arguments[i] in UP_AXIS_OPTIONS and i + 1 < len(arguments) and arguments[i + 1] in NEGATED_AXES:
            joined.append(f"{arguments[i]}={arguments[i + 1]}")
            i += 2
        else:
            joined.append(arguments[i])
            i += 1
    return joined
