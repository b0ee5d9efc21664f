"""The index's identity rules (index.read rules 4, 5 and 8): newest settings per (video, task),
the current content of a uri, identical copies. Real commit objects, real compaction."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from index.commit import VideoCommit, write_commit
from index.compact import compact
from index.done import DoneVideos
from index.layout import IndexLayout, uri_key
from index.read import UnknownSettingsError, read_current, snapshot
from index.status import index_status
from schemas.tables import segments_schema
from tests.index.conftest import BASE_TIME

OLD, NEW = "settings-old", "settings-new"


def commit(index: str, video_id: str, uri: str, settings: str, minute: int, tasks: tuple[str, ...] = ("caption",),
           status: str = "indexed", clips: int = 2) -> VideoCommit:
    """One video's commit: ``clips`` rows per task, text naming the settings, or a failure."""
    rows = [{"video_id": video_id, "uri": uri, "clip_index": i, "start_s": 2.0 * i, "end_s": 2.0 * i + 2,
             "task": task, "text": f"{video_id} {task} {settings} clip {i}", "settings_hash": settings,
             "run_id": settings, "embedding": [0.0] * 384} for task in tasks for i in range(clips)]
    at = BASE_TIME + dt.timedelta(minutes=minute)
    indexed = status == "indexed"
    errors = () if indexed else ({"uri": uri, "video_id": video_id, "stage": "decode", "error_class": "DecodeError",
                                  "message": "broke", "settings_hash": settings, "run_id": settings},)
    record = VideoCommit(key=video_id, video_id=video_id, uri=uri, settings_hash=settings, status=status,
                         committed_at=at, run_id=settings,
                         video={"video_id": video_id, "uri": uri, "num_clips": clips, "settings_hash": settings}
                         if indexed else None, errors=errors, num_clips=clips,
                         num_segments=len(rows) if indexed else 0, tasks=tasks if indexed else None)
    write_commit(IndexLayout(index), record,
                 pa.Table.from_pylist(rows, schema=segments_schema()) if indexed else None)
    return record


def copy_of(index: str, video_id: str, uri: str, settings: str, minute: int) -> None:
    """A duplicate commit: ``uri`` holds the same content as ``video_id``'s indexed commit."""
    write_commit(IndexLayout(index), VideoCommit(key=uri_key(uri), video_id=video_id, uri=uri, settings_hash=settings,
                                                 status="duplicate", committed_at=BASE_TIME + dt.timedelta(minutes=minute),
                                                 run_id=settings))


def texts(index: str, settings: str | None = None) -> list[str]:
    return sorted(read_current(index, "segments", settings).column("text").to_pylist())


def test_a_changed_setting_replaces_rows_instead_of_adding_a_copy(index_dir: str) -> None:
    commit(index_dir, "v1", "/v/a.mp4", OLD, minute=0)
    commit(index_dir, "v1", "/v/a.mp4", NEW, minute=1)
    assert texts(index_dir) == ["v1 caption settings-new clip 0", "v1 caption settings-new clip 1"]
    videos = read_current(index_dir, "videos")
    assert videos.column("settings_hash").to_pylist() == [NEW]
    # The older settings stay reachable when asked for, also after a full compaction.
    assert texts(index_dir, OLD) == ["v1 caption settings-old clip 0", "v1 caption settings-old clip 1"]
    compact(index_dir, full=True)
    assert texts(index_dir, OLD) == ["v1 caption settings-old clip 0", "v1 caption settings-old clip 1"]
    assert len(texts(index_dir)) == 2
    status = index_status(index_dir)
    assert status.videos_indexed == 1 and status.segment_rows == 2
    assert [s.settings_hash for s in status.settings] == [NEW, OLD]
    assert [(s.videos_indexed, s.videos_current) for s in status.settings] == [(1, 1), (1, 0)]
    assert f"{OLD}: 1 video(s) indexed, 0 current" in status.text()
    assert index_status(index_dir, settings=OLD).segment_rows == 2


def test_newest_settings_win_per_task(index_dir: str) -> None:
    commit(index_dir, "v1", "/v/a.mp4", OLD, minute=0, tasks=("caption", "sgqa"))
    commit(index_dir, "v1", "/v/a.mp4", NEW, minute=1, tasks=("caption",), clips=3)
    segments = read_current(index_dir, "segments")
    by_task = {(t, s) for t, s in zip(segments.column("task").to_pylist(),
                                      segments.column("settings_hash").to_pylist(), strict=True)}
    assert by_task == {("caption", NEW), ("sgqa", OLD)}, "the clips of two plans never mix within a task"
    assert segments.num_rows == 3 + 2
    assert read_current(index_dir, "videos").num_rows == 1
    assert index_status(index_dir).segment_rows == 5


