"""Clip planning samples each clip by PLM's loader rule, at every clip length, checked against oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.media import make_video
from schemas.config import ClipSpec
from schemas.records import VideoInfo, VideoInput
from tests.core.test_sampling import RATES, SECONDS, all_frames_oracle, loader_oracle, thin_oracle
from tests.transforms.conftest import ffprobe_frame_times
from transforms.plan.planning import plan_clips
from transforms.probe.probing import probe_video


def _info(frame_times: np.ndarray, duration_s: float) -> VideoInfo:
    fps = (len(frame_times) - 1) / frame_times[-1]
    return VideoInfo(uri="v.mp4", video_id="v", size_bytes=1, duration_s=duration_s, fps=fps,
                     num_frames=len(frame_times), width=8, height=8, rotation=0, codec="h264",
                     frame_times=frame_times)


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("fps", RATES)
def test_one_clip_videos_follow_the_loader(seconds: int, fps: int) -> None:
    frames = seconds * fps
    info = _info(np.arange(frames) / fps, seconds)
    (clip,) = plan_clips(info, ClipSpec.parse("fixed:60"), 32)
    assert list(clip.sample_frame_indices) == loader_oracle(frames, fps)
    if seconds >= 32:  # the previous rule (32 of all frames) differs from 32 s on
        assert list(clip.sample_frame_indices) != all_frames_oracle(frames)


def test_every_window_of_a_long_video_is_sampled_from_its_own_first_frame() -> None:
    fps, seconds = 25, 120
    info = _info(np.arange(seconds * fps) / fps, seconds)
    clips = plan_clips(info, ClipSpec.parse("fixed:45"), 32)
    assert [(c.start_s, c.end_s) for c in clips] == [(0, 45), (45, 90), (90, 120)]
    for clip in clips:
        first, count = int(clip.start_s * fps), int((clip.end_s - clip.start_s) * fps)
        assert list(clip.sample_frame_indices) == [first + p for p in loader_oracle(count, fps)]


def test_variable_frame_rate_uses_the_clips_average_rate() -> None:
    # 30 fps for 22.5 s, then 10 fps until 45 s: 900 frames over 45 s, 20 fps on average, so the
    # loader steps every 20 frames (by index, as the loader does, not by time).
    times = np.concatenate([np.arange(675) / 30, 22.5 + np.arange(225) / 10])
    (clip,) = plan_clips(_info(times, 45.0), ClipSpec.parse("fixed:60"), 32)
    assert list(clip.sample_frame_indices) == thin_oracle(list(range(0, 900, 20)))


@pytest.fixture(scope="module")
def real_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loader")
    cfr = Path(make_video(str(folder / "cfr.mp4"), "testsrc=size=64x48:rate=24", 32))
    vfr = Path(make_video(str(folder / "vfr.mp4"), "testsrc=size=64x48:rate=30,select='lt(t\\,22.5)+not(mod(n\\,3))'",
                          45, extra=["-fps_mode", "vfr"]))
    return {"cfr": cfr, "vfr": vfr}


@pytest.mark.parametrize("kind", ["cfr", "vfr"])
def test_real_videos_follow_the_loader(real_videos: dict[str, Path], kind: str) -> None:
    path = real_videos[kind]
    times = ffprobe_frame_times(path)
    info = probe_video(VideoInput(str(path)))
    (clip,) = plan_clips(info, ClipSpec.parse("fixed:60"), 32)
    average_fps = len(times) / info.duration_s
    assert list(clip.sample_frame_indices) == loader_oracle(len(times), average_fps)
    if kind == "cfr":
        assert list(clip.sample_frame_indices) == list(range(0, 768, 24))  # 32 candidates, taken as they are
    else:
        assert 19.5 < average_fps < 20.5
