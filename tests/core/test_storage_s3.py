"""``s3://`` through ``core.storage`` against a real moto S3 server, and through the fault-injecting proxy.

The proxy (``FaultInjectingProxy``, the project's one storage fault injector) sits between s3fs
and the moto server and fails chosen requests with 429, 503 or a TCP reset. The tests prove that
those faults are retried under ``core.storage.POLICY`` alone (s3fs's and botocore's own retry
loops are cut to one try, so attempts are counted exactly, not multiplied), that 404 and 403 are
not retried, and that listing, globs, ranged reads and writes work on a real S3 API.
"""

from __future__ import annotations

import errno
import os
import pickle
from collections import Counter
from collections.abc import Iterator

import pytest

from core import storage
from tests.pipeline import test_storage_faults
from tests.pipeline.test_storage_faults import FAULT_KINDS, FaultInjectingProxy

fast_policy = test_storage_faults.fast_policy  # the same fixture: the policy's shape, millisecond waits


@pytest.fixture
def s3_proxy(s3_emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultInjectingProxy]:
    """The fault proxy in front of the moto server (no faults until a test sets them); storage goes through it."""
    injector = FaultInjectingProxy(s3_emulator.url).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", injector.url)
    try:
        yield injector
    finally:
        injector.stop()


def test_listing_globs_reads_and_writes(s3_emulator) -> None:
    bucket = s3_emulator.create_bucket("basics")
    root = f"s3://{bucket}/archive"
    data = os.urandom(300_000)
    storage.write_bytes(f"{root}/a.mp4", data)
    storage.write_bytes(f"{root}/sub/b.mkv", b"bbb")
    storage.write_bytes(f"{root}/sub/deeper/c.mp4", b"ccc")
    storage.write_bytes(f"{root}/notes.txt", b"n")

    assert storage.list_files(root) == [f"{root}/a.mp4", f"{root}/notes.txt", f"{root}/sub/b.mkv",
                                        f"{root}/sub/deeper/c.mp4"]
    assert storage.glob(f"{root}/*.mp4") == [f"{root}/a.mp4"]
    assert storage.glob(f"{root}/**/*.mp4") == [f"{root}/a.mp4", f"{root}/sub/deeper/c.mp4"]
    assert storage.glob(f"s3a://{bucket}/archive/sub/*.mkv") == [f"s3a://{bucket}/archive/sub/b.mkv"]
    assert storage.is_dir(root) and storage.is_dir(f"{root}/sub") and not storage.is_dir(f"{root}/a.mp4")
    assert storage.exists(f"{root}/a.mp4") and not storage.exists(f"{root}/missing.mp4")
    assert storage.size_of(f"{root}/a.mp4") == len(data)
    assert storage.read_bytes(f"{root}/a.mp4") == data
    assert storage.read_bytes(f"{root}/a.mp4", 1000, 70_000) == data[1000:70_000]
    assert isinstance(storage.modified_time(f"{root}/a.mp4"), float)
    with storage.RetryingReader(f"{root}/a.mp4", block_size=64 * 1024) as reader:
        reader.seek(-10, os.SEEK_END)
        assert reader.read() == data[-10:]
        reader.seek(100_000)
        assert reader.read(5) == data[100_000:100_005]
    # A listing made before a write never hides the new object (no listings cache).
    assert storage.glob(f"{root}/sub/*.mkv") == [f"{root}/sub/b.mkv"]
    storage.write_bytes(f"{root}/sub/new.mkv", b"new")
    assert storage.glob(f"{root}/sub/*.mkv") == [f"{root}/sub/b.mkv", f"{root}/sub/new.mkv"]
    storage.remove(f"{root}/notes.txt")
    storage.remove(f"{root}/notes.txt")  # a missing file is not an error
    assert not storage.exists(f"{root}/notes.txt")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"s3://no-such-bucket-{bucket}/x.mp4")


def test_endpoint_and_options_come_from_the_environment(s3_emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec.config

    fs, path = storage.filesystem("s3://bucket/key.mp4")
    assert path == "bucket/key.mp4" and fs.endpoint_url == s3_emulator.url
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")  # the S3-specific one wins, as in botocore
    assert storage.filesystem("s3://bucket/key.mp4")[0].endpoint_url == "http://127.0.0.1:1"
    # fsspec's config (FSSPEC_S3_* variables, read at import) passes s3fs options through; our
    # one-attempt retry setting is kept even when that config sets other botocore options.
    monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"region_name": "auto"},
                                                   "config_kwargs": {"signature_version": "s3v4"}})
    fs = storage.filesystem("s3://bucket/key.mp4")[0]
    assert fs.client_kwargs == {"region_name": "auto"}
    assert fs.config_kwargs["signature_version"] == "s3v4"
    assert fs.config_kwargs["retries"] == {"total_max_attempts": 1, "mode": "standard"}


