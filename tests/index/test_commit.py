"""The per-video commit: one object per (settings, video), whole or absent, rewritten in place."""

from __future__ import annotations

from index.commit import read_commit
from index.layout import IndexLayout, commit_key, uri_key
from index.read import list_live_commits, read_current
from tests.index.conftest import SETTINGS, CommitWriter


def test_commit_round_trips_header_and_rows(index_dir: str, commit_video: CommitWriter) -> None:
    written = commit_video("v1", n=3)
    stored = read_commit(IndexLayout(index_dir).commit_path(SETTINGS, "v1"))
    assert stored.commit == written
    assert stored.segments is not None and stored.segments.num_rows == 3
    assert read_commit(stored.path, with_segments=False).segments is None


def test_rewriting_a_commit_replaces_it_and_adds_no_row(index_dir: str, commit_video: CommitWriter) -> None:
    commit_video("v1", n=3)
    commit_video("v1", n=3, minute=5)  # a retried bundle, a second worker, or a --force rerun
    assert len(list_live_commits(IndexLayout(index_dir))) == 1
    assert read_current(index_dir, "segments").num_rows == 3
    assert read_current(index_dir, "videos").num_rows == 1


def test_commit_names_are_deterministic() -> None:
    assert commit_key("abc", "/x.mp4") == "abc"
    assert commit_key(None, "/x.mp4") == uri_key("/x.mp4") == commit_key("", "/x.mp4")
    assert uri_key("/x.mp4") != uri_key("/y.mp4")
    layout = IndexLayout("/i")
    assert layout.commit_path("s", "abc") == layout.commit_path("s", "abc")


def test_no_temporary_file_is_left_beside_a_commit(index_dir: str, commit_video: CommitWriter) -> None:
    import os

    commit_video("v1")
    commit_video("v1", minute=1)
    names = [n for _, _, files in os.walk(index_dir) for n in files]
    assert sorted(names) == ["_index.json", "v1.parquet"]
