"""The PLM-VideoBench prompts, spelled out literally as lmms-eval builds them."""

from __future__ import annotations

import pytest

from tasks import get_task
from tasks.fgqa import fgqa_prompt
from tasks.prompts import benchmark_frame_index
from tasks.rcap import rcap_prompt
from tasks.rdcap import rdcap_prompt
from tasks.rtloc import rtloc_prompt
from tasks.sgqa import sgqa_prompt


def test_fgqa_prompt_is_the_benchmark_string_with_the_answer_slip() -> None:
    prompt = fgqa_prompt("How does the person hold the knife?", ["With the left hand", "With both hands",
                                                                  "With the right hand"])
    assert prompt == (
        "Question: How does the person hold the knife?\n"
        "Options:\n"
        "(A) With the left hand\n"
        "(B) With both hands\n"
        "(C) With the right hand\n"
        "Only give the best option.{answer}"
    )


def test_fgqa_prompt_without_the_slip_and_trailing_space_stripped() -> None:
    # Only the block's trailing whitespace is stripped (the last option's here), as in qa_template.
    prompt = fgqa_prompt("Which tool?", ["a saw ", "a drill  "], answer_slip=False)
    assert prompt == "Question: Which tool?\nOptions:\n(A) a saw \n(B) a drill\nOnly give the best option."


def test_fgqa_prompt_needs_options() -> None:
    with pytest.raises(ValueError):
        fgqa_prompt("Which tool?", [])


def test_sgqa_prompt_keeps_the_double_spaces_and_the_slip() -> None:
    assert sgqa_prompt("Where did I put the keys?") == (
        "The following question is asked by the camera wearer at the end of the video.  Provide a "
        "detailed answer even if unsure.  Try to answer in around 20-30 words.  Now answer the "
        "following question based on the video content: Where did I put the keys?{answer}"
    )
    assert sgqa_prompt("Q?", answer_slip=False).endswith("video content: Q?")


def test_rcap_prompt() -> None:
    assert rcap_prompt(3, 17) == (
        "Give a detailed description of the events occurring in the region marked by the red "
        "rectangle within frames [3, 17] in this 32 frame video."
    )
    # lmms-eval fills {total_frames} with the source video's frame count.
    assert rcap_prompt(3, 17, total_frames=212).endswith("within frames [3, 17] in this 212 frame video.")


def test_rtloc_prompt() -> None:
    assert rtloc_prompt("the dog jumps over the fence") == (
        "Given the region marked by the red rectangle in the video, please provide the start and end "
        "frame of when 'the dog jumps over the fence' happens. Use the format [start, end] where start "
        "and end are frame numbers between 0 and 31 in this 32 frame video."
    )
    assert rtloc_prompt("x", num_frames=16).endswith("between 0 and 15 in this 16 frame video.")


def test_rdcap_prompt() -> None:
    assert rdcap_prompt() == (
        "Create a dense caption of the subject's actions within the red rectangles, including action "
        "frames ids and brief descriptions. For each item use the format [start, end]: [description] "
        "separated by a newline, where start and end are frame numbers between 0 and 31 in this 32 "
        "frame video."
    )


def test_max_new_tokens_follow_the_yamls() -> None:
    budgets = {name: get_task(name).max_new_tokens for name in ("fgqa", "sgqa", "rcap", "rtloc", "rdcap")}
    assert budgets == {"fgqa": 16, "sgqa": 16, "rcap": 512, "rtloc": 16, "rdcap": 512}


def test_benchmark_frame_index_truncates() -> None:
    # 212 frames -> factor 6.625: 100 / 6.625 = 15.09 -> 15; 211 / 6.625 = 31.85 -> 31 (not 32).
    assert benchmark_frame_index(100, 212) == 15
    assert benchmark_frame_index(211, 212) == 31
    assert benchmark_frame_index(0, 212) == 0
