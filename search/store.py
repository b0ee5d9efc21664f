"""The derived search index: parts built from the Parquet index, synced incrementally, opened lazily.

Parquet (``index/``) stays the source of truth; this is a cache of it laid out for answering at
once. It lives in ``INDEX/search/`` for a local index, and for a remote one (``gs://``, ``s3://``)
in a local cache folder keyed by the index location (``$PLM_INDEX_HOME/search/<hash>/``) whose
parts are keyed by the source versions they were built from::

    ROOT/manifest.json            parts, which sources each covers, the index state last synced
    ROOT/parts/<part>/units.parquet      one row per unit (``search.units``), row groups of 8192
    ROOT/parts/<part>/units.arrow        the same rows, uncompressed Arrow IPC, memory-mapped for hits
    ROOT/parts/<part>/embeddings.f16     unit embeddings, float16, row-major
    ROOT/parts/<part>/vocab.json, postings_*.npy, lengths.npy   the part's inverted index
    ROOT/parts/<part>/dead-<state>.npy   rows no longer current (a newer commit elsewhere)

A part covers either one compacted generation or a batch of live commits (each recorded with its
commit time). ``sync`` lists the index (``index.read.snapshot``, headers only), builds a part for
each generation and for the live commits no part covers yet, works out which rows of every part
are current under the index's one rule, and drops parts that no longer own any current row. Its
cost follows what changed, never the index size. Queries call ``open_store``, which syncs first
when the index changed since the last sync, so a search during a build sees exactly the videos
committed so far.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import storage
from core.text_embedding import EMBEDDING_DIM_DEFAULT, model_label, query_embedder
from index.integrity import Damage, HeldVideo, warn_damaged
from index.layout import IndexLayout
from index.read import (
    HIDDEN_TASKS,
    LIVE,
    Generation,
    IndexSnapshot,
    conform_segments,
    snapshot,
    with_snapshot_retries,
)
from search import ivf
from search.text_index import TextIndex, write_text_index
from search.units import OWNER_SEP, UNITS_SCHEMA, segments_to_units

log = logging.getLogger(__name__)

STORE_VERSION = 1
MANIFEST = "manifest.json"
ROW_GROUP = 8192
UNITS_ARROW = "units.arrow"
# Live commits are read and turned into units this many at a time.
LIVE_BATCH = 256


class StoreError(RuntimeError):
    """The derived search index cannot be used or rebuilt (say which folder and what to do)."""


def cache_home() -> str:
    """Where derived indexes of remote indexes are cached."""
    home = os.environ.get("PLM_INDEX_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "plm-video-index")
    return os.path.join(home, "search")


def store_root(location: str, settings: str | None = None) -> str:
    """The local folder of ``location``'s derived search index (of one settings hash's rows, if given).

    ``settings`` (``search --settings HASH``) gets its own derived index in ``by-settings/HASH/``:
    the default one holds what the index's identity rules make current, where newer settings
    hide older ones.
    """
    if storage.is_remote(location):
        digest = hashlib.sha256(location.rstrip("/").encode()).hexdigest()[:20]
        root = os.path.join(cache_home(), digest)
    else:
        root = IndexLayout(location).search_root
    return root if settings is None else os.path.join(root, "by-settings", settings)


@dataclass(frozen=True)
class SyncReport:
    """What one sync did: parts added and dropped, units added, seconds taken."""

    root: str
    parts: int
    parts_added: int
    parts_dropped: int
    units_added: int
    units: int
    seconds: float

    def line(self) -> str:
        """A one-line summary for logs and the CLI."""
        return (f"search index {self.root}: {self.units} units in {self.parts} parts (+{self.parts_added} parts, "
                f"+{self.units_added} units, -{self.parts_dropped} parts) in {self.seconds:.2f} s")


def _state(snap: IndexSnapshot) -> str:
    """A fingerprint of the index's current state: its generations and current live commits."""
    current = snap.current()
    items = sorted(zip(current.column("source").to_pylist(), current.column("settings_hash").to_pylist(),
                       current.column("key").to_pylist(),
                       [str(t) for t in current.column("committed_at").to_pylist()],
                       current.column("status").to_pylist(), current.column(HIDDEN_TASKS).to_pylist(), strict=True))
    names = [g.name for g in snap.generations]
    return hashlib.sha256(json.dumps([STORE_VERSION, names, items]).encode()).hexdigest()[:20]


