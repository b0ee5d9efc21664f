"""The per-video decode limit bounds decoding alone, and decord's failures name the video.

A consumer that holds each clip (inference of earlier clips) longer than the whole limit must not
fail a healthy video; the decode child's start does not count either. A truly stuck decode (a
FIFO nobody writes: a real hang inside FFmpeg's native open) still ends at the limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.media import make_video
from schemas.config import ClipSpec, DecodeConfig
from schemas.records import ClipFrames, VideoClips, VideoInput
from transforms.decode import DecodeError, DecodeTimeout, decoder_for
from transforms.decode.decord_backend import DecordDecoder
from transforms.decode.isolated import IsolatedDecoder
from transforms.plan import plan_clips
from transforms.probe import probe_video

LIMIT_S = 6.0
CONSUMER_HOLD_S = 2.5  # per clip; four clips hold the decoder 10 s, well past the 6 s limit
FRAMES = 4


@pytest.fixture(scope="module")
def four_clip_video(tmp_path_factory: pytest.TempPathFactory) -> VideoClips:
    path = tmp_path_factory.mktemp("limit") / "four.mp4"
    make_video(str(path), "testsrc=size=160x120:rate=10", 12)
    info = probe_video(VideoInput(str(path)))
    clips = tuple(plan_clips(info, ClipSpec.parse("fixed:3"), FRAMES))
    assert len(clips) == 4
    return VideoClips(info, clips)


def slow_consumer(clips: Iterator[ClipFrames]) -> list[ClipFrames]:
    """Take each clip and hold the decoder for a while, as inference of that clip would."""
    taken = []
    for clip in clips:
        taken.append(clip)
        time.sleep(CONSUMER_HOLD_S)
    return taken


def test_a_slow_consumer_behind_a_fast_isolated_decode_does_not_time_out(four_clip_video: VideoClips) -> None:
    config = DecodeConfig(num_frames=FRAMES, timeout_s=LIMIT_S)
    decoder = IsolatedDecoder()  # not started: the child's start must not count either
    try:
        started = time.monotonic()
        clips = slow_consumer(decoder.decode(four_clip_video, config))
        assert time.monotonic() - started > LIMIT_S  # the consumer alone outlasted the limit
    finally:
        decoder.close()
    direct = list(decoder_for(config).decode(four_clip_video, config))
    assert [c.clip for c in clips] == [c.clip for c in direct]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(clips, direct, strict=True))


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_a_slow_consumer_behind_an_in_process_decode_does_not_time_out(four_clip_video: VideoClips,
                                                                       backend: str) -> None:
    config = DecodeConfig(backend=backend, num_frames=FRAMES, timeout_s=LIMIT_S, isolation="none")
    clips = slow_consumer(decoder_for(config).decode(four_clip_video, config))
    assert [c.clip.clip_index for c in clips] == [0, 1, 2, 3]


def test_a_stuck_decode_after_a_slow_consumer_still_ends_at_the_limit(tmp_path: Path,
                                                                      four_clip_video: VideoClips) -> None:
    fifo = tmp_path / "stuck.mp4"
    os.mkfifo(fifo)  # nobody writes: opening it blocks inside FFmpeg's native code for ever
    stuck = VideoClips(replace(four_clip_video.info, uri=str(fifo)), four_clip_video.clips)
    config = DecodeConfig(num_frames=FRAMES, timeout_s=LIMIT_S)
    decoder = IsolatedDecoder()
    try:
        assert len(slow_consumer(decoder.decode(four_clip_video, config))) == 4
        started = time.monotonic()
        with pytest.raises(DecodeTimeout, match="killed"):
            slow_consumer(decoder.decode(stuck, config))
        assert LIMIT_S <= time.monotonic() - started < 60
    finally:
        decoder.close()


def test_decord_errors_name_the_video_without_native_noise(tmp_path: Path, four_clip_video: VideoClips) -> None:
    garbage = tmp_path / "not really.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    video = VideoClips(replace(four_clip_video.info, uri=str(garbage)), four_clip_video.clips)
    with pytest.raises(DecodeError) as caught:
        list(DecordDecoder().decode(video, DecodeConfig(backend="decord", num_frames=FRAMES)))
    message = str(caught.value)
    assert str(garbage) in message
    assert ".cc:" not in message and "Stack trace" not in message and "\n" not in message


def test_decord_opens_a_name_that_is_not_utf8(tmp_path: Path, four_clip_video: VideoClips) -> None:
    from core.paths import uri_of_local_path

    odd = os.fsdecode(os.fsencode(tmp_path) + b"/odd\xff\x80.mp4")
    os.link(four_clip_video.info.uri, odd)
    video = VideoClips(replace(four_clip_video.info, uri=uri_of_local_path(odd)), four_clip_video.clips)
    config = DecodeConfig(backend="decord", num_frames=FRAMES)
    clips = list(DecordDecoder().decode(video, config))
    direct = list(DecordDecoder().decode(four_clip_video, config))
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(clips, direct, strict=True))
