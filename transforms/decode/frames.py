"""Per-frame work between decoding and PLM: rotation and the 448x448 bicubic resize.

This module needs torch but not torchvision: the decode process imports it, and torchvision's
import (about 2 s of CPU, most of that process's start) bought nothing but one call into torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn.functional import interpolate


def apply_rotation(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply display-matrix rotation (degrees counter-clockwise, as FFmpeg reports it)."""
    turns = (int(rotation) // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def resize_exact(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize one uint8 HxWx3 frame to size x size exactly as PLM's video processor does.

    transformers' ``PerceptionLMVideoProcessor`` resizes uint8 tensors with torchvision's
    bicubic, antialiased resize and only then rescales and normalises; doing the same resize
    here, frame by frame, gives identical pixels while holding only small frames in memory.
    On CPU torchvision hands a uint8 image straight to torch's native uint8 antialiased bicubic
    kernel (``interpolate``, ``align_corners=False``), which is what this calls. Tests hold it
    to torchvision's ``resize`` and to the processor itself, pixel for pixel.
    """
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
    out = interpolate(image, size=[size, size], mode="bicubic", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).contiguous().numpy()


def to_plm_frame(rgb: np.ndarray, rotation: int, size: int) -> np.ndarray:
    """A decoded full-resolution RGB frame as PLM sees it: upright, size x size, uint8."""
    return resize_exact(apply_rotation(rgb, rotation), size)


RED = (255, 0, 0)
BOX_WIDTH = 4


def draw_box(rgb: np.ndarray, box: tuple[float, float, float, float], width: int = BOX_WIDTH,
             color: tuple[int, int, int] = RED) -> np.ndarray:
    """A copy of ``rgb`` with a rectangle outline drawn at ``[x1, y1, x2, y2]`` (pixels).

    PLM marks a region in video with a red rectangle 4 px wide drawn on the frame at its original
    resolution, before the resize to 448. Both lmms-eval and perception_models draw it with PIL's
    ``ImageDraw.rectangle`` (coordinates truncated to integers, the outline inside the box, pixels
    outside the frame not drawn); drawing with PIL too gives the same pixels.
    """
    image = Image.fromarray(np.ascontiguousarray(rgb))
    x1, y1, x2, y2 = (int(v) for v in box)
    ImageDraw.Draw(image).rectangle([(x1, y1), (x2, y2)], outline=tuple(color), width=int(width))
    return np.array(image)


class FrameImages:
    """One decoded frame, turned into what PLM sees on demand.

    ``plain()`` is the frame at PLM size; ``with_box(box)`` draws a region's rectangle on the
    full-resolution upright frame and then resizes, as PLM's own pipeline does. Results are
    computed once: a frame sampled twice (short clips) costs one conversion.
    """

    def __init__(self, full: Callable[[], np.ndarray], size: int,
                 plain: Callable[[], np.ndarray] | None = None) -> None:
        self._full_fn = full
        self._plain_fn = plain
        self._size = size
        self._full: np.ndarray | None = None
        self._plain: np.ndarray | None = None
        self._boxed: dict[tuple[float, float, float, float], np.ndarray] = {}

    def full(self) -> np.ndarray:
        """The upright frame at its original resolution."""
        if self._full is None:
            self._full = self._full_fn()
        return self._full

    def plain(self) -> np.ndarray:
        """The frame at PLM size."""
        if self._plain is None:
            self._plain = self._plain_fn() if self._plain_fn is not None else resize_exact(self.full(), self._size)
        return self._plain

    def with_box(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """The frame at PLM size with a red rectangle drawn at ``box`` before the resize."""
        if box not in self._boxed:
            self._boxed[box] = resize_exact(draw_box(self.full(), box), self._size)
        return self._boxed[box]
