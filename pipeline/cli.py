"""``plm-index``: build an index, search or serve it, see its status, compact or migrate it, or run the demo."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable

from pydantic import ValidationError

log = logging.getLogger("plm_index")


class _BeamNoise(logging.Filter):
    """Drops two warnings Beam logs on every start that say nothing about the user's run."""

    NOISE = ("apitools not found", "Resource module is not available")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.NOISE)


logging.getLogger().addFilter(_BeamNoise())

TINY_WARNING = ("No --model given: using the tiny random-weight PLM built from the real transformers "
                "classes. Its text is noise; for real results pass --model facebook/Perception-LM-1B "
                "or a local copy of it.")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("plm_index").setLevel(logging.INFO)
    for noisy in ("apache_beam", "transformers", "urllib3", "google", "gcsfs", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    # A failed job is reported once by the command, with the path it concerns; Beam's own log of it
    # is a traceback (shown with -v).
    logging.getLogger("apache_beam.runners").setLevel(logging.WARNING if verbose else logging.CRITICAL)


# Errors that mean the output cannot be written (full disk, quota, read-only, permissions, a file in the way).
_WRITE_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                           errno.EISDIR, errno.EFBIG))


def _write_error_in(exc: BaseException) -> OSError | None:
    """The OSError about writing somewhere in ``exc``'s chain (Beam wraps a worker's error in its own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _WRITE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def build_failure_message(exc: BaseException, output: str) -> str:
    """One line for a build that failed while running: the path it concerns and what to do, no traceback."""
    write_error = _write_error_in(exc)
    if write_error is None and "No space left on device" in str(exc):
        write_error = OSError(errno.ENOSPC, "No space left on device")
    if write_error is not None:
        where = write_error.filename or output
        return (f"plm-index build: cannot write {where}: {write_error.strerror or write_error} (index {output}). "
                "Free space or fix the folder, then run again: committed videos are kept, a rerun redoes the rest")
    return (f"plm-index build: the run failed writing {output}: {type(exc).__name__}: {exc} "
            "(run with -v for the details)")


def cmd_build(args: argparse.Namespace, beam_args: list[str]) -> int:
    """``plm-index build``."""
    from index.layout import LegacyIndexError
    from pipeline.build import ensure_tiny_model, run_build
    from pipeline.options import beam_options, build_config
    from schemas.manifest import ManifestError

    model = args.model
    if model is None:
        print(TINY_WARNING, file=sys.stderr)
        model = ensure_tiny_model()
    try:
        config = build_config(args, model)
        summary = run_build(config, beam_options(beam_args), show_progress=not args.no_progress, force=args.force,
                            compact_at_end=not args.no_compact)
    except (ValidationError, ManifestError, FileNotFoundError, ValueError, LegacyIndexError) as exc:
        print(f"plm-index build: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plm-index build: interrupted; committed videos are kept in {args.output}, a rerun redoes the rest",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a failed run ends in one clear line, never a traceback
        log.debug("build failed", exc_info=True)
        if args.verbose:
            log.exception("build failed")
        print(build_failure_message(exc, args.output), file=sys.stderr)
        return 1
    print(summary.line())
    if summary.inputs == 0 and not getattr(args, "allow_empty", False):
        print(f"plm-index build: no input found in {args.input} (an empty folder or manifest, or a glob that "
              "matches nothing); check --input, or pass --allow-empty to accept an empty run", file=sys.stderr)
        return 2
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """``plm-index search``: imports only the ``search`` package (no Beam, no torch)."""
    from index.read import UnknownSettingsError
    from search import DEFAULT_MERGE_GAP_S, SearchFilters, SearchQueryError, run_search, sync
    from search.store import StoreError

    if getattr(args, "task", None) is not None:
        from tasks import check_task_names

        try:
            check_task_names([args.task])
        except ValueError as exc:
            print(f"plm-index search: --task: {exc}", file=sys.stderr)
            return 2
    try:
        if getattr(args, "rebuild", False):
            print(sync(args.index, getattr(args, "embedding_model", None), rebuild=True,
                       settings=getattr(args, "settings", None)).line(), file=sys.stderr)
            if args.query is None:
                return 0
        if args.query is None:
            print("plm-index search: give a query (or --rebuild to rebuild the search index)", file=sys.stderr)
            return 2
        filters = SearchFilters(video=getattr(args, "video", None), task=getattr(args, "task", None),
                                start_s=getattr(args, "start_s", None), end_s=getattr(args, "end_s", None))
        merge_gap = None if getattr(args, "no_merge", False) else getattr(args, "merge_gap", DEFAULT_MERGE_GAP_S)
        print(run_search(args.index, args.query, args.limit, args.json, mode=getattr(args, "mode", "hybrid"),
                         filters=filters, min_score=getattr(args, "min_score", None), merge_gap_s=merge_gap,
                         html_out=getattr(args, "html", None),
                         embedding_model=getattr(args, "embedding_model", None),
                         settings=getattr(args, "settings", None)))
        if getattr(args, "html", None):
            print(f"wrote {args.html}", file=sys.stderr)
    except (SearchQueryError, FileNotFoundError, StoreError, UnknownSettingsError) as exc:
        print(f"plm-index search: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``plm-index status``: what the index holds, what failed, what a rerun would redo."""
    import json

    from index.layout import LegacyIndexError
    from index.read import UnknownSettingsError
    from index.status import index_status

    try:
        status = index_status(args.index, settings=getattr(args, "settings", None))
    except (LegacyIndexError, FileNotFoundError, UnknownSettingsError) as exc:
        print(f"plm-index status: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(status.to_json(), indent=1) if args.json else status.text())
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """``plm-index compact``: merge live per-video commits into a compacted generation."""
    from index.compact import compact
    from index.layout import LegacyIndexError

    try:
        report = compact(args.index, full=args.full)
    except (LegacyIndexError, FileNotFoundError, ValueError) as exc:  # ValueError: DamagedIndexError
        print(f"plm-index compact: {exc}", file=sys.stderr)
        return 2
    print(report.line())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``plm-index verify``: check every committed file against its record; ``--repair`` retires the damaged."""
    import json

    from index.layout import LegacyIndexError
    from index.verify import repair, verify

    try:
        report = verify(args.index)
        if args.repair and not report.ok:
            report = repair(args.index, report)
    except (LegacyIndexError, FileNotFoundError) as exc:
        print(f"plm-index verify: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=1) if args.json else report.text())
    return 0 if report.ok or report.repaired is not None else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    """``plm-index migrate``: convert a first-layout index (runs/<id>/_SUCCESS) to the current format."""
    from index.migrate import migrate

    try:
        report = migrate(args.index)
    except (ValueError, FileNotFoundError) as exc:
        print(f"plm-index migrate: {exc}", file=sys.stderr)
        return 2
    print(report.line())
    return 0


def cmd_demo(args: argparse.Namespace, beam_args: list[str]) -> int:
    """``plm-index demo``: sample videos, the tiny model if needed, an index and one search."""
    from pipeline.demo import make_demo_videos

    videos = args.input or os.path.join(args.workdir, "videos")
    if not args.input:
        print(f"[1/3] making demo videos in {videos}", file=sys.stderr)
        make_demo_videos(videos)
    index = args.output or os.path.join(args.workdir, "index")
    print(f"[2/3] indexing {videos} into {index}", file=sys.stderr)
    build_args = build_parser().parse_args(["build", "--input", videos, "--output", index, "--clips", "fixed:8",
                                            "--max-new-tokens", "48", *(["--model", args.model] if args.model else [])])
    status = cmd_build(build_args, beam_args)
    if status:
        return status
    print(f"[3/3] searching {index} for {args.query!r}", file=sys.stderr)
    search_args = argparse.Namespace(index=index, query=args.query, limit=5, json=False)
    return cmd_search(search_args)


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    """``plm-index eval``: run PLM over a PLM-VideoBench annotation file and report its metrics."""
    from evaluation.job import EvalSettings, format_table, run_eval
    from pipeline.build import ensure_tiny_model

    if extra:
        print(f"plm-index eval: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    model = args.model
    if model is None and args.predictions is None:
        print(TINY_WARNING, file=sys.stderr)
        model = ensure_tiny_model()
    output = args.output or f"eval-{args.task}.json"
    settings = EvalSettings(task=args.task, data=args.data, model=model, video_root=args.video_root,
                            metadata=args.metadata, judge=args.judge, judge_model=args.judge_model,
                            judge_api_key_env=args.judge_api_key_env or None, limit=args.limit,
                            output=output, max_new_tokens=args.max_new_tokens, device=args.device,
                            show_progress=not args.no_progress, predictions=args.predictions)
    try:
        report = run_eval(settings)
    except (FileNotFoundError, ValueError) as exc:  # AnnotationError and EvalError are ValueErrors
        print(f"plm-index eval: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"report: {output}")
    return 0


def add_search_parser(commands: argparse._SubParsersAction) -> None:
    """The ``search`` subcommand's flags (kept apart so a search never imports the build's flags)."""
    search = commands.add_parser("search", help="search an index by action")
    search.add_argument("--index", required=True, help="index folder (local, gs:// or s3://)")
    search.add_argument("query", nargs="?", default=None)
    search.add_argument("--rebuild", action="store_true",
                        help="rebuild the derived search index (INDEX/search/) from the Parquet index first")
    search.add_argument("--mode", choices=["keyword", "semantic", "hybrid"], default="hybrid",
                        help="BM25 keywords, embedding cosine, or both fused (default)")
    search.add_argument("--limit", type=int, default=10, help="number of moments to show")
    search.add_argument("--video", default=None, help="only videos whose uri (or file name) matches this glob")
    search.add_argument("--settings", default=None, metavar="HASH",
                        help="search the rows of this settings hash alone (older settings that newer builds hide; "
                             "'plm-index status' lists them)")
    # Checked against the task registry only when given: loading every task module costs a cold search ~0.2 s.
    search.add_argument("--task", default=None, help="only segments of this task (caption, fgqa, ...)")
    search.add_argument("--from", dest="start_s", type=float, default=None, metavar="SECONDS",
                        help="only segments that end after this time")
    search.add_argument("--to", dest="end_s", type=float, default=None, metavar="SECONDS",
                        help="only segments that start before this time")
    search.add_argument("--min-score", type=float, default=None,
                        help="drop hits scoring below this (BM25 for keyword, cosine for semantic, fused for hybrid)")
    search.add_argument("--merge-gap", type=float, default=1.0, metavar="SECONDS",
                        help="merge hits of one video this close into one moment (default 1)")
    search.add_argument("--no-merge", action="store_true", help="one result per segment")
    search.add_argument("--embedding-model", default=None,
                        help="query embedding model (folder or hub id); default: the one the index records")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.add_argument("--html", default=None, metavar="OUT.html",
                        help="also write a results page with thumbnails to this file")


def add_import_parser(commands: argparse._SubParsersAction) -> None:
    """The ``import`` subcommand's flags."""
    imp = commands.add_parser("import", help="add your own segments (JSONL or Parquet) to an index")
    imp.add_argument("--index", required=True, help="index folder (local, gs:// or s3://)")
    imp.add_argument("file", help="rows of uri, start_s, end_s, text, optionally task and events")
    imp.add_argument("--embedding-model", default=None, help="default: the packaged all-MiniLM-L6-v2")


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    """The ``serve`` subcommand's flags."""
    serve = commands.add_parser("serve", help="a local web page (and JSON API) to search an index and watch the moments")
    serve.add_argument("--index", required=True, help="index folder (local, gs:// or s3://)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    serve.add_argument("--embedding-model", default=None,
                       help="query embedding model (folder or hub id); default: the one the index records")
    serve.add_argument("--refresh", type=float, default=30.0, metavar="SECONDS",
                       help="look for newly committed videos this often (default 30; 0: never)")


