"""The commit stage keeps one set of model rows per content: a copy finished in another bundle
becomes a ``duplicate`` commit instead of replacing the first uri's rows (index.read rule 8)."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

from index.read import read_current, snapshot
from schemas.records import VideoSummary
from schemas.rows import RunContext
from schemas.tables import EMBEDDING_DIM
from schemas.work import InputSkipped, VideoResult
from transforms.write.commit import CommitVideos

RUN = RunContext(run_id="r1", settings_hash="s1", model_id="tiny", generation="{}", pipeline_version="t",
                 created_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC))


def result(uri: str, video_id: str = "content-x") -> VideoResult:
    video = VideoSummary(video_id=video_id, uri=uri, size_bytes=10, duration_s=2.0, fps=25.0, num_frames=50,
                         width=64, height=48, rotation=0, codec="h264", num_clips=1)
    segment = {"video_id": video_id, "uri": uri, "clip_index": 0, "start_s": 0.0, "end_s": 2.0, "task": "caption",
               "text": f"made from {uri}", "settings_hash": RUN.settings_hash, "run_id": RUN.run_id,
               "embedding": [0.0] * EMBEDDING_DIM}
    return VideoResult(video=video, segments=(segment,), errors=())


def commit_all(index: str, items: list, kinds: list[str]) -> None:
    """Run the real CommitVideos DoFn over ``items``, one pipeline (so one bundle) each, on Beam's
    direct runner, checking the outcome kind of each."""
    for item, kind in zip(items, kinds, strict=True):
        with BeamPipeline() as p:
            outcomes = (p | beam.Create([item]) | beam.ParDo(CommitVideos(index, RUN, EMBEDDING_DIM, {}))
                        | beam.Map(lambda o: o.kind))
            assert_that(outcomes, equal_to([kind]))


def test_a_copy_committed_later_becomes_a_duplicate_not_a_replacement(tmp_path) -> None:  # noqa: ANN001
    index = str(tmp_path / "index")
    commit_all(index, [result("/v/a.mp4"), result("/v/copy.mp4")], ["indexed", "skipped"])
    segments = read_current(index, "segments")
    assert segments.column("text").to_pylist() == ["made from /v/a.mp4"], "the first uri keeps the rows"
    assert snapshot(index).copies() == {"/v/copy.mp4": ("content-x", "/v/a.mp4")}
    videos = read_current(index, "videos").sort_by("uri")
    assert videos.column("duplicate_of").to_pylist() == [None, "/v/a.mp4"]
    # The same uri again (a --force rerun) replaces its own rows, as before.
    commit_all(index, [result("/v/a.mp4")], ["indexed"])
    assert read_current(index, "segments").num_rows == 1


def test_a_copy_skipped_at_probe_is_recorded_with_its_content(tmp_path) -> None:  # noqa: ANN001
    index = str(tmp_path / "index")
    commit_all(index, [result("/v/a.mp4"), InputSkipped("/v/copy.mp4", "duplicate", "content-x"),
                       InputSkipped("/v/a.mp4", "duplicate")], ["indexed", "skipped", "skipped"])
    assert snapshot(index).copies() == {"/v/copy.mp4": ("content-x", "/v/a.mp4")}
    assert read_current(index, "segments").num_rows == 1
