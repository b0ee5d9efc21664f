"""Embed each gathered video's segment texts in one call, right before its commit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import apache_beam as beam

from schemas.rows import RunContext
from schemas.work import VideoResult
from transforms.embed.embedding import embed_texts, load_embedding_model, row_text

log = logging.getLogger(__name__)


class EmbedVideos(beam.DoFn):
    """VideoResult (indexed) -> the same with an ``embedding`` on every segment row; others pass through.

    One batch per video, so a finished video never waits for rows of other videos to fill a batch.
    A failure to embed fails the video (stage ``embed``), and a rerun redoes it.
    """

    def __init__(self, model: str | None, run: RunContext, device: str = "cpu") -> None:
        self._model_name = model
        self._run = run
        self._device = device
        self._model: Any = None

    def setup(self) -> None:
        self._model = load_embedding_model(self._model_name, self._device)

    def process(self, item: Any) -> Iterator[Any]:
        if not isinstance(item, VideoResult) or item.errors or not item.segments:
            yield item
            return
        try:
            vectors = embed_texts([row_text(row) for row in item.segments], self._model)
        except Exception as exc:  # noqa: BLE001 - one video's failure must never fail the job
            log.warning("embedding failed for %s: %s", item.video.uri, exc)
            yield replace(item, errors=(self._run.error_row(item.video.uri, item.video.video_id, None, "embed", exc),))
            return
        yield replace(item, segments=tuple({**row, "embedding": vector.tolist()}
                                           for row, vector in zip(item.segments, vectors, strict=True)))
