"""PredictionResult -> segments rows (or errors rows)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from model_runner.handler import InferenceFailure
from model_runner.parsers import frames_to_seconds, parse_dense_captions
from schemas.records import ClipPrompt
from schemas.rows import RunContext

log = logging.getLogger(__name__)


def caption_rows(run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
    """The clip's caption row; events the model timestamped are mapped to seconds."""
    clip = prompt.clip
    events = []
    # A caption without timestamped events is still a caption: only well-formed events are kept.
    for event in parse_dense_captions(text, num_frames=len(clip.sample_times)):
        if not event.ok:
            continue
        start_s, end_s = frames_to_seconds(event.start, event.end, clip.sample_times, clip.sample_end_times)
        events.append({"start_frame": event.start, "end_frame": event.end,
                       "start_s": start_s, "end_s": end_s, "text": event.text})
    return [run.segment_row(clip, prompt.task, prompt.prompt, text, text, events)]


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
            if prompt.task == "caption":
                rows = caption_rows(self._run, prompt, result.inference)
            else:
                raise ValueError(f"no parser for task {prompt.task!r}")
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
