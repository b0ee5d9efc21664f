"""Read an index as it stands now, with ONE rule for which rows are current.

Rows live in two kinds of places: live per-video commits (``commits/``) and compacted
generations (``compacted/``). A video under one settings hash may have copies in several of
them (a compaction killed before it removed what it merged, a ``--force`` rerun, two builds at
once). The rule, applied per (settings hash, key):

1. The copy with the latest ``committed_at`` is current; on a tie a compacted copy beats a live
   one and a newer generation beats an older one (the copies are the same commit then).
2. Only the current copy's rows count: an ``indexed`` commit contributes its ``videos`` row and
   its ``segments``; a ``failed`` one its ``errors``.
3. A failed commit stops counting once the same uri has a newer indexed commit under the same
   settings (the file was fixed or replaced, so its content id changed).

So every row is visible exactly once at every instant, whatever was killed half way. The build
(what is done), search, eval, status and compaction all read through this module.

Damaged files (``index.integrity``) are read around, here and only here: a generation whose
manifest or commits table is unreadable is left out, a damaged live commit is left out, and a
damaged videos/errors/segments file of a generation is skipped; each is recorded in the
snapshot's ``damage`` and warned about once, naming the file, how many videos it held and the
repair command. Files a ``plm-index verify --repair`` retired are no longer listed by their
generation's manifest, and the videos they held (``retired_keys``) no longer count from it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import storage
from index.commit import StoredCommit, VideoCommit, commits_table, read_commit
from index.integrity import CHECKSUMS, Damage, DamagedFileError, HeldVideo, check_parquet, warn_damaged
from index.layout import COMMIT_SUFFIX, COMMITS, GENERATION_FILE, IndexLayout, check_format
from schemas.tables import COMMITS_SCHEMA, EMBEDDING_DIM, TABLES, segments_schema

LIVE = "live"
T = TypeVar("T")
_COMMITS_CACHE: dict[tuple[str, str], pa.Table] = {}


@dataclass(frozen=True)
class Generation:
    """One compacted generation: its folder and the manifest written last when it was made."""

    name: str
    folder: str
    manifest: dict[str, Any]

    def file(self, name: str) -> str:
        """A file of this generation."""
        return storage.join(self.folder, name)

    def files_of(self, table: str) -> list[str]:
        """The files holding ``table`` (``commits``, ``videos``, ``errors`` or ``segments``)."""
        return [self.file(name) for name in self.manifest["files"].get(table, [])]

    def record(self, path: str) -> dict[str, Any] | None:
        """The size and checksums the manifest records for one of its files (None: written before checksums)."""
        return (self.manifest.get(CHECKSUMS) or {}).get(path.replace("\\", "/").rsplit("/", 1)[-1])

    @property
    def retired_keys(self) -> set[str]:
        """``settings_hash\\x1fkey`` of the videos whose rows a repair retired from this generation."""
        return set(self.manifest.get("retired_keys") or ())


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file (local or remote) as a table."""
    if not storage.is_remote(path):
        return pq.read_table(path, columns=columns)
    return pq.read_table(io.BytesIO(storage.read_bytes(path)), columns=columns)


def read_generation_file(generation: Generation, path: str, table: str,
                         columns: list[str] | None = None) -> pa.Table:
    """One of a generation's files, checked against the size and checksum its manifest records.

    Raises ``DamagedFileError`` (missing, truncated, corrupt, not Parquet, schema mismatch), or
    ``FileNotFoundError`` where the file is gone because a full compaction superseded its generation
    (the caller then reads the index again).
    """
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        if _superseded(generation):
            raise
        raise DamagedFileError(path, "missing", "listed in its generation's manifest but not found") from None
    parsed = check_parquet(path, data, table, generation.record(path))
    return parsed.select(columns) if columns else parsed


