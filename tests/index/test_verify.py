"""Damaged indexes: checksums, ``plm-index verify [--repair]``, and reads that skip a damaged file.

Every case runs on local disk and on the real GCS emulator: a truncated, deleted, overwritten or
swapped-in shard, a corrupt live commit, a corrupt generation manifest, a corrupt run record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import storage
from index.commit import HEADER_KEY, VideoCommit, encode_commit, write_commit
from index.compact import DamagedIndexError, compact
from index.done import DoneVideos
from index.integrity import CHECKSUMS
from index.layout import GENERATION_FILE, IndexLayout, ensure_format
from index.read import list_generations, read_current, snapshot
from index.runs import RunRecord, list_runs, write_run
from index.status import index_status
from index.verify import repair, verify
from pipeline.cli import main
from tests.index.conftest import BASE_TIME, SETTINGS, segment_rows

COMPACTED = [f"c{i}" for i in range(4)]  # in the generation
LIVE = ["l0", "l1"]  # live commits


def _commit(location: str, name: str, n: int = 2, minute: int = 0) -> VideoCommit:
    uri = f"/videos/{name}.mp4"
    commit = VideoCommit(key=name, video_id=name, uri=uri, settings_hash=SETTINGS, status="indexed",
                         committed_at=BASE_TIME + dt.timedelta(minutes=minute), run_id="r1",
                         video={"video_id": name, "uri": uri, "num_clips": n, "settings_hash": SETTINGS,
                                "run_id": "r1"}, num_clips=n, num_segments=n)
    write_commit(IndexLayout(location), commit, segment_rows(name, uri, n))
    return commit


def _make_index(location: str) -> str:
    ensure_format(location)
    for name in COMPACTED:
        _commit(location, name)
    compact(location)
    for name in LIVE:
        _commit(location, name)
    write_run(location, RunRecord(run_id="r1", status="finished", started_at=BASE_TIME.isoformat(), input="/videos",
                                  settings_hash=SETTINGS, model_id="tiny", pipeline_version="1"))
    return location


@pytest.fixture(params=["local", "gcs"])
def location(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    """A small index (one generation of four videos, two live commits) on local disk or the GCS emulator."""
    if request.param == "local":
        return _make_index(str(tmp_path / "index"))
    emulator = request.getfixturevalue("gcs_emulator")
    return _make_index(f"gs://{emulator.create_bucket('verify')}/index")


def _generation_file(location: str, name: str) -> str:
    (generation,) = list_generations(IndexLayout(location))
    return generation.file(name)


def _live(location: str, name: str) -> str:
    return IndexLayout(location).commit_path(SETTINGS, name)


def _videos(table: pa.Table) -> set[str]:
    return set(table.column("video_id").to_pylist())


def _other_index_shard(tmp_path) -> bytes:  # noqa: ANN001
    other = str(tmp_path / f"other-{uuid.uuid4().hex[:6]}")
    ensure_format(other)
    for name in ("x0", "x1"):
        _commit(other, name, n=3)
    compact(other)
    return storage.read_bytes(_generation_file(other, "segments-00000.parquet"))


def _damage(kind: str, location: str, tmp_path) -> tuple[str, str, set[str]]:  # noqa: ANN001
    """Damage the shard of the generation; returns the path, the problem verify must name, the videos it held."""
    path = _generation_file(location, "segments-00000.parquet")
    data = storage.read_bytes(path)
    if kind == "truncate":
        storage.write_bytes(path, data[: len(data) // 2])
        return path, "truncated", set(COMPACTED)
    if kind == "delete":
        storage.remove(path)
        return path, "missing", set(COMPACTED)
    if kind == "random":
        storage.write_bytes(path, os.urandom(len(data)))
        return path, "corrupt", set(COMPACTED)
    if kind == "swap":
        storage.write_bytes(path, _other_index_shard(tmp_path))
        return path, "corrupt", set(COMPACTED)
    raise AssertionError(kind)


def test_a_healthy_index_verifies_clean_and_remote_files_are_not_downloaded(location: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (generation,) = list_generations(IndexLayout(location))
    assert set(generation.manifest[CHECKSUMS]) == {"commits.parquet", "videos.parquet", "errors.parquet",
                                                   "segments-00000.parquet"}
    downloaded: list[str] = []
    original = storage.read_bytes

    def counting(uri: str, *args, **kwargs) -> bytes:  # noqa: ANN002, ANN003
        downloaded.append(uri)
        return original(uri, *args, **kwargs)
    monkeypatch.setattr(storage, "read_bytes", counting)
    report = verify(location)
    assert report.ok and report.unverified == 0
    assert report.files_checked == 2 + 1 + 4 + 1  # live commits, manifest, generation files, run record
    assert main(["verify", "--index", location]) == 0
    if storage.is_remote(location):
        # GCS keeps a crc32c of every object: generation files are checked from their metadata alone.
        assert report.by_stored_checksum == 4
        assert not [p for p in downloaded if "/compacted/" in p and p.endswith(".parquet")]


@pytest.mark.parametrize("kind", ["truncate", "delete", "random", "swap"])
def test_a_damaged_shard_is_named_with_its_videos_and_reads_answer_from_the_rest(
        location: str, kind: str, tmp_path, caplog: pytest.LogCaptureFixture,  # noqa: ANN001
        capsys: pytest.CaptureFixture[str]) -> None:
    path, problem, held = _damage(kind, location, tmp_path)
    with caplog.at_level(logging.WARNING, logger="index.integrity"):
        assert _videos(read_current(location, "segments")) == set(LIVE)  # a swap is caught by its checksum
        read_current(location, "segments")  # a second read does not warn again
    warnings = [r.getMessage() for r in caplog.records if path in r.getMessage()]
    assert len(warnings) == 1
    assert "held 4 video(s)" in warnings[0] and f"plm-index verify --index {location} --repair" in warnings[0]
    report = verify(location)
    assert [(d.path, d.problem, d.table) for d in report.damage] == [(path, problem, "segments")]
    assert {v.key for v in report.damage[0].videos} == held
    assert main(["verify", "--index", location]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED {path}" in out and "held 4 video(s)" in out and "/videos/c0.mp4" in out
    assert f"plm-index verify --index {location} --repair" in out
    assert main(["verify", "--index", location, "--json"]) == 1
    as_json = json.loads(capsys.readouterr().out)
    assert not as_json["ok"] and as_json["damaged"][0]["path"] == path
    assert sorted(v["key"] for v in as_json["videos"]) == sorted(held)

    assert main(["status", "--index", location]) == 0
    if kind in ("truncate", "delete"):  # status checks sizes; verify also checks checksums
        assert f"damaged: 1 file(s) skipped ({path}" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["truncate", "delete", "random", "swap"])
def test_repair_retires_the_damaged_shard_and_only_its_videos_are_redone(location: str, kind: str,
                                                                        tmp_path) -> None:  # noqa: ANN001
    path, _, held = _damage(kind, location, tmp_path)
    healthy = {p: storage.read_bytes(p) for p in storage.list_files(location)
               if p != path and not p.endswith(GENERATION_FILE)}
    report = repair(location, verify(location))
    assert report.repaired is not None and report.repaired.videos_to_redo == len(held)
    assert verify(location).ok
    for other, data in healthy.items():
        assert storage.read_bytes(other) == data, f"{other} was touched"
    assert _videos(read_current(location, "videos")) == set(LIVE)
    assert _videos(read_current(location, "segments")) == set(LIVE)
    done = DoneVideos(location, SETTINGS)
    assert {name for name in COMPACTED + LIVE if not done.is_done(name)} == held
    for name in COMPACTED:  # what the next build does: commit the redone videos again
        _commit(location, name, minute=5)
    assert _videos(read_current(location, "segments")) == set(COMPACTED + LIVE)
    assert read_current(location, "segments").num_rows == 2 * len(COMPACTED + LIVE)
    compact(location, full=True)
    assert verify(location).ok and read_current(location, "segments").num_rows == 2 * len(COMPACTED + LIVE)


def test_a_corrupt_live_commit_is_skipped_named_and_repaired(location: str, capsys: pytest.CaptureFixture[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    path = _live(location, "l0")
    storage.write_bytes(path, os.urandom(700))
    with caplog.at_level(logging.WARNING, logger="index.integrity"):
        assert _videos(read_current(location, "videos")) == set(COMPACTED) | {"l1"}
    assert any(path in r.getMessage() and "held 1 video(s)" in r.getMessage() for r in caplog.records)
    report = verify(location)
    assert [(d.path, d.problem, [v.key for v in d.videos]) for d in report.damage] == [(path, "not-parquet", ["l0"])]
    assert main(["search", "--index", location, "c0 clip", "--mode", "keyword", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and {h["video_id"] for h in hits} <= set(COMPACTED) | {"l1"}
    assert main(["verify", "--index", location, "--repair"]) == 0
    assert "moved to quarantine/" in capsys.readouterr().out
    assert not storage.exists(path) and verify(location).ok
    assert not DoneVideos(location, SETTINGS).is_done("l0")


def test_a_live_commit_with_flipped_bytes_fails_its_data_checksum(location: str) -> None:
    path = _live(location, "l1")
    data = bytearray(storage.read_bytes(path))
    data[10] ^= 0xFF  # inside the row groups: the footer still parses
    storage.write_bytes(path, bytes(data))
    (damage,) = verify(location).damage
    assert (damage.path, damage.problem) == (path, "corrupt") and "crc32c" in damage.detail
    assert _videos(read_current(location, "segments")) == set(COMPACTED) | {"l0"}


def test_a_commit_copied_in_under_another_videos_name_is_caught(location: str) -> None:
    storage.write_bytes(_live(location, "l1"), storage.read_bytes(_live(location, "l0")))
    (damage,) = verify(location).damage
    assert damage.path == _live(location, "l1") and "not of the video its name says" in damage.detail


def test_a_corrupt_generation_manifest_is_skipped_named_and_repaired(location: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    manifest = _generation_file(location, GENERATION_FILE)
    storage.write_bytes(manifest, b'{"generation": "half a manif')
    with caplog.at_level(logging.WARNING, logger="index.integrity"):
        assert _videos(read_current(location, "segments")) == set(LIVE)
        status = index_status(location)
    assert status.videos_indexed == len(LIVE) and status.damaged_files == [manifest]
    assert any(manifest in r.getMessage() for r in caplog.records)
    (damage,) = verify(location).damage
    assert (damage.path, damage.table) == (manifest, "manifest")
    assert {v.key for v in damage.videos} == set(COMPACTED)  # named from the generation's own commits table
    healthy = {p: storage.read_bytes(p) for p in storage.list_files(location) if not p.endswith(GENERATION_FILE)}
    repair(location, verify(location))
    assert verify(location).ok
    assert all(storage.read_bytes(p) == data for p, data in healthy.items())
    assert {name for name in COMPACTED + LIVE if not DoneVideos(location, SETTINGS).is_done(name)} == set(COMPACTED)


def test_a_damaged_commits_table_retires_its_generation(location: str) -> None:
    path = _generation_file(location, "commits.parquet")
    storage.write_bytes(path, storage.read_bytes(path)[:100])
    assert _videos(read_current(location, "videos")) == set(LIVE)
    (damage,) = verify(location).damage
    assert (damage.table, damage.problem) == ("commits", "truncated")
    assert {v.key for v in damage.videos} == set(COMPACTED)  # named from its videos table
    repair(location, verify(location))
    assert verify(location).ok and _videos(read_current(location, "videos")) == set(LIVE)
    assert {name for name in COMPACTED if not DoneVideos(location, SETTINGS).is_done(name)} == set(COMPACTED)


def test_a_corrupt_run_record_is_skipped_and_moved_aside(location: str) -> None:
    record = IndexLayout(location).run_record("r1")
    storage.write_bytes(record, b"{not json")
    assert list_runs(location) == []
    assert index_status(location).runs == 0
    (damage,) = verify(location).damage
    assert damage.path == record
    repair(location, verify(location))
    assert verify(location).ok


def test_a_full_compaction_refuses_to_merge_around_damage(location: str, tmp_path) -> None:  # noqa: ANN001
    _damage("truncate", location, tmp_path)
    with pytest.raises(DamagedIndexError, match="--repair"):
        compact(location, full=True)
    assert main(["compact", "--index", location, "--full"]) == 2


def test_files_written_before_checksums_are_unverified_not_damaged(tmp_path) -> None:  # noqa: ANN001
    location = _make_index(str(tmp_path / "old"))
    manifest_path = _generation_file(location, GENERATION_FILE)
    manifest = json.loads(storage.read_bytes(manifest_path))
    del manifest[CHECKSUMS]
    storage.write_bytes(manifest_path, json.dumps(manifest).encode())
    old_commit = encode_commit(snapshot(location).live[_live(location, "l0")].commit, segment_rows("l0", "/videos/l0.mp4", 2))
    table = pq.read_table(pa.BufferReader(old_commit))  # the same commit, rewritten without its data checksum
    pq.write_table(table.replace_schema_metadata({HEADER_KEY: table.schema.metadata[HEADER_KEY]}), _live(location, "l0"))
    report = verify(location)
    assert report.ok and report.unverified == 5
    # Without a record, a file of the wrong kind is still caught by what it must hold.
    pq.write_table(pa.table({"something": [1, 2]}), _generation_file(location, "segments-00000.parquet"))
    (damage,) = verify(location).damage
    assert damage.problem == "schema-mismatch" and {v.key for v in damage.videos} == set(COMPACTED)
