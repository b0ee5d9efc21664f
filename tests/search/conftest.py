"""Index-writing helpers for the search tests: real per-video commits through ``index.commit``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from core.text_embedding import DEFAULT_MODEL_ID, embedding_metadata
from index.commit import VideoCommit, write_commit
from index.layout import IndexLayout, ensure_format
from schemas.tables import segments_schema

CREATED = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def segment_row(video: str, clip: int, start: float, end: float, text: str | None, *, task: str = "caption",
                events: list[dict[str, Any]] | None = None, parse_error: str | None = None,
                settings: str = "s1") -> dict[str, Any]:
    """A segments row as the build writes it (without its embedding)."""
    return {"video_id": f"id-{video}", "uri": f"/videos/{video}.mp4", "clip_index": clip, "start_s": start,
            "end_s": end, "frame_timestamps": [start, end], "task": task, "prompt": "Describe the video.",
            "text": text, "raw_output": text, "events": events or [], "parse_error": parse_error,
            "model_id": "plm", "generation": "{}", "settings_hash": settings, "pipeline_version": "0.1.0",
            "run_id": "run-1", "created_at": CREATED}


def build_embedder():
    """The build's own embedder (sentence-transformers on torch), the baseline the light one must match."""
    from transforms.embed.embedding import embed_texts, load_embedding_model

    model = load_embedding_model()
    return lambda texts: embed_texts(texts, model)


def commit_video(location: str, rows: list[dict[str, Any]], *, embed=None,
                 at: dt.datetime | None = None) -> str:
    """Commit one video's rows as the build does (one commit object), embedded with ``embed`` if given."""
    ensure_format(location)
    schema = segments_schema()
    base = pa.schema([f for f in schema if f.name != "embedding"])
    table = pa.Table.from_pylist(rows, schema=base)
    if embed is not None:
        vectors = embed([r["text"] or "" for r in rows]).astype(np.float32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), 384)
        table = table.append_column(schema.field("embedding"), column)
        table = table.replace_schema_metadata(embedding_metadata(DEFAULT_MODEL_ID, 384))
    first = rows[0]
    commit = VideoCommit(key=first["video_id"], video_id=first["video_id"], uri=first["uri"],
                         settings_hash=first["settings_hash"], status="indexed",
                         committed_at=at or dt.datetime.now(dt.UTC), run_id="run-1",
                         num_clips=len({r["clip_index"] for r in rows}), num_segments=len(rows))
    return write_commit(IndexLayout(location), commit, table)


def commit_rows(location: str, rows: list[dict[str, Any]], embed=None) -> None:
    """Commit rows grouped by video, one commit per video."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_video.setdefault(row["video_id"], []).append(row)
    for video_rows in by_video.values():
        commit_video(location, video_rows, embed=embed)


@pytest.fixture(scope="session")
def st_embed():
    """The build's embedder (loaded once per session)."""
    return build_embedder()
