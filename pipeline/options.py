"""The tool's own flags, parsed apart from Beam's pipeline flags."""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from schemas.config import BuildConfig, ClipSpec, DecodeConfig, ModelConfig
from schemas.manifest import Question
from tasks import task_names


def add_build_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of ``plm-index build``; anything else on the command line goes to Beam."""
    parser.add_argument("--input", required=True,
                        help="folder, glob, gs:// or s3:// prefix or glob, or a manifest (.jsonl, .csv, .parquet; may "
                             "list http(s):// URLs); any may name .tar shards, and a brace list "
                             "(shard-{000000..000099}.tar) names several")
    parser.add_argument("--output", required=True, help="index folder (local, gs:// or s3://)")
    parser.add_argument("--clips", default="fixed:30", help="fixed:SECONDS or scenes (default fixed:30)")
    parser.add_argument("--min-clip-s", type=float, default=2.0, help="scenes: merge shots shorter than this")
    parser.add_argument("--max-clip-s", type=float, default=60.0, help="scenes: split shots longer than this")
    parser.add_argument("--num-frames", type=int, default=32, help="frames sampled per clip (PLM: 32)")
    parser.add_argument("--decoder", choices=["pyav", "decord"], default="pyav")
    parser.add_argument("--resize", choices=["exact", "decoder"], default="exact",
                        help="exact: PLM's own bicubic resize (default); decoder: FFmpeg scaler, faster")
    parser.add_argument("--decode-threads", type=int, default=0)
    parser.add_argument("--decode-timeout-s", type=float, default=900.0, help="hard limit per video")
    parser.add_argument("--decode-isolation", choices=["process", "none"], default="process",
                        help="process: decode in a child killed at the time limit (default); none: in the worker")
    parser.add_argument("--model", default=None,
                        help="checkpoint folder, gs:// folder or hub id (default: the tiny random test model)")
    parser.add_argument("--tasks", default="caption",
                        help=f"comma-separated: {','.join(task_names())} (default: caption)")
    parser.add_argument("--question", action="append", default=[],
                        help="a question asked about every clip (fgqa with --options, else sgqa); repeatable")
    parser.add_argument("--options", action="append", default=[],
                        help="the options of the matching --question, separated by '|' (e.g. 'cut|pour|stir')")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument("--no-runaway-guard", dest="runaway_guard", action="store_false",
                        help="let a looping answer run to --max-new-tokens (default: stop a row once it repeats "
                             "an n-gram loop)")
    parser.add_argument("--embedding-model", default=None,
                        help="text embedding model for search, a folder or hub id (default: the packaged "
                             "all-MiniLM-L6-v2)")
    parser.add_argument("--force", action="store_true",
                        help="redo videos already indexed with the same settings (default: skip them)")
    parser.add_argument("--no-compact", action="store_true",
                        help="leave the run's per-video commits as they are (default: merge them into large files "
                             "once the run has finished; see plm-index compact)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--allow-empty", action="store_true",
                        help="accept a run that finds no input (default: it is an error, exit status 2)")


def build_config(args: argparse.Namespace, model: str) -> BuildConfig:
    """A validated, frozen BuildConfig from parsed flags."""
    return BuildConfig(
        input=args.input,
        output=args.output,
        clips=ClipSpec.parse(args.clips, args.min_clip_s, args.max_clip_s),
        decode=DecodeConfig(backend=args.decoder, num_frames=args.num_frames, resize=args.resize,
                            threads=args.decode_threads, timeout_s=args.decode_timeout_s,
                            isolation=args.decode_isolation),
        model=ModelConfig(model=model, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          device=args.device, torch_threads=args.torch_threads,
                          runaway_guard=args.runaway_guard),
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        questions=cli_questions(args.question, args.options),
        embedding_model=args.embedding_model,
    )


def cli_questions(questions: list[str], options: list[str]) -> tuple[Question, ...]:
    """Questions from ``--question``/``--options`` pairs (options pair up in order)."""
    if len(options) > len(questions):
        raise ValueError("--options given without a --question to go with it")
    asked = []
    for index, question in enumerate(questions):
        choices = [o.strip() for o in options[index].split("|")] if index < len(options) else None
        asked.append(Question(question=question, options=choices))
    return tuple(asked)


def beam_options(beam_args: list[str]) -> PipelineOptions:
    """Beam's options; the embedded FnApiRunner unless ``--runner`` says otherwise."""
    options = PipelineOptions(beam_args, save_main_session=False)
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = "FnApiRunner"
    return options


def workers_run_here(options: PipelineOptions) -> bool:
    """Whether Beam's workers run inside this process: the embedded FnApiRunner, in memory or in threads.

    Then what the launcher starts before the run (a decode process) is there for the workers to take.
    """
    runner = options.view_as(StandardOptions).runner
    environment = (options.view_as(PortableOptions).environment_type or "EMBEDDED").upper()
    mode = options.view_as(DirectOptions).direct_running_mode
    return (isinstance(runner, str) and runner.removesuffix("Runner").lower() == "fnapi"
            and environment == "EMBEDDED"
            and mode in ("in_memory", "multi_threading"))
