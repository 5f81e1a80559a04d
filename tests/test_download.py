"""The download code (:mod:`recinet_cli.download`) against a real local HTTP server.

A ``http.server`` on ``127.0.0.1`` (ephemeral port, in a thread) serves the real Matbench
jdft2d file from ``../shared/data``; routes can also answer 404, cut a transfer short
(``Content-Length`` larger than what is sent, or a chunked body without its last chunk), or
serve other bytes. Every request is counted, so the tests can assert that the cache and the
local-copy paths never touch the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recinet_cli.download import DownloadError, RemoteFile, fetch, sha256_file
from recinet_cli.paths import cache_dir
from tests.conftest import shared_path

NAME = "matbench_jdft2d.json.gz"


@dataclass
class Route:
    """What the server answers on one path.

    Attributes:
        body: The bytes of the file.
        mode: ``"ok"`` (whole body), ``"truncate"`` (``Content-Length`` = full size, half the
            bytes, then close), ``"chunked-cut"`` (one chunk, then close without the final
            zero-size chunk) or ``"404"``.
    """

    body: bytes = b""
    mode: str = "ok"


@dataclass
class Server:
    """A running test server: ``url(path)``, the ``routes`` it serves and the ``hits`` it got."""

    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def count(self, path: str) -> int:
        return self.hits.count(path)


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``server``'s routes and hit log."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def do_GET(self) -> None:
            server.hits.append(self.path)
            route = server.routes.get(self.path)
            if route is None or route.mode == "404":
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            if route.mode == "chunked-cut":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                part = route.body[:4096]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            else:
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                sent = route.body if route.mode == "ok" else route.body[: len(route.body) // 2]
                self.wfile.write(sent)
            self.wfile.flush()
            self.close_connection = True

    return Handler


@pytest.fixture
def real_bytes() -> bytes:
    """The real Matbench jdft2d file (pandas-split JSON, gzipped), 273,613 bytes."""
    return shared_path("matbench", NAME).read_bytes()


@pytest.fixture
def server(real_bytes: bytes) -> Iterator[Server]:
    """A threaded HTTP server on 127.0.0.1 serving the real file at ``/files/NAME``."""
    state = Server(base="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    state.routes[f"/files/{NAME}"] = Route(real_bytes)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _downloads() -> Path:
    return cache_dir() / "downloads"


def _listing() -> list[str]:
    """Names in the download cache directory (``[]`` when it does not exist)."""
    folder = _downloads()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _remote(server: Server, path: str = f"/files/{NAME}", sha256: str | None = "", **kw: str) -> RemoteFile:
    """A :class:`RemoteFile` for ``path``; ``sha256=""`` means the real file's checksum."""
    digest = _sha(shared_path("matbench", NAME).read_bytes()) if sha256 == "" else sha256
    return RemoteFile(NAME, server.url(path), digest, description="Matbench jdft2d", **kw)


# ---------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------


def test_download_lands_in_cache_with_right_checksum(server: Server, real_bytes: bytes) -> None:
    path = fetch(_remote(server))
    assert path == _downloads() / NAME
    assert path.read_bytes() == real_bytes
    assert sha256_file(path) == _sha(real_bytes)
    assert not [n for n in _listing() if ".part-" in n]
    assert _listing() == [NAME, NAME + ".sha256"]
    recorded = json.loads((_downloads() / (NAME + ".sha256")).read_text())
    assert recorded["sha256"] == _sha(real_bytes)
    assert recorded["size"] == len(real_bytes)
    assert server.count(f"/files/{NAME}") == 1


def test_download_with_progress_bar(server: Server, real_bytes: bytes) -> None:
    path = fetch(_remote(server), progress=True)
    assert path.read_bytes() == real_bytes


def test_second_fetch_uses_cache_without_network(server: Server, real_bytes: bytes) -> None:
    first = fetch(_remote(server))
    second = fetch(_remote(server))
    assert first == second
    assert second.read_bytes() == real_bytes
    assert server.hits == [f"/files/{NAME}"]


def test_checksum_mismatch_leaves_nothing(server: Server) -> None:
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        fetch(_remote(server, sha256=wrong))
    message = str(info.value)
    assert "checksum mismatch" in message and wrong in message
    assert server.url(f"/files/{NAME}") in message
    assert _listing() == []


def test_truncated_transfer_leaves_nothing(server: Server, real_bytes: bytes) -> None:
    server.routes["/short"] = Route(real_bytes, mode="truncate")
    with pytest.raises(DownloadError, match="truncated") as info:
        fetch(_remote(server, "/short"))
    assert f"{len(real_bytes) // 2} of {len(real_bytes)} bytes" in str(info.value)
    assert _listing() == []


