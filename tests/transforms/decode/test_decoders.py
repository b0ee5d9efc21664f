"""The PyAV and decord decoders on real videos, and FrameCollector's clip-by-clip release."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.media import ffmpeg_binary
from schemas.config import ClipSpec, DecodeConfig
from schemas.records import ClipFrames, VideoClips, VideoInput
from transforms.decode.backends import decoder_for
from transforms.decode.base import DecodeError, DecodeTimeout, FrameCollector
from transforms.decode.frames import FrameImages, resize_exact
from transforms.plan.planning import plan_clips
from transforms.probe.probing import probe_video

BACKENDS = ["pyav", "decord"]
SIZE = 448
N = 32


@dataclass
class Outcome:
    """What decoding a planned video produced: the clips yielded, then the error, if any."""

    video: VideoClips
    clips: list[ClipFrames]
    error: DecodeError | None


def plan(path: Path, window_s: float, num_frames: int = N) -> VideoClips:
    info = probe_video(VideoInput(uri=str(path)))
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=window_s), num_frames)
    return VideoClips(info=info, clips=tuple(clips))


def run_decoder(video: VideoClips, config: DecodeConfig) -> Outcome:
    clips: list[ClipFrames] = []
    try:
        for clip_frames in decoder_for(config).decode(video, config):
            clips.append(clip_frames)
    except DecodeError as exc:
        return Outcome(video, clips, exc)
    return Outcome(video, clips, None)


@pytest.fixture(scope="module")
def decode() -> Callable[..., Outcome]:
    """Decode a video once per (file, window, settings) for the whole module: decord runs cost seconds."""
    cache: dict[tuple, Outcome] = {}

    def run(path: Path, backend: str, window_s: float = 4.0, **settings: Any) -> Outcome:
        key = (str(path), backend, window_s, tuple(sorted(settings.items())))
        if key not in cache:
            config = DecodeConfig(backend=backend, **settings)
            cache[key] = run_decoder(plan(path, window_s, config.num_frames), config)
        return cache[key]

    return run


def ffmpeg_frames(path: Path, autorotate: bool = True) -> np.ndarray:
    """Every frame of ``path`` as FFmpeg itself decodes it (autorotated by default), full resolution."""
    ffprobe = str(Path(ffmpeg_binary()).with_name("ffprobe"))
    out = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json",
                          str(path)], check=True, capture_output=True).stdout
    stream = json.loads(out)["streams"][0]
    width, height = stream["width"], stream["height"]
    rotation = next((int(d["rotation"]) for d in stream.get("side_data_list", []) if "rotation" in d), 0)
    if autorotate and rotation % 180:
        width, height = height, width
    command = [ffmpeg_binary(), "-loglevel", "error", *([] if autorotate else ["-noautorotate"]), "-i", str(path),
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-fps_mode", "passthrough", "-"]
    raw = subprocess.run(command, check=True, capture_output=True).stdout
    frames = np.frombuffer(raw, dtype=np.uint8).copy()  # writable, as decoded frames are
    assert frames.size % (width * height * 3) == 0
    return frames.reshape(-1, height, width, 3)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("video_name", ["main_video", "vfr_video"])
def test_frames_and_sample_times(backend: str, video_name: str, decode: Callable[..., Outcome],
                                 request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(video_name)
    outcome = decode(path, backend)
    assert outcome.error is None
    planned = outcome.video.clips
    assert len(planned) >= 1
    assert [c.clip.clip_index for c in outcome.clips] == [c.clip_index for c in planned]
    for clip_frames, clip in zip(outcome.clips, planned, strict=True):
        assert clip_frames.frames.shape == (N, SIZE, SIZE, 3)
        assert clip_frames.frames.dtype == np.uint8
        assert clip_frames.clip.sample_frame_indices == clip.sample_frame_indices
        np.testing.assert_allclose(clip_frames.clip.sample_times, clip.sample_times, rtol=0, atol=1e-6)
        if backend == "pyav":
            assert clip_frames.clip == clip  # the very frames planned: nothing substituted


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_times_past_30_seconds(backend: str, long_video: Path, decode: Callable[..., Outcome]) -> None:
    outcome = decode(long_video, backend, window_s=30.0, frame_size=64)
    assert outcome.error is None
    assert len(outcome.clips) == len(outcome.video.clips) == 2
    for clip_frames, clip in zip(outcome.clips, outcome.video.clips, strict=True):
        used = np.asarray(clip_frames.clip.sample_times)
        wrong = np.flatnonzero(np.abs(used - np.asarray(clip.sample_times)) > 1e-4)
        assert wrong.size == 0, (f"clip {clip.clip_index}: samples {wrong.tolist()} used frames at "
                                 f"{used[wrong].tolist()} instead of {np.asarray(clip.sample_times)[wrong].tolist()}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_matches_ffmpeg_autorotation(backend: str, rotated_video: Path,
                                              decode: Callable[..., Outcome]) -> None:
    outcome = decode(rotated_video, backend)
    assert outcome.error is None
    info = outcome.video.info
    upright = ffmpeg_frames(rotated_video)  # FFmpeg applies the display matrix itself
    stored = ffmpeg_frames(rotated_video, autorotate=False)
    assert upright.shape == (info.num_frames, 320, 180, 3)
    assert stored.shape == (info.num_frames, 180, 320, 3)
    for clip_frames in outcome.clips:
        for slot in (0, N // 2, N - 1):
            index = clip_frames.clip.sample_frame_indices[slot]
            decoded = clip_frames.frames[slot]
            expected = resize_exact(upright[index], SIZE)
            # The comparison has teeth: the frame as stored (not rotated) is far from upright.
            assert mean_abs_diff(resize_exact(stored[index], SIZE), expected) > 20
            assert mean_abs_diff(decoded, expected) < 1.0, (clip_frames.clip.clip_index, slot)


@pytest.mark.parametrize("video_name", ["main_video", "vfr_video"])
def test_backends_agree(video_name: str, decode: Callable[..., Outcome], request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(video_name)
    pyav, decord = decode(path, "pyav"), decode(path, "decord")
    assert pyav.error is None and decord.error is None
    assert len(pyav.clips) == len(decord.clips)
    worst = 0.0
    for a, b in zip(pyav.clips, decord.clips, strict=True):
        np.testing.assert_allclose(a.clip.sample_times, b.clip.sample_times, rtol=0, atol=1e-6)
        worst = max(worst, max(mean_abs_diff(x, y) for x, y in zip(a.frames, b.frames, strict=True)))
    print(f"{video_name}: worst per-frame mean abs difference pyav vs decord = {worst:.4f}")
    assert worst < 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_file_pads_or_raises(backend: str, truncated_video: Path,
                                       decode: Callable[..., Outcome]) -> None:
    # A generous limit: the test is that decoding ends (padded clips or DecodeError), never hangs.
    outcome = decode(truncated_video, backend, timeout_s=60.0)
    planned = outcome.video.clips
    assert len(planned) == 2  # the truncated file still probes to about 4.5 s
    if outcome.error is None:
        assert len(outcome.clips) == len(planned)
    else:
        assert len(outcome.clips) < len(planned)
        assert not isinstance(outcome.error, DecodeTimeout)
    for clip_frames in outcome.clips:
        assert clip_frames.frames.shape == (N, SIZE, SIZE, 3)
        times = clip_frames.clip.sample_times
        assert list(times) == sorted(times)
        assert all(e >= t for t, e in zip(times, clip_frames.clip.sample_end_times, strict=True))
        padded = [i for i in range(1, N) if times[i] == times[i - 1]]
        for i in padded:
            np.testing.assert_array_equal(clip_frames.frames[i], clip_frames.frames[i - 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_time_limit_raises_decode_timeout(backend: str, main_video: Path) -> None:
    config = DecodeConfig(backend=backend, timeout_s=0.001)
    outcome = run_decoder(plan(main_video, 4.0), config)
    assert isinstance(outcome.error, DecodeTimeout)
    assert "limit" in str(outcome.error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_frame_cap_raises_decode_timeout(backend: str, short_video: Path,
                                              decode: Callable[..., Outcome]) -> None:
    outcome = decode(short_video, backend, max_decoded_frames=5)
    assert isinstance(outcome.error, DecodeTimeout)
    assert outcome.clips == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoder_resize_mode_close_to_exact(backend: str, vfr_video: Path,
                                            decode: Callable[..., Outcome]) -> None:
    exact, fast = decode(vfr_video, backend), decode(vfr_video, backend, resize="decoder")
    assert exact.error is None and fast.error is None
    diffs = np.concatenate([np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16)).ravel()
                            for a, b in zip(exact.clips, fast.clips, strict=True)])
    for a, b in zip(exact.clips, fast.clips, strict=True):
        assert b.frames.shape == a.frames.shape and b.clip.sample_times == pytest.approx(a.clip.sample_times)
    print(f"{backend}: decoder resize vs exact: mean abs diff {diffs.mean():.3f}, max {diffs.max()}")
    assert 0 < diffs.mean() < 4.0  # different pixels, but close


def test_pyav_releases_each_clip_before_decoding_on(main_video: Path) -> None:
    video = plan(main_video, 4.0)
    first_clip_last_frame = video.clips[0].sample_frame_indices[-1]
    second_clip_last_frame = video.clips[1].sample_frame_indices[-1]
    # A frame cap that clip 0 fits under but clip 1 does not: clip 0 must come out before
    # the decoder reaches the cap, so the generator is lazy and holds one clip at a time.
    cap = first_clip_last_frame + 11
    assert cap < second_clip_last_frame
    config = DecodeConfig(backend="pyav", max_decoded_frames=cap)
    frames = decoder_for(config).decode(video, config)
    first = next(frames)
    assert first.clip.clip_index == 0
    assert first.frames.shape == (N, SIZE, SIZE, 3)
    with pytest.raises(DecodeTimeout, match="frame cap"):
        next(frames)


# FrameCollector, fed with real frame times and tiny frames that carry their own index.


def tagged(index: int) -> FrameImages:
    """A one-pixel "frame" whose value is its index, already at the (1x1) target size."""
    pixel = np.array([[index]], dtype=np.int64)
    return FrameImages(lambda: pixel, size=1, plain=lambda: pixel)


@pytest.fixture(scope="module")
def main_plan(main_video: Path) -> VideoClips:
    return plan(main_video, 4.0)


def feed(collector: FrameCollector, times: np.ndarray, indices: range | list[int]) -> dict[int, tuple[int, ClipFrames]]:
    """Offer frames like a decoder would; note the frame index at which each clip came out."""
    released: dict[int, tuple[int, ClipFrames]] = {}
    for index in indices:
        collector.tick()
        t = float(times[index])
        if collector.wants(t):
            for clip_frames in collector.offer(t, tagged(index)):
                released[clip_frames.clip.clip_index] = (index, clip_frames)
    return released


def test_frame_collector_releases_each_clip_at_its_last_sample(main_plan: VideoClips) -> None:
    collector = FrameCollector(main_plan, DecodeConfig())
    times = main_plan.info.frame_times
    released = feed(collector, times, range(len(times)))
    assert collector.done and collector.next_time() is None
    assert sorted(released) == [c.clip_index for c in main_plan.clips]
    for clip in main_plan.clips:
        at, clip_frames = released[clip.clip_index]
        assert at == clip.sample_frame_indices[-1]  # out as soon as complete, not at the end
        assert clip_frames.clip == clip
        assert clip_frames.frames[:, 0, 0].tolist() == list(clip.sample_frame_indices)


def test_frame_collector_replaces_a_dropped_frame_with_the_next(main_plan: VideoClips) -> None:
    collector = FrameCollector(main_plan, DecodeConfig())
    times = main_plan.info.frame_times
    clip = main_plan.clips[0]
    dropped = clip.sample_frame_indices[5]
    released = feed(collector, times, [i for i in range(len(times)) if i != dropped])
    _, clip_frames = released[0]
    assert clip_frames.frames[5, 0, 0] == dropped + 1
    assert clip_frames.clip.sample_times[5] == times[dropped + 1]
    assert clip_frames.clip.sample_end_times[5] >= times[dropped + 1]
    assert clip_frames.clip.sample_times[:5] == clip.sample_times[:5]
    assert released[1][1].clip == main_plan.clips[1]


def test_frame_collector_pads_at_end_of_stream(main_plan: VideoClips) -> None:
    collector = FrameCollector(main_plan, DecodeConfig())
    times = main_plan.info.frame_times
    last_clip = main_plan.clips[-1]
    stop = last_clip.sample_frame_indices[10]  # the stream ends inside the last clip
    released = feed(collector, times, range(stop + 1))
    assert sorted(released) == [0, 1]
    padded = list(collector.finish((float(times[stop]), tagged(stop))))
    assert len(padded) == 1 and collector.done
    frames = padded[0].frames[:, 0, 0].tolist()
    assert frames[:11] == list(last_clip.sample_frame_indices[:11])
    assert frames[11:] == [stop] * (N - 11)


def test_frame_collector_reports_clips_lost_to_truncation(main_plan: VideoClips) -> None:
    collector = FrameCollector(main_plan, DecodeConfig())
    times = main_plan.info.frame_times
    stop = main_plan.clips[1].sample_frame_indices[3]  # clip 1 partly, clip 2 not at all
    feed(collector, times, range(stop + 1))
    finished = collector.finish((float(times[stop]), tagged(stop)))
    padded = next(finished)
    assert padded.clip.clip_index == 1
    with pytest.raises(DecodeError, match="before clip 2"):
        next(finished)
    with pytest.raises(DecodeError, match="before any planned frame"):
        list(FrameCollector(main_plan, DecodeConfig()).finish(None))


def test_frame_collector_frame_cap(main_plan: VideoClips) -> None:
    collector = FrameCollector(main_plan, DecodeConfig(max_decoded_frames=3))
    for _ in range(3):
        collector.tick()
    with pytest.raises(DecodeTimeout, match="frame cap"):
        collector.tick()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tar_member_decodes_as_its_own_file(backend: str, short_video: Path, tmp_path: Path,
                                              decode: Callable[..., Outcome]) -> None:
    import tarfile

    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as archive:
        archive.add(short_video, "first/short.mp4")
    member = plan(Path(f"{shard}#first/short.mp4"), 4.0)
    from_member = run_decoder(member, DecodeConfig(backend=backend))
    from_file = decode(short_video, backend)
    assert from_member.error is None and len(from_member.clips) == len(from_file.clips) > 0
    for ours, theirs in zip(from_member.clips, from_file.clips, strict=True):
        assert ours.clip.sample_times == theirs.clip.sample_times
        assert np.array_equal(ours.frames, theirs.frames)
