"""Decode only the frames that the sampled frames need (PyAV).

PLM samples about one frame a second, so most decoded frames are thrown away. Two kinds of
frame need not be decoded at all, and skipping them leaves every sampled frame's pixels as
they are:

- **Non-reference frames that are not sampled.** No other frame is predicted from them, so
  libavcodec's ``skip_frame = NONREF`` drops them without touching any frame that is decoded.
  It is set packet by packet: ``DEFAULT`` for the packet of a sampled frame, ``NONREF`` for the
  others (libavcodec copies the setting into each frame thread as the packet is submitted).
- **Whole GOPs between samples.** When the next sampled frame's keyframe lies ahead of
  everything read so far, the decoder is drained (frames still in flight are kept) and the
  demuxer seeks to that keyframe: the frames in between are never read.

Sampled frames are matched by their packet's presentation time, the same timestamps the probe
read and the plan sampled from. Where the stream does not give what is expected (a seek that
lands after the frame it was for), the decoder goes back to the start and decodes every frame
from there, as a plain sequential pass does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.media import open_container, packet_frames

log = logging.getLogger(__name__)

# A seek drains the decoder's frame threads; below this many frames between what has been read
# and the next keyframe, reading on is cheaper than seeking.
MIN_SEEK_GAP_FRAMES = 12


@dataclass
class SparseStats:
    """What a sparse pass did: packets read, packets sent with skipping on, seeks made."""

    packets: int = 0
    skippable_packets: int = 0
    seeks: int = 0
    fallbacks: int = 0
    seek_times: list[float] = field(default_factory=list)


def _index_of(times: np.ndarray, t: float, tol: float) -> int:
    """The index of the time in sorted ``times`` within ``tol`` of ``t``, or -1."""
    i = int(np.searchsorted(times, t - tol, side="left"))
    return i if i < len(times) and abs(times[i] - t) <= tol else -1


def sparse_decoded_frames(uri: str, first_pts: int, time_base: float, targets: np.ndarray,
                          frame_times: np.ndarray, keyframe_times: np.ndarray, tol: float,
                          threads: int = 0, stats: SparseStats | None = None) -> Iterator[tuple[float | None, Any]]:
    """Decoded frames in presentation order with their start times, as ``core.media.decoded_frames``
    yields them, leaving out frames that no time in ``targets`` needs.

    ``targets`` are the sampled frames' start times (s), ``frame_times`` and ``keyframe_times``
    the probe's. Every frame whose time is in ``targets`` is decoded exactly as in a full pass.
    """
    stats = stats if stats is not None else SparseStats()
    wanted = np.unique(np.asarray(targets, dtype=np.float64))
    sent = np.zeros(len(wanted), dtype=bool)
    keyframes = np.asarray(keyframe_times, dtype=np.float64)
    with open_container(uri) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        context = stream.codec_context
        frontier = -np.inf  # the latest presentation time of any packet sent so far
        next_wanted = 0  # the first target whose packet has not been sent
        can_seek = len(keyframes) > 1
        restart_at: float | None = None
        while True:
            restart = False
            for packet in container.demux(stream):
                t = None if packet.pts is None else (packet.pts - first_pts) * time_base
                if restart_at is not None:
                    # Just sought: the packet must not start after the target it was sought for.
                    first, restart_at = restart_at, None
                    if t is not None and t > first + tol:
                        log.warning("%s: a seek for %.3f s landed at %.3f s; decoding every frame from the start",
                                    uri, first, t)
                        stats.fallbacks += 1
                        can_seek = False
                        restart = True
                        break
                if t is not None and packet.size:
                    hit = _index_of(wanted, t, tol)
                    if hit >= 0:
                        sent[hit] = True
                        while next_wanted < len(wanted) and sent[next_wanted]:
                            next_wanted += 1
                    if can_seek and next_wanted < len(wanted) and hit < 0:
                        keyframe = _keyframe_before(keyframes, wanted[next_wanted], tol)
                        ahead = max(frontier, t)
                        if keyframe is not None and keyframe > ahead + tol and _frames_between(
                                frame_times, ahead, keyframe) >= MIN_SEEK_GAP_FRAMES:
                            yield from _drain(context, first_pts, time_base)
                            container.seek(int(round(keyframe / time_base)) + first_pts, stream=stream,
                                           backward=True, any_frame=False)
                            stats.seeks += 1
                            stats.seek_times.append(float(keyframe))
                            frontier = -np.inf
                            restart_at = float(wanted[next_wanted])
                            restart = True
                            break
                    frontier = max(frontier, t)
                    skip = hit < 0
                else:
                    skip = False  # no timestamp (or the end-of-stream packet): decode as usual
                context.skip_frame = "NONREF" if skip else "DEFAULT"
                stats.packets += 1
                stats.skippable_packets += int(skip)
                yield from packet_frames(uri, packet, first_pts, time_base)
            if not restart:
                return
            if not can_seek and restart_at is None:
                # Fallback: from the start, every frame (skipping only non-reference frames).
                yield from _drain(context, first_pts, time_base)
                container.seek(0, stream=stream, backward=True, any_frame=False)
                frontier = -np.inf


def _keyframe_before(keyframes: np.ndarray, t: float, tol: float) -> float | None:
    """The latest keyframe time at or before ``t``."""
    i = int(np.searchsorted(keyframes, t + tol, side="right")) - 1
    return float(keyframes[i]) if i >= 0 else None


def _frames_between(frame_times: np.ndarray, start: float, end: float) -> int:
    """How many frames start after ``start`` and before ``end``."""
    if not np.isfinite(start):
        return int(np.searchsorted(frame_times, end, side="left"))
    return int(np.searchsorted(frame_times, end, side="left") - np.searchsorted(frame_times, start, side="right"))


def _drain(context: Any, first_pts: int, time_base: float) -> Iterator[tuple[float | None, Any]]:
    """The frames still inside the decoder (frame threads, reordering), before a seek flushes them."""
    context.skip_frame = "DEFAULT"
    for frame in context.decode(None):
        yield (None if frame.pts is None else (frame.pts - first_pts) * time_base), frame
