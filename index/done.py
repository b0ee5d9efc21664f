"""Is a video already indexed with these settings? Answered from the committed records, per video.

A build asks once per input, on a worker, after it has the video's content id: the live commit
object is looked up by name (one small read, no listing), and compacted generations are read
once per worker into a set of keys. Nothing grows the job graph or the launcher's memory.

It follows ``index.read``'s identity rules where they change the answer: a commit whose uri has
since been committed with other content (rule 5: the file was replaced, then put back) is not
done, and a content indexed under another uri is done but names that uri, so the build records
the input as an identical copy (rule 8) instead of indexing it twice.

Damaged records never count as done: a generation whose commits table is unreadable, videos a
``plm-index verify --repair`` retired, and a live commit that cannot be read are all redone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow.compute as pc

from core import storage
from index.commit import VideoCommit, read_commit
from index.integrity import DamagedFileError
from index.layout import IndexLayout, uri_key
from index.read import generation_commits, is_build_settings, list_generations


@dataclass(frozen=True)
class DoneState:
    """What the index holds for one content under one settings hash: whether it is done, and under which uri."""

    done: bool
    uri: str | None = None

    def copy_of(self, uri: str) -> str | None:
        """The uri whose commit holds this content's rows when ``uri`` is another name for it."""
        return self.uri if self.done and self.uri is not None and self.uri != uri else None


class DoneVideos:
    """The set of videos whose current commit under ``settings_hash`` is ``indexed``."""

    def __init__(self, location: str, settings_hash: str) -> None:
        self._layout = IndexLayout(location)
        self._settings_hash = settings_hash
        self._compacted: dict[str, tuple[dt.datetime, str, str]] | None = None
        # uri -> (time, content id) of its newest compacted build commit that knows its content.
        self._content: dict[str, tuple[dt.datetime, str]] = {}

    def _load_compacted(self) -> dict[str, tuple[dt.datetime, str, str]]:
        newest: dict[str, tuple[dt.datetime, str, str]] = {}
        if not storage.exists(self._layout.compacted_root):
            return newest
        for generation in list_generations(self._layout):
            for path in generation.files_of("commits"):
                try:
                    table = generation_commits(generation, path)  # less the videos a repair retired
                except DamagedFileError:
                    continue  # its videos are not done: the build redoes them
                self._note_contents(table)
                table = table.filter(pc.equal(table.column("settings_hash"), self._settings_hash))
                for key, uri, status, at in zip(table.column("key").to_pylist(), table.column("uri").to_pylist(),
                                                table.column("status").to_pylist(),
                                                table.column("committed_at").to_pylist(), strict=True):
                    if key not in newest or at >= newest[key][0]:
                        newest[key] = (at, status, uri)
        return newest

    def _note_contents(self, table) -> None:  # noqa: ANN001 - a pyarrow table of commits
        for uri, video_id, settings, at in zip(table.column("uri").to_pylist(), table.column("video_id").to_pylist(),
                                               table.column("settings_hash").to_pylist(),
                                               table.column("committed_at").to_pylist(), strict=True):
            if video_id is not None and is_build_settings(settings):
                if uri not in self._content or at > self._content[uri][0]:
                    self._content[uri] = (at, video_id)

    def replaced(self, uri: str, video_id: str, committed_at: dt.datetime) -> bool:
        """Whether ``uri`` was committed with other content after ``committed_at`` (rule 5).

        Seen from the compacted generations (a build compacts at its end), so a replacement
        still in live commits only is seen after the next compaction.
        """
        if self._compacted is None:
            self._compacted = self._load_compacted()
        newest = self._content.get(uri)
        return newest is not None and newest[1] != video_id and newest[0] > committed_at

    def state(self, key: str) -> DoneState:
        """Whether ``key``'s newest commit under these settings is ``indexed`` and its uri still holds it."""
        if self._compacted is None:
            self._compacted = self._load_compacted()
        compacted = self._compacted.get(key)
        path = self._layout.commit_path(self._settings_hash, key)
        try:
            live = read_commit(path, with_segments=False).commit
        except (FileNotFoundError, DamagedFileError):
            live = None  # a damaged commit is redone (and so replaced)
        if live is not None and (compacted is None or live.committed_at >= compacted[0]):
            at, status, uri = live.committed_at, live.status, live.uri
        elif compacted is not None:
            at, status, uri = compacted
        else:
            return DoneState(False)
        if status != "indexed" or self.replaced(uri, key, at):
            return DoneState(False, uri)
        return DoneState(True, uri)

    def is_done(self, key: str) -> bool:
        """Whether ``key``'s newest commit under these settings is ``indexed`` (see ``state``)."""
        return self.state(key).done

    def copy_recorded(self, uri: str, video_id: str) -> bool:
        """Whether ``uri`` already has its live duplicate commit naming ``video_id`` (no need to write it again)."""
        try:
            commit: VideoCommit = read_commit(self._layout.commit_path(self._settings_hash, uri_key(uri)),
                                              with_segments=False).commit
        except FileNotFoundError:
            return self._compacted_copy(uri, video_id)
        except DamagedFileError:
            return False  # written again, replacing the damaged record
        return commit.status == "duplicate" and commit.video_id == video_id

    def _compacted_copy(self, uri: str, video_id: str) -> bool:
        if self._compacted is None:
            self._compacted = self._load_compacted()
        found = self._compacted.get(uri_key(uri))
        return found is not None and found[1] == "duplicate" and self._content.get(uri, (None, None))[1] == video_id
