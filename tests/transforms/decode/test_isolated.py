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


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_isolated_decode_equals_in_process_decode(main_video: Path, prefetch: int) -> None:
    video = planned(main_video)
    decoder = IsolatedDecoder()
    try:
        isolated = list(decoder.decode(video, DecodeConfig(num_frames=8, prefetch_clips=prefetch)))
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


@pytest.mark.parametrize(("prefetch", "sent_ahead"), [(0, False), (1, True)])
def test_the_child_decodes_ahead_only_as_far_as_allowed(main_video: Path, prefetch: int, sent_ahead: bool) -> None:
    # Lockstep (0, a CPU-only worker's default) keeps the child idle while the parent works on a clip,
    # so decoding never takes the cores the model runs on; with 1 the next clip is already on its way.
    video = planned(main_video)
    assert len(video.clips) >= 2
    decoder = IsolatedDecoder()
    try:
        clips = decoder.decode(video, DecodeConfig(num_frames=8, prefetch_clips=prefetch))
        first = next(clips)
        assert first.clip == video.clips[0]
        assert decoder._results.poll(5) is sent_ahead  # noqa: SLF001 - the pipe is what is observed
        rest = list(clips)
        assert [c.clip for c in rest] == list(video.clips[1:])
    finally:
        decoder.close()


def test_prefetch_defaults_to_lockstep_without_a_gpu() -> None:
    import torch

    from transforms.decode.isolated import prefetch_clips

    assert prefetch_clips(DecodeConfig()) == (1 if torch.cuda.is_available() else 0)
    assert prefetch_clips(DecodeConfig(prefetch_clips=3)) == 3


def test_the_decode_process_imports_no_beam_or_torchvision() -> None:
    # Whatever the child imports it pays for at every start, on the cores the model runs on: Beam
    # cost it 0.7 s of CPU, torchvision about 2 s (its exact resize needs torch alone).
    import subprocess
    import sys

    code = ("import sys; from transforms.decode.isolated import _serve; "
            "from transforms.decode.backends import decoder_for; from schemas.config import DecodeConfig; "
            "decoder_for(DecodeConfig(backend='pyav')); "
            "print(sorted(m for m in ('apache_beam', 'torchvision', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"