def test_broken_chunked_transfer_leaves_nothing(server: Server, real_bytes: bytes) -> None:
    server.routes["/chunked"] = Route(real_bytes, mode="chunked-cut")
    with pytest.raises(DownloadError, match="broke off") as info:
        fetch(_remote(server, "/chunked"))
    assert "\n" not in str(info.value)
    assert _listing() == []


def test_http_404_is_one_line_error_with_url(server: Server) -> None:
    remote = _remote(server, "/missing.json.gz", env_var="RECINET_TEST_FILE")
    with pytest.raises(DownloadError) as info:
        fetch(remote)
    message = str(info.value)
    assert "\n" not in message
    assert remote.url in message and "404" in message
    assert "--data FILE" in message and "RECINET_TEST_FILE" in message
    assert _listing() == []


def test_unreachable_server_is_download_error(server: Server) -> None:
    with pytest.raises(DownloadError, match="cannot download"):
        fetch(RemoteFile(NAME, "http://127.0.0.1:9/nothing", None), timeout=2)
    assert _listing() == []


# ---------------------------------------------------------------------------------------
# Local copies
# ---------------------------------------------------------------------------------------


def test_local_copy_bypasses_network(server: Server, tmp_path: Path, real_bytes: bytes) -> None:
    local = tmp_path / "copy.json.gz"
    local.write_bytes(real_bytes)
    assert fetch(_remote(server), local=local) == local
    assert fetch(_remote(server), local=str(local)) == local
    assert server.hits == []
    assert _listing() == []


def test_env_var_copy_bypasses_network(
    server: Server, tmp_path: Path, real_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "env.json.gz"
    local.write_bytes(real_bytes)
    monkeypatch.setenv("RECINET_TEST_FILE", str(local))
    assert fetch(_remote(server, env_var="RECINET_TEST_FILE")) == local
    other = tmp_path / "explicit.json.gz"
    other.write_bytes(real_bytes)
    assert fetch(_remote(server, env_var="RECINET_TEST_FILE"), local=other) == other
    assert server.hits == []


def test_missing_local_copy_names_it(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.json.gz"
    with pytest.raises(DownloadError, match="nope.json.gz: no such file"):
        fetch(_remote(server), local=missing)
    monkeypatch.setenv("RECINET_TEST_FILE", str(missing))
    with pytest.raises(DownloadError, match=f"RECINET_TEST_FILE={missing}: no such file"):
        fetch(_remote(server, env_var="RECINET_TEST_FILE"))
    assert server.hits == []


# ---------------------------------------------------------------------------------------
# Cache integrity
# ---------------------------------------------------------------------------------------


def test_corrupted_cache_is_downloaded_again(server: Server, real_bytes: bytes) -> None:
    path = fetch(_remote(server))
    path.write_bytes(real_bytes[:1000] + b"garbage" + real_bytes[1000:])  # size and mtime change
    again = fetch(_remote(server))
    assert again == path
    assert again.read_bytes() == real_bytes
    assert server.count(f"/files/{NAME}") == 2


def test_same_size_corruption_with_new_mtime_is_detected(server: Server, real_bytes: bytes) -> None:
    path = fetch(_remote(server))
    flipped = bytearray(real_bytes)
    flipped[5000] ^= 0xFF
    path.write_bytes(bytes(flipped))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fetch(_remote(server)).read_bytes() == real_bytes
    assert server.count(f"/files/{NAME}") == 2


def test_unpinned_file_trusts_first_download_then_detects_tampering(
    server: Server, real_bytes: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = _remote(server, sha256=None)
    path = fetch(remote)
    digest = _sha(real_bytes)
    assert f"sha256 {digest}" in capsys.readouterr().err
    assert json.loads((_downloads() / (NAME + ".sha256")).read_text())["sha256"] == digest

    assert fetch(remote) == path  # cached, verified by the record
    assert server.count(f"/files/{NAME}") == 1

    path.write_bytes(real_bytes[:-10])  # tampered cache file
    assert fetch(remote).read_bytes() == real_bytes
    assert server.count(f"/files/{NAME}") == 2


def test_unpinned_redownload_must_match_first_digest(server: Server, real_bytes: bytes) -> None:
    remote = _remote(server, sha256=None)
    path = fetch(remote)
    path.write_bytes(b"tampered")
    server.routes[f"/files/{NAME}"] = Route(real_bytes[::-1])  # the server now sends other bytes
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        fetch(remote)
    assert _sha(real_bytes) in str(info.value)
    assert [n for n in _listing() if n != NAME + ".sha256"] == []
