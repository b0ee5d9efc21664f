"""Index identity as a user meets it, with real ``plm-index build`` runs on real videos and the tiny PLM:
a changed setting, a video replaced in place, and identical copies under two names (index.read rules 4, 5, 8)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.media import make_video
from index import read_current

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=900)


def build(videos: Path, index: Path, model: str, max_new_tokens: int) -> str:
    result = cli("build", "--input", str(videos), "--output", str(index), "--model", model, "--clips", "fixed:2",
                 "--max-new-tokens", str(max_new_tokens), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def search(index: Path, query: str, *extra: str) -> list[dict]:
    result = cli("search", "--index", str(index), query, "--json", "--no-merge", "--limit", "50", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_settings_change_replaced_video_and_identical_copy(tmp_path: Path, tiny_model: str) -> None:
    videos, index = tmp_path / "videos", tmp_path / "index"
    make_video(str(videos / "a.mp4"), "testsrc=size=320x240:rate=25", 4)
    make_video(str(videos / "b.mp4"), "mandelbrot=size=256x144:rate=20", 4)
    shutil.copyfile(videos / "a.mp4", videos / "copy-of-a.mp4")

    # 8. Identical copies: one set of model rows; the copy is listed and found by its own name.
    assert "inputs 3, indexed 2, failed 0, skipped 1" in build(videos, index, tiny_model, 6)
    listed = {r["uri"].rsplit("/", 1)[-1]: r for r in read_current(str(index), "videos").to_pylist()}
    assert set(listed) == {"a.mp4", "b.mp4", "copy-of-a.mp4"}
    first, copy = sorted(["a.mp4", "copy-of-a.mp4"], key=lambda name: listed[name]["duplicate_of"] is not None)
    assert listed[copy]["duplicate_of"].endswith(first) and listed[copy]["video_id"] == listed[first]["video_id"]
    segments = read_current(str(index), "segments")
    assert segments.num_rows == 4, "2 clips of each content, the copy's rows not repeated"
    query = next(r["text"] for r in segments.to_pylist() if r["uri"].endswith(f"/{first}"))
    hits = search(index, query, "--video", f"*{copy}")
    assert hits and all(h["uri"].endswith(copy) for h in hits)

    # 4. A changed setting: the new rows replace the old ones; the old stay reachable with --settings.
    old_settings = segments.column("settings_hash")[0].as_py()
    build(videos, index, tiny_model, 7)
    segments = read_current(str(index), "segments")
    assert segments.num_rows == 4 and set(segments.column("settings_hash").to_pylist()) != {old_settings}
    hits = search(index, query)
    spans = [(h["uri"], h["start_s"], h["task"]) for h in hits]
    assert len(spans) == len(set(spans)), "each (video, clip, task) answers once"
    assert len(search(index, query, "--settings", old_settings)) >= 1
    status = json.loads(cli("status", "--index", str(index), "--json").stdout)
    assert status["videos_indexed"] == 2 and status["segment_rows"] == 4 and status["copies"] == 1
    assert [s["videos_current"] for s in status["settings"]] == [2, 0]
    assert status["settings"][1]["settings_hash"] == old_settings
    unknown = cli("search", "--index", str(index), query, "--settings", "nope")
    assert unknown.returncode == 2 and "status" in unknown.stderr and "Traceback" not in unknown.stderr

    # 5. b.mp4 replaced in place: its old content's rows are gone, the new content is indexed.
    old_b = listed["b.mp4"]["video_id"]
    make_video(str(videos / "b.mp4"), "testsrc2=size=256x144:rate=20", 4)
    assert "inputs 3, indexed 1, failed 0, skipped 2" in build(videos, index, tiny_model, 7)
    videos_now = {r["uri"].rsplit("/", 1)[-1]: r["video_id"] for r in read_current(str(index), "videos").to_pylist()}
    assert videos_now["b.mp4"] != old_b
    segments = read_current(str(index), "segments")
    assert old_b not in segments.column("video_id").to_pylist() and segments.num_rows == 4
    assert old_b not in read_current(str(index), "segments", old_settings).column("video_id").to_pylist()
