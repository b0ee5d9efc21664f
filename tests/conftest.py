"""Shared fixtures for the whole test suite.

``gcs_emulator``: a real ``gcp-storage-emulator`` server (one per session) and, per test, the
environment that points google-cloud-storage and gcsfs at it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

EMULATOR_START_TIMEOUT_S = 30.0

@dataclass(frozen=True)
class GcsEmulatorServer:
    """A running emulator process and the fake credentials file beside it."""

    process: subprocess.Popen[bytes]
    url: str
    credentials_file: str


@dataclass(frozen=True)
class GcsEmulator:
    """The emulator as a test sees it, with the environment already pointing at it."""

    url: str

    def create_bucket(self, prefix: str = "test") -> str:
        """Create a bucket with a fresh name (the server outlives each test) and return the name."""
        from google.cloud import storage as gcs

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        gcs.Client(project="test").create_bucket(name)
        return name


def _emulator_executable() -> str:
    beside_python = Path(sys.executable).with_name("gcp-storage-emulator")
    found = str(beside_python) if beside_python.exists() else shutil.which("gcp-storage-emulator")
    if not found:
        pytest.fail("gcp-storage-emulator is not installed (pip install -e '.[test]')")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n{log_file.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{process.args[0]} did not answer on port {port} in {EMULATOR_START_TIMEOUT_S:.0f}s:\n"
                f"{log_file.read_text()}")


def _clear_gcsfs_instances() -> None:
    """Forget cached gcsfs instances, which keep the endpoint and credentials they were made with."""
    if "gcsfs" not in sys.modules:
        return
    import gcsfs
    import gcsfs.core

    gcsfs.GCSFileSystem.clear_instance_cache()
    gcsfs.core.GCSFileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def gcs_emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulatorServer]:
    """Start an in-memory ``gcp-storage-emulator`` on a free local port for the session."""
    folder = tmp_path_factory.mktemp("gcs-emulator")
    credentials = folder / "adc.json"
    credentials.write_text(json.dumps({"type": "authorized_user", "client_id": "fake",
                                       "client_secret": "fake", "refresh_token": "fake"}))
    port = _free_port()
    log_file = folder / "emulator.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [_emulator_executable(), "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(process, port, log_file)
        yield GcsEmulatorServer(process=process, url=f"http://127.0.0.1:{port}", credentials_file=str(credentials))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def gcs_emulator(gcs_emulator_server: GcsEmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsEmulator]:
    """Point google-cloud-storage and gcsfs (through ``core.storage``) at the emulator.

    ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is read when gcsfs is first imported, so it only takes
    effect if nothing imported gcsfs before this fixture.
    """
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator_server.url)
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", gcs_emulator_server.credentials_file)
    _clear_gcsfs_instances()
    try:
        yield GcsEmulator(url=gcs_emulator_server.url)
    finally:
        _clear_gcsfs_instances()



# --- S3: a real moto standalone server -----------------------------------------------------------

@dataclass(frozen=True)
class S3Server:
    """A running ``moto.server`` process (in memory, any bucket, no signature checks)."""

    process: subprocess.Popen[bytes]
    url: str


@dataclass(frozen=True)
class S3Emulator:
    """The moto server as a test sees it, with AWS_ENDPOINT_URL and fake credentials set."""

    url: str

    def create_bucket(self, prefix: str = "test") -> str:
        """Create a bucket with a fresh name (the server outlives each test) and return the name."""
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1").create_bucket(Bucket=name)
        return name


def _clear_s3fs_instances() -> None:
    """Forget cached s3fs instances, which keep the endpoint and credentials they were made with."""
    if "s3fs" not in sys.modules:
        return
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    from core import storage

    storage.s3_filesystem_class().clear_instance_cache()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start moto's standalone S3 server on a free local port for the session."""
    folder = tmp_path_factory.mktemp("moto")
    port = _free_port()
    log_file = folder / "moto.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(process, port, log_file)
        yield S3Server(process=process, url=f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def s3_emulator(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Emulator]:
    """Point botocore and s3fs (through ``core.storage``) at the moto server, with fake credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    _clear_s3fs_instances()
    try:
        yield S3Emulator(url=s3_server.url)
    finally:
        _clear_s3fs_instances()