def _superseded(generation: Generation) -> bool:
    """Whether ``generation`` was replaced since it was listed (its files may then vanish)."""
    location = generation.folder.rstrip("/").rsplit("/", 2)[0]  # <location>/compacted/<name>
    layout = IndexLayout(location)
    return generation.name not in {g.name for g in scan_generations(layout)[0]}


def key_of_path(layout: IndexLayout, path: str) -> HeldVideo:
    """The video a live commit's path names (``commits/<settings_hash>/<kk>/<key>.parquet``)."""
    relative = path[len(layout.path(COMMITS)):].replace("\\", "/").strip("/").split("/")
    key = relative[-1][: -len(COMMIT_SUFFIX)] if relative[-1].endswith(COMMIT_SUFFIX) else relative[-1]
    return HeldVideo(settings_hash=relative[0] if len(relative) > 1 else "", key=key)


def videos_held(generation: Generation, table: str, path: str, commits: pa.Table) -> tuple[HeldVideo, ...]:
    """The videos whose rows ``path`` (a ``table`` file of ``generation``) held, from its ``commits`` rows.

    A videos or errors file holds every indexed or failed video of the generation; a segments file
    every indexed video with segments, less those whose rows all lie in the generation's other
    segments files (read by their key columns only, and only when there are several).
    """
    status = "failed" if table == "errors" else "indexed"
    chosen = commits.filter(pc.equal(commits.column("status"), status))
    if table == "segments":
        chosen = chosen.filter(pc.greater(chosen.column("num_segments"), 0))
        others = [p for p in generation.files_of("segments") if p != path]
        if others:
            found: dict[str, int] = {}
            for other in others:
                try:
                    keys = _video_key_column(read_generation_file(generation, other, "segments",
                                                                  ["settings_hash", "video_id"]))
                except (DamagedFileError, FileNotFoundError):
                    continue
                for joined in keys.to_pylist():
                    found[joined] = found.get(joined, 0) + 1
            complete = [found.get(k, 0) >= n for k, n in zip(_key_column(chosen).to_pylist(),
                                                              chosen.column("num_segments").to_pylist(), strict=True)]
            chosen = chosen.filter(pa.array([not c for c in complete], pa.bool_()))
    return tuple(HeldVideo(s, k, u) for s, k, u in zip(chosen.column("settings_hash").to_pylist(),
                                                        chosen.column("key").to_pylist(),
                                                        chosen.column("uri").to_pylist(), strict=True))


def list_generations(layout: IndexLayout) -> list[Generation]:
    """Complete generations (manifest present) that no other complete generation supersedes.

    A generation whose manifest is unreadable is left out (and warned about once).
    """
    generations, damage = scan_generations(layout)
    for found in damage:
        warn_damaged(layout.location, found)
    return generations


def scan_generations(layout: IndexLayout) -> tuple[list[Generation], list[Damage]]:
    """The current generations, and the damage of manifests that could not be read."""
    found, damage = [], []
    for path in storage.glob(layout.path("compacted", "*", GENERATION_FILE)):
        folder = path.rsplit("/", 1)[0] if storage.is_remote(path) else path[: -len(GENERATION_FILE) - 1]
        try:
            manifest = json.loads(storage.read_bytes(path))
            generation = Generation(name=manifest["generation"], folder=folder, manifest=manifest)
            generation.files_of("commits")
        except FileNotFoundError:
            continue  # removed by a full compaction since it was listed
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            name = folder.replace("\\", "/").rsplit("/", 1)[-1]
            damage.append(Damage(path, "corrupt", f"unreadable generation manifest: {str(exc)[:200]}", name,
                                 "manifest", videos_known=False))
            continue
        found.append(generation)
    superseded = {name for g in found for name in g.manifest.get("supersedes", [])}
    return sorted((g for g in found if g.name not in superseded), key=lambda g: g.name), damage


def list_live_commits(layout: IndexLayout) -> list[str]:
    """Paths of every live commit object."""
    if not storage.exists(layout.commits_root):
        return []
    return [p for p in storage.list_files(layout.commits_root) if p.endswith(COMMIT_SUFFIX)]


