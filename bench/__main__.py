"""``python -m bench``: run the benchmark suite and write ``report.json`` and ``report.md``.

Each figure is measured against a baseline taken in the same run (the ratio column) and is the
median of ``--repeats`` repetitions with their min and max. Generated test files are kept in
``OUT/cache`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import sys
import time
import traceback

from bench.common import HEADER, Context, Figure, machine, skipped

BENCHMARKS = ("decode", "beam_overhead", "prefix_sharing", "gpu", "realsize", "memory", "resume", "scale",
              "compaction", "tar_shards", "integrity")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The suite's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=BENCHMARKS, action="append",
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions per figure (default 5)")
    parser.add_argument("--out", default="bench-out/", help="report folder (default bench-out/)")
    parser.add_argument("--quick", action="store_true",
                        help="shorter inputs: 10 s decode clips, a 10 min memory video, fewer videos")
    parser.add_argument("--dry", action="store_true",
                        help="GPU bench without a GPU: shrunk models on CPU, every step of the script run once")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def markdown(figures: list[Figure], meta: dict) -> str:
    """The report as a Markdown table with a header line saying where and when it ran."""
    lines = [f"Run {meta['started']} on {meta['machine'].get('cpus')} CPUs"
             f"{', ' + meta['machine']['cuda'] if meta['machine'].get('cuda') else ', no GPU'}; "
             f"{meta['repeats']} repetitions{' (--quick)' if meta['quick'] else ''}; "
             f"load average at start {' '.join(meta['machine'].get('loadavg_at_start', []))}.", "", HEADER]
    lines.extend(figure.row() for figure in figures)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks and write the report."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.makedirs(args.out, exist_ok=True)
    ctx = Context(repeats=args.repeats, quick=args.quick, out_dir=args.out, cache_dir=os.path.join(args.out, "cache"),
                  dry=args.dry)
    os.makedirs(ctx.cache_dir, exist_ok=True)
    meta = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
            "repeats": args.repeats, "quick": args.quick, "dry": args.dry, "durations_s": {}}
    figures: list[Figure] = []
    for name in args.only or BENCHMARKS:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            found = importlib.import_module(f"bench.{name}").run(ctx)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not lose the others
            traceback.print_exc()
            found = [skipped(name, name, f"failed: {type(exc).__name__}: {exc}")]
        meta["durations_s"][name] = round(time.perf_counter() - start, 1)
        for figure in found:
            print("  " + figure.row(), file=sys.stderr, flush=True)
        figures.extend(found)
        write(args.out, figures, meta)  # after every benchmark, so a long run leaves partial results
    print(markdown(figures, meta))
    return 0


def write(out: str, figures: list[Figure], meta: dict) -> None:
    """Write report.json and report.md into ``out``."""
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump({"meta": meta, "figures": [figure.as_json() for figure in figures]}, f, indent=2, default=str)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(figures, meta))


if __name__ == "__main__":
    sys.exit(main())
