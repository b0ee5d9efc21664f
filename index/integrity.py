"""Checksums of committed files, and the damage a reader or ``plm-index verify`` finds in them.

An archive index is written once and read for months, often copied between buckets, so every
committed file carries a record of its size and checksum (CRC32C, GCS's own encoding, plus MD5,
which S3 keeps as the ETag of a single-part upload) in the record that makes it visible:

- a compacted generation's files: in its manifest ``_generation.json`` (key ``checksums``),
  written last, so the record exists exactly when the files are visible;
- a live per-video commit, which IS its own record: a checksum of its data (every byte before
  the Parquet footer) in the footer's key-value metadata (``plm_index.commit.data``). One object
  stays one atomic write; the footer itself is checked by parsing it (magic bytes, Thrift,
  the header's JSON, and the key and settings the path names).

Files written before checksums have no record: they are "unverified" (checked by reading them),
never "damaged" for that reason alone. Damage is reported as :class:`Damage` (what, where, which
videos' rows it held); readers skip a damaged file and warn once (:func:`warn_damaged`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import struct
import threading
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

CHECKSUM_KEY = b"plm_index.commit.data"
CHECKSUMS = "checksums"
PARQUET_MAGIC = b"PAR1"

# What each kind of file must hold for its rows to be attributed to videos (older files may lack
# other columns; readers fill those with nulls).
REQUIRED_COLUMNS: dict[str, frozenset[str]] = {
    "commits": frozenset({"key", "settings_hash", "status", "committed_at"}),
    "videos": frozenset({"video_id", "settings_hash"}),
    "errors": frozenset({"key", "settings_hash"}),
    "segments": frozenset({"video_id", "settings_hash"}),
}


def crc32c(data: bytes) -> str:
    """CRC32C of ``data`` as base64 of its four big-endian bytes (how GCS reports an object's crc32c)."""
    import google_crc32c

    return base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode()


def file_record(data: bytes) -> dict[str, Any]:
    """The size and checksums recorded for a committed file's bytes."""
    return {"size": len(data), "crc32c": crc32c(data), "md5": hashlib.md5(data, usedforsecurity=False).hexdigest()}


class DamagedFileError(ValueError):
    """A committed file is missing, truncated, corrupt, not Parquet or of the wrong schema."""

    def __init__(self, path: str, problem: str, detail: str) -> None:
        super().__init__(f"{path}: {problem}: {detail}")
        self.path = path
        self.problem = problem
        self.detail = detail


def repair_command(location: str) -> str:
    """The command that retires the damaged files of ``location``."""
    return f"plm-index verify --index {location} --repair"


@dataclass(frozen=True)
class HeldVideo:
    """A video whose rows a damaged file held: its settings hash, commit key and (when known) uri."""

    settings_hash: str
    key: str
    uri: str | None = None

    def name(self) -> str:
        """How a report names it."""
        return self.uri or f"{self.settings_hash}/{self.key}"


@dataclass(frozen=True)
class Damage:
    """One damaged committed file: where, what is wrong, and the videos whose rows it held.

    ``source`` is a generation's name or ``live``; ``table`` is ``commits``, ``videos``,
    ``errors``, ``segments``, ``manifest`` (a generation's ``_generation.json``) or ``commit``
    (a live per-video commit). ``videos_known`` is False where the file that would say (a
    generation's commits table) is itself unreadable.
    """

    path: str
    problem: str
    detail: str
    source: str
    table: str
    videos: tuple[HeldVideo, ...] = ()
    videos_known: bool = True

    def held(self) -> str:
        """How many videos it held, in words."""
        count = f"{len(self.videos)} video(s)" if self.videos_known else "an unknown number of videos"
        return count

    def line(self) -> str:
        """One line for a person."""
        what = "live commit" if self.source == "live" else f"{self.table} of generation {self.source}"
        return f"{self.path} ({what}): {self.problem}: {self.detail}; held {self.held()}"

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form."""
        data = asdict(self)
        data["videos"] = [asdict(v) for v in self.videos]
        return data


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_damaged(location: str, damage: Damage) -> None:
    """Log, once per process and file, that a reader skipped ``damage`` and how to repair it."""
    with _warned_lock:
        if (damage.path, damage.problem) in _warned:
            return
        _warned.add((damage.path, damage.problem))
    log.warning("skipping damaged file %s (%s: %s); it held %s, answering from the rest; "
                "run '%s' to retire it, then rerun the build to redo them", damage.path, damage.problem,
                damage.detail, damage.held(), repair_command(location))


def footer_length(data: bytes) -> int:
    """The Parquet footer's length; ``DamagedFileError``-ready ``ValueError`` where the file has none."""
    if len(data) < 12 or data[:4] != PARQUET_MAGIC or data[-4:] != PARQUET_MAGIC:
        raise ValueError("no Parquet magic bytes at both ends")
    length = struct.unpack("<I", data[-8:-4])[0]
    if length + 12 > len(data):
        raise ValueError(f"footer length {length} exceeds the file's {len(data)} bytes")
    return length


def shape_problem(data: bytes) -> tuple[str, str] | None:
    """Why ``data`` cannot be a whole Parquet file (problem, detail), or None when its frame is sound."""
    if not data:
        return "truncated", "empty file"
    if data[:4] != PARQUET_MAGIC:
        return "not-parquet", "does not start with Parquet's magic bytes"
    try:
        footer_length(data)
    except ValueError as exc:
        return "truncated", f"{exc} (cut off, e.g. a half-copied object)"
    return None


def check_against_record(path: str, size: int, record: dict[str, Any], checksum: str | None = None,
                         md5: str | None = None) -> None:
    """Raise ``DamagedFileError`` where a file's size or checksum differs from its record.

    ``checksum``/``md5`` may be None (not known without reading); only what is known is compared.
    """
    expected = int(record["size"])
    if size < expected:
        raise DamagedFileError(path, "truncated", f"{size} of the recorded {expected} bytes")
    if size != expected:
        raise DamagedFileError(path, "corrupt", f"{size} bytes, not the recorded {expected} "
                               "(overwritten, or swapped in from another index)")
    if checksum is not None and record.get("crc32c") and checksum != record["crc32c"]:
        raise DamagedFileError(path, "corrupt", f"crc32c {checksum} differs from the recorded {record['crc32c']} "
                               "(overwritten, or swapped in from another index)")
    if md5 is not None and record.get("md5") and md5 != record["md5"]:
        raise DamagedFileError(path, "corrupt", f"md5 {md5} differs from the recorded {record['md5']} "
                               "(overwritten, or swapped in from another index)")


def check_parquet(path: str, data: bytes, table: str, record: dict[str, Any] | None) -> Any:
    """Check a generation file's bytes (against ``record`` when there is one) and return its table.

    Raises ``DamagedFileError`` naming the problem: truncated, corrupt (size or checksum),
    not-parquet, or schema-mismatch (columns the ``table`` needs are missing).
    """
    import pyarrow.parquet as pq

    shape = shape_problem(data)
    if record is not None:
        try:
            check_against_record(path, len(data), record, crc32c(data))
        except DamagedFileError as exc:
            if shape is not None and shape[0] == "truncated":
                raise DamagedFileError(path, "truncated", exc.detail) from None
            raise DamagedFileError(path, "corrupt", exc.detail) from None  # whole, but not what was written
    if shape is not None:
        raise DamagedFileError(path, *shape)
    try:
        parsed = pq.read_table(io.BytesIO(data))
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError
        raise DamagedFileError(path, "corrupt", f"unreadable as Parquet: {str(exc)[:300]}") from None
    missing = REQUIRED_COLUMNS.get(table, frozenset()) - set(parsed.column_names)
    if missing:
        raise DamagedFileError(path, "schema-mismatch", f"a {table} file without the columns {sorted(missing)}")
    return parsed
