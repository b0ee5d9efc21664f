"""``plm-index import``: your own segments become searchable like built ones; reruns add nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index.read import read_current
from search import run_search
from search.importing import SegmentImportError, import_segments
from tests.search.test_store import cli

ROWS = [
    {"uri": "/videos/talk.mp4", "start_s": 3.0, "end_s": 6.5, "text": "the speaker draws a graph on the whiteboard"},
    {"uri": "/videos/talk.mp4", "start_s": 10.0, "end_s": 14.0, "text": "the audience laughs and claps",
     "task": "subtitle"},
    {"uri": "/videos/cook.mp4", "start_s": 0.0, "end_s": 30.0, "text": "x", "task": "caption",
     "events": [{"start_s": 12.3, "end_s": 15.1, "text": "slices a tomato vertically"}]},
]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_imported_rows_are_searchable_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    index = str(tmp_path / "index")
    source = write_jsonl(tmp_path / "mine.jsonl", ROWS + [ROWS[0]])  # one duplicate
    report = import_segments(index, source)
    assert (report.rows, report.duplicates, report.commits_written) == (4, 1, 3)
    first = json.loads(run_search(index, "someone drawing a chart on a board", 1, True))[0]
    assert (first["uri"], first["start_s"], first["end_s"]) == ("/videos/talk.mp4", 3.0, 6.5)
    tomato = json.loads(run_search(index, "cutting a tomato", 1, True))[0]
    assert (tomato["start_s"], tomato["end_s"]) == (12.3, 15.1)
    assert json.loads(run_search(index, "clapping", 1, True, mode="keyword"))[0]["task"] == "subtitle"
    before = read_current(index, "segments").num_rows
    again = import_segments(index, source)
    assert (again.commits_written, again.commits_unchanged) == (0, 3)
    assert read_current(index, "segments").num_rows == before == 3
    # The same rows from Parquet are the same commits: nothing new either.
    parquet = tmp_path / "mine.parquet"
    pq.write_table(pa.Table.from_pylist([dict(r, events=r.get("events", []), task=r.get("task", "imported"))
                                         for r in ROWS]), parquet)
    assert import_segments(index, str(parquet)).commits_written == 0


def test_a_bad_row_is_rejected_with_its_line_number(tmp_path: Path) -> None:
    index = str(tmp_path / "index")
    source = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"uri": "/v.mp4", "start_s": 5, "end_s": 2, "text": "t"},
                                                  {"uri": "/v.mp4", "start_s": 1, "end_s": 2}])
    with Path(source).open("a") as f:
        f.write("{not json\n")
    with pytest.raises(SegmentImportError) as caught:
        import_segments(index, source)
    message = str(caught.value)
    assert "line 2: end_s (2.0) must be after start_s (5.0)" in message
    assert "line 3: text must be a non-empty string" in message and "line 4: not JSON" in message
    assert "nothing imported" in message
    assert not Path(index, "commits").exists()
    result = cli("import", "--index", index, source)
    assert result.returncode == 2 and "line 2" in result.stderr
