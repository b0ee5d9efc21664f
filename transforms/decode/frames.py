"""Per-frame work between decoding and PLM: rotation and the 448x448 bicubic resize."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as tvf


def apply_rotation(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply display-matrix rotation (degrees counter-clockwise, as FFmpeg reports it)."""
    turns = (int(rotation) // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def resize_exact(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize one uint8 HxWx3 frame to size x size exactly as PLM's video processor does.

    transformers' ``PerceptionLMVideoProcessor`` resizes uint8 tensors with torchvision's
    bicubic, antialiased resize and only then rescales and normalises; doing the same resize
    here, frame by frame, gives identical pixels while holding only small frames in memory.
    """
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    out = tvf.resize(tensor, [size, size], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)
    return out.permute(1, 2, 0).contiguous().numpy()


def to_plm_frame(rgb: np.ndarray, rotation: int, size: int) -> np.ndarray:
    """A decoded full-resolution RGB frame as PLM sees it: upright, size x size, uint8."""
    return resize_exact(apply_rotation(rgb, rotation), size)
