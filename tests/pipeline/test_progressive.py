"""The index grows while it is searched, and two builds into one index at once add no duplicate row."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.resume import COMMITTED, build_command
from core.media import make_video
from index import read_current

pytestmark = pytest.mark.slow
CLIPS_PER_VIDEO = 3  # 6 s videos in fixed:2 clips, one caption each


def _videos(folder: Path, count: int) -> None:
    for index in range(count):
        make_video(str(folder / f"v{index}.mp4"), f"testsrc=size=320x240:rate=25,hue=h={index * 45}", 6)


def _drain(stream, committed: list[str]) -> None:  # noqa: ANN001
    """Read every line the stopped build had written, noting the commits it logged."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    while selector.select(timeout=0.2):
        line = stream.readline()
        if not line:
            break
        if found := COMMITTED.search(line):
            committed.append(found.group(1))


def test_search_during_a_build_sees_exactly_the_committed_videos_each_whole(tmp_path: Path,
                                                                            tiny_model: str) -> None:
    folder, index = tmp_path / "videos", tmp_path / "index"
    _videos(folder, 5)
    command = build_command(str(folder), str(index), tiny_model)
    build = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                             start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    committed: list[str] = []
    try:
        for line in build.stderr:
            if found := COMMITTED.search(line):
                committed.append(found.group(1))
                if len(committed) == 2:
                    break
        assert len(committed) == 2, "the build ended before it committed two videos"
        os.killpg(build.pid, signal.SIGSTOP)  # hold the build still while we look
        _drain(build.stderr, committed)
        segments = read_current(str(index), "segments")
        per_video = Counter(segments.column("uri").to_pylist())
        # Every committed video is visible, whole; a commit written but not yet logged may show too.
        assert set(committed) <= set(per_video) and len(per_video) < 5
        assert all(count == CLIPS_PER_VIDEO for count in per_video.values()), per_video
        query = segments.column("text")[0].as_py()
        search = subprocess.run([sys.executable, "-m", "pipeline.cli", "search", "--index", str(index), query,
                                 "--mode", "keyword", "--limit", "50", "--no-merge", "--json"],
                                capture_output=True, text=True, timeout=120)
        assert search.returncode == 0, search.stderr
        payload = json.loads(search.stdout)
        found_uris = {hit["uri"] for hit in (payload if isinstance(payload, list) else payload["results"])}
        assert found_uris and found_uris <= set(per_video)
    finally:
        os.killpg(build.pid, signal.SIGCONT)
    assert build.wait(timeout=600) == 0, build.stderr.read()[-3000:]
    final = Counter(read_current(str(index), "segments").column("uri").to_pylist())
    assert len(final) == 5 and set(final.values()) == {CLIPS_PER_VIDEO}


def test_two_builds_into_one_index_at_once_both_finish_without_duplicates(tmp_path: Path, tiny_model: str) -> None:
    folder, index = tmp_path / "videos", tmp_path / "index"
    _videos(folder, 4)
    builds = [subprocess.Popen(build_command(str(folder), str(index), tiny_model), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [b.communicate(timeout=900) for b in builds]
    for build, (out, err) in zip(builds, outputs, strict=True):
        assert build.returncode == 0, err[-3000:]
        assert "inputs 4," in out and "failed 0" in out
    segments = read_current(str(index), "segments")
    keys = list(zip(segments.column("video_id").to_pylist(), segments.column("clip_index").to_pylist(),
                    segments.column("task").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == 4 * CLIPS_PER_VIDEO
    assert read_current(str(index), "videos").num_rows == 4
