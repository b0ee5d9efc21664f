"""Decode clips and sample PLM's frames: one small interface, PyAV (default) and decord backends.

``SampleFrames`` (the Beam stage) is loaded on first use, so the decode process, which imports the
backends from this package, never imports Beam (it cost the child about 0.7 s of CPU at start).
"""

from typing import Any

from transforms.decode.backends import decoder_for
from transforms.decode.base import DecodeError, DecodeTimeout, FrameCollector, VideoDecoder
from transforms.decode.frames import apply_rotation, resize_exact, to_plm_frame

__all__ = ["DecodeError", "DecodeTimeout", "FrameCollector", "SampleFrames", "VideoDecoder",
           "apply_rotation", "decoder_for", "resize_exact", "to_plm_frame"]


def __getattr__(name: str) -> Any:
    if name == "SampleFrames":
        from transforms.decode.sample import SampleFrames

        return SampleFrames
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