def cmd_serve(args: argparse.Namespace) -> int:
    """``plm-index serve``: imports the ``search`` package and the web stack only (no Beam, no torch)."""
    from search import SearchQueryError
    from search.server import serve
    from search.store import StoreError

    if not 0 <= args.port <= 65535:
        print(f"plm-index serve: --port must be from 0 to 65535, not {args.port}", file=sys.stderr)
        return 2
    if not args.refresh >= 0:
        print(f"plm-index serve: --refresh must be a number of seconds >= 0, not {args.refresh}", file=sys.stderr)
        return 2
    try:
        serve(args.index, args.host, args.port, args.embedding_model, args.refresh)
    except (SearchQueryError, FileNotFoundError, StoreError) as exc:
        print(f"plm-index serve: {exc}", file=sys.stderr)
        return 2
    return 0


def add_status_parser(commands: argparse._SubParsersAction) -> None:
    """The ``status`` subcommand's flags."""
    status = commands.add_parser("status", help="what an index holds, what failed, what a rerun would redo")
    status.add_argument("--index", required=True, help="index folder (local, gs:// or s3://)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.add_argument("--settings", default=None, metavar="HASH",
                        help="what one settings hash holds on its own (older settings that newer builds hide)")


def add_compact_parser(commands: argparse._SubParsersAction) -> None:
    """The ``compact`` subcommand's flags."""
    compact = commands.add_parser("compact", help="merge per-video commits into fewer, larger files")
    compact.add_argument("--index", required=True, help="index folder (local, gs:// or s3://)")
    compact.add_argument("--full", action="store_true", help="rewrite every generation into one")


