"""Keyword search over a small Parquet index written with the real layout and schema."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transforms.write.layout import run_folder, write_success
from transforms.write.parquet import table_listing_name

from core import storage
from pipeline.search import (
    MAX_QUERY_TERMS,
    EmptyIndexError,
    SearchHit,
    SearchQueryError,
    clock,
    format_table,
    hits_to_json,
    keyword_search,
    load_segments,
    query_terms,
    run_search,
)
from schemas.tables import SEGMENTS_SCHEMA

OLD = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
NEW = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
NEWEST = datetime(2026, 1, 3, 10, 0, tzinfo=UTC)
LONG_TEXT = ("A child ties the laces of his shoes while sitting on the stairs of a bright hallway, "
             "then pulls each knot tight and checks both shoes twice.")


def segment(video: str, clip: int, start: float, end: float, text: str | None, run_id: str,
            created_at: datetime, settings_hash: str = "s1") -> dict[str, Any]:
    """A segments row as the build writes it."""
    return {"video_id": f"id-{video}", "uri": f"/videos/{video}.mp4", "clip_index": clip, "start_s": start,
            "end_s": end, "frame_timestamps": [start, (start + end) / 2], "task": "caption",
            "prompt": "Describe the video.", "text": text, "raw_output": text, "events": [],
            "model_id": "facebook/Perception-LM-1B", "generation": "{}", "settings_hash": settings_hash,
            "pipeline_version": "0.1.0", "run_id": run_id, "created_at": created_at}


RUNS: list[tuple[str, datetime, bool, list[dict[str, Any]]]] = [
    ("run-1", OLD, True, [
        segment("a", 0, 0.0, 8.0, "A person pours water from a kettle into a white cup.", "run-1", OLD),
        segment("a", 1, 8.0, 16.0, "A person slices a red tomato on a wooden cutting board.", "run-1", OLD),
        segment("b", 0, 0.0, 4.5, LONG_TEXT, "run-1", OLD),
        segment("b", 1, 4.5, 12.25, "The child stands up and walks out of the room.", "run-1", OLD),
    ]),
    ("run-2", NEW, True, [
        # Same logical row as run-1's (b, 1): the newer one wins.
        segment("b", 1, 4.5, 12.25, "The child stands up and runs out of the room.", "run-2", NEW),
        # Same clip under other settings: a different logical row.
        segment("a", 0, 0.0, 8.0, "A person drinks coffee at a desk.", "run-2", NEW, settings_hash="s2"),
        segment("c", 0, 65.5, 130.25, "Someone poured orange juice into a tall glass.", "run-2", NEW),
        segment("c", 1, 130.25, 140.0, None, "run-2", NEW),
    ]),
    # Killed before its _SUCCESS marker: none of its rows may appear.
    ("run-3", NEWEST, False, [
        segment("d", 0, 0.0, 5.0, "A person paddles a kayak and pours water into a cup.", "run-3", NEWEST),
        segment("b", 1, 4.5, 12.25, "The child dances in the kayak room.", "run-3", NEWEST),
    ]),
]


def write_run(output: str, run_id: str, finished_at: datetime, complete: bool,
              rows: list[dict[str, Any]]) -> None:
    """Write rows as two Parquet shards plus their listing, and the marker if ``complete``."""
    folder = run_folder(output, run_id)
    names = []
    for shard, part in enumerate((rows[: len(rows) // 2], rows[len(rows) // 2:])):
        buffer = io.BytesIO()
        # Rows without embeddings, as an index written before embeddings existed: search embeds them.
        schema = SEGMENTS_SCHEMA.remove(SEGMENTS_SCHEMA.get_field_index("embedding"))
        pq.write_table(pa.Table.from_pylist(part, schema=schema), buffer)
        name = f"segments-{shard:05d}.parquet"
        storage.write_bytes(storage.join(folder, name), buffer.getvalue())
        names.append(name)
    storage.write_bytes(storage.join(folder, table_listing_name("segments")), json.dumps(names).encode())
    if complete:
        write_success(output, run_id, {"finished_at": finished_at.isoformat()})


def build_index(output: str) -> str:
    """The test index at ``output`` (a local folder or a gs:// prefix)."""
    for run_id, finished_at, complete, rows in RUNS:
        write_run(output, run_id, finished_at, complete, rows)
    return output


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_index(str(tmp_path_factory.mktemp("index")))


@pytest.fixture(scope="module")
def segments(index: str) -> pa.Table:
    return load_segments(index)


def key(hit: SearchHit) -> tuple[str, int]:
    return hit.video_id, hit.clip_index


def test_load_segments_counts_each_logical_row_once(segments: pa.Table) -> None:
    rows = segments.to_pylist()
    keys = [(r["video_id"], r["clip_index"], r["settings_hash"]) for r in rows]
    assert sorted(keys) == sorted([("id-a", 0, "s1"), ("id-a", 0, "s2"), ("id-a", 1, "s1"), ("id-b", 0, "s1"),
                                   ("id-b", 1, "s1"), ("id-c", 0, "s1"), ("id-c", 1, "s1")])
    (b1,) = [r for r in rows if (r["video_id"], r["clip_index"]) == ("id-b", 1)]
    assert (b1["run_id"], b1["text"], b1["created_at"]) == ("run-2", "The child stands up and runs out of the room.",
                                                           NEW)
    assert segments.schema == SEGMENTS_SCHEMA


def test_incomplete_run_is_ignored(index: str, segments: pa.Table) -> None:
    assert "run-3" not in segments.column("run_id").to_pylist()
    assert keyword_search(segments, "kayak") == []
    assert run_search(index, "kayak", 10, False) == "No segment matches 'kayak' (7 segments searched)."


@pytest.mark.parametrize(("query", "expected"), [
    ("person pours water into a cup", ("id-a", 0)),
    ("slices a tomato", ("id-a", 1)),
    ("slicing tomatoes", ("id-a", 1)),
    ("tying shoes", ("id-b", 0)),
    ("orange juice", ("id-c", 0)),
])
def test_the_matching_clip_ranks_first(segments: pa.Table, query: str, expected: tuple[str, int]) -> None:
    hits = keyword_search(segments, query)
    assert hits, query
    assert key(hits[0]) == expected
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > 0 for h in hits)


