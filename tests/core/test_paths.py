"""Local file names as index URIs: every byte name survives, and symlinked folders are walked once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import storage
from core.paths import local_path, uri_of_local_path, walk_files

# Names that are not UTF-8 (a lone continuation byte, Latin-1, a truncated sequence, an overlong
# form), mixed with a literal '%' and spaces, which the encoding must not confuse with escapes.
ODD_NAMES = [b"caf\xe9.mp4", b"\x80.mp4", b"a%41 \xff\xfe b.mp4", b"trunc\xe2\x82.mkv", b"overlong\xc0\xaf%25.ts"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_name_that_is_not_utf8_round_trips_through_its_uri(tmp_path: Path, name: bytes) -> None:
    path_bytes = os.fsencode(tmp_path) + b"/" + name
    payload = b"bytes of " + name
    with open(path_bytes, "wb") as f:
        f.write(payload)
    uri = uri_of_local_path(os.fsdecode(path_bytes))
    uri.encode("utf-8")  # what Beam's coders and Parquet need
    assert uri.startswith("file://") and uri.isascii()
    assert os.fsencode(local_path(uri)) == path_bytes
    # Every reader that goes through core.storage opens it back.
    assert storage.read_bytes(uri) == payload
    assert storage.exists(uri) and storage.size_of(uri) == len(payload)


def test_utf8_names_keep_their_plain_path(tmp_path: Path) -> None:
    for name in ("plain.mp4", "café 100%.mp4", "clips [2024] *.mp4"):
        path = str(tmp_path / name)
        assert uri_of_local_path(path) == path
        assert local_path(path) == path


def test_file_uris_are_percent_decoded() -> None:
    assert local_path("file:///videos/a%20b%25.mp4") == "/videos/a b%.mp4"


def test_symlinked_folders_are_followed_once_and_loops_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.mp4").write_bytes(b"a")
    elsewhere = tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    (elsewhere / "b.mp4").write_bytes(b"b")
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "real" / "loop").symlink_to(root)  # back up to the top: a loop
    (root / "dangling").symlink_to(tmp_path / "gone")
    skipped: list[str] = []
    found = walk_files(str(root), skipped)
    assert found == [str(root / "linked" / "deep" / "b.mp4"), str(root / "real" / "a.mp4")]
    assert str(root / "real" / "loop") in skipped and str(root / "dangling") in skipped
