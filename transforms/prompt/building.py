"""One clip, several tasks: each task becomes one prompt."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from model_runner.prompts import caption_prompt
from schemas.records import ClipFrames, ClipPrompt


@dataclass(frozen=True)
class ClipTask:
    """A clip's frames and one task to run on them."""

    clip_frames: ClipFrames
    task: str
    max_new_tokens: int
    params_json: str = field(default="{}")


def expand_tasks(clip_frames: ClipFrames, tasks: tuple[str, ...], max_new_tokens: int) -> Iterator[ClipTask]:
    """One ClipTask per task asked for."""
    for task in tasks:
        yield ClipTask(clip_frames=clip_frames, task=task, max_new_tokens=max_new_tokens)


def build_prompt(item: ClipTask) -> ClipPrompt:
    """RunInference's preprocess step: the task's prompt text with the clip's frames."""
    frames = item.clip_frames.frames
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (n, h, w, 3), got {frames.dtype} {frames.shape}")
    if item.task == "caption":
        prompt = caption_prompt(frames.shape[0])
    else:
        raise ValueError(f"unknown task {item.task!r}")
    return ClipPrompt(clip=item.clip_frames.clip, frames=frames, task=item.task, prompt=prompt,
                      max_new_tokens=item.max_new_tokens)
