"""Pixel fidelity: the pipeline's frames give PLM the same pixel_values as transformers' own processor.

The pipeline resizes each full-resolution frame to 448x448 as soon as it is decoded
(``resize_exact``) and then calls the processor with ``do_resize=False``, as
``model_runner/handler.py`` does. transformers' ``PerceptionLMVideoProcessor`` instead takes
the full-resolution frames and resizes them itself. The two must agree.
"""

from __future__ import annotations

import torchvision_shim  # noqa: F401  (first: transformers' processor and the reference resize import torchvision)

# isort: split

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as tvf
from transformers import AutoProcessor, PerceptionLMVideoProcessor

from model_runner.prompts import video_conversation
from schemas.config import ClipSpec, DecodeConfig
from schemas.records import ClipPlan, VideoClips, VideoInput
from tasks.caption import caption_prompt
from transforms.decode.backends import decoder_for
from transforms.decode.frames import resize_exact
from transforms.plan.planning import plan_clips
from transforms.probe.probing import probe_video

N = 32
SIZE = 448


def full_resolution_frames(path: Path, indices: tuple[int, ...]) -> np.ndarray:
    """The frames at ``indices`` (presentation order), decoded by PyAV at full resolution."""
    wanted = set(indices)
    by_index: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                by_index[index] = frame.to_ndarray(format="rgb24")
            if len(by_index) == len(wanted):
                break
    return np.stack([by_index[i] for i in indices])


def pipeline_pixel_values(processor: Any, frames: np.ndarray) -> torch.Tensor:
    """pixel_values_videos from 448x448 frames, with the processor called as the model handler calls it."""
    text = processor.apply_chat_template(video_conversation(caption_prompt(N)), add_generation_prompt=True,
                                         tokenize=False)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    inputs = processor(text=[text], videos=[video], return_tensors="pt", padding=True, add_special_tokens=False,
                       do_resize=False, do_sample_frames=False)
    return inputs["pixel_values_videos"]


def report(label: str, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a.double() - b.double()).abs()
    mean, worst = float(diff.mean()), float(diff.max())
    print(f"{label}: mean abs diff {mean:.3g}, max abs diff {worst:.3g}")
    return mean, worst


@pytest.fixture(scope="module")
def first_clip(main_video: Path) -> tuple[VideoClips, ClipPlan]:
    info = probe_video(VideoInput(uri=str(main_video)))
    clips = plan_clips(info, ClipSpec(mode="fixed", window_s=4.0), N)
    return VideoClips(info=info, clips=(clips[0],)), clips[0]


@pytest.fixture(scope="module")
def full_frames(main_video: Path, first_clip: tuple[VideoClips, ClipPlan]) -> np.ndarray:
    frames = full_resolution_frames(main_video, first_clip[1].sample_frame_indices)
    assert frames.shape == (N, 360, 640, 3)
    return frames


@pytest.fixture(scope="module")
def reference_pixel_values(full_frames: np.ndarray) -> torch.Tensor:
    """What transformers' PerceptionLMVideoProcessor makes of the full-resolution frames."""
    processor = PerceptionLMVideoProcessor()
    video = torch.from_numpy(full_frames).permute(0, 3, 1, 2)
    values = processor(videos=[video], do_sample_frames=False, return_tensors="pt")["pixel_values_videos"]
    assert tuple(values.shape) == (1, N, 3, SIZE, SIZE)
    return values


@pytest.fixture(scope="module")
def plm_processor(tiny_plm_dir: str) -> Any:
    processor = AutoProcessor.from_pretrained(tiny_plm_dir)
    processor.tokenizer.padding_side = "left"
    return processor


def test_resize_exact_then_processor_equals_plm_video_processor(
        full_frames: np.ndarray, reference_pixel_values: torch.Tensor, plm_processor: Any) -> None:
    small = np.stack([resize_exact(frame, SIZE) for frame in full_frames])
    assert small.shape == (N, SIZE, SIZE, 3) and small.dtype == np.uint8
    ours = pipeline_pixel_values(plm_processor, small)
    assert ours.shape == reference_pixel_values.shape
    mean, worst = report("resize_exact + processor(do_resize=False) vs PerceptionLMVideoProcessor",
                         ours, reference_pixel_values)
    assert worst <= 1e-5


def test_pyav_exact_decode_gives_the_resize_exact_frames(
        first_clip: tuple[VideoClips, ClipPlan], full_frames: np.ndarray) -> None:
    """The decode stage's own output is exactly resize_exact of the full-resolution frames."""
    video, clip = first_clip
    config = DecodeConfig(backend="pyav", resize="exact")
    (decoded,) = list(decoder_for(config).decode(video, config))
    assert decoded.clip == clip
    expected = np.stack([resize_exact(frame, SIZE) for frame in full_frames])
    np.testing.assert_array_equal(decoded.frames, expected)


def test_decoder_resize_mode_pixel_values_stay_close(
        first_clip: tuple[VideoClips, ClipPlan], reference_pixel_values: torch.Tensor,
        plm_processor: Any) -> None:
    video, _ = first_clip
    config = DecodeConfig(backend="pyav", resize="decoder")
    (decoded,) = list(decoder_for(config).decode(video, config))
    ours = pipeline_pixel_values(plm_processor, decoded.frames)
    mean, worst = report("pyav decoder-mode resize vs PerceptionLMVideoProcessor (normalised units)",
                         ours, reference_pixel_values)
    # Not pixel-identical (so not the default), but close: under 2% of the [-1, 1] range on average.
    assert 0 < mean < 0.04


def torchvision_resize(frame: np.ndarray) -> np.ndarray:
    """torchvision's bicubic antialiased resize of one HxWx3 uint8 frame, as the processor calls it."""
    tensor = torch.from_numpy(frame).permute(2, 0, 1)
    out = tvf.resize(tensor, [SIZE, SIZE], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)
    return out.permute(1, 2, 0).numpy()


@pytest.mark.parametrize(("height", "width"), [(360, 640), (1080, 1920), (1920, 1080), (448, 600), (300, 300),
                                               (13, 1000), (100, 50), (447, 449)])
def test_resize_exact_equals_torchvision_resize(height: int, width: int) -> None:
    """resize_exact calls torch's kernel without torchvision; it must match torchvision pixel for pixel."""
    rng = np.random.default_rng(height * 10_000 + width)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ramps = np.clip(np.cumsum(rng.integers(-3, 4, (height, width, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    turned = np.rot90(ramps)  # a non-contiguous view, as a rotated frame is before apply_rotation copies it
    for frame in (noise, ramps, turned):
        ours = resize_exact(frame, SIZE)
        assert ours.shape == (SIZE, SIZE, 3) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, torchvision_resize(np.ascontiguousarray(frame)))
