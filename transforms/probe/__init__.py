"""Probe videos: stable content id, stream facts and every frame's presentation time."""

from transforms.probe.probing import ProbeError, ProbeVideos, content_video_id, probe_video

__all__ = ["ProbeError", "ProbeVideos", "content_video_id", "probe_video"]
