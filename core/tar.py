"""WebDataset-style tar shards: member URIs, a shard's member list, and one member as a file.

A video inside a shard is named ``<shard uri>#<member name>`` (``gs://b/shard-000001.tar#k.mp4``,
``/data/shard-000001.tar#clips/k.mp4``). This module knows the tar format and nothing about
where bytes come from: ``core.storage`` opens shards (local, ``gs://``, any fsspec URL) and hands
their readers to it, so everything that opens a video through ``storage.open_read``,
``read_bytes`` or ``size_of`` opens members too.

How a shard is read (and why this way):

- **Listing reads headers only.** :func:`list_members` walks the shard with ``tarfile`` in
  seeking mode (``r:``) over a seekable reader: after each 512-byte header it seeks over the
  member's data to the next header, so listing a shard of videos reads its headers (and the small
  members asked for, such as ``k.json``), not its videos. On object storage ``storage`` lists
  with small blocks (:data:`LIST_BLOCK_SIZE`) so a seek over a member costs no data.
- **A member is a byte range.** Tar stores each member's data contiguously and uncompressed, at
  ``offset_data`` for ``size`` bytes. :class:`MemberReader` is a seekable file over that range of
  the shard's reader, so probing and decoding read a member exactly as they read a standalone
  video file (ranged reads, seeks), and nothing is extracted to disk. The shard's video bytes are
  read by probe and decode as often as a plain video's are; listing adds only the headers.
- **Offsets are found once per process.** Every listing is remembered (member ranges by shard
  uri, with the shard's size); a process that opens a member of a shard it has not listed (a
  decode child, ``plm-index serve``) lists it once; opening a member lists its shard again when the
  shard's size changed (rewritten in place).
- Compressed shards (``.tar.gz``) have no byte ranges and are refused with a message saying so.

Refused members (each reported with the shard and member name, never opened): names that would
escape the shard's folder (absolute paths, ``..`` parts, names that are not UTF-8), symbolic and
hard links, and other non-regular members (devices, FIFOs, sparse files). A member whose data the
shard does not hold in full (a truncated shard) is reported as truncated; the members before it
are listed as usual.
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

from core.readers import SizedReader

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".tar"
COMPRESSED_SHARD_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
MEMBER_SEPARATOR = "#"
#: Block size of the reader that lists a remote shard: small, so seeking over a member reads no data.
LIST_BLOCK_SIZE = 64 * 1024
#: Members read whole while listing (``read_suffixes``) may be at most this big.
MAX_SMALL_MEMBER = 1 << 20
#: Shards whose member offsets a process remembers.
CACHED_SHARDS = 256

_MARKER = SHARD_SUFFIX + MEMBER_SEPARATOR


class ShardError(ValueError):
    """A shard that cannot be read as an uncompressed tar file."""


class MemberError(ValueError):
    """A member URI that names no readable member (refused, truncated, or not in the shard)."""


@dataclass(frozen=True)
class TarMember:
    """A regular file inside a shard: its name and where its bytes are (``offset`` is the data's)."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class MemberProblem:
    """A member that is refused or cannot be read, and why (the message names shard and member)."""

    name: str
    message: str


@dataclass(frozen=True)
class ShardListing:
    """What listing a shard found: its readable members in shard order, and the refused ones."""

    shard: str
    size: int
    members: tuple[TarMember, ...]
    problems: tuple[MemberProblem, ...] = ()
    small: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    bytes_read: int = 0


@dataclass(frozen=True)
class Sample:
    """A WebDataset sample: the members that share a key, by extension (``k.mp4``, ``k.json`` -> ``mp4``, ``json``)."""

    key: str
    members: dict[str, TarMember]


def is_shard(uri: str) -> bool:
    """Whether a listed file is a tar shard (``.tar``, any case)."""
    return uri.lower().endswith(SHARD_SUFFIX) and not is_member_uri(uri)


def is_compressed_shard(uri: str) -> bool:
    """Whether a listed file is a compressed tar, which cannot be read by byte range."""
    return uri.lower().endswith(COMPRESSED_SHARD_SUFFIXES)


def split_member_uri(uri: str) -> tuple[str, str] | None:
    """``(shard uri, member name)`` for ``<...>.tar#<member>``, else None (the first ``.tar#`` splits)."""
    at = uri.lower().find(_MARKER)
    if at < 0 or at + len(_MARKER) == len(uri):
        return None
    return uri[:at + len(SHARD_SUFFIX)], uri[at + len(_MARKER):]


def is_member_uri(uri: str) -> bool:
    """Whether ``uri`` names a member inside a tar shard."""
    return split_member_uri(uri) is not None


def member_uri(shard: str, name: str) -> str:
    """The URI of member ``name`` of ``shard``."""
    return f"{shard}{MEMBER_SEPARATOR}{name}"


def unsafe_name(name: str) -> str | None:
    """Why a member name may not be used (it would escape the shard's folder), or None if it is safe."""
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        return "its name is not valid UTF-8"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":" and posix[0].isalpha()):
        return "its name is an absolute path"
    if ".." in posix.split("/"):
        return "its name climbs out of the shard's folder ('..')"
    if not posixpath.normpath(posix).strip("./"):
        return "its name is empty"
    return None


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _problem(shard: str, name: str, why: str) -> MemberProblem:
    return MemberProblem(_printable(name), f"shard {shard}, member {_printable(name)!r}: {why}")


