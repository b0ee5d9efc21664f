"""RTLoc's two readings, lmms-eval's IoU and strict thresholds, and its parse-error stand-in."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from schemas.benchmark import RtlocRow
from schemas.records import ClipPlan, ClipPrompt, RegionOnClip
from schemas.rows import RunContext
from tasks import get_task
from tasks.reading import parse_frame_range
from tasks.rtloc import benchmark_row_scores, benchmark_window
from tasks.scoring import temporal_iou

RUN = RunContext("r", "s", "m", "{}", "0", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    ("answer", "benchmark", "index"),
    [
        ("[3, 9]", (3.0, 9.0), (3.0, 9.0)),
        ("It happens in [3.5,9].", (3.5, 9.0), (3.5, 9.0)),
        ("[9, 3]", (9.0, 3.0), (3.0, 9.0)),  # as written; lmms-eval's IoU orders it
        ("[3,\n9]", (3.0, 9.0), (3.0, 9.0)),  # \s* after the comma takes a newline
        # The cases: the index reads them, the benchmark does not.
        ("[ 3, 9 ]", None, (3.0, 9.0)),
        ("(3, 9)", None, (3.0, 9.0)),
        ("[-1, 4]", None, (-1.0, 4.0)),
        ("[03, 9]", None, (3.0, 9.0)),  # a Python literal with a leading zero is unreadable
        ("frames 3 to 9", None, None),
    ],
)
def test_benchmark_and_index_readings(answer: str, benchmark: tuple[float, float] | None,
                                      index: tuple[float, float] | None) -> None:
    window = benchmark_window(answer)
    assert (None if window is None else window[:2]) == benchmark
    found = parse_frame_range(answer)
    assert (None if not found.ok else (found.raw_start, found.raw_end)) == index


def test_two_ranges_the_readings_pick_different_ones() -> None:
    answer = "(1, 2) or rather [5, 8]"
    assert benchmark_window(answer)[:2] == (5.0, 8.0)
    assert (parse_frame_range(answer).raw_start, parse_frame_range(answer).raw_end) == (1.0, 2.0)
    answer = "[ 1, 2] or [5, 8]"
    assert benchmark_window(answer)[:2] == (5.0, 8.0)
    assert parse_frame_range(answer).raw_start == 1.0


def test_iou_is_lmms_evals_and_thresholds_are_strict() -> None:
    # On paper 0.3 exactly; the floats give 0.30000000000000004, which a plain ">" would count.
    pred, gt = (0.1, 0.4), (0.0, 1.0)
    assert (pred[1] - pred[0]) / 1.0 > 0.3
    assert temporal_iou(pred, gt) < 0.3  # lmms-eval's union + 1e-8 keeps it below
    assert temporal_iou((0, 10), (0, 10)) < 1.0
    assert temporal_iou((0, 5), (5, 5)) == 0.0
    row = RtlocRow(video="v.mp4", total_frames=32, caption="c", start_frame=0, end_frame=10)
    # [0, 5] against [0, 10]: IoU 0.5 on paper, not above 0.5 for the benchmark.
    scores = benchmark_row_scores("[0, 5]", row)
    assert scores["hits"] == {"0.3": True, "0.5": False, "0.7": False, "0.9": False}
    assert scores["mean_recall"] == 0.25 and not scores["parse_error"]


def test_parse_error_scores_lmms_evals_stand_in_range() -> None:
    # lmms-eval scores [end_frame + 10, end_frame + 20] in source frames against the 32-frame truth.
    long = RtlocRow(video="v.mp4", total_frames=320, caption="c", start_frame=100, end_frame=200)
    scores = benchmark_row_scores("no idea", long)
    assert scores["parse_error"] and scores["scored_range"] == [210.0, 220.0] and scores["iou"] == 0.0
    # With fewer than 32 source frames the stand-in overlaps the rescaled truth and scores above 0.
    short = RtlocRow(video="v.mp4", total_frames=16, caption="c", start_frame=8, end_frame=15)
    scores = benchmark_row_scores("[ 16, 30 ]", short)
    assert scores["gt_range"] == [16, 30] and scores["scored_range"] == [25.0, 35.0]
    assert scores["iou"] == pytest.approx(5 / 19, abs=1e-6) and scores["parse_error"]


def _prompt() -> ClipPrompt:
    region = RegionOnClip("cup", tuple([(1.0, 1.0, 5.0, 5.0)] * 32), 0, 31, caption="the cup is lifted")
    times = tuple(k / 8 for k in range(32))
    clip = ClipPlan(video_id="v", uri="v.mp4", clip_index=0, start_s=0.0, end_s=4.0,
                    sample_frame_indices=tuple(range(32)), sample_times=times,
                    sample_end_times=tuple(t + 1 / 8 for t in times), regions=(region,))
    return ClipPrompt(clip, np.zeros((32, 4, 4, 3), np.uint8), "rtloc", "p", 16, region_id="cup")


@pytest.mark.parametrize(
    ("answer", "ok"),
    [("[3, 9]", True), ("[3, 9].", True), ("[9, 3]", True), ("[3, 40]", True),  # clamped, but read alike
     ("[ 3, 9 ]", False), ("(3, 9)", False), ("[-1, 4]", False), ("(1, 2) then [5, 8]", False), ("none", False)],
)
def test_rows_mark_answers_the_benchmark_reads_differently(answer: str, ok: bool) -> None:
    row = get_task("rtloc").rows(RUN, _prompt(), answer)[0]
    assert row["benchmark_reading_ok"] is ok
