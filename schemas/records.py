"""Records that flow between pipeline stages.

They are frozen dataclasses: cheap to pickle between Beam workers and impossible to mutate
by a later stage, so data flows one way (discover, probe, plan, decode, prompt, infer, parse,
write).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class VideoInput:
    """One input video as discovered: its URI and any per-video fields from a manifest."""

    uri: str
    extras_json: str = "{}"


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video found, plus the presentation time of every frame.

    ``frame_times`` holds every frame's start time in seconds from the stream's first frame,
    sorted, read from the demuxed packets without decoding. Sampling uses these real
    timestamps, never ``t * fps``, so variable-frame-rate video is handled. A decoded frame's
    time is ``(frame.pts - first_pts) * time_base``.
    """

    uri: str
    video_id: str
    size_bytes: int
    duration_s: float
    fps: float
    num_frames: int
    width: int
    height: int
    rotation: int
    codec: str
    frame_times: np.ndarray = field(repr=False, compare=False)
    first_pts: int = 0
    time_base: float = 1.0
    extras_json: str = "{}"


@dataclass(frozen=True)
class ClipPlan:
    """One planned clip of a video and the frames PLM will see from it.

    ``sample_frame_indices`` index the video's frames (``VideoInfo.frame_times``);
    ``sample_times`` are those frames' start times in seconds and ``sample_end_times`` the end
    of each sampled frame's interval (the next frame's start, or the clip end).
    """

    video_id: str
    uri: str
    clip_index: int
    start_s: float
    end_s: float
    sample_frame_indices: tuple[int, ...]
    sample_times: tuple[float, ...]
    sample_end_times: tuple[float, ...]


@dataclass(frozen=True)
class VideoClips:
    """A probed video with its planned clips, the unit that one decode pass serves."""

    info: VideoInfo
    clips: tuple[ClipPlan, ...]


@dataclass(frozen=True)
class ClipFrames:
    """The sampled frames of one clip: uint8 RGB, (num_frames, height, width, 3), in order."""

    clip: ClipPlan
    frames: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class ClipPrompt:
    """A clip's frames with one task prompt: the element RunInference batches."""

    clip: ClipPlan
    frames: np.ndarray = field(repr=False, compare=False)
    task: str
    prompt: str
    max_new_tokens: int
