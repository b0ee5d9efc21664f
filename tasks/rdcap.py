"""rdcap: dense captions of a tracked region, ``[start, end]: description`` per line, scored by SODA_c.

Prompt: lmms-eval's ``rdcap/rdcap_utils.py``; budget 512 tokens. SODA_c (Fujita et al., ECCV
2020) over IoU x the judge's caption score / 10 (``tasks.scoring.soda_c``).

Two readings of an answer:

- **index reading** (``tasks.reading.parse_dense_captions``, used by ``build``): forgiving.
  "[a, b]" with spaces, decimals or signs; a description runs to the next item, so wrapped lines
  and descriptions written "[in brackets]" stay with their item; nothing is dropped.
- **benchmark reading** (``benchmark_segments``, used by ``eval``): lmms-eval's
  ``extract_delta_segments`` exactly. Items are ``[int,<spaces>int]`` (no space after "[", no
  decimals: "[3.5, 9]: ..." is no segment), and a description is everything up to the next "["
  (so "[0, 4]: [a man walks]" has an empty description). In a description every ":" becomes a
  space and "\\nFrame " is removed; it is stripped, one trailing "," dropped, newlines turned into
  spaces. No segment at all scores SODA_c 0.

A row's ``benchmark_reading_ok`` is true when the benchmark reading finds the row's segment, with
the same numbers at the same place in the answer, and the same description up to colons and
spacing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.benchmark import RdcapRow
from schemas.records import ClipPlan, ClipPrompt
from schemas.rows import RunContext
from tasks.base import CaptionJudge, Target, region_of, seconds_of
from tasks.caption import event_columns
from tasks.prompts import NUM_VIDEO_FRAMES
from tasks.reading import FrameEvent, frames_to_seconds, parse_dense_captions, strip_final_period
from tasks.regions import RegionTask, region_columns
from tasks.scoring import soda_c

_RDCAP_PROMPT = (
    "Create a dense caption of the subject's actions within the red rectangles, including action "
    "frames ids and brief descriptions. For each item use the format [start, end]: [description] "
    "separated by a newline, where start and end are frame numbers between {start_frame} and "
    "{end_frame} in this {total_frames} frame video."
)

_BENCHMARK_SEGMENT = re.compile(r"\[(\d+),\s*(\d+)\]([^\[]*)")


def rdcap_prompt(num_frames: int = NUM_VIDEO_FRAMES) -> str:
    """The RDCap prompt: the model answers lines of ``[start, end]: description``."""
    return _RDCAP_PROMPT.format(start_frame=0, end_frame=num_frames - 1, total_frames=num_frames)


@dataclass(frozen=True)
class BenchmarkSegment:
    """One item as the benchmark reads it: frame numbers as written, its description, where it starts."""

    start: int
    end: int
    caption: str
    offset: int


def _benchmark_caption(text: str) -> str:
    caption = text.replace(":", " ").replace("\nFrame ", "").strip()
    if caption.endswith(","):
        caption = caption[:-1]
    return caption.strip().replace("\n", " ").strip()


def benchmark_segments(prediction: str) -> list[BenchmarkSegment]:
    """The benchmark reading of an RDCap answer (``prediction`` as scored, after ``strip_final_period``)."""
    return [BenchmarkSegment(int(m.group(1)), int(m.group(2)), _benchmark_caption(m.group(3)), m.start())
            for m in _BENCHMARK_SEGMENT.finditer(prediction)]


def _same_description(index_text: str, benchmark_text: str) -> bool:
    return " ".join(index_text.replace(":", " ").split()) == " ".join(benchmark_text.split())


def benchmark_accepts(event: FrameEvent, segments: Sequence[BenchmarkSegment]) -> bool:
    """Whether the benchmark reading has ``event``: same place, same numbers, same description."""
    for segment in segments:
        if segment.offset == event.offset:
            return ((float(segment.start), float(segment.end)) == (event.raw_start, event.raw_end)
                    and _same_description(event.text, segment.caption))
    return False


class RdcapTask(RegionTask):
    """Dense region captions: one index row per event the index reading finds."""

    name = "rdcap"
    order = 50
    max_new_tokens = 512
    annotation = RdcapRow
    judged = True
    headline = "soda_c"

    def prompt(self, clip: ClipPlan, target: Target) -> str:
        return rdcap_prompt(len(clip.sample_times))

    def rows(self, run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
        """One row per event; an answer without any is kept as one row with its reason."""
        clip = prompt.clip
        columns = region_columns(region_of(clip, prompt.region_id))
        events = parse_dense_captions(text, len(clip.sample_times))
        good = [e for e in events if e.ok]
        if not good:
            reason = "; ".join(e.error for e in events if e.error) or "no segment"
            return [run.segment_row(clip, self.name, prompt.prompt, "", text, parse_error=reason,
                                    benchmark_reading_ok=False, **columns)]
        segments = benchmark_segments(strip_final_period(text))
        rows = []
        for event in good:
            start_s, end_s = frames_to_seconds(event.start, event.end, clip.sample_times, clip.sample_end_times)
            rows.append(run.segment_row(
                clip, self.name, prompt.prompt, event.text, text, start_s=start_s, end_s=end_s,
                events=[event_columns(clip, event.start, event.end, event.text)], start_frame=event.start,
                end_frame=event.end, raw_start_frame=event.raw_start, raw_end_frame=event.raw_end,
                clamped=event.clamped, benchmark_reading_ok=benchmark_accepts(event, segments), **columns))
        return rows

    def eval_prompt(self, row: RdcapRow) -> str:
        return rdcap_prompt()

    def score(self, row: RdcapRow, prediction: str, plan: ClipPlan | None, judge: CaptionJudge | None) -> dict[str, Any]:
        if judge is None:
            raise ValueError("rdcap is scored by an LLM judge: pass --judge")
        gt_segments = [[self.gt_frame(c.start_frame, row), self.gt_frame(c.end_frame, row), c.caption]
                       for c in row.dense_captions]
        segments = benchmark_segments(prediction)
        pred = [(float(s.start), float(s.end), s.caption) for s in segments]

        def caption_score(gt: str, pred_caption: str) -> float:
            return judge.score_caption(gt, pred_caption).score / 10

        soda = soda_c(pred, [tuple(g) for g in gt_segments], caption_score) if pred else 0.0
        return {"gt_segments": gt_segments, "pred_segments": [[s.start, s.end, s.caption] for s in segments],
                "pred_seconds": [seconds_of(plan, min(s.start, s.end), max(s.start, s.end)) for s in segments],
                "soda_c": soda}

    def metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"soda_c": sum(r["soda_c"] for r in rows) / len(rows)}


TASK = RdcapTask()
