"""Merge per-video commits into large Parquet files, atomically.

Millions of small commit objects are slow to list and read. Compaction writes their rows into a
new *generation* (``compacted/<generation>/``: ``commits``, ``videos``, ``errors`` and
``segments-*.parquet``), then its manifest ``_generation.json`` last, and only then deletes the
commits it merged. With the reading rule of ``index.read`` every row is visible exactly once at
every instant:

- killed before the manifest: the new files are an unlisted orphan folder, the commits still count;
- killed after the manifest, before the deletes: each merged video has two copies with the same
  commit time, and the rule picks the generation's;
- a commit rewritten while compaction ran (newer time) is not deleted and wins by its time.

By default a compaction merges only the live commits (its cost follows the new work, not the
index size). Once there are ``MAX_GENERATIONS`` generations, or with ``full=True``, it merges
everything into one generation that supersedes the others, dropping rows no longer current.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import storage
from index.commit import StoredCommit, commits_table, read_commit
from index.integrity import CHECKSUMS, Damage, file_record, repair_command
from index.layout import COMPACTED, GENERATION_FILE, IndexLayout, check_format, commit_key
from index.read import (
    LIVE,
    IndexSnapshot,
    conform,
    conform_segments,
    list_generations,
    list_live_commits,
    snapshot,
)
from schemas.tables import COMMITS_SCHEMA, ERRORS_SCHEMA, VIDEOS_SCHEMA

log = logging.getLogger(__name__)

MAX_GENERATIONS = 8
SEGMENT_ROWS_PER_FILE = 500_000
ORPHAN_AGE_S = 3600.0


@dataclass(frozen=True)
class CompactionReport:
    """What one compaction did: files before and after, rows merged, seconds taken."""

    generation: str | None
    full: bool
    files_before: int
    files_after: int
    commits_merged: int
    segment_rows: int
    seconds: float

    def line(self) -> str:
        """A one-line summary for the CLI."""
        if self.generation is None:
            return f"nothing to compact ({self.files_before} files)"
        kind = "full" if self.full else "incremental"
        return (f"compacted {self.commits_merged} commits ({self.segment_rows} segment rows) into generation "
                f"{self.generation} ({kind}): {self.files_before} files before, {self.files_after} after, "
                f"{self.seconds:.1f} s")


class DamagedIndexError(ValueError):
    """A full compaction would merge around damaged files and lose their videos' rows for good."""

    def __init__(self, location: str, damage: list[Damage]) -> None:
        names = ", ".join(d.path for d in damage[:5]) + (f" and {len(damage) - 5} more" if len(damage) > 5 else "")
        super().__init__(f"{location} has {len(damage)} damaged file(s) ({names}); retire them first with "
                         f"'{repair_command(location)}', then compact")
        self.damage = damage


def new_generation_name() -> str:
    """A sortable, unique generation name."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def count_files(layout: IndexLayout) -> int:
    """Data files a reader has to open: live commits plus every file of every generation folder."""
    generation_files = storage.list_files(layout.compacted_root) if storage.exists(layout.compacted_root) else []
    return len(list_live_commits(layout)) + len([p for p in generation_files if p.endswith(".parquet")])


def _write_parquet(path: str, table: pa.Table) -> dict[str, Any]:
    """Write ``table`` to ``path``; returns the size and checksums the manifest records for it."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=64_000)
    data = buffer.getvalue()
    storage.write_bytes(path, data)
    return file_record(data)


def _segment_groups(parts: list[pa.Table]) -> dict[tuple[str, ...], list[pa.Table]]:
    """Segment tables grouped by schema (embedding size and model), one file set per group."""
    groups: dict[tuple[str, ...], list[pa.Table]] = {}
    for part in parts:
        groups.setdefault((str(part.schema),), []).append(part)
    return groups


def _errors_with_key(commit_rows: list[StoredCommit]) -> pa.Table:
    parts = []
    for stored in commit_rows:
        table = conform(stored.commit.errors_table(), ERRORS_SCHEMA)
        parts.append(table.append_column("key", pa.array([stored.commit.key] * table.num_rows, pa.string())))
    schema = ERRORS_SCHEMA.append(pa.field("key", pa.string()))
    return pa.concat_tables(parts) if parts else schema.empty_table()