def refuse_compressed(shard: str) -> None:
    """Raise :class:`ShardError` for a compressed shard, whose members have no byte ranges."""
    if is_compressed_shard(shard):
        raise ShardError(f"shard {shard} is compressed: tar members are read by byte range, which compressed "
                         "tars do not have; repack it as an uncompressed .tar (WebDataset's own layout)")


def list_members(handle: IO[bytes], size: int, shard: str, read_suffixes: Iterable[str] = ()) -> ShardListing:
    """The members of the shard open as ``handle`` (``size`` bytes), read from its headers only.

    Member data is sought over, not read, except for members whose names end with one of
    ``read_suffixes`` (``.json``) and that are at most :data:`MAX_SMALL_MEMBER` bytes: those are
    read whole into ``small``. Raises :class:`ShardError` for a file that is not an uncompressed
    tar. The listing is remembered (see :func:`known_range`). ``core.storage.list_shard`` opens a
    shard by uri and calls this.
    """
    refuse_compressed(shard)
    suffixes = tuple(s.lower() for s in read_suffixes)
    counter = _CountingReader(handle, size)
    members: list[TarMember] = []
    problems: list[MemberProblem] = []
    small: dict[str, bytes] = {}
    try:
        archive = tarfile.open(fileobj=counter, mode="r:")  # type: ignore[call-overload]
    except tarfile.ReadError as exc:
        raise ShardError(f"shard {shard} is not an uncompressed tar file ({exc}); give .tar shards "
                         "(WebDataset layout: k.mp4 with an optional k.json)") from exc
    last: tarfile.TarInfo | None = None
    while True:
        try:
            info = archive.next()
        except tarfile.TarError as exc:
            _note_broken_end(shard, size, last, members, problems, str(exc))
            break
        if info is None:
            if not _ends_cleanly(counter, archive.offset):
                _note_broken_end(shard, size, last, members, problems, "the shard ends inside a header")
            break
        last = info
        why = unsafe_name(info.name)
        if info.isdir() and why is None:
            continue
        if why is None:
            if info.issym() or info.islnk():
                why = f"it is a {'symbolic' if info.issym() else 'hard'} link (to {_printable(info.linkname)!r})"
            elif not info.isreg() or info.sparse is not None:
                why = "it is not a regular file"
            elif info.offset_data + info.size > size:
                why = (f"the shard is truncated: the member's {info.size} bytes at offset {info.offset_data} "
                       f"run past the shard's end ({size} bytes)")
        if why is not None:
            problems.append(_problem(shard, info.name, why))
            continue
        member = TarMember(info.name, info.offset_data, info.size)
        members.append(member)
        if suffixes and info.name.lower().endswith(suffixes) and info.size <= MAX_SMALL_MEMBER:
            counter.seek(info.offset_data)
            small[info.name] = counter.read(info.size)
    archive.members = []
    listing = ShardListing(shard, size, tuple(members), tuple(problems), small, counter.bytes_read)
    _remember(listing)
    return listing


