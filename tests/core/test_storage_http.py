"""``http(s)://`` through ``core.storage`` against a local HTTP server started by the test.

``FileServer`` serves a folder over HTTP/1.1 on 127.0.0.1 and logs every request. With
``ranges=True`` it answers ``Range: bytes=a-b`` with 206 and just those bytes; with
``ranges=False`` it is a server that ignores ``Range`` and always sends the whole file (200),
which must still read correctly, downloading the file once rather than once per block.
``fail_first`` makes the first N requests for a path answer 503 (a named fault injector).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from core import storage
from tests.pipeline import test_storage_faults

fast_policy = test_storage_faults.fast_policy  # the same fixture: the policy's shape, millisecond waits

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _send(self, status: int, payload: bytes, body: bool, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        range_header = self.headers.get("Range")
        target = (owner.root / rel).resolve()
        with owner.lock:
            failures_left = owner.fail_first.get(rel, 0)
            if failures_left:
                owner.fail_first[rel] = failures_left - 1
        if failures_left:
            status = 503
        elif not target.is_file() or owner.root.resolve() not in target.parents:
            status = 404
        else:
            status = 200
        data = target.read_bytes() if status == 200 else b"unavailable" if status == 503 else b"not found"
        match = _RANGE.match(range_header or "") if status == 200 and owner.ranges else None
        if match:
            start = int(match.group(1))
            end = min(len(data) - 1, int(match.group(2))) if match.group(2) else len(data) - 1
            status = 206
            headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"}
            data = data[start:end + 1]
        else:
            headers = {"Accept-Ranges": "bytes"} if owner.ranges and status == 200 else {}
        with owner.lock:
            owner.log.append((self.command, rel, range_header, status, len(data) if body else 0))
        self._send(status, data, body, {"Content-Type": "application/octet-stream", **headers})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FileServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _FileHandler)


class FileServer:
    """A local HTTP file server over ``root``, with or without Range support, logging each request."""

    def __init__(self, root: Path, ranges: bool = True) -> None:
        self.root = root
        self.ranges = ranges
        self.fail_first: dict[str, int] = {}
        self.log: list[tuple[str, str, str | None, int, int]] = []  # (method, path, Range, status, body bytes)
        self.lock = threading.Lock()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="file-server", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def gets(self, rel: str) -> list[tuple[str, str, str | None, int, int]]:
        """The GET requests for one path."""
        with self.lock:
            return [entry for entry in self.log if entry[0] == "GET" and entry[1] == rel]


@pytest.fixture
def http_files(tmp_path: Path) -> Path:
    """A folder to serve."""
    folder = tmp_path / "www"
    folder.mkdir()
    return folder


@pytest.fixture
def range_server(http_files: Path) -> Iterator[FileServer]:
    """A server that honours Range."""
    server = FileServer(http_files, ranges=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def whole_server(http_files: Path) -> Iterator[FileServer]:
    """A server that ignores Range and always sends the whole file."""
    server = FileServer(http_files, ranges=False).start()
    try:
        yield server
    finally:
        server.stop()


BLOCK = 64 * 1024


def test_ranged_reads_fetch_only_the_blocks_read(http_files: Path, range_server: FileServer) -> None:
    data = os.urandom(10 * BLOCK + 5)
    (http_files / "v.mp4").write_bytes(data)
    uri = f"{range_server.url}/v.mp4"
    assert storage.exists(uri) and not storage.exists(f"{range_server.url}/nope.mp4")
    assert storage.size_of(uri) == len(data)
    assert storage.read_bytes(uri, 1000, 70_000) == data[1000:70_000]
    with storage.RetryingReader(uri, block_size=BLOCK) as reader:
        reader.seek(3 * BLOCK + 10)
        assert reader.read(100) == data[3 * BLOCK + 10:3 * BLOCK + 110]
        reader.seek(-7, os.SEEK_END)
        assert reader.read() == data[-7:]
        assert not reader.reads_whole
    gets = range_server.gets("v.mp4")
    assert gets and all(status == 206 and rng for _, _, rng, status, _ in gets), gets
    assert sum(sent for *_, sent in gets) < len(data) / 2  # only the blocks read crossed the wire


def test_a_server_without_range_support_is_read_whole_once(http_files: Path, whole_server: FileServer) -> None:
    data = os.urandom(10 * BLOCK + 5)
    (http_files / "v.mp4").write_bytes(data)
    uri = f"{whole_server.url}/v.mp4"
    assert storage.read_bytes(uri, 1000, 70_000) == data[1000:70_000]
    assert storage.read_bytes(uri, len(data) - 3, len(data)) == data[-3:]
    before = len(whole_server.gets("v.mp4"))
    with storage.RetryingReader(uri, block_size=BLOCK) as reader:
        got = bytearray()
        while chunk := reader.read(50_000):
            got += chunk
        assert bytes(got) == data and reader.reads_whole
        reader.seek(5 * BLOCK + 1)
        assert reader.read(10) == data[5 * BLOCK + 1:5 * BLOCK + 11]
    gets = whole_server.gets("v.mp4")[before:]
    assert len(gets) == 1 and gets[0][3] == 200 and gets[0][4] == len(data), gets  # one whole download


def test_http_errors_404_at_once_503_retried(http_files: Path, range_server: FileServer,
                                             fast_policy: storage.RetryPolicy) -> None:
    (http_files / "flaky.mp4").write_bytes(b"payload")
    range_server.fail_first = {"flaky.mp4": 2}
    assert storage.read_bytes(f"{range_server.url}/flaky.mp4") == b"payload"
    assert [status for *_, status, _ in range_server.gets("flaky.mp4")] == [503, 503, 200]
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        storage.read_bytes(f"{range_server.url}/missing.mp4")
    assert len(range_server.gets("missing.mp4")) == 1
