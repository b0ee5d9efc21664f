"""End-to-end builds on real Beam runners over real videos with the tiny PLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from index import list_runs, read_current
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, DecodeConfig, ModelConfig
from schemas.records import ClipFrames, VideoInput
from schemas.rows import RunContext
from schemas.tables import COMMITS_SCHEMA, RUN_SPECIFIC_COLUMNS, TABLES
from schemas.work import VideoFailed
from transforms.decode import SampleFrames
from transforms.plan import PlanClips, plan_clips
from transforms.probe import ProbeVideos, probe_video


def make_config(source: str, output: str, model: str, **decode: object) -> BuildConfig:
    return BuildConfig(input=source, output=output, clips=ClipSpec.parse("fixed:4"),
                       decode=DecodeConfig(**decode), model=ModelConfig(model=model, max_new_tokens=6, batch_size=2,
                                                                        torch_threads=2))


def comparable(table) -> list[dict]:
    rows = table.drop_columns(list(RUN_SPECIFIC_COLUMNS)).to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.fixture(scope="module")
def fnapi_index(tmp_path_factory: pytest.TempPathFactory, video_folder: Path, tiny_model: str) -> tuple[str, object]:
    output = str(tmp_path_factory.mktemp("index"))
    summary = run_build(make_config(str(video_folder), output, tiny_model), beam_options([]))
    return output, summary


def test_segments_match_planned_clips(fnapi_index, video_folder: Path) -> None:
    output, summary = fnapi_index
    segments = read_current(output, "segments").to_pylist()
    by_video: dict[str, list[dict]] = {}
    for row in segments:
        by_video.setdefault(Path(row["uri"]).name, []).append(row)
    assert sorted(by_video) == ["a.mp4", "b.mkv"]
    for name, rel in (("a.mp4", "a.mp4"), ("b.mkv", "sub/b.mkv")):
        info = probe_video(VideoInput(str(video_folder / rel)))
        planned = plan_clips(info, ClipSpec.parse("fixed:4"), 32)
        rows = sorted(by_video[name], key=lambda r: r["clip_index"])
        assert len(rows) == len(planned)
        for row, clip in zip(rows, planned, strict=True):
            assert (row["start_s"], row["end_s"]) == (clip.start_s, clip.end_s)
            assert row["frame_timestamps"] == list(clip.sample_times)
            assert len(row["frame_timestamps"]) == 32
            assert row["task"] == "caption" and row["video_id"] == info.video_id
            assert row["text"] is not None
    a_rows = sorted(by_video["a.mp4"], key=lambda r: r["clip_index"])
    assert [(r["start_s"], r["end_s"]) for r in a_rows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 9.0)]
    # At 25 fps the first clip samples frames round(i*99/31) of 100: 0, 0.12 s, ... 3.96 s.
    assert a_rows[0]["frame_timestamps"][:3] == pytest.approx([0.0, 0.12, 0.24])
    assert a_rows[0]["frame_timestamps"][-1] == pytest.approx(3.96)


def test_errors_and_accounting(fnapi_index) -> None:
    output, summary = fnapi_index
    errors = read_current(output, "errors").to_pylist()
    assert [(Path(e["uri"]).name, e["stage"]) for e in errors] == [("broken.mp4", "probe")]
    assert errors[0]["error_class"] == "ProbeError" and errors[0]["message"]
    assert (summary.inputs, summary.indexed, summary.failed, summary.skipped, summary.ignored) == (3, 2, 1, 0, 1)
    (record,) = list_runs(output)
    assert record.status == "finished" and record.accounting_line == summary.line()
    videos = read_current(output, "videos").to_pylist()
    assert sorted((Path(v["uri"]).name, v["num_clips"]) for v in videos) == [("a.mp4", 3), ("b.mkv", 2)]


def test_the_build_leaves_only_its_idle_decode_process_running(fnapi_index) -> None:
    # The build starts one ahead (the embedded runner), its decode stage takes it and gives it back
    # at teardown for the next build in this process; nothing else may be left running.
    import multiprocessing

    from transforms.decode.isolated import MAX_IDLE, idle_decoders

    running = {p.pid for p in multiprocessing.active_children() if p.name == "plm-index-decoder"}
    assert running <= set(idle_decoders())
    assert len(idle_decoders()) <= MAX_IDLE


def test_compacted_files_match_schemas(fnapi_index) -> None:
    output, _ = fnapi_index
    (generation,) = [p.parent for p in Path(output, "compacted").glob("*/_generation.json")]
    manifest = json.loads((generation / "_generation.json").read_text())
    assert manifest["commits_merged"] == 3 and not list(Path(output, "commits").rglob("*.parquet"))
    for table, names in manifest["files"].items():
        for name in names:
            schema = pq.read_schema(generation / name).remove_metadata()
            expected = COMMITS_SCHEMA if table == "commits" else TABLES[table]
            assert [f for f in schema if f.name in expected.names] == list(expected), (table, name)


def test_portable_runner_gives_the_same_rows(tmp_path: Path, fnapi_index, video_folder: Path,
                                             tiny_model: str) -> None:
    output, _ = fnapi_index
    portable = str(tmp_path / "portable")
    options = beam_options(["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"])
    run_build(make_config(str(video_folder), portable, tiny_model), options)
    for table in ("segments", "videos", "errors"):
        assert comparable(read_current(portable, table)) == comparable(read_current(output, table)), table


def test_probe_plan_decode_stages_with_testpipeline(video_folder: Path) -> None:
    import datetime as dt

    run = RunContext("r", "s", "m", "{}", "0", dt.datetime.now(dt.UTC))
    videos = [VideoInput(str(video_folder / "a.mp4")), VideoInput(str(video_folder / "broken.mp4"))]
    with TestPipeline(runner="FnApiRunner") as p:
        decoded = (p | beam.Create(videos) | beam.ParDo(ProbeVideos(run))
                   | beam.ParDo(PlanClips(ClipSpec.parse("fixed:4"), 32, run))
                   | beam.ParDo(SampleFrames(DecodeConfig(), run)))
        frames = decoded | beam.Filter(lambda item: isinstance(item, ClipFrames))
        shapes = frames | beam.Map(lambda c: (c.clip.clip_index, c.frames.shape, c.clip.sample_times[0],
                                              c.clip.video.num_clips))
        assert_that(shapes, equal_to([(0, (32, 448, 448, 3), 0.0, 3), (1, (32, 448, 448, 3), 4.0, 3),
                                      (2, (32, 448, 448, 3), 8.0, 3)]), label="frames")
        failed = (decoded | beam.Filter(lambda item: isinstance(item, VideoFailed))
                  | beam.FlatMap(lambda f: [(e["stage"], e["error_class"]) for e in f.errors]))
        assert_that(failed, equal_to([("probe", "ProbeError")]), label="errors")


def test_cli_build_then_search_json(tmp_path: Path, video_folder: Path, tiny_model: str) -> None:
    output = tmp_path / "cli-index"
    build = subprocess.run([sys.executable, "-m", "pipeline.cli", "build", "--input", str(video_folder / "a.mp4"),
                            "--output", str(output), "--clips", "fixed:5", "--max-new-tokens", "6",
                            "--model", tiny_model, "--no-progress"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert "inputs 1, indexed 1, failed 0, skipped 0" in build.stdout
    segments = read_current(str(output), "segments")
    assert segments.num_rows == 2
    # The tiny model's text is noise, but it is real text: searching for one row's words finds it.
    query = segments.column("text")[0].as_py()
    search = subprocess.run([sys.executable, "-m", "pipeline.cli", "search", "--index", str(output), query, "--json"],
                            capture_output=True, text=True, timeout=120)
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert hits and {"uri", "start_s", "end_s", "score", "text"} <= set(hits[0])
    assert hits[0]["end_s"] > hits[0]["start_s"]


def test_bad_manifest_is_rejected_before_any_work(tmp_path: Path, tiny_model: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "a.mp4"}\n{"url": "typo.mp4"}\nnot json\n')
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "build", "--input", str(manifest), "--output",
                             str(tmp_path / "out"), "--model", tiny_model], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "line 2" in result.stderr and "line 3" in result.stderr
    assert not (tmp_path / "out").exists()
