"""The probe stage as a DoFn: skip what is done, probe the rest."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from index.done import DoneVideos
from schemas.records import VideoInput
from schemas.rows import RunContext
from schemas.work import InputSkipped, VideoFailed
from transforms.probe.probing import identify, probe_video

log = logging.getLogger(__name__)


class ProbeVideos(beam.DoFn):
    """VideoInput -> VideoInfo; a failure becomes ``VideoFailed`` (stage ``probe``); other records pass through.

    Inputs already indexed with these settings (``done``, read from the committed records) are
    skipped, and so is a second input with the same content in the same bundle (a uri listed
    twice, or a copy of a file): both are ``InputSkipped``, never probed or inferred again. A copy
    under another uri carries its content id, so the commit stage records it as a duplicate.
    """

    def __init__(self, run: RunContext, done: DoneVideos | None = None) -> None:
        self._run = run
        self._done = done
        self._in_flight: dict[str, str] = {}  # content id -> the uri being processed

    def start_bundle(self) -> None:
        self._in_flight = {}

    def process(self, item: Any) -> Iterator[Any]:
        if not isinstance(item, VideoInput):
            yield item
            return
        video_id = None
        try:
            identity = identify(item.uri)
            video_id = identity[1]
            if self._done is not None:
                state = self._done.state(video_id)
                if state.done:
                    beam.metrics.Metrics.counter("plm_index", "videos_skipped").inc()
                    copy = state.copy_of(item.uri) is not None and not self._done.copy_recorded(item.uri, video_id)
                    yield InputSkipped(item.uri, "duplicate" if copy else "done", video_id if copy else None)
                    return
            if video_id in self._in_flight:
                copy = self._in_flight[video_id] != item.uri
                yield InputSkipped(item.uri, "duplicate", video_id if copy else None)
                return
            info = probe_video(item, identity)
        except Exception as exc:  # noqa: BLE001 - one bad video must never fail the job
            log.warning("probe failed for %s: %s", item.uri, exc)
            yield VideoFailed(item.uri, video_id, (self._run.error_row(item.uri, video_id, None, "probe", exc),))
            return
        self._in_flight[video_id] = item.uri
        beam.metrics.Metrics.counter("plm_index", "videos_probed").inc()
        yield info
