"""Object-storage access for local paths, ``gs://``, ``s3://``, ``http(s)://`` and other fsspec URLs.

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

A member of a WebDataset tar shard, ``shard.tar#member``, reads like a file of its own (its byte
range in the shard; the tar format is ``core/tar.py``).

``s3://`` is the same story twice over: s3fs wraps every call in its own loop (5 tries) around
botocore, which retries again by its own config (legacy mode: 5 attempts). ``s3://`` URLs use
:class:`SingleAttemptS3FileSystem`: s3fs with one try and botocore with ``total_max_attempts=1``.
The endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (MinIO, R2, Ceph, moto),
credentials and region from botocore's usual chain, and any other s3fs option from fsspec's config
(``FSSPEC_S3_<OPTION>`` variables, e.g. ``FSSPEC_S3_CLIENT_KWARGS='{"region_name": "auto"}'``).

``http(s)://`` URLs are read with ranged GETs; a server that ignores ``Range`` (answers 200 with
the whole body) is detected and its file is then read whole, once, into a temporary file.

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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, ParamSpec, TypeVar

import fsspec
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from core import tar
from core.paths import local_path
from core.readers import SizedReader

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

READ_BLOCK_SIZE = 8 * 1024 * 1024
COPY_CHUNK_SIZE = 64 * 1024 * 1024

_PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
_TRANSIENT_NAMES = ("Timeout", "ConnectionError", "ServerDisconnected", "ClientOSError", "ClientPayloadError",
                    "TransportError", "ChunkedEncodingError", "IncompleteRead", "RemoteDisconnected",
                    "ProxyError", "ChecksumError",
                    # botocore: ConnectionClosedError, ReadTimeoutError, ResponseStreamingError are
                    # HTTPClientErrors; throttling answers with invalid XML raise ResponseParserError
                    # (s3fs retries both for the same reasons).
                    "HTTPClientError", "ResponseParserError")
#: S3 error codes that mean "try again later" whatever the HTTP status says (botocore's own
#: throttling and transient lists, plus S3's ``SlowDown``).
_S3_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "OperationAborted",
})


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


def opens_by_path(uri: str) -> bool:
    """Whether a uri is a local file that FFmpeg, decord or ``open`` can open by its path.

    Everything else (remote objects, members of tar shards, ``shard.tar#k.mp4``) is read through
    :func:`open_read`.
    """
    return not is_remote(uri) and not tar.is_member_uri(uri)


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


def _boto_client_error(exc: BaseException) -> BaseException | None:
    """The botocore ``ClientError`` behind ``exc``: itself, or the cause s3fs translated into an OSError."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        response = getattr(current, "response", None)
        if isinstance(response, dict) and ("Error" in response or "ResponseMetadata" in response):
            return current
        current = current.__cause__
        seen += 1
    return None


def _is_transient_s3(error: BaseException) -> bool:
    response: dict[str, Any] = getattr(error, "response", {})
    code = str(response.get("Error", {}).get("Code", ""))
    if code in _S3_TRANSIENT_CODES:
        return True
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if not isinstance(status, int) and code.isdigit():
        status = int(code)  # an error body botocore could not parse: the code is the status
    return isinstance(status, int) and (status in (408, 429) or 500 <= status <= 599)


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error is worth retrying.

    Transient: HTTP 408, 429 and 5xx (gcsfs ``HttpError.code``, aiohttp ``.status``, requests'
    ``response.status_code``; gcsfs turns 502 into ``requests.exceptions.ProxyError``), connection
    errors and resets, timeouts, truncated or corrupt bodies, and a 401 "Invalid Credentials"
    (an access token that expired between refresh and use). Permanent: missing files (404 becomes
    ``FileNotFoundError``), 403 (gcsfs raises ``OSError("Forbidden: ...")``), other 4xx, and
    anything else not recognised.

    S3 (botocore ``ClientError``, or the ``OSError`` s3fs translates it into, with the
    ``ClientError`` as its cause): transient by status as above or by a throttling / transient
    error code (``SlowDown``, ``Throttling``, ``InternalError``, ...); botocore's connection and
    read-timeout errors by name. A 404 (``NoSuchKey``) is ``FileNotFoundError`` and a 403
    ``PermissionError``: permanent.
    """
    if isinstance(exc, _PERMANENT_ERRORS):
        return False
    boto_error = _boto_client_error(exc)
    if boto_error is not None:
        return _is_transient_s3(boto_error)
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


class MissingCredentials(PermissionError):
    """A store asked for credentials that the environment does not have; says which and how to give them."""


def _explained(exc: BaseException, uri: str) -> BaseException | None:
    """A clearer error for failures whose library message names neither the URI nor the fix."""
    if type(exc).__name__ == "NoCredentialsError":  # botocore: "Unable to locate credentials"
        return MissingCredentials(
            f"no S3 credentials to read or write {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE), and AWS_ENDPOINT_URL for MinIO, R2 or Ceph (see the README's storage section)")
    return None


def storage_retry(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate ``fn`` (whose first argument is a URI) to run under the storage retry policy (:data:`POLICY`)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return POLICY.retrying()(fn, *args, **kwargs)
        except Exception as exc:
            clearer = _explained(exc, str(args[0]) if args else "?")
            if clearer is None:
                raise
            raise clearer from exc

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


def _single_attempt_s3_class() -> type:
    import s3fs

    class SingleAttemptS3FileSystem(s3fs.S3FileSystem):  # type: ignore[misc, valid-type]
        """s3fs with its own retry loop cut to one try (see the module docstring).

        botocore's retries are switched off by the ``config_kwargs`` :func:`filesystem` passes.
        """

        retries = 1

    SingleAttemptS3FileSystem.__module__ = __name__
    SingleAttemptS3FileSystem.__qualname__ = "SingleAttemptS3FileSystem"
    return SingleAttemptS3FileSystem


@functools.cache
def s3_filesystem_class() -> type:
    """:class:`SingleAttemptS3FileSystem`, made on first use (s3fs is imported lazily)."""
    return _single_attempt_s3_class()


def __getattr__(name: str) -> Any:
    # ``core.storage.SingleAttempt*FileSystem`` resolve lazily, so instances pickle by reference.
    if name == "SingleAttemptGCSFileSystem":
        return gcs_filesystem_class()
    if name == "SingleAttemptS3FileSystem":
        return s3_filesystem_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Seconds to wait for a connection and between bytes of a response, on every network store.
CONNECT_TIMEOUT_S = 30
READ_TIMEOUT_S = 120


def _gcs_timeout() -> Any:
    import aiohttp

    # A stalled connection fails (and is retried) instead of hanging a worker overnight.
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)


def s3_endpoint_url() -> str | None:
    """The custom S3 endpoint (MinIO, R2, Ceph, an emulator) from the environment, if any.

    ``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL``, as in botocore. It is passed to s3fs
    explicitly so that a changed variable gets a new (not a cached) filesystem.
    """
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _s3_options() -> dict[str, Any]:
    from fsspec.config import apply_config

    cls = s3_filesystem_class()
    # fsspec's config (FSSPEC_S3_* variables, config files) first: client_kwargs, anon, key/secret...
    options: dict[str, Any] = apply_config(cls, {})
    config_kwargs = dict(options.get("config_kwargs") or {})
    # One HTTP attempt per call: retries are POLICY's (see the module docstring).
    config_kwargs["retries"] = {"total_max_attempts": 1, "mode": "standard"}
    config_kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    config_kwargs.setdefault("read_timeout", READ_TIMEOUT_S)
    options["config_kwargs"] = config_kwargs
    endpoint = s3_endpoint_url()
    if endpoint and not options.get("endpoint_url") and not (options.get("client_kwargs") or {}).get("endpoint_url"):
        options["endpoint_url"] = endpoint
    # Listings are never served from a cache: commits and generations appear while a process lives.
    options.setdefault("use_listings_cache", False)
    return options


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
    elif protocol in ("s3", "s3a"):
        fs = s3_filesystem_class()(**_s3_options())
    elif protocol in ("http", "https"):
        fs = fsspec.filesystem(protocol, client_kwargs={"timeout": _gcs_timeout()})
    else:
        fs = fsspec.filesystem(protocol)
    path = uri if protocol == "file" else fs._strip_protocol(uri)
    if protocol == "file" and uri.startswith("file://"):
        path = local_path(uri)
    return fs, path


def _unstrip(uri: str, path: str) -> str:
    if not is_remote(uri) or "://" in path:  # http(s) paths keep their scheme
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
    """Expand a glob into full URIs, sorted (on object stores: files only).

    On object stores fsspec's own glob walks the folders a pattern spans with ``on_error="omit"``,
    which turns a failed listing (a 503, a reset) into "no files here": a silently empty or
    short run. So a remote glob is one recursive, paged listing of everything below the
    pattern's fixed root (whose errors raise, and are retried), filtered by fsspec's own glob
    translation. A root that does not exist matches nothing.
    """
    fs, path = filesystem(pattern)
    if not is_remote(pattern):
        return sorted(fs.glob(path))
    from fsspec.utils import glob_translate

    first_magic = min((i for i in (path.find(ch) for ch in "*?[") if i >= 0), default=len(path))
    root = path[:path.rfind("/", 0, first_magic)] if "/" in path[:first_magic] else ""
    matches = re.compile(glob_translate(path)).match
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return []
    return sorted(_unstrip(pattern, p) for p in found if matches(p))


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


def size_of(uri: str) -> int:
    """A file's size in bytes (a tar member's own size for ``shard.tar#member``)."""
    return _member_range(uri)[2] if tar.is_member_uri(uri) else _object_size(uri)


@storage_retry
def _object_size(uri: str) -> int:
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


def read_bytes(uri: str, start: int | None = None, end: int | None = None) -> bytes:
    """A file's bytes, or the range [start, end) (explicit ranges only: no suffix ranges).

    A tar member (``shard.tar#member``) is read by a ranged read of its shard.
    """
    if not tar.is_member_uri(uri):
        return _object_bytes(uri, start, end)
    shard, offset, size = _member_range(uri)
    first = min(max(start or 0, 0), size)
    last = size if end is None else min(max(end, first), size)
    return _object_bytes(shard, offset + first, offset + last) if last > first else b""


@storage_retry
def _object_bytes(uri: str, start: int | None = None, end: int | None = None) -> bytes:
    fs, path = filesystem(uri)
    if start is None and end is None:
        return fs.cat_file(path)
    data = fs.cat_file(path, start=start, end=end)
    if start is not None and end is not None and len(data) > end - start:
        # An HTTP server that ignores Range answers 200 with the whole file: take the range from it.
        return data[start:end]
    return data


class TruncatedRead(ConnectionError):
    """A ranged read returned fewer bytes than asked for (a cut-off body): transient."""


class RetryingReader(SizedReader):
    """A seekable binary reader over a remote file whose every network read is retried.

    PyAV (and decord staging, and model downloads) read remote videos through this object long
    after it was opened, so the retries must sit here, not only around ``open``. It reads aligned
    blocks of ``block_size`` bytes with explicit ranged GETs (``bytes=start-end``; no suffix
    ranges), one HTTP request per attempt, each under :data:`POLICY`, and keeps the two most
    recent blocks. Seeks and ``tell`` are local and never touch the network.

    An HTTP server that ignores ``Range`` answers a ranged GET with the whole file (or gives no
    size at all): the reader then keeps that whole body in a temporary file and serves every
    later read from it, so such a file is downloaded once, not once per block.
    """

    def __init__(self, uri: str, block_size: int = READ_BLOCK_SIZE) -> None:
        fs, path = filesystem(uri)
        try:
            size = with_retries(lambda: fs.size(path))
        except Exception as exc:
            clearer = _explained(exc, uri)
            if clearer is None:
                raise
            raise clearer from exc
        super().__init__(0 if size is None else int(size))
        self.name = uri
        self._fs, self._path = fs, path
        self._block_size = block_size
        self._blocks: dict[int, bytes] = {}
        self._whole: IO[bytes] | None = None
        if size is None:  # an HTTP server that sends no Content-Length
            self._keep_whole(with_retries(lambda: self._fs.cat_file(self._path)))

    def _keep_whole(self, data: bytes) -> None:
        whole = tempfile.TemporaryFile(prefix="plm-whole-")
        whole.write(data)
        self._whole, self._size, self._blocks = whole, len(data), {}

    @property
    def reads_whole(self) -> bool:
        """Whether the server ignored ranges and the file is now read from a local whole copy."""
        return self._whole is not None

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            return block
        start = index * self._block_size
        end = min(self._size, start + self._block_size)
        if self._whole is not None:
            self._whole.seek(start)
            return self._whole.read(end - start)

        def fetch() -> bytes:
            data = self._fs.cat_file(self._path, start=start, end=end)
            if len(data) != end - start and not (len(data) == self._size and len(data) > end - start):
                raise TruncatedRead(f"got {len(data)} of {end - start} bytes at offset {start} of {self.name}")
            return data

        fetch.__qualname__ = f"read of {self.name} [{start}, {end})"
        block = with_retries(fetch)
        if len(block) != end - start:  # the whole file: the server ignored Range
            log.info("storage: %s ignores range requests; reading it whole", _redacted(self.name))
            self._keep_whole(block)
            return block[start:end]
        if len(self._blocks) >= 2:
            self._blocks.pop(next(iter(self._blocks)))
        self._blocks[index] = block
        return block

    def read(self, size: int | None = -1) -> bytes:
        end = self._end_of_read(size)
        parts = []
        while self._pos < end:
            index, offset = divmod(self._pos, self._block_size)
            block = self._block(index)
            piece = block[offset:offset + end - self._pos]
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)

    def close(self) -> None:
        self._blocks = {}
        if self._whole is not None:
            self._whole.close()
            self._whole = None
        super().close()


