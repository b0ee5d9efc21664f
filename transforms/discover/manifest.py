"""Manifests (JSONL, CSV, Parquet) read row by row, in pieces that workers can read in parallel.

Nothing here holds a whole manifest: a JSONL manifest is cut into byte ranges (each range owns
the lines that *start* in it, as Hadoop-style text splits do), a Parquet manifest into its row
groups, and a CSV manifest (whose quoted fields may span lines) is one piece read as a stream.
Every row is validated on its own: a bad row becomes an error naming where it is, never a failed
job. ``load_manifest`` reads the head of a manifest up front so a wrongly built file is refused
at once with its line numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow.parquet as pq
from pydantic import ValidationError

from core import storage
from core.paths import local_path
from schemas.manifest import ManifestError, ManifestRow
from schemas.records import VideoInput
from tasks import check_task_names

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")
# JSONL pieces: about 1,024 per manifest, each between 256 B and 8 MiB.
TARGET_PIECES = 1024
MIN_PIECE_BYTES = 256
MAX_PIECE_BYTES = 8 * 1024 * 1024
HEAD_ROWS = 1000


@dataclass(frozen=True)
class ManifestPiece:
    """A part of a manifest one worker reads: a byte range (JSONL), a row group (Parquet) or all of it (CSV)."""

    uri: str
    start: int = 0
    end: int | None = None
    row_group: int | None = None
    first_row: int = 1


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest row: where it is (``line N``, ``byte N``, ``row N``) and its record, or why it is bad."""

    where: str
    record: dict[str, Any] | None
    problem: str | None = None


def is_manifest(source: str) -> bool:
    """Whether ``source`` names a manifest file (by suffix)."""
    return source.lower().endswith(MANIFEST_SUFFIXES)


def _local_path(uri: str) -> str:
    return local_path(uri)


def resolve(manifest_uri: str, uri: str) -> str:
    """A manifest entry's uri, relative paths resolved against the manifest's folder."""
    if storage.is_remote(uri) or uri.startswith(("/", "file://")):
        return uri
    base = _local_path(manifest_uri)
    if storage.is_remote(base):
        return posixpath.join(posixpath.dirname(base), uri)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), uri))


def _open(uri: str) -> IO[bytes]:
    handle = storage.open_read(uri)
    return handle if not storage.is_remote(uri) else io.BufferedReader(handle, buffer_size=1 << 20)


def plan_pieces(uri: str) -> list[ManifestPiece]:
    """The pieces of a manifest, without reading its rows."""
    lower = uri.lower()
    if lower.endswith(".parquet"):
        with storage.open_read(uri) as handle:
            metadata = pq.ParquetFile(handle).metadata
        pieces, first = [], 1
        for group in range(metadata.num_row_groups):
            pieces.append(ManifestPiece(uri, row_group=group, first_row=first))
            first += metadata.row_group(group).num_rows
        return pieces
    if lower.endswith(".csv"):
        return [ManifestPiece(uri)]
    size = storage.size_of(uri)
    step = min(MAX_PIECE_BYTES, max(MIN_PIECE_BYTES, math.ceil(size / TARGET_PIECES)))
    return [ManifestPiece(uri, start, min(size, start + step)) for start in range(0, max(size, 1), step)]


def _json_entry(where: str, line: bytes) -> ManifestEntry | None:
    text = line.decode("utf-8", errors="replace").rstrip("\r\n").removeprefix("\ufeff")  # a BOM on line 1
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return ManifestEntry(where, None, f"not valid JSON: {exc.msg}")
    if not isinstance(record, dict):
        return ManifestEntry(where, None, "row is not an object")
    return ManifestEntry(where, record)


def _jsonl_lines(handle: IO[bytes], start: int, end: int | None) -> Iterator[tuple[int, bytes]]:
    """The lines that start in [start, end), with their byte offsets."""
    if start > 0:
        handle.seek(start - 1)
        if handle.read(1) != b"\n":
            handle.readline()  # the line under way belongs to the previous piece
    else:
        handle.seek(0)
    while True:
        offset = handle.tell()
        if end is not None and offset >= end:
            return
        line = handle.readline()
        if not line:
            return
        yield offset, line


def _csv_row(row: dict[str, str | None]) -> dict[str, Any]:
    """A CSV row with empty cells dropped and JSON cells (questions, regions, tasks) decoded."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key is None or value is None or value == "":
            continue
        text = value.strip()
        if key in ("questions", "regions", "tasks") and text[:1] in "[{":
            try:
                out[key] = json.loads(text)
                continue
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


def read_piece(piece: ManifestPiece, numbered_lines: bool = False) -> Iterator[ManifestEntry]:
    """The rows of one piece. JSONL rows are placed by byte offset (or line number when read from the start)."""
    lower = piece.uri.lower()
    if lower.endswith(".parquet"):
        with storage.open_read(piece.uri) as handle:
            table = pq.ParquetFile(handle).read_row_group(piece.row_group or 0)
        for number, record in enumerate(table.to_pylist(), start=piece.first_row):
            yield ManifestEntry(f"row {number}", record)
        return
    with _open(piece.uri) as handle:
        if lower.endswith(".csv"):
            reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline=""))  # a BOM is not a header
            line = 2  # line 1 is the header; a quoted field may span lines, so count lines, not rows
            for row in reader:
                yield ManifestEntry(f"line {line}", _csv_row(row))
                line = reader.line_num + 1
            return
        for number, (offset, raw) in enumerate(_jsonl_lines(handle, piece.start, piece.end), start=1):
            entry = _json_entry(f"line {number}" if numbered_lines and piece.start == 0 else f"byte {offset}", raw)
            if entry is not None:
                yield entry


def validate(manifest_uri: str, entry: ManifestEntry) -> VideoInput | str:
    """The row as a ``VideoInput``, or the reason it is bad (naming where it is)."""
    if entry.problem is not None:
        return f"{entry.where}: {entry.problem}"
    try:
        row = ManifestRow.model_validate(entry.record)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors())
        return f"{entry.where}: {details}"
    try:
        check_task_names(row.tasks or ())
    except ValueError as exc:
        return f"{entry.where}: tasks: {exc}"
    return VideoInput(uri=resolve(manifest_uri, row.uri), extras_json=json.dumps(row.extras(), sort_keys=True))


def load_manifest(uri: str, limit: int | None = None) -> list[VideoInput]:
    """Validate a manifest's rows (the first ``limit`` of them); raise ``ManifestError`` naming each bad line."""
    if not storage.exists(uri):
        raise FileNotFoundError(f"manifest {uri} does not exist")
    problems: list[str] = []
    videos: list[VideoInput] = []
    whole = ManifestPiece(uri) if not uri.lower().endswith(".parquet") else None
    pieces = [whole] if whole is not None else plan_pieces(uri)
    entries = (entry for piece in pieces for entry in read_piece(piece, numbered_lines=True))
    for seen, entry in enumerate(entries):
        if limit is not None and seen >= limit:
            break
        checked = validate(uri, entry)
        if isinstance(checked, str):
            problems.append(checked.replace("row ", "line ", 1) if checked.startswith("row ") else checked)
        else:
            videos.append(checked)
    if problems:
        raise ManifestError(f"manifest {uri} has {len(problems)} invalid row(s):\n  " + "\n  ".join(problems))
    return videos
