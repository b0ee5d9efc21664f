"""Sample videos for the demo and the tests, made with FFmpeg's test sources."""

from __future__ import annotations

import os

from core.media import make_video

# (file name, lavfi source, seconds); sizes and rates differ so the demo shows real variety.
DEMO_VIDEOS = (
    ("testsrc.mp4", "testsrc=size=640x360:rate=30", 24),
    ("mandelbrot.mp4", "mandelbrot=size=480x270:rate=25", 16),
    ("bars.mp4", "smptehdbars=size=640x360:rate=24,hue=H=2*PI*t/8", 20),
)


def make_demo_videos(folder: str) -> list[str]:
    """Write the demo videos into ``folder`` (skipping ones already there)."""
    paths = []
    for name, source, seconds in DEMO_VIDEOS:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            make_video(path, source, seconds)
        paths.append(path)
    return paths
