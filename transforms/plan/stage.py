"""The plan stage as a DoFn."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import apache_beam as beam

from schemas.config import ClipSpec
from schemas.manifest import Question
from schemas.records import VideoClips, VideoInfo, VideoSummary
from schemas.rows import RunContext
from schemas.work import VideoFailed
from transforms.plan.planning import plan_video

log = logging.getLogger(__name__)


class PlanClips(beam.DoFn):
    """VideoInfo -> VideoClips, each clip carrying its video's summary; a failure becomes ``VideoFailed``.

    Other records pass through unchanged.
    """

    def __init__(self, spec: ClipSpec, num_frames: int, run: RunContext,
                 questions: tuple[Question, ...] = ()) -> None:
        self._spec = spec
        self._num_frames = num_frames
        self._run = run
        self._questions = questions

    def process(self, info: Any) -> Iterator[Any]:
        if not isinstance(info, VideoInfo):
            yield info
            return
        try:
            clips = plan_video(info, self._spec, self._num_frames, self._questions)
        except Exception as exc:  # noqa: BLE001 - one bad video must never fail the job
            log.warning("planning failed for %s: %s", info.uri, exc)
            yield VideoFailed(info.uri, info.video_id, (self._run.error_row(info.uri, info.video_id, None, "plan", exc),))
            return
        summary = VideoSummary.of(info, len(clips))
        beam.metrics.Metrics.counter("plm_index", "clips_planned").inc(len(clips))
        log.info("planned %d clips of %s", len(clips), info.uri)
        yield VideoClips(info=info, clips=tuple(replace(clip, video=summary) for clip in clips))
