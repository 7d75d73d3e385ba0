"""Finding a model (`clip2point_hf.loading`): a folder, the Hub cache, or the Hub through huggingface_hub's own
client, so that the user's proxy, ``HF_ENDPOINT``, timeout and offline mode apply. The Hub, the proxy and the
network are servers on 127.0.0.1 that record what they are asked; nothing leaves the machine."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import close_session, constants

from clip2point_hf import CLIP2PointModel
from clip2point_hf.errors import ModelLoadError
from clip2point_hf.loading import resolve_model, resolve_tokenizer
from clip2point_hf.testing_utils import make_tiny_config, make_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
REVISION = "0123456789abcdef0123456789abcdef01234567"


class LoopbackServer:
    """A server on 127.0.0.1 that records the request line of every request and answers each with ``reply``
    (raw HTTP), or, with ``reply=None``, holds the connection ``hold_s`` seconds without a word, then closes it."""

    def __init__(self, reply: bytes | None, hold_s: float = 30.0):
        self.reply, self.hold_s = reply, hold_s
        self.requests: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            head = b""
            while b"\r\n\r\n" not in head and (chunk := connection.recv(65536)):
                head += chunk
            self.requests.append(head.split(b"\r\n", 1)[0].decode())
            if self.reply is None:
                self._stopped.wait(self.hold_s)
            else:
                connection.sendall(self.reply)

    @property
    def model_requests(self) -> list[str]:
        """The requests but huggingface_hub's own fetch of its agent registry (once a day, on its first request)."""
        return [line for line in self.requests if " /api/agent-harnesses " not in line]

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()


