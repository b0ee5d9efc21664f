"""Does a 10M-row index open without loading it whole? Cold searches at 10× the rows, beside 1×.

    python -m bench.search_open --copies 10 --out bench-results/

The 1M-row synthetic index of ``bench.search_latency`` (built there, reused here) is replicated
into an index of ``copies`` compacted generations, each a copy of the 1M rows under its own video
ids and uris (rewritten row group by row group, so every generation is a real, distinct set of
videos in the real layout). The derived search index of that big index is then built by the real
``search.sync`` (a part per generation, each with its own text index and IVF lists), and the
same-run comparison is:

* cold ``plm-index search`` (hybrid and keyword, top 10) on the 1× and the ``copies``× index,
  interleaved: wall time, peak RSS and the bytes the process read (``/proc/self/io`` ``rchar``);
* the size of each derived index on disk, so the bytes read can be set beside it.

"Opens without loading it whole" holds when the big index's cold RSS and bytes read stay a small
fraction of its size on disk (they grow with the number of parts, not the rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.search_latency import HWM, QUERIES, make_index, measured_child, pct

IO = ("print('READ_MB', int(open('/proc/self/io').read().split('rchar:')[1].split()[0]) / 2**20, "
      "file=sys.stderr)")
WRAPPER = ("import sys; from pipeline.cli import main; code = main(sys.argv[1:]); sys.stdout.flush(); "
           + HWM + "; " + IO)


def _renamed(table: pa.Table, prefix: str) -> pa.Table:
    """``table`` with every id column (``key``, ``video_id``, ``uri``) given ``prefix``: new, distinct videos."""
    for name in ("key", "video_id", "uri"):
        if name in table.column_names:
            column = table.column(name)
            renamed = pc.binary_join_element_wise(pa.scalar(prefix), column, "") if name != "uri" else \
                pc.replace_substring(column, "/videos/", f"/videos/{prefix}")
            table = table.set_column(table.column_names.index(name), name, renamed)
    return table


def replicate(base: str, target: str, copies: int) -> float:
    """Write ``copies`` generations into ``target``, each the base's one generation under new ids; seconds."""
    started = time.perf_counter()
    (generation,) = [p for p in Path(base, "compacted").iterdir() if (p / "_generation.json").exists()]
    manifest = json.loads((generation / "_generation.json").read_text())
    Path(target, "compacted").mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(base, "_index.json"), Path(target, "_index.json"))
    for copy in range(copies):
        name = f"{manifest['generation'][:15]}{copy:06d}Z-copy{copy:02d}"
        folder = Path(target, "compacted", name)
        if (folder / "_generation.json").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"c{copy:02d}-"
        for files in manifest["files"].values():
            for file in files:
                source = pq.ParquetFile(generation / file)
                with pq.ParquetWriter(folder / file, source.schema_arrow) as writer:
                    for group in range(source.num_row_groups):
                        writer.write_table(_renamed(source.read_row_group(group), prefix).cast(source.schema_arrow))
        (folder / "_generation.json").write_text(json.dumps({**manifest, "generation": name}, indent=1))
    return time.perf_counter() - started


def folder_bytes(folder: str) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def cold(index: str, query: str, mode: str) -> dict[str, float]:
    """One fresh ``plm-index search`` process: wall seconds, peak RSS MB and MB read."""
    wall, figures, _ = measured_child(["-c", WRAPPER, "search", "--index", index, query, "--limit", "10",
                                       "--mode", mode])
    return {"wall": wall, "rss": figures["RSS_MB"], "read": figures["READ_MB"]}


def run(copies: int, reps: int, workdir: str, templates: int) -> dict[str, Any]:
    """Build (or reuse) the 1× and ``copies``× indexes, then measure cold searches on both, interleaved."""
    small = os.path.join(workdir, "index-v2-1000000")
    if not os.path.exists(os.path.join(small, "search", "manifest.json")):
        make_index(small, 1_000_000, templates)
    big = os.path.join(workdir, f"index-v2-1000000x{copies}")
    replicate_s = replicate(small, big, copies)
    from search import sync

    started = time.perf_counter()
    sync(small)  # a no-op unless the 1M index changed
    report = sync(big)
    sync_s = time.perf_counter() - started
    figures: dict[str, dict[str, list[float]]] = {}
    for query in QUERIES[:reps]:
        for label, index in (("1x", small), (f"{copies}x", big)):
            for mode in ("hybrid", "keyword"):
                slot = figures.setdefault(f"{label}_{mode}", {"wall": [], "rss": [], "read": []})
                for name, value in cold(index, query, mode).items():
                    slot[name].append(value)
    summary = {key: {"wall_s_p50": pct(v["wall"], 50), "wall_s_p95": pct(v["wall"], 95), "rss_mb": max(v["rss"]),
                     "read_mb": max(v["read"])} for key, v in figures.items()}
    return {"copies": copies, "rows_small": 1_000_000, "rows_big": copies * 1_000_000, "units_big": report.units,
            "replicate_s": replicate_s, "sync_big_s": sync_s,
            "search_index_bytes_small": folder_bytes(os.path.join(small, "search")),
            "search_index_bytes_big": folder_bytes(os.path.join(big, "search")),
            "cold": summary, "cpus": os.cpu_count(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def main() -> None:
    """Run the bench and write ``search_open.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/sbench")
    parser.add_argument("--templates", type=int, default=2000)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    result = run(args.copies, args.reps, args.workdir, args.templates)
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "search_open.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