def _read_manifest(root: str) -> dict:
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        return {"version": STORE_VERSION, "model": None, "dim": None, "state": None, "parts": []}
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("version") != STORE_VERSION:
        raise StoreError(f"the search index in {root} has format {manifest.get('version')}, this version reads "
                         f"{STORE_VERSION}; rebuild it with 'plm-index search --index INDEX --rebuild'")
    return manifest


def _write_manifest(root: str, manifest: dict) -> None:
    tmp = os.path.join(root, f"{MANIFEST}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(root, MANIFEST))


def _write_part(root: str, units: pa.Table, vectors: np.ndarray, sources: dict) -> dict:
    """Write one part (atomically: a new folder, listed by the manifest only once complete)."""
    name = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    folder = os.path.join(root, "parts", name)
    os.makedirs(folder)
    pq.write_table(units, os.path.join(folder, "units.parquet"), row_group_size=ROW_GROUP, compression="zstd")
    _write_units_arrow(folder, units)
    vectors.astype(np.float16).tofile(os.path.join(folder, "embeddings.f16"))
    # An int8 copy (one scale per row) for the full scan: a quarter of float32's bytes, fast to widen.
    scales = np.maximum(np.abs(vectors).max(axis=1), 1e-12) / 127.0 if len(vectors) else np.zeros(0)
    quantised = np.round(vectors / scales[:, None]).astype(np.int8) if len(vectors) else np.zeros((0, 0), np.int8)
    quantised.tofile(os.path.join(folder, "embeddings.i8"))
    scales.astype(np.float32).tofile(os.path.join(folder, "scales.f32"))
    write_text_index(folder, units.column("text").to_pylist())
    lengths = np.load(os.path.join(folder, "lengths.npy"))
    return {"name": name, "rows": units.num_rows, "terms": int(lengths.sum(dtype=np.int64)), "dead": None,
            **sources}


def _owned(part: dict, snap_current: dict[str, tuple[str, str]]) -> set[str]:
    """The owners whose current commit this part holds."""
    if "generation" in part:
        return {owner for owner, (source, _) in snap_current.items() if source == part["generation"]}
    return {owner for owner, at in part["live"].items()
            if snap_current.get(owner, (None, None)) == (LIVE, at)}


def sync(location: str, model: str | None = None, rebuild: bool = False, settings: str | None = None) -> SyncReport:
    """Bring the derived search index of ``location`` up to date with its Parquet index.

    Incremental: only generations and live commits no part covers yet are read. ``rebuild``
    throws the derived index away and builds it again from the Parquet index. ``settings``
    syncs the derived index of that settings hash's rows alone. Returns what it did.
    """
    started = time.perf_counter()
    root = store_root(location, settings)
    if rebuild and os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(os.path.join(root, "parts"), exist_ok=True)
    label = model_label(model)
    manifest = _read_manifest(root)
    if manifest["parts"] and manifest["model"] != label:
        log.info("search index %s was built with %s, not %s: rebuilding", root, manifest["model"], label)
        return sync(location, model, rebuild=True, settings=settings)
    snap = snapshot(location, settings=settings)
    state = _state(snap)
    if manifest["state"] == state and not rebuild:
        for found in manifest.get("damage") or ():  # parts built around damaged files: still say so
            warn_damaged(location, Damage(**{**found, "videos": tuple(HeldVideo(**v) for v in found["videos"])}))
        _ensure_ivf(root, manifest)
        return SyncReport(root, len(manifest["parts"]), 0, 0, 0, _current_units(manifest["parts"]),
                          time.perf_counter() - started)
    embedder = query_embedder(model)  # loaded only when there is something to embed
    dim = embedder.dim
    current = snap.current("indexed")
    snap_current = {f"{s}{OWNER_SEP}{v}": (src, str(at)) for s, v, src, at in zip(
        current.column("settings_hash").to_pylist(), current.column("video_id").to_pylist(),
        current.column("source").to_pylist(), current.column("committed_at").to_pylist(), strict=True)}
    parts = list(manifest["parts"])
    covered_generations = {_generation_cover(p) for p in parts if "generation" in p}
    covered_live = {(owner, at) for p in parts for owner, at in p.get("live", {}).items()}
    added = units_added = 0
    for generation in snap.generations:
        if _generation_key(generation, snap) in covered_generations:
            continue
        readable = [(p, snap.read_checked(generation, p, "segments")) for p in generation.files_of("segments")]
        tables = [table for _, table in readable if table is not None]
        units, vectors = _units_of(tables, embedder.embed, label, dim)
        # A part built around a damaged file names what it read, so it is rebuilt if that file comes back.
        skipped = [p for p, table in readable if table is None]
        read = {"files": [p.rsplit("/", 1)[-1] for p, t in readable if t is not None]} if skipped else {}
        parts.append(_write_part(root, units, vectors, {"generation": generation.name, **read}))
        added += 1
        units_added += units.num_rows
    wanted = [(owner, at) for owner, (source, at) in snap_current.items()
              if source == LIVE and (owner, at) not in covered_live]
    if wanted:
        wanted_set = set(wanted)
        batch_tables, batch_live = [], {}
        for stored in snap.live.values():  # headers only; segments read for new commits alone
            commit = stored.commit
            owner = f"{commit.settings_hash}{OWNER_SEP}{commit.video_id}"
            if commit.status != "indexed" or (owner, str(commit.committed_at)) not in wanted_set:
                continue
            segments = snap.live_segments(stored)
            if segments is None:
                continue  # damaged: skipped and warned about once
            batch_tables.append(segments)
            batch_live[owner] = str(commit.committed_at)
        units, vectors = _units_of(batch_tables, embedder.embed, label, dim)
        parts.append(_write_part(root, units, vectors, {"live": batch_live}))
        added += 1
        units_added += units.num_rows
    kept, dropped = [], []
    hidden = {f"{h}{OWNER_SEP}{v}": tasks for (h, v), tasks in snap.hidden_tasks().items()}
    for part in parts:
        owned = _owned(part, snap_current)
        if not owned:
            dropped.append(part)
            continue
        owners = pq.read_table(os.path.join(root, "parts", part["name"], "units.parquet"), columns=["owner", "task"])
        owner_list = owners.column("owner").to_pylist()
        mask = ~np.isin(np.asarray(owner_list, dtype=object), list(owned))
        if hidden:  # tasks a newer settings' commit of the video holds (index.read rule 4)
            mask |= np.array([task in hidden.get(owner, ()) for owner, task in
                              zip(owner_list, owners.column("task").to_pylist(), strict=True)], dtype=bool)
        part = {**part, "dead": None, "dead_rows": int(mask.sum())}
        if mask.any():
            dead_name = f"dead-{state}.npy"
            np.save(os.path.join(root, "parts", part["name"], dead_name), np.flatnonzero(mask).astype(np.int64))
            part["dead"] = dead_name
        kept.append(part)
    _write_manifest(root, {"version": STORE_VERSION, "model": label, "dim": dim, "state": state, "parts": kept,
                           "location": location, "copies": _copies(snap),
                           "damage": [d.to_json() for d in snap.damage]})
    for part in dropped:
        shutil.rmtree(os.path.join(root, "parts", part["name"]), ignore_errors=True)
    _remove_orphans(root, {p["name"] for p in kept}, state)
    _ensure_ivf(root, {"dim": dim, "parts": kept})
    return SyncReport(root, len(kept), added, len(dropped), units_added, _current_units(kept),
                      time.perf_counter() - started)


def _copies(snap: IndexSnapshot) -> dict[str, str]:
    """Identical copies (``index.read`` rule 8): copy uri -> the content id whose units answer for it."""
    return {uri: video_id for uri, (video_id, _) in snap.copies().items()}


def _generation_cover(part: dict) -> tuple[str, tuple[str, ...] | None]:
    """What a generation's part was built from: the generation, and the files read where some were damaged."""
    return part["generation"], tuple(part["files"]) if "files" in part else None


def _generation_key(generation: Generation, snap: IndexSnapshot) -> tuple[str, tuple[str, ...] | None]:
    """The cover a part of ``generation`` would have now (its damaged files as ``snap`` knows them)."""
    damaged = {d.path for d in snap.damage if d.source == generation.name}
    files = generation.files_of("segments")
    if not damaged & set(files):
        return generation.name, None
    return generation.name, tuple(p.rsplit("/", 1)[-1] for p in files if p not in damaged)


def _write_units_arrow(folder: str, units: pa.Table) -> None:
    """The units again as one uncompressed Arrow IPC batch: memory-mapped, a hit's row is read in
    microseconds (a Parquet row group must be decoded whole: 8192 rows per hit)."""
    tmp = os.path.join(folder, f"{UNITS_ARROW}.tmp")
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, units.schema) as writer:
        writer.write_table(units.combine_chunks(), max_chunksize=max(units.num_rows, 1))
    os.replace(tmp, os.path.join(folder, UNITS_ARROW))


