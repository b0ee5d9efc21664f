"""One record per build run: what it was asked to do, and, once it finished, its accounting.

The launcher writes the record as ``running`` before the pipeline starts; the pipeline's last
step (after every commit) rewrites it as ``finished`` with the accounting line. A run that was
killed keeps ``running``, which is how ``plm-index status`` tells what a run left unfinished.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from core import storage
from index.layout import RUNS, IndexLayout

log = logging.getLogger(__name__)

RunStatus = Literal["running", "finished", "failed"]


@dataclass(frozen=True)
class Accounting:
    """Where every input of a run ended: indexed, failed, skipped (done before) or ignored (not a video)."""

    inputs: int = 0
    indexed: int = 0
    failed: int = 0
    skipped: int = 0
    ignored: int = 0
    segments: int = 0
    errors: int = 0
    clips: int = 0

    def line(self, run_id: str) -> str:
        """The accounting line printed and stored after each run."""
        return (f"run {run_id}: inputs {self.inputs}, indexed {self.indexed}, failed {self.failed}, "
                f"skipped {self.skipped} ({self.segments} segment rows, {self.errors} error rows, "
                f"{self.ignored} non-video files ignored)")

    def plus(self, other: Accounting) -> Accounting:
        """The sum of two accountings (for combining per-worker counts)."""
        return Accounting(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})


@dataclass(frozen=True)
class RunRecord:
    """A run's record (``INDEX/runs/<run_id>.json``)."""

    run_id: str
    status: RunStatus
    started_at: str
    input: str
    settings_hash: str
    model_id: str
    pipeline_version: str
    force: bool = False
    finished_at: str | None = None
    accounting: dict[str, int] | None = None
    accounting_line: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def finished(self, accounting: Accounting) -> RunRecord:
        """This record once the run has finished with ``accounting``."""
        return replace(self, status="finished", finished_at=dt.datetime.now(dt.UTC).isoformat(),
                       accounting=asdict(accounting), accounting_line=accounting.line(self.run_id))

    def failed(self, error: str) -> RunRecord:
        """This record once the pipeline itself failed."""
        return replace(self, status="failed", finished_at=dt.datetime.now(dt.UTC).isoformat(), error=error[:2000])


def write_run(location: str, record: RunRecord) -> None:
    """Write (or replace) a run's record."""
    storage.write_bytes(IndexLayout(location).run_record(record.run_id),
                        json.dumps(asdict(record), indent=1, sort_keys=True).encode())


def read_run(location: str, run_id: str) -> RunRecord | None:
    """One run's record, or None if it was never written."""
    path = IndexLayout(location).run_record(run_id)
    if not storage.exists(path):
        return None
    return RunRecord(**json.loads(storage.read_bytes(path)))


def list_runs(location: str) -> list[RunRecord]:
    """Every run record of an index, oldest first."""
    layout = IndexLayout(location)
    records = []
    for path in storage.glob(layout.path(RUNS, "*.json")):
        try:
            records.append(RunRecord(**json.loads(storage.read_bytes(path))))
        except FileNotFoundError:
            continue
        except (ValueError, TypeError) as exc:  # a damaged record: the runs it tells of are history, not rows
            log.warning("skipping unreadable run record %s (%s); 'plm-index verify --index %s --repair' moves it "
                        "aside", path, str(exc)[:200], location)
    return sorted(records, key=lambda r: (r.started_at, r.run_id))
