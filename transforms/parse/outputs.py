"""PredictionResult -> segments rows (or errors rows), with frame indices mapped to seconds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from schemas.records import ClipPlan, ClipPrompt, InferenceFailure, RegionOnClip
from schemas.rows import RunContext
from tasks.reading import (
    frames_to_seconds,
    parse_dense_captions,
    parse_frame_range,
    parse_option_letter,
)

log = logging.getLogger(__name__)


def _event(clip: ClipPlan, start: int, end: int, text: str) -> dict[str, Any]:
    start_s, end_s = frames_to_seconds(start, end, clip.sample_times, clip.sample_end_times)
    return {"start_frame": start, "end_frame": end, "start_s": start_s, "end_s": end_s, "text": text}


def _region(clip: ClipPlan, region_id: str | None) -> RegionOnClip:
    return next(r for r in clip.regions if r.region_id == region_id)


def _region_columns(region: RegionOnClip) -> dict[str, Any]:
    boxes = [{"frame": k, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}
             for k, b in enumerate(region.boxes) if b is not None]
    return {"region_id": region.region_id, "region_boxes": boxes}


def caption_rows(run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
    """The clip's caption row; events the model timestamped are mapped to seconds."""
    clip = prompt.clip
    # A caption without timestamped events is still a caption: only well-formed events are kept.
    events = [_event(clip, e.start, e.end, e.text)
              for e in parse_dense_captions(text, num_frames=len(clip.sample_times)) if e.ok]
    return [run.segment_row(clip, prompt.task, prompt.prompt, text, text, events)]


def question_rows(run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
    """fgqa: the chosen option (scored where the answer is known); sgqa: the open answer."""
    clip = prompt.clip
    question = clip.questions[prompt.question_index]
    columns: dict[str, Any] = {"question": question.question, "qa_uid": question.qa_uid}
    answer = text
    if prompt.task == "fgqa":
        chosen = parse_option_letter(text, len(question.options))
        columns.update(options=list(question.options), chosen_option=chosen, answer_option=question.answer_index)
        if chosen is None:
            columns["parse_error"] = "no option letter found in the answer"
            answer = ""
        else:
            answer = question.options[chosen]
        if question.answer_index is not None:
            columns["correct"] = chosen == question.answer_index
    return [run.segment_row(clip, prompt.task, prompt.prompt, answer, text, **columns)]


def region_rows(run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
    """rcap: a caption over the region's frames; rtloc: a time range; rdcap: one row per event.

    Frame indices are mapped to seconds through the timestamps of the frames actually sampled;
    an end index means the end of that frame's interval. Out-of-range indices are clamped and
    flagged; an answer that cannot be parsed is kept with its reason, never dropped.
    """
    clip = prompt.clip
    region = _region(clip, prompt.region_id)
    columns = _region_columns(region)
    num_frames = len(clip.sample_times)
    if prompt.task == "rcap":
        start_s, end_s = frames_to_seconds(region.start_frame, region.end_frame, clip.sample_times,
                                           clip.sample_end_times)
        return [run.segment_row(clip, "rcap", prompt.prompt, text, text, start_s=start_s, end_s=end_s,
                                start_frame=region.start_frame, end_frame=region.end_frame, **columns)]
    if prompt.task == "rtloc":
        found = parse_frame_range(text, num_frames)
        if not found.ok:
            return [run.segment_row(clip, "rtloc", prompt.prompt, region.caption or "", text,
                                    parse_error=f"{found.error}; raw output kept", **columns)]
        start_s, end_s = frames_to_seconds(found.start, found.end, clip.sample_times, clip.sample_end_times)
        return [run.segment_row(clip, "rtloc", prompt.prompt, region.caption or "", text, start_s=start_s,
                                end_s=end_s, start_frame=found.start, end_frame=found.end,
                                raw_start_frame=found.raw_start, raw_end_frame=found.raw_end,
                                clamped=found.clamped, **columns)]
    events = parse_dense_captions(text, num_frames)
    good = [e for e in events if e.ok]
    if not good:
        reason = "; ".join(e.error for e in events if e.error) or "no segment"
        return [run.segment_row(clip, "rdcap", prompt.prompt, "", text, parse_error=reason, **columns)]
    rows = []
    for event in good:
        start_s, end_s = frames_to_seconds(event.start, event.end, clip.sample_times, clip.sample_end_times)
        rows.append(run.segment_row(clip, "rdcap", prompt.prompt, event.text, text, start_s=start_s, end_s=end_s,
                                    events=[_event(clip, event.start, event.end, event.text)],
                                    start_frame=event.start, end_frame=event.end, raw_start_frame=event.raw_start,
                                    raw_end_frame=event.raw_end, clamped=event.clamped, **columns))
    return rows


PARSERS = {"caption": caption_rows, "fgqa": question_rows, "sgqa": question_rows,
           "rcap": region_rows, "rtloc": region_rows, "rdcap": region_rows}


class ParseOutputs(beam.DoFn):
    """Turn each PredictionResult into segments rows; failed clips become errors rows."""

    def __init__(self, run: RunContext) -> None:
        self._run = run

    def process(self, result: PredictionResult) -> Iterator[Any]:
        prompt: ClipPrompt = result.example
        clip = prompt.clip
        if isinstance(result.inference, InferenceFailure):
            failure = result.inference
            yield beam.pvalue.TaggedOutput("errors", self._run.error_row(
                clip.uri, clip.video_id, clip.clip_index, "infer", failure.message,
                attempts=failure.attempts, error_class=failure.error_class))
            return
        try:
            rows = PARSERS[prompt.task](self._run, prompt, result.inference)
        except Exception as exc:  # noqa: BLE001 - keep the raw answer as an error row
            yield beam.pvalue.TaggedOutput("errors", self._run.error_row(
                clip.uri, clip.video_id, clip.clip_index, "parse", f"{exc}; raw output: {result.inference!r}"))
            return
        beam.metrics.Metrics.counter("plm_index", "segments").inc(len(rows))
        yield from rows


def failed_batch_rows(run: RunContext, failed: tuple[Any, BaseException], stage: str) -> Iterator[dict[str, Any]]:
    """Errors rows for every clip of a batch that RunInference's dead-letter output returned."""
    batch, exc = failed
    items = batch if isinstance(batch, (list, tuple)) else [batch]
    for item in items:
        clip = getattr(item, "clip", None)
        if clip is None and hasattr(item, "clip_frames"):
            clip = item.clip_frames.clip
        uri = clip.uri if clip is not None else "<unknown>"
        yield run.error_row(uri, getattr(clip, "video_id", None), getattr(clip, "clip_index", None), stage, exc)