def _ensure_ivf(root: str, manifest: dict) -> None:
    """Give every part its memory-mapped units and, from ``ivf.MIN_ROWS`` rows, its IVF index (parts
    synced before these existed too)."""
    for part in manifest["parts"]:
        folder = os.path.join(root, "parts", part["name"])
        if not os.path.exists(os.path.join(folder, UNITS_ARROW)):
            _write_units_arrow(folder, pq.read_table(os.path.join(folder, "units.parquet")))
        if part["rows"] >= ivf.MIN_ROWS and not ivf.exists(folder):
            started = time.perf_counter()
            ivf.build(folder, part["rows"], manifest["dim"] or EMBEDDING_DIM_DEFAULT)
            log.info("IVF index of %s (%d rows) built in %.1f s", folder, part["rows"], time.perf_counter() - started)


def _current_units(parts: list[dict]) -> int:
    return sum(p["rows"] - p.get("dead_rows", 0) for p in parts)


def _remove_orphans(root: str, names: set[str], state: str) -> None:
    """Delete part folders no manifest lists (a killed sync) and stale dead-row files."""
    parts_dir = os.path.join(root, "parts")
    for name in os.listdir(parts_dir):
        folder = os.path.join(parts_dir, name)
        if name not in names:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        for file in os.listdir(folder):
            if file.startswith("dead-") and file != f"dead-{state}.npy":
                os.remove(os.path.join(folder, file))


