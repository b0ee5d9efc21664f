"""Sample videos for the demo and the tests, made with FFmpeg's test sources."""

from __future__ import annotations

import os
import shutil
import subprocess

# (file name, lavfi source, seconds); sizes and rates differ so the demo shows real variety.
DEMO_VIDEOS = (
    ("testsrc.mp4", "testsrc=size=640x360:rate=30", 24),
    ("mandelbrot.mp4", "mandelbrot=size=480x270:rate=25", 16),
    ("bars.mp4", "smptehdbars=size=640x360:rate=24,hue=H=2*PI*t/8", 20),
)


def ffmpeg_binary() -> str:
    """The ffmpeg executable, or a clear error saying how to get one."""
    found = shutil.which("ffmpeg")
    if not found:
        raise RuntimeError("ffmpeg is not installed: install it (Debian: apt-get install ffmpeg)")
    return found


def make_video(path: str, source: str, seconds: float, codec: str = "libx264", extra: list[str] | None = None) -> str:
    """Encode ``seconds`` of an FFmpeg lavfi test source to ``path`` (no shell involved)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    command = [ffmpeg_binary(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds),
               "-c:v", codec, "-pix_fmt", "yuv420p", *(extra or []), path]
    subprocess.run(command, check=True)
    return path


def make_demo_videos(folder: str) -> list[str]:
    """Write the demo videos into ``folder`` (skipping ones already there)."""
    paths = []
    for name, source, seconds in DEMO_VIDEOS:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            make_video(path, source, seconds)
        paths.append(path)
    return paths
