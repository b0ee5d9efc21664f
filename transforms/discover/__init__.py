"""Discover input videos: a folder, a glob, a ``gs://`` prefix or glob, or a manifest file."""

from transforms.discover.listing import (
    MANIFEST_SUFFIXES,
    VIDEO_SUFFIXES,
    Discovery,
    discover_videos,
    load_manifest,
)

__all__ = ["MANIFEST_SUFFIXES", "VIDEO_SUFFIXES", "Discovery", "discover_videos", "load_manifest"]
