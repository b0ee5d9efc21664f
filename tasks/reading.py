"""The index reading of frame-indexed answers (RTLoc ranges, RDCap and caption events), shared by tasks.

This is the forgiving reading ``build`` uses; each task module holds its benchmark reading
(lmms-eval's rules) next to it. The parsers never raise and never drop text: an answer that cannot be read comes back as a result
carrying ``error`` and the raw text. Frame indices are in the space of the sampled frames (0..31
for PLM-VideoBench); ``frames_to_seconds`` maps them to time through the frames actually sampled.

They are more lenient than lmms-eval's (``lmms_eval/tasks/plm_videobench``): spaces inside the
brackets, round brackets, negative and decimal indices. ``raw_start``/``raw_end`` keep the
numbers as written and ``offset`` where the item starts in the answer, so a task can compare
this reading with the benchmark's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_NUMBER = r"-?\d+(?:\.\d+)?"
# RTLoc: the first "[a, b]" (or "(a, b)") anywhere in the answer.
_RANGE = re.compile(rf"[\[(]\s*({_NUMBER})\s*,\s*({_NUMBER})\s*[\])]")
# RDCap: square brackets only, since a description may itself contain "(2, 3)".
_SEGMENT = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
# A "Frame"/"Frames" word left dangling right before the next segment ("...\nFrames [4, 9]: ...").
_DANGLING_FRAME_WORD = re.compile(r"\bframes?\s*$", re.IGNORECASE)

@dataclass(frozen=True)
class FrameRange:
    """An RTLoc answer: the frame range ``[start, end]`` or, when ``error`` is set, no range.

    ``start``/``end`` are rounded (half up), ordered and clamped to 0..num_frames-1;
    ``raw_start``/``raw_end`` are the numbers as written (ordered, not rounded or clamped).
    """

    raw_text: str
    start: int | None = None
    end: int | None = None
    raw_start: float | None = None
    raw_end: float | None = None
    swapped: bool = False
    clamped: bool = False
    error: str | None = None
    offset: int | None = field(default=None, compare=False)
    """Where the range starts in the answer (its opening bracket)."""

    @property
    def ok(self) -> bool:
        """Whether a range was read."""
        return self.error is None


@dataclass(frozen=True)
class FrameEvent(FrameRange):
    """One RDCap item ``[start, end]: text``, or text that could not be read as one (``error``).

    Index fields mean the same as in ``FrameRange``; ``raw_text`` is this item's own slice of the
    answer. A segment with an empty description is kept with ``text == ""``.
    """

    text: str = ""


@dataclass(frozen=True)
class _Normalised:
    start: int
    end: int
    raw_start: float
    raw_end: float
    swapped: bool
    clamped: bool


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _normalise(first: str, second: str, num_frames: int) -> _Normalised:
    a, b = float(first), float(second)
    swapped = a > b
    if swapped:
        a, b = b, a
    last = num_frames - 1
    start, end = _round_half_up(a), _round_half_up(b)
    clamped_start, clamped_end = min(max(start, 0), last), min(max(end, 0), last)
    clamped = (clamped_start, clamped_end) != (start, end)
    return _Normalised(clamped_start, clamped_end, a, b, swapped, clamped)


def parse_frame_range(text: str, num_frames: int = 32) -> FrameRange:
    """Read an RTLoc answer ``[start, end]`` (frame indices in 0..num_frames-1).

    The first bracketed pair wins, wherever it is in the text. Decimals are rounded half up,
    a reversed range is swapped and indices outside 0..num_frames-1 are clamped; ``swapped`` and
    ``clamped`` record that. Empty or unreadable answers give a result with ``error`` set.
    """
    if not text or not text.strip():
        return FrameRange(raw_text=text, error="empty answer")
    match = _RANGE.search(text)
    if match is None:
        return FrameRange(raw_text=text, error="no [start, end] frame range found")
    n = _normalise(match.group(1), match.group(2), num_frames)
    return FrameRange(raw_text=text, start=n.start, end=n.end, raw_start=n.raw_start, raw_end=n.raw_end,
                      swapped=n.swapped, clamped=n.clamped, offset=match.start())


def _clean_caption(piece: str) -> str:
    caption = " ".join(piece.split())
    caption = caption.lstrip(":-– ").rstrip(",; ")
    if caption.startswith("[") and caption.endswith("]"):  # "[0, 4]: [a man walks]"
        caption = caption[1:-1].strip()
    return caption


def parse_dense_captions(text: str, num_frames: int = 32) -> list[FrameEvent]:
    """Read an RDCap answer: items ``[start, end]: description``, one per line as asked.

    An item's description runs to the next ``[start, end]``, so wrapped lines stay with their item.
    Indices are normalised as in ``parse_frame_range``. Nothing is dropped: text before the first
    item comes back as an event with ``error`` set, and an empty or unreadable answer gives a single
    event with ``error`` set. Use ``event.ok`` to keep only the segments.
    """
    if not text or not text.strip():
        return [FrameEvent(raw_text=text, error="empty answer")]
    matches = list(_SEGMENT.finditer(text))
    if not matches:
        return [FrameEvent(raw_text=text, error="no [start, end] segment found")]
    events: list[FrameEvent] = []
    lead = text[: matches[0].start()].strip()
    if lead:
        events.append(FrameEvent(raw_text=lead, error="text outside any [start, end] segment"))
    for i, match in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        piece = text[match.end():stop]
        if i + 1 < len(matches):
            piece = _DANGLING_FRAME_WORD.sub("", piece)
        n = _normalise(match.group(1), match.group(2), num_frames)
        events.append(FrameEvent(raw_text=text[match.start():stop].strip(), text=_clean_caption(piece),
                                 start=n.start, end=n.end, raw_start=n.raw_start, raw_end=n.raw_end,
                                 swapped=n.swapped, clamped=n.clamped, offset=match.start()))
    return events


def frames_to_seconds(start_frame: int, end_frame: int, sample_times: Sequence[float],
                      sample_end_times: Sequence[float]) -> tuple[float, float]:
    """Seconds covered by the sampled-frame range ``[start_frame, end_frame]`` (inclusive).

    ``sample_times[k]`` and ``sample_end_times[k]`` are the start and end times of the source frame
    sampled at index ``k``. The start index means the *start* of its frame and the end index means
    the *end* of its frame's interval, so ``[3, 3]`` covers frame 3's whole display time:
    ``(sample_times[start_frame], sample_end_times[end_frame])``.
    """
    count = len(sample_times)
    if len(sample_end_times) != count:
        raise ValueError(f"{count} sample times but {len(sample_end_times)} end times")
    if not 0 <= start_frame <= end_frame < count:
        raise ValueError(f"frame range [{start_frame}, {end_frame}] is not ordered within 0..{count - 1}")
    return float(sample_times[start_frame]), float(sample_end_times[end_frame])


def strip_final_period(text: str) -> str:
    """Drop one trailing ".", as lmms-eval's PLM wrapper does to every answer before scoring."""
    return text[:-1] if text.endswith(".") else text
