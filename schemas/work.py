"""Records about how far each input has got, travelling down the build's one fused chain.

The build has no barrier between inference and the write: every stage from probe to commit runs
in one fused step per bundle, and a video is committed as soon as its last clip is parsed. To stay
in that single chain (a Beam ``Flatten`` would be materialised by some runners, and with it the
whole run), failures and bookkeeping travel as these records beside the work itself: each stage
handles what it knows and passes the rest through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from schemas.records import ClipPlan, FlowRecord, VideoSummary


class Progress(FlowRecord):
    """Base of the bookkeeping records: a stage passes on any ``Progress`` it does not handle."""


@dataclass(frozen=True)
class InputIgnored(Progress):
    """A listed file that is not a video (by extension): counted, never indexed."""

    uri: str


@dataclass(frozen=True)
class InputSkipped(Progress):
    """An input not processed again: already indexed with these settings, or a copy already in flight.

    ``video_id`` is set on an identical copy (same content, another uri): the commit stage records
    the uri as a duplicate of that content so search finds it by its own name.
    """

    uri: str
    reason: Literal["done", "duplicate"]
    video_id: str | None = None


@dataclass(frozen=True)
class VideoFailed(Progress):
    """An input that failed before it had clips (manifest row, listing, probe, plan), with its error rows."""

    uri: str
    video_id: str | None
    errors: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ClipFailed(Progress):
    """A planned clip that will never reach the model (decode or prompt failure), with its error row."""

    clip: ClipPlan
    error: dict[str, Any]


@dataclass(frozen=True)
class ClipOutcome(Progress):
    """One prompt's parsed rows (or its error), or a clip that needed no prompt (``prompts_in_clip`` 0)."""

    clip: ClipPlan
    prompts_in_clip: int
    rows: tuple[dict[str, Any], ...] = ()
    errors: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class VideoResult(Progress):
    """Everything one video produced, gathered: ready to embed and commit."""

    video: VideoSummary
    segments: tuple[dict[str, Any], ...]
    errors: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Outcome:
    """Where one input ended, emitted after its commit: the run's accounting sums these."""

    kind: Literal["indexed", "failed", "skipped", "ignored"]
    uri: str
    clips: int = 0
    segments: int = 0
    errors: int = 0
