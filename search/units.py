"""Search units: what one hit can be. Moments, not clips.

A segment row becomes zero or more units, each with its own seconds and text:

- every timestamped event of a row (a dense caption's events, an RDCap event) is a unit with the
  event's seconds and text; the row's whole text is then not a unit of its own, so a hit on one
  event answers with that event's span, not the clip's;
- a row without events (a plain caption, an RCap caption, an RTLoc answered span, a question's
  answer) is one unit with the row's seconds and text;
- a row whose answer could not be parsed (``parse_error`` set) is no unit at all: its text may be
  the manifest's own (an RTLoc caption the model never localised) and must never become a hit
  on text the user supplied;
- a row with no text is no unit.

Units carry their owner (settings hash and video id), so the derived index can tell which units
are current by the index's one rule (``index.read``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.text_embedding import metadata_model

UNITS_SCHEMA = pa.schema([
    pa.field("uri", pa.string()),
    pa.field("video_id", pa.string()),
    pa.field("task", pa.string()),
    pa.field("clip_index", pa.int32()),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("text", pa.string()),
    pa.field("kind", pa.string()),  # "segment" (a row's own span) or "event"
    pa.field("owner", pa.string()),  # settings_hash \x1f video_id
])
OWNER_SEP = "\x1f"

Embedder = Callable[[list[str]], np.ndarray]


def owner_column(table: pa.Table) -> pa.ChunkedArray:
    """``settings_hash`` and ``video_id`` joined: which video commit a row belongs to."""
    return pc.binary_join_element_wise(pc.fill_null(table.column("settings_hash"), ""), table.column("video_id"),
                                       OWNER_SEP)


def _build_vectors(table: pa.Table, model: str, dim: int) -> np.ndarray | None:
    """The rows' build-time embeddings if they come from ``model`` with ``dim`` dimensions."""
    if "embedding" not in table.column_names:
        return None
    recorded = metadata_model(table.schema.metadata)
    field_type = table.schema.field("embedding").type
    if recorded is not None and recorded != (model, dim):
        return None
    if getattr(field_type, "list_size", -1) != dim:
        return None
    column = table.column("embedding").combine_chunks()
    if column.null_count:
        return None
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values[column.offset * dim:(column.offset + len(column)) * dim].reshape(len(column), dim)


def segments_to_units(segments: pa.Table, embed: Embedder, model: str, dim: int) -> tuple[pa.Table, np.ndarray]:
    """The units of ``segments`` rows (see the module docstring) and their unit embeddings.

    Units that are a row's own text reuse the build's embedding where it comes from ``model``;
    events (and rows without a usable embedding) are embedded with ``embed``.
    """
    n = segments.num_rows
    if n == 0:
        return UNITS_SCHEMA.empty_table(), np.zeros((0, dim), np.float32)
    unparsed = pc.fill_null(pc.greater(pc.utf8_length(pc.fill_null(segments.column("parse_error"), "")), 0), False)
    events_len = (pc.fill_null(pc.list_value_length(segments.column("events")), 0)
                  if "events" in segments.column_names else pa.array(np.zeros(n, np.int32)))
    has_events = pc.greater(events_len, 0)
    text = pc.utf8_trim_whitespace(pc.fill_null(segments.column("text"), ""))
    plain = pc.and_(pc.and_(pc.invert(unparsed), pc.invert(has_events)), pc.greater(pc.utf8_length(text), 0))
    plain_idx = np.flatnonzero(plain.to_numpy(zero_copy_only=False))
    owners = owner_column(segments)
    base = segments.select(["uri", "video_id", "task", "clip_index", "start_s", "end_s"])
    plain_units = base.take(plain_idx).append_column("text", text.take(plain_idx))
    plain_units = plain_units.append_column("kind", pa.array(["segment"] * len(plain_idx), pa.string()))
    plain_units = plain_units.append_column("owner", owners.take(plain_idx)).cast(UNITS_SCHEMA)

    vectors = _build_vectors(segments, model, dim)
    plain_vectors = None
    if vectors is not None:
        plain_vectors = vectors[plain_idx]
        if len(plain_idx):
            norms = np.linalg.norm(plain_vectors, axis=1)
            if not np.all(np.abs(norms - 1) < 1e-3):
                plain_vectors = None  # zero vectors of rows embedded without text: embed again
    if plain_vectors is None:
        texts = plain_units.column("text").to_pylist()
        plain_vectors = embed(texts) if texts else np.zeros((0, dim), np.float32)

    event_idx = np.flatnonzero(pc.and_(pc.invert(unparsed), has_events).to_numpy(zero_copy_only=False))
    rows: list[dict] = []
    if len(event_idx):
        picked = segments.select(["uri", "video_id", "task", "clip_index", "events"]).take(event_idx).to_pylist()
        for row, owner in zip(picked, owners.take(event_idx).to_pylist(), strict=True):
            for event in row["events"]:
                words = (event.get("text") or "").strip()
                if not words or event.get("start_s") is None or event.get("end_s") is None:
                    continue
                rows.append({"uri": row["uri"], "video_id": row["video_id"], "task": row["task"],
                             "clip_index": row["clip_index"], "start_s": event["start_s"], "end_s": event["end_s"],
                             "text": words, "kind": "event", "owner": owner})
    event_units = pa.Table.from_pylist(rows, schema=UNITS_SCHEMA)
    event_vectors = embed([r["text"] for r in rows]) if rows else np.zeros((0, dim), np.float32)
    units = pa.concat_tables([plain_units, event_units])
    return units, np.concatenate([plain_vectors.astype(np.float32), event_vectors.astype(np.float32)])