def add_migrate_parser(commands: argparse._SubParsersAction) -> None:
    """The ``migrate`` subcommand's flags."""
    migrate = commands.add_parser("migrate", help="convert a first-layout index (runs/<id>/_SUCCESS) in place")
    migrate.add_argument("--index", required=True, help="index folder (local, gs:// or s3://)")


def add_verify_parser(commands: argparse._SubParsersAction) -> None:
    """The ``verify`` subcommand's flags."""
    verify = commands.add_parser("verify", help="check every committed file against its checksum; --repair "
                                                "retires damaged ones so the next build redoes their videos")
    verify.add_argument("--index", required=True, help="index folder (local, gs:// or s3://)")
    verify.add_argument("--json", action="store_true", help="print JSON instead of text")
    verify.add_argument("--repair", action="store_true",
                        help="retire damaged files from what readers see (healthy files are kept)")


def cmd_import(args: argparse.Namespace) -> int:
    """``plm-index import``."""
    from search.importing import SegmentImportError, import_segments

    try:
        report = import_segments(args.index, args.file, args.embedding_model)
    except (SegmentImportError, FileNotFoundError, ValueError) as exc:
        print(f"plm-index import: {exc}", file=sys.stderr)
        return 2
    print(report.line())
    return 0


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """The ``export`` subcommand's flags: the search filters, plus what and how to write."""
    export = commands.add_parser("export", help="write the index's answers as PLM fine-tuning data (JSONL)")
    export.add_argument("--index", required=True, help="index folder (local, gs:// or s3://)")
    export.add_argument("--format", default="plm-sft", choices=["plm-sft"],
                        help="perception_models' SFT JSONL (video + conversations; the only format)")
    export.add_argument("--out", required=True, help="local folder for TASK.jsonl, datasets.yaml, export.json")
    export.add_argument("--cut-clips", action="store_true",
                        help="cut each clip to OUT/clips/ (stream copy from a keyframe, else re-encode)")
    export.add_argument("--keep-doubtful", action="store_true",
                        help="keep answers that may be wrong (unparsed, clamped, read differently by the "
                             "benchmark, wrong option, empty) or whose frames the trainer would not sample")
    export.add_argument("--dataset", default="plm_index", help="dataset name prefix in datasets.yaml")
    export.add_argument("--video", default=None, help="only videos whose uri (or file name) matches this glob")
    export.add_argument("--task", default=None, help="only answers of this task (caption, fgqa, ...)")
    export.add_argument("--from", dest="start_s", type=float, default=None, metavar="SECONDS",
                        help="only segments that end after this time")
    export.add_argument("--to", dest="end_s", type=float, default=None, metavar="SECONDS",
                        help="only segments that start before this time")


