"""The isolated decode process: a hard time limit even for a hang inside native code."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from schemas.config import ClipSpec, DecodeConfig
from schemas.records import VideoClips, VideoInput
from transforms.decode import DecodeTimeout, decoder_for
from transforms.decode.isolated import IsolatedDecoder
from transforms.plan import plan_clips
from transforms.probe import probe_video


def planned(path: Path) -> VideoClips:
    info = probe_video(VideoInput(str(path)))
    return VideoClips(info, tuple(plan_clips(info, ClipSpec.parse("fixed:5"), 8)))


def test_isolated_decode_equals_in_process_decode(main_video: Path) -> None:
    video = planned(main_video)
    decoder = IsolatedDecoder()
    try:
        isolated = list(decoder.decode(video, DecodeConfig(num_frames=8)))
    finally:
        decoder.close()
    direct = list(decoder_for(DecodeConfig(num_frames=8)).decode(video, DecodeConfig(num_frames=8)))
    assert [c.clip for c in isolated] == [c.clip for c in direct]
    assert all((a.frames == b.frames).all() for a, b in zip(isolated, direct, strict=True))


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_a_hang_in_native_code_is_killed_at_the_limit(tmp_path: Path, main_video: Path, backend: str) -> None:
    # A FIFO with no writer: opening it blocks inside FFmpeg's (or decord's) native open() for ever,
    # where no Python-level check can run. A real hang from a real file, no fake involved.
    fifo = tmp_path / "stuck.mp4"
    os.mkfifo(fifo)
    video = planned(main_video)
    stuck = VideoClips(replace(video.info, uri=str(fifo)), video.clips)
    decoder = IsolatedDecoder()
    try:
        started = time.monotonic()
        with pytest.raises(DecodeTimeout, match="killed"):
            list(decoder.decode(stuck, DecodeConfig(backend=backend, num_frames=8, timeout_s=8)))
        assert time.monotonic() - started < 60
        # The next video decodes normally in a fresh process.
        clips = list(decoder.decode(video, DecodeConfig(backend=backend, num_frames=8)))
        assert len(clips) == len(video.clips)
    finally:
        decoder.close()
