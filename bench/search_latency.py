"""Cold and warm latency of ``plm-index search`` on a synthetic index, each beside a same-run baseline.

    python -m bench.search_latency --rows 1000000 --out bench-results/

Builds (once, reused if present) a synthetic index in the real layout: per-video commits
(``index.commit``) of captions made from templates (subject, action, object, place) whose
embeddings are the real all-MiniLM-L6-v2 embeddings of the distinct captions plus a little noise,
compacted into one generation, then synced into the derived search index (``search.sync``). Then:

* cold CLI: a fresh ``python -m pipeline.cli search`` process per query (hybrid top 10, and
  keyword), wall time and peak RSS of the process (``wait4``), p50 and p95;
* baselines in the same run: a bare ``python -c "import pyarrow"``, and a fresh process reading
  the units' text column of the same Parquet with pyarrow (what any Parquet scan costs);
* warm: one engine opened once, p50/p95 of hybrid top-10 queries in-process with the IVF index,
  beside the exact int8 scan in the same process, and the IVF's recall@10 against the exact scan;
* server: ``plm-index serve`` in its own process, ``/api/search`` round trips on loopback (p50/p95)
  beside its trivial ``/api/stats`` route;
* faiss ``IndexIVFFlat`` over the same vectors (same lists, same probes), if faiss is installed:
  build time, ANN-step latency and recall beside the numpy IVF.

Writes ``search_latency.json`` (a ``search`` object: rows, cold_cli_wall_s_p50, cold_cli_wall_s_p95,
cold_cli_rss_mb, cold_keyword_wall_s_p50, server_p95_ms, warm_p95_ms, the IVF's recall@10 and the
baselines) and ``search_latency.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]

SUBJECTS = ["A man", "A woman", "A child", "A chef", "A worker", "An old man", "A girl", "A boy", "A gardener",
            "A carpenter", "A nurse", "A student"]
ACTIONS = ["cuts", "slices", "pours", "washes", "opens", "closes", "lifts", "throws", "catches", "paints",
           "folds", "stirs", "peels", "kicks", "carries", "drops", "cleans", "fixes", "measures", "wraps"]
OBJECTS = ["a tomato", "an onion", "water", "a door", "a box", "a ball", "a shirt", "a pot", "a carrot",
           "a sheet of paper", "a bottle", "a cup", "a loaf of bread", "a wooden plank", "a window", "a bicycle"]
PLACES = ["in the kitchen", "in the garden", "in a workshop", "in an office", "on a street", "in a gym",
          "vertically", "horizontally", "slowly", "with a knife", "near a window", "on the table"]
QUERIES = ["someone chopping a tomato", "a kid throwing a ball outside", "person filling a cup with water",
           "fixing a bike", "a cook stirring a pot", "sawing wood in a workshop", "folding clothes",
           "opening the door", "painting a window frame", "lady washing dishes", "carrot cut vertically",
           "an elderly man carrying a box", "a nurse measuring something", "kicking a football",
           "wrapping a present", "cleaning the table", "peeling an onion with a knife", "a student folding paper",
           "pouring water slowly", "a boy catching a ball"]
VIDEO_CLIPS = 100
NOISE = 0.35  # norm of the per-row noise before re-normalising: cosine to the template ~0.94


def captions(n_templates: int, rng: np.random.Generator) -> list[str]:
    """``n_templates`` distinct template captions."""
    seen: dict[str, None] = {}
    while len(seen) < n_templates:
        s, a, o, p = (rng.integers(len(x)) for x in (SUBJECTS, ACTIONS, OBJECTS, PLACES))
        seen[f"{SUBJECTS[s]} {ACTIONS[a]} {OBJECTS[o]} {PLACES[p]}."] = None
    return list(seen)


def make_index(output: str, rows: int, n_templates: int, seed: int = 0) -> dict[str, Any]:
    """Commit ``rows`` synthetic segments (``VIDEO_CLIPS`` per video), compact, and sync search; returns timings."""
    from core.text_embedding import DEFAULT_MODEL_ID, embedding_metadata, query_embedder
    from index import compact
    from index.commit import VideoCommit, write_commit
    from index.layout import IndexLayout, ensure_format
    from schemas.tables import segments_schema
    from search import sync

    rng = np.random.default_rng(seed)
    texts = captions(n_templates, rng)
    started = time.perf_counter()
    base = query_embedder().embed(texts)
    embed_s = time.perf_counter() - started
    ensure_format(output)
    layout = IndexLayout(output)
    schema = segments_schema().with_metadata(embedding_metadata(DEFAULT_MODEL_ID, 384))
    created = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    started = time.perf_counter()
    for video, first in enumerate(range(0, rows, VIDEO_CLIPS)):
        n = min(VIDEO_CLIPS, rows - first)
        pick = rng.integers(len(texts), size=n)
        vectors = base[pick] + rng.normal(0, NOISE / np.sqrt(384), size=(n, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vid, uri = f"v{video:07d}", f"/videos/cam{video % 50}/v{video:07d}.mp4"
        starts = np.arange(n) * 30.0
        table = pa.table({
            "video_id": [vid] * n, "uri": [uri] * n, "clip_index": pa.array(np.arange(n), pa.int32()),
            "start_s": starts, "end_s": starts + 30.0, "task": ["caption"] * n,
            "text": [texts[i] for i in pick], "settings_hash": ["s1"] * n, "run_id": ["bench"] * n,
            "created_at": pa.array([created] * n, pa.timestamp("us", tz="UTC")),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), 384)})
        from index.read import conform_segments

        table = conform_segments(table).replace_schema_metadata(schema.metadata)
        write_commit(layout, VideoCommit(key=vid, video_id=vid, uri=uri, settings_hash="s1", status="indexed",
                                         committed_at=created, run_id="bench", num_clips=n, num_segments=n), table)
    commit_s = time.perf_counter() - started
    started = time.perf_counter()
    compact(output)
    compact_s = time.perf_counter() - started
    started = time.perf_counter()
    report = sync(output)
    return {"rows": rows, "templates": n_templates, "embed_templates_s": embed_s, "commit_s": commit_s,
            "compact_s": compact_s, "sync_s": time.perf_counter() - started, "units": report.units}


# Peak RSS as the kernel counts it for this process image (VmHWM starts afresh at exec, unlike
# ru_maxrss, which keeps the forking parent's peak).
HWM = "print('RSS_MB', int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024, file=sys.stderr)"
RSS_WRAPPER = "import sys; from pipeline.cli import main; code = main(sys.argv[1:]); sys.stdout.flush(); " + HWM


def measured_child(args: list[str], python: str = sys.executable) -> tuple[float, dict[str, float], str]:
    """A fresh Python process: wall seconds, the ``NAME value`` figures it printed to stderr
    (``RSS_MB``, ``READ_MB``, ...) and its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    result = subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{args[:2]} failed: {result.stderr[-2000:]}")
    figures = {}
    for line in result.stderr.splitlines():
        name, _, value = line.partition(" ")
        if name.endswith("_MB"):
            figures[name] = float(value.split()[0])
    return wall, figures, result.stdout


