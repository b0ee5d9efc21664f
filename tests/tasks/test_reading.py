"""Parsers for FGQA letters, RTLoc ranges and RDCap dense captions, and frame-to-seconds mapping."""

from __future__ import annotations

import dataclasses

import pytest

from tasks.fgqa import index_reading as parse_option_letter
from tasks.reading import (
    FrameEvent,
    FrameRange,
    frames_to_seconds,
    parse_dense_captions,
    parse_frame_range,
)

# ------------------------------------------------------------------------------------------ FGQA


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(A)", 0),
        ("A", 0),
        ("A.", 0),
        ("b", 1),
        ("(B) With both hands", 1),
        ("Answer: (B)", 1),
        ("answer: c", 2),
        ("The answer is (C).", 2),
        ("Best option: D", 3),
        ("**B**", 1),
        ("B) because the hands", 1),
        ("  (c)\n", 2),
        ("I think it is (B).", 1),  # first word is no option; one parenthesised letter elsewhere
        ("A man holds the knife", 0),  # as in the benchmark, which reads the first word
    ],
)
def test_option_letter(text: str, expected: int) -> None:
    assert parse_option_letter(text, 4) == expected


@pytest.mark.parametrize("text", ["", "   ", "(E)", "E", "none of them", "Both (A) and (B)", "It holds it"])
def test_option_letter_unreadable_or_out_of_range(text: str) -> None:
    assert parse_option_letter(text, 4) is None


def test_option_letter_respects_option_count() -> None:
    assert parse_option_letter("(C)", 2) is None
    assert parse_option_letter("(C)", 3) == 2


# ----------------------------------------------------------------------------------------- RTLoc


def test_frame_range_well_formed() -> None:
    result = parse_frame_range("[4, 17]")
    assert result == FrameRange(raw_text="[4, 17]", start=4, end=17, raw_start=4.0, raw_end=17.0)
    assert result.ok and not result.swapped and not result.clamped


def test_frame_range_with_extra_words() -> None:
    result = parse_frame_range("The event happens in frames [12,20], then again [25, 28].")
    assert (result.start, result.end) == (12, 20)  # the first pair wins


def test_frame_range_decimals_round_half_up() -> None:
    result = parse_frame_range("[2.5, 10.49]")
    assert (result.start, result.end) == (3, 10)
    assert (result.raw_start, result.raw_end) == (2.5, 10.49)


def test_frame_range_reversed_is_swapped() -> None:
    result = parse_frame_range("[20, 5]")
    assert (result.start, result.end, result.swapped, result.clamped) == (5, 20, True, False)


def test_frame_range_out_of_range_is_clamped_and_recorded() -> None:
    result = parse_frame_range("[-3, 40]")
    assert (result.start, result.end, result.clamped) == (0, 31, True)
    assert (result.raw_start, result.raw_end) == (-3.0, 40.0)
    assert parse_frame_range("[30, 40]", num_frames=16).end == 15


def test_frame_range_parentheses_accepted() -> None:
    assert (parse_frame_range("(3, 9)").start, parse_frame_range("(3, 9)").end) == (3, 9)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty answer"),
    ("  \n", "empty answer"),
    ("The dog never jumps.", "no [start, end] frame range found"),
    ("[start, end]", "no [start, end] frame range found"),
    ("[5]", "no [start, end] frame range found"),
])
def test_frame_range_garbage_keeps_error_and_text(text: str, message: str) -> None:
    result = parse_frame_range(text)
    assert not result.ok
    assert result.error == message
    assert result.raw_text == text
    assert result.start is None and result.end is None


def test_results_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_frame_range("[1, 2]").start = 5  # type: ignore[misc]


# ----------------------------------------------------------------------------------------- RDCap


def test_dense_captions_well_formed() -> None:
    events = parse_dense_captions("[0, 5]: The man picks up a cup.\n[6, 31]: He drinks from it.")
    assert [(e.start, e.end, e.text) for e in events] == [
        (0, 5, "The man picks up a cup."), (6, 31, "He drinks from it.")]
    assert events[1].raw_text == "[6, 31]: He drinks from it."
    assert all(e.ok for e in events)


def test_dense_captions_extra_words_wrapped_lines_and_bracketed_descriptions() -> None:
    text = ("Here are the events:\n[0,4]: [a woman walks in]\n"
            "Frames [5, 9]: she sits\ndown slowly,\n[10, 12] - waves")
    events = parse_dense_captions(text)
    assert events[0] == FrameEvent(raw_text="Here are the events:", error="text outside any [start, end] segment")
    assert [(e.start, e.end, e.text) for e in events[1:]] == [
        (0, 4, "a woman walks in"), (5, 9, "she sits down slowly"), (10, 12, "waves")]


def test_dense_captions_decimals_reversed_and_out_of_range() -> None:
    events = parse_dense_captions("[1.5, 3.2]: a\n[9, 7]: b\n[28, 45]: c")
    assert [(e.start, e.end) for e in events] == [(2, 3), (7, 9), (28, 31)]
    assert [(e.swapped, e.clamped) for e in events] == [(False, False), (True, False), (False, True)]
    assert (events[2].raw_start, events[2].raw_end) == (28.0, 45.0)


def test_dense_captions_keep_a_segment_without_description() -> None:
    events = parse_dense_captions("[0, 3]:\n[4, 8]: runs")
    assert [(e.start, e.end, e.text, e.ok) for e in events] == [(0, 3, "", True), (4, 8, "runs", True)]


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty answer"),
    ("The person walks around.", "no [start, end] segment found"),
    ("(0, 5): walks", "no [start, end] segment found"),  # RDCap needs square brackets
])
def test_dense_captions_garbage_gives_one_error_event(text: str, message: str) -> None:
    events = parse_dense_captions(text)
    assert len(events) == 1
    assert events[0].error == message and events[0].raw_text == text and not events[0].ok


# ----------------------------------------------------------------------------------- to seconds


def test_frames_to_seconds_uses_start_of_first_and_end_of_last_frame() -> None:
    starts = [0.0, 0.5, 1.0, 2.0]
    ends = [0.04, 0.54, 1.04, 2.04]
    assert frames_to_seconds(1, 2, starts, ends) == (0.5, 1.04)
    assert frames_to_seconds(3, 3, starts, ends) == (2.0, 2.04)  # one frame covers its interval


def test_frames_to_seconds_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError):
        frames_to_seconds(0, 4, [0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        frames_to_seconds(1, 0, [0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        frames_to_seconds(0, 1, [0.0, 1.0], [1.0])
