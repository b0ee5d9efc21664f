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
import pyarrow.parquet as pq

from schemas.tables import TABLES
from transforms import storage

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


def read_index_table(output: str, table: str, runs: list[dict[str, Any]] | None = None) -> pa.Table:
    """One table concatenated over the complete runs, in the table's schema."""
    schema = TABLES[table]
    parts = []
    for marker in complete_runs(output) if runs is None else runs:
        for name in marker["files"]:
            if name.startswith(f"{table}-"):
                data = storage.read_bytes(storage.join(marker["folder"], name))
                parts.append(pq.read_table(io.BytesIO(data), schema=schema))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)