def open_read(uri: str) -> IO[bytes]:
    """A seekable binary reader; remote files are read lazily in blocks, each read retried; a tar
    member (``shard.tar#member``) is a view over its bytes in the shard."""
    if tar.is_member_uri(uri):
        return _open_member(uri)
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


# --- members of tar shards (``shard.tar#member``); the tar format itself is core/tar.py ----------

def _open_shard(shard: str, block_size: int | None = None) -> tuple[IO[bytes], int]:
    """A seekable reader over a whole shard, and its size."""
    if is_remote(shard):
        reader = RetryingReader(shard, block_size=block_size or READ_BLOCK_SIZE)
        return reader, reader.size  # type: ignore[return-value]
    handle = open_read(shard)
    size = int(handle.seek(0, io.SEEK_END))
    handle.seek(0)
    return handle, size


def list_shard(shard: str, read_suffixes: tuple[str, ...] = ()) -> tar.ShardListing:
    """A shard's members from its headers (see ``core.tar``); remote shards are read in small blocks.

    Raises ``tar.ShardError`` for a file that is not an uncompressed tar, ``FileNotFoundError``
    for a missing one.
    """
    tar.refuse_compressed(shard)
    handle, size = _open_shard(shard, tar.LIST_BLOCK_SIZE)
    with handle:
        return tar.list_members(handle, size, shard, read_suffixes)


def _member_range(uri: str, shard_size: int | None = None) -> tuple[str, int, int]:
    """``(shard, offset, size)`` of a member, listing its shard if this process has not (or it changed)."""
    shard, _ = tar.split_member_uri(uri) or (uri, "")
    found = tar.known_range(uri, shard_size)
    if found is None:
        listing = list_shard(shard)
        member = next((m for m in listing.members if tar.member_uri(shard, m.name) == uri), None)
        if member is None:
            tar.known_range(uri)  # raises, naming the refused or missing member
            raise tar.MemberError(f"shard {shard} has no member {uri[len(shard) + 1:]!r}")
        found = (member.offset, member.size)
    return shard, found[0], found[1]


def _open_member(uri: str) -> IO[bytes]:
    shard, _ = tar.split_member_uri(uri) or (uri, "")
    handle, size = _open_shard(shard)
    try:
        _, offset, length = _member_range(uri, size)
    except BaseException:
        handle.close()
        raise
    return tar.MemberReader(handle, offset, length, uri)  # type: ignore[return-value]
