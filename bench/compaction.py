"""Compaction: files before and after, and the time to compact 100,000 segment rows.

An index of per-video commits (1,000 videos x 100 segment rows with 384-d embeddings, written
through ``index.commit`` as a build writes them) is compacted with ``plm-index compact``'s code.
Baselines from the same run: reading every current segment row of the uncompacted index once
(the read any compaction has to do), and the same read after compaction (what readers gain).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time

import numpy as np
import pyarrow as pa

from bench.common import Context, Figure, Stat

VIDEOS = 1_000
ROWS_PER_VIDEO = 100


def write_commits(location: str, videos: int, rows_per_video: int) -> None:
    """A fresh index of ``videos`` live commits with ``rows_per_video`` segment rows each."""
    from index.commit import VideoCommit, write_commit
    from index.layout import IndexLayout, ensure_format
    from schemas.tables import segments_schema

    ensure_format(location)
    layout = IndexLayout(location)
    rng = np.random.default_rng(0)
    schema = segments_schema()
    at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    for v in range(videos):
        video_id = f"{v:08x}" + "0" * 24
        uri = f"gs://archive/videos/{v:06d}.mp4"
        embeddings = rng.standard_normal((rows_per_video, 384), dtype=np.float32)
        table = pa.table({
            "video_id": [video_id] * rows_per_video, "uri": [uri] * rows_per_video,
            "clip_index": pa.array(range(rows_per_video), pa.int32()),
            "start_s": [30.0 * i for i in range(rows_per_video)],
            "end_s": [30.0 * i + 30 for i in range(rows_per_video)],
            "task": ["caption"] * rows_per_video,
            "text": [f"person does action {i} in video {v}" for i in range(rows_per_video)],
            "settings_hash": ["s"] * rows_per_video, "run_id": ["r"] * rows_per_video,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), 384),
        })
        columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
                   else pa.nulls(rows_per_video, f.type) for f in schema]
        segments = pa.Table.from_arrays(columns, schema=schema)
        write_commit(layout, VideoCommit(key=video_id, video_id=video_id, uri=uri, settings_hash="s",
                                         status="indexed", committed_at=at, run_id="r",
                                         video={"video_id": video_id, "uri": uri, "num_clips": rows_per_video,
                                                "settings_hash": "s", "run_id": "r"},
                                         num_clips=rows_per_video, num_segments=rows_per_video), segments)


def run(ctx: Context) -> list[Figure]:
    """Compact 100k segment rows (10k with ``--quick``) from per-video commits."""
    from index.compact import compact
    from index.read import read_current

    videos = VIDEOS // 10 if ctx.quick else VIDEOS
    rows = videos * ROWS_PER_VIDEO
    compact_s, read_before_s, read_after_s, files = [], [], [], []
    for repeat in range(ctx.repeats):
        location = os.path.join(ctx.out_dir, f"compaction-{repeat}")
        shutil.rmtree(location, ignore_errors=True)
        write_commits(location, videos, ROWS_PER_VIDEO)
        start = time.perf_counter()
        assert read_current(location, "segments").num_rows == rows
        read_before_s.append(time.perf_counter() - start)
        report = compact(location)
        compact_s.append(report.seconds)
        files.append((report.files_before, report.files_after))
        start = time.perf_counter()
        assert read_current(location, "segments").num_rows == rows
        read_after_s.append(time.perf_counter() - start)
        shutil.rmtree(location, ignore_errors=True)
    before, after = files[-1]
    label = f"{rows:,} segment rows in {videos:,} per-video commits"
    return [
        Figure(benchmark="compaction", name=f"compact {label}", unit="s", value=Stat.of(compact_s),
               baseline_name="reading the same rows once, uncompacted", baseline=Stat.of(read_before_s),
               ratio=Stat.of([c / r for c, r in zip(compact_s, read_before_s, strict=True)]),
               note=f"files {before} before, {after} after"),
        Figure(benchmark="compaction", name=f"read every current segment row after compaction, {label}", unit="s",
               value=Stat.of(read_after_s), baseline_name="the same read before compaction",
               baseline=Stat.of(read_before_s),
               ratio=Stat.of([a / b for a, b in zip(read_after_s, read_before_s, strict=True)]),
               note=f"files {before} -> {after}"),
    ]