def child(args: list[str], python: str = sys.executable) -> tuple[float, float, str]:
    """A fresh Python process: wall seconds, its own peak RSS (MB) and stdout."""
    wall, figures, stdout = measured_child(args, python)
    return wall, figures.get("RSS_MB", float("nan")), stdout


def pct(values: list[float], q: float) -> float:
    """The ``q`` percentile (0-100)."""
    return float(np.percentile(np.asarray(values), q))


def warm_queries(engine: Any, exact: Any, rounds: int = 3) -> tuple[list[float], list[float], float]:
    """Warm hybrid top-10 latencies (ms) of the IVF engine and of the exact scan, and the IVF's recall@10
    against the exact scan (units, before merging into moments)."""
    engine.search(QUERIES[0])
    exact.search(QUERIES[0])
    warm, warm_exact = [], []
    for eng, out in ((engine, warm), (exact, warm_exact)):
        for _ in range(rounds):
            for q in QUERIES:
                started = time.perf_counter()
                eng.search(q)
                out.append((time.perf_counter() - started) * 1000)
    found = 0
    for q in QUERIES:
        key = lambda h: (h.uri, h.clip_index, h.start_s, h.text)  # noqa: E731
        truth = {key(h) for h in exact.search_hits(q, limit=10)}
        found += len(truth & {key(h) for h in engine.search_hits(q, limit=10)})
    return warm, warm_exact, found / (10 * len(QUERIES))


