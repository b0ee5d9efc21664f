"""Probe a video without decoding it whole (no Beam here: the Beam stage is ``transforms.probe.stage``)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import av
import numpy as np

from core import storage
from core.media import open_container
from schemas.records import VideoInfo, VideoInput

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20


class ProbeError(ValueError):
    """The input cannot be indexed as a video (no video stream, no frames, unreadable)."""


def content_video_id(uri: str, size: int) -> str:
    """A stable id from the file's content, so a moved or renamed copy keeps its id.

    It hashes the size and three 1 MiB samples (head, middle, tail) rather than the whole file,
    so an id costs at most 3 MiB of reads even for a multi-gigabyte video on object storage.
    Files up to 3 MiB are hashed whole.
    """
    digest = hashlib.sha256(str(size).encode())
    if size <= 3 * HASH_CHUNK:
        digest.update(storage.read_bytes(uri))
    else:
        middle = size // 2 - HASH_CHUNK // 2
        for start in (0, middle, size - HASH_CHUNK):
            # Explicit ranges: some servers ignore suffix ranges (bytes=-N).
            digest.update(storage.read_bytes(uri, start, start + HASH_CHUNK))
    return digest.hexdigest()[:24]


def frame_times_of(container: Any, stream: Any) -> tuple[np.ndarray, float, int, np.ndarray]:
    """Every frame's start time (s, from the first frame), the end of the last frame, the first pts,
    and the keyframes' start times.

    Reads packet timestamps by demuxing, without decoding, so it is fast and its memory is one
    float per frame.
    """
    pts: list[int] = []
    keyframes: list[int] = []
    last_end = None
    for packet in container.demux(stream):
        if packet.pts is None or packet.size == 0:
            continue
        pts.append(packet.pts)
        if packet.is_keyframe:
            keyframes.append(packet.pts)
        if packet.duration:
            end = packet.pts + packet.duration
            last_end = end if last_end is None else max(last_end, end)
    if not pts:
        raise ProbeError("the video stream has no frames")
    ordered = np.unique(np.asarray(pts, dtype=np.int64))  # sorted, duplicates dropped
    base = int(ordered[0])
    tb = float(stream.time_base)
    times = (ordered - base).astype(np.float64) * tb
    keyframe_times = (np.unique(np.asarray(keyframes, dtype=np.int64)) - base).astype(np.float64) * tb
    if last_end is not None and last_end > ordered[-1]:
        end_s = (last_end - base) * tb
    elif len(times) > 1:
        end_s = float(times[-1] + np.median(np.diff(times)))
    else:
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        end_s = float(times[-1] + 1.0 / rate)
    return times, float(end_s), base, keyframe_times


def identify(uri: str) -> tuple[int, str]:
    """A video's size and content id, from at most 3 MiB of reads."""
    size = storage.size_of(uri)
    if size == 0:
        raise ProbeError("the file is empty (0 bytes): re-copy it from its source")
    return size, content_video_id(uri, size)


def probe_video(video: VideoInput, identity: tuple[int, str] | None = None) -> VideoInfo:
    """Probe one video: size, content id, duration, fps, frames, resolution, rotation, codec."""
    size, video_id = identity or identify(video.uri)
    try:
        with open_container(video.uri) as container:
            if not container.streams.video:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
                raise ProbeError(f"no video stream (streams found: {kinds}); nothing to index in this file")
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            rotation = 0
            try:
                stream.thread_type = "AUTO"
                first = next(container.decode(stream), None)
            except av.error.FFmpegError as exc:
                raise ProbeError(f"the first frame cannot be decoded: {exc}") from exc
            if first is None:
                raise ProbeError("no frame could be decoded")
            rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
            width, height = first.width, first.height
            container.seek(0)
            times, end_s, first_pts, keyframe_times = frame_times_of(container, stream)
            time_base = float(stream.time_base)
    except av.error.FFmpegError as exc:
        raise ProbeError(f"not a readable video ({exc}); check the file is a complete video") from exc
    duration = end_s
    fps = (len(times) - 1) / times[-1] if len(times) > 1 and times[-1] > 0 else float(stream.average_rate or 0)
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(uri=video.uri, video_id=video_id, size_bytes=size, duration_s=float(duration),
                     fps=float(fps), num_frames=int(len(times)), width=int(width), height=int(height),
                     rotation=rotation, codec=codec, frame_times=times, first_pts=first_pts,
                     time_base=time_base, extras_json=video.extras_json, keyframe_times=keyframe_times)