def _units_of(tables: list[pa.Table], embed, label: str, dim: int) -> tuple[pa.Table, np.ndarray]:
    units, vectors = [], []
    for table in tables:
        # Older files may lack columns: conform them, keeping the metadata that names the embedding model.
        table = conform_segments(table).replace_schema_metadata(table.schema.metadata)
        u, v = segments_to_units(table, embed, label, dim)
        units.append(u)
        vectors.append(v)
    if not units:
        return UNITS_SCHEMA.empty_table(), np.zeros((0, dim), np.float32)
    return pa.concat_tables(units), np.concatenate(vectors)


@dataclass
class Part:
    """One opened part: its units file, memory-mapped embeddings and text index, and dead rows."""

    name: str
    folder: str
    rows: int
    terms: int
    dim: int
    dead: np.ndarray | None
    _text: TextIndex | None = field(default=None, repr=False)
    _units: pq.ParquetFile | None = field(default=None, repr=False)
    _ivf: ivf.IvfIndex | None = field(default=None, repr=False)
    _mapped: pa.Table | None = field(default=None, repr=False)
    _fds: dict = field(default_factory=dict, repr=False)
    _scales: np.ndarray | None = field(default=None, repr=False)

    def __del__(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
    _filter_columns: dict = field(default_factory=dict, repr=False)

    @property
    def text(self) -> TextIndex:
        """The part's inverted index (opened on first use)."""
        if self._text is None:
            self._text = TextIndex.open(self.folder)
        return self._text

    @property
    def units(self) -> pq.ParquetFile:
        """The part's units file (opened on first use)."""
        if self._units is None:
            self._units = pq.ParquetFile(os.path.join(self.folder, "units.parquet"))
        return self._units

    @property
    def ivf(self) -> ivf.IvfIndex | None:
        """The part's IVF index (``search.ivf``), or None for a part scanned whole."""
        if self._ivf is None and self.rows >= ivf.MIN_ROWS and ivf.exists(self.folder):
            self._ivf = ivf.IvfIndex.open(self.folder, self.rows, self.dim)
        return self._ivf

    def filter_column(self, name: str) -> tuple[list, np.ndarray] | np.ndarray:
        """A column the filters read, kept after its first read: ``uri``/``task``/``video_id`` as (distinct values,
        each row's index into them), ``start_s``/``end_s`` as numbers."""
        if name not in self._filter_columns:
            column = self.units.read(columns=[name]).column(name)
            if name in ("uri", "task", "video_id"):
                encoded = column.dictionary_encode().combine_chunks()
                self._filter_columns[name] = (encoded.dictionary.to_pylist(),
                                              encoded.indices.to_numpy(zero_copy_only=False))
            else:
                self._filter_columns[name] = column.to_numpy()
        return self._filter_columns[name]

    def _read_rows(self, name: str, dtype: type, rows: np.ndarray) -> np.ndarray:
        """Some rows of a row-major vector file, read with ``pread`` (not memory-mapped).

        Why: on this kernel a mapped file's pages come in large folios, so a thousand scattered
        rows of a mapping put hundreds of MB into the process's resident set; reads leave them
        in the page cache only. ``rows`` need not be sorted; repeats are fine.
        """
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(os.path.join(self.folder, name), os.O_RDONLY)
        width = self.dim * np.dtype(dtype).itemsize
        out = bytearray(len(rows) * width)
        view = memoryview(out)
        for i, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            view[i * width:(i + 1) * width] = os.pread(fd, width, row * width)
        return np.frombuffer(out, dtype=dtype).reshape(len(rows), self.dim)

    def approximate_cosine_at(self, qvec: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The int8 cosine of some rows with ``qvec``."""
        if self._scales is None:
            self._scales = np.fromfile(os.path.join(self.folder, "scales.f32"), dtype=np.float32)
        matrix = self._read_rows("embeddings.i8", np.int8, rows)
        return (matrix.astype(np.float32) @ qvec.astype(np.float32)) * self._scales[rows]

    def live_mask(self) -> np.ndarray | None:
        """False for rows no longer current; None when every row is."""
        if self.dead is None or not len(self.dead):
            return None
        mask = np.ones(self.rows, dtype=bool)
        mask[self.dead] = False
        return mask

    def approximate_cosine(self, qvec: np.ndarray, chunk_rows: int = 65536) -> np.ndarray:
        """Every unit's cosine with ``qvec`` from the int8 copy (within about 0.005), read in chunks.

        Chunks are read into one reused buffer, not memory-mapped, so the matrix never counts
        towards the process's resident memory; ``exact_cosine`` re-scores the candidates.
        """
        out = np.empty(self.rows, dtype=np.float32)
        buffer = np.empty(chunk_rows * self.dim, dtype=np.int8)
        q = qvec.astype(np.float32)
        with open(os.path.join(self.folder, "embeddings.i8"), "rb", buffering=0) as f:
            for start in range(0, self.rows, chunk_rows):
                count = min(chunk_rows, self.rows - start)
                view = buffer[: count * self.dim]
                f.readinto(memoryview(view).cast("B"))
                out[start:start + count] = view.reshape(count, self.dim).astype(np.float32) @ q
        out *= np.fromfile(os.path.join(self.folder, "scales.f32"), dtype=np.float32)
        return out

    def exact_cosine(self, qvec: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The cosine of some units with ``qvec`` from their float16 embeddings."""
        return self.vectors(rows) @ qvec.astype(np.float32)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The float16 embeddings of some rows, as float32."""
        return self._read_rows("embeddings.f16", np.float16, rows).astype(np.float32)

    def read_units(self, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """The unit rows ``rows`` (sorted or not): from the memory-mapped Arrow copy, or else reading
        only the Parquet row groups that hold them."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return UNITS_SCHEMA.empty_table().select(columns or UNITS_SCHEMA.names)
        if self._mapped is None and os.path.exists(os.path.join(self.folder, UNITS_ARROW)):
            self._mapped = pa.ipc.open_file(pa.memory_map(os.path.join(self.folder, UNITS_ARROW))).read_all()
        if self._mapped is not None:
            table = self._mapped if columns is None else self._mapped.select(columns)
            return table.take(pa.array(rows))
        groups = np.unique(rows // ROW_GROUP)
        table = self.units.read_row_groups([int(g) for g in groups], columns=columns)
        starts = {int(g): i * ROW_GROUP for i, g in enumerate(groups)}
        # Row groups are full except the last, so a row's place in the read table is direct.
        local = np.array([starts[int(r // ROW_GROUP)] + int(r % ROW_GROUP) for r in rows], dtype=np.int64)
        return table.take(pa.array(local))

    def columns(self, names: list[str]) -> pa.Table:
        """Whole columns of the part (for filters)."""
        return self.units.read(columns=names)


@dataclass
class Store:
    """An opened derived search index: its parts and the model its embeddings come from."""

    root: str
    model: str | None
    dim: int
    parts: list[Part]
    # Identical copies: copy uri -> content id (its units carry the first copy's uri).
    copies: dict[str, str] = field(default_factory=dict)

    @property
    def num_units(self) -> int:
        """Units searched (current ones)."""
        return sum(p.rows - (0 if p.dead is None else len(p.dead)) for p in self.parts)


def open_store(location: str, model: str | None = None, sync_first: bool = True,
               settings: str | None = None) -> Store:
    """Open the derived search index of ``location``, syncing it first if the index changed.

    ``settings`` opens the one of that settings hash's rows alone. Raises ``FileNotFoundError``
    when there is no index at ``location``.
    """
    if not storage.exists(location):
        raise FileNotFoundError(f"no index at {location}")
    root = store_root(location, settings)
    if sync_first:
        try:
            with_snapshot_retries(lambda: sync(location, model, settings=settings))
        except OSError as exc:
            if not os.path.exists(os.path.join(root, MANIFEST)):
                raise StoreError(f"cannot build the search index in {root} ({exc}); make it writable, or run "
                                 "'plm-index search --index INDEX --rebuild' where it is") from exc
            log.warning("search index %s could not be brought up to date (%s); searching it as it is", root, exc)
    manifest = _read_manifest(root)
    parts = []
    for part in manifest["parts"]:
        folder = os.path.join(root, "parts", part["name"])
        dead = np.load(os.path.join(folder, part["dead"])) if part.get("dead") else None
        parts.append(Part(part["name"], folder, part["rows"], part["terms"], manifest["dim"] or EMBEDDING_DIM_DEFAULT,
                          dead))
    return Store(root, manifest["model"], manifest["dim"] or EMBEDDING_DIM_DEFAULT, parts,
                 dict(manifest.get("copies") or {}))


def sync_after_build(location: str, model: str | None = None) -> SyncReport | None:
    """The build's last step: bring the search index up to date, or say why not without failing the build.

    The Parquet index is complete either way; a search syncs again when it opens the index.
    """
    try:
        report = sync(location, model)
    except Exception as exc:  # noqa: BLE001 - the build's own work is committed; search catches up later
        log.warning("the search index of %s was not updated (%s: %s); the next search or "
                    "'plm-index search --index %s --rebuild' will do it", location, type(exc).__name__, exc, location)
        return None
    log.info("%s", report.line())
    return report
