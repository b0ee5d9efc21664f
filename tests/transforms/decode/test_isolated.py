"""The isolated decode process: a hard time limit even for a hang inside native code."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import replace
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.config import ClipSpec, DecodeConfig
from schemas.records import ClipFrames, VideoClips, VideoInput
from schemas.rows import RunContext
from transforms.decode import DecodeTimeout, SampleFrames, decoder_for
from transforms.decode.isolated import (
    FrameBuffer,
    IsolatedDecoder,
    close_idle_decoders,
    give_back_decoder,
    idle_decoders,
    shared_file,
    start_decoders_ahead,
    take_decoder,
)
from transforms.plan import plan_clips
from transforms.probe import probe_video


def planned(path: Path, frames: int = 8) -> VideoClips:
    info = probe_video(VideoInput(str(path)))
    return VideoClips(info, tuple(plan_clips(info, ClipSpec.parse("fixed:5"), frames)))


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


def test_the_frame_buffer_hands_arrays_over_and_grows_for_a_larger_clip() -> None:
    # The child's and the parent's side, each with its own descriptor of the same shared file.
    fd = shared_file()
    writer, reader = FrameBuffer(fd), FrameBuffer(os.dup(fd))
    rng = np.random.default_rng(0)
    try:
        for shape in [(2, 5, 7, 3), (8, 448, 448, 3), (1, 3, 3, 3)]:  # the second needs the file to grow
            arrays = [rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, (3, 13, 1, 3), dtype=np.uint8),
                      np.zeros((0, 4, 4, 3), np.uint8)]
            got = reader.read(writer.write(arrays))
            assert [a.shape for a in got] == [a.shape for a in arrays]
            assert all(np.array_equal(a, b) for a, b in zip(got, arrays, strict=True))
            assert all(a.flags.owndata for a in got)  # copies: the next clip may overwrite the file
        assert os.fstat(fd).st_size >= 8 * 448 * 448 * 3
    finally:
        writer.close()
        reader.close()


def test_a_larger_clip_after_smaller_ones_crosses_intact(main_video: Path) -> None:
    # The child grows the shared file; the parent must map the new size before it reads.
    decoder = IsolatedDecoder()
    try:
        for frames in (4, 16):
            video, config = planned(main_video, frames), DecodeConfig(num_frames=frames)
            isolated = list(decoder.decode(video, config))
            direct = list(decoder_for(config).decode(video, config))
            assert [c.frames.shape[0] for c in isolated] == [frames] * len(video.clips)
            assert all(np.array_equal(a.frames, b.frames) for a, b in zip(isolated, direct, strict=True))
    finally:
        decoder.close()


def test_a_decoder_started_ahead_is_taken_used_and_kept_for_the_next_stage(main_video: Path) -> None:
    video, config = planned(main_video), DecodeConfig(num_frames=4)
    direct = list(decoder_for(config).decode(video, config))
    close_idle_decoders()
    start_decoders_ahead()
    [pid] = idle_decoders()
    taken = take_decoder()
    assert (taken.pid, idle_decoders()) == (pid, [])
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(taken.decode(video, config), direct, strict=True))
    give_back_decoder(taken)  # between videos: kept
    start_decoders_ahead()  # one is already idle: nothing new starts
    assert idle_decoders() == [pid]
    again = take_decoder()
    assert again is taken
    clips = again.decode(video, config)
    next(clips)
    give_back_decoder(again)  # mid-video: it may still be sending clips, so it is stopped, not kept
    assert (idle_decoders(), again.alive()) == ([], False)
    clips.close()


def test_a_dead_idle_decoder_is_replaced_and_idle_ones_are_closed() -> None:
    close_idle_decoders()
    start_decoders_ahead()
    [pid] = idle_decoders()
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while idle_decoders() and time.monotonic() < deadline:  # until the kill has landed
        time.sleep(0.05)
    fresh = take_decoder()
    try:
        assert fresh.alive() and fresh.pid != pid
    finally:
        fresh.close()
    start_decoders_ahead()
    assert close_idle_decoders() == 1 and idle_decoders() == []


@pytest.mark.parametrize(("variable", "reused"), [
    # A later build may point storage elsewhere: the child inherited the old environment when it
    # started, so it must not serve that build.
    ("AWS_ENDPOINT_URL", False),
    # scikit-learn sets this when the embedder loads, after the build started its decode process
    # ahead: that process must still be the one the decode stage takes.
    ("KMP_INIT_AT_FORK", True),
])
def test_an_idle_decoder_serves_only_the_environment_it_started_in(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                                   reused: bool) -> None:
    monkeypatch.delenv(variable, raising=False)
    close_idle_decoders()
    start_decoders_ahead()
    [pid] = idle_decoders()
    monkeypatch.setenv(variable, "http://127.0.0.1:1")
    taken = take_decoder()
    try:
        assert (taken.pid == pid, taken.started_here()) == (reused, True)
        assert idle_decoders() == []  # taken, or stopped as stale
    finally:
        taken.close()


def test_a_decode_stage_set_up_in_this_process_takes_the_idle_decoder(main_video: Path) -> None:
    # The embedded FnApiRunner sets the stage up in this process, where the build started one ahead.
    video = planned(main_video)
    run = RunContext(run_id="r", settings_hash="s", model_id="m", generation="{}", pipeline_version="v",
                     created_at=dt.datetime.now(dt.UTC))
    close_idle_decoders()
    start_decoders_ahead()
    [pid] = idle_decoders()
    with BeamTestPipeline(runner="FnApiRunner") as p:
        clips = (p | beam.Create([video]) | beam.ParDo(SampleFrames(DecodeConfig(num_frames=4), run))
                 | beam.Map(lambda c: c.clip.clip_index if isinstance(c, ClipFrames) else -1))
        assert_that(clips, equal_to([c.clip_index for c in video.clips]))
    kept = take_decoder()  # the stage gave it back at teardown
    try:
        assert (kept.pid, kept.videos) == (pid, 1)  # the very process started ahead decoded the video
    finally:
        kept.close()
