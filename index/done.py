"""Is a video already indexed with these settings? Answered from the committed records, per video.

A build asks once per input, on a worker, after it has the video's content id: the live commit
object is looked up by name (one small read, no listing), and compacted generations are read
once per worker into a set of keys. Nothing grows the job graph or the launcher's memory.

Damaged records never count as done: a generation whose commits table is unreadable, videos a
``plm-index verify --repair`` retired, and a live commit that cannot be read are all redone.
"""

from __future__ import annotations

import datetime as dt

import pyarrow.compute as pc

from core import storage
from index.commit import read_commit
from index.integrity import DamagedFileError
from index.layout import IndexLayout
from index.read import generation_commits, list_generations


class DoneVideos:
    """The set of videos whose current commit under ``settings_hash`` is ``indexed``."""

    def __init__(self, location: str, settings_hash: str) -> None:
        self._layout = IndexLayout(location)
        self._settings_hash = settings_hash
        self._compacted: dict[str, tuple[dt.datetime, str]] | None = None

    def _load_compacted(self) -> dict[str, tuple[dt.datetime, str]]:
        newest: dict[str, tuple[dt.datetime, str]] = {}
        if not storage.exists(self._layout.compacted_root):
            return newest
        for generation in list_generations(self._layout):
            for path in generation.files_of("commits"):
                try:
                    table = generation_commits(generation, path)  # less the videos a repair retired
                except DamagedFileError:
                    continue  # its videos are not done: the build redoes them
                table = table.filter(pc.equal(table.column("settings_hash"), self._settings_hash))
                for key, status, at in zip(table.column("key").to_pylist(), table.column("status").to_pylist(),
                                           table.column("committed_at").to_pylist(), strict=True):
                    if key not in newest or at >= newest[key][0]:
                        newest[key] = (at, status)
        return newest

    def is_done(self, key: str) -> bool:
        """Whether ``key``'s newest commit under these settings is ``indexed``."""
        if self._compacted is None:
            self._compacted = self._load_compacted()
        compacted = self._compacted.get(key)
        path = self._layout.commit_path(self._settings_hash, key)
        try:
            live = read_commit(path, with_segments=False).commit
        except (FileNotFoundError, DamagedFileError):
            live = None  # a damaged commit is redone (and so replaced)
        if live is not None and (compacted is None or live.committed_at >= compacted[0]):
            return live.status == "indexed"
        return compacted is not None and compacted[1] == "indexed"
