"""``plm-index migrate``: a first-layout index (runs/<id>/ shards closed by _SUCCESS) converted in place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from index.read import read_current
from index.runs import list_runs
from index.status import index_status
from schemas.tables import ERRORS_SCHEMA, VIDEOS_SCHEMA
from tests.index.conftest import segment_rows


def _legacy_run(root: Path, run_id: str, finished_at: str, videos: list[tuple[str, str, int]],
                errors: list[tuple[str, str]]) -> None:
    """One run in the first layout, written as that layout's writer did: shards, then ``_SUCCESS``."""
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    video_rows = [{"video_id": v, "uri": u, "num_clips": n, "settings_hash": "s0", "run_id": run_id}
                  for v, u, n in videos]
    pq.write_table(pa.Table.from_pylist(video_rows, schema=VIDEOS_SCHEMA), folder / "videos-00000.parquet")
    segments = pa.concat_tables([segment_rows(v, u, n, run_id) for v, u, n in videos])
    pq.write_table(segments, folder / "segments-00000.parquet")
    error_rows = [{"uri": u, "video_id": v, "stage": "decode", "error_class": "DecodeError", "message": "bad",
                   "settings_hash": "s0", "run_id": run_id} for v, u in errors]
    pq.write_table(pa.Table.from_pylist(error_rows, schema=ERRORS_SCHEMA), folder / "errors-00000.parquet")
    marker = {"run_id": run_id, "finished_at": finished_at, "settings_hash": "s0", "model_id": "m",
              "pipeline_version": "1", "input": "/videos", "accounting": {"inputs": 3, "indexed": len(videos)},
              "files": ["videos-00000.parquet", "segments-00000.parquet", "errors-00000.parquet"]}
    (folder / "_SUCCESS").write_text(json.dumps(marker))


def test_migrate_keeps_what_the_first_layout_showed(tmp_path: Path) -> None:
    root = tmp_path / "old-index"
    _legacy_run(root, "r1", "2026-01-01T00:00:00+00:00", [("a", "/v/a.mp4", 2), ("b", "/v/b.mp4", 3)],
                [("c0", "/v/c.mp4")])
    # A later --force run re-indexed a, and indexed c after the file was fixed (new content id).
    _legacy_run(root, "r2", "2026-01-02T00:00:00+00:00", [("a", "/v/a.mp4", 4), ("c1", "/v/c.mp4", 1)], [])
    # A killed run in the first layout: shards but no _SUCCESS, never visible.
    (root / "runs" / "r3").mkdir()
    pq.write_table(segment_rows("zzz", "/v/z.mp4", 5), root / "runs" / "r3" / "segments-00000.parquet")

    refused = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--index", str(root)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and f"plm-index migrate --index {root}" in refused.stderr

    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "migrate", "--index", str(root)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "migrated 2 run(s): 4 indexed and 1 failed" in done.stdout

    segments = read_current(str(root), "segments")
    per_video = {v: segments.column("video_id").to_pylist().count(v) for v in ("a", "b", "c1")}
    assert per_video == {"a": 4, "b": 3, "c1": 1} and segments.num_rows == 8
    assert read_current(str(root), "errors").num_rows == 0  # c's old failure is hidden by its fix
    status = index_status(str(root))
    assert status.videos_indexed == 3 and status.live_commits == 0 and status.generations == 1
    assert [r.run_id for r in list_runs(str(root))] == ["r1", "r2"]
    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "migrate", "--index", str(root)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "no first-layout index" in again.stderr
