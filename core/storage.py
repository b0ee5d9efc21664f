"""Object-storage access for local paths, ``gs://`` and other fsspec URLs.

Every network operation (list, glob, exists, size, whole and ranged reads, every ``read``/``seek``
of a file opened with :func:`open_read`, model downloads, writes, deletes) runs under one retry
policy, :data:`POLICY`: transient failures (HTTP 408, 429 and 5xx, connection resets, timeouts,
truncated bodies) are retried with exponential backoff and full jitter for a bounded number of
attempts; permanent ones (404, 403, other 4xx, bad arguments) are raised at once.

gcsfs brings its own per-request retry loop (6 tries, sleeping up to ~32 s each). Stacked under
ours it would multiply attempts (6 x 10) and hide faults from the policy, so ``gs://`` URLs use
:class:`SingleAttemptGCSFileSystem`, the core gcsfs JSON-API filesystem with that loop removed:
one HTTP attempt per call, and retries, waits and limits are the ones documented here. (aiohttp
may still resend an idempotent request once when a reused keep-alive connection turns out closed.)

Local writes land atomically (temporary file, then rename); object-store uploads are atomic by
nature: an object appears only once complete, so retrying a failed upload is safe.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, ParamSpec, TypeVar

import fsspec
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

READ_BLOCK_SIZE = 8 * 1024 * 1024
COPY_CHUNK_SIZE = 64 * 1024 * 1024

_PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
_TRANSIENT_NAMES = ("Timeout", "ConnectionError", "ServerDisconnected", "ClientOSError", "ClientPayloadError",
                    "TransportError", "ChunkedEncodingError", "IncompleteRead", "RemoteDisconnected",
                    "ProxyError", "ChecksumError")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for storage calls.

    Attempt ``n`` (from 1) that fails transiently is followed by a sleep drawn uniformly from
    ``[0, min(max_wait_s, initial_wait_s * 2 ** (n - 1))]``. With the defaults an operation is
    tried at most 10 times and sleeps at most 0.5+1+2+4+8+16+30+30+30 = 121.5 s in all (about
    the 120 s retry deadline google-cloud-storage uses), 61 s on average when every try fails.
    """

    max_attempts: int = 10
    initial_wait_s: float = 0.5
    max_wait_s: float = 30.0

    def retrying(self) -> Retrying:
        """A fresh tenacity ``Retrying`` for one operation."""
        return Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=self.initial_wait_s, max=self.max_wait_s),
            stop=stop_after_attempt(self.max_attempts),
            before_sleep=_log_retry,
            reraise=True,
        )


#: The policy every storage call uses; read at call time, so tests may swap it.
POLICY = RetryPolicy()
MAX_ATTEMPTS = POLICY.max_attempts


def is_remote(uri: str) -> bool:
    """True for URLs with a scheme other than ``file``."""
    return "://" in uri and not uri.startswith("file://")


