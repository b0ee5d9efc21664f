"""The per-video commit: one object holding a video's whole outcome, written once it is known.

A commit is a Parquet file whose rows are the video's ``segments`` rows (with embeddings) and
whose file metadata holds the commit header: the key, uri, settings hash, status (``indexed`` or
``failed``), the commit time, the ``videos`` row and the ``errors`` rows. One object means one
atomic write (temporary file and rename on disk; a single-object upload on ``gs://`` and ``s3://``),
so a reader sees a video whole or not at all, and writing the same name again (a retried bundle,
two workers on one video, a rerun) replaces it instead of adding rows.

The commit is its own record, so its checksum lives inside it: the footer's key-value metadata
``plm_index.commit.data`` holds the size and CRC32C of every byte before the footer (the row
groups), added after they are written. A full read (``with_segments``) checks it; a damaged
commit raises ``index.integrity.DamagedFileError``. Commits written before this have no such
key and are read unchecked ("unverified").
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from core import storage
from index.integrity import (
    CHECKSUM_KEY,
    DamagedFileError,
    check_against_record,
    crc32c,
    footer_length,
    shape_problem,
)
from index.layout import IndexLayout
from schemas.tables import COMMITS_SCHEMA, ERRORS_SCHEMA, VIDEOS_SCHEMA, segments_schema

HEADER_KEY = b"plm_index.commit"
Status = Literal["indexed", "failed", "duplicate"]


def now_utc() -> dt.datetime:
    """The commit clock: UTC, microseconds."""
    return dt.datetime.now(dt.UTC)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: _iso(value) for key, value in row.items()}


def _from_json(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as stored in a header, back in their table's schema (timestamps parsed)."""
    timestamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    restored = [{**row, **{name: dt.datetime.fromisoformat(row[name]) if row.get(name) else None
                           for name in timestamps}} for row in rows]
    return pa.Table.from_pylist(restored, schema=schema)


@dataclass(frozen=True)
class VideoCommit:
    """Everything one video contributes to the index under one settings hash.

    An ``indexed`` commit has a ``video`` row and segments; a ``failed`` one has error rows (and
    no segments: a video with any failure is not indexed, and a rerun retries it). A ``duplicate``
    commit, keyed by its uri, says that ``uri`` holds the same content (``video_id``) as an indexed
    commit of another uri: one set of model rows, found by either name. ``tasks`` lists the tasks of
    the segments (None: unknown, an older commit).
    """

    key: str
    video_id: str | None
    uri: str
    settings_hash: str
    status: Status
    committed_at: dt.datetime
    run_id: str
    video: dict[str, Any] | None = None
    errors: tuple[dict[str, Any], ...] = ()
    num_clips: int = 0
    num_segments: int = 0
    tasks: tuple[str, ...] | None = None

    def header(self) -> dict[str, Any]:
        """The JSON header stored in the commit object's metadata."""
        return {"key": self.key, "video_id": self.video_id, "uri": self.uri, "settings_hash": self.settings_hash,
                "status": self.status, "committed_at": self.committed_at.isoformat(), "run_id": self.run_id,
                "video": _jsonable(self.video) if self.video else None,
                "errors": [_jsonable(row) for row in self.errors], "num_clips": self.num_clips,
                "num_segments": self.num_segments, "tasks": None if self.tasks is None else list(self.tasks)}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> VideoCommit:
        """The commit a stored header describes."""
        return cls(key=header["key"], video_id=header.get("video_id"), uri=header["uri"],
                   settings_hash=header["settings_hash"], status=header["status"],
                   committed_at=dt.datetime.fromisoformat(header["committed_at"]), run_id=header["run_id"],
                   video=header.get("video"), errors=tuple(header.get("errors") or ()),
                   num_clips=int(header.get("num_clips") or 0), num_segments=int(header.get("num_segments") or 0),
                   tasks=None if header.get("tasks") is None else tuple(header["tasks"]))

    def commits_row(self) -> dict[str, Any]:
        """This commit as a row of the ``commits`` table."""
        return {"key": self.key, "video_id": self.video_id, "uri": self.uri, "settings_hash": self.settings_hash,
                "status": self.status, "committed_at": self.committed_at, "run_id": self.run_id,
                "num_clips": self.num_clips, "num_segments": self.num_segments, "num_errors": len(self.errors),
                "tasks": None if self.tasks is None else list(self.tasks)}

    def videos_table(self) -> pa.Table:
        """The ``videos`` row of an indexed commit (empty for a failed one)."""
        return _from_json([self.video] if self.video else [], VIDEOS_SCHEMA)

    def errors_table(self) -> pa.Table:
        """The ``errors`` rows of a failed commit."""
        return _from_json(list(self.errors), ERRORS_SCHEMA)


