"""Builds that read videos from and write the index to ``s3://`` on a real moto S3 server.

The same shape as ``test_build_gcs.py``: real videos (``core.media.make_video``) uploaded to a
bucket, the tiny real PLM, Beam's FnApiRunner, and the index read back and searched on ``s3://``.
The fault-injecting proxy from ``test_storage_faults.py`` stands in front of moto for one build.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core import storage
from index import list_runs, read_current
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from search import run_search
from tests.pipeline.test_storage_faults import FAULT_KINDS, FaultInjectingProxy, _comparable, _upload_folder

CLI_TIMEOUT_S = 600


def _build(input_uri: str, output: str, model: str):
    config = BuildConfig(input=input_uri, output=output, clips=ClipSpec.parse("fixed:4"),
                         model=ModelConfig(model=model, max_new_tokens=6, torch_threads=2))
    return run_build(config, beam_options([]))


def test_build_from_and_to_s3(s3_emulator, video_folder: Path, tiny_model: str) -> None:
    bucket = s3_emulator.create_bucket("videos")
    _upload_folder(video_folder, f"s3://{bucket}/in")
    output = f"s3://{bucket}/index"
    summary = _build(f"s3://{bucket}/in", output, tiny_model)
    assert (summary.inputs, summary.indexed, summary.failed, summary.skipped, summary.ignored) == (3, 2, 1, 0, 1)
    segments = read_current(output, "segments").to_pylist()
    assert sorted({r["uri"] for r in segments}) == [f"s3://{bucket}/in/a.mp4", f"s3://{bucket}/in/sub/b.mkv"]
    a_clips = sorted((r["start_s"], r["end_s"]) for r in segments if r["uri"].endswith("a.mp4"))
    assert a_clips == [(0.0, 4.0), (4.0, 8.0), (8.0, 9.0)]
    errors = read_current(output, "errors").to_pylist()
    assert [(e["uri"], e["stage"]) for e in errors] == [(f"s3://{bucket}/in/broken.mp4", "probe")]
    # Ids come from content: the s3:// copy has the local file's video_id.
    from schemas.records import VideoInput
    from transforms.probe import probe_video

    ids = {Path(r["uri"]).name: r["video_id"] for r in read_current(output, "videos").to_pylist()}
    assert ids["a.mp4"] == probe_video(VideoInput(str(video_folder / "a.mp4"))).video_id
    assert list_runs(output)[0].accounting_line == summary.line()
    assert storage.list_files(f"{output}/commits") or storage.glob(f"{output}/compacted/*/*")
    hits = json.loads(run_search(output, segments[0]["text"], 3, True, mode="keyword"))
    assert hits and hits[0]["uri"].startswith(f"s3://{bucket}/in/")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, env=dict(os.environ))


def test_cli_build_from_an_s3_manifest_then_search(s3_emulator, video_folder: Path, tiny_model: str,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLM_INDEX_HOME", str(tmp_path / "home"))  # the derived search index of a remote index
    bucket = s3_emulator.create_bucket("manifest")
    storage.write_bytes(f"s3://{bucket}/videos/a.mp4", (video_folder / "a.mp4").read_bytes())
    storage.write_bytes(f"s3://{bucket}/lists/clips/b.mkv", (video_folder / "sub" / "b.mkv").read_bytes())
    rows = [{"uri": f"s3://{bucket}/videos/a.mp4", "collection": "kitchen"},
            {"uri": "clips/b.mkv", "collection": "garden"},  # relative: resolved against the manifest's folder
            {"uri": f"s3://{bucket}/videos/missing.mp4"}]
    manifest = f"s3://{bucket}/lists/manifest.jsonl"
    storage.write_bytes(manifest, "".join(json.dumps(r) + "\n" for r in rows).encode())
    output = f"s3://{bucket}/index"

    build = _cli("build", "--input", manifest, "--output", output, "--clips", "fixed:4", "--model", tiny_model,
                 "--max-new-tokens", "6", "--torch-threads", "2")
    assert build.returncode == 0, build.stderr[-3000:]
    assert "inputs 3, indexed 2, failed 1" in build.stdout, build.stdout + build.stderr[-3000:]
    videos = {r["uri"]: r for r in read_current(output, "videos").to_pylist()}
    assert set(videos) == {f"s3://{bucket}/videos/a.mp4", f"s3://{bucket}/lists/clips/b.mkv"}
    errors = read_current(output, "errors").to_pylist()
    assert [e["uri"] for e in errors] == [f"s3://{bucket}/videos/missing.mp4"]
    assert "missing.mp4" in errors[0]["message"]

    query = read_current(output, "segments").to_pylist()[0]["text"]
    search = _cli("search", "--index", output, query, "--mode", "keyword", "--json", "--limit", "3")
    assert search.returncode == 0, search.stderr[-3000:]
    moments = json.loads(search.stdout)
    assert moments and {m["uri"] for m in moments} <= set(videos)
    page = tmp_path / "results.html"
    html = _cli("search", "--index", output, query, "--mode", "keyword", "--limit", "1", "--html", str(page))
    assert html.returncode == 0, html.stderr[-3000:]
    assert 'src="data:image/jpeg;base64,' in page.read_text()  # a thumbnail decoded from the s3:// video
    assert list((tmp_path / "home" / "search").iterdir()), "the s3:// index's derived search index is cached locally"


def test_build_through_20_percent_faults_equals_clean_build(s3_emulator, video_folder: Path, tiny_model: str,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_emulator.create_bucket("faults")
    _upload_folder(video_folder, f"s3://{bucket}/in")
    _upload_folder(Path(tiny_model), f"s3://{bucket}/model")
    source = f"s3://{bucket}/in/*.mp4"  # a glob: a.mp4 and broken.mp4
    # A fresh model cache per run, so each run stages the s3:// model itself (download_tree).
    monkeypatch.setenv("PLM_INDEX_MODEL_CACHE", str(tmp_path / "cache-clean"))
    clean = _build(source, f"s3://{bucket}/clean", f"s3://{bucket}/model")

    injector = FaultInjectingProxy(s3_emulator.url, fault_rate=0.2, seed=20261203)
    # The bucket name is random, so the seeded faults differ per run: make sure one hits the model.
    injector.fail_first["/model/"] = 1
    injector.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", injector.url)
    monkeypatch.setenv("PLM_INDEX_MODEL_CACHE", str(tmp_path / "cache-faulty"))
    try:
        faulty = _build(source, f"s3://{bucket}/faulty", f"s3://{bucket}/model")
    finally:
        injector.stop()
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_emulator.url)

    faults = injector.faults()
    counts = re.compile(r"^run \S+: ")
    print(f"\nproxy: {injector.requests()} requests, injected {dict(faults)}")
    assert sum(faults.values()) > 0 and set(faults) <= set(FAULT_KINDS)
    assert (clean.inputs, clean.indexed, clean.failed) == (2, 1, 1)
    assert counts.sub("", faulty.line()) == counts.sub("", clean.line())
    assert _comparable(f"s3://{bucket}/clean") == _comparable(f"s3://{bucket}/faulty")
    assert _comparable(f"s3://{bucket}/faulty")["segments"], "the faulty run indexed nothing"
    assert any("/model/" in path and outcome != "pass" for _, path, outcome in injector.log), \
        "no fault hit the model download"
    assert list((tmp_path / "cache-faulty").rglob("*.safetensors")), "the s3:// model was not staged"