def _key_column(table: pa.Table) -> pa.ChunkedArray:
    """``settings_hash`` and ``key`` joined, one string per row, for set lookups."""
    return pc.binary_join_element_wise(table.column("settings_hash"), table.column("key"), "\x1f")


def _video_key_column(table: pa.Table) -> pa.ChunkedArray:
    """The same join for tables that carry ``video_id`` (segments, videos) instead of ``key``."""
    return pc.binary_join_element_wise(table.column("settings_hash"), table.column("video_id"), "\x1f")


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``'s column order and types; missing columns (older files) become nulls."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


def conform_segments(table: pa.Table) -> pa.Table:
    """Segments in the segments schema for the embedding size they carry."""
    dim = EMBEDDING_DIM
    if "embedding" in table.column_names:
        dim = getattr(table.schema.field("embedding").type, "list_size", EMBEDDING_DIM)
        if dim <= 0:
            dim = EMBEDDING_DIM
    return conform(table, segments_schema(dim))


def concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Concatenate conformed tables; segments with different embedding sizes get variable-length lists."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return schema.empty_table()
    if len({p.schema for p in parts}) > 1 and "embedding" in schema.names:
        loose = pa.field("embedding", pa.list_(pa.float32()))
        parts = [p.set_column(p.schema.get_field_index("embedding"), loose, p.column("embedding").cast(loose.type))
                 for p in parts]
    return pa.concat_tables(parts)


@dataclass
class IndexSnapshot:
    """The sources of an index at one moment and the current commit of every video.

    ``commits`` holds one row per (settings hash, key) that is current, with ``source`` naming
    where its rows live (a generation's name, or ``live``) and ``path`` (the live object), and
    ``visible`` (False for a failed commit that a newer indexed commit of its uri hides).
    """

    layout: IndexLayout
    generations: list[Generation]
    live: dict[str, StoredCommit]
    commits: pa.Table
    _segments_loaded: bool = field(default=False, repr=False)
    damage: list[Damage] = field(default_factory=list)

    @property
    def location(self) -> str:
        """The index's location."""
        return self.layout.location

    def current(self, status: str | None = None, visible_only: bool = True) -> pa.Table:
        """Current commits, optionally of one status; hidden failures left out unless asked."""
        table = self.commits
        if visible_only:
            table = table.filter(table.column("visible"))
        if status is not None:
            table = table.filter(pc.equal(table.column("status"), status))
        return table

    def _from_source(self, source: str, status: str) -> pa.Table:
        current = self.current(status)
        return current.filter(pc.equal(current.column("source"), source))

    def _live_commits(self, status: str) -> list[StoredCommit]:
        chosen = self._from_source(LIVE, status).column("path").to_pylist()
        return [self.live[path] for path in chosen]

    def table(self, name: str) -> pa.Table:
        """The ``videos``, ``segments``, ``errors`` or ``commits`` table, each current row once."""
        if name == "commits":
            return self.current(visible_only=False).select(COMMITS_SCHEMA.names)
        status = "failed" if name == "errors" else "indexed"
        schema = TABLES[name]
        parts = []
        for generation in self.generations:
            wanted = _key_column(self._from_source(generation.name, status))
            if not len(wanted):
                continue
            for path in generation.files_of(name):
                part = self.read_checked(generation, path, name)
                if part is None:
                    continue
                keys = (_video_key_column(part) if name != "errors" else
                        pc.binary_join_element_wise(part.column("settings_hash"), part.column("key"), "\x1f"))
                part = part.filter(pc.is_in(keys, value_set=pa.array(wanted.to_pylist(), pa.string())))
                parts.append(conform_segments(part) if name == "segments" else conform(part, schema))
        for stored in self._live_commits(status):
            parts.append(self._live_rows(stored, name))
        return concat(parts, schema)

    def _live_rows(self, stored: StoredCommit, name: str) -> pa.Table:
        if name == "videos":
            return conform(stored.commit.videos_table(), TABLES["videos"])
        if name == "errors":
            return conform(stored.commit.errors_table(), TABLES["errors"])
        segments = self.live_segments(stored)
        return conform_segments(segments if segments is not None else segments_schema().empty_table())

    def iter_live_segments(self) -> Iterator[tuple[VideoCommit, pa.Table]]:
        """Each current live indexed commit with its segment rows (read one object at a time)."""
        for stored in self._live_commits("indexed"):
            segments = self.live_segments(stored)
            if segments is not None:
                yield stored.commit, conform_segments(segments)

    def record_damage(self, damage: Damage) -> None:
        """Note a damaged file this snapshot reads around, and warn about it once."""
        if all(d.path != damage.path for d in self.damage):
            self.damage.append(damage)
        warn_damaged(self.location, damage)

    def read_checked(self, generation: Generation, path: str, table: str) -> pa.Table | None:
        """A generation's file, or None (recorded and warned about once) where it is damaged."""
        try:
            return read_generation_file(generation, path, table)
        except DamagedFileError as exc:
            commits = self.commits.filter(pc.equal(self.commits.column("source"), generation.name))
            self.record_damage(Damage(path, exc.problem, exc.detail, generation.name, table,
                                      videos_held(generation, table, path, commits)))
            return None

    def generation_tables(self, generation: Generation, table: str) -> list[pa.Table]:
        """Every readable ``table`` file of ``generation`` (damaged ones skipped, see ``read_checked``)."""
        return [t for t in (self.read_checked(generation, p, table) for p in generation.files_of(table))
                if t is not None]

    def live_segments(self, stored: StoredCommit) -> pa.Table | None:
        """A live commit's segment rows, checked; None (recorded, warned once) where the commit is damaged."""
        if stored.segments is not None:
            return stored.segments
        try:
            return read_commit(stored.path).segments
        except DamagedFileError as exc:
            commit = stored.commit
            self.record_damage(Damage(stored.path, exc.problem, exc.detail, LIVE, "commit",
                                      (HeldVideo(commit.settings_hash, commit.key, commit.uri),)))
            return None


