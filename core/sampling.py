"""Which frames PLM sees: its uniform thinning rule and the loaders built on it.

Pure index arithmetic (no decoding), shared by clip planning (``transforms/plan``) and the
benchmark's per-task sampling (``tasks/``), so both read one definition of each rule.

- ``plm_frame_indices``: PLM's uniform rule ``round(i * (m - 1) / (n - 1))``, repeating frames
  when fewer than ``n`` are available (the project's choice for short clips: PLM always sees ``n``).
- ``plm_loader_positions``: perception_models' ``VideoTransform.load_video``
  (``core/transforms/video_transform.py``): candidates every ``round(fps / sampling_fps)`` frames,
  thinned by the uniform rule; with fewer than ``n`` candidates the rule runs over every frame.
- ``uniform_or_all``: lmms-eval's ``load_video_uniform``: every frame when there are ``n`` or fewer.
"""

from __future__ import annotations


def plm_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """PLM's uniform rule: ``round(i * (m - 1) / (n - 1))`` for i = 0..n-1 (Python's round).

    The first and last frames are always included; with fewer than ``n`` frames available some
    repeat, so PLM still sees ``n`` frames.
    """
    if num_available < 1:
        raise ValueError("a clip needs at least one frame")
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    if num_frames == 1:
        return [0]
    return [int(round(i * (num_available - 1) / (num_frames - 1))) for i in range(num_frames)]


def loader_stride(fps: float, sampling_fps: float = 1.0) -> int:
    """Frames between two candidates of PLM's loader: ``int(round(fps / int(sampling_fps)))``, at least 1."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return max(1, int(round(float(fps) / int(sampling_fps))))


def plm_loader_positions(first: int, count: int, fps: float, num_frames: int, *, sampling_fps: float = 1.0,
                         repeat_short: bool = True) -> list[int]:
    """perception_models' loader over the ``count`` frames ``first..first+count-1``.

    Candidates step every ``loader_stride(fps)`` frames from ``first`` (1 fps by default). More
    than ``num_frames`` candidates are thinned by the uniform rule; exactly ``num_frames`` are
    taken as they are; fewer, and the uniform rule runs over every frame of the range instead.
    When the range itself has fewer than ``num_frames`` frames the loader takes each once
    (``repeat_short=False``); the index repeats frames instead so PLM always sees ``num_frames``.
    """
    if count < 1:
        raise ValueError("a clip needs at least one frame")
    candidates = list(range(first, first + count, loader_stride(fps, sampling_fps)))
    if len(candidates) > num_frames:
        return [candidates[i] for i in plm_frame_indices(len(candidates), num_frames)]
    if len(candidates) == num_frames:
        return candidates
    if count < num_frames and not repeat_short:
        return [first + i for i in plm_frame_indices(count, count)]
    return [first + i for i in plm_frame_indices(count, num_frames)]


def uniform_or_all(first: int, count: int, num_frames: int) -> list[int]:
    """lmms-eval's ``load_video_uniform`` (SGQA): the uniform rule, or every frame when ``count <= n``."""
    if count < 1:
        raise ValueError("no frames to sample")
    if count <= num_frames:
        return list(range(first, first + count))
    return [first + i for i in plm_frame_indices(count, num_frames)]
