"""Write rows as Parquet shards with an explicit schema."""

from __future__ import annotations

import io
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from core import storage
from schemas.tables import TABLES
from transforms.write.layout import run_folder

log = logging.getLogger(__name__)


def table_listing_name(table: str) -> str:
    """The file naming the shards of ``table`` that committed bundles wrote."""
    return f"_files-{table}.json"


class _WriteShards(beam.DoFn):
    """Buffers a bundle's rows and writes them as one Parquet shard when the bundle ends.

    The shard's name is yielded from ``finish_bundle``. Beam keeps the outputs of committed
    bundles only, so the names that reach the listing are exactly the shards of committed work;
    a shard from a failed, retried bundle is never listed, and so never read.
    """

    def __init__(self, folder: str, table: str, max_rows: int, schema: pa.Schema | None = None) -> None:
        self._folder = folder
        self._table = table
        self._schema = schema if schema is not None else TABLES[table]
        self._max_rows = max_rows
        self._rows: list[dict[str, Any]] = []

    def start_bundle(self) -> None:
        self._rows = []

    def process(self, row: dict[str, Any]):
        self._rows.append(row)
        if len(self._rows) >= self._max_rows:
            yield self._flush()

    def finish_bundle(self):
        if self._rows:
            yield WindowedValue(self._flush(), GlobalWindow().max_timestamp(), [GlobalWindow()])

    def _flush(self) -> str:
        table = pa.Table.from_pylist(self._rows, schema=self._schema)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        name = f"{self._table}-{uuid.uuid4().hex[:12]}.parquet"
        storage.write_bytes(storage.join(self._folder, name), buffer.getvalue())
        log.info("wrote %d %s rows to %s", len(self._rows), self._table, name)
        self._rows = []
        return name


def _write_listing(names: list[str], folder: str, table: str) -> str:
    storage.write_bytes(storage.join(folder, table_listing_name(table)), json.dumps(sorted(names)).encode())
    return table


@dataclass
class WriteTable(beam.PTransform):
    """Write a PCollection of row dicts to ``OUTPUT/runs/<run_id>/<table>-*.parquet``."""

    output: str
    run_id: str
    table: str
    max_rows_per_shard: int = 50_000
    # Defaults to the table's schema in ``schemas.tables``; the segments table passes one with its
    # embedding dimension and the embedding model in the file metadata.
    schema: pa.Schema | None = None

    def __post_init__(self) -> None:
        beam.PTransform.__init__(self)

    def expand(self, rows):
        folder = run_folder(self.output, self.run_id)
        names = rows | "Shards" >> beam.ParDo(_WriteShards(folder, self.table, self.max_rows_per_shard, self.schema))
        return (names
                | "Collect" >> beam.combiners.ToList()
                | "Listing" >> beam.Map(_write_listing, folder, self.table))
