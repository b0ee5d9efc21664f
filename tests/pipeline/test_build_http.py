"""Builds from manifests that list ``http://`` URLs, served by a local HTTP server the test starts.

One server honours ``Range`` (videos are read block by block), one ignores it (each video is read
whole, once per opening); a URL that answers 404 becomes an error row naming it while the rest
is indexed. The server is ``FileServer`` from ``tests/core/test_storage_http.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from index import read_current
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from search import run_search
from tests.core import test_storage_http
from tests.core.test_storage_http import FileServer

# The same fixtures as the storage tests: a served folder, a server with Range, one without.
http_files = test_storage_http.http_files
range_server = test_storage_http.range_server
whole_server = test_storage_http.whole_server


def _serve_videos(video_folder: Path, root: Path) -> None:
    shutil.copy(video_folder / "a.mp4", root / "a.mp4")
    (root / "clips").mkdir()
    shutil.copy(video_folder / "sub" / "b.mkv", root / "clips" / "b.mkv")


def _build(manifest: str, output: str, model: str):
    config = BuildConfig(input=manifest, output=output, clips=ClipSpec.parse("fixed:4"),
                         model=ModelConfig(model=model, max_new_tokens=6, torch_threads=2))
    return run_build(config, beam_options([]))


def _check_index(output: str, base: str) -> None:
    videos = {r["uri"]: r for r in read_current(output, "videos").to_pylist()}
    assert set(videos) == {f"{base}/a.mp4", f"{base}/clips/b.mkv"}
    segments = read_current(output, "segments").to_pylist()
    a_clips = sorted((r["start_s"], r["end_s"]) for r in segments if r["uri"] == f"{base}/a.mp4")
    assert a_clips == [(0.0, 4.0), (4.0, 8.0), (8.0, 9.0)]
    errors = read_current(output, "errors").to_pylist()
    assert [e["uri"] for e in errors] == [f"{base}/gone.mp4"]
    assert f"{base}/gone.mp4" in errors[0]["message"], errors[0]
    hits = json.loads(run_search(output, segments[0]["text"], 3, True, mode="keyword"))
    assert hits and hits[0]["uri"].startswith(base)


def test_build_from_a_manifest_of_http_urls_with_range_requests(http_files: Path, range_server: FileServer,
                                                                video_folder: Path, tiny_model: str,
                                                                tmp_path: Path) -> None:
    _serve_videos(video_folder, http_files)
    base = range_server.url
    # The manifest itself is served too; its relative uri resolves against its URL's folder.
    rows = [{"uri": f"{base}/a.mp4", "collection": "kitchen"}, {"uri": "clips/b.mkv"}, {"uri": f"{base}/gone.mp4"}]
    (http_files / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = str(tmp_path / "index")
    summary = _build(f"{base}/manifest.jsonl", output, tiny_model)
    assert (summary.inputs, summary.indexed, summary.failed) == (3, 2, 1), summary.line()
    _check_index(output, base)
    # The probe hashes a file this small whole (one plain GET); decoding reads ranges.
    video_gets = range_server.gets("a.mp4")
    assert [rng is None for _, _, rng, _, _ in video_gets].count(True) <= 1, video_gets
    assert any(status == 206 for *_, status, _ in video_gets), video_gets


def test_build_from_http_urls_on_a_server_without_range_support(http_files: Path, whole_server: FileServer,
                                                                video_folder: Path, tiny_model: str,
                                                                tmp_path: Path) -> None:
    _serve_videos(video_folder, http_files)
    base = whole_server.url
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"uri": uri}) + "\n"
                                for uri in (f"{base}/a.mp4", f"{base}/clips/b.mkv", f"{base}/gone.mp4")))
    output = str(tmp_path / "index")
    summary = _build(str(manifest), output, tiny_model)
    assert (summary.inputs, summary.indexed, summary.failed) == (3, 2, 1), summary.line()
    _check_index(output, base)
    assert all(status == 200 for *_, status, _ in whole_server.gets("a.mp4"))
