"""Real test videos for the probe, plan and decode tests, made once per session with FFmpeg.

Every video is encoded from an FFmpeg lavfi test source at test time (no checked-in media), kept
small and short so that the whole set stays fast.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.media import ffmpeg_binary, make_video
from model_runner.tiny import build_tiny_plm

MAIN_SECONDS = 10
MAIN_SIZE = (640, 360)
MAIN_FPS = 30

# The VFR video: 30 fps for its first 2 s, then every third frame (10 fps) until 4 s.
VFR_SOURCE = "testsrc=size=320x240:rate=30,select='lt(t\\,2)+not(mod(n\\,3))'"
VFR_SECONDS = 4

# Three visually different shots of 2 s each: test pattern, solid red, mandelbrot.
SCENE_SECONDS = 2.0
SCENES_SOURCE = (
    "testsrc=size=320x240:rate=25:d=2[a];"
    "color=c=red:size=320x240:rate=25:d=2[b];"
    "mandelbrot=size=320x240:rate=25,trim=duration=2[c];"
    "[a][b][c]concat=n=3"
)


def ffprobe_binary() -> str:
    """ffprobe, installed beside ffmpeg."""
    return os.path.join(os.path.dirname(ffmpeg_binary()), "ffprobe")


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly, failing the test session on error."""
    subprocess.run([ffmpeg_binary(), "-loglevel", "error", "-y", *args], check=True)


def ffprobe_json(path: Path | str, *args: str) -> dict:
    """ffprobe's JSON output for ``path``."""
    out = subprocess.run([ffprobe_binary(), "-v", "error", "-of", "json", *args, str(path)],
                         check=True, capture_output=True).stdout
    return json.loads(out)


def ffprobe_frame_times(path: Path | str) -> np.ndarray:
    """Every video frame's pts_time as FFmpeg reports it, from the first frame, in display order."""
    data = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "frame=pts_time")
    times = np.sort(np.array([float(f["pts_time"]) for f in data["frames"]], dtype=np.float64))
    return times - times[0]


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("test_videos")


@pytest.fixture(scope="session")
def main_video(video_dir: Path) -> Path:
    """10 s of testsrc, 640x360 at 30 fps, h264."""
    path = video_dir / "main.mp4"
    width, height = MAIN_SIZE
    make_video(str(path), f"testsrc=size={width}x{height}:rate={MAIN_FPS}", MAIN_SECONDS)
    return path


@pytest.fixture(scope="session")
def rotated_video(video_dir: Path) -> Path:
    """A 320x180 h264 video remuxed (no re-encode) with a 90 degree rotation tag."""
    upright = make_video(str(video_dir / "rot_source.mp4"), "testsrc=size=320x180:rate=25", 3)
    path = video_dir / "rotated.mp4"
    ffmpeg("-i", upright, "-c", "copy", "-metadata:s:v:0", "rotate=90", str(path))
    return path


@pytest.fixture(scope="session")
def vfr_video(video_dir: Path) -> Path:
    """Variable frame rate: 30 fps for 2 s, then 10 fps for 2 s (frames keep their source times)."""
    path = video_dir / "vfr.mp4"
    make_video(str(path), VFR_SOURCE, VFR_SECONDS, extra=["-fps_mode", "vfr"])
    gaps = np.round(np.diff(ffprobe_frame_times(path)), 3)
    # Check the fixture really is VFR: both frame intervals must be present.
    assert {0.033, 0.1} <= set(gaps.tolist()), f"not a VFR video: intervals {sorted(set(gaps.tolist()))}"
    return path


@pytest.fixture(scope="session")
def short_video(video_dir: Path) -> Path:
    """0.8 s at 25 fps: 20 frames, fewer than the 32 PLM samples."""
    return Path(make_video(str(video_dir / "short.mp4"), "testsrc=size=320x240:rate=25", 0.8))


@pytest.fixture(scope="session")
def long_video(video_dir: Path) -> Path:
    """60 s of tiny 128x72 frames at 25 fps: timestamps past 30 s at little encoding cost."""
    return Path(make_video(str(video_dir / "long.mp4"), "testsrc=size=128x72:rate=25", 60))


@pytest.fixture(scope="session")
def scenes_video(video_dir: Path) -> Path:
    """Three 2 s shots of different content, cut at 2 s and 4 s."""
    return Path(make_video(str(video_dir / "scenes.mp4"), SCENES_SOURCE, 3 * SCENE_SECONDS))


@pytest.fixture(scope="session")
def audio_only(video_dir: Path) -> Path:
    """An .mp4 holding only an AAC audio stream."""
    path = video_dir / "audio_only.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    return path


@pytest.fixture(scope="session")
def empty_mp4(video_dir: Path) -> Path:
    path = video_dir / "empty.mp4"
    path.write_bytes(b"")
    return path


@pytest.fixture(scope="session")
def random_mp4(video_dir: Path) -> Path:
    path = video_dir / "random.mp4"
    path.write_bytes(np.random.default_rng(1234).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    return path


@pytest.fixture(scope="session")
def truncated_video(video_dir: Path, main_video: Path) -> Path:
    """The main video with its index moved to the front (faststart), then cut in half.

    The index survives, so the file still probes, but the frames of its second half are gone.
    """
    faststart = video_dir / "main_faststart.mp4"
    ffmpeg("-i", str(main_video), "-c", "copy", "-movflags", "+faststart", str(faststart))
    data = faststart.read_bytes()
    path = video_dir / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def truncated_no_index(video_dir: Path, main_video: Path) -> Path:
    """The main video (index at the end, FFmpeg's default) cut in half: the index is lost."""
    data = main_video.read_bytes()
    path = video_dir / "truncated_no_index.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def tiny_plm_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny random PerceptionLM checkpoint (for its processor)."""
    return build_tiny_plm(str(tmp_path_factory.mktemp("tiny_plm") / "tiny-plm"))


@pytest.fixture(scope="session")
def ffprobe_times() -> Callable[[Path | str], np.ndarray]:
    """``ffprobe_frame_times`` for tests: FFmpeg's own frame times of a file."""
    return ffprobe_frame_times
