"""Local file names as index URIs and back, faithfully, whatever bytes the names hold.

On POSIX a file name is bytes. Python hands a name that is not valid UTF-8 over as a ``str`` with
lone surrogates (``os.fsdecode``, the ``surrogateescape`` error handler), which no UTF-8 encoder
(Beam's coders, Parquet, JSON) accepts. Such a name is therefore indexed as an RFC 8089 ``file://``
URI whose bytes are percent-encoded (``/videos/bad\\xff.mp4`` -> ``file:///videos/bad%FF.mp4``),
and every reader turns it back into the exact bytes with ``local_path``. Names that are valid
UTF-8 keep their plain path as their URI, as before. A ``file://`` URI is always percent-decoded,
as RFC 8089 says (so a literal ``%`` in a ``file://`` URI must be written ``%25``).
"""

from __future__ import annotations

import os
import urllib.parse

FILE_SCHEME = "file://"


def is_faithful_text(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 as it is (it holds no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def uri_of_local_path(path: str) -> str:
    """The index URI of a local file: its path, or a percent-encoded ``file://`` URI if the name is not UTF-8."""
    if is_faithful_text(path):
        return path
    return FILE_SCHEME + urllib.parse.quote(os.fsencode(os.path.abspath(path)), safe="/")


def local_path(uri: str) -> str:
    """The local path a local URI names: ``file://`` URIs percent-decoded back to the name's exact bytes.

    The result may hold lone surrogates (a name that is not UTF-8); Python's ``os`` functions and
    ``open`` take it as the original bytes. Libraries that need UTF-8 text (decord) must be given
    an alias (``utf8_alias``) or an open file.
    """
    if not uri.startswith(FILE_SCHEME):
        return uri
    return os.fsdecode(urllib.parse.unquote_to_bytes(uri[len(FILE_SCHEME):]))


def walk_files(folder: str, skipped: list[str] | None = None) -> list[str]:
    """Every file below a local folder, recursively and sorted, following symlinked folders once each.

    A symlinked folder is followed like a real one; a folder reached again (a symlink loop, or two
    links to one folder) is not listed twice: its path is appended to ``skipped`` instead. Dangling
    links and unreadable folders are appended to ``skipped`` too. Paths are returned as Python
    names them (``uri_of_local_path`` makes index URIs of them).
    """
    skipped = skipped if skipped is not None else []
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            status = os.stat(current)
        except OSError:
            skipped.append(current)
            continue
        key = (status.st_dev, status.st_ino)
        if key in seen:
            skipped.append(current)
            continue
        seen.add(key)
        try:
            entries = list(os.scandir(current))
        except OSError:
            skipped.append(current)
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=True):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    found.append(entry.path)
                else:
                    skipped.append(entry.path)
            except OSError:
                skipped.append(entry.path)
    return sorted(found)
