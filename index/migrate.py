"""Convert an index in the first layout (``runs/<run_id>/`` folders closed by ``_SUCCESS``) to the current one.

The first layout kept each finished run's rows in shards listed by the run's ``_SUCCESS`` marker,
and decided which rows were current when it read them. Migration replays the complete runs in
order as per-video commits stamped with each run's finish time, so the current read rule picks
the same rows the old reader did, then compacts them. The old run folders are left in place
(nothing reads them once ``_index.json`` exists); delete them once the migrated index checks out.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core import storage
from index.commit import VideoCommit, write_commit
from index.compact import compact
from index.layout import FORMAT_FILE, FORMAT_VERSION, RUNS, IndexLayout, commit_key, is_legacy
from index.read import conform, conform_segments, read_parquet
from index.runs import Accounting, RunRecord, write_run
from schemas.tables import TABLES

log = logging.getLogger(__name__)
LEGACY_MARKER = "_SUCCESS"


@dataclass(frozen=True)
class MigrationReport:
    """What a migration converted."""

    runs: int
    indexed_commits: int
    failed_commits: int
    segment_rows: int

    def line(self) -> str:
        """One line for the CLI."""
        return (f"migrated {self.runs} run(s): {self.indexed_commits} indexed and {self.failed_commits} failed "
                f"video commit(s), {self.segment_rows} segment rows")


def _legacy_runs(location: str) -> list[dict[str, Any]]:
    """The ``_SUCCESS`` markers of the complete first-layout runs, oldest first."""
    markers = []
    for path in storage.glob(storage.join(location, RUNS, "*", LEGACY_MARKER)):
        marker = json.loads(storage.read_bytes(path))
        marker["folder"] = path.rsplit("/", 1)[0]
        markers.append(marker)
    return sorted(markers, key=lambda m: (m.get("finished_at", ""), m["run_id"]))


def _run_table(marker: dict[str, Any], table: str) -> pa.Table:
    parts = [read_parquet(storage.join(marker["folder"], name)) for name in marker.get("files", [])
             if name.startswith(f"{table}-")]
    parts = [conform_segments(p) if table == "segments" else conform(p, TABLES[table]) for p in parts]
    return pa.concat_tables(parts) if parts else TABLES[table].empty_table()


def _stamp(marker: dict[str, Any], position: int) -> dt.datetime:
    """The commit time of a run's videos: its finish time (run order kept even if clocks were equal)."""
    text = marker.get("finished_at") or marker.get("started_at")
    at = dt.datetime.fromisoformat(text) if text else dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at + dt.timedelta(microseconds=position)


def migrate(location: str, compact_after: bool = True) -> MigrationReport:
    """Rewrite the first-layout index at ``location`` in the current format (idempotent once done)."""
    if not is_legacy(location):
        raise ValueError(f"{location} holds no first-layout index (no runs/<run_id>/_SUCCESS without _index.json)")
    layout = IndexLayout(location)
    runs = _legacy_runs(location)
    indexed = failed = rows = 0
    for position, marker in enumerate(runs):
        run_id = marker["run_id"]
        at = _stamp(marker, position)
        settings = marker.get("settings_hash", "")
        videos = _run_table(marker, "videos")
        segments = _run_table(marker, "segments")
        for video in videos.to_pylist():
            mask = pc.and_(pc.equal(segments.column("video_id"), video["video_id"]),
                           pc.equal(segments.column("settings_hash"), video["settings_hash"]))
            own = segments.filter(mask)
            write_commit(layout, VideoCommit(
                key=commit_key(video["video_id"], video["uri"]), video_id=video["video_id"], uri=video["uri"],
                settings_hash=video["settings_hash"] or settings, status="indexed", committed_at=at, run_id=run_id,
                video=video, num_clips=int(video.get("num_clips") or 0), num_segments=own.num_rows), own)
            indexed += 1
            rows += own.num_rows
        by_video: dict[tuple[str, str | None, str], list[dict[str, Any]]] = defaultdict(list)
        for error in _run_table(marker, "errors").to_pylist():
            by_video[(error["uri"], error.get("video_id"), error.get("settings_hash") or settings)].append(error)
        for (uri, video_id, settings_hash), errors in by_video.items():
            write_commit(layout, VideoCommit(
                key=commit_key(video_id, uri), video_id=video_id, uri=uri, settings_hash=settings_hash,
                status="failed", committed_at=at, run_id=run_id, errors=tuple(errors)))
            failed += 1
        accounting = Accounting(**{k: int(v) for k, v in (marker.get("accounting") or {}).items()
                                   if k in Accounting.__dataclass_fields__})
        write_run(location, RunRecord(run_id=run_id, status="running", started_at=marker.get("started_at") or at.isoformat(),
                                      input=str(marker.get("input", "")), settings_hash=settings,
                                      model_id=str(marker.get("model_id", "")),
                                      pipeline_version=str(marker.get("pipeline_version", "")),
                                      extra={"migrated_from": "runs/" + run_id + "/" + LEGACY_MARKER}
                                      ).finished(accounting))
        log.info("migrated run %s (%d videos)", run_id, videos.num_rows)
    # The format marker last: until it exists the index still reads as first-layout, so a killed
    # migration is simply run again (it rewrites the same commit names).
    storage.write_bytes(layout.path(FORMAT_FILE), json.dumps({"format": FORMAT_VERSION}).encode())
    if compact_after:
        compact(location, full=True)
    return MigrationReport(len(runs), indexed, failed, rows)