def test_a_failure_never_hides_an_older_complete_result(index_dir: str) -> None:
    commit(index_dir, "v1", "/v/a.mp4", OLD, minute=0)
    commit(index_dir, "v1", "/v/a.mp4", NEW, minute=1, status="failed")
    assert len(texts(index_dir)) == 2
    assert read_current(index_dir, "errors").num_rows == 1  # the new settings' failure is reported, and retried
    commit(index_dir, "v1", "/v/a.mp4", NEW, minute=2)
    assert read_current(index_dir, "errors").num_rows == 0
    assert texts(index_dir)[0].startswith("v1 caption settings-new")


def test_an_older_failure_is_hidden_by_a_newer_result_under_other_settings(index_dir: str) -> None:
    commit(index_dir, "v1", "/v/a.mp4", OLD, minute=0, status="failed")
    commit(index_dir, "v1", "/v/a.mp4", NEW, minute=1)
    assert read_current(index_dir, "errors").num_rows == 0


def test_a_video_replaced_in_place_loses_its_old_rows(index_dir: str) -> None:
    commit(index_dir, "old-content", "/v/a.mp4", OLD, minute=0)
    commit(index_dir, "other", "/v/b.mp4", OLD, minute=0)
    compact(index_dir)
    commit(index_dir, "new-content", "/v/a.mp4", OLD, minute=1)
    assert {t.split()[0] for t in texts(index_dir)} == {"new-content", "other"}
    assert sorted(read_current(index_dir, "videos").column("video_id").to_pylist()) == ["new-content", "other"]
    # Under an older settings hash too: the old content is no longer at that uri.
    commit(index_dir, "new-content", "/v/a.mp4", NEW, minute=2, status="failed")
    assert {t.split()[0] for t in texts(index_dir, OLD)} == {"new-content", "other"}


def test_a_replacement_that_fails_still_hides_the_old_content(index_dir: str) -> None:
    commit(index_dir, "old-content", "/v/a.mp4", OLD, minute=0)
    commit(index_dir, "new-content", "/v/a.mp4", OLD, minute=1, status="failed")
    assert texts(index_dir) == []
    assert read_current(index_dir, "errors").column("video_id").to_pylist() == ["new-content"]


def test_done_check_redoes_a_uri_whose_content_came_back(index_dir: str) -> None:
    commit(index_dir, "x", "/v/a.mp4", OLD, minute=0)
    commit(index_dir, "y", "/v/a.mp4", OLD, minute=1)  # replaced in place ...
    compact(index_dir)
    assert DoneVideos(index_dir, OLD).is_done("y")
    # ... and put back: x's commit is still there but no longer what the uri holds.
    assert not DoneVideos(index_dir, OLD).is_done("x")
    assert texts(index_dir)[0].startswith("y ")


def test_an_identical_copy_is_listed_under_its_own_name(index_dir: str) -> None:
    commit(index_dir, "x", "/v/a.mp4", OLD, minute=0)
    copy_of(index_dir, "x", "/v/copy-of-a.mp4", OLD, minute=1)
    videos = read_current(index_dir, "videos").sort_by("uri")
    assert videos.column("uri").to_pylist() == ["/v/a.mp4", "/v/copy-of-a.mp4"]
    assert videos.column("duplicate_of").to_pylist() == [None, "/v/a.mp4"]
    assert len(texts(index_dir)) == 2, "one set of model rows"
    assert snapshot(index_dir).copies() == {"/v/copy-of-a.mp4": ("x", "/v/a.mp4")}
    state = DoneVideos(index_dir, OLD).state("x")
    assert state.done and state.copy_of("/v/copy-of-a.mp4") == "/v/a.mp4" and state.copy_of("/v/a.mp4") is None
    assert DoneVideos(index_dir, OLD).copy_recorded("/v/copy-of-a.mp4", "x")
    compact(index_dir, full=True)
    assert snapshot(index_dir).copies() == {"/v/copy-of-a.mp4": ("x", "/v/a.mp4")}
    # The copy is replaced by other content: it is no longer a copy.
    commit(index_dir, "z", "/v/copy-of-a.mp4", OLD, minute=2)
    assert snapshot(index_dir).copies() == {}
    assert read_current(index_dir, "videos").num_rows == 2


def test_imported_rows_are_left_alone(index_dir: str) -> None:
    commit(index_dir, "x", "/v/a.mp4", OLD, minute=0)
    commit(index_dir, "imp-a", "/v/a.mp4", "import-caption", minute=1)
    assert {t.split()[0] for t in texts(index_dir)} == {"x", "imp-a"}


def test_an_unknown_settings_hash_is_refused_naming_where_to_look(index_dir: str) -> None:
    commit(index_dir, "x", "/v/a.mp4", OLD, minute=0)
    with pytest.raises(UnknownSettingsError, match="plm-index status"):
        read_current(index_dir, "segments", "nope")
