"""probe_video on real files made with FFmpeg, checked against ffprobe."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.media import ffmpeg_binary
from schemas.records import VideoInfo, VideoInput
from transforms.probe.probing import HASH_CHUNK, ProbeError, content_video_id, probe_video

FrameTimes = Callable[[Path | str], np.ndarray]


def probe(path: Path | str, extras_json: str = "{}") -> VideoInfo:
    return probe_video(VideoInput(uri=str(path), extras_json=extras_json))


def ffprobe_stream(path: Path) -> dict:
    """ffprobe's facts about the first video stream."""
    ffprobe = str(Path(ffmpeg_binary()).with_name("ffprobe"))
    out = subprocess.run([ffprobe, "-v", "error", "-of", "json", "-select_streams", "v:0", "-show_streams",
                          "-count_packets", str(path)], check=True, capture_output=True).stdout
    return json.loads(out)["streams"][0]


def test_probe_facts_of_a_plain_video(main_video: Path) -> None:
    info = probe(main_video, extras_json='{"k": 1}')
    stream = ffprobe_stream(main_video)
    assert info.uri == str(main_video)
    assert info.size_bytes == main_video.stat().st_size
    assert info.codec == stream["codec_name"] == "h264"
    assert (info.width, info.height) == (stream["width"], stream["height"]) == (640, 360)
    assert info.rotation == 0
    assert info.num_frames == int(stream["nb_read_packets"]) == 300  # 10 s at 30 fps
    assert info.fps == pytest.approx(30.0, abs=1e-6)
    assert info.duration_s == pytest.approx(10.0, abs=1e-6)
    assert info.frame_times.shape == (300,)
    assert info.frame_times[0] == 0.0
    assert np.all(np.diff(info.frame_times) > 0)
    assert info.extras_json == '{"k": 1}'
    # A decoded frame's time is (pts - first_pts) * time_base; the probe must make that consistent.
    assert info.time_base > 0
    assert info.first_pts >= 0


def test_rotation_swaps_width_and_height(rotated_video: Path) -> None:
    info = probe(rotated_video)
    stream = ffprobe_stream(rotated_video)
    # Stored 320x180 with a 90 degree display rotation: displayed 180 wide, 320 high.
    assert (stream["width"], stream["height"]) == (320, 180)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (180, 320)
    assert info.num_frames == 75
    assert info.duration_s == pytest.approx(3.0, abs=1e-6)


def test_short_video(short_video: Path) -> None:
    info = probe(short_video)
    assert info.num_frames == 20
    assert info.fps == pytest.approx(25.0, abs=1e-6)
    assert info.duration_s == pytest.approx(0.8, abs=1e-6)


def test_vfr_frame_times_equal_ffprobe(vfr_video: Path, ffprobe_times: FrameTimes) -> None:
    info = probe(vfr_video)
    expected = ffprobe_times(vfr_video)
    assert info.num_frames == len(expected) == 60 + 20
    # ffprobe prints pts_time to the microsecond.
    np.testing.assert_allclose(info.frame_times, expected, rtol=0, atol=2e-6)
    gaps = np.diff(info.frame_times)
    assert gaps[:59] == pytest.approx(np.full(59, 1 / 30), abs=1e-4)
    assert gaps[60:] == pytest.approx(np.full(19, 1 / 10), abs=1e-4)
    # The average rate over the whole file is neither 30 nor 10.
    assert info.fps == pytest.approx(79 / expected[-1], rel=1e-6)
    assert info.duration_s == pytest.approx(4.0, abs=1e-6)


def test_content_id_stable_under_copy_and_rename(main_video: Path, tmp_path: Path) -> None:
    copy = tmp_path / "renamed" / "other name.mp4"
    copy.parent.mkdir()
    shutil.copyfile(main_video, copy)
    assert probe(copy).video_id == probe(main_video).video_id


def test_content_id_differs_for_different_content(main_video: Path, short_video: Path,
                                                  vfr_video: Path) -> None:
    ids = {probe(p).video_id for p in (main_video, short_video, vfr_video)}
    assert len(ids) == 3


def test_content_id_of_large_files_samples_head_middle_and_tail(tmp_path: Path) -> None:
    size = 4 * HASH_CHUNK + 123
    data = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()
    original = tmp_path / "big.bin"
    original.write_bytes(data)
    moved = tmp_path / "elsewhere.bin"
    moved.write_bytes(data)
    base = content_video_id(str(original), size)
    assert content_video_id(str(moved), size) == base
    for position in (10, size // 2, size - 10):  # inside the head, middle and tail samples
        changed = bytearray(data)
        changed[position] ^= 0xFF
        path = tmp_path / f"changed_{position}.bin"
        path.write_bytes(bytes(changed))
        assert content_video_id(str(path), size) != base, position


def test_zero_byte_file_is_a_probe_error(empty_mp4: Path) -> None:
    with pytest.raises(ProbeError, match=r"empty \(0 bytes\)"):
        probe(empty_mp4)


def test_random_bytes_are_a_probe_error(random_mp4: Path) -> None:
    with pytest.raises(ProbeError, match="not a readable video"):
        probe(random_mp4)


def test_audio_only_file_is_a_probe_error(audio_only: Path) -> None:
    with pytest.raises(ProbeError, match=r"no video stream \(streams found: audio\)"):
        probe(audio_only)


def test_truncated_file_without_its_index_is_a_probe_error(truncated_no_index: Path) -> None:
    with pytest.raises(ProbeError, match="not a readable video"):
        probe(truncated_no_index)


def test_truncated_file_with_its_index_probes_only_the_frames_present(truncated_video: Path) -> None:
    info = probe(truncated_video)
    assert 0 < info.num_frames < 300
    assert info.duration_s < 10.0
