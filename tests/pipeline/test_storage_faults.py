"""Storage faults: a fault-injecting HTTP proxy in front of the real GCS emulator.

``FaultInjectingProxy`` is the fault injector. It sits between gcsfs (through
``core.storage``) and a real ``gcp-storage-emulator`` and fails a chosen fraction of
requests with HTTP 429, HTTP 503 or a TCP connection reset, passing every other request through
byte for byte. The tests prove that transient faults are retried (a whole build with 20% injected
faults writes the same index as a clean run), that retries are bounded, and that permanent
errors (404, 403) are raised after a single attempt.
"""

from __future__ import annotations

import http.client
import json
import os
import pickle
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from core import storage

# Headers that describe one hop of a connection, not the message: never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "proxy-connection"}
FAULT_KINDS = ("429", "503", "reset")


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: FaultInjectingProxy) -> None:
        self.proxy = proxy
        self.to_reset: set[int] = set()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        if id(request) in self.to_reset:
            # SO_LINGER 0 + close without shutdown(): the kernel sends a TCP RST.
            self.to_reset.discard(id(request))
            request.close()
            return
        super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up mid-response are expected


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _read_body(self) -> bytes | None:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length is not None else None

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        outcome = proxy.decide(self.command, self.path, self.headers.get("Range"))
        if outcome == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.server.to_reset.add(id(self.connection))
            self.close_connection = True
            return
        if outcome != "pass":
            status = int(outcome)
            payload = json.dumps({"error": {"code": status, "message": f"injected {status}",
                                            "errors": [{"message": f"injected {status}"}]}}).encode()
            self.send_response_only(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        self._forward(body)

    def _forward(self, body: bytes | None) -> None:
        upstream = urlsplit(self.server.proxy.upstream)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        try:
            # The client's Host header is kept: the emulator builds resumable-upload Locations from it.
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    conn.putheader(key, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            self.send_response_only(response.status, response.reason)
            length = response.getheader("Content-Length")
            headers = [(k, v) for k, v in response.getheaders()
                       if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
            no_body = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
            if no_body:
                for key, value in headers:
                    self.send_header(key, value)
                if length is not None:
                    self.send_header("Content-Length", length)
                self.end_headers()
                return
            data = None if length is not None else response.read()
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", length if data is None else str(len(data)))
            self.end_headers()
            if data is not None:
                self.wfile.write(data)
                return
            while chunk := response.read(64 * 1024):  # stream large bodies through
                self.wfile.write(chunk)
        finally:
            conn.close()


class FaultInjectingProxy:
    """A fault injector: a local HTTP proxy that fails a chosen fraction of requests.

    Each request is forwarded byte for byte to ``upstream`` (method, path and query, headers
    including ``Range`` and ``Host``, request and response bodies), or answered with an injected
    fault: HTTP 429, HTTP 503 or a connection reset (TCP RST, no response). The choice is made by
    a seeded RNG keyed on the seed, the request (method, path, Range) and how many times that
    same request was seen, so it does not depend on thread interleaving. Rules override the
    random faults: ``forbid`` path substrings always get 403; ``fail_first`` maps a path
    substring to how many of its first requests get 503 (``-1``: all of them).
    """

    def __init__(self, upstream: str, fault_rate: float = 0.0, seed: int = 0,
                 kinds: tuple[str, ...] = FAULT_KINDS) -> None:
        self.upstream = upstream
        self.fault_rate = fault_rate
        self.seed = seed
        self.kinds = kinds
        self.forbid: list[str] = []
        self.fail_first: dict[str, int] = {}
        self.log: list[tuple[str, str, str]] = []  # (method, unquoted path, outcome)
        self._seen: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._server = _ProxyServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: what STORAGE_EMULATOR_HOST should name."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultInjectingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def decide(self, method: str, path: str, range_header: str | None) -> str:
        """``pass``, ``reset`` or an HTTP status to inject, for one incoming request."""
        plain = unquote(path)
        with self._lock:
            key = (method, path, range_header or "")
            seen = self._seen[key]
            self._seen[key] += 1
            outcome = "pass"
            if any(part in plain for part in self.forbid):
                outcome = "403"
            else:
                for part, count in self.fail_first.items():
                    if part in plain and (count < 0 or self._attempts_locked(part) < count):
                        outcome = "503"
                        break
                else:
                    rng = random.Random(f"{self.seed}|{method}|{path}|{range_header}|{seen}")
                    if rng.random() < self.fault_rate:
                        outcome = rng.choice(self.kinds)
            self.log.append((method, plain, outcome))
            return outcome

    def _attempts_locked(self, part: str) -> int:
        return sum(1 for _, path, _ in self.log if part in path)

    def attempts(self, part: str) -> int:
        """How many requests whose unquoted path contains ``part`` reached the proxy."""
        with self._lock:
            return self._attempts_locked(part)

    def faults(self) -> Counter[str]:
        """Injected faults by kind (``429``, ``503``, ``reset``, ``403``)."""
        with self._lock:
            return Counter(outcome for _, _, outcome in self.log if outcome != "pass")

    def requests(self) -> int:
        """All requests that reached the proxy."""
        with self._lock:
            return len(self.log)


@pytest.fixture
def proxy(gcs_emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultInjectingProxy]:
    """A proxy in front of the emulator (no faults until a test sets them); storage goes through it."""
    injector = FaultInjectingProxy(gcs_emulator.url).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", injector.url)
    try:
        yield injector
    finally:
        injector.stop()


@pytest.fixture
def fast_policy(monkeypatch: pytest.MonkeyPatch) -> storage.RetryPolicy:
    """The real policy's shape with millisecond waits, for tests that exhaust retries."""
    policy = storage.RetryPolicy(max_attempts=8, initial_wait_s=0.005, max_wait_s=0.02)
    monkeypatch.setattr(storage, "POLICY", policy)
    return policy


def direct(emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point storage straight at the emulator (no proxy)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator_url)


# --- is_transient: the classification, on the exceptions the libraries really raise -------------

def _gcsfs_error(status: int, body: bytes = b"") -> BaseException:
    from gcsfs.retry import validate_response

    try:
        validate_response(status, body or json.dumps({"error": {"code": status, "message": "x"}}).encode(), "b/o")
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError(f"validate_response({status}) raised nothing")


def test_is_transient_http_statuses_as_gcsfs_raises_them() -> None:
    for status in (408, 429, 500, 502, 503, 504):
        assert storage.is_transient(_gcsfs_error(status)), status
    for status in (400, 403, 404, 409, 412):
        assert not storage.is_transient(_gcsfs_error(status)), status
    assert isinstance(_gcsfs_error(404), FileNotFoundError)
    assert "Forbidden" in str(_gcsfs_error(403))
    expired = _gcsfs_error(401, json.dumps({"error": {"code": 401, "message": "Invalid Credentials"}}).encode())
    assert storage.is_transient(expired)
    assert not storage.is_transient(_gcsfs_error(401, json.dumps({"error": {"code": 401,
                                                                             "message": "nope"}}).encode()))


def test_is_transient_connection_and_timeout_errors() -> None:
    import aiohttp
    import requests
    from fsspec.exceptions import FSTimeoutError
    from google.api_core import exceptions as api

    transient = [
        ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(), TimeoutError(),
        FSTimeoutError(), aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"), aiohttp.ClientPayloadError("truncated"),
        aiohttp.ServerTimeoutError("read timeout"), requests.exceptions.ConnectionError(),
        requests.exceptions.ReadTimeout(), requests.exceptions.ChunkedEncodingError(),
        api.ServiceUnavailable("x"), api.TooManyRequests("x"), api.InternalServerError("x"),
    ]
    for exc in transient:
        assert storage.is_transient(exc), repr(exc)
    permanent = [
        FileNotFoundError("gs://b/o"), PermissionError("denied"), IsADirectoryError(), FileExistsError(),
        api.NotFound("x"), api.Forbidden("x"), api.BadRequest("x"), ValueError("Bad Request"),
        OSError("Forbidden: b/o"), KeyError("x"), RuntimeError("boom"),
    ]
    for exc in permanent:
        assert not storage.is_transient(exc), repr(exc)


def test_gcsfs_internal_retries_are_disabled() -> None:
    import gcsfs.core

    cls = storage.gcs_filesystem_class()
    assert issubclass(cls, gcsfs.core.GCSFileSystem)
    assert cls._request is gcsfs.core.GCSFileSystem._request.__wrapped__
    assert storage.SingleAttemptGCSFileSystem is cls
    fs, _ = storage.filesystem("gs://some-bucket/x")
    assert type(fs) is cls and type(pickle.loads(pickle.dumps(fs))) is cls  # Beam may pickle it


# --- the proxy against the real emulator ----------------------------------------------------------

def test_proxy_passes_bytes_and_ranges_through(gcs_emulator, proxy: FaultInjectingProxy) -> None:
    bucket = gcs_emulator.create_bucket("pass")
    data = os.urandom(3 * 1024 * 1024 + 17)
    storage.write_bytes(f"gs://{bucket}/blob.bin", data)
    assert storage.read_bytes(f"gs://{bucket}/blob.bin") == data
    assert storage.read_bytes(f"gs://{bucket}/blob.bin", 1000, 70_000) == data[1000:70_000]
    assert storage.size_of(f"gs://{bucket}/blob.bin") == len(data)
    assert proxy.requests() >= 4 and not proxy.faults()


def test_transient_faults_are_retried_up_to_the_limit(gcs_emulator, proxy: FaultInjectingProxy,
                                                      fast_policy: storage.RetryPolicy) -> None:
    bucket = gcs_emulator.create_bucket("flaky")
    storage.write_bytes(f"gs://{bucket}/twice.bin", b"payload")
    storage.write_bytes(f"gs://{bucket}/never.bin", b"payload")
    proxy.fail_first = {"twice.bin": 2, "never.bin": -1}
    before = proxy.attempts("twice.bin")
    assert storage.read_bytes(f"gs://{bucket}/twice.bin") == b"payload"
    assert proxy.attempts("twice.bin") - before == 3  # two 503s, then success
    before = proxy.attempts("never.bin")
    with pytest.raises(Exception) as raised:
        storage.read_bytes(f"gs://{bucket}/never.bin")
    assert storage.is_transient(raised.value)
    assert proxy.attempts("never.bin") - before == fast_policy.max_attempts  # bounded


def test_404_and_403_are_not_retried(gcs_emulator, gcs_emulator_server, proxy: FaultInjectingProxy,
                                     fast_policy: storage.RetryPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = gcs_emulator.create_bucket("perm")
    storage.write_bytes(f"gs://{bucket}/secret.bin", b"top secret")
    proxy.forbid = ["secret.bin"]

    before = proxy.attempts("missing.bin")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"gs://{bucket}/missing.bin")
    assert proxy.attempts("missing.bin") - before == 1

    before = proxy.attempts("secret.bin")
    with pytest.raises(OSError, match="Forbidden") as raised:
        storage.read_bytes(f"gs://{bucket}/secret.bin")
    assert not isinstance(raised.value, FileNotFoundError)
    assert proxy.attempts("secret.bin") - before == 1
    # A 403 while checking existence is an error, not "does not exist".
    with pytest.raises(OSError, match="Forbidden"):
        storage.exists(f"gs://{bucket}/secret.bin")
    assert proxy.faults()["403"] >= 2 and proxy.faults()["503"] == 0
    assert all(outcome in ("403", "pass") for _, _, outcome in proxy.log)


def test_file_reads_and_model_downloads_survive_faults(gcs_emulator, proxy: FaultInjectingProxy,
                                                       fast_policy: storage.RetryPolicy, tmp_path: Path) -> None:
    bucket = gcs_emulator.create_bucket("reads")
    data = os.urandom(1024 * 1024 + 3)
    storage.write_bytes(f"gs://{bucket}/m/weights.bin", data)
    storage.write_bytes(f"gs://{bucket}/m/sub/config.json", b'{"a": 1}')
    proxy.fault_rate, proxy.seed = 0.2, 7
    # Small blocks: many lazy range reads after open, as PyAV makes them.
    with storage.RetryingReader(f"gs://{bucket}/m/weights.bin", block_size=64 * 1024) as reader:
        got = bytearray()
        while chunk := reader.read(50_000):
            got += chunk
        assert bytes(got) == data
        reader.seek(-100, os.SEEK_END)
        assert reader.read() == data[-100:]
        reader.seek(123_456)
        assert reader.read(10) == data[123_456:123_466]
    storage.download_tree(f"gs://{bucket}/m", str(tmp_path / "model"))
    assert (tmp_path / "model" / "weights.bin").read_bytes() == data
    assert (tmp_path / "model" / "sub" / "config.json").read_bytes() == b'{"a": 1}'
    faults = proxy.faults()
    print(f"\nreads under 20% faults: {proxy.requests()} requests, injected {dict(faults)}")
    assert sum(faults.values()) > 0


# --- a whole build through 20% faults -------------------------------------------------------------

def _upload_folder(folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            storage.write_bytes(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def _comparable(output: str) -> dict[str, list[dict]]:
    from index import read_current
    from schemas.tables import RUN_SPECIFIC_COLUMNS

    tables = {}
    for table in ("videos", "segments", "errors"):
        rows = read_current(output, table).drop_columns(list(RUN_SPECIFIC_COLUMNS)).to_pylist()
        tables[table] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return tables


def test_build_with_20_percent_faults_equals_clean_build(gcs_emulator, gcs_emulator_server, video_folder: Path,
                                                         tiny_model: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.build import run_build
    from pipeline.options import beam_options
    from schemas.config import BuildConfig, ClipSpec, ModelConfig

    bucket = gcs_emulator.create_bucket("faults")
    _upload_folder(video_folder, f"gs://{bucket}/in")
    _upload_folder(Path(tiny_model), f"gs://{bucket}/model")

    def build(output: str, cache: str):
        # A fresh model cache per run, so each run stages the gs:// model itself (download_tree).
        monkeypatch.setenv("PLM_INDEX_MODEL_CACHE", str(tmp_path / cache))
        config = BuildConfig(input=f"gs://{bucket}/in", output=output, clips=ClipSpec.parse("fixed:4"),
                             model=ModelConfig(model=f"gs://{bucket}/model", max_new_tokens=6, torch_threads=2))
        return run_build(config, beam_options([]))

    start = time.monotonic()
    clean = build(f"gs://{bucket}/clean", "cache-clean")
    clean_s = time.monotonic() - start

    injector = FaultInjectingProxy(gcs_emulator_server.url, fault_rate=0.2, seed=20240601).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", injector.url)
    try:
        start = time.monotonic()
        faulty = build(f"gs://{bucket}/faulty", "cache-faulty")
        faulty_s = time.monotonic() - start
    finally:
        injector.stop()
        direct(gcs_emulator_server.url, monkeypatch)

    faults = injector.faults()
    counts = re.compile(r"^run \S+: ")
    equal = _comparable(f"gs://{bucket}/clean") == _comparable(f"gs://{bucket}/faulty")
    print(f"\nclean run  ({clean_s:.1f} s): {clean.line()}")
    print(f"faulty run ({faulty_s:.1f} s): {faulty.line()}")
    print(f"proxy: {injector.requests()} requests, injected {sum(faults.values())} faults {dict(faults)}")
    print(f"indexes equal (run-specific columns dropped): {equal}")
    assert sum(faults.values()) > 0 and set(faults) <= set(FAULT_KINDS)
    assert (clean.indexed, clean.failed) == (2, 1)  # a.mp4 and sub/b.mkv indexed, broken.mp4 failed
    assert counts.sub("", faulty.line()) == counts.sub("", clean.line())
    assert equal
    assert _comparable(f"gs://{bucket}/faulty")["segments"], "the faulty run indexed nothing"
