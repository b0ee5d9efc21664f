"""PyAV decoding: FFmpeg in-process, reads file-like objects, recovers from bad packets."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from core.media import decoded_frames
from schemas.config import DecodeConfig
from schemas.records import ClipFrames, VideoClips
from transforms.decode.base import DecodeError, FrameCollector
from transforms.decode.frames import FrameImages, apply_rotation
from transforms.decode.sparse import sparse_decoded_frames

log = logging.getLogger(__name__)


class PyAvDecoder:
    """One sequential pass over the video serves every clip, in order.

    With ``config.sparse`` (the default) the pass decodes only what the sampled frames need
    (``transforms.decode.sparse``): unsampled non-reference frames are skipped and whole GOPs
    between samples are sought over; the sampled frames' pixels are the same as a full pass.

    Only the planned frames are converted to RGB; rotation metadata is applied by us, because
    PyAV hands frames over as stored. In ``exact`` resize mode the full frame is converted and
    resized with PLM's own bicubic resize; in ``decoder`` mode FFmpeg's scaler resizes while
    converting, which is faster and slightly different.
    """

    def decode(self, video: VideoClips, config: DecodeConfig) -> Iterator[ClipFrames]:
        info = video.info
        collector = FrameCollector(video, config)
        size = config.frame_size
        last_seen = None  # (time, av frame) of the last decoded frame, for end-of-stream padding
        last_t = None

        def convert(frame) -> FrameImages:
            def full() -> np.ndarray:
                return apply_rotation(frame.to_ndarray(format="rgb24"), info.rotation)

            def in_decoder() -> np.ndarray:
                rgb = frame.to_ndarray(format="rgb24", width=size, height=size, interpolation="BICUBIC")
                return apply_rotation(rgb, info.rotation)

            # Region boxes are always drawn on the full frame, so "decoder" mode only changes plain frames.
            return FrameImages(full, size, in_decoder if config.resize == "decoder" else None)

        step = 1.0 / max(info.fps, 1.0)
        if config.sparse:
            targets = np.asarray([t for clip in video.clips for t in clip.sample_times], dtype=np.float64)
            frames = sparse_decoded_frames(info.uri, info.first_pts, info.time_base, targets, info.frame_times,
                                           info.keyframe_times, collector.tolerance, config.threads)
        else:
            frames = decoded_frames(info.uri, info.first_pts, info.time_base, config.threads)
        for t, frame in frames:
            collector.tick()
            if t is None:  # no timestamp: one frame interval after the previous frame
                t = (last_t if last_t is not None else -step) + step
            last_t = t
            last_seen = (t, frame)
            if collector.wants(t):
                yield from collector.offer(t, convert(frame))
            if collector.done:
                return
        if not collector.done:
            if last_seen is None:
                raise DecodeError("no frame could be decoded")
            yield from collector.finish((last_seen[0], convert(last_seen[1])))