def cmd_export(args: argparse.Namespace) -> int:
    """``plm-index export``: imports ``export`` (index reading, search's filters, ffmpeg), no Beam, no torch."""
    from export import ExportConfig, ExportError, export_index
    from index.layout import LegacyIndexError
    from search import SearchFilters

    filters = SearchFilters(video=args.video, task=args.task, start_s=args.start_s, end_s=args.end_s)
    config = ExportConfig(index=args.index, out=args.out, format=args.format, filters=filters,
                          keep_doubtful=args.keep_doubtful, cut_clips=args.cut_clips, dataset=args.dataset)
    try:
        report = export_index(config)
    except (ExportError, FileNotFoundError, LegacyIndexError, RuntimeError) as exc:
        print(f"plm-index export: {exc}", file=sys.stderr)
        return 2
    print(report.line())
    return 1 if report.cut_errors else 0


# Commands that never touch Beam or torch: parsed without the build's flags, so they start fast.
LIGHT_COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    "search": (add_search_parser, cmd_search),
    "import": (add_import_parser, cmd_import),
    "serve": (add_serve_parser, cmd_serve),
    "status": (add_status_parser, cmd_status),
    "compact": (add_compact_parser, cmd_compact),
    "migrate": (add_migrate_parser, cmd_migrate),
    "export": (add_export_parser, cmd_export),
    "verify": (add_verify_parser, cmd_verify),
}