def get_ms(url: str, inside: list[float] | None = None) -> float:
    """Wall milliseconds of one GET, body read; the server's own ``Server-Timing`` goes to ``inside``."""
    import urllib.request

    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
        timing = response.headers.get("server-timing")
    if inside is not None and timing:
        inside.append(float(timing.split("dur=")[1]))
    return (time.perf_counter() - started) * 1000


def server_latency(index: str, rounds: int = 3) -> dict[str, float]:
    """``plm-index serve`` in its own process: p50/p95 of ``/api/search`` (hybrid top 10) round trips on
    loopback, beside the trivial ``/api/stats`` route's (HTTP and framework cost alone), and its peak RSS."""
    import socket
    import urllib.parse

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--index", index, "--port", str(port)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                get_ms(base + "/api/stats")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("plm-index serve did not start") from None
                time.sleep(0.5)
        get_ms(f"{base}/api/search?" + urllib.parse.urlencode({"q": QUERIES[0]}))
        searches, stats, inside = [], [], []
        for _ in range(rounds):
            for q in QUERIES:
                searches.append(get_ms(f"{base}/api/search?" + urllib.parse.urlencode({"q": q, "limit": 10}),
                                       inside))
                stats.append(get_ms(base + "/api/stats"))
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss = int(status.split("VmHWM:")[1].split()[0]) / 1024
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"search_p50_ms": pct(searches, 50), "search_p95_ms": pct(searches, 95), "stats_p95_ms": pct(stats, 95),
            "inside_p50_ms": pct(inside, 50), "inside_p95_ms": pct(inside, 95), "rss_mb": rss}


def compare_faiss(engine: Any, exact: Any, nprobe: int = 32) -> dict[str, Any] | None:
    """faiss ``IndexIVFFlat`` (inner product) over the same vectors with the same list count and probes:
    build seconds, query p50/p95 (ANN step alone, query embedded once beforehand) and recall@10 of
    raw neighbours against the exact float16 scan, beside this project's IVF measured the same way."""
    try:
        import faiss
    except ImportError:
        return None
    from threadpoolctl import threadpool_limits

    from search import ivf

    part = max(engine.store.parts, key=lambda p: p.rows)
    if part.ivf is None:
        return None
    vectors = np.fromfile(os.path.join(part.folder, "embeddings.f16"), dtype=np.float16).reshape(part.rows, -1)
    vectors = vectors.astype(np.float32)
    lists = ivf.list_count(part.rows)
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors[np.random.default_rng(0).choice(part.rows, lists * ivf.TRAIN_ROWS_PER_LIST, replace=False)])
    index.add(vectors)
    build_s = time.perf_counter() - started
    index.nprobe = nprobe
    qvecs = [engine.embed_query(q) for q in QUERIES]
    truth = [set(np.argsort(-(vectors @ q))[:10]) for q in qvecs]
    del vectors
    timings: dict[str, list[float]] = {"faiss": [], "numpy_ivf": []}
    found = {"faiss": 0, "numpy_ivf": 0}
    for q, want in zip(qvecs, truth, strict=True):
        started = time.perf_counter()
        _, ids = index.search(q[None].astype(np.float32), 10)
        timings["faiss"].append((time.perf_counter() - started) * 1000)
        found["faiss"] += len(want & set(ids[0].tolist()))
        started = time.perf_counter()
        with threadpool_limits(1, user_api="blas"):  # as the engine probes
            rows, approx = part.ivf.probe(q, nprobe)
        top = rows[np.argsort(-approx)[:10]]
        timings["numpy_ivf"].append((time.perf_counter() - started) * 1000)
        found["numpy_ivf"] += len(want & set(top.tolist()))
    return {"rows": part.rows, "lists": lists, "nprobe": nprobe, "faiss_build_s": build_s,
            **{f"{name}_p50_ms": pct(t, 50) for name, t in timings.items()},
            **{f"{name}_p95_ms": pct(t, 95) for name, t in timings.items()},
            **{f"{name}_recall_at_10": n / (10 * len(QUERIES)) for name, n in found.items()}}


