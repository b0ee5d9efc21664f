"""LanceDB beside the project's derived search index, on the same 1M units, vectors and queries.

    python -m bench.search_lancedb --lancedb-python /path/to/venv-with-lancedb/bin/python --out bench-results/

LanceDB is not a dependency of the project, so it runs in its own interpreter (``--lancedb-python``,
a venv with ``pip install lancedb``); this process orchestrates and measures. Inputs are the 1M-row
derived index that ``bench.search_latency`` builds (its largest part: ``units.parquet`` and
``embeddings.f16``) and the real query embeddings of ``bench.search_latency.QUERIES`` (embedded here
once, so both sides get the same vectors and LanceDB is not charged for embedding). Same run:

* build: a LanceDB table of the units with their vectors, its IVF_PQ vector index (as many lists as
  ours, cosine) and its native full-text index; seconds and bytes on disk, beside ours;
* cold: a fresh process per query that opens the table and runs one hybrid (vector + full text,
  top 10) query, wall and peak RSS, beside a fresh ``plm-index search`` (hybrid, top 10; it also
  embeds the query) and a bare ``import lancedb`` / ``import pyarrow`` in each interpreter;
* warm: hybrid p50/p95 in one process, and recall@10 of LanceDB's vector search against the exact
  float16 scan.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.search_latency import HWM

# Runs inside the LanceDB interpreter: no project imports.
BUILD = """
import json, sys, time, numpy as np, pyarrow as pa, pyarrow.parquet as pq, lancedb
units, vectors, db_dir, lists = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
table = pq.read_table(units, columns=["uri", "video_id", "task", "start_s", "end_s", "text"])
emb = np.fromfile(vectors, dtype=np.float16).reshape(table.num_rows, -1).astype(np.float32)
table = table.append_column("row", pa.array(np.arange(table.num_rows)))
table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]))
t0 = time.perf_counter()
db = lancedb.connect(db_dir)
tbl = db.create_table("units", table, mode="overwrite")
t1 = time.perf_counter()
tbl.create_index(metric="cosine", num_partitions=lists, num_sub_vectors=48, vector_column_name="vector")
t2 = time.perf_counter()
tbl.create_fts_index("text", replace=True)
t3 = time.perf_counter()
print(json.dumps({"write_s": t1 - t0, "vector_index_s": t2 - t1, "fts_index_s": t3 - t2}))
"""

COLD = """
import sys, numpy as np, lancedb
db_dir, query, vector_file, nprobes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
vector = np.load(vector_file)
tbl = lancedb.connect(db_dir).open_table("units")
hits = (tbl.search(query_type="hybrid").vector(vector).text(query).nprobes(nprobes).limit(10)
        .select(["uri", "start_s", "end_s", "text"]).to_arrow())
print(hits.num_rows)
""" + HWM

WARM = """
import json, sys, time, numpy as np, lancedb
db_dir, queries_file, vectors_file, nprobes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
queries = json.load(open(queries_file)); vectors = np.load(vectors_file)
tbl = lancedb.connect(db_dir).open_table("units")
hybrid, found = [], []
for _ in range(3):
    for q, v in zip(queries, vectors):
        t = time.perf_counter()
        tbl.search(query_type="hybrid").vector(v).text(q).nprobes(nprobes).limit(10).select(["text"]).to_arrow()
        hybrid.append((time.perf_counter() - t) * 1000)
for v in vectors:
    ids = tbl.search(v).nprobes(nprobes).limit(10).select(["row"]).to_arrow()
    found.append(ids.column("row").to_pylist())
