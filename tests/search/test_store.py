"""The derived search index: incremental sync, the read rule, compaction, rebuild, and the CLI's cold start."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from index import compact
from search import EmptyIndexError, SearchEngine, SearchQueryError, run_search, sync
from search.store import open_store, store_root
from tests.search.conftest import commit_video, segment_row

ROOT = Path(__file__).resolve().parents[2]


def texts(location: str, query: str, limit: int = 10) -> list[str]:
    return [h.text for h in SearchEngine.open(location).search_hits(query, "keyword", limit=limit)]


def test_sync_is_incremental_and_follows_the_read_rule(tmp_path: Path, st_embed) -> None:
    output = str(tmp_path / "index")
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    commit_video(output, [segment_row("a", 0, 0, 5, "a parrot sings on a branch")], embed=st_embed, at=t0)
    first = sync(output)
    assert (first.parts_added, first.units_added, first.units) == (1, 1, 1)
    assert sync(output).parts_added == 0  # nothing changed: nothing read
    # A second video committed (as during a build): only it is read, and a search sees it.
    commit_video(output, [segment_row("b", 0, 0, 5, "a dog digs in the garden"),
                          segment_row("b", 1, 5, 10, "the dog barks at a parrot")], embed=st_embed, at=t0)
    assert sorted(texts(output, "parrot")) == ["a parrot sings on a branch", "the dog barks at a parrot"]
    report = sync(output)
    assert report.parts_added == 0 and report.units == 3  # the search above already synced it
    # Compaction moves the rows into a generation: the live parts are replaced by one generation part.
    compact(output)
    report = sync(output)
    assert (report.parts, report.parts_added, report.parts_dropped, report.units) == (1, 1, 2, 3)
    # A newer commit of video a replaces its rows (the read rule); the old row no longer counts.
    commit_video(output, [segment_row("a", 0, 0, 5, "a parrot flies away")], embed=st_embed,
                 at=t0 + dt.timedelta(days=1))
    assert sorted(texts(output, "parrot")) == ["a parrot flies away", "the dog barks at a parrot"]
    assert open_store(output).num_units == 3
    # Rebuilding from the Parquet index gives the same answers.
    assert sync(output, rebuild=True).units == 3
    assert sorted(texts(output, "parrot")) == ["a parrot flies away", "the dog barks at a parrot"]
    assert Path(store_root(output)).is_relative_to(Path(output))


def test_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no index at"):
        run_search(str(tmp_path / "missing"), "water", 10, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyIndexError):
        run_search(str(tmp_path / "empty"), "water", 10, False)
    with pytest.raises(SearchQueryError, match="at least 1"):
        run_search(str(tmp_path / "empty"), "water", 0, False)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``plm-index`` as the console script runs it, reporting which heavy modules it imported."""
    code = ("import sys, json; from pipeline.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps({m: m in sys.modules for m in ('apache_beam', 'torch', 'transformers', "
            "'sentence_transformers', 'bm25s', 'faiss')}), file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_cli_search_imports_neither_beam_nor_torch(tmp_path: Path, st_embed) -> None:
    output = str(tmp_path / "index")
    commit_video(output, [segment_row("a", 0, 0, 5, "a man pours water into a cup"),
                          segment_row("a", 1, 5, 10, "a cat sleeps")], embed=st_embed)
    for mode in ("hybrid", "keyword"):
        result = cli("search", "--index", output, "someone filling a cup with water", "--json", "--mode", mode)
        assert result.returncode == 0, result.stderr
        moments = json.loads(result.stdout)
        assert moments[0]["text"] == "a man pours water into a cup"
        imported = json.loads(result.stderr.strip().splitlines()[-1])
        assert not any(imported.values()), imported
    table = cli("search", "--index", output, "pours water")
    assert "0.00-5.00" in table.stdout and "0:00-0:05" in table.stdout
    rebuilt = cli("search", "--index", output, "--rebuild")
    assert rebuilt.returncode == 0 and "2 units" in rebuilt.stderr
    bad = cli("search", "--index", str(tmp_path / "nowhere"), "water")
    assert bad.returncode == 2 and "no index at" in bad.stderr
