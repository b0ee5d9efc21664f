"""Real size on CPU: PLM-1B at its published size, random weights, through ``plm-index build --model DIR``.

The checkpoint is built at run time into a temporary folder (never committed): the published
Perception-LM-1B architecture (``bench.gpu.plm_config``: Llama-3.2-1B text model, PE-Core L/14
vision tower at 448 px, 2x2 pooling, vocabulary 128256) with random weights, saved as safetensors
with the tiny model's processor. It is then loaded the way a downloaded checkpoint is, by the
real CLI in a child process: ``plm-index build --model DIR`` over one generated 30 s clip.

Figures (one run each: minutes of CPU on a shared machine):

* peak RSS of the build process, against the checkpoint's size on disk;
* load time: a child process that only loads the checkpoint (``load_plm``), against the
  build's whole wall time;
* seconds per clip: the build's wall time less the load time, against the same build with the
  tiny model (the pipeline's fixed costs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.common import Context, Figure, Stat, ffmpeg_encode

NAME = "realsize"
NEW_TOKENS = 16
PEAK_RSS_LIMIT_GIB = 10.0

LOAD_ONLY = """
import json, resource, sys, time
from model_runner.loading import load_plm
start = time.perf_counter()
loaded = load_plm(sys.argv[1], "cpu", 0)
took = time.perf_counter() - start
params = sum(p.numel() for p in loaded.model.parameters())
print(json.dumps({"load_s": took, "parameters": params, "dtype": str(loaded.model.dtype),
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

BUILD_CHECKPOINT = """
import sys
from bench.common import Context
from bench.gpu import save_checkpoint
ctx = Context(repeats=1, quick=True, out_dir=sys.argv[2], cache_dir=sys.argv[3])
print(save_checkpoint("PLM-1B", sys.argv[1], "cpu", ctx, smoke=sys.argv[4] == "smoke"))
"""


def child(args: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a Python child; its stdout, wall seconds and peak RSS (GiB, from wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        took = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed (exit {process.returncode}): {errors[-2000:]}")
    return text, took, usage.ru_maxrss / 2**20


def folder_gib(path: str) -> float:
    """Size of the files under ``path`` (GiB)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2**30


def run(ctx: Context, smoke: bool = False) -> list[Figure]:
    """The real-size CPU figures (``smoke`` or ``--dry``: a shrunk model, to check this code quickly)."""
    smoke = smoke or ctx.dry
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    video_dir = os.path.join(ctx.cache_dir, "realsize-video")
    ffmpeg_encode(os.path.join(video_dir, "clip30.mp4"), "testsrc2=size=1280x720:rate=30", 30, "libx264",
                  ["-preset", "veryfast"])
    scratch = tempfile.mkdtemp(prefix="bench-realsize-")
    try:
        out, build_s, build_rss = child(["-c", BUILD_CHECKPOINT, scratch, ctx.out_dir, ctx.cache_dir,
                                         "smoke" if smoke else "real"], env)
        checkpoint = out.strip().splitlines()[-1]
        size = folder_gib(checkpoint)
        out, _, load_rss = child(["-c", LOAD_ONLY, checkpoint], env)
        loaded = json.loads(out.strip().splitlines()[-1])
        from bench.prefix_sharing import tiny_model

        tiny = tiny_model(ctx)
        out, _, _ = child(["-c", LOAD_ONLY, tiny], env)
        tiny_loaded = json.loads(out.strip().splitlines()[-1])

        def build(model: str) -> tuple[float, float, str]:
            index = tempfile.mkdtemp(dir=scratch)
            args = ["-m", "pipeline.cli", "build", "--input", video_dir, "--output", index, "--clips", "fixed:30",
                    "--model", model, "--max-new-tokens", str(NEW_TOKENS), "--device", "cpu", "--force",
                    "--no-progress", "--no-runaway-guard"]
            out, took, rss = child(args, env)
            return took, rss, out.strip().splitlines()[-1] if out.strip() else ""

        wall, rss, line = build(checkpoint)
        tiny_wall, tiny_rss, _ = build(tiny)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    label = "PLM-1B (shrunk: smoke)" if smoke else "PLM-1B"
    # The build's fixed costs (imports, Beam, probe, decode, embedding, write) are the tiny build's;
    # what the real size adds beyond its longer load is the model's work on the clip.
    per_clip = wall - tiny_wall - (loaded["load_s"] - tiny_loaded["load_s"])
    common = (f"{loaded['parameters'] / 1e9:.2f} B parameters, {loaded['dtype']}, safetensors {size:.2f} GiB; "
              f"one 30 s 720p h264 clip, 32 frames, caption of {NEW_TOKENS} new tokens; {os.cpu_count()} CPUs")
    return [
        Figure(benchmark=NAME, name=f"{label}: peak RSS of plm-index build", unit="GiB", value=Stat.of([rss]),
               baseline_name="checkpoint on disk, GiB", baseline=Stat.of([size]), ratio=Stat.of([rss / size]),
               target=f"<= {PEAK_RSS_LIMIT_GIB:g} GiB", met=rss <= PEAK_RSS_LIMIT_GIB,
               note=f"{common}; load-only process peak {load_rss:.2f} GiB; building the checkpoint took "
                    f"{build_s:.0f} s at {build_rss:.2f} GiB; {line}"),
        Figure(benchmark=NAME, name=f"{label}: load time (load_plm from safetensors, imports excluded)", unit="s",
               value=Stat.of([loaded["load_s"]]), baseline_name="the tiny model's load, s",
               baseline=Stat.of([tiny_loaded["load_s"]]), ratio=Stat.of([loaded["load_s"] / tiny_loaded["load_s"]]),
               note="one run"),
        Figure(benchmark=NAME, name=f"{label}: model seconds per 30 s clip (build wall - tiny build wall - "
                                    "extra load)", unit="s/clip",
               value=Stat.of([per_clip]), baseline_name="whole tiny-model build of the clip, s",
               baseline=Stat.of([tiny_wall]), ratio=Stat.of([per_clip / tiny_wall]),
               note=f"real-size build wall {wall:.0f} s; tiny-model build peak RSS {tiny_rss:.2f} GiB; one run"),
    ]
