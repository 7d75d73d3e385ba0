"""Finding a model or tokenizer and loading it: a local folder, else the local Hub cache, else the Hub.

The Hub is reached only through huggingface_hub's own calls (``HfApi.model_info``, ``snapshot_download``), so its
settings apply as they do to transformers: ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``, ``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``, ``HF_HUB_CACHE`` and the user's token.
A name that exists on disk is never sent to the Hub. A Hub id already complete in the cache is used without
asking the Hub; otherwise the Hub is asked once (one metadata request, ``HF_HUB_ETAG_TIMEOUT`` seconds, which
huggingface_hub does not retry) before anything is downloaded, and not at all in offline mode.

Every way it can fail is one :class:`~clip2point_hf.errors.ModelLoadError` line naming the folder, file or id and
the cause: a missing folder, a file given for a folder, no ``config.json`` or weights, a truncated or corrupt
``.safetensors`` file, offline mode, a repository the Hub does not have, or the Hub's, proxy's or network's answer.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelLoadError, first_line

__all__ = [
    "TOKENIZER_FILES",
    "check_safetensors_files",
    "load_pretrained",
    "resolve_model",
    "resolve_tokenizer",
]

#: A folder holds a tokenizer when it has one of these: the vocabulary of a fast or of a slow tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
#: Weight files ``from_pretrained`` reads (safetensors preferred, single or sharded).
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
#: Downloaded with the weights: configs, processor and tokenizer files (``merges.txt``).
_CONFIG_PATTERNS = ["*.json", "*.txt"]


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


def _has_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in _WEIGHT_PATTERNS)


def _missing(folder: Path, what: str) -> str | None:
    """What ``folder`` lacks to be loaded as ``what`` (a tokenizer, else a model), or None."""
    if what == "tokenizer":
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            return None
        return f"no {' or '.join(TOKENIZER_FILES)}: not a saved tokenizer folder"
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not _has_weights(folder):
        missing.append("weights (*.safetensors or pytorch_model.bin)")
    return f"no {' and '.join(missing)}: not a saved {what} folder" if missing else None


def _hub_route() -> str:
    """The Hub endpoint and, where the environment routes it through one, the proxy: what the user must check
    when the Hub cannot be reached (the proxy as ``urllib`` reads it, which is also how huggingface_hub's HTTP
    client reads ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY``)."""
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(endpoint.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
        return f"{constants.ENDPOINT} through the proxy {proxy}"
    return constants.ENDPOINT


def _cached_snapshot(repo_id: str, what: str, cache_dir: str | os.PathLike | None) -> Path | None:
    """The id's snapshot in the Hub cache when it holds what ``what`` needs; never asks the Hub."""
    from huggingface_hub import try_to_load_from_cache

    for marker in TOKENIZER_FILES if what == "tokenizer" else ("config.json",):
        cached = try_to_load_from_cache(repo_id, marker, cache_dir=cache_dir)
        if isinstance(cached, str) and _missing(Path(cached).parent, what) is None:
            return Path(cached).parent
    return None


def _download(repo_id: str, what: str, cache_dir: str | os.PathLike | None, timeout: float | None) -> Path:
    """Ask the Hub once (``model_info``, bounded by ``timeout``, default ``HF_HUB_ETAG_TIMEOUT``), then download
    the config, processor and tokenizer files and, for a model, its weights."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    timeout = constants.HF_HUB_ETAG_TIMEOUT if timeout is None else timeout
    try:
        info = HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError:
        raise ModelLoadError(
            repo_id, f"gated on {constants.ENDPOINT}: log in with an accepted token"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            repo_id, f"no such folder, and no such model on {constants.ENDPOINT} (or a private one: log in)"
        ) from None
    except HfHubHTTPError as error:
        raise ModelLoadError(
            repo_id, f"not in the Hub cache, and {_hub_route()} answered: {first_line(error)}"
        ) from None
    except Exception as error:  # the HTTP client's own: proxy, connection, timeout
        raise ModelLoadError(
            repo_id,
            f"not in the Hub cache, and {_hub_route()} cannot be reached (one request, {timeout:g} s timeout): "
            f"{type(error).__name__}: {first_line(error)}",
        ) from None
    files = [sibling.rfilename for sibling in info.siblings or []]
    patterns = list(_CONFIG_PATTERNS)
    if what != "tokenizer":
        weights = [p for p in _WEIGHT_PATTERNS if any(Path(name).match(p) for name in files)]
        patterns += weights[:1]  # safetensors where the repository has both
    try:
        folder = snapshot_download(
            repo_id, cache_dir=cache_dir, allow_patterns=patterns, etag_timeout=timeout
        )
    except Exception as error:  # the connection dropped, the disk is full, a file vanished from the Hub
        raise ModelLoadError(repo_id, f"download from {_hub_route()} failed: {first_line(error)}") from None
    problem = _missing(Path(folder), what)
    if problem is not None:
        raise ModelLoadError(repo_id, f"on {constants.ENDPOINT}, but {problem}")
    return Path(folder)


def _resolve(
    name_or_path: str | os.PathLike, what: str, cache_dir: str | os.PathLike | None, timeout: float | None
) -> str:
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    source = str(name_or_path)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(path, f"is a file, not a {what} folder")
        problem = _missing(path, what)
        if problem is not None:
            raise ModelLoadError(path, f"{problem} (save_pretrained writes one)")
        check_safetensors_files(path)
        return str(path)
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise ModelLoadError(source, "no such folder (and not a Hub id of the form org/name)") from None
    cached = _cached_snapshot(source, what, cache_dir)
    if cached is not None:
        return str(cached)
    if is_offline_mode():
        raise ModelLoadError(source, "not in the Hub cache, and offline mode is on (HF_HUB_OFFLINE=1)")
    return str(_download(source, what, cache_dir, timeout))


def resolve_model(
    name_or_path: str | os.PathLike,
    what: str = "model",
    *,
    cache_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
) -> str:
    """The local folder holding the model ``name_or_path`` (a folder or a Hub id), with ``config.json`` and
    readable weights: the folder itself, the id's snapshot in the Hub cache, or the id downloaded (config,
    processor, tokenizer and weight files only). ``what`` names the model in the error messages.

    Raises :class:`ModelLoadError`, one line naming ``name_or_path`` and the cause. ``timeout`` bounds the one
    request that asks the Hub (default ``HF_HUB_ETAG_TIMEOUT``, 10 s unless set).
    """
    return _resolve(name_or_path, what, cache_dir, timeout)


def resolve_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
) -> str:
    """The local folder holding the tokenizer ``name_or_path`` (one of :data:`TOKENIZER_FILES`), found as
    :func:`resolve_model` finds a model; nothing but config and tokenizer files is downloaded."""
    return _resolve(name_or_path, "tokenizer", cache_dir, timeout)


def load_pretrained(cls, name_or_path: str | os.PathLike, what: str = "model", **kwargs):
    """``cls.from_pretrained`` on :func:`resolve_model`'s folder; its failures become one :class:`ModelLoadError`
    line naming ``name_or_path``."""
    source = resolve_model(name_or_path, what)
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        if isinstance(error, ModelLoadError):
            raise
        raise ModelLoadError(name_or_path, first_line(error)) from None