def _candidates(layout: IndexLayout, generations: list[Generation],
                live: dict[str, StoredCommit]) -> pa.Table:
    """Every copy of every commit, with where it lives and how it ranks on a tie."""
    parts = []
    for rank, generation in enumerate(generations, start=1):
        for path in generation.files_of("commits"):
            table = generation_commits(generation, path)
            parts.append(table.append_column("source", pa.array([generation.name] * table.num_rows, pa.string()))
                         .append_column("path", pa.nulls(table.num_rows, pa.string()))
                         .append_column("rank", pa.array(np.full(table.num_rows, rank), pa.int32())))
    if live:
        paths = list(live)
        table = commits_table([live[p].commit for p in paths])
        parts.append(table.append_column("source", pa.array([LIVE] * table.num_rows, pa.string()))
                     .append_column("path", pa.array(paths, pa.string()))
                     .append_column("rank", pa.array(np.zeros(table.num_rows), pa.int32())))
    schema = COMMITS_SCHEMA.append(pa.field("source", pa.string())).append(pa.field("path", pa.string())).append(
        pa.field("rank", pa.int32()))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def current_commits(candidates: pa.Table) -> pa.Table:
    """Apply the rule: one winning copy per (settings hash, key), and which failures stay visible."""
    if candidates.num_rows == 0:
        return candidates.append_column("visible", pa.array([], pa.bool_()))
    ordered = candidates.sort_by([("settings_hash", "ascending"), ("key", "ascending"),
                                  ("committed_at", "descending"), ("rank", "descending")])
    keys = _key_column(ordered).to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    winners = ordered.filter(pa.array(first))
    # Rule 3: a failed commit is hidden by a newer indexed commit of the same uri and settings.
    indexed = winners.filter(pc.equal(winners.column("status"), "indexed"))
    newest_indexed: dict[tuple[str, str], Any] = {}
    for uri, settings, at in zip(indexed.column("uri").to_pylist(), indexed.column("settings_hash").to_pylist(),
                                 indexed.column("committed_at").to_pylist(), strict=True):
        key = (uri, settings)
        if key not in newest_indexed or at > newest_indexed[key]:
            newest_indexed[key] = at
    visible = [status == "indexed" or not ((uri, settings) in newest_indexed and newest_indexed[(uri, settings)] > at)
               for status, uri, settings, at in zip(winners.column("status").to_pylist(),
                                                     winners.column("uri").to_pylist(),
                                                     winners.column("settings_hash").to_pylist(),
                                                     winners.column("committed_at").to_pylist(), strict=True)]
    return winners.append_column("visible", pa.array(visible, pa.bool_()))


