"""Pick a decoding backend by name; the backends import the shared bookkeeping in ``base``, never this."""

from __future__ import annotations

from schemas.config import DecodeConfig
from transforms.decode.base import VideoDecoder


def decoder_for(config: DecodeConfig) -> VideoDecoder:
    """The backend named by ``config.backend``."""
    if config.backend == "pyav":
        from transforms.decode.pyav_backend import PyAvDecoder

        return PyAvDecoder()
    if config.backend == "decord":
        from transforms.decode.decord_backend import DecordDecoder

        return DecordDecoder()
    raise ValueError(f"unknown decoder {config.backend!r}: use pyav or decord")
