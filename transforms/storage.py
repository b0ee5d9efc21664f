"""Object-storage access for local paths, ``gs://`` and other fsspec URLs.

Every read and write goes through fsspec, with transient failures (HTTP 429 and 5xx,
connection resets, timeouts) retried with exponential backoff and jitter, and permanent ones
(404, 403) raised at once. Local writes land atomically (temporary file, then rename);
object-store uploads are atomic by nature: an object appears only once complete.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from typing import IO, Any, TypeVar

import fsspec
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

T = TypeVar("T")

MAX_ATTEMPTS = 6


def is_remote(uri: str) -> bool:
    """True for URLs with a scheme other than ``file``."""
    return "://" in uri and not uri.startswith("file://")


def _status_of(exc: BaseException) -> int | None:
    for attr in ("code", "status", "status_code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error is worth retrying."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    status = _status_of(exc)
    if status is not None:
        return status == 408 or status == 429 or status >= 500
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    return any(key in name for key in ("Timeout", "ConnectionError", "ServerDisconnected", "ClientOSError",
                                        "ClientPayloadError", "TransportError"))


storage_retry = retry(
    retry=retry_if_exception(is_transient),
    wait=wait_random_exponential(multiplier=0.2, max=10),
    stop=stop_after_attempt(MAX_ATTEMPTS),
    reraise=True,
)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URI and the path within it."""
    protocol = uri.split("://", 1)[0] if is_remote(uri) else "file"
    options: dict[str, Any] = {}
    if protocol in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
        # The emulator takes no credentials; asking Google's token endpoint would fail offline.
        options["token"] = "anon"
    fs = fsspec.filesystem(protocol, **options)
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
    """Whether a URI names a folder (or a non-empty prefix)."""
    fs, path = filesystem(uri)
    try:
        return bool(fs.isdir(path))
    except FileNotFoundError:
        return False


@storage_retry
def exists(uri: str) -> bool:
    """Whether a file or folder exists."""
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


@storage_retry
def size_of(uri: str) -> int:
    """A file's size in bytes."""
    fs, path = filesystem(uri)
    return int(fs.size(path))


@storage_retry
def read_bytes(uri: str, start: int | None = None, end: int | None = None) -> bytes:
    """A file's bytes, or the range [start, end)."""
    fs, path = filesystem(uri)
    if start is None and end is None:
        return fs.cat_file(path)
    return fs.cat_file(path, start=start, end=end)


def open_read(uri: str) -> IO[bytes]:
    """A seekable binary reader; remote files are read lazily in blocks."""
    fs, path = filesystem(uri)
    return with_retries(lambda: fs.open(path, "rb", block_size=8 * 1024 * 1024))


@storage_retry
def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file atomically."""
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


def with_retries(fn: Callable[[], T]) -> T:
    """Call ``fn`` under the storage retry policy."""
    return storage_retry(fn)()


def download_tree(uri: str, local_dir: str) -> None:
    """Copy every file below ``uri`` into ``local_dir``, keeping relative paths."""
    fs, path = filesystem(uri)
    base = path.rstrip("/")
    for remote in with_retries(lambda: fs.find(base)):
        rel = remote[len(base):].lstrip("/")
        target = os.path.join(local_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        data = with_retries(lambda remote=remote: fs.cat_file(remote))
        with open(target + ".part", "wb") as f:
            f.write(data)
        os.replace(target + ".part", target)
