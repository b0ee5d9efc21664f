"""Sparse decoding: only what the sampled frames need is decoded, and the sampled pixels do not change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.media import decoded_frames, make_video
from schemas.config import ClipSpec, DecodeConfig
from schemas.records import ClipFrames, VideoClips, VideoInput
from transforms.decode.backends import decoder_for
from transforms.decode.sparse import SparseStats, sparse_decoded_frames
from transforms.plan.planning import plan_clips
from transforms.probe.probing import probe_video


@pytest.fixture(scope="module")
def short_gop_h264(video_dir: Path) -> Path:
    """6 s at 30 fps, h264 with B-frames and a keyframe every 15 frames (0.5 s)."""
    return Path(make_video(str(video_dir / "gop15_h264.mp4"), "testsrc2=size=320x240:rate=30", 6,
                           extra=["-g", "15", "-bf", "3"]))


@pytest.fixture(scope="module")
def short_gop_h265(video_dir: Path) -> Path:
    """6 s at 30 fps, h265 (x265's open GOPs) with a keyframe every 15 frames."""
    return Path(make_video(str(video_dir / "gop15_h265.mp4"), "testsrc2=size=320x240:rate=30", 6, codec="libx265",
                           extra=["-x265-params", "log-level=error:keyint=15:min-keyint=15"]))


def decode(path: Path, sparse: bool, window_s: float, num_frames: int) -> list[ClipFrames]:
    info = probe_video(VideoInput(uri=str(path)))
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=window_s), num_frames)
    config = DecodeConfig(backend="pyav", num_frames=num_frames, sparse=sparse)
    return list(decoder_for(config).decode(VideoClips(info=info, clips=tuple(clips)), config))


def assert_same_frames(path: Path, window_s: float, num_frames: int) -> list[ClipFrames]:
    full = decode(path, False, window_s, num_frames)
    sparse = decode(path, True, window_s, num_frames)
    assert len(sparse) == len(full) > 0
    for a, b in zip(full, sparse, strict=True):
        assert a.clip == b.clip  # the same frames used, at the same times
        assert a.frames.shape == b.frames.shape
        assert np.array_equal(a.frames, b.frames), f"clip {a.clip.clip_index} differs"
    return sparse


CASES = [("main_video", 4.0, 4), ("main_video", 10.0, 32), ("vfr_video", 1.0, 3), ("rotated_video", 1.0, 2),
         ("short_gop_h264", 2.0, 2), ("short_gop_h264", 6.0, 32), ("short_gop_h265", 2.0, 2),
         ("long_video", 30.0, 32)]


@pytest.mark.parametrize(("video_name", "window_s", "num_frames"), CASES,
                         ids=[f"{v}-{w:g}s-{n}" for v, w, n in CASES])
def test_sampled_frames_are_pixel_identical_to_a_full_decode(video_name: str, window_s: float, num_frames: int,
                                                            request: pytest.FixtureRequest) -> None:
    assert_same_frames(request.getfixturevalue(video_name), window_s, num_frames)


def frames_decoded(path: Path, window_s: float, num_frames: int) -> tuple[int, int, SparseStats]:
    """Frames a full pass decodes, frames the sparse pass decodes, and the sparse pass's stats."""
    info = probe_video(VideoInput(uri=str(path)))
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=window_s), num_frames)
    targets = np.asarray([t for clip in clips for t in clip.sample_times])
    stats = SparseStats()
    sparse = sum(1 for _ in sparse_decoded_frames(info.uri, info.first_pts, info.time_base, targets, info.frame_times,
                                                 info.keyframe_times, 1e-3, stats=stats))
    full = sum(1 for _ in decoded_frames(info.uri, info.first_pts, info.time_base))
    return full, sparse, stats


@pytest.mark.parametrize("video_name", ["short_gop_h264", "short_gop_h265"])
def test_whole_gops_between_samples_are_sought_over(video_name: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(video_name)
    full, sparse, stats = frames_decoded(path, 2.0, 2)  # one sample a second, keyframes every 0.5 s
    assert stats.seeks >= 3 and stats.fallbacks == 0
    assert sparse < full / 2, (sparse, full)
    assert stats.packets < full  # the GOPs sought over were never even read


def test_non_reference_frames_are_skipped_within_one_gop(main_video: Path) -> None:
    # x264's default GOP (250 frames, keyframes at 0 and 8.3 s): at most one seek, and unsampled
    # B-frames are left out.
    full, sparse, stats = frames_decoded(main_video, 10.0, 10)
    assert stats.seeks <= 1
    assert stats.skippable_packets > 0
    assert sparse < full - (full - stats.packets) - 10, (sparse, full, stats.packets)


def test_keyframes_come_from_the_probe(short_gop_h264: Path, main_video: Path) -> None:
    info = probe_video(VideoInput(uri=str(short_gop_h264)))
    np.testing.assert_allclose(info.keyframe_times, np.arange(0, 6, 0.5), atol=1e-6)
    assert probe_video(VideoInput(uri=str(main_video))).keyframe_times.tolist()[0] == 0.0