print(json.dumps({"hybrid_ms": hybrid, "vector_rowids": found}))
"""


def run(lancedb_python: str, workdir: str, reps: int, nprobes: int) -> dict[str, Any]:
    """Build the LanceDB table (once) and measure it beside the project's derived index, same run."""
    from bench.search_latency import QUERIES, RSS_WRAPPER, child, pct
    from core.text_embedding import query_embedder
    from search import ivf

    index = os.path.join(workdir, "index-v2-1000000")
    part = max(Path(index, "search", "parts").iterdir(), key=lambda p: (p / "embeddings.f16").stat().st_size)
    rows = (part / "embeddings.f16").stat().st_size // (2 * 384)
    lists = ivf.list_count(rows)
    db_dir = os.path.join(workdir, "lancedb-1000000")
    build: dict[str, Any] = {}
    if not os.path.exists(os.path.join(db_dir, "units.lance")):
        wall, rss, out = child(["-c", BUILD + HWM, str(part / "units.parquet"), str(part / "embeddings.f16"),
                                db_dir, str(lists)], lancedb_python)
        build = {**json.loads(out.splitlines()[-1]), "build_rss_mb": rss}
    build["lancedb_bytes"] = sum(p.stat().st_size for p in Path(db_dir).rglob("*") if p.is_file())
    build["ours_bytes"] = sum(p.stat().st_size for p in part.iterdir() if p.is_file())
    queries = QUERIES[:reps]
    vectors = query_embedder().embed(queries).astype(np.float32)
    vector_files = []
    for i, v in enumerate(vectors):
        vector_files.append(os.path.join(workdir, f"query-{i}.npy"))
        np.save(vector_files[-1], v)
    cold_lance, cold_ours, bare_lance, bare_ours = [], [], [], []
    for query, vector_file in zip(queries, vector_files, strict=True):
        cold_lance.append(child(["-c", COLD, db_dir, query, vector_file, str(nprobes)], lancedb_python))
        cold_ours.append(child(["-c", RSS_WRAPPER, "search", "--index", index, query, "--limit", "10"]))
        bare_lance.append(child(["-c", "import sys, lancedb; " + HWM], lancedb_python))
        bare_ours.append(child(["-c", "import sys, pyarrow; " + HWM]))
    qfile = os.path.join(workdir, "queries.json")
    Path(qfile).write_text(json.dumps(list(QUERIES)))
    all_vectors = query_embedder().embed(list(QUERIES)).astype(np.float32)
    np.save(os.path.join(workdir, "queries.npy"), all_vectors)
    _, warm_rss, out = child(["-c", WARM + HWM, db_dir, qfile, os.path.join(workdir, "queries.npy"), str(nprobes)],
                             lancedb_python)
    warm = json.loads(out.splitlines()[-1])
    exact = np.fromfile(part / "embeddings.f16", dtype=np.float16).reshape(rows, -1)
    found = 0
    for v, got in zip(all_vectors, warm["vector_rowids"], strict=True):
        top = np.argsort(-(exact @ v.astype(np.float16)).astype(np.float32))[:10]
        found += len(set(top.tolist()) & set(got))

    def summary(runs: list[tuple[float, float, str]]) -> dict[str, float]:
        return {"wall_s_p50": pct([w for w, _, _ in runs], 50), "wall_s_p95": pct([w for w, _, _ in runs], 95),
                "rss_mb": max(r for _, r, _ in runs)}

    return {"rows": rows, "lists": lists, "nprobes": nprobes, "build": build,
            "cold_lancedb_hybrid": summary(cold_lance), "cold_ours_hybrid_cli": summary(cold_ours),
            "baseline_import_lancedb": summary(bare_lance), "baseline_import_pyarrow": summary(bare_ours),
            "warm_lancedb_hybrid_ms_p50": pct(warm["hybrid_ms"], 50),
            "warm_lancedb_hybrid_ms_p95": pct(warm["hybrid_ms"], 95), "warm_lancedb_rss_mb": warm_rss,
            "lancedb_vector_recall_at_10_vs_exact": found / (10 * len(all_vectors)),
            "cpus": os.cpu_count(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def main() -> None:
    """Run the comparison and write ``search_lancedb.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lancedb-python", required=True, help="an interpreter that can import lancedb")
    parser.add_argument("--workdir", default="/tmp/sbench")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--nprobes", type=int, default=32)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    result = run(args.lancedb_python, args.workdir, args.reps, args.nprobes)
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "search_lancedb.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
