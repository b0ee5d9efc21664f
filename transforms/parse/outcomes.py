"""Each model answer -> one ``ClipOutcome``: the prompt's segment rows, or why it has none."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from schemas.records import ClipPrompt, InferenceFailure
from schemas.rows import RunContext
from schemas.work import ClipOutcome
from tasks import get_task

log = logging.getLogger(__name__)


def segment_rows(run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
    """The segment rows of one answer, read by its task's index reading (an unreadable answer keeps ``parse_error``)."""
    return get_task(prompt.task).rows(run, prompt, text)


def append_progress(progress_file: str | None, line: str) -> None:
    """Append one line to the local progress file the CLI draws its bar from (O_APPEND: atomic per line)."""
    if not progress_file:
        return
    fd = os.open(progress_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class ParseOutcomes(beam.DoFn):
    """PredictionResult -> ClipOutcome (rows, or an ``infer``/``parse`` error); other records pass through."""

    def __init__(self, run: RunContext, progress_file: str | None = None) -> None:
        self._run = run
        self._progress_file = progress_file

    def setup(self) -> None:
        self._inferred = beam.metrics.Metrics.counter("plm_index", "prompts_inferred")

    def process(self, item: Any) -> Iterator[Any]:
        if not isinstance(item, PredictionResult):
            yield item
            return
        prompt: ClipPrompt = item.example
        clip = prompt.clip
        self._inferred.inc()
        log.info("inferred %s for clip %d of %s", prompt.task, clip.clip_index, clip.uri)
        append_progress(self._progress_file, f"inferred\t{clip.video_id}\t{clip.clip_index}\t{prompt.task}")
        if isinstance(item.inference, InferenceFailure):
            failure = item.inference
            yield ClipOutcome(clip, prompt.prompts_in_clip, errors=(self._run.error_row(
                clip.uri, clip.video_id, clip.clip_index, "infer", failure.message, attempts=failure.attempts,
                error_class=failure.error_class),))
            return
        try:
            rows = segment_rows(self._run, prompt, item.inference)
        except Exception as exc:  # noqa: BLE001 - keep the raw answer in the error row
            yield ClipOutcome(clip, prompt.prompts_in_clip, errors=(self._run.error_row(
                clip.uri, clip.video_id, clip.clip_index, "parse", f"{exc}; raw output: {item.inference!r}"),))
            return
        yield ClipOutcome(clip, prompt.prompts_in_clip, rows=tuple(rows))
