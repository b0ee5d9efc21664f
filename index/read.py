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

Across settings and uris (``identity_rules``; compaction keeps every settings' rows, so these
decide only what readers see):

4. **Newest settings win per (video, task).** Of a video's indexed commits under different build
   settings, the newest one that holds a task gives that task's rows; older settings keep only
   the tasks no newer commit holds (a build that adds ``--tasks fgqa`` keeps the captions). So a
   rerun with a changed ``--max-new-tokens`` replaces rows instead of adding a second copy, and the
   clips of two plans never mix within a task. The newest commit gives the ``videos`` row. A
   failure never hides an older complete result, and is itself hidden by a newer indexed commit of
   its uri under any build settings. Older settings stay reachable with ``settings=HASH``, which
   reads that settings hash alone (rules 1-3 and 5).
5. **The current content of a uri wins.** A uri's content is the ``video_id`` of its newest commit
   that knows one (any status, any build settings); commits of that uri with another content (a
   file replaced in place) are hidden, under every settings.
8. **Identical copies: one set of model rows, found by every name.** The content's indexed commit
   names the first uri committed; each other uri with the same content has a ``duplicate`` commit.
   ``videos`` lists each copy (the model row's fields, its own uri, ``duplicate_of`` naming the
   first) and search's ``--video`` finds the content's moments by the copy's name.

Settings starting with ``import-`` (``plm-index import``) are not build settings: rules 4 and 5
leave them alone.

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


class UnknownSettingsError(ValueError):
    """A settings hash asked for (``--settings``) that the index does not hold."""


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
    settings: str | None = None
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
            chosen = self._from_source(generation.name, status)
            if name == "videos":
                chosen = chosen.filter(chosen.column(SHOWS_VIDEO))
            wanted = _key_column(chosen)
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
            if name != "videos" or stored.path in self._live_showing_video():
                parts.append(self._live_rows(stored, name))
        if name == "segments":
            return self._without_hidden_tasks(concat(parts, schema))
        if name == "videos":
            return self._with_copies(concat(parts, schema))
        return concat(parts, schema)

    def hidden_tasks(self) -> dict[tuple[str, str], set[str]]:
        """(settings hash, video id) -> tasks of that visible commit that newer settings hide (rule 4)."""
        current = self.current("indexed")
        return {(h, v): set(t) for h, v, t in zip(current.column("settings_hash").to_pylist(),
                                                   current.column("video_id").to_pylist(),
                                                   current.column(HIDDEN_TASKS).to_pylist(), strict=True) if t}

    def copies(self) -> dict[str, tuple[str, str]]:
        """Identical copies (rule 8): copy uri -> (video id, uri whose commit holds the rows)."""
        current = self.current("duplicate")  # the stored view (compaction) names no primary: no copies
        return {u: (v, p) for u, v, p in zip(current.column("uri").to_pylist(), current.column("video_id").to_pylist(),
                                             current.column(PRIMARY_URI).to_pylist(), strict=True) if p is not None}

    def _live_showing_video(self) -> set[str]:
        live = self._from_source(LIVE, "indexed")
        return set(live.filter(live.column(SHOWS_VIDEO)).column("path").to_pylist())

    def _without_hidden_tasks(self, segments: pa.Table) -> pa.Table:
        hidden = self.hidden_tasks()
        if not hidden or not segments.num_rows:
            return segments
        keep = [task not in hidden.get((h, v), ()) for h, v, task in zip(
            segments.column("settings_hash").to_pylist(), segments.column("video_id").to_pylist(),
            segments.column("task").to_pylist(), strict=True)]
        return segments.filter(pa.array(keep, pa.bool_()))

    def _with_copies(self, videos: pa.Table) -> pa.Table:
        copies = self.copies()
        if not copies or not videos.num_rows:
            return videos
        by_video = {row["video_id"]: row for row in videos.to_pylist()}
        rows = [{**by_video[video_id], "uri": uri, "duplicate_of": primary}
                for uri, (video_id, primary) in sorted(copies.items()) if video_id in by_video]
        return concat([videos, pa.Table.from_pylist(rows, schema=videos.schema)], videos.schema)

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


