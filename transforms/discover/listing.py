"""Find the inputs of a build inside the pipeline: a folder, a glob, a ``gs://``/``s3://`` prefix, or a manifest.

Any of these may name (or hold) WebDataset-style ``.tar`` shards, each read for its members
(``transforms/discover/shards.py``); a brace list (``shard-{000000..000099}.tar``) names several.

The launcher never lists an archive, holds it, or embeds it in the job graph: it only checks that
the input exists (and that a manifest's head is well formed). Listing and manifest reading run on
workers (``ReadInputs``). A manifest is cut into pieces that are spread over workers before any
row is read, so the first clips are planned while the rest of the manifest is still unread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from core import storage, tar
from core.paths import local_path, uri_of_local_path, walk_files
from schemas.records import VideoInput
from schemas.rows import RunContext
from schemas.work import InputIgnored, VideoFailed
from transforms.discover.manifest import (
    HEAD_ROWS,
    ManifestPiece,
    is_manifest,
    load_manifest,
    plan_pieces,
    read_piece,
    validate,
)
from transforms.discover.shards import shard_inputs

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv",
                  ".wmv", ".3gp", ".ogv")


def is_video(uri: str) -> bool:
    """Whether a listed file is a video, by its extension."""
    return uri.lower().endswith(VIDEO_SUFFIXES)


def is_glob(source: str) -> bool:
    """Whether ``source`` is a glob pattern."""
    return any(ch in source for ch in "*?[")


MAX_BRACE_NAMES = 1_000_000
_BRACES = re.compile(r"\{([^{}]*)\}")
_BRACE_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def expand_braces(source: str) -> list[str]:
    """The names a brace list stands for, as the shell (and WebDataset) expand them.

    ``{000000..000099}`` is a numeric range, zero-padded to its bounds' width when a bound has a
    leading zero; ``{a,b}`` is a list; braces holding neither are kept as written. Several brace
    groups multiply. Refuses more than :data:`MAX_BRACE_NAMES` names.
    """
    match = next((m for m in _BRACES.finditer(source) if "," in m[1] or _BRACE_RANGE.fullmatch(m[1])), None)
    if match is None:
        return [source]
    body = match[1]
    bounds = _BRACE_RANGE.fullmatch(body)
    if bounds:
        first, last = int(bounds[1]), int(bounds[2])
        padded = any(len(b.lstrip("-")) > 1 and b.lstrip("-").startswith("0") for b in bounds.groups())
        width = max(len(bounds[1]), len(bounds[2])) if padded else 0
        step = 1 if last >= first else -1
        if abs(last - first) + 1 > MAX_BRACE_NAMES:
            raise ValueError(f"input {source}: the brace range {{{body}}} names more than {MAX_BRACE_NAMES} files")
        choices = [str(n).zfill(width) for n in range(first, last + step, step)]
    else:
        choices = body.split(",")
    head, tail = source[:match.start()], source[match.end():]
    names: list[str] = []
    for choice in choices:
        names.extend(expand_braces(head + choice + tail))
        if len(names) > MAX_BRACE_NAMES:
            raise ValueError(f"input {source}: the brace list names more than {MAX_BRACE_NAMES} files")
    return names


def has_braces(source: str) -> bool:
    """Whether ``source`` holds a brace list or range (``{a,b}``, ``{000..099}``)."""
    return expand_braces(source) != [source]


def is_pattern(source: str) -> bool:
    """Whether ``source`` is read as a glob: it has glob characters and no file or folder has that exact name.

    An existing path is always taken literally, so ``clips [2024]/`` is that folder, not a pattern.
    """
    return is_glob(source) and not storage.exists(source)


def check_input(source: str) -> None:
    """Fail fast, before any worker starts, on an input that does not exist or a malformed manifest head."""
    if is_manifest(source):
        load_manifest(source, limit=HEAD_ROWS)
        return
    if is_pattern(source) or has_braces(source):
        # A glob that matches nothing is an empty run (the build says so after the run); a missing
        # name in a brace list is an error row.
        return
    if not storage.exists(source):
        raise FileNotFoundError(f"input {source} does not exist: give a folder, a glob, a gs:// or s3:// prefix, "
                                "a manifest (.jsonl, .csv, .parquet), or .tar shards (a brace list such as "
                                "shard-{000000..000099}.tar names several)")


def list_source(source: str) -> Iterator[str]:
    """Every file a folder, prefix, glob, brace list or single-file input names, each once, as index URIs.

    Local folders are walked following symlinked folders, each real folder once (a loop is logged
    and skipped). Local names that are not UTF-8 become percent-encoded ``file://`` URIs
    (``core.paths``), so every input survives its name.
    """
    names = expand_braces(source)
    if names != [source]:
        yield from dict.fromkeys(uri for name in names for uri in list_source(name))
        return
    if is_pattern(source):
        found = storage.glob(source)
    elif storage.is_dir(source):
        if storage.is_remote(source):
            found = storage.list_files(source)
        else:
            skipped: list[str] = []
            found = walk_files(local_path(source), skipped)
            for path in skipped:
                log.warning("skipping %s: a folder already listed (symlink loop), a dangling link or not a file",
                            uri_of_local_path(path))
    else:
        found = [source]
    yield from dict.fromkeys(uri if storage.is_remote(uri) else uri_of_local_path(uri) for uri in found)


class _PlanInputs(beam.DoFn):
    """The input -> manifest pieces, or one file uri per listed file."""

    def process(self, source: str) -> Iterator[ManifestPiece | str]:
        if is_manifest(source):
            pieces = plan_pieces(source)
            log.info("reading manifest %s in %d pieces", source, len(pieces))
            yield from pieces
            return
        count = 0
        for uri in list_source(source):
            count += 1
            yield uri
        log.info("listed %d files under %s", count, source)


class _ReadInputs(beam.DoFn):
    """A manifest piece -> its rows as inputs (bad rows as failures); a listed file -> an input or ignored."""

    def __init__(self, run: RunContext) -> None:
        self._run = run

    def process(self, item: ManifestPiece | str) -> Iterator[Any]:
        if isinstance(item, str):
            if tar.is_shard(item) or tar.is_compressed_shard(item):
                yield from shard_inputs(item, self._run, is_video)
            elif is_video(item):
                yield VideoInput(uri=item)
            else:
                log.info("skipping %s: not a video file extension", item)
                yield InputIgnored(uri=item)
            return
        for entry in read_piece(item):
            checked = validate(item.uri, entry)
            if isinstance(checked, VideoInput):
                yield checked
                continue
            uri = entry.record.get("uri") if isinstance(entry.record, dict) else None
            uri = uri.strip() if isinstance(uri, str) and uri.strip() else f"{item.uri}#{entry.where.replace(' ', '=')}"
            message = f"manifest {item.uri}, {checked}; fix the row and run again"
            yield VideoFailed(uri=uri, video_id=None, errors=(
                self._run.error_row(uri, None, None, "manifest", message, error_class="ManifestError"),))


@dataclass
class ReadInputs(beam.PTransform):
    """The build's inputs, found on workers: ``VideoInput``, ``InputIgnored`` and ``VideoFailed`` (bad rows)."""

    source: str
    run: RunContext

    def __post_init__(self) -> None:
        beam.PTransform.__init__(self)

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
        return (pipeline
                | "Source" >> beam.Create([self.source if storage.is_remote(self.source)
                                          else uri_of_local_path(self.source)])
                | "Plan" >> beam.ParDo(_PlanInputs())
                # Spread manifest pieces (or listed files) over workers; rows are read after this.
                | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(_ReadInputs(self.run)))
