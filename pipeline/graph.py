"""The build pipeline: discover -> probe -> plan -> decode -> prompt -> infer -> parse -> gather -> embed -> commit.

Everything after the input listing is one chain of single-output stages, so a runner fuses it
into one step: each video flows from probe to its commit inside the bundle that took it in, and
is committed the moment its last clip is parsed. Failures and bookkeeping travel down the same
chain (``schemas.work``); nothing between inference and the write waits for the rest of the run.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from index.done import DoneVideos
from index.runs import RunRecord
from model_runner.handler import PlmModelHandler
from model_runner.stopping import RunawaySettings
from schemas.config import BuildConfig
from schemas.records import FlowRecord
from schemas.rows import RunContext
from schemas.work import Progress
from transforms.coders import FlowRecordCoder  # noqa: F401 - registers the coder for FlowRecord
from transforms.decode import SampleFrames
from transforms.discover import ReadInputs
from transforms.embed import embedding_dim, embedding_metadata, model_label
from transforms.embed.videos import EmbedVideos
from transforms.infer import PassThroughHandler
from transforms.parse.outcomes import ParseOutcomes
from transforms.plan import PlanClips
from transforms.probe import ProbeVideos
from transforms.prompt.expand import CountedPrompt, ExpandClips
from transforms.write import CommitVideos, FinishRun, GatherVideos


def make_handler(config: BuildConfig, model_path: str) -> PlmModelHandler:
    """The PLM model handler for a build."""
    return PlmModelHandler(model_path, device=config.model.device, torch_threads=config.model.torch_threads,
                           max_batch_size=config.model.batch_size,
                           runaway_guard=RunawaySettings() if config.model.runaway_guard else None)


def is_progress(item: object) -> bool:
    """Whether ``item`` is bookkeeping that rides past the model (see ``schemas.work``)."""
    return isinstance(item, Progress)


def pipeline(p: beam.Pipeline, config: BuildConfig, run: RunContext, record: RunRecord, model_path: str,
             progress_file: str | None = None, force: bool = False) -> None:
    """Compose the build's transforms on ``p``.

    Unless ``force`` is set, inputs whose content is already indexed under these settings are
    skipped (decided per video from the committed records).
    """
    done = None if force else DoneVideos(config.output, run.settings_hash)
    handler = PassThroughHandler(make_handler(config, model_path).with_preprocess_fn(CountedPrompt(run)), is_progress)
    dim = embedding_dim(config.embedding_model)
    outcomes = (p
                | "Inputs" >> ReadInputs(config.input, run)
                | "Probe" >> beam.ParDo(ProbeVideos(run, done))
                | "Plan" >> beam.ParDo(PlanClips(config.clips, config.decode.num_frames, run, config.questions))
                # Declared so that Beam sizes these elements with FlowRecordCoder, not by pickling frames.
                | "Decode" >> beam.ParDo(SampleFrames(config.decode, run)).with_output_types(FlowRecord)
                | "Tasks" >> beam.ParDo(ExpandClips(config.tasks, config.model.max_new_tokens, run))
                .with_output_types(FlowRecord)
                | "Infer" >> RunInference(handler)
                | "Parse" >> beam.ParDo(ParseOutcomes(run, progress_file))
                | "Gather" >> beam.ParDo(GatherVideos(run))
                | "Embed" >> beam.ParDo(EmbedVideos(config.embedding_model, run))
                | "Commit" >> beam.ParDo(CommitVideos(
                    config.output, run, dim, embedding_metadata(model_label(config.embedding_model), dim),
                    progress_file)))
    _ = outcomes | "Account" >> FinishRun(config.output, record)
