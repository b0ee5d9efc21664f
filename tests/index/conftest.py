"""Helpers for the index tests: real commit objects written through ``index.commit``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pyarrow as pa
import pytest

from index.commit import VideoCommit, write_commit
from index.layout import IndexLayout, commit_key, ensure_format
from schemas.tables import segments_schema

BASE_TIME = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
SETTINGS = "s0"


def segment_rows(video_id: str, uri: str, n: int, run_id: str = "r1", settings_hash: str = SETTINGS) -> pa.Table:
    """``n`` segment rows of one video, one 2-second clip each."""
    rows = [{"video_id": video_id, "uri": uri, "clip_index": i, "start_s": 2.0 * i, "end_s": 2.0 * i + 2,
             "task": "caption", "text": f"{video_id} clip {i}", "settings_hash": settings_hash, "run_id": run_id,
             "embedding": [0.0] * 384} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=segments_schema())


CommitWriter = Callable[..., VideoCommit]


@pytest.fixture
def index_dir(tmp_path) -> str:  # noqa: ANN001
    """An empty index folder in the current format."""
    location = str(tmp_path / "index")
    ensure_format(location)
    return location


@pytest.fixture
def commit_video(index_dir: str) -> CommitWriter:
    """Write one video's commit (indexed with ``n`` segments, or failed) at ``BASE_TIME + minute``."""
    def write(name: str, status: str = "indexed", n: int = 2, minute: int = 0, run_id: str = "r1",
              uri: str | None = None, stage: str = "decode", error_class: str = "DecodeError",
              settings_hash: str = SETTINGS) -> VideoCommit:
        uri = uri or f"/videos/{name}.mp4"
        at = BASE_TIME + dt.timedelta(minutes=minute)
        video = {"video_id": name, "uri": uri, "num_clips": n, "settings_hash": settings_hash, "run_id": run_id}
        errors = ({"uri": uri, "video_id": name, "stage": stage, "error_class": error_class,
                   "message": f"{name} broke", "settings_hash": settings_hash, "run_id": run_id},)
        commit = VideoCommit(key=commit_key(name, uri), video_id=name, uri=uri, settings_hash=settings_hash,
                             status=status, committed_at=at, run_id=run_id,
                             video=video if status == "indexed" else None,
                             errors=() if status == "indexed" else errors, num_clips=n,
                             num_segments=n if status == "indexed" else 0)
        write_commit(IndexLayout(index_dir), commit,
                     segment_rows(name, uri, n, run_id, settings_hash) if status == "indexed" else None)
        return commit
    return write
