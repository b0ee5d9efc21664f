"""Records that flow between pipeline stages.

They are frozen dataclasses: cheap to pickle between Beam workers and impossible to mutate
by a later stage, so data flows one way (discover, probe, plan, decode, prompt, infer, parse,
write).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Below this many levels ``approx_bytes`` stops looking (records are shallow; this bounds cycles).
_SIZE_DEPTH = 6
# What ``approx_bytes`` counts for a value it does not look into (a number, a None).
_SCALAR_BYTES = 8


class FlowRecord:
    """Base of what flows down the build's fused chain from decode to the model.

    Frames, prompts and the bookkeeping that rides beside them (``schemas.work.Progress``).
    Beam samples the size of every step's output elements; for these it asks
    ``transforms.coders.FlowRecordCoder``, which counts ``approx_bytes`` instead of pickling
    tens of MB of frames to take their length.
    """


def approx_bytes(value: Any, seen: set[int] | None = None, depth: int = 0) -> int:
    """Roughly how many bytes ``value`` holds, found without serializing it.

    Arrays count their ``nbytes`` (each array once, however many records share it), text its
    length, and dataclasses, tuples, lists and dicts the sum of what they hold.
    """
    seen = set() if seen is None else seen
    if isinstance(value, np.ndarray):
        if id(value) in seen:
            return 0
        seen.add(id(value))
        return int(value.nbytes)
    if isinstance(value, (str, bytes)):
        return len(value)
    if depth >= _SIZE_DEPTH:
        return _SCALAR_BYTES
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(approx_bytes(getattr(value, f.name), seen, depth + 1) for f in dataclasses.fields(value))
    if isinstance(value, (tuple, list)):
        return sum(approx_bytes(item, seen, depth + 1) for item in value)
    if isinstance(value, dict):
        return sum(approx_bytes(k, seen, depth + 1) + approx_bytes(v, seen, depth + 1) for k, v in value.items())
    return _SCALAR_BYTES


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
    # Start times (s, like frame_times) of the keyframes, from the demuxed packets; empty when
    # unknown. The decoder seeks across whole GOPs between sampled frames with them.
    keyframe_times: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class RegionOnClip:
    """A tracked subject as it appears in one clip's sampled frames.

    ``boxes[k]`` is the box ``[x1, y1, x2, y2]`` (original, upright pixels) drawn on sampled frame
    ``k``, or None where the subject has no box; ``start_frame``/``end_frame`` are the first and
    last sampled frames with a box, in the clip's sampled-frame index space (0..n-1).
    """

    region_id: str
    boxes: tuple[Box | None, ...]
    start_frame: int
    end_frame: int
    caption: str | None = None
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuestionOnClip:
    """A question asked about one clip: multiple choice (fgqa) or open (sgqa)."""

    task: str
    question: str
    options: tuple[str, ...] = ()
    answer_index: int | None = None
    qa_uid: str | None = None


@dataclass(frozen=True)
class VideoSummary:
    """The probe facts the ``videos`` table records, small enough to travel with every clip.

    Each clip carries its video's summary and clip count, so the stage that gathers a video's
    outcomes knows when it has them all without waiting for any other video.
    """

    video_id: str
    uri: str
    size_bytes: int
    duration_s: float
    fps: float
    num_frames: int
    width: int
    height: int
    rotation: int
    codec: str
    num_clips: int

    @classmethod
    def of(cls, info: VideoInfo, num_clips: int) -> VideoSummary:
        """The summary of a probed video with ``num_clips`` planned clips."""
        return cls(video_id=info.video_id, uri=info.uri, size_bytes=info.size_bytes, duration_s=info.duration_s,
                   fps=info.fps, num_frames=info.num_frames, width=info.width, height=info.height,
                   rotation=info.rotation, codec=info.codec, num_clips=num_clips)


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
    regions: tuple[RegionOnClip, ...] = ()
    questions: tuple[QuestionOnClip, ...] = ()
    # The tasks this clip's video asked for in the manifest; empty means all the run's tasks.
    tasks: tuple[str, ...] = ()
    # The clip's video, set once all its clips are planned (see ``VideoSummary``).
    video: VideoSummary | None = None


@dataclass(frozen=True)
class VideoClips:
    """A probed video with its planned clips, the unit that one decode pass serves."""

    info: VideoInfo
    clips: tuple[ClipPlan, ...]


@dataclass(frozen=True)
class ClipFrames(FlowRecord):
    """The sampled frames of one clip: uint8 RGB, (num_frames, height, width, 3), in order.

    ``region_frames`` holds, per region of the clip, the same frames with the region's red
    rectangle drawn (before the resize) on every sampled frame that has a box.
    """

    clip: ClipPlan
    frames: np.ndarray = field(repr=False, compare=False)
    region_frames: tuple[tuple[str, np.ndarray], ...] = field(default=(), repr=False, compare=False)

    def frames_for(self, region_id: str | None) -> np.ndarray:
        """The plain frames, or those with ``region_id``'s box drawn."""
        if region_id is None:
            return self.frames
        for rid, frames in self.region_frames:
            if rid == region_id:
                return frames
        raise KeyError(f"clip {self.clip.clip_index} of {self.clip.uri} has no region {region_id!r}")


@dataclass(frozen=True)
class ClipPrompt(FlowRecord):
    """A clip's frames with one task prompt: the element RunInference batches."""

    clip: ClipPlan
    frames: np.ndarray = field(repr=False, compare=False)
    task: str
    prompt: str
    max_new_tokens: int
    region_id: str | None = None
    question_index: int | None = None
    # How many prompts the clip was expanded into: the clip is finished once that many outcomes arrive.
    prompts_in_clip: int = 1
    # How many of them look at these very frames (the clip's, or one region's): while some are still
    # to come, the model runner keeps the frames' prefilled prefix for the next batch.
    prompts_on_frames: int = 1


@dataclass(frozen=True)
class InferenceFailure:
    """Stands in a PredictionResult's ``inference`` for a clip whose generation failed alone."""

    error_class: str
    message: str
    attempts: int
