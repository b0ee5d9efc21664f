"""Explicit pyarrow schemas of the Parquet index tables."""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

VIDEOS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("num_frames", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("rotation", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("num_clips", pa.int32()),
        pa.field("settings_hash", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("created_at", TIMESTAMP),
        # Set on the row of an identical copy: the uri whose commit holds the model rows (``index.read``).
        pa.field("duplicate_of", pa.string()),
    ]
)

EVENT_TYPE = pa.struct(
    [
        pa.field("start_frame", pa.int32()),
        pa.field("end_frame", pa.int32()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("text", pa.string()),
    ]
)

BOX_TYPE = pa.struct(
    [
        pa.field("frame", pa.int32()),  # index into the clip's sampled frames
        pa.field("x1", pa.float64()),
        pa.field("y1", pa.float64()),
        pa.field("x2", pa.float64()),
        pa.field("y2", pa.float64()),
    ]
)

# Dimension of the default text embedding (all-MiniLM-L6-v2); another model's dimension replaces
# it in the files that model writes (see ``segments_schema``).
EMBEDDING_DIM = 384

SEGMENTS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("frame_timestamps", pa.list_(pa.float64())),
        pa.field("task", pa.string(), nullable=False),
        pa.field("prompt", pa.string()),
        pa.field("text", pa.string()),
        pa.field("raw_output", pa.string()),
        pa.field("events", pa.list_(EVENT_TYPE)),
        # fgqa / sgqa
        pa.field("question", pa.string()),
        pa.field("options", pa.list_(pa.string())),
        pa.field("chosen_option", pa.int32()),
        pa.field("answer_option", pa.int32()),
        pa.field("correct", pa.bool_()),
        pa.field("qa_uid", pa.string()),
        # rcap / rtloc / rdcap: the region and the answer's frame indices (0..n-1) kept for audit
        pa.field("region_id", pa.string()),
        pa.field("region_boxes", pa.list_(BOX_TYPE)),
        pa.field("start_frame", pa.int32()),
        pa.field("end_frame", pa.int32()),
        pa.field("raw_start_frame", pa.float64()),
        pa.field("raw_end_frame", pa.float64()),
        pa.field("clamped", pa.bool_()),
        # An answer that could not be parsed is kept, with the reason, never dropped.
        pa.field("parse_error", pa.string()),
        # Whether PLM-VideoBench's own reading (lmms-eval's rules) reads the answer as this row does;
        # null for tasks without a benchmark and in indexes written before the column existed.
        pa.field("benchmark_reading_ok", pa.bool_()),
        pa.field("model_id", pa.string()),
        pa.field("generation", pa.string()),
        pa.field("settings_hash", pa.string()),
        pa.field("pipeline_version", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("created_at", TIMESTAMP),
        # The segment text's embedding, L2-normalised; model name and dimension in the file metadata.
        pa.field("embedding", pa.list_(pa.float32(), EMBEDDING_DIM)),
    ]
)


def segments_schema(embedding_dim: int = EMBEDDING_DIM) -> pa.Schema:
    """The segments schema for an embedding model of ``embedding_dim`` dimensions."""
    index = SEGMENTS_SCHEMA.get_field_index("embedding")
    return SEGMENTS_SCHEMA.set(index, pa.field("embedding", pa.list_(pa.float32(), embedding_dim)))


ERRORS_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("video_id", pa.string()),
        pa.field("clip_index", pa.int32()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_class", pa.string(), nullable=False),
        pa.field("message", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("settings_hash", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("created_at", TIMESTAMP),
    ]
)

# One row per per-video commit: which outcome (indexed, failed, or duplicate: an identical copy) a video has under a settings hash,
# and when it was committed. The index's one rule for "current" reads this table (``index.read``).
COMMITS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("video_id", pa.string()),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("settings_hash", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("committed_at", TIMESTAMP, nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("num_clips", pa.int32()),
        pa.field("num_segments", pa.int32()),
        pa.field("num_errors", pa.int32()),
        # The tasks the commit's segments hold (null in commits written before the column existed:
        # read as "every task"). The cross-settings rule of ``index.read`` works per task.
        pa.field("tasks", pa.list_(pa.string())),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "videos": VIDEOS_SCHEMA,
    "segments": SEGMENTS_SCHEMA,
    "errors": ERRORS_SCHEMA,
}

# Columns that differ between two runs of the same work; excluded when comparing indexes.
RUN_SPECIFIC_COLUMNS = ("run_id", "created_at")
