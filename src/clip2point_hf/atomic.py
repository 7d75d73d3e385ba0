"""Folders that appear whole or not at all: each is written under a temporary name beside its place and renamed
into it when complete, so a process killed at any moment (SIGKILL, power loss) never leaves a half-written folder
under the final name (see docs/design.md, "Writes that survive a kill").

A temporary folder's name, ``.<role>-<name>-<pid>-<host>-<random>``, says which process on which machine owns it;
:func:`clean_stale_work_folders` removes those whose process is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "FOREIGN_STALE_SECONDS",
    "atomic_folder",
    "clean_stale_work_folders",
    "replace_folder",
    "work_folder",
]

logger = logging.getLogger(__name__)

#: A work folder's name: ``.<tmp|scratch|old>-<name>-<pid>-<host>-<random>``.
_WORK_FOLDER = re.compile(
    r"\.(?:tmp|scratch|old)-(?P<name>.+)-(?P<pid>\d+)-(?P<host>[A-Za-z0-9]*)-[0-9a-f]{8}"
)
#: Another machine's (shared file system) work folder is stale only after this many seconds.
FOREIGN_STALE_SECONDS = 24 * 3600


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def work_folder(target: str | os.PathLike, role: str = "tmp", *, pid: int | None = None) -> Path:
    """A fresh name beside ``target`` for this process's (or ``pid``'s) ``role`` folder: ``"tmp"`` (the folder
    being written), ``"scratch"`` (intermediate files) or ``"old"`` (the folder being replaced)."""
    if role not in ("tmp", "scratch", "old"):
        raise ValueError(f"`role` must be 'tmp', 'scratch' or 'old', got {role!r}")
    target = Path(target)
    owner = os.getpid() if pid is None else int(pid)
    return target.parent / f".{role}-{target.name}-{owner}-{_host_tag()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_work_folders(base: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the work folders of killed processes under ``base`` (only those of target ``name`` when given).

    A folder is stale when its process (the pid in its name) is no longer alive on this machine, or, for a
    folder another machine wrote (a shared file system), when it has not changed for ``FOREIGN_STALE_SECONDS``.
    A live process's folders are never touched. Returns the removed folders.
    """
    base, host, removed = Path(base), _host_tag(), []
    if not base.is_dir():
        return removed
    for path in base.iterdir():
        found = _WORK_FOLDER.fullmatch(path.name)
        if found is None or not path.is_dir() or (name is not None and found["name"] != name):
            continue
        if found["host"] == host:
            stale = not _pid_alive(int(found["pid"]))
        else:
            stale = time.time() - path.stat().st_mtime > FOREIGN_STALE_SECONDS
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        logger.info("removed %d folders of killed processes: %s", len(removed), [p.name for p in removed])
    return removed


def replace_folder(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the complete folder ``source`` in the place of ``target``, which may exist.

    A new ``target`` is one rename (atomic). An existing one is renamed aside first, then removed: a kill between
    the two renames leaves no ``target`` (both versions stay complete under their work names until cleaned), never
    a mixture of the two.
    """
    source, target = Path(source), Path(target)
    if not target.exists():
        os.rename(source, target)
        return
    old = work_folder(target, "old")
    os.rename(target, old)
    os.rename(source, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Write a folder atomically: ``with atomic_folder(target) as tmp:`` yields an empty work folder beside
    ``target``; when the block ends normally it replaces ``target`` (:func:`replace_folder`), and when it raises
    (``KeyboardInterrupt`` included) it is removed. Work folders that killed writers of ``target`` left are
    removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_work_folders(target.parent, target.name)
    tmp = work_folder(target, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
