"""Progress reporting for long runs: counters, log lines and an optional local progress file."""

from __future__ import annotations

import logging
import os
from typing import Any

import apache_beam as beam

log = logging.getLogger(__name__)


class ReportProgress(beam.DoFn):
    """Counts finished rows, logs every ``every``-th, and appends one line per row to a local file.

    The file (only for runs on this machine) lets the CLI draw a progress bar; remote runners
    report through the counters and logs instead.
    """

    def __init__(self, label: str, progress_file: str | None = None, every: int = 10) -> None:
        self._label = label
        self._progress_file = progress_file
        self._every = every
        self._seen = 0

    def setup(self) -> None:
        self._counter = beam.metrics.Metrics.counter("plm_index", f"{self._label}_done")

    def process(self, row: dict[str, Any]):
        self._seen += 1
        self._counter.inc()
        if self._seen % self._every == 0:
            log.info("%s: %d done in this worker (latest %s clip %s)", self._label, self._seen,
                     row.get("uri"), row.get("clip_index"))
        if self._progress_file:
            # O_APPEND writes of one short line are atomic, so concurrent workers do not interleave.
            fd = os.open(self._progress_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{row.get('video_id')}\t{row.get('clip_index')}\n".encode())
            finally:
                os.close(fd)
        yield row
