"""Inputs at archive scale: a 1,000,000-row manifest costs the launcher no more than a 1,000-row one.

Figures, each against the same measurement on a 1,000-row manifest in the same run (so a ratio
near 1.0 means "does not grow with the archive"):

- launcher peak RSS: a fresh process checks the input and builds the whole build graph (what
  ``plm-index build`` does before the runner starts); a bare ``import apache_beam`` is shown too;
- pipeline proto size: ``Pipeline.to_runner_api()`` bytes of that graph;
- seconds until the first clip is planned: a real ``plm-index build`` over the manifest, stopped
  once its log says a clip was planned.

The manifest's rows point at a few real videos, repeated (the probe skips repeats of one content id).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from bench.common import Context, Figure, Stat, skipped, tiny_model_and_videos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS_LARGE = 1_000_000
ROWS_SMALL = 1_000
RSS_TARGET_MB = 1024
PROTO_TARGET_BYTES = 1 << 20

LAUNCHER_PROBE = """
import json, sys, time
start = time.perf_counter()


def peak_rss_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak across exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


manifest, output, model = sys.argv[1:4]
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
if manifest == "-":
    print(json.dumps({"rss_mb": peak_rss_mb()}))
    raise SystemExit
from pipeline.build import new_run_id
from pipeline.graph import pipeline
from index.runs import RunRecord
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from schemas.rows import RunContext
from transforms.discover import check_input
import datetime as dt
config = BuildConfig(input=manifest, output=output, clips=ClipSpec(mode="fixed", window_s=2.0),
                     model=ModelConfig(model=model, max_new_tokens=4, device="cpu"), tasks=("caption",))
check_input(config.input)
run = RunContext(run_id=new_run_id(), settings_hash=config.settings_hash(), model_id=model,
                 generation=config.generation_json(), pipeline_version="bench", created_at=dt.datetime.now(dt.UTC))
record = RunRecord(run_id=run.run_id, status="running", started_at=run.created_at.isoformat(), input=manifest,
                   settings_hash=run.settings_hash, model_id=model, pipeline_version="bench")
p = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
pipeline(p, config, run, record, model)
proto = p.to_runner_api().SerializeToString()
print(json.dumps({"rss_mb": peak_rss_mb(), "proto_bytes": len(proto),
                  "seconds": time.perf_counter() - start}))
"""


def write_manifest(path: str, rows: int, videos: list[str]) -> str:
    """A JSONL manifest of ``rows`` rows cycling over ``videos``."""
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        for start in range(0, rows, 10_000):
            handle.write("".join(json.dumps({"uri": videos[i % len(videos)], "tag": i}) + "\n"
                                 for i in range(start, min(rows, start + 10_000))))
    os.replace(path + ".tmp", path)
    return path


def launcher_cost(manifest: str, output: str, model: str) -> dict[str, float]:
    """Peak RSS and proto bytes of a fresh launcher process that builds the graph for ``manifest``."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER_PROBE, manifest, output, model], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    if done.returncode != 0:
        raise RuntimeError(f"launcher probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def seconds_to_first_plan(manifest: str, output: str, model: str, timeout_s: float = 600) -> float:
    """Wall seconds from starting ``plm-index build`` over ``manifest`` to its first 'planned' log line."""
    command = [sys.executable, "-m", "pipeline.cli", "-v", "build", "--input", manifest, "--output", output,
               "--clips", "fixed:2", "--max-new-tokens", "4", "--model", model, "--no-progress"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
                               start_new_session=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        for line in process.stderr:
            if " planned " in line:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout_s:
                break
        raise RuntimeError("the build planned no clip")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(ctx: Context) -> list[Figure]:
    """Launcher RSS, proto bytes and time to the first planned clip: 1M-row manifest against 1k rows."""
    found = tiny_model_and_videos(ctx, "scale-videos", 3, 4)
    if isinstance(found, str):
        return [skipped("scale", "scale", found)]
    model, videos = found
    large_rows = ROWS_SMALL * 10 if ctx.quick else ROWS_LARGE
    small = write_manifest(os.path.join(ctx.cache_dir, f"scale-{ROWS_SMALL}.jsonl"), ROWS_SMALL, videos)
    large = write_manifest(os.path.join(ctx.cache_dir, f"scale-{large_rows}.jsonl"), large_rows, videos)
    work = os.path.join(ctx.out_dir, "scale")
    bare = [launcher_cost("-", "-", "-")["rss_mb"] for _ in range(ctx.repeats)]
    costs: dict[str, list[dict[str, float]]] = {"small": [], "large": []}
    plans: dict[str, list[float]] = {"small": [], "large": []}
    for repeat in range(ctx.repeats):
        for name, manifest in (("small", small), ("large", large)):
            out = os.path.join(work, f"{name}-{repeat}-{time.time_ns()}")
            costs[name].append(launcher_cost(manifest, out, model))
            plans[name].append(seconds_to_first_plan(manifest, out + "-run", model))
    label = f"{large_rows:,}-row manifest"

    def stat(name: str, key: str) -> Stat:
        return Stat.of([c[key] for c in costs[name]])

    rss, proto = stat("large", "rss_mb"), stat("large", "proto_bytes")
    return [
        Figure(benchmark="scale", name=f"launcher peak RSS, {label}", unit="MB", value=rss,
               baseline_name=f"{ROWS_SMALL:,}-row manifest", baseline=stat("small", "rss_mb"),
               ratio=Stat.of([a["rss_mb"] / b["rss_mb"] for a, b in zip(costs["large"], costs["small"], strict=True)]),
               target=f"< {RSS_TARGET_MB} MB, not growing with the archive", met=rss.max < RSS_TARGET_MB,
               note=f"bare 'import apache_beam': {Stat.of(bare).median:.0f} MB"),
        Figure(benchmark="scale", name=f"pipeline proto (to_runner_api) size, {label}", unit="bytes", value=proto,
               baseline_name=f"{ROWS_SMALL:,}-row manifest", baseline=stat("small", "proto_bytes"),
               ratio=Stat.of([a["proto_bytes"] / b["proto_bytes"]
                              for a, b in zip(costs["large"], costs["small"], strict=True)]),
               target=f"< {PROTO_TARGET_BYTES} bytes, not growing", met=proto.max < PROTO_TARGET_BYTES),
        Figure(benchmark="scale", name=f"seconds to the first planned clip, {label}", unit="s",
               value=Stat.of(plans["large"]), baseline_name=f"{ROWS_SMALL:,}-row manifest",
               baseline=Stat.of(plans["small"]),
               ratio=Stat.of([a / b for a, b in zip(plans["large"], plans["small"], strict=True)]),
               target="not growing with the archive", met=Stat.of(plans["large"]).median
               <= 1.5 * Stat.of(plans["small"]).median + 2.0),
    ]
