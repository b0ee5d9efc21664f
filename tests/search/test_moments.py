"""Moments, not clips: events answer with their own seconds; unparsed answers never become hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search import SearchEngine, SearchHit, merge_hits, run_search
from tests.search.conftest import commit_video, segment_row


def event(start: float, end: float, text: str) -> dict:
    return {"start_frame": 0, "end_frame": 1, "start_s": start, "end_s": end, "text": text}


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory: pytest.TempPathFactory, st_embed) -> str:
    output = str(tmp_path_factory.mktemp("moments") / "index")
    caption = ("[0.0 s, 5.0 s] a cook washes the vegetables. [12.3 s, 15.1 s] slices a tomato vertically. "
               "[22.0 s, 28.0 s] puts the pan on the stove.")
    dense = segment_row("kitchen", 0, 0.0, 30.0, caption, events=[
        event(0.0, 5.0, "a cook washes the vegetables"), event(12.3, 15.1, "slices a tomato vertically"),
        event(22.0, 28.0, "puts the pan on the stove")])
    # RTLoc whose answer could not be parsed: its text is the manifest's own caption.
    unparsed = segment_row("kitchen", 1, 30.0, 60.0, "a woman folds a paper crane", task="rtloc",
                           parse_error="no frame range found; raw output kept")
    answered = segment_row("kitchen", 2, 60.0, 90.0, "a man opens the fridge", task="rtloc")
    answered.update(start_s=71.5, end_s=74.0)
    other = segment_row("kitchen", 3, 90.0, 120.0, "A dog sleeps on the kitchen floor.")
    commit_video(output, [dense, unparsed, answered, other], embed=st_embed)
    return output


def test_an_event_comes_back_with_its_own_seconds(kitchen: str) -> None:
    for mode in ("hybrid", "keyword", "semantic"):
        moments = json.loads(run_search(kitchen, "someone slicing a tomato", 3, True, mode=mode))
        first = moments[0]
        assert (first["start_s"], first["end_s"]) == (12.3, 15.1), mode
        assert first["text"] == "slices a tomato vertically"
        assert first["clip_index"] == 0


def test_every_event_is_searchable_on_its_own(kitchen: str) -> None:
    engine = SearchEngine.open(kitchen)
    (hit,) = engine.search_hits("pan on the stove", "hybrid", limit=1)
    assert (hit.start_s, hit.end_s, hit.text) == (22.0, 28.0, "puts the pan on the stove")
    # The dense caption's whole text is no unit of its own: no hit spans the clip 0-30 s.
    spans = {(h.start_s, h.end_s) for h in engine.search_hits("tomato stove vegetables", "keyword", limit=20)}
    assert (0.0, 30.0) not in spans and spans


def test_an_rtloc_answer_is_its_answered_span(kitchen: str) -> None:
    first = json.loads(run_search(kitchen, "man opening the fridge", 1, True))[0]
    assert (first["task"], first["start_s"], first["end_s"]) == ("rtloc", 71.5, 74.0)


def test_an_unparsed_answer_is_never_a_hit_on_the_users_text(kitchen: str) -> None:
    for mode in ("hybrid", "keyword", "semantic"):
        moments = json.loads(run_search(kitchen, "a woman folds a paper crane", 10, True, mode=mode))
        assert all(m["clip_index"] != 1 and "crane" not in m["text"] for m in moments), mode


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


def test_neighbouring_event_hits_merge(tmp_path: Path, st_embed) -> None:
    output = str(tmp_path / "index")
    row = segment_row("pour", 0, 0.0, 30.0, "x", events=[
        event(2.0, 4.0, "a man pours water into a glass"), event(4.5, 7.0, "he keeps pouring water into the glass"),
        event(20.0, 25.0, "a cat sleeps on the sofa")])
    commit_video(output, [row], embed=st_embed)
    first = json.loads(run_search(output, "man pouring water into a glass", 5, True, min_score=0.3))[0]
    assert (first["start_s"], first["end_s"], first["clip_indices"]) == (2.0, 7.0, [0, 0])
