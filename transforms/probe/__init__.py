"""Probe videos: stable content id, stream facts and every frame's presentation time.

``ProbeVideos`` (the Beam stage) is loaded on first use, so the probing functions import without
Beam (the GPU bench drives them on a machine that has none).
"""

from typing import Any

from transforms.probe.probing import ProbeError, content_video_id, probe_video

__all__ = ["ProbeError", "ProbeVideos", "content_video_id", "probe_video"]


def __getattr__(name: str) -> Any:
    if name == "ProbeVideos":
        from transforms.probe.stage import ProbeVideos

        return ProbeVideos
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
