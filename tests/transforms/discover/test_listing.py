"""Discovering input videos: folders, globs and JSONL/CSV/Parquet manifests."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from schemas.manifest import ManifestError
from schemas.records import VideoInput
from schemas.rows import RunContext
from schemas.work import InputIgnored, VideoFailed
from transforms.discover import ReadInputs, check_input, load_manifest
from transforms.discover.manifest import HEAD_ROWS


def extras_of(video: VideoInput, *fields: str) -> dict:
    """The named fields of a video's extras_json (it may hold more, such as defaults)."""
    extras = json.loads(video.extras_json)
    assert "uri" not in extras
    return {name: extras[name] for name in fields if name in extras}


@dataclass
class Found:
    """What ``ReadInputs`` produced on a real runner, sorted (pieces are read in parallel, in any order)."""

    videos: list[VideoInput]
    ignored: list[str]
    failed: list[VideoFailed]


RUN = RunContext("r", "s", "m", "{}", "0", dt.datetime.now(dt.UTC))


def _append(item: object, path: str) -> None:
    with open(path, "ab") as sink:
        pickle.dump(item, sink)


def discover(source: str) -> Found:
    """Run the build's own input stage on FnApiRunner and collect what it yields."""
    sink = Path(tempfile.mkdtemp()) / "items.pickle"
    with TestPipeline(runner="FnApiRunner") as p:
        _ = p | ReadInputs(source, RUN) | beam.Map(_append, str(sink))
    items = []
    with open(sink, "rb") if sink.exists() else open(os.devnull, "rb") as f:
        while True:
            try:
                items.append(pickle.load(f))
            except EOFError:
                break
    return Found(videos=sorted((i for i in items if isinstance(i, VideoInput)), key=lambda v: v.uri),
                 ignored=sorted(i.uri for i in items if isinstance(i, InputIgnored)),
                 failed=sorted((i for i in items if isinstance(i, VideoFailed)), key=lambda f: f.uri))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A folder of files; listing goes by extension, so their content does not matter here."""
    for name in ("a.mp4", "B.MOV", "sub/c.mkv", "sub/deeper/d.webm", "notes.txt", "sub/cover.jpg",
                 "sub/deeper/e.mp4.part"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00")
    return tmp_path


def test_folder_is_listed_recursively_and_non_videos_skipped(tree: Path) -> None:
    found = discover(str(tree))
    assert [v.uri for v in found.videos] == [str(tree / p) for p in
                                             ("B.MOV", "a.mp4", "sub/c.mkv", "sub/deeper/d.webm")]
    assert found.ignored == sorted(str(tree / p) for p in ("notes.txt", "sub/cover.jpg", "sub/deeper/e.mp4.part"))
    assert all(v.extras_json == "{}" for v in found.videos)


def test_glob(tree: Path) -> None:
    assert [v.uri for v in discover(str(tree / "*.mp4")).videos] == [str(tree / "a.mp4")]
    found = discover(str(tree / "sub" / "*"))
    assert [v.uri for v in found.videos] == [str(tree / "sub" / "c.mkv")]
    assert str(tree / "sub" / "cover.jpg") in found.ignored


def test_single_file(tree: Path) -> None:
    found = discover(str(tree / "sub" / "c.mkv"))
    assert [v.uri for v in found.videos] == [str(tree / "sub" / "c.mkv")]
    assert found.ignored == []


def test_missing_input_is_refused_before_the_pipeline(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_input(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError):
        check_input(str(tmp_path / "missing.jsonl"))


def test_jsonl_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "lists"
    folder.mkdir()
    rows = [
        {"uri": "clips/a.mp4", "title": "A", "tags": ["x", "y"]},
        {"uri": "/abs/b.mp4"},
        {"uri": "gs://bucket/c.mp4", "n": 3},
        {"uri": "../other/d.mp4"},
    ]
    lines = [json.dumps(rows[0]), "", json.dumps(rows[1]), json.dumps(rows[2]), "   ", json.dumps(rows[3])]
    manifest = folder / "videos.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    found = discover(str(manifest))
    expected = [str(folder / "clips" / "a.mp4"), "/abs/b.mp4", "gs://bucket/c.mp4", str(tmp_path / "other" / "d.mp4")]
    assert [v.uri for v in found.videos] == sorted(expected)
    fields = ("title", "tags", "n")
    by_uri = {v.uri: extras_of(v, *fields) for v in found.videos}
    assert [by_uri[u] for u in expected] == [{"title": "A", "tags": ["x", "y"]}, {}, {"n": 3}, {}]
    assert found.ignored == [] and found.failed == []


def test_relative_manifest_path_resolves_against_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "list.jsonl").write_text(json.dumps({"uri": "v.mp4"}) + "\n")
    monkeypatch.chdir(tmp_path)
    videos = load_manifest(os.path.join("m", "list.jsonl"))
    assert [v.uri for v in videos] == [str(tmp_path / "m" / "v.mp4")]


def test_csv_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "videos.csv"
    manifest.write_text("uri,title,split\nv/a.mp4,First,train\n/abs/b.mp4,\"Second, with comma\",test\n")
    videos = load_manifest(str(manifest))
    assert [v.uri for v in videos] == [str(tmp_path / "v" / "a.mp4"), "/abs/b.mp4"]
    assert [extras_of(v, "title", "split") for v in videos] == [{"title": "First", "split": "train"},
                                                               {"title": "Second, with comma", "split": "test"}]


def test_parquet_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "videos.parquet"
    pq.write_table(pa.table({"uri": ["a.mp4", "gs://b/c.mp4"], "score": [0.5, 2.0], "label": ["p", None]}),
                   manifest)
    videos = discover(str(manifest)).videos
    assert [v.uri for v in videos] == [str(tmp_path / "a.mp4"), "gs://b/c.mp4"]
    assert [extras_of(v, "score", "label") for v in videos] == [{"score": 0.5, "label": "p"},
                                                               {"score": 2.0, "label": None}]


def test_bad_jsonl_rows_are_named_by_line(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"uri": "ok.mp4"}),           # line 1: fine
        json.dumps({"title": "no uri"}),         # line 2: uri missing
        "{not json",                             # line 3: invalid JSON
        "",                                      # line 4: blank, skipped
        json.dumps({"uri": "   "}),              # line 5: empty uri
        json.dumps(["a.mp4"]),                   # line 6: not an object
        json.dumps({"uri": "fine.mp4"}),         # line 7: fine
    ]) + "\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(str(manifest))
    message = str(caught.value)
    assert "4 invalid row(s)" in message
    problems = {line.split(":", 1)[0].strip(): line for line in message.splitlines()[1:]}
    assert set(problems) == {"line 2", "line 3", "line 5", "line 6"}
    assert "uri" in problems["line 2"] and "Field required" in problems["line 2"]
    assert "not valid JSON" in problems["line 3"]
    assert "uri is empty" in problems["line 5"]
    assert "not an object" in problems["line 6"]


def test_bad_csv_rows_are_named_by_line(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.csv"
    manifest.write_text("uri,title\na.mp4,A\n,missing uri\nc.mp4,C\n")
    with pytest.raises(ManifestError, match=r"1 invalid row\(s\):\n  line 3: uri: "):
        load_manifest(str(manifest))
    no_uri_column = tmp_path / "nouri.csv"
    no_uri_column.write_text("path,title\na.mp4,A\n")
    with pytest.raises(ManifestError, match="line 2: uri: Field required"):
        load_manifest(str(no_uri_column))


def test_bad_parquet_rows_are_named_by_row(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"uri": ["a.mp4", None, "c.mp4"]}), manifest)
    with pytest.raises(ManifestError, match=r"line 2: uri: "):
        load_manifest(str(manifest))


def test_file_uris_in_a_manifest_are_kept(tmp_path: Path) -> None:
    video = tmp_path / "videos" / "v.mp4"
    manifest = tmp_path / "lists" / "list.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"uri": f"file://{video}"}) + "\n" + json.dumps({"uri": "../videos/v.mp4"}) + "\n")
    assert [v.uri for v in load_manifest(str(manifest))] == [f"file://{video}", str(video)]
    # The manifest itself named by a file:// URI resolves its relative rows the same way.
    assert [v.uri for v in load_manifest(f"file://{manifest}")][1] == str(video)


def test_jsonl_rows_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    manifest = tmp_path / "unicode.jsonl"
    row = {"uri": "a.mp4", "title": "first\u2028second\u0085third"}
    manifest.write_text(json.dumps(row, ensure_ascii=False) + "\n" + json.dumps({"uri": "b.mp4"}) + "\n",
                        encoding="utf-8")
    videos = load_manifest(str(manifest))
    assert [v.uri for v in videos] == [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    assert extras_of(videos[0], "title") == {"title": row["title"]}


def test_csv_line_numbers_count_multiline_fields(tmp_path: Path) -> None:
    manifest = tmp_path / "multiline.csv"
    manifest.write_text('uri,notes\na.mp4,"two\nlines"\n,bad\n')  # the bad row is on line 4
    with pytest.raises(ManifestError, match="line 4: uri"):
        load_manifest(str(manifest))


def test_jsonl_pieces_own_each_line_exactly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transforms.discover import manifest as manifest_module

    manifest = tmp_path / "many.jsonl"
    rows = [json.dumps({"uri": f"v{i:04d}.mp4", "pad": "x" * (i % 37)}) for i in range(600)]
    manifest.write_text("\n".join(rows) + "\n")
    pieces = manifest_module.plan_pieces(str(manifest))
    assert len(pieces) > 100, "a manifest is cut into many pieces so workers share it"
    seen = [entry.record["uri"] for piece in pieces for entry in manifest_module.read_piece(piece)]
    assert sorted(seen) == [f"v{i:04d}.mp4" for i in range(600)]
    # The same through the pipeline, pieces spread over a real runner.
    assert [v.uri for v in discover(str(manifest)).videos] == [str(tmp_path / f"v{i:04d}.mp4") for i in range(600)]


def test_bad_rows_past_the_head_become_error_rows(tmp_path: Path) -> None:
    manifest = tmp_path / "late.jsonl"
    good = [json.dumps({"uri": f"g{i}.mp4"}) for i in range(HEAD_ROWS)]
    manifest.write_text("\n".join([*good, json.dumps({"title": "no uri"}), "{broken", json.dumps({"uri": "z.mp4"})])
                        + "\n")
    check_input(str(manifest))  # the head is fine, so the build starts
    found = discover(str(manifest))
    assert len(found.videos) == HEAD_ROWS + 1
    assert len(found.failed) == 2
    messages = sorted(f.errors[0]["message"] for f in found.failed)
    assert all(f.errors[0]["stage"] == "manifest" and f.errors[0]["error_class"] == "ManifestError"
               for f in found.failed)
    offset = len("\n".join(good)) + 1
    assert f"byte {offset}: uri: Field required" in messages[0] + messages[1]
    assert any("not valid JSON" in m for m in messages)
    with pytest.raises(ManifestError):
        load_manifest(str(manifest))  # read whole, the file is refused with its line numbers
