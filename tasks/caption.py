"""caption: a detailed description of each clip plus its timestamped events (no benchmark).

The index's free-text task: the answer is the caption; events the model timestamps as
``[start, end]: description`` are read by the index reading and mapped to seconds.
"""

from __future__ import annotations

from typing import Any

from schemas.records import ClipPlan, ClipPrompt
from schemas.rows import RunContext
from tasks.base import Target, Task
from tasks.reading import frames_to_seconds, parse_dense_captions

CAPTION_PROMPT = (
    "Describe the video in detail. Then list the events in order, one per line, in the format "
    "[start, end]: description, where start and end are frame numbers between 0 and {last_frame} "
    "in this {num_frames} frame video."
)


def caption_prompt(num_frames: int) -> str:
    """The dense clip caption prompt: a detailed caption plus timestamped events."""
    return CAPTION_PROMPT.format(last_frame=num_frames - 1, num_frames=num_frames)


def event_columns(clip: ClipPlan, start: int, end: int, text: str) -> dict[str, Any]:
    """One ``events`` entry: sampled-frame indices, the seconds they cover, and the text."""
    start_s, end_s = frames_to_seconds(start, end, clip.sample_times, clip.sample_end_times)
    return {"start_frame": start, "end_frame": end, "start_s": start_s, "end_s": end_s, "text": text}


class CaptionTask(Task):
    """Free captions of whole clips; the build's ``--max-new-tokens`` is the budget."""

    name = "caption"
    order = 0

    def prompt(self, clip: ClipPlan, target: Target) -> str:
        return caption_prompt(len(clip.sample_times))

    def rows(self, run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
        """The clip's caption row; only well-formed timestamped events are kept as events."""
        clip = prompt.clip
        events = [event_columns(clip, e.start, e.end, e.text)
                  for e in parse_dense_captions(text, num_frames=len(clip.sample_times)) if e.ok]
        return [run.segment_row(clip, self.name, prompt.prompt, text, text, events)]


TASK = CaptionTask()
