"""PredictionResult -> segments rows (or errors rows), with frame indices mapped to seconds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from schemas.records import ClipPrompt, InferenceFailure
from schemas.rows import RunContext
from transforms.parse.outcomes import segment_rows

log = logging.getLogger(__name__)


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
            rows = segment_rows(self._run, prompt, result.inference)
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
