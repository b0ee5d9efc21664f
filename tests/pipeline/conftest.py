"""Fixtures for pipeline tests: real videos made with FFmpeg and the tiny PLM checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.media import make_video
from model_runner.tiny import build_tiny_plm


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random PLM saved like a real checkpoint."""
    return build_tiny_plm(str(tmp_path_factory.mktemp("models") / "tiny-plm"))


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real videos (one in a subfolder), a broken one and a non-video file."""
    folder = tmp_path_factory.mktemp("videos")
    make_video(str(folder / "a.mp4"), "testsrc=size=320x240:rate=25", 9)
    make_video(str(folder / "sub" / "b.mkv"), "mandelbrot=size=256x144:rate=20", 5)
    (folder / "broken.mp4").write_bytes(os.urandom(4096))
    (folder / "notes.txt").write_text("not a video")
    return folder
