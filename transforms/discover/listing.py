"""List the videos a build should index."""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
from dataclasses import dataclass

import pyarrow.parquet as pq
from pydantic import ValidationError

from core import storage
from schemas.manifest import ManifestError, ManifestRow
from schemas.records import VideoInput

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv",
                  ".wmv", ".3gp", ".ogv")
MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class Discovery:
    """The videos found, and the files passed over because they are not videos."""

    videos: tuple[VideoInput, ...]
    skipped: tuple[str, ...]


def _is_video(uri: str) -> bool:
    return uri.lower().endswith(VIDEO_SUFFIXES)


def _local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _resolve(base_uri: str, uri: str) -> str:
    """Resolve a manifest entry relative to the manifest's folder."""
    if storage.is_remote(uri) or uri.startswith(("/", "file://")):
        return uri
    base_uri = _local_path(base_uri)
    if storage.is_remote(base_uri):
        return posixpath.join(posixpath.dirname(base_uri), uri)
    import os

    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base_uri)), uri))


def _csv_row(row: dict[str, str]) -> dict:
    """A CSV row with empty cells dropped and JSON cells (questions, regions, tasks) decoded."""
    out: dict = {}
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


def _manifest_records(uri: str) -> list[tuple[int, dict]]:
    data = storage.read_bytes(uri)
    lower = uri.lower()
    if lower.endswith(".jsonl"):
        records = []
        # split("\n"), not splitlines(): U+2028 and friends may appear inside JSON strings.
        for number, line in enumerate(data.decode("utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                records.append((number, {"__error__": f"not valid JSON: {exc.msg}"}))
        return records
    if lower.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        rows = []
        start = 2  # line 1 is the header; a quoted field may span lines, so count lines, not rows
        for row in reader:
            rows.append((start, _csv_row(row)))
            start = reader.line_num + 1
        return rows
    table = pq.read_table(io.BytesIO(data))
    return [(number, row) for number, row in enumerate(table.to_pylist(), start=1)]


def load_manifest(uri: str) -> list[VideoInput]:
    """Validate every row of a manifest; raise ``ManifestError`` naming each bad line."""
    problems: list[str] = []
    videos: list[VideoInput] = []
    for number, record in _manifest_records(uri):
        if not isinstance(record, dict) or "__error__" in record:
            reason = record.get("__error__") if isinstance(record, dict) else "row is not an object"
            problems.append(f"line {number}: {reason}")
            continue
        try:
            row = ManifestRow.model_validate(record)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors()
            )
            problems.append(f"line {number}: {details}")
            continue
        videos.append(VideoInput(uri=_resolve(uri, row.uri), extras_json=json.dumps(row.extras(), sort_keys=True)))
    if problems:
        raise ManifestError(f"manifest {uri} has {len(problems)} invalid row(s):\n  " + "\n  ".join(problems))
    return videos


def discover_videos(source: str) -> Discovery:
    """Expand ``source`` into the videos to index.

    A manifest (``.jsonl``/``.csv``/``.parquet``) lists videos explicitly; a folder or prefix is
    listed recursively; anything with ``*``, ``?`` or ``[`` is a glob. Files that are not videos
    by extension are passed over and reported as skipped.
    """
    if source.lower().endswith(MANIFEST_SUFFIXES):
        return Discovery(videos=tuple(load_manifest(source)), skipped=())
    if any(ch in source for ch in "*?["):
        found = storage.glob(source)
    elif storage.is_dir(source):
        found = storage.list_files(source)
    elif storage.exists(source):
        found = [source]
    else:
        raise FileNotFoundError(f"input {source} does not exist: give a folder, a glob, a gs:// prefix or a manifest")
    videos = tuple(VideoInput(uri=u) for u in found if _is_video(u))
    skipped = tuple(u for u in found if not _is_video(u))
    for uri in skipped:
        log.info("skipping %s: not a video file extension", uri)
    # The same file listed twice (a glob overlapping a manifest, say) is indexed once.
    seen: dict[str, VideoInput] = {}
    for video in videos:
        seen.setdefault(video.uri, video)
    return Discovery(videos=tuple(seen.values()), skipped=skipped)
