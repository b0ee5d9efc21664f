"""End-to-end builds over WebDataset-style tar shards, on local disk and in the GCS emulator.

The shards are written with Python's ``tarfile`` around real videos (``core.media.make_video``);
the build is the real ``plm-index build`` pipeline on FnApiRunner with the tiny PLM; the served
index is the real ``plm-index serve`` process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.parse
from pathlib import Path

import pytest

from core import storage, tar
from core.media import make_video
from index import read_current
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from schemas.records import VideoInput
from search import run_search
from tests.pipeline.test_storage_faults import FaultInjectingProxy, fast_policy, proxy  # noqa: F401 - fixtures
from tests.search.test_server import free_port, get, wait_until_up
from transforms.probe import probe_video

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What pattern is on the screen?"


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three shards: good members beside an escaping name and a text ``.mp4``; a truncated third shard.

    shard-000000: a.mp4 + a.json (a question), ../escape.mp4, notes.mp4 (text)
    shard-000001: sub/b.mkv, b.cls (ignored)
    shard-000002: c.mp4 (whole), d.mp4 (cut off half-way: the shard is truncated)
    """
    videos = tmp_path_factory.mktemp("shard-videos")
    a = Path(make_video(str(videos / "a.mp4"), "testsrc=size=320x240:rate=25", 3)).read_bytes()
    b = Path(make_video(str(videos / "b.mkv"), "mandelbrot=size=256x144:rate=20", 3)).read_bytes()
    c = Path(make_video(str(videos / "c.mp4"), "testsrc2=size=320x240:rate=25", 2)).read_bytes()
    folder = tmp_path_factory.mktemp("shards")
    with tarfile.open(folder / "shard-000000.tar", "w") as archive:
        add_bytes(archive, "a.mp4", a)
        add_bytes(archive, "a.json", json.dumps({"collection": "patterns", "questions": [{"question": QUESTION}]})
                  .encode())
        add_bytes(archive, "../escape.mp4", a)
        add_bytes(archive, "notes.mp4", b"these are notes, not a video\n" * 20)
    with tarfile.open(folder / "shard-000001.tar", "w") as archive:
        add_bytes(archive, "sub/b.mkv", b)
        add_bytes(archive, "b.cls", b"7")
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as archive:
        add_bytes(archive, "c.mp4", c)
        add_bytes(archive, "d.mp4", a)
    data = whole.getvalue()
    (folder / "shard-000002.tar").write_bytes(data[:data.index(a[:4096]) + len(a) // 2])
    (folder / "originals").mkdir()
    for name, content in (("a.mp4", a), ("b.mkv", b), ("c.mp4", c)):
        (folder / "originals" / name).write_bytes(content)
    return folder


def build(source: str, output: str, model: str, tasks: tuple[str, ...] = ("caption",)) -> object:
    config = BuildConfig(input=source, output=output, clips=ClipSpec.parse("fixed:4"), tasks=tasks,
                         model=ModelConfig(model=model, max_new_tokens=6, torch_threads=2))
    return run_build(config, beam_options([]))


def test_build_over_a_brace_list_of_local_shards(shard_folder: Path, tiny_model: str, tmp_path: Path) -> None:
    tar.forget_shards()
    output = str(tmp_path / "index")
    summary = build(str(shard_folder / "shard-{000000..000002}.tar"), output, tiny_model, ("caption", "sgqa"))
    assert (summary.indexed, summary.failed, summary.ignored) == (3, 3, 1)
    shard = {n: f"{shard_folder}/shard-00000{n}.tar" for n in range(3)}
    member = {"a": f"{shard[0]}#a.mp4", "b": f"{shard[1]}#sub/b.mkv", "c": f"{shard[2]}#c.mp4"}
    videos = read_current(output, "videos").to_pylist()
    assert sorted(v["uri"] for v in videos) == sorted(member.values())
    # Content ids: a member has the id of the same bytes as a file of their own.
    ids = {v["uri"]: v["video_id"] for v in videos}
    for key, name in (("a", "a.mp4"), ("b", "b.mkv"), ("c", "c.mp4")):
        assert ids[member[key]] == probe_video(VideoInput(str(shard_folder / "originals" / name))).video_id
    segments = read_current(output, "segments").to_pylist()
    assert {r["uri"] for r in segments} == set(member.values())
    # a.json's question reached the build: the member alone gets an sgqa row.
    asked = [r for r in segments if r["task"] == "sgqa"]
    assert {r["uri"] for r in asked} == {member["a"]} and all(QUESTION in r["prompt"] for r in asked)
    errors = {e["uri"]: e for e in read_current(output, "errors").to_pylist()}
    assert sorted(errors) == sorted([f"{shard[0]}#../escape.mp4", f"{shard[0]}#notes.mp4", f"{shard[2]}#d.mp4"])
    assert errors[f"{shard[0]}#../escape.mp4"]["stage"] == "discover"
    assert "climbs out of the shard's folder" in errors[f"{shard[0]}#../escape.mp4"]["message"]
    assert errors[f"{shard[0]}#notes.mp4"]["stage"] == "probe"
    assert errors[f"{shard[2]}#d.mp4"]["stage"] == "discover"
    assert "truncated" in errors[f"{shard[2]}#d.mp4"]["message"]

    # Search answers with the member's uri; serve plays it with range requests and thumbnails it.
    text = next(r["text"] for r in segments if r["uri"] == member["b"] and r["task"] == "caption")
    hits = json.loads(run_search(output, text, 3, True, mode="keyword"))
    assert hits[0]["uri"] == member["b"]
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--index", output, "--port", str(port),
                                "--refresh", "0"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/api/stats", process)
        original = (shard_folder / "originals" / "b.mkv").read_bytes()
        query = urllib.parse.urlencode({"uri": member["b"]})
        status, headers, body = get(f"{base}/video?{query}", {"Range": "bytes=100-4195"})
        assert status == 206 and body == original[100:4196]
        assert headers["content-range"] == f"bytes 100-4195/{len(original)}"
        assert headers["content-type"].startswith("video/")
        status, _, body = get(f"{base}/video?{query}")
        assert status == 200 and body == original
        status, headers, body = get(f"{base}/thumbnail?{query}&t=1.0")
        assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
        # Only the index's own members: a refused member and the shard itself are not served.
        for uri in (f"{shard[0]}#../escape.mp4", shard[0], f"{shard[0]}#a.json"):
            assert get(f"{base}/video?{urllib.parse.urlencode({'uri': uri})}")[0] == 404
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_build_over_a_glob_of_shards_in_gcs(gcs_emulator, shard_folder: Path, tiny_model: str) -> None:
    tar.forget_shards()
    bucket = gcs_emulator.create_bucket("shards")
    for n in (0, 1):
        name = f"shard-00000{n}.tar"
        storage.write_bytes(f"gs://{bucket}/in/{name}", (shard_folder / name).read_bytes())
    output = f"gs://{bucket}/index"
    summary = build(f"gs://{bucket}/in/shard-*.tar", output, tiny_model)
    assert (summary.indexed, summary.failed, summary.ignored) == (2, 2, 1)
    videos = read_current(output, "videos").to_pylist()
    assert sorted(v["uri"] for v in videos) == [f"gs://{bucket}/in/shard-000000.tar#a.mp4",
                                                f"gs://{bucket}/in/shard-000001.tar#sub/b.mkv"]
    assert {v["video_id"] for v in videos} == {
        probe_video(VideoInput(str(shard_folder / "originals" / name))).video_id for name in ("a.mp4", "b.mkv")}
    errors = sorted((e["uri"], e["stage"]) for e in read_current(output, "errors").to_pylist())
    assert errors == [(f"gs://{bucket}/in/shard-000000.tar#../escape.mp4", "discover"),
                      (f"gs://{bucket}/in/shard-000000.tar#notes.mp4", "probe")]
    segments = read_current(output, "segments").to_pylist()
    hits = json.loads(run_search(output, segments[0]["text"], 3, True, mode="keyword"))
    assert hits and hits[0]["uri"].startswith(f"gs://{bucket}/in/shard-00000")
    # A member in the bucket reads back byte for byte through storage.
    original = (shard_folder / "originals" / "b.mkv").read_bytes()
    assert storage.read_bytes(f"gs://{bucket}/in/shard-000001.tar#sub/b.mkv", 10, 2000) == original[10:2000]


def test_members_in_gcs_list_and_read_through_faults(gcs_emulator, proxy: FaultInjectingProxy,  # noqa: F811
                                                     fast_policy: storage.RetryPolicy) -> None:  # noqa: F811
    tar.forget_shards()
    bucket = gcs_emulator.create_bucket("faulty-shards")
    members = {f"k{n:02d}.mp4": os.urandom(150_000 + n) for n in range(12)}
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as archive:
        for name, data in members.items():
            add_bytes(archive, name, data)
    shard = f"gs://{bucket}/shard.tar"
    storage.write_bytes(shard, whole.getvalue())
    proxy.fault_rate, proxy.seed = 0.2, 11
    listing = storage.list_shard(shard)
    assert [m.name for m in listing.members] == list(members)
    # Listing sought over the members: tarfile was handed their headers, not their bytes.
    assert listing.bytes_read < len(whole.getvalue()) / 20
    for name, data in members.items():
        with storage.open_read(f"{shard}#{name}") as member:
            assert member.read(1000) == data[:1000]
            member.seek(-777, io.SEEK_END)
            assert member.read() == data[-777:]
        assert storage.read_bytes(f"{shard}#{name}", 5000, 9000) == data[5000:9000]
    assert sum(proxy.faults().values()) > 0
