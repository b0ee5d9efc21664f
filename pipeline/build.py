"""Run one build: discover inputs, run the Beam pipeline, then account and mark the run complete."""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import tempfile
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from core import storage
from pipeline.graph import pipeline
from schemas.config import PIPELINE_VERSION, BuildConfig
from schemas.rows import RunContext
from transforms.discover import discover_videos
from transforms.write import indexed_video_ids, read_index_table, run_folder, write_success
from transforms.write.parquet import table_listing_name

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

    def line(self) -> str:
        """The accounting line printed and stored after each run."""
        return (f"run {self.run_id}: inputs {self.inputs}, indexed {self.indexed}, failed {self.failed}, "
                f"skipped {self.skipped} ({self.segments} segment rows, {self.errors} error rows, "
                f"{self.ignored} non-video files ignored)")


def new_run_id() -> str:
    """A sortable, unique run id."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _progress_bar(progress_file: str, stop: threading.Event) -> None:
    from tqdm import tqdm

    bar = tqdm(desc="clips indexed", unit="clip", dynamic_ncols=True)
    done = 0
    while True:
        stopped = stop.wait(0.5)
        try:
            with open(progress_file) as f:
                count = sum(1 for _ in f)
        except FileNotFoundError:
            count = 0
        if count > done:
            bar.update(count - done)
            done = count
        if stopped:
            break
    bar.close()


def run_build(config: BuildConfig, options: beam.options.pipeline_options.PipelineOptions,
              show_progress: bool = False, force: bool = False) -> BuildSummary:
    """Run the build pipeline to completion and write the run's ``_SUCCESS`` marker.

    Videos already indexed under ``config.output`` with the same settings are skipped unless
    ``force`` is set.
    """
    discovery = discover_videos(config.input)
    log.info("found %d videos under %s (%d other files skipped)", len(discovery.videos), config.input,
             len(discovery.skipped))
    run = RunContext(run_id=new_run_id(), settings_hash=config.settings_hash(), model_id=config.model.model,
                     generation=config.generation_json(), pipeline_version=PIPELINE_VERSION,
                     created_at=dt.datetime.now(dt.UTC))
    done = frozenset() if force else indexed_video_ids(config.output, run.settings_hash)
    if done:
        log.info("%d videos are already indexed with these settings and will be skipped", len(done))
    storage.makedirs(run_folder(config.output, run.run_id))
    progress_file = None
    stop = threading.Event()
    bar = None
    if show_progress:
        progress_file = os.path.join(tempfile.gettempdir(), f"plm-index-progress-{run.run_id}")
        bar = threading.Thread(target=_progress_bar, args=(progress_file, stop), daemon=True)
        bar.start()
    try:
        p = beam.Pipeline(options=options)
        pipeline(p, config, run, list(discovery.videos), config.model.model, progress_file, done)
        result = p.run()
        result.wait_until_finish()
    finally:
        stop.set()
        if bar is not None:
            bar.join(timeout=2)
        if progress_file and os.path.exists(progress_file):
            os.remove(progress_file)
    summary = account(config.output, run.run_id, len(discovery.videos), len(discovery.skipped))
    skipped = _counter(result, "videos_skipped")
    if skipped is not None and skipped != summary.skipped:
        log.warning("accounting: %d videos skipped by the pipeline, %d by the tables", skipped, summary.skipped)
    write_success(config.output, run.run_id, {
        "finished_at": dt.datetime.now(dt.UTC).isoformat(), "settings_hash": run.settings_hash,
        "model_id": run.model_id, "pipeline_version": PIPELINE_VERSION, "input": config.input,
        "accounting": summary.__dict__, "accounting_line": summary.line(),
    })
    return summary


def _counter(result: Any, name: str) -> int | None:
    """A committed counter of the finished pipeline, where the runner reports metrics."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    except Exception:  # noqa: BLE001 - some runners report no metrics
        return None
    return sum(c.committed or 0 for c in found) if found else 0


def account(output: str, run_id: str, inputs: int, ignored: int) -> BuildSummary:
    """Count what a finished run indexed and what failed, from the tables it wrote."""
    import json

    folder = run_folder(output, run_id)
    files = []
    for table in ("segments", "errors", "videos"):
        listing = storage.join(folder, table_listing_name(table))
        if storage.exists(listing):
            files.extend(json.loads(storage.read_bytes(listing)))
    marker: dict[str, Any] = {"run_id": run_id, "folder": folder, "files": files}
    segments = read_index_table(output, "segments", [marker])
    errors = read_index_table(output, "errors", [marker])
    videos = read_index_table(output, "videos", [marker])
    indexed = set(videos.column("uri").to_pylist())
    failed = set(errors.column("uri").to_pylist())
    return BuildSummary(run_id=run_id, inputs=inputs, indexed=len(indexed), failed=len(failed),
                        skipped=inputs - len(indexed) - len(failed), ignored=ignored,
                        segments=segments.num_rows, errors=errors.num_rows)