class _GenerationWriter:
    """Writes one generation's files, then its manifest last."""

    def __init__(self, layout: IndexLayout, name: str) -> None:
        self.layout = layout
        self.name = name
        self.folder = layout.generation_folder(name)
        self.files: dict[str, list[str]] = {"commits": [], "videos": [], "errors": [], "segments": []}
        self.segment_rows = 0
        self.checksums: dict[str, dict[str, Any]] = {}

    def write(self, table_name: str, table: pa.Table, file_name: str) -> None:
        if table.num_rows == 0 and table_name == "segments":
            return
        self.checksums[file_name] = _write_parquet(storage.join(self.folder, file_name), table)
        self.files[table_name].append(file_name)

    def write_segments(self, parts: list[pa.Table]) -> None:
        number = 0
        for group in _segment_groups([conform_segments(p) for p in parts if p.num_rows]).values():
            merged = pa.concat_tables(group)
            metadata = next((p.schema.metadata for p in parts if p.schema.metadata), None)
            for start in range(0, merged.num_rows, SEGMENT_ROWS_PER_FILE):
                chunk = merged.slice(start, SEGMENT_ROWS_PER_FILE)
                if metadata:
                    chunk = chunk.replace_schema_metadata(metadata)
                self.write("segments", chunk, f"segments-{number:05d}.parquet")
                self.segment_rows += chunk.num_rows
                number += 1

    def commit(self, supersedes: list[str], merged: int) -> None:
        manifest = {"generation": self.name, "created_at": dt.datetime.now(dt.UTC).isoformat(),
                    "supersedes": supersedes, "files": self.files, "commits_merged": merged,
                    "segment_rows": self.segment_rows, CHECKSUMS: self.checksums}
        storage.write_bytes(storage.join(self.folder, GENERATION_FILE), json.dumps(manifest, indent=1).encode())


def _delete_merged(merged: list[StoredCommit]) -> None:
    """Delete merged live commits, each only if it still holds the commit that was merged."""
    for stored in merged:
        try:
            again = read_commit(stored.path, with_segments=False).commit
        except FileNotFoundError:
            continue
        if again.committed_at == stored.commit.committed_at:
            storage.remove(stored.path)
        else:
            log.info("%s was recommitted while compacting; it stays", stored.path)


def _live_segments(stored: StoredCommit) -> pa.Table:
    segments = stored.segments if stored.segments is not None else read_commit(stored.path).segments
    return segments.replace_schema_metadata({k: v for k, v in (segments.schema.metadata or {}).items()
                                             if not k.startswith(b"plm_index.commit")})


def _incremental(snap: IndexSnapshot, writer: _GenerationWriter) -> list[StoredCommit]:
    """A generation from every live commit as it is."""
    merged = list(snap.live.values())
    writer.write("commits", commits_table([s.commit for s in merged]), "commits.parquet")
    videos = [conform(s.commit.videos_table(), VIDEOS_SCHEMA) for s in merged]
    writer.write("videos", pa.concat_tables(videos) if videos else VIDEOS_SCHEMA.empty_table(), "videos.parquet")
    writer.write("errors", _errors_with_key(merged), "errors.parquet")
    writer.write_segments([_live_segments(s) for s in merged if s.commit.status == "indexed"])
    return merged