@dataclass(frozen=True)
class StoredCommit:
    """A commit as read back: its header and, if asked for, its segment rows."""

    path: str
    commit: VideoCommit
    segments: pa.Table | None = field(default=None, compare=False)


def encode_commit(commit: VideoCommit, segments: pa.Table | None = None) -> bytes:
    """The commit object's bytes: segment rows as Parquet, the header and the data checksum in the footer."""
    if segments is None:
        segments = segments_schema().empty_table()
    metadata = dict(segments.schema.metadata or {})
    metadata[HEADER_KEY] = json.dumps(commit.header(), sort_keys=True).encode()
    segments = segments.replace_schema_metadata(metadata)
    buffer = io.BytesIO()
    writer = pq.ParquetWriter(buffer, segments.schema, compression="zstd")
    writer.write_table(segments)
    data = buffer.getvalue()  # every row group is written; only the footer is still to come
    writer.add_key_value_metadata({CHECKSUM_KEY: json.dumps({"size": len(data), "crc32c": crc32c(data)}).encode()})
    writer.close()
    return buffer.getvalue()


def write_commit(layout: IndexLayout, commit: VideoCommit, segments: pa.Table | None = None) -> str:
    """Write (or replace) a video's commit in one atomic object write; returns its path."""
    path = layout.commit_path(commit.settings_hash, commit.key)
    storage.write_bytes(path, encode_commit(commit, segments))
    return path


def _read_whole(path: str) -> bytes:
    if storage.is_remote(path):
        return storage.read_bytes(path)
    with open(path, "rb") as f:
        return f.read()


def check_commit_bytes(path: str, data: bytes) -> pq.ParquetFile:
    """A whole commit object's bytes, checked against the checksum in its footer (if it has one).

    Raises ``DamagedFileError``: truncated, not-parquet, corrupt (checksum or unreadable footer).
    """
    shape = shape_problem(data)
    if shape is not None:
        raise DamagedFileError(path, *shape)
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except (ValueError, OSError) as exc:
        raise DamagedFileError(path, "corrupt", f"unreadable Parquet footer: {str(exc)[:300]}") from None
    recorded = (parquet.metadata.metadata or {}).get(CHECKSUM_KEY)
    if recorded is not None:
        record = json.loads(recorded)
        body = data[:len(data) - 8 - footer_length(data)]
        check_against_record(path, len(body), record, crc32c(body))
    return parquet


def parse_header(path: str, parquet: pq.ParquetFile) -> VideoCommit:
    """The commit header in a commit object's footer (``DamagedFileError`` where it is missing or unreadable)."""
    metadata = parquet.schema_arrow.metadata or {}
    if HEADER_KEY not in metadata:
        raise DamagedFileError(path, "not-a-commit", f"no {HEADER_KEY.decode()} metadata in its footer")
    try:
        return VideoCommit.from_header(json.loads(metadata[HEADER_KEY]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DamagedFileError(path, "corrupt", f"unreadable commit header: {str(exc)[:200]}") from None


def read_commit(path: str, with_segments: bool = True) -> StoredCommit:
    """Read one commit object: always its header, and its segment rows unless told not to.

    A full read checks the object's data checksum. A missing object raises ``FileNotFoundError``;
    a damaged one ``DamagedFileError``.
    """
    def read() -> StoredCommit:
        if with_segments:
            parquet = check_commit_bytes(path, _read_whole(path))
            commit = parse_header(path, parquet)
            try:
                segments = parquet.read()
            except (ValueError, OSError) as exc:
                raise DamagedFileError(path, "corrupt", f"unreadable rows: {str(exc)[:300]}") from None
            return StoredCommit(path=path, commit=commit, segments=segments)
        handle = storage.open_read(path)
        try:
            try:
                parquet = pq.ParquetFile(handle)
            except (ValueError, OSError) as exc:
                if isinstance(exc, FileNotFoundError) or storage.is_transient(exc):
                    raise
                check_commit_bytes(path, _read_whole(path))  # says truncated or not Parquet where it is
                raise DamagedFileError(path, "corrupt", f"unreadable Parquet footer: {str(exc)[:300]}") from None
            commit = parse_header(path, parquet)
        finally:
            handle.close()
        return StoredCommit(path=path, commit=commit, segments=None)

    return storage.with_retries(read)


def commits_table(commits: list[VideoCommit]) -> pa.Table:
    """Commits as a ``commits`` table."""
    return pa.Table.from_pylist([c.commits_row() for c in commits], schema=COMMITS_SCHEMA)
