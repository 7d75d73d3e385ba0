"""Where a model comes from (a folder or a Hub id), checked before transformers reads it, so that every way it
can fail is one line naming the folder, file or id and the cause, in seconds: a missing folder, a file given
for a folder, no ``config.json``, a truncated or corrupt ``.safetensors`` file (an interrupted download or copy),
offline mode, an unreachable Hub (probed once, with a short timeout, instead of transformers' retry loop).

The CLI, the evaluation script, the training scripts' ``--clip``/``--clip2point`` and the demo call
:func:`resolve_model`; :func:`load_pretrained` wraps ``from_pretrained`` with it.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from .errors import first_line

__all__ = [
    "ModelLoadError",
    "check_safetensors_files",
    "hub_is_reachable",
    "is_hub_id",
    "is_offline",
    "load_pretrained",
    "resolve_model",
]

#: Seconds to wait for the Hub before calling it unreachable.
HUB_TIMEOUT = 3.0

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hub repo id (``name`` or ``org/name``)."""
    return bool(_HUB_ID.fullmatch(text)) and text.count("/") <= 1


class ModelLoadError(OSError):
    """A model folder or Hub id cannot be loaded: ``str(err)`` is ``"<source>: <problem>"``.

    An ``OSError`` because that is what ``from_pretrained`` raises, so existing handlers keep working.
    """

    def __init__(self, source: str | os.PathLike, problem: str):
        self.source, self.problem = str(source), problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self):
        return (type(self), (self.source, self.problem))


def check_safetensors_files(folder: str | os.PathLike) -> None:
    """Open the header of every ``*.safetensors`` file in ``folder``: a truncated or corrupt file is a
    :class:`ModelLoadError` naming it (safetensors' own message names no file)."""
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # SafetensorError, OSError: the file, not the code, is at fault
            raise ModelLoadError(
                path, f"truncated or corrupt safetensors file ({first_line(error)})"
            ) from None


def hub_is_reachable(timeout: float = HUB_TIMEOUT) -> tuple[bool, str]:
    """``(reachable, why_not)``: one TCP connection to the Hub endpoint, bounded by ``timeout`` seconds (name
    resolution included, which a socket timeout does not cover)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    outcome: list = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append("")
        except OSError as error:
            outcome.append(str(error) or type(error).__name__)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return False, f"no answer from {constants.ENDPOINT} within {timeout:g} s"
    return (not outcome[0]), (f"cannot reach {constants.ENDPOINT}: {outcome[0]}" if outcome[0] else "")


def is_offline() -> bool:
    """Offline mode as huggingface_hub reads it (``HF_HUB_OFFLINE``), or transformers' ``TRANSFORMERS_OFFLINE``."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }


def resolve_model(
    name_or_path: str | os.PathLike, what: str = "model", required_file: str | None = "config.json"
) -> str:
    """The folder to load, or the Hub id when the Hub will be asked; a :class:`ModelLoadError` otherwise.

    A folder must hold ``config.json`` and readable ``.safetensors`` files. A Hub id already in the local cache
    resolves to its cached snapshot folder when the Hub cannot be asked (offline mode, or unreachable), so
    nothing waits on the network; one that is not cached fails at once, saying why. ``required_file=None``
    (a tokenizer folder) drops the ``config.json`` requirement.
    """
    source = str(name_or_path)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(path, f"is a file, not a {what} folder")
        if required_file and not (path / required_file).is_file():
            raise ModelLoadError(
                path, f"no {required_file}: not a saved {what} folder (save_pretrained writes one)"
            )
        check_safetensors_files(path)
        return str(path)
    if not is_hub_id(source):
        raise ModelLoadError(source, "no such folder (and not a Hub id of the form org/name)")
    offline = is_offline()
    reason = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else None
    if not offline:
        reachable, why = hub_is_reachable()
        if reachable:
            return source
        reason = why
    cached = _cached_snapshot(source, required_file)
    if cached is not None:
        return cached
    raise ModelLoadError(
        source,
        f"not a local folder, not in the Hub cache, and cannot be downloaded: {reason}",
    )


def _cached_snapshot(repo_id: str, required_file: str | None) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError) or an unusable cache entry
        return None
    return folder if not required_file or (Path(folder) / required_file).is_file() else None


def load_pretrained(cls, name_or_path: str | os.PathLike, what: str = "model", **kwargs):
    """``cls.from_pretrained`` on :func:`resolve_model`'s answer; its failures become one :class:`ModelLoadError`
    line naming ``name_or_path``."""
    source = resolve_model(name_or_path, what)
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        if isinstance(error, ModelLoadError):
            raise
        raise ModelLoadError(name_or_path, first_line(error)) from None