IMPORT_SETTINGS_PREFIX = "import-"
# Columns the identity rules add to the current commits (see ``identity_rules``).
HIDDEN_TASKS = "hidden_tasks"
SHOWS_VIDEO = "shows_video"
PRIMARY_URI = "primary_uri"


def is_build_settings(settings_hash: str) -> bool:
    """Whether a settings hash is a build's (``plm-index import`` writes ``import-<task>``)."""
    return not settings_hash.startswith(IMPORT_SETTINGS_PREFIX)


def _with_identity_columns(commits: pa.Table, hidden: list[list[str]], shows_video: list[bool],
                           primary: list[str | None]) -> pa.Table:
    return (commits.append_column(HIDDEN_TASKS, pa.array(hidden, pa.list_(pa.string())))
            .append_column(SHOWS_VIDEO, pa.array(shows_video, pa.bool_()))
            .append_column(PRIMARY_URI, pa.array(primary, pa.string())))


def stored_view(commits: pa.Table) -> pa.Table:
    """The per-(settings, key) winners as stored, without the cross-settings rules (compaction's view)."""
    n = commits.num_rows
    return _with_identity_columns(commits, [[] for _ in range(n)], [True] * n, [None] * n)


def identity_rules(commits: pa.Table, settings: str | None = None) -> pa.Table:
    """Rules 4, 5 and 8 of the module docstring over the per-(settings, key) winners.

    ``commits`` are ``current_commits``' winners (with rule 3's ``visible``); the answer keeps the
    rows of ``settings`` only when it is given, and adds ``hidden_tasks`` (tasks of an indexed
    commit that a newer settings' commit of the video holds), ``shows_video`` (this commit gives
    the video's ``videos`` row) and ``primary_uri`` (for a duplicate: the uri holding the rows).
    Only uris and videos with more than one commit are looked at one by one.
    """
    n = commits.num_rows
    status = commits.column("status").to_pylist()
    hashes = commits.column("settings_hash").to_pylist()
    build = np.array([is_build_settings(h) for h in hashes], dtype=bool)
    visible = np.asarray(commits.column("visible").to_numpy(zero_copy_only=False), dtype=bool).copy()
    if settings is not None:
        visible &= np.array([h == settings or s == "duplicate" for h, s in zip(hashes, status, strict=True)])
    uris = commits.column("uri").to_pylist()
    video_ids = commits.column("video_id").to_pylist()
    times = commits.column("committed_at").cast(pa.int64()).to_pylist()
    repeated_uris = _repeated(uris, build)
    # Rule 5: a uri holds the content of its newest commit that knows one, whatever its settings.
    content: dict[str, tuple[int, str]] = {}
    for i in _rows_of(uris, repeated_uris):
        if build[i] and video_ids[i] is not None and (uris[i] not in content or times[i] > content[uris[i]][0]):
            content[uris[i]] = (times[i], video_ids[i])
    for i in _rows_of(uris, repeated_uris):
        if build[i] and video_ids[i] is not None and content[uris[i]][1] != video_ids[i]:
            visible[i] = False
    # A failure is hidden by a newer indexed commit of its uri under any build settings in view.
    newest_indexed: dict[str, int] = {}
    for i in _rows_of(uris, repeated_uris):
        if visible[i] and build[i] and status[i] == "indexed" and times[i] > newest_indexed.get(uris[i], -1 << 62):
            newest_indexed[uris[i]] = times[i]
    for i in _rows_of(uris, repeated_uris):
        if status[i] == "failed" and build[i] and visible[i] and newest_indexed.get(uris[i], times[i]) > times[i]:
            visible[i] = False
    # Rule 4: per video, newest first, each task comes from the newest commit that holds it.
    hidden: list[list[str]] = [[] for _ in range(n)]
    shows_video = [True] * n
    indexed_build = build & visible & np.array([s == "indexed" for s in status], dtype=bool)
    repeated_videos = _repeated(video_ids, indexed_build)
    primary_uri = {v: u for v, u, ok in zip(video_ids, uris, indexed_build.tolist(), strict=True)
                   if ok and v not in repeated_videos}
    covered: dict[str, set[str] | None] = {}  # None: every task is taken
    tasks = commits.column("tasks") if repeated_videos else None
    for i in sorted(_rows_of(video_ids, repeated_videos), key=lambda i: times[i], reverse=True):
        if not indexed_build[i]:
            continue
        video = video_ids[i]
        shows_video[i] = video not in covered
        if video not in covered:
            covered[video] = set()
            primary_uri[video] = uris[i]
        taken = covered[video]
        if taken is None:
            visible[i] = False
            continue
        mine = tasks[i].as_py()
        if mine is None:  # an older commit without its task list: it may hold any task
            hidden[i] = sorted(taken)
            covered[video] = None
            continue
        hidden[i] = sorted(taken & set(mine))
        if mine and len(hidden[i]) == len(set(mine)):
            visible[i] = False
            hidden[i] = []
        taken.update(mine)
    # Rule 8: a copy is listed (once, its newest duplicate commit) while its content has a visible
    # indexed commit under another uri.
    primary: list[str | None] = [None] * n
    listed: set[str] = set()
    for i in sorted((i for i in range(n) if status[i] == "duplicate"), key=lambda i: times[i], reverse=True):
        if visible[i]:
            primary[i] = primary_uri.get(video_ids[i] or "")
            visible[i] = primary[i] is not None and primary[i] != uris[i] and uris[i] not in listed
            listed.add(uris[i])
    result = commits.set_column(commits.schema.get_field_index("visible"), "visible", pa.array(visible, pa.bool_()))
    result = _with_identity_columns(result, hidden, shows_video, primary)
    if settings is not None:
        keep = [h == settings or s == "duplicate" for h, s in zip(hashes, status, strict=True)]
        result = result.filter(pa.array(keep))
    return result


