"""WebDataset-style tar shards as build inputs.

A shard's members are grouped by key (``k.mp4`` plus an optional ``k.json``); each video member
becomes an input whose uri is ``<shard>#<member>``, with the fields of its ``k.json`` validated as
a manifest row is (a bad one is an error row naming shard and member, as a bad manifest row is).
Refused members (names escaping the shard, links), a truncated member, and a shard that cannot be
read at all become error rows too; the rest of the shard is still indexed. Listing reads the
shard's headers and its ``.json`` members only (``core.storage.list_shard``); the videos' bytes are
read later, by probe and decode, straight from the shard.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator

from core import storage, tar
from schemas.records import VideoInput
from schemas.rows import RunContext
from schemas.work import InputIgnored, VideoFailed
from transforms.discover.manifest import ManifestEntry, validate

log = logging.getLogger(__name__)

STAGE = "discover"
SIDECAR_EXTENSION = "json"


def shard_uri(uri: str) -> str:
    """A listed shard's uri as the index keeps it: local paths absolute (a search elsewhere opens them)."""
    if storage.is_remote(uri) or uri.startswith("file://"):
        return uri
    return os.path.abspath(uri)


def _failed(run: RunContext, uri: str, message: str, error_class: str) -> VideoFailed:
    return VideoFailed(uri=uri, video_id=None,
                       errors=(run.error_row(uri, None, None, STAGE, message, error_class=error_class),))


def _sidecar_fields(shard: str, member: tar.TarMember, data: bytes | None) -> dict[str, object] | str:
    """A ``k.json`` member's fields, or what is wrong with it."""
    if data is None:
        return f"member {member.name!r} is larger than {tar.MAX_SMALL_MEMBER} bytes; per-video JSON must be small"
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"member {member.name!r} is not valid JSON: {exc}"
    if not isinstance(record, dict):
        return f"member {member.name!r} is not a JSON object"
    if "uri" in record:
        return (f"member {member.name!r} sets 'uri'; inside a shard the video's uri is its member's "
                "(<shard>#<member>): remove the field")
    return record


def shard_inputs(listed: str, run: RunContext, is_video: Callable[[str], bool]) -> Iterator[VideoInput | VideoFailed | InputIgnored]:
    """The inputs one shard holds: a ``VideoInput`` per video member, error rows for what cannot be used,
    ``InputIgnored`` for other members. ``is_video`` says which member names are videos (by extension)."""
    shard = shard_uri(listed)
    try:
        listing = storage.list_shard(shard, read_suffixes=(f".{SIDECAR_EXTENSION}",))
    except Exception as exc:  # noqa: BLE001 - a shard that cannot be read is an error row, not a failed job
        what = "does not exist" if isinstance(exc, FileNotFoundError) else "cannot be read"
        message = f"shard {shard} {what}: {exc}" if not isinstance(exc, tar.ShardError) else str(exc)
        yield _failed(run, shard, message, type(exc).__name__)
        return
    log.info("shard %s: %d members, %d refused, %d of %d bytes read to list it", shard, len(listing.members),
             len(listing.problems), listing.bytes_read, listing.size)
    for problem in listing.problems:
        uri = tar.member_uri(shard, problem.name) if problem.name else shard
        yield _failed(run, uri, f"{problem.message}; the rest of the shard is indexed", "TarMemberError")
    for sample in tar.samples(listing):
        sidecar = sample.members.get(SIDECAR_EXTENSION)
        videos = [m for m in sample.members.values() if is_video(m.name)]
        for member in sample.members.values():
            if member is not sidecar and member not in videos:
                yield InputIgnored(uri=tar.member_uri(shard, member.name))
        if not videos:
            if sidecar is not None:
                log.info("shard %s: %s has no video beside it", shard, sidecar.name)
                yield InputIgnored(uri=tar.member_uri(shard, sidecar.name))
            continue
        fields: dict[str, object] | str = {}
        if sidecar is not None:
            fields = _sidecar_fields(shard, sidecar, listing.small.get(sidecar.name))
        for video in videos:
            uri = tar.member_uri(shard, video.name)
            if isinstance(fields, str):
                yield _failed(run, uri, f"shard {shard}, {fields}; fix the member and run again", "ManifestError")
                continue
            where = f"member {sidecar.name!r}" if sidecar is not None else f"member {video.name!r}"
            checked = validate(shard, ManifestEntry(where, {**fields, "uri": uri}))
            if isinstance(checked, VideoInput):
                yield checked
            else:
                yield _failed(run, uri, f"shard {shard}, {checked}; fix the member and run again", "ManifestError")
