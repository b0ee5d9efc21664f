"""Discover input videos inside the pipeline: a folder, a glob, a ``gs://`` prefix or glob, a manifest, tar shards."""

from transforms.discover.listing import VIDEO_SUFFIXES, ReadInputs, check_input, is_video, list_source
from transforms.discover.manifest import MANIFEST_SUFFIXES, is_manifest, load_manifest

__all__ = ["MANIFEST_SUFFIXES", "VIDEO_SUFFIXES", "ReadInputs", "check_input", "is_manifest", "is_video",
           "list_source", "load_manifest"]
