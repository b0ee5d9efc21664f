"""The on-disk index, owned in one place: layout, per-video commits, the read rule, compaction, runs.

Every reader (build's done-check, search, eval, status) and every writer (the build's commit
stage, compaction, import, migrate) goes through this package; nothing else knows file names.
Importing it loads neither Beam nor torch.
"""

from index.commit import VideoCommit, read_commit, write_commit
from index.compact import CompactionReport, compact
from index.done import DoneVideos
from index.layout import IndexLayout, LegacyIndexError, commit_key, ensure_format
from index.read import IndexSnapshot, read_current, snapshot
from index.runs import Accounting, RunRecord, list_runs, read_run, write_run

__all__ = ["Accounting", "CompactionReport", "DoneVideos", "IndexLayout", "IndexSnapshot", "LegacyIndexError",
           "RunRecord", "VideoCommit", "commit_key", "compact", "ensure_format", "list_runs", "read_commit",
           "read_current", "read_run", "snapshot", "write_commit", "write_run"]
