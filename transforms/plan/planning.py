"""Clip windows and the frames PLM sees of each, on real frame timestamps.

Frames are chosen by PLM's own loader rule (``core.sampling.plm_loader_positions``): candidates
at 1 fps, thinned by ``round(i * (m - 1) / 31)``; a clip with fewer than 32 candidates is sampled
by that rule over all its frames. The clip's frame rate is its own average (frames over the span
they cover), as the loader reads a trimmed clip's.
"""

from __future__ import annotations

import math

import numpy as np

from core.sampling import plm_loader_positions
from schemas.config import ClipSpec
from schemas.manifest import Question
from schemas.records import ClipPlan, VideoInfo
from transforms.plan.annotations import annotate_clips


def fixed_windows(duration_s: float, window_s: float) -> list[tuple[float, float]]:
    """Back-to-back windows of ``window_s``; the last may be shorter. A short video is one window."""
    if duration_s <= window_s:
        return [(0.0, duration_s)]
    count = math.ceil(duration_s / window_s - 1e-9)
    return [(i * window_s, duration_s if i == count - 1 else (i + 1) * window_s) for i in range(count)]


def split_long(windows: list[tuple[float, float]], max_s: float) -> list[tuple[float, float]]:
    """Split windows longer than ``max_s`` into equal parts no longer than it."""
    result: list[tuple[float, float]] = []
    for start, end in windows:
        parts = max(1, math.ceil((end - start) / max_s - 1e-9))
        step = (end - start) / parts
        result.extend((start + i * step, end if i == parts - 1 else start + (i + 1) * step) for i in range(parts))
    return result


def clip_average_fps(info: VideoInfo, first: int, stop: int) -> float:
    """Average frame rate of frames ``first..stop-1``: their count over the time they cover.

    A clip's last frame lasts until the next frame's start (or the video's end), so a constant
    ``f`` fps clip gives exactly ``f``; for variable frame rate it is the clip's mean rate.
    """
    times = info.frame_times
    end = float(times[stop]) if stop < len(times) else float(info.duration_s)
    span = end - float(times[first])
    return (stop - first) / span if span > 0 else float(info.fps or 1.0)


def clip_from_positions(info: VideoInfo, clip_index: int, positions: list[int], start_s: float | None = None,
                        end_s: float | None = None) -> ClipPlan:
    """A ClipPlan sampling the video's frames ``positions`` (indices into ``info.frame_times``).

    Each sample's end time is the next frame's start (or the video's end). The clip spans
    ``[start_s, end_s]``, by default from the first sample's start to the latest sample's end.
    """
    if not positions:
        raise ValueError("a clip needs at least one sampled frame")
    times = info.frame_times
    last = len(times) - 1
    bad = [p for p in positions if not 0 <= p <= last]
    if bad:
        raise ValueError(f"frame positions {bad[:3]} are outside 0..{last} of {info.uri}")
    starts = tuple(float(times[p]) for p in positions)
    ends = tuple(float(times[p + 1]) if p + 1 < len(times) else float(info.duration_s) for p in positions)
    return ClipPlan(video_id=info.video_id, uri=info.uri, clip_index=clip_index,
                    start_s=starts[0] if start_s is None else float(start_s),
                    end_s=max(ends) if end_s is None else float(end_s),
                    sample_frame_indices=tuple(positions), sample_times=starts, sample_end_times=ends)


def clip_from_window(info: VideoInfo, clip_index: int, start_s: float, end_s: float,
                     num_frames: int) -> ClipPlan | None:
    """The clip covering the frames that start in [start_s, end_s), sampled by PLM's loader rule."""
    times = info.frame_times
    first = int(np.searchsorted(times, start_s - 1e-6, side="left"))
    stop = int(np.searchsorted(times, end_s - 1e-6, side="left"))
    if stop <= first:
        return None
    picks = plm_loader_positions(first, stop - first, clip_average_fps(info, first, stop), num_frames)
    return clip_from_positions(info, clip_index, picks, start_s, end_s)


def plan_clips(info: VideoInfo, spec: ClipSpec, num_frames: int,
               scene_cuts: list[float] | None = None) -> list[ClipPlan]:
    """All clips of a video. ``scene_cuts`` (seconds) are needed in ``scenes`` mode."""
    if spec.mode == "fixed":
        windows = fixed_windows(info.duration_s, spec.window_s)
    else:
        bounds = [0.0, *sorted(c for c in (scene_cuts or []) if 0.0 < c < info.duration_s), info.duration_s]
        windows = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        windows = merge_short(windows, spec.min_clip_s)
        windows = split_long(windows, spec.max_clip_s)
    clips: list[ClipPlan] = []
    for start, end in windows:
        clip = clip_from_window(info, len(clips), start, end, num_frames)
        if clip is not None:
            clips.append(clip)
    return clips


def merge_short(windows: list[tuple[float, float]], min_s: float) -> list[tuple[float, float]]:
    """Merge windows shorter than ``min_s`` into their neighbour (the previous one if any)."""
    merged: list[list[float]] = []
    for start, end in windows:
        if merged and (end - start < min_s or merged[-1][1] - merged[-1][0] < min_s):
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def plan_video(info: VideoInfo, spec: ClipSpec, num_frames: int, questions: tuple[Question, ...] = ()) -> list[ClipPlan]:
    """A probed video's clips, with their regions and questions: what the plan stage emits, without Beam.

    Scene mode reads the video for its cuts first. Raises ValueError when no clip can be planned.
    """
    cuts = None
    if spec.mode == "scenes":
        from transforms.plan.scenes import detect_scene_cuts

        cuts = detect_scene_cuts(info.uri, spec.scene_threshold)
    clips = annotate_clips(info, plan_clips(info, spec, num_frames, cuts), questions)
    if not clips:
        raise ValueError("no clip could be planned: the video has no frames in range")
    return clips