def _status_of(exc: BaseException) -> int | None:
    for attr in ("code", "status", "status_code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    response = getattr(exc, "response", None)  # requests.HTTPError
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error is worth retrying.

    Transient: HTTP 408, 429 and 5xx (gcsfs ``HttpError.code``, aiohttp ``.status``, requests'
    ``response.status_code``; gcsfs turns 502 into ``requests.exceptions.ProxyError``), connection
    errors and resets, timeouts, truncated or corrupt bodies, and a 401 "Invalid Credentials"
    (an access token that expired between refresh and use). Permanent: missing files (404 becomes
    ``FileNotFoundError``), 403 (gcsfs raises ``OSError("Forbidden: ...")``), other 4xx, and
    anything else not recognised.
    """
    if isinstance(exc, _PERMANENT_ERRORS):
        return False
    status = _status_of(exc)
    if status is not None:
        if status == 401:
            return "invalid credentials" in str(exc).lower()
        return status in (408, 429) or 500 <= status <= 599
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = [cls.__name__ for cls in type(exc).__mro__]
    return any(key in name for name in names for key in _TRANSIENT_NAMES)


_QUERY = re.compile(r"\?[^\s'\"]*")


def _redacted(text: str) -> str:
    """Text with URL query strings removed (signed URLs carry credentials there)."""
    return _QUERY.sub("?<redacted>", text)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    name = getattr(state.fn, "__qualname__", "storage call")
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning("storage: %s failed with %s: %s (attempt %d of %d); retrying in %.2f s", name,
                type(exc).__name__, _redacted(str(exc))[:300], state.attempt_number, POLICY.max_attempts, wait)


def storage_retry(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate ``fn`` to run under the storage retry policy (:data:`POLICY`)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return POLICY.retrying()(fn, *args, **kwargs)

    return wrapper


def with_retries(fn: Callable[[], T]) -> T:
    """Call ``fn`` under the storage retry policy."""
    return POLICY.retrying()(fn)


def _single_attempt_gcs_class() -> type:
    import gcsfs.core

    base = gcsfs.core.GCSFileSystem

    class SingleAttemptGCSFileSystem(base):  # type: ignore[misc, valid-type]
        """Core gcsfs with its internal per-request retry loop removed (see the module docstring)."""

        _request = base._request.__wrapped__
        _get_file_request = base._get_file_request.__wrapped__
        _get_file_concurrent = base._get_file_concurrent.__wrapped__

    SingleAttemptGCSFileSystem.__module__ = __name__
    SingleAttemptGCSFileSystem.__qualname__ = "SingleAttemptGCSFileSystem"
    return SingleAttemptGCSFileSystem


@functools.cache
def gcs_filesystem_class() -> type:
    """:class:`SingleAttemptGCSFileSystem`, made on first use (gcsfs is imported lazily)."""
    return _single_attempt_gcs_class()


def __getattr__(name: str) -> Any:
    # ``core.storage.SingleAttemptGCSFileSystem`` resolves lazily, so instances pickle by reference.
    if name == "SingleAttemptGCSFileSystem":
        return gcs_filesystem_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _gcs_timeout() -> Any:
    import aiohttp

    # A stalled connection fails (and is retried) instead of hanging a worker overnight.
    return aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URI and the path within it."""
    protocol = uri.split("://", 1)[0] if is_remote(uri) else "file"
    if protocol in ("gs", "gcs"):
        options: dict[str, Any] = {"requests_timeout": _gcs_timeout()}
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            # The emulator takes no credentials; asking Google's token endpoint would fail offline.
            # The endpoint is passed explicitly so a changed STORAGE_EMULATOR_HOST gets a new
            # (not a cached) filesystem.
            options.update(token="anon", endpoint_url=emulator)
        fs = gcs_filesystem_class()(**options)
    else:
        fs = fsspec.filesystem(protocol)
    path = uri if protocol == "file" else fs._strip_protocol(uri)
    if protocol == "file" and uri.startswith("file://"):
        path = uri[len("file://"):]
    return fs, path


def _unstrip(uri: str, path: str) -> str:
    if not is_remote(uri):
        return path
    protocol = uri.split("://", 1)[0]
    return f"{protocol}://{path}"


def join(base: str, *parts: str) -> str:
    """Join URI path parts with ``/`` (or the OS separator for local paths)."""
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


@storage_retry
def glob(pattern: str) -> list[str]:
    """Expand a glob into full URIs, sorted."""
    fs, path = filesystem(pattern)
    return sorted(_unstrip(pattern, p) for p in fs.glob(path))


@storage_retry
def list_files(folder: str) -> list[str]:
    """All files below a folder or prefix, recursively, sorted."""
    fs, path = filesystem(folder)
    found = fs.find(path)
    return sorted(_unstrip(folder, p) for p in found)


@storage_retry
def is_dir(uri: str) -> bool:
    """Whether a URI names a folder (or a non-empty prefix).

    Asks ``info`` rather than fsspec's ``isdir``, which answers False on any ``OSError`` and
    would turn a connection reset or a 403 into "not a folder".
    """
    fs, path = filesystem(uri)
    try:
        return fs.info(path)["type"] == "directory"
    except FileNotFoundError:
        return False


@storage_retry
def exists(uri: str) -> bool:
    """Whether a file or folder exists (False only on a real "not found", never on a fault)."""
    fs, path = filesystem(uri)
    try:
        fs.info(path)
    except FileNotFoundError:
        return False
    return True


@storage_retry
def modified_time(uri: str) -> float | None:
    """A file's last-modified time (seconds since the epoch), or None where the store gives none."""
    import datetime as dt

    fs, path = filesystem(uri)
    info = fs.info(path)
    for key in ("mtime", "updated", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, str) and value:
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


@storage_retry
def size_of(uri: str) -> int:
    """A file's size in bytes."""
    fs, path = filesystem(uri)
    return int(fs.size(path))


@dataclass(frozen=True)
class StoredObject:
    """What a store says about an object without reading it: its size and the checksums it keeps.

    ``crc32c`` is base64 of the big-endian CRC32C (GCS's own encoding); ``md5`` is hex (GCS's
    ``md5Hash``, or an S3 ETag of a single-part upload). Local files have neither.
    """

    size: int
    crc32c: str | None = None
    md5: str | None = None


@storage_retry
def stored_object(uri: str) -> StoredObject:
    """An object's size and stored checksums from one metadata request (``FileNotFoundError`` if absent)."""
    import base64

    fs, path = filesystem(uri)
    info = fs.info(path)
    md5 = info.get("md5Hash")
    if md5:
        md5 = base64.b64decode(md5).hex()
    etag = str(info.get("ETag") or "").strip('"')
    if not md5 and etag and "-" not in etag and len(etag) == 32:
        md5 = etag.lower()
    return StoredObject(size=int(info.get("size") or 0), crc32c=info.get("crc32c") or None, md5=md5 or None)


@storage_retry
def read_bytes(uri: str, start: int | None = None, end: int | None = None) -> bytes:
    """A file's bytes, or the range [start, end) (explicit ranges only: no suffix ranges)."""
    fs, path = filesystem(uri)
    if start is None and end is None:
        return fs.cat_file(path)
    return fs.cat_file(path, start=start, end=end)


class TruncatedRead(ConnectionError):
    """A ranged read returned fewer bytes than asked for (a cut-off body): transient."""


class RetryingReader(io.RawIOBase):
    """A seekable binary reader over a remote file whose every network read is retried.

    PyAV (and decord staging, and model downloads) read remote videos through this object long
    after it was opened, so the retries must sit here, not only around ``open``. It reads aligned
    blocks of ``block_size`` bytes with explicit ranged GETs (``bytes=start-end``; no suffix
    ranges), one HTTP request per attempt, each under :data:`POLICY`, and keeps the two most
    recent blocks. Seeks and ``tell`` are local and never touch the network.
    """

    def __init__(self, uri: str, block_size: int = READ_BLOCK_SIZE) -> None:
        super().__init__()
        self.name = uri
        self._fs, self._path = filesystem(uri)
        self._block_size = block_size
        self._pos = 0
        self._blocks: dict[int, bytes] = {}
        self._size = with_retries(lambda: int(self._fs.size(self._path)))

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            return block
        start = index * self._block_size
        end = min(self._size, start + self._block_size)

        def fetch() -> bytes:
            data = self._fs.cat_file(self._path, start=start, end=end)
            if len(data) != end - start:
                raise TruncatedRead(f"got {len(data)} of {end - start} bytes at offset {start} of {self.name}")
            return data

        fetch.__qualname__ = f"read of {self.name} [{start}, {end})"
        block = with_retries(fetch)
        if len(self._blocks) >= 2:
            self._blocks.pop(next(iter(self._blocks)))
        self._blocks[index] = block
        return block

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed file")
        if size is None or size < 0:
            size = self._size - self._pos
        end = min(self._size, self._pos + size)
        parts = []
        while self._pos < end:
            index, offset = divmod(self._pos, self._block_size)
            block = self._block(index)
            piece = block[offset:offset + end - self._pos]
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._blocks = {}
        super().close()


def open_read(uri: str) -> IO[bytes]:
    """A seekable binary reader; remote files are read lazily in blocks, each read retried."""
    if not is_remote(uri):
        fs, path = filesystem(uri)
        return fs.open(path, "rb")
    return RetryingReader(uri)  # type: ignore[return-value]


@storage_retry
def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file atomically (a failed upload is retried whole)."""
    fs, path = filesystem(uri)
    if is_remote(uri):
        fs.pipe_file(path, data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@storage_retry
def remove(uri: str) -> None:
    """Delete a file; a missing file is not an error."""
    fs, path = filesystem(uri)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def makedirs(uri: str) -> None:
    """Create a local folder; object stores need none."""
    if not is_remote(uri):
        os.makedirs(uri, exist_ok=True)


def download_tree(uri: str, local_dir: str) -> None:
    """Copy every file below ``uri`` into ``local_dir``, keeping relative paths.

    Each file streams through a :class:`RetryingReader` (so a multi-gigabyte checkpoint is never
    held in memory and a fault costs one block, not the whole file) into ``<name>.part``, which
    is renamed once its size matches the remote size.
    """
    fs, path = filesystem(uri)
    base = path.rstrip("/")
    for remote in with_retries(lambda: fs.find(base)):
        rel = remote[len(base):].lstrip("/")
        target = os.path.join(local_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with RetryingReader(_unstrip(uri, remote)) as src, open(target + ".part", "wb") as dst:
            while chunk := src.read(COPY_CHUNK_SIZE):
                dst.write(chunk)
            expected = src.size
        written = os.path.getsize(target + ".part")
        if written != expected:
            raise OSError(f"short download of {_unstrip(uri, remote)}: {written} of {expected} bytes")
        os.replace(target + ".part", target)