def _ends_cleanly(reader: _CountingReader, offset: int) -> bool:
    """Whether the shard holds an end-of-archive block (zeros) or ends exactly at ``offset``."""
    reader.seek(offset)
    block = reader.read(tarfile.BLOCKSIZE)
    return not block or block == bytes(len(block)) and len(block) == tarfile.BLOCKSIZE


def _note_broken_end(shard: str, size: int, last: tarfile.TarInfo | None, members: list[TarMember],
                     problems: list[MemberProblem], detail: str) -> None:
    """Report where a shard breaks off: the member it cut (if not already reported) or the shard itself."""
    if last is not None and last.offset_data + last.size > size:
        return  # the cut member is already reported as truncated
    after = f" after member {_printable(last.name)!r}" if last is not None else ""
    problems.append(MemberProblem("", f"shard {shard} is truncated or damaged{after} ({detail}); members after "
                                      "that point cannot be read: rewrite the shard"))
    log.warning("shard %s breaks off%s: %s (%d members listed)", shard, after, detail, len(members))


def samples(listing: ShardListing) -> list[Sample]:
    """The shard's members grouped by WebDataset key: the name up to the first dot of its file name.

    ``clips/k.mp4`` and ``clips/k.json`` share key ``clips/k`` (extensions ``mp4``, ``json``); a
    name without a dot is a key with an empty extension. Samples keep the shard's order.
    """
    grouped: dict[str, dict[str, TarMember]] = {}
    for member in listing.members:
        folder, _, base = member.name.rpartition("/")
        stem, _, extension = base.partition(".")
        key = f"{folder}/{stem}" if folder else stem
        grouped.setdefault(key, {})[extension.lower()] = member
    return [Sample(key, members) for key, members in grouped.items()]


# --- opening members ------------------------------------------------------------------------------

_CACHE: OrderedDict[str, tuple[int, dict[str, tuple[int, int]], dict[str, str]]] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _remember(listing: ShardListing) -> None:
    entry = (listing.size, {m.name: (m.offset, m.size) for m in listing.members},
             {p.name: p.message for p in listing.problems if p.name})
    with _CACHE_LOCK:
        _CACHE[listing.shard] = entry
        _CACHE.move_to_end(listing.shard)
        while len(_CACHE) > CACHED_SHARDS:
            _CACHE.popitem(last=False)


def forget_shards() -> None:
    """Drop every remembered shard listing (a shard rewritten in place is then listed again)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def known_range(uri: str, shard_size: int | None = None) -> tuple[int, int] | None:
    """``(offset, size)`` of a member uri's bytes in its shard, or None when this process has not
    listed the shard (or listed it at another size: it was rewritten in place, so list it again).

    Raises :class:`MemberError` naming shard and member when the listed shard has no such member,
    or refused it.
    """
    split = split_member_uri(uri)
    if split is None:
        raise MemberError(f"{uri} does not name a tar member (expected <shard>.tar#<member>)")
    shard, name = split
    with _CACHE_LOCK:
        entry = _CACHE.get(shard)
    if entry is None or (shard_size is not None and entry[0] != shard_size):
        return None
    _, ranges, refused = entry
    if name in ranges:
        return ranges[name]
    if name in refused:
        raise MemberError(refused[name])
    raise MemberError(f"shard {shard} has no member {name!r}")


class MemberReader(SizedReader):
    """A seekable read-only file over one member's bytes inside its shard (nothing is copied).

    Reads go to the shard's own reader (a local file, or ``core.storage``'s retried ranged
    reader), clamped to the member's range, so FFmpeg, PySceneDetect and the thumbnailer read a
    member as if it were a file of its own. Closing it closes the shard's reader.
    """

    def __init__(self, shard: IO[bytes], offset: int, size: int, name: str) -> None:
        super().__init__(size)
        self.name = name
        self._shard = shard
        self._offset = offset

    def read(self, size: int | None = -1) -> bytes:
        end = self._end_of_read(size)
        if end <= self._pos:
            return b""
        self._shard.seek(self._offset + self._pos)
        data = self._shard.read(end - self._pos)
        self._pos += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self._shard.close()
        super().close()


class _CountingReader(MemberReader):
    """A whole shard as a reader that counts the bytes it hands out (how much listing really read)."""

    def __init__(self, shard: IO[bytes], size: int) -> None:
        super().__init__(shard, 0, size, "shard")
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data
