"""The chat conversation PLM expects (task prompts live in ``tasks/``)."""

from __future__ import annotations

from typing import Any


def video_conversation(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the video first, then the text, as PLM was trained."""
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