def test_hits_carry_the_clip_times_and_text(segments: pa.Table) -> None:
    (hit,) = keyword_search(segments, "tomato")
    assert hit == SearchHit(uri="/videos/a.mp4", video_id="id-a", clip_index=1, start_s=8.0, end_s=16.0,
                            score=hit.score, task="caption",
                            text="A person slices a red tomato on a wooden cutting board.")
    (juice,) = keyword_search(segments, "juice")
    assert (juice.start_s, juice.end_s) == (65.5, 130.25)


def test_stemming_joins_inflections_and_zero_scores_are_not_hits(segments: pa.Table) -> None:
    # "pours" (clip a/0) and "poured" (clip c/0) both match "pouring"; nothing else does.
    assert sorted(key(h) for h in keyword_search(segments, "pouring")) == [("id-a", 0), ("id-c", 0)]


def test_duplicates_are_counted_once_and_the_newest_text_wins(segments: pa.Table) -> None:
    hits = keyword_search(segments, "child room")
    assert [key(h) for h in hits].count(("id-b", 1)) == 1
    assert keyword_search(segments, "walks") == []  # only the older, replaced row said "walks"
    assert [key(h) for h in keyword_search(segments, "runs")] == [("id-b", 1)]


def test_limit(segments: pa.Table) -> None:
    assert len(keyword_search(segments, "person child", limit=10)) == 5
    assert len(keyword_search(segments, "person child", limit=2)) == 2
    with pytest.raises(SearchQueryError, match="at least 1"):
        keyword_search(segments, "person", limit=0)


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "the of and", "!!! ... ???", "a I"])
def test_queries_without_searchable_words_are_refused(index: str, segments: pa.Table, query: str) -> None:
    with pytest.raises(SearchQueryError):
        keyword_search(segments, query)
    with pytest.raises(SearchQueryError):
        run_search(index, query, 10, False)


def test_empty_query_message_is_clear(segments: pa.Table) -> None:
    with pytest.raises(SearchQueryError, match="empty"):
        keyword_search(segments, "  ")


@pytest.mark.parametrize(("query", "expected"), [
    ("tomato\" OR 1=1 --", [("id-a", 1)]),
    ("'; DROP TABLE segments; --", []),
    ("%juice% AND text LIKE '*'", [("id-c", 0)]),
    ("kettle's \"cup\")", [("id-a", 0)]),
    ("SELECT * WHERE text = 'tomato'", [("id-a", 1)]),
])
def test_sql_ish_and_quoted_queries_are_plain_words(segments: pa.Table, query: str,
                                                    expected: list[tuple[str, int]]) -> None:
    assert [key(h) for h in keyword_search(segments, query)] == expected


def test_very_long_queries_are_truncated(segments: pa.Table) -> None:
    many = " ".join(f"word{i}" for i in range(5000))
    assert len(query_terms(many)) == MAX_QUERY_TERMS
    # The query's first terms are kept; the rest are dropped rather than failing.
    hits = keyword_search(segments, "tomato " + many)
    assert [key(h) for h in hits] == [("id-a", 1)]
    assert keyword_search(segments, many + " tomato") == []
    assert [key(h) for h in keyword_search(segments, "tomato " * 100_000)] == [("id-a", 1)]


