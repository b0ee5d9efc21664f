"""What an index holds and what a rerun would do, for a person (``plm-index status``) or a script (``--json``).

Everything is read through ``index.read`` (the one rule for which commit is current) and the run
records, so status agrees with what search, eval and the next build's done-check see.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.compute as pc

from core import storage
from index.compact import count_files
from index.integrity import Damage, DamagedFileError, check_against_record
from index.layout import IndexLayout
from index.read import IndexSnapshot, snapshot, videos_held
from index.runs import RunRecord, list_runs


@dataclass(frozen=True)
class FailureGroup:
    """Failed videos that share a stage and an error class."""

    stage: str
    error_class: str
    videos: int
    example_uri: str
    example_message: str


@dataclass(frozen=True)
class SettingsSummary:
    """One settings hash the index holds: its indexed videos, how many readers see, its newest commit.

    Newer settings hide an older one's rows per (video, task) (``index.read`` rule 4); they stay
    reachable with ``--settings HASH`` on ``search`` and ``status``.
    """

    settings_hash: str
    videos_indexed: int
    videos_current: int
    newest_commit: str


@dataclass(frozen=True)
class LastRun:
    """The newest run, and what it left behind if it did not finish."""

    run_id: str
    status: str
    started_at: str
    finished_at: str | None
    input: str
    accounting_line: str | None
    committed_by_run: int
    error: str | None = None


@dataclass(frozen=True)
class IndexStatus:
    """The state of one index, as ``plm-index status`` reports it."""

    location: str
    videos_indexed: int
    videos_failed: int
    failed_by_stage: list[FailureGroup]
    segment_rows: int
    live_commits: int
    generations: int
    files: int
    settings_hashes: list[str]
    last_run: LastRun | None
    runs: int
    unfinished_runs: list[str] = field(default_factory=list)
    settings: list[SettingsSummary] = field(default_factory=list)
    settings_filter: str | None = None
    copies: int = 0
    damaged_files: list[str] = field(default_factory=list)

    def rerun_redoes(self) -> str:
        """What running the last build command again would do, in one sentence."""
        parts = [f"retries the {self.videos_failed} failed video(s)" if self.videos_failed else "retries nothing failed"]
        if self.last_run is not None and self.last_run.status != "finished":
            parts.append(f"finishes run {self.last_run.run_id}'s inputs that it never committed "
                         f"(its {self.last_run.committed_by_run} committed video(s) are skipped)")
        parts.append(f"skips the {self.videos_indexed} indexed video(s) with the same settings")
        return "a rerun of the same command " + ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form."""
        data = asdict(self)
        data["rerun_redoes"] = self.rerun_redoes()
        return data

    def text(self) -> str:
        """The human form."""
        lines = [f"index {self.location}" + (f" (settings {self.settings_filter} alone)" if self.settings_filter else ""),
                 f"  videos: {self.videos_indexed} indexed, {self.videos_failed} failed"
                 + (f", {self.copies} identical copies of them" if self.copies else "")]
        for group in self.failed_by_stage:
            lines.append(f"    failed at {group.stage} ({group.error_class}): {group.videos} video(s), "
                         f"e.g. {group.example_uri}: {group.example_message}")
        lines.append(f"  segments: {self.segment_rows} rows")
        lines.append(f"  files: {self.files} ({self.live_commits} live commit(s) not yet compacted, "
                     f"{self.generations} compacted generation(s))"
                     + ("; run 'plm-index compact --index " + self.location + "' to merge them"
                        if self.live_commits > 1000 else ""))
        if len(self.settings) > 1:
            lines.append(f"  settings: {len(self.settings)} settings hashes, newest first (older ones: "
                         "search --settings HASH)")
            for item in self.settings:
                lines.append(f"    {item.settings_hash}: {item.videos_indexed} video(s) indexed, "
                             f"{item.videos_current} current, newest commit {item.newest_commit}")
        run = self.last_run
        if run is None:
            lines.append("  runs: none recorded")
        else:
            lines.append(f"  last run: {run.run_id} ({run.status}, started {run.started_at}, input {run.input})")
            if run.status == "finished" and run.accounting_line:
                lines.append(f"    {run.accounting_line}")
            elif run.status == "running":
                lines.append(f"    did not finish (killed, or still running): it committed {run.committed_by_run} "
                             f"video(s); the rest of its inputs are unfinished")
            else:
                lines.append(f"    failed after committing {run.committed_by_run} video(s): {run.error}")
        if self.unfinished_runs and (run is None or self.unfinished_runs != [run.run_id]):
            lines.append(f"  runs that never finished: {', '.join(self.unfinished_runs)}")
        if self.damaged_files:
            lines.append(f"  damaged: {len(self.damaged_files)} file(s) skipped ({', '.join(self.damaged_files[:5])}"
                         f"{' ...' if len(self.damaged_files) > 5 else ''}); see 'plm-index verify --index "
                         f"{self.location}', and add --repair to retire them")
        lines.append(f"  rerun: {self.rerun_redoes()}")
        return "\n".join(lines)