def run(rows: int, out: str, reps: int, workdir: str, templates: int, compare: bool = True) -> dict[str, Any]:
    """Build (or reuse) the index, then measure the cold CLI, the baselines and warm queries."""
    index = os.path.join(workdir, f"index-v2-{rows}")
    build: dict[str, Any] = {}
    if not os.path.exists(os.path.join(index, "search", "manifest.json")):
        build = make_index(index, rows, templates)
    from search import sync

    started = time.perf_counter()
    sync(index)  # a derived index synced before the IVF index existed gets it here, not in a timed run
    build["presync_s"] = time.perf_counter() - started
    queries = QUERIES[: max(1, reps)]
    rss_cli = ["-c", RSS_WRAPPER]
    hybrid = [child([*rss_cli, "search", "--index", index, q, "--limit", "10"]) for q in queries]
    keyword = [child([*rss_cli, "search", "--index", index, q, "--limit", "10", "--mode", "keyword"])
               for q in queries]
    units = str(next(Path(index, "search", "parts").glob("*/units.parquet")))
    bare = [child(["-c", "import sys, pyarrow; " + HWM]) for _ in queries]
    scan = [child(["-c", "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1], columns=['text']); "
                   + HWM, units]) for _ in queries]
    from search import SearchEngine

    engine = SearchEngine.open(index)  # syncs first: builds the IVF index of a part synced before it existed
    exact = SearchEngine(engine.store, ann=False)
    warm, warm_exact, recall = warm_queries(engine, exact)
    served = server_latency(index)
    compared = compare_faiss(engine, exact) if compare else None
    walls = [w for w, _, _ in hybrid]
    search = {
        "rows": rows, "units": engine.num_rows, "cold_runs": len(queries),
        "cold_cli_wall_s_p50": pct(walls, 50), "cold_cli_wall_s_p95": pct(walls, 95),
        "cold_cli_rss_mb": max(r for _, r, _ in hybrid),
        "cold_keyword_wall_s_p50": pct([w for w, _, _ in keyword], 50),
        "cold_keyword_wall_s_p95": pct([w for w, _, _ in keyword], 95),
        "cold_keyword_rss_mb": max(r for _, r, _ in keyword),
        "server_p95_ms": served["inside_p95_ms"], "server_p50_ms": served["inside_p50_ms"],
        "server_round_trip_p95_ms": served["search_p95_ms"], "server_round_trip_p50_ms": served["search_p50_ms"],
        "server_rss_mb": served["rss_mb"],
        "warm_p50_ms": pct(warm, 50), "warm_p95_ms": pct(warm, 95),
        "ivf_recall_at_10_vs_exact": recall,
        "baselines": {"server_stats_route_p95_ms": served["stats_p95_ms"],
                      "warm_exact_scan_p50_ms": pct(warm_exact, 50), "warm_exact_scan_p95_ms": pct(warm_exact, 95),
                      "import_pyarrow_wall_s_p50": pct([w for w, _, _ in bare], 50),
                      "import_pyarrow_rss_mb": max(r for _, r, _ in bare),
                      "pyarrow_read_text_column_wall_s_p50": pct([w for w, _, _ in scan], 50),
                      "pyarrow_read_text_column_rss_mb": max(r for _, r, _ in scan)},
    }
    search["ratios"] = {"cold_cli_wall_vs_import_pyarrow": search["cold_cli_wall_s_p50"] /
                        search["baselines"]["import_pyarrow_wall_s_p50"],
                        "cold_cli_wall_vs_parquet_text_read": search["cold_cli_wall_s_p50"] /
                        search["baselines"]["pyarrow_read_text_column_wall_s_p50"]}
    search["ratios"]["server_round_trip_p95_vs_stats_route_p95"] = served["search_p95_ms"] / served["stats_p95_ms"]
    search["ratios"]["warm_p95_vs_exact_scan_p95"] = search["warm_p95_ms"] / search["baselines"]["warm_exact_scan_p95_ms"]
    return {"search": search, "build": build, "cpus": os.cpu_count(), "faiss": compared,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "sample_output": hybrid[0][2][:800]}


