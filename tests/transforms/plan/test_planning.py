"""Clip planning on real probed videos: PLM's sampling rule, fixed windows, VFR and scenes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.sampling import plm_frame_indices
from schemas.config import ClipSpec
from schemas.records import ClipPlan, VideoInfo, VideoInput
from transforms.plan.planning import (
    fixed_windows,
    merge_short,
    plan_clips,
    split_long,
)
from transforms.plan.scenes import detect_scene_cuts
from transforms.probe.probing import probe_video

FrameTimes = Callable[[Path | str], np.ndarray]


def probe(path: Path) -> VideoInfo:
    return probe_video(VideoInput(uri=str(path)))


def plm_rule(m: int, n: int) -> list[int]:
    """PLM's uniform rule, written out independently of the code under test."""
    return [int(np.round(i * (m - 1) / (n - 1))) for i in range(n)]


def frames_in(times: np.ndarray, start: float, end: float) -> np.ndarray:
    """Indices of the frames whose start time lies in [start, end)."""
    return np.flatnonzero((times >= start - 1e-6) & (times < end - 1e-6))


def check_clip_against_times(clip: ClipPlan, times: np.ndarray, duration: float, n: int) -> None:
    """A clip samples PLM's way among the real frames of its window, with real times."""
    available = frames_in(times, clip.start_s, clip.end_s)
    expected = [int(available[k]) for k in plm_rule(len(available), n)]
    assert list(clip.sample_frame_indices) == expected
    assert clip.sample_times == pytest.approx([times[i] for i in expected], abs=2e-6)
    ends = [times[i + 1] if i + 1 < len(times) else duration for i in expected]
    assert clip.sample_end_times == pytest.approx(ends, abs=2e-6)


@pytest.mark.parametrize("m", [1, 2, 5, 20, 31, 32, 33, 64, 300, 1799])
def test_plm_frame_indices_follow_plm_rule(m: int) -> None:
    picks = plm_frame_indices(m, 32)
    assert picks == plm_rule(m, 32)
    assert len(picks) == 32
    assert picks[0] == 0 and picks[-1] == m - 1
    assert picks == sorted(picks)
    if m >= 32:
        assert len(set(picks)) == 32  # no repeats when there are enough frames
    else:
        assert len(set(picks)) == m  # every frame used, some repeated


@pytest.mark.parametrize(("m", "n"), [(1, 1), (10, 1), (1, 8), (7, 8), (100, 16)])
def test_plm_frame_indices_other_sample_counts(m: int, n: int) -> None:
    expected = [0] if n == 1 else plm_rule(m, n)
    assert plm_frame_indices(m, n) == expected


def test_plm_frame_indices_need_a_frame() -> None:
    with pytest.raises(ValueError):
        plm_frame_indices(0, 32)


def test_fixed_windows() -> None:
    assert fixed_windows(10.0, 4.0) == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert fixed_windows(8.0, 4.0) == [(0.0, 4.0), (4.0, 8.0)]  # no empty trailing window
    assert fixed_windows(3.0, 30.0) == [(0.0, 3.0)]
    windows = fixed_windows(0.9, 0.3)  # 0.9 / 0.3 is 3.0000000000000004 in floating point
    assert len(windows) == 3 and windows[-1][1] == pytest.approx(0.9, abs=1e-12)


def test_fixed_plan_of_a_real_video(main_video: Path) -> None:
    info = probe(main_video)
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=4.0), 32)
    assert [(c.start_s, c.end_s) for c in clips] == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert [c.clip_index for c in clips] == [0, 1, 2]
    for clip in clips:
        assert clip.video_id == info.video_id and clip.uri == info.uri
        assert len(clip.sample_times) == 32
        check_clip_against_times(clip, info.frame_times, info.duration_s, 32)
    # The last, shorter window has 60 frames, the others 120.
    assert clips[0].sample_frame_indices[-1] == 119
    assert clips[2].sample_frame_indices[0] == 240 and clips[2].sample_frame_indices[-1] == 299
    assert clips[2].sample_end_times[-1] == pytest.approx(info.duration_s)


def test_short_video_is_one_clip_with_repeated_frames(short_video: Path) -> None:
    info = probe(short_video)
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=30.0), 32)
    assert len(clips) == 1
    clip = clips[0]
    assert (clip.start_s, clip.end_s) == (0.0, pytest.approx(info.duration_s))
    assert list(clip.sample_frame_indices) == plm_rule(20, 32)
    assert len(clip.sample_times) == 32 and len(set(clip.sample_times)) == 20