def _repeated(values: list[Any], mask: np.ndarray) -> set[Any]:
    """The values that occur more than once among the rows ``mask`` keeps (None left out)."""
    seen: set[Any] = set()
    twice: set[Any] = set()
    for value, keep in zip(values, mask.tolist(), strict=True):
        if keep and value is not None:
            (twice if value in seen else seen).add(value)
    return twice


def _rows_of(values: list[Any], wanted: set[Any]) -> list[int]:
    """Rows whose value is in ``wanted`` (the only ones a cross-commit rule can change)."""
    return [i for i, value in enumerate(values) if value in wanted] if wanted else []


def snapshot(location: str, with_segments: bool = False, *, settings: str | None = None,
             identity: bool = True) -> IndexSnapshot:
    """The index at ``location`` as it stands now (an empty snapshot where nothing is committed yet).

    Live commits are read whole when ``with_segments`` is set, else only their headers (segment
    rows are then read on demand). A generation superseded while this runs is read again once.
    ``settings`` reads one settings hash alone (an older settings' rows, which newer settings
    hide otherwise); ``identity=False`` skips rules 4, 5 and 8 (compaction keeps every stored row).
    """
    check_format(location)
    layout = IndexLayout(location)
    return with_snapshot_retries(lambda: _snapshot(layout, with_segments, settings, identity))


def _snapshot(layout: IndexLayout, with_segments: bool, settings: str | None = None,
              identity: bool = True) -> IndexSnapshot:
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
    winners = current_commits(_candidates(layout, readable, live))
    if settings is not None and settings not in set(winners.column("settings_hash").to_pylist()):
        raise UnknownSettingsError(f"{layout.location} holds no commits under settings {settings!r}; "
                                   "'plm-index status --index INDEX' lists the settings hashes it holds")
    commits = identity_rules(winners, settings) if identity else stored_view(winners)
    snap = IndexSnapshot(layout, readable, live, commits, settings=settings)
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


def read_current(location: str, table: str, settings: str | None = None) -> pa.Table:
    """One table of the index as it stands now, each row once (see the module docstring);
    ``settings`` reads that settings hash alone."""
    check_format(location)
    return with_snapshot_retries(lambda: _snapshot(IndexLayout(location), False, settings).table(table))
