"""``plm-index import``: bring your own segments (earlier PLM captions, human annotations, subtitles).

Rows of ``uri``, ``start_s``, ``end_s``, ``text`` and optionally ``task`` (default ``imported``)
and ``events`` (a list of ``{start_s, end_s, text}``) are read from a JSONL or Parquet file,
checked (a bad row is reported with its line number and nothing is written), embedded with the
same model as built rows, de-duplicated, and committed through ``index.commit`` like built videos:
one commit per (uri, task) under the settings hash ``import-<task>``. A commit carries a hash of
its rows, so importing the same file again writes nothing, and importing a changed file replaces
that uri's imported rows of that task. The derived search index is then synced.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from core.text_embedding import DEFAULT_MODEL_ID, embedding_metadata, query_embedder
from index.commit import VideoCommit, write_commit
from index.layout import IndexLayout, ensure_format
from index.read import snapshot
from schemas.tables import segments_schema
from search.store import sync

DEFAULT_TASK = "imported"


class SegmentImportError(ValueError):
    """The file cannot be imported; the message lists every bad row by line number."""


@dataclass(frozen=True)
class ImportReport:
    """What an import did."""

    rows: int
    duplicates: int
    commits_written: int
    commits_unchanged: int

    def line(self) -> str:
        """A one-line summary for the CLI."""
        return (f"imported {self.rows} rows ({self.duplicates} duplicates dropped): {self.commits_written} "
                f"videos written, {self.commits_unchanged} unchanged")


def _number(row: dict, name: str) -> float:
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def check_row(row: Any) -> dict[str, Any]:
    """One input row, checked and normalised; raises ``ValueError`` saying what is wrong."""
    if not isinstance(row, dict):
        raise ValueError("a row must be an object with uri, start_s, end_s and text")
    uri = row.get("uri")
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("uri must be a non-empty string")
    start, end = _number(row, "start_s"), _number(row, "end_s")
    if end <= start:
        raise ValueError(f"end_s ({end}) must be after start_s ({start})")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    task = row.get("task") or DEFAULT_TASK
    if not isinstance(task, str):
        raise ValueError(f"task must be a string, not {task!r}")
    events = []
    for k, event in enumerate(row.get("events") or []):
        try:
            checked = check_row({"uri": uri, **event}) if isinstance(event, dict) else check_row(event)
        except ValueError as exc:
            raise ValueError(f"event {k + 1}: {exc}") from None
        events.append({"start_frame": None, "end_frame": None, "start_s": checked["start_s"],
                       "end_s": checked["end_s"], "text": checked["text"]})
    return {"uri": uri.strip(), "start_s": start, "end_s": end, "text": text.strip(), "task": task,
            "events": events}


def read_rows(path: str) -> list[dict[str, Any]]:
    """The checked rows of a JSONL or Parquet file; ``SegmentImportError`` lists every bad line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no file at {path}")
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        raw = pq.read_table(path).to_pylist()
        numbered = list(enumerate(raw, start=1))
        what = "row"
    else:
        numbered = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    numbered.append((number, exc))
        what = "line"
    rows, problems = [], []
    for number, row in numbered:
        try:
            if isinstance(row, Exception):
                raise ValueError(f"not JSON ({row.msg})")
            rows.append(check_row(row))
        except ValueError as exc:
            problems.append(f"{what} {number}: {exc}")
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise SegmentImportError(f"{path}: {len(problems)} bad rows, nothing imported ({shown}); each row needs uri, "
                           "start_s < end_s (seconds) and text, optionally task and events")
    if not rows:
        raise SegmentImportError(f"{path} holds no rows")
    return rows


def import_segments(index: str, path: str, model: str | None = None) -> ImportReport:
    """Import the segments of ``path`` into the index at ``index`` (see the module docstring)."""
    rows = read_rows(path)
    ensure_format(index)
    groups: dict[tuple[str, str], list[dict]] = {}
    seen: set[str] = set()
    duplicates = 0
    for row in rows:
        identity = json.dumps(row, sort_keys=True)
        if identity in seen:
            duplicates += 1
            continue
        seen.add(identity)
        groups.setdefault((row["uri"], row["task"]), []).append(row)
    current = snapshot(index).current("indexed")
    existing = {(s, k): r for s, k, r in zip(current.column("settings_hash").to_pylist(),
                                             current.column("key").to_pylist(),
                                             current.column("run_id").to_pylist(), strict=True)}
    embedder = query_embedder(model)
    schema = segments_schema(embedder.dim).with_metadata(
        embedding_metadata(DEFAULT_MODEL_ID if model is None else model, embedder.dim))
    layout = IndexLayout(index)
    written = unchanged = 0
    now = dt.datetime.now(dt.UTC)
    for (uri, task), group in groups.items():
        group.sort(key=lambda r: (r["start_s"], r["end_s"], r["text"]))
        digest = hashlib.sha256(json.dumps(group, sort_keys=True).encode()).hexdigest()[:20]
        run_id = f"import-{digest}"
        settings = f"import-{task}"
        video_id = "imp-" + hashlib.sha256(uri.encode()).hexdigest()[:20]
        if existing.get((settings, video_id)) == run_id:
            unchanged += 1
            continue
        vectors = embedder.embed([r["text"] for r in group]).astype(np.float32)
        table = pa.Table.from_pylist([{
            "video_id": video_id, "uri": uri, "clip_index": i, "start_s": r["start_s"], "end_s": r["end_s"],
            "task": task, "text": r["text"], "raw_output": r["text"], "events": r["events"],
            "model_id": "import", "settings_hash": settings, "run_id": run_id, "created_at": now,
            "embedding": vector.tolist()} for i, (r, vector) in enumerate(zip(group, vectors, strict=True))],
            schema=schema)
        commit = VideoCommit(key=video_id, video_id=video_id, uri=uri, settings_hash=settings, status="indexed",
                             committed_at=now, run_id=run_id, num_clips=len(group), num_segments=len(group))
        write_commit(layout, commit, table)
        written += 1
    sync(index, model)
    return ImportReport(len(rows), duplicates, written, unchanged)