def snapshot(location: str, with_segments: bool = False) -> IndexSnapshot:
    """The index at ``location`` as it stands now (an empty snapshot where nothing is committed yet).

    Live commits are read whole when ``with_segments`` is set, else only their headers (segment
    rows are then read on demand). A generation superseded while this runs is read again once.
    """
    check_format(location)
    layout = IndexLayout(location)
    return with_snapshot_retries(lambda: _snapshot(layout, with_segments))


def _snapshot(layout: IndexLayout, with_segments: bool) -> IndexSnapshot:
    # Live commits are listed BEFORE generations: compaction writes a generation before it deletes
    # the commits it merged, so a commit gone by the time it is read is in a generation listed after.
    live: dict[str, StoredCommit] = {}
    damage: list[Damage] = []
    _COMMITS_CACHE.clear()  # holds one snapshot's commits tables: checked once, then used by the rule
    for path in list_live_commits(layout):
        try:
            live[path] = read_commit(path, with_segments=with_segments)
        except FileNotFoundError:
            continue  # compacted away since it was listed: the generation listed next holds it
        except DamagedFileError as exc:
            damage.append(Damage(path, exc.problem, exc.detail, LIVE, "commit", (key_of_path(layout, path),)))
    generations, bad_manifests = scan_generations(layout)
    damage.extend(bad_manifests)
    readable = []
    for generation in generations:
        try:
            for path in generation.files_of("commits"):
                generation_commits(generation, path)
            readable.append(generation)
        except DamagedFileError as exc:
            damage.append(Damage(exc.path, exc.problem, exc.detail, generation.name, "commits", videos_known=False))
    snap = IndexSnapshot(layout, readable, live, current_commits(_candidates(layout, readable, live)))
    for found in damage:
        snap.record_damage(found)
    return snap


def generation_commits(generation: Generation, path: str) -> pa.Table:
    """A generation's commits file (checked, read once per snapshot), less the videos a repair retired."""
    cache_key = (path, json.dumps(generation.record(path), sort_keys=True))
    table = _COMMITS_CACHE.get(cache_key)
    if table is None:
        table = conform(read_generation_file(generation, path, "commits"), COMMITS_SCHEMA)
        _COMMITS_CACHE[cache_key] = table
    retired = generation.retired_keys
    if retired:
        table = table.filter(pc.invert(pc.is_in(_key_column(table), value_set=pa.array(sorted(retired), pa.string()))))
    return table


def with_snapshot_retries(read: Callable[[], T], attempts: int = 3) -> T:
    """Run ``read`` again (from a fresh listing) when a file vanished under it.

    A full compaction deletes the generations it replaced once its own is written; a reader that
    listed the old ones then finds a file gone, and simply reads the new state.
    """
    for attempt in range(attempts):
        try:
            return read()
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def read_current(location: str, table: str) -> pa.Table:
    """One table of the index as it stands now, each row once (see the module docstring)."""
    check_format(location)
    return with_snapshot_retries(lambda: _snapshot(IndexLayout(location), False).table(table))