def test_s3fs_and_botocore_retries_are_one_try(s3_emulator) -> None:
    import s3fs

    cls = storage.s3_filesystem_class()
    assert issubclass(cls, s3fs.S3FileSystem) and cls.retries == 1 and s3fs.S3FileSystem.retries > 1
    assert storage.SingleAttemptS3FileSystem is cls
    fs, _ = storage.filesystem("s3://some-bucket/x")
    assert type(fs) is cls and type(pickle.loads(pickle.dumps(fs))) is cls  # Beam may pickle it
    fs.ls("")  # connects
    assert fs.s3.meta.config.retries["total_max_attempts"] == 1


def _client_error(status: int, code: str) -> BaseException:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def test_is_transient_on_botocore_and_s3fs_errors() -> None:
    from botocore.exceptions import (
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from botocore.parsers import ResponseParserError
    from s3fs.errors import translate_boto_error

    transient = [(503, "SlowDown"), (503, "ServiceUnavailable"), (500, "InternalError"), (502, "502"),
                 (504, "504"), (429, "429"), (400, "Throttling"), (400, "RequestTimeout"),
                 (400, "ThrottlingException"), (503, "503")]
    for status, code in transient:
        raw = _client_error(status, code)
        assert storage.is_transient(raw), (status, code)
        translated = translate_boto_error(raw)  # what s3fs raises after its (single) try
        assert storage.is_transient(translated), (status, code, repr(translated))
    assert translate_boto_error(_client_error(503, "SlowDown")).errno == errno.EBUSY
    permanent = [(404, "NoSuchKey"), (404, "NoSuchBucket"), (403, "AccessDenied"), (400, "InvalidArgument"),
                 (400, "InvalidRange"), (412, "PreconditionFailed"), (409, "BucketAlreadyExists")]
    for status, code in permanent:
        raw = _client_error(status, code)
        assert not storage.is_transient(raw), (status, code)
        assert not storage.is_transient(translate_boto_error(raw)), (status, code)
    assert isinstance(translate_boto_error(_client_error(404, "NoSuchKey")), FileNotFoundError)
    assert isinstance(translate_boto_error(_client_error(403, "AccessDenied")), PermissionError)
    for exc in (EndpointConnectionError(endpoint_url="http://x"), ConnectionClosedError(endpoint_url="http://x"),
                ReadTimeoutError(endpoint_url="http://x"), ResponseStreamingError(error="reset"),
                ResponseParserError("invalid XML from a throttled request")):
        assert storage.is_transient(exc), repr(exc)
    assert not storage.is_transient(OSError(errno.EINVAL, "InvalidArgument"))


def test_faults_are_retried_once_per_policy_attempt(s3_emulator, s3_proxy: FaultInjectingProxy,
                                                     fast_policy: storage.RetryPolicy) -> None:
    bucket = s3_emulator.create_bucket("flaky")
    storage.write_bytes(f"s3://{bucket}/twice.bin", b"payload")
    storage.write_bytes(f"s3://{bucket}/never.bin", b"payload")
    s3_proxy.fail_first = {"twice.bin": 2, "never.bin": -1}
    before = s3_proxy.attempts("twice.bin")
    assert storage.read_bytes(f"s3://{bucket}/twice.bin") == b"payload"
    assert s3_proxy.attempts("twice.bin") - before == 3  # two 503s, then success: no hidden retries
    before = s3_proxy.attempts("never.bin")
    with pytest.raises(OSError) as raised:
        storage.read_bytes(f"s3://{bucket}/never.bin")
    assert storage.is_transient(raised.value)
    # Bounded by POLICY alone: s3fs (5 tries) x botocore (5 attempts) would make this 200.
    assert s3_proxy.attempts("never.bin") - before == fast_policy.max_attempts


def _sent_once_each(proxy: FaultInjectingProxy, part: str) -> bool:
    """Whether every distinct request naming ``part`` reached the server exactly once (none was retried)."""
    sent = Counter((method, path) for method, path, _ in proxy.log if part in path)
    return bool(sent) and set(sent.values()) == {1}


def test_404_and_403_are_not_retried(s3_emulator, s3_proxy: FaultInjectingProxy,
                                     fast_policy: storage.RetryPolicy) -> None:
    bucket = s3_emulator.create_bucket("perm")
    storage.write_bytes(f"s3://{bucket}/secret.bin", b"top secret")
    s3_proxy.forbid = ["secret.bin"]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"s3://{bucket}/missing.bin")
    # s3fs asks HEAD for the key, then lists it as a prefix (is it a folder?): two requests, each once.
    assert _sent_once_each(s3_proxy, "missing.bin"), s3_proxy.log
    with pytest.raises(PermissionError):
        storage.read_bytes(f"s3://{bucket}/secret.bin")
    assert _sent_once_each(s3_proxy, "secret.bin"), s3_proxy.log
    with pytest.raises(PermissionError):
        storage.exists(f"s3://{bucket}/secret.bin")  # a 403 is an error, not "does not exist"
    assert s3_proxy.faults()["503"] == 0 and s3_proxy.faults()["403"] >= 2


