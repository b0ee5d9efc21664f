"""What checksums cost: writing a commit with its data checksum, reading checked files, and ``verify``.

An index of per-video commits (1,000 videos x 100 segment rows with 384-d embeddings; 100 videos
with ``--quick``), written as a build writes them, then compacted. Baselines from the same run:

- a commit's bytes encoded as before checksums (one ``pq.write_table``), against ``encode_commit``;
- every segment row read straight from the generation's files (``pq.read_table``, no check),
  against ``read_current`` (which checks each file's size and CRC32C against its manifest);
- the same unchecked read, against ``verify`` of the whole index (every file read and checked).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import Context, Figure, Stat
from bench.compaction import ROWS_PER_VIDEO, VIDEOS, write_commits

ENCODES = 200


def _segments(rows: int) -> pa.Table:
    import numpy as np

    from schemas.tables import segments_schema

    schema = segments_schema()
    embeddings = np.random.default_rng(0).standard_normal((rows, 384), dtype=np.float32)
    data = {"video_id": ["v" * 32] * rows, "uri": ["gs://a/v.mp4"] * rows,
            "clip_index": pa.array(range(rows), pa.int32()), "start_s": [30.0 * i for i in range(rows)],
            "end_s": [30.0 * i + 30 for i in range(rows)], "task": ["caption"] * rows,
            "text": [f"person does action {i}" for i in range(rows)], "settings_hash": ["s"] * rows,
            "run_id": ["r"] * rows, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), 384)}
    table = pa.table(data)
    columns = [table.column(f.name).cast(f.type) if f.name in data else pa.nulls(rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _encode_figures(ctx: Context) -> Figure:
    from index.commit import HEADER_KEY, VideoCommit, encode_commit

    segments = _segments(ROWS_PER_VIDEO)
    commit = VideoCommit(key="v" * 32, video_id="v" * 32, uri="gs://a/v.mp4", settings_hash="s", status="indexed",
                         committed_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC), run_id="r", num_clips=ROWS_PER_VIDEO,
                         num_segments=ROWS_PER_VIDEO)

    def before() -> None:  # the commit encoding before checksums
        metadata = {HEADER_KEY: b"{}"}
        pq.write_table(segments.replace_schema_metadata(metadata), io.BytesIO(), compression="zstd")

    checked, plain = [], []
    for _ in range(ctx.repeats):
        start = time.perf_counter()
        for _ in range(ENCODES):
            before()
        plain.append((time.perf_counter() - start) / ENCODES * 1000)
        start = time.perf_counter()
        for _ in range(ENCODES):
            encode_commit(commit, segments)
        checked.append((time.perf_counter() - start) / ENCODES * 1000)
    return Figure(benchmark="integrity", name=f"encode one commit of {ROWS_PER_VIDEO} segment rows with its checksum",
                  unit="ms", value=Stat.of(checked), baseline_name="the same commit encoded without a checksum",
                  baseline=Stat.of(plain), ratio=Stat.of([c / p for c, p in zip(checked, plain, strict=True)]))


def run(ctx: Context) -> list[Figure]:
    """Checksum costs on an index of 100,000 segment rows (10,000 with ``--quick``)."""
    from index.compact import compact
    from index.layout import IndexLayout
    from index.read import list_generations, read_current
    from index.verify import verify

    videos = VIDEOS // 10 if ctx.quick else VIDEOS
    rows = videos * ROWS_PER_VIDEO
    location = os.path.join(ctx.out_dir, "integrity")
    shutil.rmtree(location, ignore_errors=True)
    write_commits(location, videos, ROWS_PER_VIDEO)
    compact(location)
    files = [p for g in list_generations(IndexLayout(location)) for p in g.files_of("segments")]
    def unchecked() -> None:
        assert sum(pq.read_table(p).num_rows for p in files) == rows

    def checked_read() -> None:
        assert read_current(location, "segments").num_rows == rows

    def whole_verify() -> None:
        assert verify(location).ok

    unchecked()  # warm the page cache once, so no candidate pays for the first read
    timings: dict[str, list[float]] = {"plain": [], "checked": [], "verified": []}
    steps = [("plain", unchecked), ("checked", checked_read), ("verified", whole_verify)]
    for repeat in range(ctx.repeats):
        for name, step in steps[repeat % 3:] + steps[:repeat % 3]:  # rotate the order: no fixed position
            start = time.perf_counter()
            step()
            timings[name].append(time.perf_counter() - start)
    plain, checked, verified = timings["plain"], timings["checked"], timings["verified"]
    shutil.rmtree(location, ignore_errors=True)
    label = f"{rows:,} segment rows, compacted"
    base = "every segment row read from the generation's files, unchecked"
    return [
        _encode_figures(ctx),
        Figure(benchmark="integrity", name=f"read_current (size and CRC32C checked per file), {label}", unit="s",
               value=Stat.of(checked), baseline_name=base, baseline=Stat.of(plain),
               ratio=Stat.of([c / p for c, p in zip(checked, plain, strict=True)])),
        Figure(benchmark="integrity", name=f"plm-index verify of the whole index, {label}", unit="s",
               value=Stat.of(verified), baseline_name=base, baseline=Stat.of(plain),
               ratio=Stat.of([v / p for v, p in zip(verified, plain, strict=True)])),
    ]
