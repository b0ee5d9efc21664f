"""Shared pieces of the benchmark suite: repeated timing against a same-run baseline, and the report."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Context:
    """What every benchmark gets: repetitions, quick mode and where to keep generated files."""

    repeats: int
    quick: bool
    out_dir: str
    cache_dir: str
    # --dry: run benchmarks made for hardware this machine lacks (the GPU bench) with shrunk
    # models on CPU, to check the script end to end before spending device time on it.
    dry: bool = False


@dataclass(frozen=True)
class Stat:
    """The median of repeated measurements with their min and max."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        """Summarise a list of measurements."""
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self, digits: int = 2) -> str:
        """``median [min-max]``."""
        return f"{self.median:.{digits}f} [{self.min:.{digits}f}-{self.max:.{digits}f}]"


@dataclass
class Figure:
    """One reported figure: the candidate against its baseline, measured in the same run.

    ``ratio`` is the per-repetition ratio candidate/baseline (each repetition measures both, one
    after the other), so slow drift of a noisy machine cancels out of it.
    """

    benchmark: str
    name: str
    unit: str
    value: Stat | None
    baseline_name: str = ""
    baseline: Stat | None = None
    ratio: Stat | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        """One Markdown table row."""
        def cell(stat: Stat | None, digits: int = 2) -> str:
            return stat.text(digits) if stat is not None else "-"
        met = {True: "yes", False: "**no**", None: "-"}[self.met]
        base = f"{self.baseline_name}: {cell(self.baseline)}" if self.baseline_name else "-"
        return (f"| {self.benchmark} | {self.name} | {cell(self.value)} {self.unit} | {base} | "
                f"{cell(self.ratio, 3)} | {self.target or '-'} | {met} | {self.note} |")

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


HEADER = ("| benchmark | figure | median [min-max] | baseline (same run) | ratio median [min-max] | target | met "
          "| note |\n|---|---|---|---|---|---|---|---|")


def skipped(benchmark: str, name: str, why: str) -> Figure:
    """A figure that could not be measured, saying why."""
    return Figure(benchmark=benchmark, name=name, unit="", value=None, note=f"not run: {why}")


def _live_tree_cpu_seconds() -> float | None:
    """User and system CPU of this process and its live descendants, read from ``/proc`` (None elsewhere)."""
    if not os.path.isdir("/proc/self/task"):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    pids, total, index = [os.getpid()], 0.0, 0
    while index < len(pids):
        pid = pids[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    pids.extend(int(child) for child in children.read().split())
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except (OSError, ValueError):  # the process ended while being read
            continue
    return total


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process, its live descendants and its reaped children.

    A build decodes in a child process that outlives it, so ``time.process_time`` alone would
    leave the decoding out; children that ended are counted once reaped (``RUSAGE_CHILDREN``).
    """
    import resource

    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = _live_tree_cpu_seconds()
    if live is None:
        own = resource.getrusage(resource.RUSAGE_SELF)
        live = own.ru_utime + own.ru_stime
    return live + reaped.ru_utime + reaped.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def paired(candidate: Callable[[], float], baseline: Callable[[], float], repeats: int,
           warmup: bool = True) -> tuple[list[float], list[float], list[float]]:
    """Run candidate and baseline alternately; each returns a rate (higher is better) or a cost.

    Returns the candidate values, the baseline values and the per-repetition ratios.
    """
    if warmup:
        candidate()
        baseline()
    cand, base, ratios = [], [], []
    for index in range(repeats):
        # Alternate which goes first, so neither always runs on a warmer machine.
        if index % 2:
            b = baseline()
            c = candidate()
        else:
            c = candidate()
            b = baseline()
        cand.append(c)
        base.append(b)
        ratios.append(c / b if b else float("nan"))
    return cand, base, ratios


def ffmpeg_encode(path: str, source: str, seconds: float, codec: str, extra: list[str]) -> float:
    """Encode a lavfi source to ``path`` once (kept as a cache); returns the seconds it took (0 if cached)."""
    if os.path.exists(path):
        return 0.0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part" + os.path.splitext(path)[1]
    command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds),
               "-c:v", codec, "-pix_fmt", "yuv420p", *extra, tmp]
    start = time.perf_counter()
    if shutil.which("ffmpeg"):
        subprocess.run(command, check=True)
    else:  # the GPU machine has PyAV (carried) but no ffmpeg program
        pyav_encode(tmp, source, seconds, codec, extra)
    os.replace(tmp, path)
    return time.perf_counter() - start


def pyav_encode(path: str, source: str, seconds: float, codec: str, extra: list[str]) -> None:
    """What ``ffmpeg -f lavfi -i SOURCE -t SECONDS -c:v CODEC -pix_fmt yuv420p EXTRA`` writes, through PyAV.

    ``extra`` holds ``-option value`` pairs for the encoder (``-preset veryfast``, ``-g 30``).
    """
    import av

    if len(extra) % 2 or any(not key.startswith("-") for key in extra[::2]):
        raise ValueError(f"encoder options must be '-name value' pairs, got {extra}")
    options = {key[1:]: value for key, value in zip(extra[::2], extra[1::2], strict=True)}
    with av.open(source, format="lavfi") as src, av.open(path, "w") as out:
        video = src.streams.video[0]
        rate = video.average_rate or video.base_rate
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        last = int(round(float(seconds) * float(rate)))
        for index, frame in enumerate(src.decode(video)):
            if index >= last:
                break
            frame.pts = None
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def tiny_model_and_videos(ctx: Context, name: str, count: int, seconds: float) -> tuple[str, list[str]] | str:
    """The tiny PLM and ``count`` small distinct test videos (cached), or why the tiny model is unavailable."""
    from core.media import make_video
    from pipeline.build import ensure_tiny_model

    try:
        model = ensure_tiny_model()
    except Exception as exc:  # noqa: BLE001 - the caller reports a skipped figure
        return f"tiny model unavailable: {exc}"
    folder = os.path.join(ctx.cache_dir, name)
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"v{index}.mp4")
        if not os.path.exists(path):
            make_video(path, f"testsrc=size=320x240:rate=25,hue=h={index * 360 // count}", seconds)
        paths.append(path)
    return model, paths


def machine() -> dict[str, Any]:
    """The machine the run measured."""
    import platform

    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - informative only
        pass
    try:
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    return info