def http_reply(status: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def loopback() -> Iterator[Callable[..., LoopbackServer]]:
    """Start :class:`LoopbackServer` s; all are closed after the test."""
    servers: list[LoopbackServer] = []

    def start(reply: bytes | None, hold_s: float = 30.0) -> LoopbackServer:
        servers.append(LoopbackServer(reply, hold_s))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def without_proxies(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.upper() not in PROXY_VARIABLES}


@pytest.fixture
def online(monkeypatch, loopback):
    """Offline mode off in this process (huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, into
    ``constants.HF_HUB_OFFLINE``, which its ``is_offline_mode()`` returns), and every request that is not for a
    server on 127.0.0.1 sent to a guard proxy that refuses it, so nothing reaches the network; the guard must
    not have been asked. huggingface_hub's shared HTTP client reads the proxy variables when built: a fresh one
    before and after."""
    guard = loopback(http_reply("403 Forbidden"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", guard.url)
    monkeypatch.setenv("HTTP_PROXY", guard.url)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    close_session()
    yield
    close_session()
    assert guard.requests == [], "a request left for the network"


def use_endpoint(monkeypatch, url: str) -> None:
    """What ``HF_ENDPOINT=url`` sets when huggingface_hub is imported: the API's and the file downloads' base."""
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )


def put_in_hub_cache(cache: Path, repo_id: str, save) -> Path:
    """Write a model into ``cache`` in huggingface_hub's layout (models--org--name/snapshots/<rev>/, refs/main),
    so that ``from_pretrained(repo_id)`` finds it offline."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    save(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def save_tiny_clip2point(folder: Path) -> None:
    torch.manual_seed(3)
    CLIP2PointModel(make_tiny_config()).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)


def test_uncached_hub_id_goes_through_the_proxy_and_the_user_gets_its_answer(tmp_path, loopback):
    """As a user on a proxy-only network runs it: HTTPS_PROXY/HTTP_PROXY set, HF_HUB_OFFLINE unset, read by
    huggingface_hub at import (hence the process). The CLI asks the Hub through the proxy, which refuses."""
    proxy = loopback(http_reply("403 Forbidden"))
    np.save(tmp_path / "cloud.npy", np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32))
    env = without_proxies(os.environ)
    env = {k: v for k, v in env.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"}}
    env.update(PYTHONPATH=str(ROOT / "src"), HF_HUB_CACHE=str(tmp_path / "hub"))
    env.update(HTTPS_PROXY=proxy.url, HTTP_PROXY=proxy.url)
    command = [sys.executable, "-m", "clip2point_apps.cli", "classify", str(tmp_path / "cloud.npy")]
    command += ["--labels", "a,b", "--model", "someone/not-cached-model"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    # The tunnel asked for is the Hub's (huggingface_hub may open another for its own daily registry fetch).
    assert proxy.requests and set(proxy.requests) == {"CONNECT huggingface.co:443 HTTP/1.1"}
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    for fragment in ("someone/not-cached-model", f"through the proxy {proxy.url}", "403 Forbidden"):
        assert fragment in line, (fragment, line)


def test_a_repository_the_hub_does_not_have_is_named_with_the_endpoint(
    tmp_path, loopback, online, monkeypatch
):
    hub = loopback(
        http_reply("404 Not Found", b'{"error": "Repository not found"}', X_Error_Code="RepoNotFound")
    )
    use_endpoint(monkeypatch, hub.url)
    with pytest.raises(ModelLoadError) as error:
        resolve_model("someone/absent", cache_dir=tmp_path / "hub")
    assert (
        str(error.value)
        == f"someone/absent: no such folder, and no such model on {hub.url} (or a private one: log in)"
    )
    assert hub.model_requests == ["GET /api/models/someone/absent HTTP/1.1"]


def test_a_silent_hub_times_out_once_at_hf_hub_etag_timeout(tmp_path, loopback, online, monkeypatch):
    """A Hub that accepts the connection and never answers: the one request ends at ``HF_HUB_ETAG_TIMEOUT``
    (1 s here) as a timeout, not when the server hangs up 10 s later, and is not retried."""
    hub = loopback(None, hold_s=10)
    use_endpoint(monkeypatch, hub.url)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    with pytest.raises(ModelLoadError) as error:
        resolve_model("someone/slow", cache_dir=tmp_path / "hub")
    line = str(error.value)
    assert line.startswith(f"someone/slow: not in the Hub cache, and {hub.url} cannot be reached"), line
    assert "1 s timeout" in line and "Timeout" in line and "\n" not in line, line
    assert hub.model_requests == ["GET /api/models/someone/slow HTTP/1.1"]


def test_local_folders_and_cached_ids_never_reach_the_hub(tmp_path, loopback, online, monkeypatch):
    hub = loopback(http_reply("500 Internal Server Error"))
    use_endpoint(monkeypatch, hub.url)
    snapshot = put_in_hub_cache(tmp_path / "hub", "someone/cached", save_tiny_clip2point)
    assert resolve_model("someone/cached", cache_dir=tmp_path / "hub") == str(snapshot)
    assert resolve_tokenizer("someone/cached", cache_dir=tmp_path / "hub") == str(snapshot)
    monkeypatch.chdir(tmp_path)  # names of the Hub-id form that exist here: a folder, and a file
    save_tiny_clip2point(tmp_path / "someone" / "local")
    assert resolve_model("someone/local") == "someone/local"
    (tmp_path / "someone" / "file").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"^someone/file: is a file, not a model folder$"):
        resolve_model("someone/file")
    (tmp_path / "someone" / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"^someone/empty: no tokenizer\.json or vocab\.json"):
        resolve_tokenizer("someone/empty")
    assert hub.model_requests == []


class FakeHub:
    """The part of the Hub's HTTP API that ``model_info`` and ``snapshot_download`` use, serving ``files`` of
    one repository at :data:`REVISION`; records the request lines."""

    def __init__(self, repo_id: str, files: dict[str, bytes]):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.repo_id, self.files, self.requests = repo_id, files, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.requests.append(self.requestline)
                self.answer(include_body=False)

            def do_GET(self):
                hub.requests.append(self.requestline)
                self.answer(include_body=True)

            def answer(self, include_body: bool):
                path = self.path.split("?")[0]
                api = f"/api/models/{hub.repo_id}"
                resolve = f"/{hub.repo_id}/resolve/{REVISION}/"
                if path in (api, f"{api}/revision/main"):
                    siblings = [{"rfilename": name} for name in hub.files]
                    body = json.dumps({"id": hub.repo_id, "sha": REVISION, "siblings": siblings}).encode()
                elif path.startswith(f"{api}/tree/{REVISION}"):
                    tree = [
                        {"type": "file", "path": name, "size": len(data), "oid": hub.oid(name)}
                        for name, data in hub.files.items()
                    ]
                    body = json.dumps(tree).encode()
                elif path.startswith(resolve) and path[len(resolve) :] in hub.files:
                    name = path[len(resolve) :]
                    body = hub.files[name]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("ETag", f'"{hub.oid(name)}"')
                    self.send_header("X-Repo-Commit", REVISION)
                    self.end_headers()
                    if include_body:
                        self.wfile.write(body)
                    return
                else:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if include_body:
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def oid(self, name: str) -> str:
        return hashlib.sha1(self.files[name]).hexdigest()

    def downloaded(self) -> set[str]:
        prefix = f"GET /{self.repo_id}/resolve/{REVISION}/"
        return {line[len(prefix) :].split()[0] for line in self.requests if line.startswith(prefix)}


def test_an_uncached_id_downloads_configs_tokenizer_and_weights_only(tmp_path, online, monkeypatch):
    source = tmp_path / "source"
    save_tiny_clip2point(source)
    files = {path.name: path.read_bytes() for path in source.iterdir()}
    wanted = {name for name in files if not name.endswith(".py")}  # not the remote code: the package is here
    files |= {"pytorch_model.bin": b"old weights", "flax_model.msgpack": b"other weights", "README.md": b"#"}
    hub = FakeHub("someone/tiny", files)
    use_endpoint(monkeypatch, hub.url)
    try:
        folder = Path(resolve_model("someone/tiny", cache_dir=tmp_path / "hub"))
        assert {path.name for path in folder.iterdir()} == wanted == hub.downloaded()
        expected, loaded = CLIP2PointModel.from_pretrained(source), CLIP2PointModel.from_pretrained(folder)
        loaded_tensors = loaded.state_dict()
        assert all(torch.equal(t, loaded_tensors[k]) for k, t in expected.state_dict().items())
        # Now cached: found again without a request.
        before = len(hub.requests)
        assert resolve_model("someone/tiny", cache_dir=tmp_path / "hub") == str(folder)
        assert hub.requests[before:] == []
        # A tokenizer alone: no weights downloaded.
        tokenizer_only = Path(resolve_tokenizer("someone/tiny", cache_dir=tmp_path / "tokenizer-cache"))
        assert not any(tokenizer_only.glob("*.safetensors")) and (tokenizer_only / "tokenizer.json").is_file()
    finally:
        hub.server.shutdown()
        hub.server.server_close()
