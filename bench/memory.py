"""Memory: a worker's RSS while indexing a long 1080p video must stay flat, not grow with its length.

A 2-hour 1080p h264 file (10 minutes with ``--quick``) is generated once from a simple lavfi
source at a low bitrate and the fastest preset (the generation time is reported). A spawned
worker process then runs one worker's per-video path over it: probe, plan (30 s clips, 32
frames), the single decode pass that serves every clip in order, the prompt builder and the
tiny PLM's generation for each clip. The parent samples the worker's RSS (``/proc/PID/status``)
with the progress in clips, and reports the peak RSS up to 25%, 50% and 100% of the clips.
Target: RSS at 100% is at most 1.1x RSS at 25% (flat).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

from bench.common import Context, Figure, Stat, ffmpeg_encode

NAME = "memory"
TARGET = 1.1
MAX_NEW_TOKENS = 4


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def worker(path: str, model: str, done: Any, total: Any) -> None:
    """The per-video path of one worker, counting finished clips in ``done``."""
    import torchvision_shim  # noqa: F401  (before transformers, in this fresh process)
    from model_runner.handler import PlmModelHandler
    from schemas.config import ClipSpec, DecodeConfig
    from schemas.records import VideoClips, VideoInput
    from transforms.decode import decoder_for
    from transforms.plan.planning import plan_clips
    from transforms.probe.probing import probe_video
    from transforms.prompt import build_prompt, expand_tasks

    handler = PlmModelHandler(model, device="cpu")
    loaded = handler.load_model()
    info = probe_video(VideoInput(uri=path))
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=30.0), 32)
    total.value = len(clips)
    config = DecodeConfig(backend="pyav", num_frames=32, timeout_s=24 * 3600.0)
    for clip_frames in decoder_for(config).decode(VideoClips(info=info, clips=tuple(clips)), config):
        prompts = [build_prompt(task) for task in expand_tasks(clip_frames, ("caption",), MAX_NEW_TOKENS)]
        handler.run_inference(prompts, loaded)
        done.value += 1


def trace(path: str, model: str, interval_s: float = 0.25) -> tuple[list[tuple[float, float, float]], float]:
    """Run the worker and sample (seconds, progress fraction, RSS MiB); also the worker's wall time."""
    context = mp.get_context("spawn")
    done, total = context.Value("i", 0), context.Value("i", 0)
    process = context.Process(target=worker, args=(path, model, done, total))
    start = time.perf_counter()
    process.start()
    samples: list[tuple[float, float, float]] = []
    while process.is_alive():
        rss = rss_mb(process.pid)
        if rss is not None:
            fraction = done.value / total.value if total.value else 0.0
            samples.append((time.perf_counter() - start, fraction, rss))
        time.sleep(interval_s)
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the memory worker failed (exit code {process.exitcode})")
    return samples, time.perf_counter() - start


def peak_until(samples: list[tuple[float, float, float]], fraction: float) -> float:
    """The highest RSS sampled before the progress passed ``fraction``."""
    return max(rss for _, f, rss in samples if f <= fraction + 1e-9)


def run(ctx: Context) -> list[Figure]:
    """One figure: RSS at 100% of the video against RSS at 25%."""
    from bench.prefix_sharing import tiny_model

    minutes = 10 if ctx.quick else 120
    path = os.path.join(ctx.cache_dir, f"memory-1080p-{minutes}min.mp4")
    took = ffmpeg_encode(path, "testsrc2=size=1920x1080:rate=30", minutes * 60, "libx264",
                         ["-preset", "ultrafast", "-crf", "45", "-g", "300"])
    samples, wall = trace(path, tiny_model(ctx))
    at = {q: peak_until(samples, q) for q in (0.25, 0.5, 1.0)}
    ratio = at[1.0] / at[0.25]
    generated = f"file generated in {took:.0f} s" if took else "file cached from an earlier run"
    return [Figure(
        benchmark=NAME, name=f"worker peak RSS over a {minutes} min 1080p h264 video (30 s clips, 32 frames)",
        unit="MiB", value=Stat.of([at[1.0]]), baseline_name="peak RSS at 25% of the clips, MiB",
        baseline=Stat.of([at[0.25]]), ratio=Stat.of([ratio]), target=f"<= {TARGET}x (flat)", met=ratio <= TARGET,
        note=(f"RSS at 25/50/100%: {at[0.25]:.0f}/{at[0.5]:.0f}/{at[1.0]:.0f} MiB; one traced run of "
              f"{wall:.0f} s, {len(samples)} samples; {generated}"),
        extra={"rss_at": at, "samples": samples[:: max(1, len(samples) // 400)], "generation_s": took})]