def test_vfr_clips_use_real_timestamps(vfr_video: Path, ffprobe_times: FrameTimes) -> None:
    info = probe(vfr_video)
    real = ffprobe_times(vfr_video)
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=3.0), 32)
    assert [(c.start_s, c.end_s) for c in clips] == [(0.0, 3.0), (3.0, pytest.approx(4.0))]
    for clip in clips:
        check_clip_against_times(clip, real, info.duration_s, 32)
    # [0, 3) holds 60 frames at 30 fps and 10 at 10 fps; t * fps would count ~61 at the average rate.
    assert len(frames_in(real, 0.0, 3.0)) == 70
    assert round(3.0 * info.fps) != 70
    first, second = clips
    assert first.sample_frame_indices[-1] == 69
    assert first.sample_times[-1] == pytest.approx(2.9, abs=1e-6)
    # The second clip has only 10 frames (3.0, 3.1, ... 3.9), each sampled 3-4 times.
    assert sorted(set(second.sample_times)) == pytest.approx([3.0 + k / 10 for k in range(10)], abs=1e-6)
    naive = [int(round(t * info.fps)) for t in second.sample_times]
    assert list(second.sample_frame_indices) != naive


def test_detect_scene_cuts_finds_the_shot_boundaries(scenes_video: Path) -> None:
    cuts = detect_scene_cuts(str(scenes_video))
    assert len(cuts) == 2
    assert cuts == pytest.approx([2.0, 4.0], abs=0.1)


def test_scene_cuts_of_a_tar_member_are_those_of_its_file(scenes_video: Path, tmp_path: Path) -> None:
    import tarfile

    with tarfile.open(tmp_path / "shard.tar", "w") as archive:
        archive.add(scenes_video, "scenes.mp4")
    assert detect_scene_cuts(f"{tmp_path}/shard.tar#scenes.mp4") == detect_scene_cuts(str(scenes_video))


def test_scenes_plan_follows_the_cuts(scenes_video: Path) -> None:
    info = probe(scenes_video)
    cuts = detect_scene_cuts(str(scenes_video))
    spec = ClipSpec(mode="scenes", min_clip_s=0.5, max_clip_s=60.0)
    clips = plan_clips(info, spec, 32, cuts)
    assert [(c.start_s, c.end_s) for c in clips] == [(0.0, cuts[0]), (cuts[0], cuts[1]),
                                                       (cuts[1], pytest.approx(info.duration_s))]
    for clip in clips:
        check_clip_against_times(clip, info.frame_times, info.duration_s, 32)
    # Long scenes are split; short ones merged into their neighbour.
    split = plan_clips(info, ClipSpec(mode="scenes", min_clip_s=0.5, max_clip_s=1.0), 32, cuts)
    assert len(split) == 6
    assert all(c.end_s - c.start_s <= 1.0 + 1e-9 for c in split)
    extra_cut = cuts[0] + 0.3  # a 0.3 s sliver after the first cut is merged into the first scene
    merged = plan_clips(info, ClipSpec(mode="scenes", min_clip_s=1.0, max_clip_s=60.0), 32,
                        [cuts[0], extra_cut, cuts[1]])
    assert [(c.start_s, c.end_s) for c in merged] == [(0.0, extra_cut), (extra_cut, cuts[1]),
                                                        (cuts[1], pytest.approx(info.duration_s))]
    # Every scene shorter than min_clip_s: they all merge into one clip.
    whole = plan_clips(info, ClipSpec(mode="scenes", min_clip_s=2.5, max_clip_s=60.0), 32, cuts)
    assert [(c.start_s, c.end_s) for c in whole] == [(0.0, pytest.approx(info.duration_s))]
    # Cuts outside the video are ignored.
    assert [(c.start_s, c.end_s) for c in plan_clips(info, spec, 32, [-1.0, *cuts, 99.0])] == \
        [(c.start_s, c.end_s) for c in clips]


def test_merge_short() -> None:
    assert merge_short([(0.0, 3.0), (3.0, 3.5), (3.5, 8.0)], 2.0) == [(0.0, 3.5), (3.5, 8.0)]
    assert merge_short([(0.0, 0.5), (0.5, 6.0)], 2.0) == [(0.0, 6.0)]
    assert merge_short([(0.0, 1.0), (1.0, 1.5), (1.5, 5.0), (5.0, 5.3)], 2.0) == [(0.0, 5.3)]
    long_enough = [(0.0, 2.0), (2.0, 4.0), (4.0, 7.0)]
    assert merge_short(long_enough, 2.0) == long_enough
    assert merge_short([], 2.0) == []


def test_split_long() -> None:
    parts = split_long([(0.0, 10.0)], 4.0)
    assert len(parts) == 3
    assert [b - a for a, b in parts] == pytest.approx([10 / 3] * 3)
    assert parts[0][0] == 0.0 and parts[-1][1] == 10.0
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(parts, parts[1:], strict=False))
    assert split_long([(0.0, 8.0)], 4.0) == [(0.0, 4.0), (4.0, 8.0)]
    assert split_long([(1.0, 2.0), (2.0, 2.5)], 4.0) == [(1.0, 2.0), (2.0, 2.5)]
