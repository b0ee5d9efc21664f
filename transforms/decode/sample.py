"""The decode stage as a DoFn."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from schemas.config import DecodeConfig
from schemas.records import VideoClips
from schemas.rows import RunContext
from schemas.work import ClipFailed
from transforms.decode.backends import decoder_for
from transforms.decode.isolated import IsolatedDecoder, give_back_decoder, take_decoder

log = logging.getLogger(__name__)


class SampleFrames(beam.DoFn):
    """VideoClips -> one ClipFrames per clip, from a single decode pass over the video; other records pass.

    With ``isolation="process"`` (the default) decoding runs in a child process that is killed
    when the video's hard time limit passes; ``"none"`` decodes in the worker itself (the time
    limit and frame cap are then checked between frames only).

    A failure yields a ``ClipFailed`` (stage ``decode``) for each clip not yet emitted, so every
    planned clip is either decoded or accounted for.
    """

    def __init__(self, config: DecodeConfig, run: RunContext) -> None:
        self._config = config
        self._run = run
        self._decoder = None
        self._frames_counter = beam.metrics.Metrics.counter("plm_index", "clips_decoded")

    def setup(self) -> None:
        if self._config.isolation == "process":
            # An idle one of this process (started ahead by the build, or left by an earlier
            # stage), else one started now.
            self._decoder = take_decoder()
        else:
            self._decoder = decoder_for(self._config)

    def teardown(self) -> None:
        if isinstance(self._decoder, IsolatedDecoder):
            give_back_decoder(self._decoder)
            self._decoder = None

    def process(self, video: Any) -> Iterator[Any]:
        if not isinstance(video, VideoClips):
            yield video
            return
        emitted: set[int] = set()
        try:
            for clip_frames in self._decoder.decode(video, self._config):
                emitted.add(clip_frames.clip.clip_index)
                self._frames_counter.inc()
                yield clip_frames
        except Exception as exc:  # noqa: BLE001 - one bad video must never fail the job
            log.warning("decode failed for %s: %s", video.info.uri, exc)
            for clip in video.clips:
                if clip.clip_index not in emitted:
                    yield ClipFailed(clip, self._run.error_row(video.info.uri, video.info.video_id, clip.clip_index,
                                                               "decode", exc))
