"""Tar shards: member uris, header-only listing, refused and truncated members, members opened as files.

Shards are written with Python's ``tarfile`` around real videos made by ``core.media.make_video``.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest

from core import storage, tar
from core.media import open_container


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two real videos, as bytes."""
    from core.media import make_video

    folder = tmp_path_factory.mktemp("tar-videos")
    a = make_video(str(folder / "a.mp4"), "testsrc=size=160x120:rate=25", 3)
    b = make_video(str(folder / "b.mp4"), "mandelbrot=size=160x120:rate=20", 2)
    return {"a": Path(a).read_bytes(), "b": Path(b).read_bytes()}


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def add_special(archive: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    archive.addfile(info)


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    tar.forget_shards()


def make_shard(path: Path, videos: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        add_bytes(archive, "k1.mp4", videos["a"])
        add_bytes(archive, "k1.json", json.dumps({"collection": "kitchen"}).encode())
        add_bytes(archive, "clips/k2.seg.mp4", videos["b"])
        add_bytes(archive, "k3.txt", b"a caption")
    return path


def test_member_uris_split_at_the_first_tar_marker() -> None:
    assert tar.split_member_uri("gs://b/shard-000001.tar#k.mp4") == ("gs://b/shard-000001.tar", "k.mp4")
    assert tar.split_member_uri("/d/S.TAR#clips/k#1.mp4") == ("/d/S.TAR", "clips/k#1.mp4")
    assert tar.split_member_uri("/d/shard.tar") is None
    assert tar.split_member_uri("/d/shard.tar#") is None
    assert tar.split_member_uri("https://h/v.mp4#t=3") is None
    assert tar.member_uri("gs://b/s.tar", "k.mp4") == "gs://b/s.tar#k.mp4"
    assert tar.is_shard("gs://b/s.TAR") and not tar.is_shard("gs://b/s.tar#k.mp4")
    assert tar.is_compressed_shard("/d/s.tar.gz") and not tar.is_shard("/d/s.tar.gz")
    assert storage.opens_by_path("/d/v.mp4")
    assert not storage.opens_by_path("/d/s.tar#v.mp4") and not storage.opens_by_path("gs://b/v.mp4")


def test_listing_finds_members_by_offset_and_groups_them_by_key(tmp_path: Path, videos: dict[str, bytes]) -> None:
    shard = make_shard(tmp_path / "s.tar", videos)
    listing = storage.list_shard(str(shard), read_suffixes=(".json",))
    assert [m.name for m in listing.members] == ["k1.mp4", "k1.json", "clips/k2.seg.mp4", "k3.txt"]
    raw = shard.read_bytes()
    assert raw[listing.members[0].offset:][:listing.members[0].size] == videos["a"]
    assert raw[listing.members[2].offset:][:listing.members[2].size] == videos["b"]
    assert listing.small == {"k1.json": b'{"collection": "kitchen"}'}
    assert listing.problems == ()
    grouped = {s.key: sorted(s.members) for s in tar.samples(listing)}
    assert grouped == {"k1": ["json", "mp4"], "clips/k2": ["seg.mp4"], "k3": ["txt"]}


def test_listing_reads_headers_not_videos(tmp_path: Path) -> None:
    # Forty 256 KiB members: listing reads their 512-byte headers (and PAX headers), not their data.
    with tarfile.open(tmp_path / "big.tar", "w") as archive:
        for n in range(40):
            add_bytes(archive, f"k{n:03d}.mp4", bytes([n]) * (256 << 10))
    listing = storage.list_shard(str(tmp_path / "big.tar"))
    assert len(listing.members) == 40
    assert listing.bytes_read < 40 * 4096 < listing.size / 50


def test_refused_members_are_named_and_the_rest_listed(tmp_path: Path, videos: dict[str, bytes]) -> None:
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as archive:
        add_bytes(archive, "../escape.mp4", b"x")
        add_bytes(archive, "/etc/abs.mp4", b"x")
        add_bytes(archive, "a/../../up.mp4", b"x")
        add_special(archive, "sym.mp4", tarfile.SYMTYPE, "/etc/passwd")
        add_special(archive, "hard.mp4", tarfile.LNKTYPE, "good.mp4")
        add_special(archive, "fifo.mp4", tarfile.FIFOTYPE)
        add_special(archive, "folder", tarfile.DIRTYPE)
        add_bytes(archive, "good.mp4", videos["a"])
    listing = storage.list_shard(str(path))
    assert [m.name for m in listing.members] == ["good.mp4"]
    reasons = {p.name: p.message for p in listing.problems}
    assert sorted(reasons) == ["../escape.mp4", "/etc/abs.mp4", "a/../../up.mp4", "fifo.mp4", "hard.mp4", "sym.mp4"]
    assert all(message.startswith(f"shard {path}, member ") for message in reasons.values())
    assert "climbs out" in reasons["../escape.mp4"] and "absolute" in reasons["/etc/abs.mp4"]
    assert "symbolic link" in reasons["sym.mp4"] and "hard link" in reasons["hard.mp4"]
    assert "not a regular file" in reasons["fifo.mp4"]
    with pytest.raises(tar.MemberError, match="symbolic link"):
        storage.read_bytes(f"{path}#sym.mp4")
    with pytest.raises(tar.MemberError, match="has no member 'nope.mp4'"):
        storage.open_read(f"{path}#nope.mp4")


def test_truncated_shard_reports_the_cut_member_and_keeps_those_before(tmp_path: Path,
                                                                       videos: dict[str, bytes]) -> None:
    whole = make_shard(tmp_path / "s.tar", videos).read_bytes()
    listing = storage.list_shard(str(tmp_path / "s.tar"))
    cut_member = listing.members[2]
    (tmp_path / "cut.tar").write_bytes(whole[:cut_member.offset + cut_member.size // 2])
    cut = storage.list_shard(str(tmp_path / "cut.tar"))
    assert [m.name for m in cut.members] == ["k1.mp4", "k1.json"]
    (problem,) = cut.problems
    assert problem.name == "clips/k2.seg.mp4" and "truncated" in problem.message
    # Cut inside the header after the second video: the shard itself is reported.
    after = cut_member.offset + cut_member.size
    header_at = after + (-after % 512)
    (tmp_path / "cut-header.tar").write_bytes(whole[:header_at + 100])
    cut_header = storage.list_shard(str(tmp_path / "cut-header.tar"))
    assert [m.name for m in cut_header.members] == ["k1.mp4", "k1.json", "clips/k2.seg.mp4"]
    (problem,) = cut_header.problems
    assert problem.name == "" and "truncated or damaged after member 'clips/k2.seg.mp4'" in problem.message


def test_not_a_tar_compressed_and_missing_shards_are_refused(tmp_path: Path, videos: dict[str, bytes]) -> None:
    (tmp_path / "text.tar").write_text("this is not a tar file " * 40)
    with pytest.raises(tar.ShardError, match="is not an uncompressed tar file"):
        storage.list_shard(str(tmp_path / "text.tar"))
    with tarfile.open(tmp_path / "s.tar.gz", "w:gz") as archive:
        add_bytes(archive, "k.mp4", videos["a"])
    with pytest.raises(tar.ShardError, match="repack it as an uncompressed .tar"):
        storage.list_shard(str(tmp_path / "s.tar.gz"))
    with pytest.raises(FileNotFoundError):
        storage.list_shard(str(tmp_path / "missing.tar"))


def test_a_member_reads_like_its_own_file(tmp_path: Path, videos: dict[str, bytes]) -> None:
    shard = make_shard(tmp_path / "s.tar", videos)
    uri = f"{shard}#clips/k2.seg.mp4"
    original = videos["b"]
    assert storage.size_of(uri) == len(original)
    assert storage.read_bytes(uri) == original
    assert storage.read_bytes(uri, 100, 5000) == original[100:5000]
    assert storage.read_bytes(uri, len(original) - 10, len(original) + 999) == original[-10:]
    with storage.open_read(uri) as member:
        assert member.read(7) == original[:7]
        assert member.seek(-5, io.SEEK_END) == len(original) - 5
        assert member.read() == original[-5:] and member.read(3) == b""
        member.seek(1000)
        assert member.tell() == 1000 and member.read(10) == original[1000:1010]


def test_pyav_decodes_a_member_exactly_as_the_file(tmp_path: Path, videos: dict[str, bytes]) -> None:
    shard = make_shard(tmp_path / "s.tar", videos)
    (tmp_path / "b.mp4").write_bytes(videos["b"])

    def frames(uri: str) -> list[np.ndarray]:
        with open_container(uri) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    from_member, from_file = frames(f"{shard}#clips/k2.seg.mp4"), frames(str(tmp_path / "b.mp4"))
    assert len(from_member) == len(from_file) == 40
    assert all(np.array_equal(x, y) for x, y in zip(from_member, from_file, strict=True))
    with pytest.raises(av.error.InvalidDataError):
        with open_container(f"{shard}#k3.txt") as container:
            next(container.decode(video=0))


def test_a_shard_rewritten_in_place_is_listed_again(tmp_path: Path, videos: dict[str, bytes]) -> None:
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as archive:
        add_bytes(archive, "k.mp4", videos["a"])
    with storage.open_read(f"{path}#k.mp4") as member:
        assert member.read() == videos["a"]
    with tarfile.open(path, "w") as archive:
        add_bytes(archive, "first.txt", b"moves k.mp4 further in")
        add_bytes(archive, "k.mp4", videos["b"])
    with storage.open_read(f"{path}#k.mp4") as member:
        assert member.read() == videos["b"]
