"""Builds that read videos from and write the index to gs:// on a real GCS emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core import storage
from index import list_runs, read_current
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from search import run_search


def upload_folder(folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            storage.write_bytes(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def test_build_from_and_to_gcs(gcs_emulator, video_folder: Path, tiny_model: str) -> None:
    bucket = gcs_emulator.create_bucket("videos")
    upload_folder(video_folder, f"gs://{bucket}/in")
    output = f"gs://{bucket}/index"
    config = BuildConfig(input=f"gs://{bucket}/in", output=output, clips=ClipSpec.parse("fixed:4"),
                         model=ModelConfig(model=tiny_model, max_new_tokens=6, torch_threads=2))
    summary = run_build(config, beam_options([]))
    assert (summary.inputs, summary.indexed, summary.failed, summary.skipped, summary.ignored) == (3, 2, 1, 0, 1)
    segments = read_current(output, "segments").to_pylist()
    assert sorted({r["uri"] for r in segments}) == [f"gs://{bucket}/in/a.mp4", f"gs://{bucket}/in/sub/b.mkv"]
    a_clips = sorted((r["start_s"], r["end_s"]) for r in segments if r["uri"].endswith("a.mp4"))
    assert a_clips == [(0.0, 4.0), (4.0, 8.0), (8.0, 9.0)]
    errors = read_current(output, "errors").to_pylist()
    assert [(e["uri"], e["stage"]) for e in errors] == [(f"gs://{bucket}/in/broken.mp4", "probe")]
    # The same content read locally gets the same video_id: ids come from content, not paths.
    local = {Path(r["uri"]).name: r["video_id"] for r in read_current(output, "videos").to_pylist()}
    from schemas.records import VideoInput
    from transforms.probe import probe_video

    assert local["a.mp4"] == probe_video(VideoInput(str(video_folder / "a.mp4"))).video_id
    assert list_runs(output)[0].accounting_line == summary.line()
    query = segments[0]["text"]
    hits = json.loads(run_search(output, query, 3, True, mode="keyword"))
    assert hits and hits[0]["uri"].startswith(f"gs://{bucket}/in/")


def test_demo_command_with_gcs_input(gcs_emulator, gcs_emulator_server, video_folder: Path, tiny_model: str,
                                     tmp_path: Path) -> None:
    bucket = gcs_emulator.create_bucket("demo")
    storage.write_bytes(f"gs://{bucket}/clips/a.mp4", (video_folder / "a.mp4").read_bytes())
    env = {**os.environ}
    demo = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--input", f"gs://{bucket}/clips",
                           "--output", f"gs://{bucket}/index", "--model", tiny_model, "--query", "pours water"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert demo.returncode == 0, demo.stderr
    assert "[3/3] searching" in demo.stderr
    assert "inputs 1, indexed 1, failed 0, skipped 0" in demo.stdout, demo.stdout + demo.stderr
    (record,) = list_runs(f"gs://{bucket}/index")
    assert record.status == "finished" and record.accounting["indexed"] == 1