def light_parser(command: str) -> argparse.ArgumentParser:
    """A parser with only ``command`` (one of ``LIGHT_COMMANDS``): it starts without importing Beam."""
    parser = argparse.ArgumentParser(prog="plm-index", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)
    LIGHT_COMMANDS[command][0](commands)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    from pipeline.options import add_build_flags
    from tasks import benchmark_task_names

    parser = argparse.ArgumentParser(prog="plm-index", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="index videos (unknown flags go to Beam, e.g. --runner)")
    add_build_flags(build)
    for add_parser, _ in LIGHT_COMMANDS.values():
        add_parser(commands)
    demo = commands.add_parser("demo", help="make sample videos, index them, search them")
    demo.add_argument("--workdir", default="demo-out")
    demo.add_argument("--input", default=None, help="index these videos instead of the generated ones")
    demo.add_argument("--output", default=None)
    demo.add_argument("--model", default=None)
    demo.add_argument("--query", default="person pours water into a cup")
    evaluate = commands.add_parser("eval", help="score PLM on a PLM-VideoBench annotation file")
    evaluate.add_argument("--task", required=True, choices=benchmark_task_names())
    evaluate.add_argument("--data", required=True, help="annotation file: JSONL rows with the published fields")
    evaluate.add_argument("--model", default=None, help="checkpoint folder, gs:// folder or hub id")
    evaluate.add_argument("--predictions", default=None, metavar="PRED.jsonl",
                          help='score these raw outputs ({"uid": ..., "output": "..."} lines) instead of '
                               "running a model; no model is loaded and no video is read")
    evaluate.add_argument("--video-root", default=None,
                          help="folder the rows' videos are relative to (default: the annotation file's)")
    evaluate.add_argument("--metadata", default=None,
                          help="region boxes (published metadata_test.jsonl) for rows without a bbox")
    evaluate.add_argument("--judge", default=None,
                          help="'exact' (offline exact-match stand-in) or an OpenAI-compatible URL")
    evaluate.add_argument("--judge-model", default="Llama-3.3-70B-Instruct")
    evaluate.add_argument("--judge-api-key-env", default="OPENAI_API_KEY",
                          help="environment variable holding the judge's API key ('' for none)")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    evaluate.add_argument("--output", default=None, help="report JSON (default: eval-TASK.json)")
    evaluate.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``plm-index`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = light_parser(first) if first in LIGHT_COMMANDS else build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if args.command in LIGHT_COMMANDS and beam_args:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    _configure_logging(args.verbose)
    if args.command == "build":
        return cmd_build(args, beam_args)
    if args.command in LIGHT_COMMANDS:
        return LIGHT_COMMANDS[args.command][1](args)
    if args.command == "eval":
        return cmd_eval(args, beam_args)
    return cmd_demo(args, beam_args)


def run() -> None:
    """Console-script entry: run ``main`` and leave without interpreter teardown.

    Beam's in-process runners leave gRPC and thread-pool threads behind; destroying them during
    interpreter teardown has been seen to abort the process ("terminate called without an
    active exception") after all work was written. The exit status must reflect the run, so
    output is flushed and the process exits directly.
    """
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":
    run()
