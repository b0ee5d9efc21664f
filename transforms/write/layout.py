"""Index layout on disk or object storage.

    OUTPUT/runs/<run_id>/<table>-<shard>.parquet
    OUTPUT/runs/<run_id>/_SUCCESS      JSON: run id, settings hash, files, accounting

A run's files count only once its ``_SUCCESS`` marker exists, and only the files the marker
lists: a reader never sees half a run, and stray shards (from a killed attempt) never mix in.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import storage
from schemas.tables import EMBEDDING_DIM, TABLES, segments_schema

RUNS = "runs"
SUCCESS_MARKER = "_SUCCESS"


def run_folder(output: str, run_id: str) -> str:
    """The folder that holds one run's files."""
    return storage.join(output, RUNS, run_id)


def write_success(output: str, run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Write the ``_SUCCESS`` marker last, listing the shards each table's listing names.

    Shards on disk that no listing names (left by a retried bundle) are not part of the run.
    """
    folder = run_folder(output, run_id)
    files: list[str] = []
    for table in TABLES:
        listing = storage.join(folder, f"_files-{table}.json")
        if storage.exists(listing):
            files.extend(json.loads(storage.read_bytes(listing)))
    marker = {"run_id": run_id, "files": files, **summary}
    storage.write_bytes(storage.join(folder, SUCCESS_MARKER), json.dumps(marker, indent=1, sort_keys=True).encode())
    return marker


def complete_runs(output: str) -> list[dict[str, Any]]:
    """The ``_SUCCESS`` markers of every complete run under ``output``, oldest first."""
    pattern = storage.join(output, RUNS, "*", SUCCESS_MARKER)
    markers = []
    for uri in storage.glob(pattern):
        marker = json.loads(storage.read_bytes(uri))
        marker["folder"] = uri.rsplit("/", 1)[0]
        markers.append(marker)
    return sorted(markers, key=lambda m: (m.get("finished_at", ""), m["run_id"]))


def _conform(part: pa.Table, table: str, schema: pa.Schema) -> pa.Table:
    """A file's table in the table's schema; columns the file lacks (older runs) become nulls."""
    target = schema
    if table == "segments" and "embedding" in part.column_names:
        found = part.schema.field("embedding").type
        target = segments_schema(getattr(found, "list_size", EMBEDDING_DIM))
    columns = [part.column(f.name).cast(f.type) if f.name in part.column_names
               else pa.nulls(part.num_rows, f.type) for f in target]
    return pa.Table.from_arrays(columns, schema=target.remove_metadata())


def read_index_table(output: str, table: str, runs: list[dict[str, Any]] | None = None) -> pa.Table:
    """One table concatenated over the complete runs, in the table's schema."""
    schema = TABLES[table]
    parts = []
    for marker in complete_runs(output) if runs is None else runs:
        for name in marker["files"]:
            if name.startswith(f"{table}-"):
                data = storage.read_bytes(storage.join(marker["folder"], name))
                parts.append(_conform(pq.read_table(io.BytesIO(data)), table, schema))
    if not parts:
        return schema.empty_table()
    if len({part.schema for part in parts}) > 1:
        # Runs with embedding models of different sizes: embeddings become variable-length lists.
        loose = schema.set(schema.get_field_index("embedding"), pa.field("embedding", pa.list_(pa.float32())))
        parts = [part.cast(loose) for part in parts]
    return pa.concat_tables(parts)


def indexed_video_ids(output: str, settings_hash: str) -> frozenset[str]:
    """Content ids of the videos that complete runs indexed with ``settings_hash``."""
    if not storage.exists(output):
        return frozenset()
    videos = read_index_table(output, "videos")
    mask = pc.equal(videos.column("settings_hash"), settings_hash)
    return frozenset(videos.filter(mask).column("video_id").to_pylist())


def read_current(output: str, table: str) -> pa.Table:
    """A table as the index stands now, each row once, over every complete run.

    A video indexed by several runs with the same settings (a ``--force`` rerun, say) counts
    with its newest run's rows only; an error counts only if no later run indexed that video.
    """
    runs = complete_runs(output)
    order = {marker["run_id"]: position for position, marker in enumerate(runs)}
    videos = read_index_table(output, "videos", runs).to_pylist()
    newest: dict[tuple[str, str], int] = {}
    indexed_at: dict[str, int] = {}
    for row in videos:
        key = (row["video_id"], row["settings_hash"])
        newest[key] = max(newest.get(key, -1), order[row["run_id"]])
        indexed_at[row["uri"]] = max(indexed_at.get(row["uri"], -1), order[row["run_id"]])
    rows = read_index_table(output, table, runs)
    if table == "errors":
        errors = rows.to_pylist()
        latest_error: dict[str, int] = {}
        for row in errors:
            latest_error[row["uri"]] = max(latest_error.get(row["uri"], -1), order[row["run_id"]])
        keep = [order[r["run_id"]] == latest_error[r["uri"]] > indexed_at.get(r["uri"], -1) for r in errors]
    else:
        keep = [order[run_id] == newest.get((video_id, settings), -2)
                for run_id, video_id, settings in zip(rows.column("run_id").to_pylist(),
                                                      rows.column("video_id").to_pylist(),
                                                      rows.column("settings_hash").to_pylist(), strict=True)]
    return rows.filter(pa.array(keep, type=pa.bool_())) if rows.num_rows else rows
