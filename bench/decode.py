"""Decode: how fast the project decoder gets PLM's sampled frames out of a file, against ``ffmpeg -f null``.

The files (720p and 1080p, h264 and h265, 30 fps, each with the encoder's default GOP and with a
1 s GOP as phone and streaming video use) are generated with libx264/libx265 into the cache
folder on first use. The project decoder (``decoder_for``, PyAV) samples about one frame a
second (PLM's 32 frames over a 30 s clip; 11 over the 10 s ``--quick`` files) from one clip
covering the whole file, converting and resizing the sampled frames to 448 px as the pipeline
does, and decodes only what those frames need (``transforms.decode.sparse``). The baseline is a
full ``ffmpeg -threads N -i FILE -f null -`` decode at the same thread count. Both rates are the
file's frames over the wall time, so the ratio is how many times faster than decoding every frame
the samples arrive.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

from bench.common import Context, Figure, Stat, ffmpeg_encode, paired

NAME = "decode"
TARGET_DEFAULT_GOP = 1.3  # x264's default 250-frame GOP: only non-reference frames can go
TARGET_SHORT_GOP = 2.0  # 1-2 s GOPs: whole GOPs between samples are sought over
SOURCES = {"720p": "testsrc2=size=1280x720:rate=30", "1080p": "testsrc2=size=1920x1080:rate=30"}
CODECS = {"h264": ("libx264", ["-preset", "veryfast", "-crf", "23"]),
          "h265": ("libx265", ["-preset", "veryfast", "-crf", "28", "-x265-params", "log-level=error"])}
# GOP variants: the encoder's default (x264: 250 frames; x265: 250 frames, open GOPs) and 1 s.
GOPS = {"default GOP": {"h264": [], "h265": []},
        "1 s GOP": {"h264": ["-g", "30"], "h265": ["-x265-params", "log-level=error:keyint=30:min-keyint=30"]}}


def clip_files(ctx: Context, seconds: float) -> list[tuple[str, str, float]]:
    """(label, path, generation seconds) of every test file, generating missing ones."""
    files = []
    for res, source in SOURCES.items():
        for codec, (encoder, extra) in CODECS.items():
            for gop, gop_extra in GOPS.items():
                flags = list(extra)
                if gop_extra[codec] and "-x265-params" in gop_extra[codec]:
                    flags = flags[:flags.index("-x265-params")] + gop_extra[codec]
                else:
                    flags += gop_extra[codec]
                tag = "" if not gop_extra[codec] else "-gop30"
                path = os.path.join(ctx.cache_dir, f"decode-{res}-{codec}{tag}-{int(seconds)}s.mp4")
                took = ffmpeg_encode(path, source, seconds, encoder, flags)
                files.append((f"{res} {codec}, {gop}", path, took))
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


def sampled_frames(seconds: float) -> int:
    """About one frame a second: PLM's 32 over 30 s."""
    return 32 if seconds >= 30 else int(round(seconds)) + 1


def project_rate(path: str, threads: int, num_frames: int, counter_out: list[int] | None = None) -> float:
    """The file's frames/s through the project's PyAV decoder sampling one clip over the whole file."""
    from schemas.config import ClipSpec, DecodeConfig
    from schemas.records import VideoClips, VideoInput
    from transforms.decode import decoder_for
    from transforms.plan.planning import plan_clips
    from transforms.probe.probing import probe_video

    info = probe_video(VideoInput(uri=path))
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=max(info.duration_s, 1.0) + 1), num_frames)
    config = DecodeConfig(backend="pyav", num_frames=num_frames, threads=threads)
    decoder = decoder_for(config)
    with counting_frames() as counter:
        start = time.perf_counter()
        out = list(decoder.decode(VideoClips(info=info, clips=tuple(clips)), config))
        took = time.perf_counter() - start
    assert len(out) == 1 and out[0].frames.shape == (num_frames, 448, 448, 3)
    if counter_out is not None:
        counter_out[:] = [counter[0]]
    return info.num_frames / took


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
    num_frames = sampled_frames(seconds)
    figures = []
    for label, path, took in clip_files(ctx, seconds):
        frames = probe_video(VideoInput(uri=path)).num_frames
        decoded: list[int] = []
        cand, base, ratios = paired(lambda p=path, d=decoded: project_rate(p, threads, num_frames, d),
                                    lambda p=path, f=frames: ffmpeg_rate(p, threads, f), ctx.repeats)
        ratio = Stat.of(ratios)
        target = TARGET_SHORT_GOP if "1 s GOP" in label else TARGET_DEFAULT_GOP
        figures.append(Figure(
            benchmark=NAME, name=f"{label}, {int(seconds)} s, {num_frames} frames sampled, {threads} threads",
            unit="file frames/s", value=Stat.of(cand), baseline_name=f"ffmpeg -threads {threads} -f null (every frame)",
            baseline=Stat.of(base), ratio=ratio, target=f">= {target}x", met=ratio.median >= target,
            note=f"decoded {decoded[0] if decoded else '?'} of {frames} frames"
                 + (f"; file generated in {took:.0f} s" if took else ""),
            extra={"path": path}))
    return figures
