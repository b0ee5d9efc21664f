"""Archive-scale inputs: nothing the launcher builds or ships grows with the number of inputs."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from bench.scale import write_manifest
from index.done import DoneVideos
from index.runs import RunRecord
from pipeline.graph import pipeline
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from schemas.rows import RunContext
from tests.index.conftest import commit_video, index_dir  # noqa: F401  (fixtures)


def _proto_bytes(manifest: str, output: str, model: str) -> int:
    config = BuildConfig(input=manifest, output=output, clips=ClipSpec(mode="fixed", window_s=2.0),
                         model=ModelConfig(model=model, max_new_tokens=4, device="cpu"), tasks=("caption",))
    run = RunContext(run_id="r", settings_hash=config.settings_hash(), model_id=model,
                     generation=config.generation_json(), pipeline_version="t", created_at=dt.datetime.now(dt.UTC))
    record = RunRecord(run_id="r", status="running", started_at="", input=manifest, settings_hash=run.settings_hash,
                       model_id=model, pipeline_version="t")
    p = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    pipeline(p, config, run, record, model)
    return len(p.to_runner_api().SerializeToString())


def test_job_graph_does_not_grow_with_the_manifest(tmp_path: Path, tiny_model: str) -> None:
    small = write_manifest(str(tmp_path / "small.jsonl"), 10, ["/v/a.mp4", "/v/b.mp4"])
    large = write_manifest(str(tmp_path / "large.jsonl"), 50_000, ["/v/a.mp4", "/v/b.mp4"])
    sizes = [_proto_bytes(m, str(tmp_path / "index"), tiny_model) for m in (small, large)]
    # 50,000 rows embedded would add megabytes; only the path (pickled in a few places) differs.
    assert abs(sizes[0] - sizes[1]) < 1000, sizes


def test_done_check_ships_no_set_of_done_ids(index_dir: str, commit_video) -> None:  # noqa: ANN001, F811
    empty = len(pickle.dumps(DoneVideos(index_dir, "s0")))
    for i in range(300):
        commit_video(f"v{i:04d}")
    done = DoneVideos(index_dir, "s0")
    assert len(pickle.dumps(done)) == empty
    assert done.is_done("v0007") and not done.is_done("nope")
