"""Expand each decoded clip into its task prompts, numbered so the clip's end is known downstream."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam

from schemas.records import ClipFrames, ClipPrompt, FlowRecord
from schemas.rows import RunContext
from schemas.work import ClipFailed, ClipOutcome, Progress
from transforms.prompt.building import ClipTask, build_prompt, expand_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CountedTask(FlowRecord):
    """One of a clip's tasks, with how many tasks the clip has in all."""

    task: ClipTask
    prompts_in_clip: int


class ExpandClips(beam.DoFn):
    """ClipFrames -> one ``CountedTask`` per prompt (a clip with none: a ``ClipOutcome`` of 0); others pass."""

    def __init__(self, tasks: tuple[str, ...], caption_max_new_tokens: int, run: RunContext) -> None:
        self._tasks = tasks
        self._caption_max_new_tokens = caption_max_new_tokens
        self._run = run

    def process(self, item: Any) -> Iterator[Any]:
        if not isinstance(item, ClipFrames):
            yield item
            return
        clip = item.clip
        try:
            tasks = list(expand_tasks(item, self._tasks, self._caption_max_new_tokens))
        except Exception as exc:  # noqa: BLE001 - one bad clip must never fail the job
            log.warning("expanding tasks failed for %s clip %d: %s", clip.uri, clip.clip_index, exc)
            yield ClipFailed(clip, self._run.error_row(clip.uri, clip.video_id, clip.clip_index, "prompt", exc))
            return
        if not tasks:
            yield ClipOutcome(clip, prompts_in_clip=0)
        for task in tasks:
            yield CountedTask(task, len(tasks))


@beam.typehints.with_output_types(FlowRecord)
class CountedPrompt:
    """RunInference's preprocess step: a counted task's prompt with its frames (a failure becomes its outcome)."""

    def __init__(self, run: RunContext) -> None:
        self._run = run

    def __call__(self, item: CountedTask) -> ClipPrompt | Progress:
        clip = item.task.clip_frames.clip
        try:
            return replace(build_prompt(item.task), prompts_in_clip=item.prompts_in_clip)
        except Exception as exc:  # noqa: BLE001 - the prompt's failure is its outcome
            log.warning("building the %s prompt failed for %s clip %d: %s", item.task.task, clip.uri,
                        clip.clip_index, exc)
            return ClipOutcome(clip, item.prompts_in_clip, errors=(
                self._run.error_row(clip.uri, clip.video_id, clip.clip_index, "prompt", exc),))
