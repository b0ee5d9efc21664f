"""Tar shards as build inputs: brace lists, members grouped by key, k.json validated like manifest rows."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from core import tar
from tests.transforms.discover.test_listing import discover
from transforms.discover.listing import check_input, expand_braces


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_brace_lists_expand_like_the_shell() -> None:
    assert expand_braces("s-{000000..000003}.tar") == [f"s-00000{n}.tar" for n in range(4)]
    assert expand_braces("s-{8..11}.tar") == ["s-8.tar", "s-9.tar", "s-10.tar", "s-11.tar"]
    assert expand_braces("s-{03..1}.tar") == ["s-03.tar", "s-02.tar", "s-01.tar"]
    assert expand_braces("gs://b/{a,b}/s-{0..1}.tar") == ["gs://b/a/s-0.tar", "gs://b/a/s-1.tar",
                                                         "gs://b/b/s-0.tar", "gs://b/b/s-1.tar"]
    assert expand_braces("odd{name}.tar") == ["odd{name}.tar"]
    with pytest.raises(ValueError, match="more than"):
        expand_braces("s-{0..9999999}.tar")


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Three shards of members with placeholder bytes (listing does not decode)."""
    for n in range(3):
        with tarfile.open(tmp_path / f"shard-{n:06d}.tar", "w") as archive:
            add_bytes(archive, f"v{n}.mp4", b"\x00" * 100)
            add_bytes(archive, f"v{n}.json", json.dumps({"collection": f"c{n}", "tasks": ["caption"]}).encode())
            add_bytes(archive, f"v{n}.cls", b"3")
            add_bytes(archive, f"clips/w{n}.webm", b"\x00" * 10)
    return tmp_path


def test_a_brace_list_of_shards_lists_their_videos(shards: Path) -> None:
    source = str(shards / "shard-{000000..000001}.tar")
    check_input(source)  # a brace list is not checked for existence up front
    found = discover(source)
    assert [v.uri for v in found.videos] == [f"{shards}/shard-000000.tar#clips/w0.webm",
                                             f"{shards}/shard-000000.tar#v0.mp4",
                                             f"{shards}/shard-000001.tar#clips/w1.webm",
                                             f"{shards}/shard-000001.tar#v1.mp4"]
    fields = {v.uri.rsplit("#", 1)[1]: json.loads(v.extras_json) for v in found.videos}
    assert fields["v1.mp4"]["collection"] == "c1" and "collection" not in fields["clips/w1.webm"]
    assert found.ignored == [f"{shards}/shard-000000.tar#v0.cls", f"{shards}/shard-000001.tar#v1.cls"]
    assert found.failed == []


def test_a_glob_and_a_folder_of_shards_are_read(shards: Path) -> None:
    assert len(discover(str(shards / "shard-*.tar")).videos) == 6
    assert len(discover(str(shards)).videos) == 6


def test_bad_members_and_missing_shards_become_error_rows(shards: Path) -> None:
    with tarfile.open(shards / "shard-000001.tar", "a") as archive:
        add_bytes(archive, "../escape.mp4", b"x")
        add_bytes(archive, "bad.mp4", b"x")
        add_bytes(archive, "bad.json", b'{"questions": "not a list"}')
        add_bytes(archive, "broken.mp4", b"x")
        add_bytes(archive, "broken.json", b"{not json")
        add_bytes(archive, "named.mp4", b"x")
        add_bytes(archive, "named.json", b'{"uri": "/etc/passwd"}')
    found = discover(str(shards / "shard-{000001..000005}.tar"))
    base = len(str(shards)) + 1
    assert [v.uri[base:] for v in found.videos] == ["shard-000001.tar#clips/w1.webm", "shard-000001.tar#v1.mp4",
                                                    "shard-000002.tar#clips/w2.webm", "shard-000002.tar#v2.mp4"]
    rows = {f.uri[base:]: f.errors[0] for f in found.failed}
    assert sorted(rows) == ["shard-000001.tar#../escape.mp4", "shard-000001.tar#bad.mp4",
                            "shard-000001.tar#broken.mp4", "shard-000001.tar#named.mp4", "shard-000003.tar",
                            "shard-000004.tar", "shard-000005.tar"]
    shard = f"{shards}/shard-000001.tar"
    escape = rows["shard-000001.tar#../escape.mp4"]
    assert (escape["stage"], escape["error_class"]) == ("discover", "TarMemberError")
    assert escape["message"].startswith(f"shard {shard}, member '../escape.mp4': its name climbs out")
    assert rows["shard-000001.tar#bad.mp4"]["message"].startswith(f"shard {shard}, member 'bad.json': questions")
    assert "not valid JSON" in rows["shard-000001.tar#broken.mp4"]["message"]
    assert "sets 'uri'" in rows["shard-000001.tar#named.mp4"]["message"]
    missing = rows["shard-000004.tar"]
    assert missing["error_class"] == "FileNotFoundError" and "does not exist" in missing["message"]
    tar.forget_shards()
