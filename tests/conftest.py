"""Shared fixtures: a workspace, a local HTTP mirror server, the in-process CLI.

Data builders live in ``_helpers.py``."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "ws"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range requests (``a-b``, ``a-``, ``-n``) and a content-MD5 ETag,
    like an object store. ``requests`` lists the paths asked for, ``log`` each request's
    (path, Range header, body bytes sent); ``fail_first[path] = n`` answers 503 n times."""

    fail_first: dict[str, int] = {}
    requests: list[str] = []
    log: list[tuple[str, str | None, int]] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server naming
        type(self).requests.append(self.path)
        rng = self.headers.get("Range")
        remaining = type(self).fail_first.get(self.path, 0)
        if remaining:
            type(self).fail_first[self.path] = remaining - 1
            type(self).log.append((self.path, rng, 0))
            self.send_error(503, "try again")
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            type(self).log.append((self.path, rng, 0))
            self.send_error(404)
            return
        data = path.read_bytes()
        etag = hashlib.md5(data).hexdigest()
        first, last = 0, len(data) - 1
        if rng and rng.startswith("bytes="):
            a, b = rng[6:].split("-")
            if a:
                first, last = int(a), min(int(b), last) if b else last
            else:  # a suffix: the last n bytes
                first = max(0, len(data) - int(b))
            if first >= len(data):
                type(self).log.append((self.path, rng, 0))
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        else:
            self.send_response(200)
        body = data[first:last + 1]
        type(self).log.append((self.path, rng, len(body)))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{etag}"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_mirror():
    """Serve a directory on 127.0.0.1: ``serve(root) -> (base_url, handler_class)``."""
    servers = []

    def serve(root: Path):
        handler = type("Handler", (_Handler,), {"fail_first": {}, "requests": [], "log": []})

        def make(*args, **kwargs):
            return handler(*args, directory=str(root), **kwargs)

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/", handler

    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run the CLI in-process: ``cli(*args) -> (exit_code, stdout, stderr)``."""
    from tessera_search.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _no_home_leak(monkeypatch, tmp_path):
    """Tests never touch ./indexes: the default workspace points into tmp_path."""
    monkeypatch.setenv("TESSERA_SEARCH_HOME", str(tmp_path / "default-home"))
    os.environ.pop("TESSERA_SEARCH_SOURCE", None)


@pytest.fixture(autouse=True)
def _torch_one_thread(request):
    """Encoder tests run tiny models: one torch thread, since more only add contention on 2 cores."""
    if not request.module.__name__.startswith("test_encoder"):
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
