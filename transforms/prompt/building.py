"""One clip, several tasks: each (task, question or region) becomes one prompt."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from schemas.records import ClipFrames, ClipPrompt
from tasks import Target, get_task


@dataclass(frozen=True)
class ClipTask:
    """A clip's frames and one task to run on them, for one question or region where the task needs one."""

    clip_frames: ClipFrames
    task: str
    max_new_tokens: int
    region_id: str | None = None
    question_index: int | None = None
    # How many of the clip's tasks look at the same frames as this one (the clip's, or its region's).
    prompts_on_frames: int = 1


def expand_tasks(clip_frames: ClipFrames, tasks: tuple[str, ...], caption_max_new_tokens: int) -> Iterator[ClipTask]:
    """One ClipTask per task asked for, and per target the task finds in the clip (question or region).

    Which targets a task has, and its token budget, come from the task itself (``tasks/``).
    Each task also says how many of them look at its frames (``prompts_on_frames``).
    """
    clip = clip_frames.clip
    found = []
    for name in tasks:
        if clip.tasks and name not in clip.tasks:
            continue
        task = get_task(name)
        budget = task.budget(caption_max_new_tokens)
        found.extend(ClipTask(clip_frames, name, budget, region_id=target.region_id,
                              question_index=target.question_index) for target in task.targets(clip))
    on_frames = Counter(item.region_id for item in found)
    for item in found:
        yield replace(item, prompts_on_frames=on_frames[item.region_id])


def task_prompt(item: ClipTask) -> str:
    """The prompt text of a task, word for word as its task module builds it."""
    target = Target(question_index=item.question_index, region_id=item.region_id)
    return get_task(item.task).prompt(item.clip_frames.clip, target)


def build_prompt(item: ClipTask) -> ClipPrompt:
    """RunInference's preprocess step: the task's prompt with the frames it needs."""
    frames = item.clip_frames.frames_for(item.region_id)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (n, h, w, 3), got {frames.dtype} {frames.shape}")
    return ClipPrompt(clip=item.clip_frames.clip, frames=frames, task=item.task, prompt=task_prompt(item),
                      max_new_tokens=item.max_new_tokens, region_id=item.region_id,
                      question_index=item.question_index, prompts_on_frames=item.prompts_on_frames)
