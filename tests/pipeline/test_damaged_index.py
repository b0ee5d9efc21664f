"""A real build, a damaged shard, ``verify --repair``, a rerun: the index equals an undamaged build row for row."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from core import storage
from core.media import make_video
from index import read_current
from index.layout import IndexLayout
from index.read import list_generations
from index.verify import repair, verify
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from schemas.tables import RUN_SPECIFIC_COLUMNS

pytestmark = pytest.mark.slow


def comparable(table) -> list[dict]:  # noqa: ANN001
    rows = table.drop_columns([c for c in (*RUN_SPECIFIC_COLUMNS, "committed_at") if c in table.column_names])
    return sorted(rows.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _build(videos: str, output: str, tiny_model: str):  # noqa: ANN202
    config = BuildConfig(input=videos, output=output, clips=ClipSpec.parse("fixed:4"),
                         model=ModelConfig(model=tiny_model, max_new_tokens=6, torch_threads=2))
    return run_build(config, beam_options([]))


def _copy_tree(source: str, target: str) -> None:
    for path in storage.list_files(source):
        storage.write_bytes(storage.join(target, *path[len(source):].strip("/").split("/")), storage.read_bytes(path))


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_repair_then_rebuild_restores_an_index_equal_to_an_undamaged_one(
        where: str, tmp_path: Path, tiny_model: str, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    folder = tmp_path / "videos"
    for number, seconds in enumerate((9, 5, 7)):
        make_video(str(folder / f"v{number}.mp4"), f"testsrc=size=160x120:rate=10,hue=h={number * 90}", seconds)
    # Small shards, so that one damaged shard holds some videos' rows and not others'.
    monkeypatch.setattr(importlib.import_module("index.compact"), "SEGMENT_ROWS_PER_FILE", 3)
    clean = str(tmp_path / "clean")
    assert _build(str(folder), clean, tiny_model).indexed == 3
    if where == "local":
        damaged = str(tmp_path / "damaged")
    else:
        damaged = f"gs://{request.getfixturevalue('gcs_emulator').create_bucket('damaged')}/index"
    _copy_tree(clean, damaged)  # the same build, byte for byte (what a copy between buckets gives)

    (generation,) = list_generations(IndexLayout(damaged))
    shards = generation.files_of("segments")
    assert len(shards) >= 3
    shard = shards[0]
    storage.write_bytes(shard, storage.read_bytes(shard)[:200])
    found = verify(damaged)
    (damage,) = found.damage
    assert damage.path == shard and damage.problem == "truncated"
    held = {v.key for v in damage.videos}
    assert 0 < len(held) < 3

    repair(damaged, found)
    assert verify(damaged).ok
    rerun = _build(str(folder), damaged, tiny_model)
    assert (rerun.indexed, rerun.skipped, rerun.failed) == (len(held), 3 - len(held), 0)  # exactly the held ones
    assert verify(damaged).ok
    for table in ("segments", "videos", "errors", "commits"):
        assert comparable(read_current(damaged, table)) == comparable(read_current(clean, table)), table
