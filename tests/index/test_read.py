"""The one rule for which commit is current, over live commits and compacted generations."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from index.compact import compact
from index.layout import LegacyIndexError, check_format
from index.read import read_current, snapshot
from tests.index.conftest import CommitWriter


def _uris(table) -> list[str]:  # noqa: ANN001
    return sorted(set(table.column("uri").to_pylist()))


def test_newest_commit_of_a_video_wins(index_dir: str, commit_video: CommitWriter) -> None:
    commit_video("v1", status="failed", minute=0)
    commit_video("v1", status="indexed", n=2, minute=1)
    assert read_current(index_dir, "errors").num_rows == 0
    assert read_current(index_dir, "segments").num_rows == 2
    commit_video("v1", status="failed", minute=2)  # a --force rerun that failed
    assert read_current(index_dir, "segments").num_rows == 0
    assert read_current(index_dir, "errors").num_rows == 1


def test_failure_hidden_once_the_same_uri_is_indexed_under_a_new_id(index_dir: str,
                                                                     commit_video: CommitWriter) -> None:
    commit_video("broken", status="failed", minute=0, uri="/videos/a.mp4")
    commit_video("fixed", status="indexed", minute=1, uri="/videos/a.mp4")
    assert read_current(index_dir, "errors").num_rows == 0
    assert _uris(read_current(index_dir, "videos")) == ["/videos/a.mp4"]
    status = snapshot(index_dir).current(visible_only=False)
    assert status.num_rows == 2 and pc.sum(status.column("visible")).as_py() == 1


def test_compacted_and_live_copies_count_once(index_dir: str, commit_video: CommitWriter) -> None:
    for i in range(3):
        commit_video(f"v{i}", n=2)
    compact(index_dir)
    # The same commits written again (a compaction killed before it deleted what it merged).
    for i in range(3):
        commit_video(f"v{i}", n=2)
    assert read_current(index_dir, "segments").num_rows == 6
    commit_video("v0", n=4, minute=9)  # a newer live copy beats the compacted one
    segments = read_current(index_dir, "segments")
    assert segments.num_rows == 8
    assert pc.sum(pc.equal(segments.column("video_id"), "v0")).as_py() == 4


def test_first_layout_index_is_refused_with_the_migrate_command(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "_SUCCESS").write_text("{}")
    with pytest.raises(LegacyIndexError, match="plm-index migrate --index"):
        check_format(str(tmp_path))
    with pytest.raises(LegacyIndexError):
        read_current(str(tmp_path), "segments")
