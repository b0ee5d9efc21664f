"""Commit each video the moment it is finished: one object per video (``index.commit``), then its outcome."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from index.commit import VideoCommit, now_utc, read_commit, write_commit
from index.done import DoneVideos
from index.layout import IndexLayout, commit_key, uri_key
from schemas.rows import RunContext
from schemas.tables import segments_schema
from schemas.work import InputIgnored, InputSkipped, Outcome, VideoFailed, VideoResult
from transforms.parse.outcomes import append_progress

log = logging.getLogger(__name__)


class CommitVideos(beam.DoFn):
    """VideoResult / VideoFailed -> a per-video commit written to the index; every record -> an ``Outcome``.

    A video with any error is committed as ``failed`` with its error rows only (a rerun retries
    it); otherwise as ``indexed`` with its ``videos`` row and segments. The object's name is the
    video's content id under the run's settings hash, so writing it again replaces it.
    """

    def __init__(self, location: str, run: RunContext, embedding_dim: int, embedding_metadata: dict[bytes, bytes],
                 progress_file: str | None = None) -> None:
        self._layout = IndexLayout(location)
        self._run = run
        self._schema = segments_schema(embedding_dim).with_metadata(embedding_metadata)
        self._progress_file = progress_file

    def setup(self) -> None:
        self._indexed = beam.metrics.Metrics.counter("plm_index", "videos_indexed")
        self._failed = beam.metrics.Metrics.counter("plm_index", "videos_failed")

    def _commit(self, commit: VideoCommit, segments: pa.Table | None) -> None:
        write_commit(self._layout, commit, segments)
        (self._indexed if commit.status == "indexed" else self._failed).inc()
        log.info("committed %s (%s, %d clips, %d segment rows, %d errors)", commit.uri, commit.status,
                 commit.num_clips, commit.num_segments, len(commit.errors))
        append_progress(self._progress_file, f"committed\t{commit.key}\t{commit.status}\t{commit.num_clips}")

    def _done(self) -> DoneVideos:
        if getattr(self, "_done_videos", None) is None:
            self._done_videos = DoneVideos(self._layout.location, self._run.settings_hash)
        return self._done_videos

    def _duplicate_commit(self, uri: str, video_id: str) -> None:
        """Record ``uri`` as an identical copy of the content ``video_id`` (its rows live under another uri)."""
        commit = VideoCommit(key=uri_key(uri), video_id=video_id, uri=uri, settings_hash=self._run.settings_hash,
                             status="duplicate", committed_at=now_utc(), run_id=self._run.run_id)
        self._commit(commit, None)

    def _holder(self, path: str) -> VideoCommit | None:
        """The indexed commit already at ``path`` under another uri that still holds that content, if any."""
        try:
            existing = read_commit(path, with_segments=False).commit
        except FileNotFoundError:
            return None
        if existing.status != "indexed" or self._done().replaced(existing.uri, existing.key, existing.committed_at):
            return None
        return existing

    def _indexed_commit(self, commit: VideoCommit, segments: pa.Table) -> bool:
        """Write an indexed commit, unless the content is already indexed under another uri (then a copy).

        The first uri committed keeps the rows; a copy processed at the same time in another
        bundle becomes a duplicate commit instead of replacing them (checked before and after
        the write, so one of two simultaneous writers notices the other). Returns whether this uri
        holds the rows.
        """
        path = self._layout.commit_path(commit.settings_hash, commit.key)
        holder = self._holder(path)
        if holder is not None and holder.uri != commit.uri:
            self._duplicate_commit(commit.uri, commit.key)
            return False
        self._commit(commit, segments)
        again = self._holder(path)
        if again is not None and again.uri != commit.uri:
            self._duplicate_commit(commit.uri, commit.key)
            return False
        return True

    def process(self, item: Any) -> Iterator[Outcome]:
        if isinstance(item, InputSkipped):
            if item.reason == "duplicate" and item.video_id is not None:
                self._duplicate_commit(item.uri, item.video_id)
            yield Outcome("skipped", item.uri)
        elif isinstance(item, InputIgnored):
            yield Outcome("ignored", item.uri)
        elif isinstance(item, VideoFailed):
            yield self._failed_commit(item.uri, item.video_id, item.errors, 0)
        elif isinstance(item, VideoResult):
            video = item.video
            if item.errors:
                yield self._failed_commit(video.uri, video.video_id, item.errors, video.num_clips)
                return
            commit = VideoCommit(key=commit_key(video.video_id, video.uri), video_id=video.video_id, uri=video.uri,
                                 settings_hash=self._run.settings_hash, status="indexed", committed_at=now_utc(),
                                 run_id=self._run.run_id, video=self._run.video_row(video),
                                 num_clips=video.num_clips, num_segments=len(item.segments),
                                 tasks=tuple(sorted({row["task"] for row in item.segments})))
            if not self._indexed_commit(commit, pa.Table.from_pylist(list(item.segments), schema=self._schema)):
                yield Outcome("skipped", video.uri)  # an identical copy: its rows are another uri's
                return
            yield Outcome("indexed", video.uri, clips=video.num_clips, segments=len(item.segments))
        else:
            raise TypeError(f"the commit stage got a {type(item).__name__}; every record must end as an outcome")

    def _failed_commit(self, uri: str, video_id: str | None, errors: tuple[dict[str, Any], ...],
                       num_clips: int) -> Outcome:
        commit = VideoCommit(key=commit_key(video_id, uri), video_id=video_id, uri=uri,
                             settings_hash=self._run.settings_hash, status="failed", committed_at=now_utc(),
                             run_id=self._run.run_id, errors=errors, num_clips=num_clips)
        self._commit(commit, None)
        return Outcome("failed", uri, clips=num_clips, errors=len(errors))