def markdown(r: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    s, b = r["search"], r["search"]["baselines"]
    return "\n".join([
        f"Search latency, {s['rows']:,} segment rows ({s['units']:,} units), {r['cpus']} CPUs, {r['date']}", "",
        "| figure | value | same-run baseline |", "|---|---|---|",
        f"| cold CLI hybrid top 10, wall p50 / p95 | {s['cold_cli_wall_s_p50']:.2f} / {s['cold_cli_wall_s_p95']:.2f} s "
        f"| bare `import pyarrow` {b['import_pyarrow_wall_s_p50']:.2f} s; pyarrow reading the text column "
        f"{b['pyarrow_read_text_column_wall_s_p50']:.2f} s |",
        f"| cold CLI hybrid peak RSS | {s['cold_cli_rss_mb']:.0f} MB | `import pyarrow` {b['import_pyarrow_rss_mb']:.0f} MB; "
        f"text column read {b['pyarrow_read_text_column_rss_mb']:.0f} MB |",
        f"| cold CLI keyword, wall p50 / p95 | {s['cold_keyword_wall_s_p50']:.2f} / {s['cold_keyword_wall_s_p95']:.2f} s "
        f"| (same baselines) |",
        f"| server `/api/search` hybrid top 10, server-side (`Server-Timing`), p50 / p95 | {s['server_p50_ms']:.1f} / "
        f"{s['server_p95_ms']:.1f} ms | |",
        f"| same requests, HTTP round trip on loopback, p50 / p95 | {s['server_round_trip_p50_ms']:.1f} / "
        f"{s['server_round_trip_p95_ms']:.1f} ms | `/api/stats` round trip p95 {b['server_stats_route_p95_ms']:.1f} ms |",
        f"| server peak RSS | {s['server_rss_mb']:.0f} MB | |",
        f"| warm hybrid query, IVF (engine open), p50 / p95 | {s['warm_p50_ms']:.1f} / {s['warm_p95_ms']:.1f} ms "
        f"| exact int8 scan {b['warm_exact_scan_p50_ms']:.1f} / {b['warm_exact_scan_p95_ms']:.1f} ms |",
        f"| IVF recall@10 against the exact scan | {s['ivf_recall_at_10_vs_exact']:.3f} | 1.000 |",
        *([] if not r.get("faiss") else [
            f"| ANN step alone, numpy IVF / faiss IVFFlat ({r['faiss']['lists']} lists, {r['faiss']['nprobe']} probes), "
            f"p50 / p95 | {r['faiss']['numpy_ivf_p50_ms']:.1f} / {r['faiss']['numpy_ivf_p95_ms']:.1f} ms; faiss "
            f"{r['faiss']['faiss_p50_ms']:.1f} / {r['faiss']['faiss_p95_ms']:.1f} ms | recall@10 of raw neighbours: "
            f"{r['faiss']['numpy_ivf_recall_at_10']:.3f} / {r['faiss']['faiss_recall_at_10']:.3f}; faiss build "
            f"{r['faiss']['faiss_build_s']:.0f} s |"]),
    ]) + "\n"


def main() -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=7, help="cold processes per figure")
    parser.add_argument("--templates", type=int, default=2000)
    parser.add_argument("--workdir", default="bench-out/search")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--no-faiss", action="store_true", help="skip the faiss IVFFlat comparison")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.workdir, exist_ok=True)
    result = run(args.rows, args.out, args.reps, args.workdir, args.templates, compare=not args.no_faiss)
    Path(args.out, "search_latency.json").write_text(json.dumps(result, indent=1))
    Path(args.out, "search_latency.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
