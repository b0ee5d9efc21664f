"""The build pipeline: discover -> probe -> plan -> decode -> prompt -> infer -> parse -> write."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from model_runner.handler import PlmModelHandler
from schemas.config import BuildConfig
from schemas.records import VideoInput
from schemas.rows import RunContext
from schemas.tables import segments_schema
from transforms.decode import SampleFrames
from transforms.embed import EmbedSegments, embedding_dim, embedding_metadata
from transforms.parse import ParseOutputs, failed_batch_rows
from transforms.plan import PlanClips
from transforms.probe import ProbeVideos
from transforms.progress import ReportProgress
from transforms.prompt import build_prompt, expand_tasks
from transforms.write import WriteTable
from transforms.write.settle import SettleVideos


def make_handler(config: BuildConfig, model_path: str) -> PlmModelHandler:
    """The PLM model handler for a build, with the prompt builder as its preprocess step."""
    return PlmModelHandler(model_path, device=config.model.device, torch_threads=config.model.torch_threads,
                           max_batch_size=config.model.batch_size)


def pipeline(p: beam.Pipeline, config: BuildConfig, run: RunContext, videos: list[VideoInput],
             model_path: str, progress_file: str | None = None, done_ids: frozenset[str] = frozenset()) -> None:
    """Compose the build's transforms on ``p``.

    ``done_ids`` are the content ids already indexed with the same settings: they are skipped.
    """
    inputs = (p
              | "Inputs" >> beam.Create(videos)
              # Spread videos over workers: each one is a lot of work.
              | "Distribute" >> beam.Reshuffle())
    probed = inputs | "Probe" >> beam.ParDo(ProbeVideos(run, done_ids)).with_outputs(
        "errors", "skipped", main="videos")
    planned = probed.videos | "Plan" >> beam.ParDo(
        PlanClips(config.clips, config.decode.num_frames, run, config.questions)).with_outputs("errors", main="clips")
    decoded = planned.clips | "Decode" >> beam.ParDo(SampleFrames(config.decode, run)).with_outputs(
        "errors", main="frames")
    tasks = decoded.frames | "Tasks" >> beam.FlatMap(expand_tasks, config.tasks, config.model.max_new_tokens)
    handler = make_handler(config, model_path).with_preprocess_fn(build_prompt)
    inferred, dead_letters = tasks | "Infer" >> RunInference(handler).with_exception_handling()
    parsed = inferred | "Parse" >> beam.ParDo(ParseOutputs(run)).with_outputs("errors", main="segments")

    failed = [
        dead_letters.failed_inferences | "InferErrors" >> beam.FlatMap(lambda f: failed_batch_rows(run, f, "infer")),
        *[pc | f"PreprocessErrors{i}" >> beam.FlatMap(lambda f: failed_batch_rows(run, ([f[0]], f[1]), "prompt"))
          for i, pc in enumerate(dead_letters.failed_preprocessing)],
    ]
    errors = ((probed.errors, planned.errors, decoded.errors, parsed.errors, *failed)
              | "AllErrors" >> beam.Flatten())
    video_rows = planned.clips | "VideoRows" >> beam.Map(lambda v: run.video_row(v.info, len(v.clips)))

    embed = EmbedSegments(model=config.embedding_model)
    segments = (parsed.segments
                | "Embed" >> embed
                | "Progress" >> beam.ParDo(ReportProgress("segments", progress_file)))
    segments_file_schema = segments_schema(embedding_dim(config.embedding_model)).with_metadata(
        embedding_metadata(embed.model_name, embedding_dim(config.embedding_model)))
    settled = {"segments": segments, "videos": video_rows, "errors": errors} | "Settle" >> SettleVideos()
    settled.segments | "WriteSegments" >> WriteTable(config.output, run.run_id, "segments", schema=segments_file_schema)
    settled.videos | "WriteVideos" >> WriteTable(config.output, run.run_id, "videos")
    settled.errors | "WriteErrors" >> WriteTable(config.output, run.run_id, "errors")
