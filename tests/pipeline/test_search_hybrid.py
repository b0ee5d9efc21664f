"""Hybrid search: retrieval quality on paraphrased queries, filters, moments, JSON, gs://, ANN."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transforms.write.layout import run_folder, write_success
from transforms.write.parquet import table_listing_name

from core import storage
from pipeline.search import (
    MODES,
    EmptyIndexError,
    LoadedIndex,
    SearchEngine,
    SearchFilters,
    SearchHit,
    SearchQueryError,
    hits_to_json,
    load_segments,
    merge_hits,
    read_index,
    run_search,
)
from schemas.tables import SEGMENTS_SCHEMA
from transforms.embed.embedding import (
    DEFAULT_MODEL_ID,
    embed_texts,
    embedding_metadata,
    load_embedding_model,
)

CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLIP_S = 6.0

# (video, segment text). Clips of a video are CLIP_S apart with a gap, so nothing merges unless
# a test asks for it. Near-misses sit side by side: vertical/horizontal cuts, pouring into a cup
# versus out of it, opening versus closing, tying versus untying.
CORPUS: list[tuple[str, str]] = [
    ("kitchen1", "A chef cuts a carrot vertically into long thin sticks on a wooden board."),
    ("kitchen1", "A chef cuts a carrot horizontally into round coins on a wooden board."),
    ("kitchen1", "A person peels a potato over the sink with a peeler."),
    ("kitchen1", "A person dices an onion into small cubes with a large knife."),
    ("kitchen1", "Someone cracks two eggs into a glass bowl."),
    ("kitchen1", "Someone whisks eggs in a bowl with a fork."),
    ("kitchen2", "A woman pours hot water from a kettle into a mug."),
    ("kitchen2", "A woman pours coffee out of a mug into the sink."),
    ("kitchen2", "A man stirs soup in a pot on the stove with a wooden spoon."),
    ("kitchen2", "A man tastes the soup from a spoon and adds salt."),
    ("kitchen2", "A person washes a plate under running water."),
    ("kitchen2", "A person dries a plate with a towel."),
    ("kitchen2", "A person slices bread with a serrated knife."),
    ("kitchen2", "A person spreads butter on a slice of toast."),
    ("hallway", "A child ties the laces of his shoes while sitting on the stairs."),
    ("hallway", "A child unties his shoelaces and takes his shoes off."),
    ("hallway", "A man opens the front door and steps outside."),
    ("hallway", "A man closes the front door and locks it with a key."),
    ("hallway", "A woman hangs her coat on a hook by the door."),
    ("hallway", "A dog runs down the hallway towards the camera."),
    ("garden", "A gardener waters the flowers with a green watering can."),
    ("garden", "A gardener digs a hole in the soil with a shovel."),
    ("garden", "A man mows the lawn with a push mower."),
    ("garden", "A woman trims the hedge with large shears."),
    ("garden", "A boy kicks a football against the garden wall."),
    ("garden", "A girl throws a frisbee to a dog, which catches it."),
    ("workshop", "A carpenter saws a wooden plank vertically along its length."),
    ("workshop", "A carpenter saws a wooden plank horizontally across its width."),
    ("workshop", "A man hammers a nail into a board."),
    ("workshop", "A man drills a hole in the wall with a power drill."),
    ("workshop", "A woman sands a table top with sandpaper."),
    ("workshop", "A woman paints a chair with a brush and white paint."),
    ("office", "A person types on a laptop keyboard at a desk."),
    ("office", "A person writes notes with a pen in a notebook."),
    ("office", "A man talks on the phone while looking out of the window."),
    ("office", "A woman staples a stack of papers together."),
    ("office", "A man prints a document and picks it up from the printer."),
    ("office", "A woman waters a plant on the office windowsill."),
    ("gym", "A man lifts a heavy barbell above his head."),
    ("gym", "A woman runs on a treadmill."),
    ("gym", "A man does push-ups on a mat."),
    ("gym", "A woman skips with a jump rope."),
    ("gym", "Two people stretch their legs before a workout."),
    ("laundry", "A person folds a shirt and puts it on a pile."),
    ("laundry", "A person loads clothes into the washing machine."),
    ("laundry", "A person irons a pair of trousers on an ironing board."),
    ("laundry", "A person hangs wet laundry on a line to dry."),
]

# Paraphrased queries and the CORPUS position of the segment each one describes.
QUERIES: list[tuple[str, int]] = [
    ("chopping a carrot lengthwise into strips", 0),
    ("slicing carrots crosswise into rounds", 1),
    ("removing the skin from a potato", 2),
    ("filling a cup with water from the kettle", 6),
    ("emptying coffee down the drain", 7),
    ("someone cooking soup and mixing it", 8),
    ("cleaning dishes in the sink", 10),
    ("kid tying his shoelaces", 14),
    ("boy taking off his shoes", 15),
    ("leaving the house through the front door", 16),
    ("shutting and locking the entrance", 17),
    ("watering flowers in the garden", 20),
    ("cutting the grass", 22),
    ("sawing a board along the grain lengthwise", 26),
    ("putting a nail in wood with a hammer", 28),
    ("someone working on a computer", 32),
    ("weightlifting overhead", 38),
    ("jogging on a running machine", 39),
    ("putting dirty clothes in the washer", 44),
    ("pressing pants with an iron", 45),
]


def corpus_rows(created: datetime = CREATED, run_id: str = "run-q") -> list[dict[str, Any]]:
    """One segments row per CORPUS text, clips numbered per video."""
    rows, clip_of = [], {}
    for video, text in CORPUS:
        clip = clip_of.get(video, 0)
        clip_of[video] = clip + 1
        start = clip * (CLIP_S + 4.0)
        rows.append(segment_row(video, clip, start, start + CLIP_S, text, run_id, created))
    return rows


def segment_row(video: str, clip: int, start: float, end: float, text: str | None, run_id: str,
                created: datetime, task: str = "caption") -> dict[str, Any]:
    """A segments row as the build writes it (without its embedding)."""
    return {"video_id": f"id-{video}", "uri": f"/videos/{video}.mp4", "clip_index": clip, "start_s": start,
            "end_s": end, "frame_timestamps": [start, end], "task": task, "prompt": "Describe the video.",
            "text": text, "raw_output": text, "events": [], "model_id": "plm", "generation": "{}",
            "settings_hash": "s1", "pipeline_version": "0.1.0", "run_id": run_id, "created_at": created}


def write_run(output: str, run_id: str, rows: list[dict[str, Any]], embed: bool, finished: str,
              model: str = DEFAULT_MODEL_ID) -> None:
    """Write rows as one segments shard (with an ``embedding`` column and metadata if ``embed``)."""
    table = pa.Table.from_pylist(rows, schema=pa.schema([f for f in SEGMENTS_SCHEMA if f.name != "embedding"]))
    if embed:
        vectors = embed_texts([r["text"] or "" for r in rows], load_embedding_model(model))
        dim = vectors.shape[1]
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
        table = table.append_column(pa.field("embedding", pa.list_(pa.float32(), dim)), column)
        table = table.replace_schema_metadata(embedding_metadata(model, dim))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    folder = run_folder(output, run_id)
    storage.write_bytes(storage.join(folder, "segments-00000.parquet"), buffer.getvalue())
    storage.write_bytes(storage.join(folder, table_listing_name("segments")),
                        json.dumps(["segments-00000.parquet"]).encode())
    write_success(output, run_id, {"finished_at": finished})


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    output = str(tmp_path_factory.mktemp("hybrid") / "index")
    write_run(output, "run-q", corpus_rows(), embed=True, finished="2026-03-01T12:00:00")
    return output


@pytest.fixture(scope="module")
def engine(corpus_index: str) -> SearchEngine:
    return SearchEngine.open(corpus_index)


def recalls(engine: SearchEngine, mode: str) -> tuple[float, float]:
    """Shares of QUERIES whose target segment is the first hit, and among the first five."""
    at1 = at5 = 0
    for query, target in QUERIES:
        video, _ = CORPUS[target]
        clip = sum(1 for v, _ in CORPUS[:target] if v == video)
        keys = [(h.video_id, h.clip_index) for h in engine.search_hits(query, mode, limit=5)]
        at1 += keys[:1] == [(f"id-{video}", clip)]
        at5 += (f"id-{video}", clip) in keys
    return at1 / len(QUERIES), at5 / len(QUERIES)


def test_corpus_is_big_enough_and_queries_are_paraphrases() -> None:
    assert len(CORPUS) >= 40 and len(QUERIES) == 20
    assert len({t for t in QUERIES}) == 20
    for query, target in QUERIES:  # no query is a substring of its target text
        assert query.lower() not in CORPUS[target][1].lower()


def test_hybrid_recall_is_at_least_the_better_single_mode(engine: SearchEngine) -> None:
    results = {mode: recalls(engine, mode) for mode in MODES}
    for mode, (r1, r5) in results.items():
        print(f"{mode:>8}: recall@1={r1:.2f} recall@5={r5:.2f}")
    hybrid_r1, hybrid_r5 = results["hybrid"]
    assert hybrid_r1 >= max(results["keyword"][0], results["semantic"][0])
    assert hybrid_r5 >= max(results["keyword"][1], results["semantic"][1])
    assert hybrid_r5 >= 0.9
    assert results["keyword"][1] < 1.0  # the paraphrases really are hard for words alone


def test_near_misses_are_told_apart(engine: SearchEngine) -> None:
    for query, expected in [("carrot cut vertically", 0), ("carrot cut horizontally", 1),
                            ("plank sawn horizontally", 27), ("open the door", 16), ("close the door", 17)]:
        (hit,) = engine.search_hits(query, "hybrid", limit=1)
        assert hit.text == CORPUS[expected][1], query


def test_semantic_scores_are_cosines_and_order_is_best_first(engine: SearchEngine) -> None:
    hits = engine.search_hits("walking a dog", "semantic", limit=10)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 + 1e-5 for s in scores)
    hybrid = engine.search_hits("dog runs down the hallway", "hybrid", limit=3)
    assert hybrid[0].text == CORPUS[19][1]
    assert hybrid[0].score > engine.search_hits("dog runs down the hallway", "semantic", limit=1)[0].score


def test_index_without_embeddings_is_embedded_at_query_time(tmp_path: Path, engine: SearchEngine) -> None:
    output = str(tmp_path / "plain")
    write_run(output, "run-p", corpus_rows(), embed=False, finished="2026-03-01T12:00:00")
    plain = SearchEngine.open(output)
    assert plain.index.embeddings is None
    got = [(h.video_id, h.clip_index) for h in plain.search_hits("cutting the grass", "semantic", limit=3)]
    want = [(h.video_id, h.clip_index) for h in engine.search_hits("cutting the grass", "semantic", limit=3)]
    assert got == want
    assert np.allclose(np.linalg.norm(plain.index.embeddings, axis=1), 1.0, atol=1e-5)


def test_rows_of_several_runs_count_once_and_the_newest_embedding_wins(tmp_path: Path) -> None:
    output = str(tmp_path / "runs")
    rows = corpus_rows()
    write_run(output, "run-1", rows, embed=True, finished="2026-03-01T12:00:00")
    newer = [dict(r, run_id="run-2", created_at=datetime(2026, 3, 2, tzinfo=UTC)) for r in rows[:5]]
    newer[0]["text"] = "A juggler keeps three red balls in the air."
    write_run(output, "run-2", newer, embed=True, finished="2026-03-02T12:00:00")
    loaded = read_index(output)
    assert loaded.table.num_rows == len(CORPUS)
    assert loaded.has_embedding.all()
    engine = SearchEngine(loaded)
    hits = engine.search_hits("juggling balls", "hybrid", limit=3)
    assert (hits[0].video_id, hits[0].clip_index, hits[0].text) == ("id-kitchen1", 0, newer[0]["text"])
    assert sum(h.clip_index == 0 and h.video_id == "id-kitchen1" for h in hits) == 1
    assert load_segments(output).num_rows == len(CORPUS)


def test_filters(engine: SearchEngine) -> None:
    query = "someone cuts something"
    assert {h.video_id for h in engine.search_hits(query, "hybrid", SearchFilters(video="*workshop*"), 50)} == {
        "id-workshop"}
    gym = engine.search_hits("a workout", "semantic", SearchFilters(video="/videos/gym.mp4"), 50, min_similarity=-1)
    assert {h.uri for h in gym} == {"/videos/gym.mp4"} and len(gym) == 5
    assert {h.video_id for h in engine.search_hits(query, "hybrid", SearchFilters(video="kitchen?.mp4"), 50)} == {
        "id-kitchen1", "id-kitchen2"}
    # Overlap with [11, 21]: clips at [10, 16] and [20, 26] overlap it; [0, 6] and [30, 36] do not.
    timed = engine.search_hits(query, "hybrid", SearchFilters(start_s=11.0, end_s=21.0), 100, min_similarity=-1)
    assert timed and {h.clip_index for h in timed} == {1, 2}
    assert all(h.end_s > 11.0 and h.start_s < 21.0 for h in timed)
    assert engine.search_hits(query, "hybrid", SearchFilters(task="qa"), 10) == []
    assert len(engine.search_hits(query, "keyword", SearchFilters(task="caption"), 10)) > 0
    strong = engine.search_hits(query, "semantic", limit=50, min_score=0.3)
    assert strong and all(h.score >= 0.3 for h in strong)
    assert len(strong) < len(engine.search_hits(query, "semantic", limit=50))
    # Below the semantic floor nothing is a hit unless it shares a word with the query.
    assert engine.search_hits("kayak paddling", "semantic", limit=5) == []
    assert engine.search_hits("kayak paddling", "hybrid", limit=5) == []
    assert len(engine.search_hits("kayak paddling", "semantic", limit=5, min_similarity=-1)) == 5
    with pytest.raises(SearchQueryError, match="after --from"):
        engine.search_hits(query, "hybrid", SearchFilters(start_s=5, end_s=5), 10)
    with pytest.raises(SearchQueryError, match="mode"):
        engine.search_hits(query, "fuzzy", limit=10)


def hit(video: str, clip: int, start: float, end: float, score: float, text: str = "t") -> SearchHit:
    return SearchHit(uri=f"/v/{video}.mp4", video_id=video, clip_index=clip, start_s=start, end_s=end,
                     score=score, task="caption", text=text)


def test_adjacent_hits_merge_into_moments() -> None:
    hits = [hit("a", 1, 8, 16, 0.9, "b"), hit("b", 0, 0, 8, 0.8), hit("a", 0, 0, 8, 0.5, "a"),
            hit("a", 3, 24.5, 30, 0.7, "d"), hit("a", 5, 40, 48, 0.6, "f"), hit("a", 2, 16, 24, 0.2, "b")]
    moments = merge_hits(hits, gap_s=1.0)
    spans = [(m.video_id, m.start_s, m.end_s, m.score, m.clip_indices) for m in moments]
    assert spans == [("a", 0, 30, 0.9, [0, 1, 2, 3]), ("b", 0, 8, 0.8, [0]), ("a", 40, 48, 0.6, [5])]
    assert moments[0].text == "a | b | d"  # repeated texts once, in time order
    assert [(m.start_s, m.end_s) for m in merge_hits(hits, gap_s=0.0)][:2] == [(0, 24), (0, 8)]
    assert len(merge_hits(hits, gap_s=None)) == len(hits)


def test_run_search_merges_moments_and_writes_json(tmp_path: Path) -> None:
    output = str(tmp_path / "moments")
    rows = [segment_row("m", i, 8.0 * i, 8.0 * (i + 1), text, "run-m", CREATED) for i, text in enumerate([
        "A man pours water into a glass.", "The man keeps pouring water into the glass until it is full.",
        "A cat sleeps on the sofa.", "The man pours more water into a second glass."])]
    write_run(output, "run-m", rows, embed=True, finished="2026-03-01T12:00:00")
    parsed = json.loads(run_search(output, "man pouring water into a glass", 5, True, min_score=0.3))
    first = parsed[0]
    assert (first["uri"], first["start_s"], first["end_s"], first["clip_indices"]) == ("/videos/m.mp4", 0.0, 16.0,
                                                                                        [0, 1])
    assert first["score"] == max(h["score"] for h in first["hits"])
    assert [(m["start_s"], m["end_s"]) for m in parsed[1:]] == [(24.0, 32.0)]
    unmerged = json.loads(run_search(output, "man pouring water into a glass", 5, True, min_score=0.3,
                                     merge_gap_s=None))
    assert len(unmerged) == 3 and all(len(m["hits"]) == 1 for m in unmerged)
    assert json.loads(hits_to_json([])) == []
    table = run_search(output, "man pouring water into a glass", 5, False, mode="keyword")
    assert "0.00-16.00" in table and "0:00-0:16" in table


@pytest.mark.parametrize("query", ["", "   ", "\"\"", "'; DROP TABLE segments; --", "SELECT * FROM segments",
                                   "x" * 100_000, "the of and"])
def test_hostile_queries_get_a_message_or_plain_results(corpus_index: str, query: str) -> None:
    for mode in MODES:
        try:
            out = run_search(corpus_index, query, 3, True, mode=mode)
        except SearchQueryError as exc:
            assert str(exc) and "Traceback" not in str(exc)
            assert not query.strip() or "searchable words" in str(exc) or "empty" in str(exc)
        else:
            assert isinstance(json.loads(out), list)


def test_sql_and_quotes_are_plain_words(engine: SearchEngine) -> None:
    for query in ["\"mows\" the 'lawn'; DROP TABLE segments; --", "lawn' OR 1=1 --"]:
        assert engine.search_hits(query, "hybrid", limit=1)[0].text == CORPUS[22][1]


def test_errors_are_clear(tmp_path: Path, corpus_index: str) -> None:
    with pytest.raises(FileNotFoundError, match="no index at"):
        run_search(str(tmp_path / "missing"), "water", 10, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyIndexError):
        run_search(str(tmp_path / "empty"), "water", 10, False)
    with pytest.raises(SearchQueryError, match="at least 1"):
        run_search(corpus_index, "water", 0, False)
    with pytest.raises(SearchQueryError, match="cannot load the embedding model"):
        run_search(corpus_index, "water", 3, False, embedding_model=str(tmp_path / "no-such-model"))


def test_ann_candidates_match_the_exact_scan(corpus_index: str, tmp_path: Path) -> None:
    exact = SearchEngine.open(corpus_index)
    approx = SearchEngine.open(corpus_index, ann_min_rows=8)
    for query, _ in QUERIES[:8]:
        want = [(h.video_id, h.clip_index) for h in exact.search_hits(query, "hybrid", limit=3)]
        got = [(h.video_id, h.clip_index) for h in approx.search_hits(query, "hybrid", limit=3)]
        assert got == want, query
    cached = sorted(p.name for p in Path(corpus_index, "_search").iterdir())
    assert [n.split("-")[0] for n in cached] == ["ann", "bm25"]
    # A second engine reuses the stored index; a new run makes it stale and it is rebuilt.
    again = SearchEngine.open(corpus_index, ann_min_rows=8)
    again.search_hits("cutting the grass", "semantic", limit=1)
    assert sorted(p.name for p in Path(corpus_index, "_search").iterdir()) == cached
    write_run(corpus_index, "run-r", [segment_row("extra", 0, 0, 5, "A parrot sings.", "run-r", CREATED)],
              embed=True, finished="2026-03-05T12:00:00")
    rebuilt = SearchEngine.open(corpus_index, ann_min_rows=8)
    assert rebuilt.search_hits("a bird singing", "semantic", limit=1)[0].video_id == "id-extra"
    now = sorted(p.name for p in Path(corpus_index, "_search").iterdir())
    assert len(now) == 2 and now != cached


def test_search_over_an_index_on_gcs(gcs_emulator) -> None:
    bucket = gcs_emulator.create_bucket("hybrid")
    output = f"gs://{bucket}/plm/index"
    write_run(output, "run-q", corpus_rows(), embed=True, finished="2026-03-01T12:00:00")
    parsed = json.loads(run_search(output, "cutting the grass", 3, True, filters=SearchFilters(video="*garden*")))
    assert parsed[0]["uri"] == "/videos/garden.mp4" and parsed[0]["text"] == CORPUS[22][1]
    engine = SearchEngine.open(output, ann_min_rows=8)
    assert engine.search_hits("cutting the grass", "hybrid", limit=1)[0].text == CORPUS[22][1]
    assert storage.glob(f"{output}/_search/ann-*.faiss")


def test_loaded_index_type(engine: SearchEngine) -> None:
    assert isinstance(engine.index, LoadedIndex)
    assert engine.index.model_name == DEFAULT_MODEL_ID
    assert engine.index.embeddings.shape == (len(CORPUS), 384)
