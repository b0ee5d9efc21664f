"""``PlmModelHandler.get_num_bytes``: Beam's byte count of a batch, without pickling the frames."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from model_runner.handler import PlmModelHandler
from schemas.records import ClipPlan, ClipPrompt
from transforms.infer import PassThroughHandler
from transforms.infer.passthrough import PASSED_BYTES


class UnpicklableClip:
    """Fault injector: a clip plan that refuses to be pickled, so a count that pickles the batch fails."""

    def __reduce__(self) -> tuple:
        raise pickle.PicklingError("get_num_bytes must not pickle the batch")


def plan() -> ClipPlan:
    return ClipPlan(video_id="vid", uri="file:///clip.mp4", clip_index=0, start_s=0.0, end_s=1.0,
                    sample_frame_indices=(), sample_times=(), sample_end_times=())


def prompt(frames: np.ndarray, text: str, clip: object | None = None) -> ClipPrompt:
    return ClipPrompt(clip=clip or plan(), frames=frames, task="caption", prompt=text, max_new_tokens=8)


@pytest.fixture
def handler() -> PlmModelHandler:
    return PlmModelHandler("unused-model-path", device="cpu")


def test_counts_frames_once_per_clip_and_the_prompt_text(handler: PlmModelHandler) -> None:
    clip = np.zeros((32, 448, 448, 3), dtype=np.uint8)
    other = np.zeros((4, 448, 448, 3), dtype=np.uint8)
    batch = [prompt(clip, "Describe."), prompt(clip, "Count the cups."), prompt(other, "héllo")]
    expected = clip.nbytes + other.nbytes + len("Describe.") + len("Count the cups.") + len("héllo".encode())
    assert handler.get_num_bytes(batch) == expected
    # Beam's default (pickling the batch) gives another number; the override is what answered.
    assert len(pickle.dumps(batch)) != expected


def test_never_pickles_the_batch(handler: PlmModelHandler) -> None:
    frames = np.ones((2, 8, 8, 3), dtype=np.uint8)
    batch = [prompt(frames, "Describe.", UnpicklableClip())]
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(batch)
    assert handler.get_num_bytes(batch) == frames.nbytes + len("Describe.")


def test_the_build_chain_delegates_to_it(handler: PlmModelHandler) -> None:
    # The build wraps the handler: PassThroughHandler(handler.with_preprocess_fn(...)).
    wrapped = PassThroughHandler(handler.with_preprocess_fn(lambda item: item), lambda item: isinstance(item, str))
    frames = np.ones((2, 8, 8, 3), dtype=np.uint8)
    batch = [prompt(frames, "Describe.", UnpicklableClip()), "bookkeeping"]
    assert wrapped.get_num_bytes(batch) == frames.nbytes + len("Describe.") + PASSED_BYTES
