"""Decode: frames/s of the project decoder sampling 32 frames from 30 s clips, against ``ffmpeg -f null``.

The files (720p and 1080p, h264 and h265, 30 fps) are generated with libx264/libx265 into the
cache folder on first use. The project decoder (``decoder_for``, PyAV) decodes one planned
32-frame clip covering the whole file, converting and resizing the sampled frames to 448 px as
the pipeline does; the baseline is ``ffmpeg -threads N -i FILE -f null -`` at the same thread
count. Both rates count decoded frames (the project decoder stops after the last sampled frame).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

from bench.common import Context, Figure, Stat, ffmpeg_encode, paired

NAME = "decode"
TARGET = 0.8
SOURCES = {"720p": "testsrc2=size=1280x720:rate=30", "1080p": "testsrc2=size=1920x1080:rate=30"}
CODECS = {"h264": ("libx264", ["-preset", "veryfast", "-crf", "23"]),
          "h265": ("libx265", ["-preset", "veryfast", "-crf", "28", "-x265-params", "log-level=error"])}


def clip_files(ctx: Context, seconds: float) -> list[tuple[str, str, float]]:
    """(label, path, generation seconds) of every test file, generating missing ones."""
    files = []
    for res, source in SOURCES.items():
        for codec, (encoder, extra) in CODECS.items():
            path = os.path.join(ctx.cache_dir, f"decode-{res}-{codec}-{int(seconds)}s.mp4")
            took = ffmpeg_encode(path, source, seconds, encoder, extra)
            files.append((f"{res} {codec}", path, took))
    return files


@contextlib.contextmanager
def counting_frames() -> Iterator[list[int]]:
    """Count the frames the project decoder decodes (every FrameCollector.tick)."""
    from transforms.decode import base

    counter = [0]
    original = base.FrameCollector.tick

    def tick(self: base.FrameCollector) -> None:
        counter[0] += 1
        original(self)

    base.FrameCollector.tick = tick  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        base.FrameCollector.tick = original  # type: ignore[method-assign]


def project_rate(path: str, threads: int) -> float:
    """Decoded frames/s of the project's PyAV decoder sampling one 32-frame clip over the file."""
    from schemas.config import ClipSpec, DecodeConfig
    from schemas.records import VideoClips, VideoInput
    from transforms.decode import decoder_for
    from transforms.plan.planning import plan_clips
    from transforms.probe.probing import probe_video

    info = probe_video(VideoInput(uri=path))
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=max(info.duration_s, 1.0) + 1), 32)
    config = DecodeConfig(backend="pyav", num_frames=32, threads=threads)
    decoder = decoder_for(config)
    with counting_frames() as counter:
        start = time.perf_counter()
        out = list(decoder.decode(VideoClips(info=info, clips=tuple(clips)), config))
        took = time.perf_counter() - start
    assert len(out) == 1 and out[0].frames.shape == (32, 448, 448, 3)
    return counter[0] / took


def ffmpeg_rate(path: str, threads: int, frames: int) -> float:
    """Frames/s of a full ``ffmpeg -threads N -i FILE -f null -`` decode."""
    start = time.perf_counter()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-threads", str(threads), "-i", path, "-f", "null", "-"],
                   check=True)
    return frames / (time.perf_counter() - start)


def run(ctx: Context) -> list[Figure]:
    """The decode figures, one per file (and thread count)."""
    from schemas.records import VideoInput
    from transforms.probe.probing import probe_video

    seconds = 10.0 if ctx.quick else 30.0
    threads = os.cpu_count() or 1
    figures = []
    for label, path, took in clip_files(ctx, seconds):
        frames = probe_video(VideoInput(uri=path)).num_frames
        cand, base, ratios = paired(lambda p=path: project_rate(p, threads),
                                    lambda p=path, f=frames: ffmpeg_rate(p, threads, f), ctx.repeats)
        ratio = Stat.of(ratios)
        figures.append(Figure(
            benchmark=NAME, name=f"{label}, {int(seconds)} s, 32 frames, {threads} threads", unit="frames/s",
            value=Stat.of(cand), baseline_name=f"ffmpeg -threads {threads} -f null", baseline=Stat.of(base),
            ratio=ratio, target=f">= {TARGET}x", met=ratio.median >= TARGET,
            note=f"{frames} frames; file generated in {took:.0f} s" if took else f"{frames} frames",
            extra={"path": path}))
    return figures