def _full(snap: IndexSnapshot, writer: _GenerationWriter) -> list[StoredCommit]:
    """A generation holding exactly the current rows of the whole index."""
    current = snap.current(visible_only=False)
    writer.write("commits", current.select(COMMITS_SCHEMA.names), "commits.parquet")
    writer.write("videos", snap.table("videos"), "videos.parquet")
    errors = snap.table("errors")
    keys = [commit_key(v, u) for v, u in zip(errors.column("video_id").to_pylist(), errors.column("uri").to_pylist(),
                                              strict=True)]
    writer.write("errors", errors.append_column("key", pa.array(keys, pa.string())), "errors.parquet")
    parts = []
    for generation in snap.generations:
        wanted = current.filter(pc.and_(pc.equal(current.column("source"), generation.name),
                                        pc.equal(current.column("status"), "indexed")))
        wanted_keys = pa.array(pc.binary_join_element_wise(wanted.column("settings_hash"), wanted.column("key"),
                                                           "\x1f").to_pylist(), pa.string())
        for part in snap.generation_tables(generation, "segments"):
            keys = pc.binary_join_element_wise(part.column("settings_hash"), part.column("video_id"), "\x1f")
            parts.append(part.filter(pc.is_in(keys, value_set=wanted_keys)))
    live_current = set(current.filter(pc.equal(current.column("source"), LIVE)).column("path").to_pylist())
    parts.extend(_live_segments(s) for p, s in snap.live.items() if p in live_current and s.commit.status == "indexed")
    writer.write_segments(parts)
    return list(snap.live.values())


def _remove_generation(layout: IndexLayout, name: str) -> None:
    folder = layout.generation_folder(name)
    for path in storage.list_files(folder):
        if not path.endswith(GENERATION_FILE):
            storage.remove(path)
    storage.remove(storage.join(folder, GENERATION_FILE))


def _remove_orphans(layout: IndexLayout, known: set[str]) -> None:
    """Delete generation folders without a manifest that are older than ``ORPHAN_AGE_S`` (killed compactions)."""
    if not storage.exists(layout.compacted_root):
        return
    now = time.time()
    by_folder: dict[str, list[str]] = {}
    for path in storage.list_files(layout.compacted_root):
        relative = path[len(layout.compacted_root):].lstrip("/")
        by_folder.setdefault(relative.split("/", 1)[0], []).append(path)
    for name, paths in by_folder.items():
        if name in known or any(p.endswith(GENERATION_FILE) for p in paths):
            continue
        ages = [now - (storage.modified_time(p) or now) for p in paths]
        if min(ages) > ORPHAN_AGE_S:
            log.info("removing %s/%s, left by a compaction that never finished", COMPACTED, name)
            for path in paths:
                storage.remove(path)


def compact(location: str, full: bool = False) -> CompactionReport:
    """Merge the live commits of ``location`` into a new generation (all generations with ``full``)."""
    check_format(location)
    started = time.perf_counter()
    layout = IndexLayout(location)
    files_before = count_files(layout)
    # Every settings' rows are kept: newer settings hide older ones from readers, but ``--settings``
    # still reaches them (index.read rule 4), so compaction reads the stored view.
    snap = snapshot(location, with_segments=True, identity=False)
    if full and snap.damage:
        raise DamagedIndexError(location, snap.damage)
    if not full and len(snap.generations) + 1 > MAX_GENERATIONS and snap.damage:
        log.warning("not merging the generations of %s while it has damaged files; run '%s'", location,
                    repair_command(location))
    else:
        full = full or len(snap.generations) + 1 > MAX_GENERATIONS
    if not snap.live and not (full and len(snap.generations) > 1):
        return CompactionReport(None, full, files_before, files_before, 0, 0, time.perf_counter() - started)
    writer = _GenerationWriter(layout, new_generation_name())
    merged = _full(snap, writer) if full else _incremental(snap, writer)
    superseded = [g.name for g in snap.generations] if full else []
    if full and snap.damage:  # found while reading: the new generation would silently lack their rows
        raise DamagedIndexError(location, snap.damage)
    writer.commit(superseded, len(merged))
    _delete_merged(merged)
    for name in superseded:
        _remove_generation(layout, name)
    _remove_orphans(layout, {g.name for g in snap.generations} | {writer.name})
    report = CompactionReport(writer.name, full, files_before, count_files(layout), len(merged), writer.segment_rows,
                              time.perf_counter() - started)
    return report


def generation_summary(location: str) -> list[dict[str, Any]]:
    """The current generations' manifests (for ``status``)."""
    return [g.manifest for g in list_generations(IndexLayout(location))]
