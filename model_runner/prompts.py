"""Task prompts and the chat conversation PLM expects."""

from __future__ import annotations

from typing import Any

CAPTION_PROMPT = (
    "Describe the video in detail. Then list the events in order, one per line, in the format "
    "[start, end]: description, where start and end are frame numbers between 0 and {last_frame} "
    "in this {num_frames} frame video."
)


def caption_prompt(num_frames: int) -> str:
    """The dense clip caption prompt: a detailed caption plus timestamped events."""
    return CAPTION_PROMPT.format(last_frame=num_frames - 1, num_frames=num_frames)


def video_conversation(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the video first, then the text, as PLM was trained."""
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
