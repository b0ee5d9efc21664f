"""RDCap's two readings: the forgiving index reading and lmms-eval's ``extract_delta_segments``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from evaluation.judge import ExactMatchJudge
from schemas.benchmark import RdcapRow
from schemas.records import ClipPlan, ClipPrompt, RegionOnClip
from schemas.rows import RunContext
from tasks import get_task
from tasks.rdcap import benchmark_segments
from tasks.reading import parse_dense_captions

RUN = RunContext("r", "s", "m", "{}", "0", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def _bench(answer: str) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.caption) for s in benchmark_segments(answer)]


def _index(answer: str) -> list[tuple[float, float, str]]:
    return [(e.raw_start, e.raw_end, e.text) for e in parse_dense_captions(answer) if e.ok]


def test_decimal_segment_is_no_segment_for_the_benchmark() -> None:
    answer = "[3.5, 9]: a man walks"
    assert _bench(answer) == []
    assert _index(answer) == [(3.5, 9.0, "a man walks")]


def test_colons_become_spaces_and_a_caption_stops_at_the_next_bracket() -> None:
    assert _bench("[0, 4]: at 10:30 he waves") == [(0, 4, "at 10 30 he waves")]
    assert _index("[0, 4]: at 10:30 he waves") == [(0.0, 4.0, "at 10:30 he waves")]
    # The prompt's own format "[start, end]: [description]" leaves the benchmark an empty caption.
    assert _bench("[0, 4]: [a man walks]") == [(0, 4, "")]
    assert _index("[0, 4]: [a man walks]") == [(0.0, 4.0, "a man walks")]


def test_benchmark_reading_spacing_frame_word_and_commas() -> None:
    answer = "[0, 4]: picks up the cup,\nFrame [5,9]: puts it\ndown,"
    assert _bench(answer) == [(0, 4, "picks up the cup"), (5, 9, "puts it down")]
    assert _bench("[ 0, 4]: x [0 ,4]: y") == []  # no space after "[" nor before ","
    assert _bench("[-1, 4]: x") == []


def _prompt() -> ClipPrompt:
    region = RegionOnClip("cup", tuple([(1.0, 1.0, 5.0, 5.0)] * 32), 0, 31)
    times = tuple(k / 8 for k in range(32))
    clip = ClipPlan(video_id="v", uri="v.mp4", clip_index=0, start_s=0.0, end_s=4.0,
                    sample_frame_indices=tuple(range(32)), sample_times=times,
                    sample_end_times=tuple(t + 1 / 8 for t in times), regions=(region,))
    return ClipPrompt(clip, np.zeros((32, 4, 4, 3), np.uint8), "rdcap", "p", 512, region_id="cup")


def test_rows_mark_segments_the_benchmark_reads_differently() -> None:
    answer = "[0, 4]: picks up: the cup\n[5, 9]: [puts it down]\n[10.5, 12]: waves\n[ 13, 20 ]: leaves."
    rows = get_task("rdcap").rows(RUN, _prompt(), answer)
    assert [(r["text"], r["benchmark_reading_ok"]) for r in rows] == [
        ("picks up: the cup", True),  # the colon rewrite changes nothing that matters
        ("puts it down", False),  # the benchmark reads an empty caption
        ("waves", False),  # a decimal: no segment for the benchmark
        ("leaves.", False),  # spaces inside the brackets: no segment
    ]
    unreadable = get_task("rdcap").rows(RUN, _prompt(), "nothing")
    assert len(unreadable) == 1 and unreadable[0]["benchmark_reading_ok"] is False


def test_score_uses_the_benchmark_reading() -> None:
    row = RdcapRow(video="v.mp4", total_frames=32, dense_captions=[
        {"start_frame": 0, "end_frame": 4, "caption": "a man walks"}])
    task = get_task("rdcap")
    exact = task.score(row, "[0, 4]: a man walks", None, ExactMatchJudge())
    assert exact["pred_segments"] == [[0, 4, "a man walks"]] and exact["soda_c"] == pytest.approx(1.0, abs=1e-6)
    # The same answer in the prompt's own bracketed format: empty caption, so the judge scores 0.
    assert task.score(row, "[0, 4]: [a man walks]", None, ExactMatchJudge())["soda_c"] == 0.0
    assert task.score(row, "[0.0, 4.0]: a man walks", None, ExactMatchJudge())["soda_c"] == 0.0
