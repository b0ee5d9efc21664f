"""Media helpers shared by every floor: open a video (local or remote), iterate its decoded frames,
and make test videos with FFmpeg's sources. PyAV and FFmpeg only: no Beam, no torch.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import av

from core import storage
from core.paths import local_path

log = logging.getLogger(__name__)


@contextmanager
def open_container(uri: str) -> Iterator[Any]:
    """Open a video with PyAV: local files by path, remote ones and tar members through a seekable reader."""
    if not storage.opens_by_path(uri):
        with storage.open_read(uri) as handle, av.open(handle, mode="r") as container:
            yield container
    else:
        with av.open(local_path(uri), mode="r") as container:
            yield container


def decoded_frames(uri: str, first_pts: int, time_base: float,
                   threads: int = 0) -> Iterator[tuple[float | None, Any]]:
    """Every decodable frame in presentation order, with its start time (s, from the first frame).

    ``first_pts`` and ``time_base`` are the probe's (``VideoInfo``); corrupt packets are skipped
    with a warning; a frame without a timestamp comes with None.
    """
    with open_container(uri) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        for packet in container.demux(stream):
            yield from packet_frames(uri, packet, first_pts, time_base)


def packet_frames(uri: str, packet: Any, first_pts: int, time_base: float) -> Iterator[tuple[float | None, Any]]:
    """The frames one packet decodes to, with their start times; a corrupt packet yields none (with a warning)."""
    try:
        frames = packet.decode()
    except av.error.InvalidDataError as exc:
        log.warning("%s: skipping a corrupt packet at pts %s: %s", uri, packet.pts, exc)
        return
    for frame in frames:
        yield (None if frame.pts is None else (frame.pts - first_pts) * time_base), frame


def ffmpeg_binary() -> str:
    """The ffmpeg executable, or a clear error saying how to get one."""
    found = shutil.which("ffmpeg")
    if not found:
        raise RuntimeError("ffmpeg is not installed: install it (Debian: apt-get install ffmpeg)")
    return found


def ffprobe_binary() -> str:
    """The ffprobe executable (it comes with ffmpeg), or a clear error saying how to get one."""
    found = shutil.which("ffprobe")
    if not found:
        raise RuntimeError("ffprobe is not installed: install ffmpeg, which brings it (Debian: apt-get install ffmpeg)")
    return found


def make_video(path: str, source: str, seconds: float, codec: str = "libx264", extra: list[str] | None = None) -> str:
    """Encode ``seconds`` of an FFmpeg lavfi test source to ``path`` (no shell involved)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    command = [ffmpeg_binary(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds),
               "-c:v", codec, "-pix_fmt", "yuv420p", *(extra or []), path]
    subprocess.run(command, check=True)
    return path
