"""FGQA's two readings of an answer: the forgiving index reading and lmms-eval's ``check_ans``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from schemas.records import ClipPlan, ClipPrompt, QuestionOnClip
from schemas.rows import RunContext
from tasks import get_task
from tasks.fgqa import benchmark_credited, benchmark_credits, index_reading

RUN = RunContext("r", "s", "m", "{}", "0", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
A, B, C = 0, 1, 2


@pytest.mark.parametrize(
    ("answer", "credited"),
    [
        # The cases.
        ("The answer is (A)", []),  # first word "the": lmms-eval credits nothing
        ("(A)(B)", [A, B]),  # "(b)" is inside the first word "(a)(b)"
        ("**A**", []),
        ("[A]", []),
        ("A:", []),
        ("Option A", []),
        # Forms lmms-eval accepts.
        ("(A)", [A]),
        ("A", [A]),
        ("a", [A]),
        ("A. the ball", [A]),  # dots are removed from the first word: "a" is inside "(a)"
        ("(a", [A]),
        ("b)", [B]),
        ("Answer: (B)", [B]),  # "answer:" is removed (any case) and the rest stripped
        ("ANSWER:c", [C]),
        ("(C)\nbecause it moves", [C]),  # only spaces split words: "(c)" is inside "(c)\nbecause"
        ("(", [A, B, C]),  # "(" is inside every "(x)"
        ("..", [A, B, C]),  # dots removed: the empty word is inside every option
        # Forms lmms-eval rejects.
        ("", []),
        (" (A)", []),  # a leading space makes the first word empty
        ("A\n", []),
        ("The ball", []),
        ("(D)", []),
    ],
)
def test_benchmark_reading_is_lmms_evals_check_ans(answer: str, credited: list[int]) -> None:
    assert benchmark_credited(answer, 3) == credited
    for option in range(3):
        assert benchmark_credits(answer, option) == (option in credited)


@pytest.mark.parametrize(
    ("answer", "chosen"),
    [
        ("The answer is (A)", A),  # what users want read as A
        ("**A**", A), ("[A]", A), ("A:", A), ("Option A", A), ("Answer: (B)", B), ("(A)(B)", A),
        ("(C)\nbecause it moves", C), (" (A)", A), ("A\n", A),
        ("I think (B) fits.", B), ("(", None), ("..", None), ("", None), ("Both (A) and (B)", None),
    ],
)
def test_index_reading_is_forgiving(answer: str, chosen: int | None) -> None:
    assert index_reading(answer, 3) == chosen


def _prompt(answer_index: int | None) -> ClipPrompt:
    question = QuestionOnClip("fgqa", "What moves?", ("the ball", "the box", "the cup"), answer_index, "q1")
    clip = ClipPlan(video_id="v", uri="v.mp4", clip_index=0, start_s=0.0, end_s=4.0,
                    sample_frame_indices=(0,), sample_times=(0.0,), sample_end_times=(4.0,), questions=(question,))
    return ClipPrompt(clip, np.zeros((1, 4, 4, 3), np.uint8), "fgqa", "p", 16, question_index=0)


@pytest.mark.parametrize(
    ("answer", "chosen", "ok"),
    [
        ("(A)", A, True), ("(A).", A, True), ("B", B, True),
        ("The answer is (A)", A, False),  # the index reads A; the benchmark would credit nothing
        ("(A)(B)", A, False),  # the benchmark would credit B as well
        ("**C**", C, False),
        ("no idea", None, False),
    ],
)
def test_rows_mark_answers_the_benchmark_reads_differently(answer: str, chosen: int | None, ok: bool) -> None:
    row = get_task("fgqa").rows(RUN, _prompt(answer_index=A), answer)[0]
    assert row["chosen_option"] == chosen and row["benchmark_reading_ok"] is ok
    assert row["correct"] is (chosen == A)
    assert row["text"] == ("" if chosen is None else ("the ball", "the box", "the cup")[chosen])
