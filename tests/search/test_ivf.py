"""The IVF index: every row in exactly one list, probing finds the exact scan's neighbours, and the
engine's probed path answers what the exact scan answers (filters, hybrid terms, fallback)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from search import SearchEngine, SearchFilters, sync
from search import ivf as ivf_module
from search.ivf import IvfIndex, build, exists
from search.store import store_root
from tests.search.conftest import commit_video, segment_row

DIM = 32


def write_part_vectors(folder: Path, vectors: np.ndarray) -> None:
    """The three vector files a part has (as ``search.store`` writes them)."""
    vectors.astype(np.float16).tofile(folder / "embeddings.f16")
    scales = np.abs(vectors).max(axis=1) / 127.0
    np.round(vectors / scales[:, None]).astype(np.int8).tofile(folder / "embeddings.i8")
    scales.astype(np.float32).tofile(folder / "scales.f32")


def clustered(rows: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM))
    vectors = centres[rng.integers(clusters, size=rows)] + rng.normal(0, 0.4, size=(rows, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_lists_partition_the_rows_and_probing_finds_the_nearest(tmp_path: Path) -> None:
    rows = 20_000
    vectors = clustered(rows, 200)
    write_part_vectors(tmp_path, vectors)
    assert not exists(str(tmp_path))
    build(str(tmp_path), rows, DIM)
    assert exists(str(tmp_path))
    index = IvfIndex.open(str(tmp_path), rows, DIM)
    assert len(index.centroids) == ivf_module.list_count(rows) == 141
    assert np.array_equal(np.sort(np.asarray(index.rows)), np.arange(rows))  # each row in exactly one list
    assert index.offsets[0] == 0 and index.offsets[-1] == rows and np.all(np.diff(index.offsets) >= 0)
    # The list-ordered int8 copy is the part's own int8 vectors, reordered.
    int8 = np.fromfile(tmp_path / "embeddings.i8", dtype=np.int8).reshape(rows, DIM)
    assert np.array_equal(index.list_vectors(0, rows), int8[index.rows])
    rng = np.random.default_rng(1)
    queries = vectors[rng.integers(rows, size=50)] + rng.normal(0, 0.05, size=(50, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    found = 0
    for q in queries:
        exact = set(np.argsort(-(vectors @ q))[:10])
        probed, approx = index.probe(q, nprobe=8)
        assert len(probed) < rows / 5  # a few lists, not the whole part
        assert np.allclose(approx, vectors[probed] @ q, atol=0.02)
        found += len(exact & set(probed[np.argsort(-approx)[:10]]))
    assert found / (10 * len(queries)) >= 0.9  # recall@10 of 8 probes out of 141 lists


TEXTS = ["a man slices a tomato on a board", "a woman pours water into a glass", "a dog runs after a ball",
         "a child paints a wooden fence", "a chef stirs soup in a pot", "a cyclist repairs a flat tyre",
         "someone folds a paper plane", "a girl waters the plants in the garden"]


@pytest.fixture(scope="module")
def probed_index(tmp_path_factory: pytest.TempPathFactory, st_embed) -> str:
    """An index of 8 videos x 40 clips whose one part has an IVF index (the threshold lowered)."""
    output = str(tmp_path_factory.mktemp("ivf") / "index")
    for video in range(8):
        rows = [segment_row(f"v{video}", clip, clip * 5.0, clip * 5.0 + 5.0,
                            f"{TEXTS[(video + clip) % len(TEXTS)]} (take {clip % 7})",
                            task="caption" if clip % 2 else "rcap")
                for clip in range(40)]
        commit_video(output, rows, embed=st_embed)
    return output


def test_engine_probes_and_answers_as_the_exact_scan(probed_index: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ivf_module, "MIN_ROWS", 64)
    report = sync(probed_index)
    assert report.units == 320
    part = next(Path(store_root(probed_index), "parts").iterdir())
    assert exists(str(part))
    probed = SearchEngine.open(probed_index, ann=True)
    exact = SearchEngine.open(probed_index, ann=False)
    probed.nprobe = 3  # 3 of 18 lists
    assert probed.store.parts[0].ivf is not None and exact.store.parts[0].ivf is not None
    for query, filters in [("cutting a tomato", None), ("watering flowers", SearchFilters(task="rcap")),
                           ("fixing a bike", SearchFilters(video="*v3*")),
                           ("someone making a paper airplane", SearchFilters(start_s=100.0))]:
        for mode in ("semantic", "hybrid"):
            got = probed.search_hits(query, mode, filters, limit=5)
            want = exact.search_hits(query, mode, filters, limit=5)
            assert [h.text for h in got][:1] == [h.text for h in want][:1], (query, mode)
            assert len(got) == 5
            if filters is None:
                assert probed.timings["rows_scored"] < 320 / 2  # the probed lists, not the part
    # Fewer hits in the probed lists than asked for: the part is scanned whole, as the exact scan does.
    probed.nprobe = 1
    many = probed.search_hits("a dog runs after a ball", "semantic", limit=200)
    assert probed.timings["rows_scored"] > 320
    assert [(h.uri, h.clip_index) for h in many] == \
        [(h.uri, h.clip_index) for h in exact.search_hits("a dog runs after a ball", "semantic", limit=200)]


def test_a_sync_gives_an_older_large_part_its_ivf_index(probed_index: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ivf_module, "MIN_ROWS", 64)
    sync(probed_index)
    part = next(Path(store_root(probed_index), "parts").iterdir())
    for name in ivf_module.FILES:
        os.remove(part / name)
    sync(probed_index)  # nothing changed in the index, but the part lacks its IVF index
    assert exists(str(part))


def test_hits_read_from_the_mapped_units_equal_the_parquet_rows(probed_index: str) -> None:
    from search.store import UNITS_ARROW, open_store

    rows = np.array([5, 300, 0, 77, 5])
    part = open_store(probed_index).parts[0]
    mapped = part.read_units(rows)
    assert part._mapped is not None  # read through the memory-mapped Arrow copy
    os.remove(os.path.join(part.folder, UNITS_ARROW))
    from_parquet = open_store(probed_index, sync_first=False).parts[0]
    assert from_parquet.read_units(rows).to_pylist() == mapped.to_pylist()
    assert [r["clip_index"] for r in mapped.to_pylist()] == [5, 20, 0, 37, 5]
    sync(probed_index)  # an older part gets its Arrow copy back
    assert os.path.exists(os.path.join(part.folder, UNITS_ARROW))


def test_an_ivf_index_that_does_not_match_its_part_is_refused(tmp_path: Path) -> None:
    vectors = clustered(2_000, 20)
    write_part_vectors(tmp_path, vectors)
    build(str(tmp_path), 2_000, DIM)
    with pytest.raises(ValueError, match="does not match its part .* --rebuild"):
        IvfIndex.open(str(tmp_path), 1_999, DIM)
