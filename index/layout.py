"""Where everything of an index lives, in one place.

    INDEX/_index.json                                   format version (written by the first build)
    INDEX/commits/<settings_hash>/<kk>/<key>.parquet    one object per video: its whole outcome
    INDEX/compacted/<generation>/...                    merged commits (see ``index.compact``)
    INDEX/compacted/<generation>/_generation.json       written last: the generation exists from then on
    INDEX/runs/<run_id>.json                            one record per build run: inputs, settings, accounting
    INDEX/search/                                       derived search index (``search``), rebuilt from the above

A video's commit object is named by its settings hash and its key (the content ``video_id``, or a
hash of the uri for a file that failed before it could be identified), so a retried bundle, a
second worker doing the same video, or a rerun writes the same name again: never a second copy.
``kk`` is the key's first two characters, which keeps local folders small.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from core import storage

FORMAT_VERSION = 2
FORMAT_FILE = "_index.json"
COMMITS = "commits"
COMPACTED = "compacted"
RUNS = "runs"
SEARCH = "search"
GENERATION_FILE = "_generation.json"
COMMIT_SUFFIX = ".parquet"


class LegacyIndexError(RuntimeError):
    """The folder holds an index in the first layout (``runs/<run_id>/_SUCCESS``), which needs migrating."""


def uri_key(uri: str) -> str:
    """The commit key of an input that has no content id (it failed before it could be read)."""
    return "u" + hashlib.sha256(uri.encode()).hexdigest()[:23]


def commit_key(video_id: str | None, uri: str) -> str:
    """The key a video's commit is stored under: its content id, else a hash of its uri."""
    return video_id if video_id else uri_key(uri)


@dataclass(frozen=True)
class IndexLayout:
    """The paths of one index (a local folder or an object-store prefix)."""

    location: str

    def path(self, *parts: str) -> str:
        """A path inside the index."""
        return storage.join(self.location, *parts)

    @property
    def format_file(self) -> str:
        """The file that says which layout this index uses."""
        return self.path(FORMAT_FILE)

    def commit_path(self, settings_hash: str, key: str) -> str:
        """Where the commit of ``key`` under ``settings_hash`` lives."""
        return self.path(COMMITS, settings_hash, key[:2], key + COMMIT_SUFFIX)

    @property
    def commits_root(self) -> str:
        """The folder of every live (not yet compacted) commit."""
        return self.path(COMMITS)

    @property
    def compacted_root(self) -> str:
        """The folder of compacted generations."""
        return self.path(COMPACTED)

    def generation_folder(self, generation: str) -> str:
        """One compacted generation's folder."""
        return self.path(COMPACTED, generation)

    def run_record(self, run_id: str) -> str:
        """One run's record."""
        return self.path(RUNS, f"{run_id}.json")

    @property
    def search_root(self) -> str:
        """The derived search index's folder."""
        return self.path(SEARCH)


def is_legacy(location: str) -> bool:
    """Whether ``location`` holds first-layout runs and no current-format marker."""
    layout = IndexLayout(location)
    if storage.exists(layout.format_file):
        return False
    return bool(storage.glob(layout.path(RUNS, "*", "_SUCCESS")))


def check_format(location: str) -> None:
    """Raise ``LegacyIndexError`` (saying how to migrate) for an index in the first layout."""
    if is_legacy(location):
        raise LegacyIndexError(
            f"{location} holds an index in the first layout (runs/<run_id>/_SUCCESS); convert it once with "
            f"'plm-index migrate --index {location}' (it keeps the old files)")


def ensure_format(location: str) -> None:
    """Mark a new or current index with its format version (an old-layout index is refused)."""
    check_format(location)
    layout = IndexLayout(location)
    storage.makedirs(location)
    if not storage.exists(layout.format_file):
        storage.write_bytes(layout.format_file, json.dumps({"format": FORMAT_VERSION}).encode())