def _failure_groups(errors: Any) -> list[FailureGroup]:
    """Failed videos grouped by the stage and class of their first error."""
    first: dict[str, dict[str, Any]] = {}
    for row in errors.to_pylist():
        first.setdefault(row["uri"], row)
    counts: Counter[tuple[str, str]] = Counter((r["stage"], r["error_class"]) for r in first.values())
    groups = []
    for (stage, error_class), videos in counts.most_common():
        example = next(r for r in first.values() if (r["stage"], r["error_class"]) == (stage, error_class))
        groups.append(FailureGroup(stage, error_class, videos, example["uri"], (example.get("message") or "")[:200]))
    return groups


def _last_run(runs: list[RunRecord], commits: Any) -> LastRun | None:
    if not runs:
        return None
    run = runs[-1]
    committed = int(pc.sum(pc.equal(commits.column("run_id"), run.run_id)).as_py() or 0) if commits.num_rows else 0
    return LastRun(run_id=run.run_id, status=run.status, started_at=run.started_at, finished_at=run.finished_at,
                   input=run.input, accounting_line=run.accounting_line, committed_by_run=committed, error=run.error)


def _settings_summaries(location: str, current: Any) -> list[SettingsSummary]:
    """Every settings hash the index stores, newest commit first, with how many of its videos readers see."""
    stored = snapshot(location, identity=False).current("indexed")
    seen = Counter(current.column("settings_hash").to_pylist())
    summaries = []
    for settings in sorted(set(stored.column("settings_hash").to_pylist())):
        mine = stored.filter(pc.equal(stored.column("settings_hash"), settings))
        newest = pc.max(mine.column("committed_at")).as_py()
        summaries.append(SettingsSummary(settings, mine.num_rows, seen.get(settings, 0),
                                         newest.isoformat(timespec="seconds") if newest else ""))
    return sorted(summaries, key=lambda s: s.newest_commit, reverse=True)


def _segment_rows(snap: Any, indexed: Any) -> int:
    """Segment rows readers see: the commits' counts, or the rows themselves where newer settings hide some tasks."""
    if not indexed.num_rows:
        return 0
    if snap.hidden_tasks():
        return snap.table("segments").num_rows
    return int(pc.sum(indexed.column("num_segments")).as_py() or 0)


def _check_sizes(snap: IndexSnapshot) -> None:
    """Note generation files that are missing or not their recorded size (one metadata request each;
    ``plm-index verify`` also compares checksums)."""
    for generation in snap.generations:
        for table in ("videos", "errors", "segments"):
            for path in generation.files_of(table):
                record = generation.record(path)
                if record is None or any(d.path == path for d in snap.damage):
                    continue
                try:
                    check_against_record(path, storage.size_of(path), record)
                except FileNotFoundError:
                    error = DamagedFileError(path, "missing", "listed in its generation's manifest but not found")
                except DamagedFileError as exc:
                    error = exc
                else:
                    continue
                commits = snap.commits.filter(pc.equal(snap.commits.column("source"), generation.name))
                snap.record_damage(Damage(path, error.problem, error.detail, generation.name, table,
                                          videos_held(generation, table, path, commits)))


def index_status(location: str, settings: str | None = None) -> IndexStatus:
    """Read ``location`` once and say what it holds (raises ``LegacyIndexError`` for a first-layout index).

    ``settings`` reports that settings hash alone (``UnknownSettingsError`` if the index has none).
    """
    if not storage.exists(location):
        raise FileNotFoundError(f"no index at {location}: check the path, or build one with 'plm-index build'")
    snap = snapshot(location, settings=settings)
    _check_sizes(snap)
    visible = snap.current()
    indexed = visible.filter(pc.equal(visible.column("status"), "indexed"))
    # A video whose tasks come from two settings has two visible commits: count it once.
    videos = len(set(indexed.column("video_id").to_pylist()))
    failed = visible.filter(pc.equal(visible.column("status"), "failed"))
    runs = list_runs(location)
    errors = snap.table("errors") if failed.num_rows else None  # reads around damaged files, noting them
    all_commits = snap.current(visible_only=False)
    return IndexStatus(
        location=location,
        videos_indexed=videos,
        videos_failed=failed.num_rows,
        failed_by_stage=_failure_groups(errors) if errors is not None else [],
        segment_rows=_segment_rows(snap, indexed),
        live_commits=len(snap.live),
        generations=len(snap.generations),
        files=count_files(IndexLayout(location)),
        settings_hashes=sorted(set(all_commits.column("settings_hash").to_pylist())),
        last_run=_last_run(runs, all_commits),
        runs=len(runs),
        unfinished_runs=[r.run_id for r in runs if r.status != "finished"],
        settings=_settings_summaries(location, indexed),
        settings_filter=settings,
        copies=snap.current("duplicate").num_rows,
        damaged_files=[d.path for d in snap.damage],
    )
