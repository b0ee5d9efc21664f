"""Run one build: check the input, record the run, run the Beam pipeline (which commits each video), compact."""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import tempfile
import threading
import uuid
from dataclasses import asdict, dataclass

import apache_beam as beam

from index import Accounting, RunRecord, compact, ensure_format, read_run, write_run
from pipeline.graph import pipeline
from pipeline.options import workers_run_here
from schemas.config import PIPELINE_VERSION, BuildConfig
from schemas.rows import RunContext
from search.store import sync_after_build
from tasks import check_task_names
from transforms.decode.isolated import start_decoders_ahead
from transforms.discover import check_input

log = logging.getLogger(__name__)


def default_model_dir() -> str:
    """Where the tiny random test model is built when no ``--model`` is given."""
    home = os.environ.get("PLM_INDEX_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "plm-video-index")
    return os.path.join(home, "tiny-plm")


def ensure_tiny_model(path: str | None = None) -> str:
    """Build the tiny random PLM once (under a lock) and return its folder."""
    from model_runner.tiny import build_tiny_plm

    path = path or default_model_dir()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(path, "config.json")):
            log.info("building the tiny random PLM in %s", path)
            build_tiny_plm(path)
    return path


@dataclass(frozen=True)
class BuildSummary:
    """The accounting of one run: every input is indexed, failed or skipped (done before)."""

    run_id: str
    inputs: int
    indexed: int
    failed: int
    skipped: int
    ignored: int
    segments: int
    errors: int
    clips: int = 0

    @classmethod
    def of(cls, run_id: str, accounting: Accounting) -> BuildSummary:
        """The summary of ``run_id`` from its accounting."""
        return cls(run_id=run_id, **asdict(accounting))

    def line(self) -> str:
        """The accounting line printed and stored after each run."""
        fields = {k: v for k, v in asdict(self).items() if k != "run_id"}
        return Accounting(**fields).line(self.run_id)


class OutputPathError(ValueError):
    """``--output`` cannot hold an index: it, or a folder above it, is a file."""


def check_output(output: str) -> None:
    """Fail fast, before any worker starts, on a local ``--output`` that is (or is inside) a file."""
    from core import storage
    from core.paths import local_path

    if storage.is_remote(output):
        return
    path = os.path.abspath(local_path(output))
    while True:
        if os.path.isdir(path):
            return
        if os.path.lexists(path):
            what = "is a file" if path == os.path.abspath(local_path(output)) else f"is inside the file {path}"
            raise OutputPathError(f"--output {output} {what}, not a folder: give a folder for the index "
                                  "(it is created if missing)")
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def new_run_id() -> str:
    """A sortable, unique run id."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _progress_bar(progress_file: str, stop: threading.Event) -> None:
    from tqdm import tqdm

    clips = tqdm(desc="prompts inferred", unit="prompt", dynamic_ncols=True, position=0)
    videos = tqdm(desc="videos committed", unit="video", dynamic_ncols=True, position=1)
    seen = {"inferred": 0, "committed": 0}
    while True:
        stopped = stop.wait(0.5)
        counts = {"inferred": 0, "committed": 0}
        try:
            with open(progress_file) as f:
                for line in f:
                    kind = line.split("\t", 1)[0]
                    if kind in counts:
                        counts[kind] += 1
        except FileNotFoundError:
            pass
        for kind, bar in (("inferred", clips), ("committed", videos)):
            if counts[kind] > seen[kind]:
                bar.update(counts[kind] - seen[kind])
                seen[kind] = counts[kind]
        if stopped:
            break
    clips.close()
    videos.close()


def run_build(config: BuildConfig, options: beam.options.pipeline_options.PipelineOptions,
              show_progress: bool = False, force: bool = False, compact_at_end: bool = True) -> BuildSummary:
    """Run the build pipeline to completion and return its accounting.

    Each video is committed to ``config.output`` as soon as it is done, so a killed run keeps
    its finished videos and a rerun redoes only the rest. Videos already indexed with the same
    settings are skipped unless ``force`` is set. With ``compact_at_end`` the run's commits are
    merged into large files once it has finished (``index.compact``).
    """
    check_task_names(config.tasks)
    check_input(config.input)
    check_output(config.output)
    ensure_format(config.output)
    run = RunContext(run_id=new_run_id(), settings_hash=config.settings_hash(), model_id=config.model.model,
                     generation=config.generation_json(), pipeline_version=PIPELINE_VERSION,
                     created_at=dt.datetime.now(dt.UTC))
    record = RunRecord(run_id=run.run_id, status="running", started_at=run.created_at.isoformat(), input=config.input,
                       settings_hash=run.settings_hash, model_id=run.model_id, pipeline_version=PIPELINE_VERSION,
                       force=force)
    write_run(config.output, record)
    log.info("run %s: indexing %s into %s", run.run_id, config.input, config.output)
    progress_file = None
    stop = threading.Event()
    bar = None
    if show_progress:
        progress_file = os.path.join(tempfile.gettempdir(), f"plm-index-progress-{run.run_id}")
        bar = threading.Thread(target=_progress_bar, args=(progress_file, stop), daemon=True)
        bar.start()
    if config.decode.isolation == "process" and workers_run_here(options):
        # The decode process starts while Beam builds the pipeline and loads the models (or one
        # kept from an earlier build in this process is still running).
        start_decoders_ahead()
    try:
        p = beam.Pipeline(options=options)
        pipeline(p, config, run, record, config.model.model, progress_file, force)
        p.run().wait_until_finish()
    except BaseException as exc:
        try:
            write_run(config.output, record.failed(f"{type(exc).__name__}: {exc}"))
        except OSError as record_exc:  # e.g. the disk that failed the run is still full: report the run's error
            log.warning("could not record run %s as failed in %s: %s", run.run_id, config.output, record_exc)
        raise
    finally:
        stop.set()
        if bar is not None:
            bar.join(timeout=2)
        if progress_file and os.path.exists(progress_file):
            os.remove(progress_file)
    finished = read_run(config.output, run.run_id)
    if finished is None or finished.status != "finished" or finished.accounting is None:
        raise RuntimeError(f"run {run.run_id} ended without recording its accounting in "
                           f"{config.output}/runs/{run.run_id}.json; its finished videos are committed, run again")
    if compact_at_end:
        log.info("%s", compact(config.output).line())
    sync_after_build(config.output, config.embedding_model)
    return BuildSummary.of(run.run_id, Accounting(**finished.accounting))
