"""Decode clips and sample PLM's frames: one small interface, PyAV (default) and decord backends."""

from transforms.decode.backends import decoder_for
from transforms.decode.base import DecodeError, DecodeTimeout, FrameCollector, VideoDecoder
from transforms.decode.frames import apply_rotation, resize_exact, to_plm_frame
from transforms.decode.sample import SampleFrames

__all__ = ["DecodeError", "DecodeTimeout", "FrameCollector", "SampleFrames", "VideoDecoder",
           "apply_rotation", "decoder_for", "resize_exact", "to_plm_frame"]
