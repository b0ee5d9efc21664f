"""The decoder interface and the bookkeeping shared by its backends."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Protocol

import numpy as np

from schemas.config import DecodeConfig
from schemas.records import ClipFrames, ClipPlan, VideoClips
from transforms.decode.frames import FrameImages

log = logging.getLogger(__name__)


class DecodeError(RuntimeError):
    """A video could not be decoded into the planned frames."""


class DecodeTimeout(DecodeError):
    """Decoding ran past its hard time limit or its frame cap."""


class VideoDecoder(Protocol):
    """Decodes the sampled frames of every planned clip of one video, clips in order."""

    def decode(self, video: VideoClips, config: DecodeConfig) -> Iterator[ClipFrames]:
        """Yield one ClipFrames per clip, in clip order, holding only one clip's frames at a time."""
        ...


class FrameCollector:
    """Matches decoded frames, in presentation order, to the planned samples of each clip.

    Each planned sample is the frame whose start time equals the planned time. A frame that
    the decoder dropped (a corrupt packet, say) is replaced by the next decoded one, and the
    time actually used is recorded. Completed clips are released in order, so at most one
    clip's frames (at PLM size) are held.
    """

    def __init__(self, video: VideoClips, config: DecodeConfig) -> None:
        self._clips = list(video.clips)
        self._config = config
        self._deadline = time.monotonic() + config.timeout_s
        self._decoded = 0
        self._clip_pos = 0
        self._slot = 0
        self._frames: list[np.ndarray] = []
        self._region_frames: dict[str, list[np.ndarray]] = {}
        self._times: list[float] = []
        self._uri = video.info.uri
        frame_times = video.info.frame_times
        # Tolerance for matching decoded to demuxed times: well under one frame interval.
        gaps = np.diff(frame_times)
        self._tol = float(max(1e-6, 0.25 * gaps[gaps > 0].min())) if np.any(gaps > 0) else 1e-3

    @property
    def tolerance(self) -> float:
        """How far (s) a decoded frame's time may be from a planned time and still be that frame."""
        return self._tol

    @property
    def done(self) -> bool:
        """Whether every clip has all its frames."""
        return self._clip_pos >= len(self._clips)

    def next_time(self) -> float | None:
        """The time (s) of the next planned sample, or None when done."""
        if self.done:
            return None
        return self._clips[self._clip_pos].sample_times[self._slot]

    def tick(self) -> None:
        """Count one decoded frame against the time limit and the frame cap."""
        self._decoded += 1
        if self._decoded > self._config.max_decoded_frames:
            raise DecodeTimeout(f"decoded more than {self._config.max_decoded_frames} frames (the frame cap)")
        if time.monotonic() > self._deadline:
            raise DecodeTimeout(f"decoding took longer than the {self._config.timeout_s:g} s limit")

    def wants(self, t: float) -> bool:
        """Whether the frame starting at ``t`` (s) fills the next planned sample."""
        target = self.next_time()
        return target is not None and t >= target - self._tol

    def offer(self, t: float, images: FrameImages) -> Iterator[ClipFrames]:
        """Give the frame starting at ``t`` to every pending sample it fills."""
        while not self.done and t >= self.next_time() - self._tol:
            clip = self._clips[self._clip_pos]
            planned = clip.sample_times[self._slot]
            if abs(t - planned) > self._tol:
                log.debug("%s: frame at %.4f s missing, using %.4f s", self._uri, planned, t)
            self._fill(clip, t, images)
            if self._slot == len(clip.sample_times):
                yield from self._hand_over(self._release(clip))

    def _fill(self, clip: ClipPlan, t: float, images: FrameImages) -> None:
        plain = images.plain()
        self._frames.append(plain)
        for region in clip.regions:
            box = region.boxes[self._slot]
            self._region_frames.setdefault(region.region_id, []).append(
                images.with_box(box) if box is not None else plain)
        self._times.append(t)
        self._slot += 1

    def finish(self, last: tuple[float, FrameImages] | None) -> Iterator[ClipFrames]:
        """At end of stream: pad a clip that lost its trailing frames with the last frame seen."""
        if self.done:
            return
        if last is None:
            raise DecodeError("the stream ended before any planned frame was decoded")
        t, frame = last
        clip = self._clips[self._clip_pos]
        if self._slot == 0:
            raise DecodeError(
                f"the stream ended at {t:.3f} s, before clip {clip.clip_index} ({clip.start_s:.3f} s); "
                "the file may be truncated")
        log.warning("%s: stream ended early; clip %d padded with the frame at %.3f s", self._uri,
                    clip.clip_index, t)
        while self._slot < len(clip.sample_times):
            self._fill(clip, t, frame)
        yield from self._hand_over(self._release(clip))
        if not self.done:
            missing = self._clips[self._clip_pos]
            raise DecodeError(
                f"the stream ended at {t:.3f} s, before clip {missing.clip_index} ({missing.start_s:.3f} s); "
                "the file may be truncated")

    def _hand_over(self, clip: ClipFrames) -> Iterator[ClipFrames]:
        """Yield a finished clip; the time its consumer holds the decoder (inference) is not decode time."""
        waiting = time.monotonic()
        yield clip
        self._deadline += time.monotonic() - waiting

    def _release(self, clip: ClipPlan) -> ClipFrames:
        frames = np.stack(self._frames)
        region_frames = tuple((rid, np.stack(stack)) for rid, stack in self._region_frames.items())
        used = tuple(self._times)
        if used != clip.sample_times:
            # Record the frames actually used, so seconds derived later are the real ones.
            ends = tuple(max(e, u) for e, u in zip(clip.sample_end_times, used, strict=True))
            clip = replace(clip, sample_times=used, sample_end_times=ends)
        self._frames, self._times, self._region_frames = [], [], {}
        self._slot = 0
        self._clip_pos += 1
        return ClipFrames(clip=clip, frames=frames, region_frames=region_frames)
