"""Gather each video's outcomes, in the bundle that processes it, and release the video when it is whole.

Every stage from probe to here runs fused in one bundle per group of inputs, so all of a video's
clip outcomes arrive in the bundle that took the video in. A video is released as soon as every
one of its planned clips is accounted for: all of a clip's prompts answered (or failed), or the
clip failed to decode. No other video is waited for, and nothing waits for the end of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from schemas.records import ClipPlan, VideoSummary
from schemas.rows import RunContext
from schemas.work import ClipFailed, ClipOutcome, VideoResult

log = logging.getLogger(__name__)


@dataclass
class _ClipState:
    expected: int | None = None
    answered: int = 0
    failed: bool = False

    @property
    def resolved(self) -> bool:
        return self.failed or (self.expected is not None and self.answered >= self.expected)


@dataclass
class _VideoState:
    video: VideoSummary
    clips: dict[int, _ClipState] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, item: ClipOutcome | ClipFailed) -> None:
        clip = self.clips.setdefault(item.clip.clip_index, _ClipState())
        if isinstance(item, ClipFailed):
            clip.failed = True
            self.errors.append(item.error)
            return
        clip.expected = item.prompts_in_clip
        if item.prompts_in_clip:
            clip.answered += 1
        self.rows.extend(item.rows)
        self.errors.extend(item.errors)

    @property
    def complete(self) -> bool:
        resolved = sum(1 for clip in self.clips.values() if clip.resolved)
        return resolved >= self.video.num_clips

    def result(self) -> VideoResult:
        rows = sorted(self.rows, key=lambda r: (r["clip_index"], r["task"], r.get("region_id") or "",
                                                r.get("question") or "", r["start_s"]))
        return VideoResult(self.video, tuple(rows), tuple(self.errors))


def _video_of(clip: ClipPlan) -> VideoSummary:
    if clip.video is None:
        raise ValueError(f"clip {clip.clip_index} of {clip.uri} carries no video summary (planned outside PlanClips?)")
    return clip.video


class GatherVideos(beam.DoFn):
    """ClipOutcome / ClipFailed -> one ``VideoResult`` per video once all its clips are in; others pass."""

    def __init__(self, run: RunContext) -> None:
        self._run = run
        self._videos: dict[str, _VideoState] = {}

    def start_bundle(self) -> None:
        self._videos = {}

    def process(self, item: Any) -> Iterator[Any]:
        if not isinstance(item, ClipOutcome | ClipFailed):
            yield item
            return
        video = _video_of(item.clip)
        state = self._videos.setdefault(video.video_id, _VideoState(video))
        state.add(item)
        if state.complete:
            del self._videos[video.video_id]
            yield state.result()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        # Unreachable when the chain is fused as designed; if a runner ever splits a video across
        # bundles, the video is recorded as failed (and a rerun redoes it) rather than lost.
        for state in self._videos.values():
            missing = [i for i in range(state.video.num_clips) if not state.clips.get(i, _ClipState()).resolved]
            log.error("%s: clips %s never arrived in this bundle; recording the video as failed", state.video.uri,
                      missing)
            state.errors.append(self._run.error_row(
                state.video.uri, state.video.video_id, None, "gather",
                f"clips {missing} of this video never reached the commit stage in the bundle that took it in; "
                "run the build again to redo it", error_class="IncompleteVideo"))
            yield WindowedValue(state.result(), GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._videos = {}
