"""One clip, several tasks: each (task, question or region) becomes one prompt."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from model_runner.prompts import caption_prompt
from schemas.records import ClipFrames, ClipPrompt
from tasks.prompts import (
    MAX_NEW_TOKENS,
    fgqa_prompt,
    rcap_prompt,
    rdcap_prompt,
    rtloc_prompt,
    sgqa_prompt,
)


@dataclass(frozen=True)
class ClipTask:
    """A clip's frames and one task to run on them, for one question or region where the task needs one."""

    clip_frames: ClipFrames
    task: str
    max_new_tokens: int
    region_id: str | None = None
    question_index: int | None = None


def expand_tasks(clip_frames: ClipFrames, tasks: tuple[str, ...], caption_max_new_tokens: int) -> Iterator[ClipTask]:
    """One ClipTask per task asked for, and per question (fgqa, sgqa) or region (rcap, rtloc, rdcap).

    Benchmark tasks generate with the benchmark's own token budget.
    """
    clip = clip_frames.clip
    for task in tasks:
        if clip.tasks and task not in clip.tasks:
            continue
        if task == "caption":
            yield ClipTask(clip_frames, task, caption_max_new_tokens)
        elif task in ("fgqa", "sgqa"):
            for index, question in enumerate(clip.questions):
                if question.task == task:
                    yield ClipTask(clip_frames, task, MAX_NEW_TOKENS[task], question_index=index)
        else:
            for region in clip.regions:
                if region.tasks and task not in region.tasks:
                    continue
                if task == "rtloc" and not region.caption:
                    continue  # RTLoc localises a described event: a region without a caption has none
                yield ClipTask(clip_frames, task, MAX_NEW_TOKENS[task], region_id=region.region_id)


def task_prompt(item: ClipTask) -> str:
    """The prompt text of a task, word for word as PLM-VideoBench asks it."""
    clip = item.clip_frames.clip
    num_frames = len(clip.sample_times)
    if item.task == "caption":
        return caption_prompt(num_frames)
    if item.task in ("fgqa", "sgqa"):
        question = clip.questions[item.question_index]
        if item.task == "fgqa":
            return fgqa_prompt(question.question, list(question.options))
        return sgqa_prompt(question.question)
    region = next(r for r in clip.regions if r.region_id == item.region_id)
    if item.task == "rcap":
        return rcap_prompt(region.start_frame, region.end_frame, num_frames)
    if item.task == "rtloc":
        return rtloc_prompt(region.caption or "", num_frames)
    if item.task == "rdcap":
        return rdcap_prompt(num_frames)
    raise ValueError(f"unknown task {item.task!r}")


def build_prompt(item: ClipTask) -> ClipPrompt:
    """RunInference's preprocess step: the task's prompt with the frames it needs."""
    frames = item.clip_frames.frames_for(item.region_id)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (n, h, w, 3), got {frames.dtype} {frames.shape}")
    return ClipPrompt(clip=item.clip_frames.clip, frames=frames, task=item.task, prompt=task_prompt(item),
                      max_new_tokens=item.max_new_tokens, region_id=item.region_id,
                      question_index=item.question_index)