def test_reads_and_listings_survive_random_faults(s3_emulator, s3_proxy: FaultInjectingProxy,
                                                  fast_policy: storage.RetryPolicy) -> None:
    bucket = s3_emulator.create_bucket("reads")
    data = os.urandom(1024 * 1024 + 3)
    storage.write_bytes(f"s3://{bucket}/m/weights.bin", data)
    storage.write_bytes(f"s3://{bucket}/m/sub/config.json", b'{"a": 1}')
    s3_proxy.fault_rate, s3_proxy.seed = 0.25, 11
    with storage.RetryingReader(f"s3://{bucket}/m/weights.bin", block_size=64 * 1024) as reader:
        got = bytearray()
        while chunk := reader.read(50_000):
            got += chunk
    assert bytes(got) == data
    for _ in range(5):
        assert storage.list_files(f"s3://{bucket}/m") == [f"s3://{bucket}/m/sub/config.json",
                                                          f"s3://{bucket}/m/weights.bin"]
        storage.write_bytes(f"s3://{bucket}/out/run.json", b"{}")
    faults = s3_proxy.faults()
    assert sum(faults.values()) > 0 and set(faults) <= set(FAULT_KINDS), faults


def test_missing_credentials_name_the_uri_and_the_fix(s3_emulator, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path) -> None:
    bucket = s3_emulator.create_bucket("creds")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups off-cloud
    storage.s3_filesystem_class().clear_instance_cache()
    uri = f"s3://{bucket}/videos/a.mp4"
    for call in (lambda: storage.read_bytes(uri), lambda: storage.RetryingReader(uri)):
        with pytest.raises(PermissionError, match=f"no S3 credentials .*{uri}.*AWS_ACCESS_KEY_ID") as raised:
            call()
        assert isinstance(raised.value, storage.MissingCredentials)
        assert not storage.is_transient(raised.value)


def test_a_failed_listing_inside_a_glob_is_retried_not_read_as_empty(s3_emulator, s3_proxy: FaultInjectingProxy,
                                                                     fast_policy: storage.RetryPolicy) -> None:
    bucket = s3_emulator.create_bucket("globfault")
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        storage.write_bytes(f"s3://{bucket}/in/{name}", b"v")
    # fsspec's walk "omits" a failed listing: the glob would match nothing, or fewer files.
    s3_proxy.fault_rate, s3_proxy.seed = 0.5, 3
    for _ in range(12):
        assert storage.glob(f"s3://{bucket}/in/*.mp4") == [f"s3://{bucket}/in/a.mp4", f"s3://{bucket}/in/b.mp4"]
    assert sum(s3_proxy.faults().values()) > 0
    s3_proxy.fault_rate = 0.0
    assert storage.glob(f"s3://{bucket}/in/**/*.mp4") == [f"s3://{bucket}/in/a.mp4", f"s3://{bucket}/in/b.mp4",
                                                          f"s3://{bucket}/in/sub/c.mp4"]
    assert storage.glob(f"s3://{bucket}/nothing/*.mp4") == []


def test_local_globs_still_match_and_a_missing_root_matches_nothing(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "b.txt", "sub/c.mp4"):
        (tmp_path / name).write_bytes(b"v")
    assert storage.glob(str(tmp_path / "*.mp4")) == [str(tmp_path / "a.mp4")]
    assert storage.glob(str(tmp_path / "**" / "*.mp4")) == [str(tmp_path / "a.mp4"), str(tmp_path / "sub" / "c.mp4")]
    assert storage.glob(str(tmp_path / "missing" / "*.mp4")) == []
