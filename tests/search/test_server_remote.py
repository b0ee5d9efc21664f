"""``plm-index serve`` streams ``s3://`` and ``http://`` videos through the server, range by range.

The same check as ``test_server.py``'s gs:// test, on a real moto S3 server and on a local HTTP
server that ignores ``Range`` (the server must still answer the browser's ranges exactly), plus
a thumbnail decoded from each.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core import storage
from core.media import make_video
from tests.core import test_storage_http
from tests.core.test_storage_http import FileServer
from tests.search.conftest import commit_video, segment_row
from tests.search.test_server import free_port, get, wait_until_up

http_files = test_storage_http.http_files
whole_server = test_storage_http.whole_server


@contextmanager
def serving(index: str) -> Iterator[str]:
    import uvicorn

    from search.server import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(index), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base + "/")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _check_streaming(base: str, uri: str, whole: bytes) -> None:
    url = f"{base}/video?{urllib.parse.urlencode({'uri': uri})}"
    status, headers, body = get(url, {"Range": "bytes=10-2009"})
    assert status == 206 and body == whole[10:2010]
    assert headers["content-range"] == f"bytes 10-2009/{len(whole)}"
    assert get(url, {"Range": "bytes=-100"})[2] == whole[-100:]
    status, _, body = get(url)
    assert status == 200 and body == whole
    status, headers, body = get(f"{base}/thumbnail?{urllib.parse.urlencode({'uri': uri, 't': '1.5'})}")
    assert status == 200 and body[:3] == b"\xff\xd8\xff", (status, body[:100])  # a JPEG


def test_s3_videos_stream_through_the_server(tmp_path: Path, s3_emulator, st_embed) -> None:
    whole = Path(make_video(str(tmp_path / "v.mp4"), "testsrc=size=160x120:rate=25", 3)).read_bytes()
    uri = f"s3://{s3_emulator.create_bucket()}/videos/v.mp4"
    storage.write_bytes(uri, whole)
    index = str(tmp_path / "index")
    commit_video(index, [dict(segment_row("v", 0, 0.0, 3.0, "a test pattern moves"), uri=uri)], embed=st_embed)
    with serving(index) as base:
        _check_streaming(base, uri, whole)


def test_http_videos_stream_through_the_server_even_without_range_support(
        tmp_path: Path, http_files: Path, whole_server: FileServer, st_embed) -> None:
    whole = Path(make_video(str(http_files / "v.mp4"), "testsrc=size=160x120:rate=25", 3)).read_bytes()
    uri = f"{whole_server.url}/v.mp4"
    index = str(tmp_path / "index")
    commit_video(index, [dict(segment_row("v", 0, 0.0, 3.0, "a test pattern moves"), uri=uri)], embed=st_embed)
    with serving(index) as base:
        _check_streaming(base, uri, whole)
