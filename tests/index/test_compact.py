"""Compaction: fewer files, and every row visible exactly once at every instant, even if killed half way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from core import storage
from index.compact import MAX_GENERATIONS, compact, count_files
from index.layout import IndexLayout
from index.read import list_generations, read_current
from tests.index.conftest import CommitWriter


class SimulatedKill(BaseException):
    """Raised by the fault injector where a real compaction would have been killed."""


def _assert_exactly_once(index_dir: str, expected: dict[str, int]) -> None:
    segments = read_current(index_dir, "segments")
    per_video = Counter(segments.column("video_id").to_pylist())
    assert dict(per_video) == expected
    keys = list(zip(segments.column("video_id").to_pylist(), segments.column("clip_index").to_pylist(), strict=True))
    assert len(keys) == len(set(keys))
    assert sorted(read_current(index_dir, "videos").column("video_id").to_pylist()) == sorted(expected)


def _mutations(monkeypatch: pytest.MonkeyPatch, after_each: Callable[[str, str], None]) -> None:
    """Fault injector: run ``after_each(kind, path)`` after every write or delete compaction makes."""
    for name in ("write_bytes", "remove"):
        original = getattr(storage, name)

        def observed(path: str, *args: Any, _original: Callable[..., Any] = original, _name: str = name,
                     **kwargs: Any) -> Any:
            result = _original(path, *args, **kwargs)
            after_each(_name, path)
            return result
        monkeypatch.setattr(storage, name, observed)


def _fill(commit_video: CommitWriter, count: int, start: int = 0) -> dict[str, int]:
    expected = {}
    for i in range(start, start + count):
        commit_video(f"v{i:03d}", n=1 + i % 3)
        expected[f"v{i:03d}"] = 1 + i % 3
    return expected


def test_compaction_merges_files_and_keeps_rows(index_dir: str, commit_video: CommitWriter) -> None:
    expected = _fill(commit_video, 30)
    before = read_current(index_dir, "segments").sort_by([("video_id", "ascending"), ("clip_index", "ascending")])
    report = compact(index_dir)
    assert report.files_before == 30 and report.files_after < 10
    assert report.commits_merged == 30 and report.segment_rows == sum(expected.values())
    after = read_current(index_dir, "segments").sort_by([("video_id", "ascending"), ("clip_index", "ascending")])
    assert after.equals(before)
    assert compact(index_dir).generation is None  # nothing left to merge


def test_every_instant_of_a_compaction_shows_each_row_once(index_dir: str, commit_video: CommitWriter,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _fill(commit_video, 8)
    compact(index_dir)
    expected |= _fill(commit_video, 5, start=8)
    seen: list[str] = []

    def check(kind: str, path: str) -> None:
        seen.append(f"{kind} {path}")
        _assert_exactly_once(index_dir, expected)
    _mutations(monkeypatch, check)
    compact(index_dir, full=True)
    assert len(seen) >= 10  # the check ran between the generation's files and each deletion


@pytest.mark.parametrize("full", [False, True])
def test_compaction_killed_at_any_step_loses_and_doubles_nothing(index_dir: str, commit_video: CommitWriter,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 full: bool) -> None:
    expected = _fill(commit_video, 6)
    compact(index_dir)
    expected |= _fill(commit_video, 4, start=6)
    step = 0
    while True:
        step += 1
        calls = 0

        def kill_at_step(kind: str, path: str, _step: int = step) -> None:
            nonlocal calls
            calls += 1
            if calls == _step:
                raise SimulatedKill(path)
        with monkeypatch.context() as patch:
            _mutations(patch, kill_at_step)
            try:
                compact(index_dir, full=full)
                finished = True
            except SimulatedKill:
                finished = False
        _assert_exactly_once(index_dir, expected)
        if finished:
            break
    assert step > 3
    compact(index_dir, full=True)
    _assert_exactly_once(index_dir, expected)
    assert len(list_generations(IndexLayout(index_dir))) == 1


def test_generations_are_merged_once_there_are_too_many(index_dir: str, commit_video: CommitWriter) -> None:
    expected: dict[str, int] = {}
    for round_ in range(MAX_GENERATIONS + 1):
        expected |= _fill(commit_video, 2, start=2 * round_)
        compact(index_dir)
    assert len(list_generations(IndexLayout(index_dir))) <= MAX_GENERATIONS
    _assert_exactly_once(index_dir, expected)
    assert count_files(IndexLayout(index_dir)) < 2 * len(expected)