def test_json_output_parses_and_carries_every_field(index: str) -> None:
    parsed = json.loads(run_search(index, "orange juice glass", 5, True, mode="keyword", merge_gap_s=None))
    expected = {"uri": "/videos/c.mp4", "video_id": "id-c", "clip_index": 0, "start_s": 65.5,
                "end_s": 130.25, "score": pytest.approx(parsed[0]["score"]), "task": "caption",
                "text": "Someone poured orange juice into a tall glass."}
    assert {k: parsed[0][k] for k in expected} == expected
    assert parsed[0]["clip_indices"] == [0] and len(parsed[0]["hits"]) == 1
    assert parsed[0]["score"] > 0
    assert json.loads(run_search(index, "kayak", 5, True, mode="keyword", merge_gap_s=None)) == []
    assert json.loads(hits_to_json([])) == []


def test_table_output_is_fixed_width_and_readable(index: str) -> None:
    out = run_search(index, "child shoes juice", 10, False, mode="keyword", merge_gap_s=None)
    lines = out.splitlines()
    header = lines[0]
    assert header.split() == ["#", "score", "start-end", "(s)", "time", "uri", "text"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    body = lines[2:]
    assert [line.split()[0] for line in body] == ["1", "2", "3"]
    uri_col, text_col = header.index("uri"), header.index("text")
    for line in body:
        assert line[uri_col:].startswith("/videos/")
        assert line[text_col - 2:text_col] == "  "
    juice = next(line for line in body if "c.mp4" in line)
    assert "65.50-130.25" in juice and "1:05-2:10" in juice
    shoes = next(line for line in body if "b.mp4" in line)
    assert "0.00-4.50" in shoes and "0:00-0:04" in shoes
    assert shoes.endswith("...") and LONG_TEXT not in shoes and LONG_TEXT[:40] in shoes


def test_format_table_shortens_long_uris_keeping_the_file_name() -> None:
    hit = SearchHit(uri="gs://bucket/" + "deep/" * 30 + "clip.mp4", video_id="v", clip_index=0, start_s=3725.0,
                    end_s=3730.5, score=1.5, task="caption", text="line one\nline two")
    row = format_table([hit]).splitlines()[2]
    assert "  ...eep/deep/" in row and "/deep/clip.mp4  " in row and "gs://bucket" not in row
    assert "1:02:05-1:02:10" in row and "line one line two" in row


def test_clock() -> None:
    assert [clock(s) for s in (0, 4.99, 65.5, 600, 3599.9, 3600, 7384)] == [
        "0:00", "0:04", "1:05", "10:00", "59:59", "1:00:00", "2:03:04"]


def test_an_index_without_segments_gives_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyIndexError, match="no segments in any complete run"):
        run_search(str(empty), "water", 10, False)
    only_incomplete = str(tmp_path / "incomplete")
    write_run(only_incomplete, "run-x", NEW, False, RUNS[0][3])
    with pytest.raises(EmptyIndexError):
        run_search(only_incomplete, "water", 10, False)
    assert load_segments(only_incomplete).num_rows == 0
    assert keyword_search(SEGMENTS_SCHEMA.empty_table(), "water") == []
    with pytest.raises(FileNotFoundError, match="no index at"):
        run_search(str(tmp_path / "missing"), "water", 10, False)


def test_search_over_an_index_on_gcs(gcs_emulator) -> None:
    bucket = gcs_emulator.create_bucket("index")
    output = build_index(f"gs://{bucket}/plm/index")
    assert sorted(storage.glob(f"gs://{bucket}/plm/index/runs/*/_SUCCESS")) == [
        f"gs://{bucket}/plm/index/runs/run-1/_SUCCESS", f"gs://{bucket}/plm/index/runs/run-2/_SUCCESS"]
    assert load_segments(output).num_rows == 7
    parsed = json.loads(run_search(output, "person pours water into a cup", 10, True, mode="keyword",
                                   merge_gap_s=None))
    assert (parsed[0]["video_id"], parsed[0]["clip_index"], parsed[0]["start_s"], parsed[0]["end_s"]) == (
        "id-a", 0, 0.0, 8.0)
    assert "id-d" not in {hit["video_id"] for hit in parsed}
    runs = json.loads(run_search(output, "runs", 10, True, mode="keyword", merge_gap_s=None))
    assert [(h["video_id"], h["clip_index"]) for h in runs] == [("id-b", 1)]
