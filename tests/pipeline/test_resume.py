"""A killed night loses at most the videos in flight: SIGKILL a real build twice, rerun, compare with a clean run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.resume import attempt, build_command
from core.media import make_video
from index import list_runs, read_current
from schemas.tables import RUN_SPECIFIC_COLUMNS

pytestmark = pytest.mark.slow


def comparable(table) -> list[dict]:
    rows = table.drop_columns([c for c in (*RUN_SPECIFIC_COLUMNS, "committed_at") if c in table.column_names])
    return sorted(rows.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def test_killed_twice_then_resumed_redoes_only_unfinished_videos(tmp_path: Path, tiny_model: str) -> None:
    folder = tmp_path / "videos"
    for index in range(6):
        make_video(str(folder / f"v{index}.mp4"), f"testsrc=size=320x240:rate=25,hue=h={index * 60}", 6)
    clean = attempt(build_command(str(folder), str(tmp_path / "clean"), tiny_model))
    assert clean.returncode == 0, clean.stderr_tail
    total = len(clean.inferred)
    assert total == 18 and "inputs 6, indexed 6" in clean.stdout

    command = build_command(str(folder), str(tmp_path / "killed"), tiny_model)
    first = attempt(command, kill_after_clips=total // 2)
    assert first.killed and first.committed, "the first kill must land after some videos were committed"
    second = attempt(command, kill_after_clips=int(0.9 * (total - len(first.inferred))))
    assert second.killed
    assert not set(first.committed) & {uri for uri, _ in second.inferred}, "committed videos are never redone"
    last = attempt(command)
    assert last.returncode == 0, last.stderr_tail
    done_before = len(set(first.committed) | set(second.committed))
    assert f"inputs 6, indexed {6 - done_before}, failed 0, skipped {done_before}" in last.stdout

    inferred = len(first.inferred) + len(second.inferred) + len(last.inferred)
    allowance = first.in_flight_clips + second.in_flight_clips
    assert inferred <= 1.05 * total + allowance, (inferred, total, allowance)
    for table in ("segments", "videos", "errors", "commits"):
        assert comparable(read_current(str(tmp_path / "killed"), table)) == \
            comparable(read_current(str(tmp_path / "clean"), table)), table
    statuses = [r.status for r in list_runs(str(tmp_path / "killed"))]
    assert statuses == ["running", "running", "finished"], "killed runs stay recorded as unfinished"
