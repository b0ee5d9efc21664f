"""PlmModelHandler with the tiny random PLM, loaded like a real checkpoint, on real decoded clips."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.media import make_video
from model_runner.handler import PlmModelHandler
from model_runner.loading import LoadedPlm
from model_runner.tiny import build_tiny_plm
from schemas.config import ClipSpec, DecodeConfig
from schemas.records import ClipFrames, ClipPrompt, InferenceFailure, VideoClips, VideoInput
from tasks.caption import caption_prompt
from transforms.decode.backends import decoder_for
from transforms.plan.planning import plan_clips
from transforms.probe.probing import probe_video

MAX_NEW_TOKENS = 8
FRAMES = 4  # fewer than PLM's 32 keeps CPU generation fast; the handler does not care

PROMPTS = [
    caption_prompt(FRAMES),
    "Question: What does the subject do? Options: (A) cut (B) pour",
    "Describe.",
    "The woman ties her shoes and runs outside. Describe the video in detail.",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_plm(str(tmp_path_factory.mktemp("handler_model") / "tiny-plm"))


@pytest.fixture(scope="module")
def handler(tiny_dir: str) -> PlmModelHandler:
    return PlmModelHandler(tiny_dir, device="cpu", torch_threads=2, max_batch_size=4)


@pytest.fixture(scope="module")
def loaded(handler: PlmModelHandler) -> LoadedPlm:
    return handler.load_model()


def decode_clips(path: Path, num_frames: int, window_s: float) -> list[ClipFrames]:
    info = probe_video(VideoInput(uri=str(path)))
    video = VideoClips(info=info, clips=tuple(plan_clips(info, ClipSpec(mode="fixed", window_s=window_s),
                                                         num_frames)))
    config = DecodeConfig(backend="pyav", num_frames=num_frames)
    return list(decoder_for(config).decode(video, config))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[ClipFrames]:
    """Four real clips of FRAMES frames at 448x448: two videos, two 1 s clips each."""
    folder = tmp_path_factory.mktemp("handler_videos")
    first = make_video(str(folder / "testsrc.mp4"), "testsrc=size=320x240:rate=10", 2)
    second = make_video(str(folder / "mandelbrot.mp4"), "mandelbrot=size=320x240:rate=10", 2)
    found = decode_clips(Path(first), FRAMES, 1.0) + decode_clips(Path(second), FRAMES, 1.0)
    assert len(found) == 4
    return found


@pytest.fixture(scope="module")
def other_shape_clip(clips: list[ClipFrames], tmp_path_factory: pytest.TempPathFactory) -> ClipFrames:
    folder = tmp_path_factory.mktemp("handler_short")
    path = make_video(str(folder / "bars.mp4"), "smptebars=size=320x240:rate=10", 1)
    (clip,) = decode_clips(Path(path), FRAMES // 2, 30.0)
    assert clip.frames.shape == (FRAMES // 2, 448, 448, 3)
    return clip


def prompt_for(clip: ClipFrames, prompt: str) -> ClipPrompt:
    return ClipPrompt(clip=clip.clip, frames=clip.frames, task="caption", prompt=prompt,
                      max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def prompts(clips: list[ClipFrames]) -> list[ClipPrompt]:
    return [prompt_for(clip, text) for clip, text in zip(clips, PROMPTS, strict=True)]


@pytest.fixture(scope="module")
def alone(handler: PlmModelHandler, loaded: LoadedPlm, prompts: list[ClipPrompt]) -> list[str]:
    """Each prompt's greedy text when it runs alone (a batch of one)."""
    texts = []
    for item in prompts:
        (result,) = handler.run_inference([item], loaded)
        texts.append(result.inference)
    return texts


class RecordingModel:
    """The real PLM, unchanged, keeping a copy of the inputs each ``generate`` call received."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls: list[dict[str, torch.Tensor]] = []

    @property
    def dtype(self) -> torch.dtype:
        return self._model.dtype

    def generate(self, **inputs: Any) -> torch.Tensor:
        self.calls.append({k: v.clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return self._model.generate(**inputs)


class BatchRecordingHandler(PlmModelHandler):
    """The real handler, noting the clips of every batch it generates for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[tuple[str, int]]] = []

    def generate(self, items: list[ClipPrompt], model: LoadedPlm, max_new_tokens: int) -> list[str]:
        self.batches.append([(item.clip.uri, item.clip.clip_index) for item in items])
        return PlmModelHandler.generate(items, model, max_new_tokens)


class FaultInjectingHandler(BatchRecordingHandler):
    """Fault injector: generation fails for any batch holding a clip whose prompt is marked bad."""

    MARK = "[inject-fault]"

    def generate(self, items: list[ClipPrompt], model: LoadedPlm, max_new_tokens: int) -> list[str]:
        if any(self.MARK in item.prompt for item in items):
            self.batches.append([(item.clip.uri, item.clip.clip_index) for item in items])
            raise RuntimeError(f"injected fault in a batch of {len(items)}")
        return super().generate(items, model, max_new_tokens)


def test_prompt_has_exactly_one_bos_at_the_start(handler: PlmModelHandler, loaded: LoadedPlm,
                                                 prompts: list[ClipPrompt]) -> None:
    recording = RecordingModel(loaded.model)
    spied = replace(loaded, model=recording)
    handler.run_inference(prompts[:1], spied)
    handler.run_inference(prompts[1:3], spied)  # different prompt lengths: left padding
    tokenizer = loaded.processor.tokenizer
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    assert bos != pad
    # The check has teeth: tokenising the templated text with special tokens would double BOS.
    templated = loaded.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], add_generation_prompt=True, tokenize=False)
    assert tokenizer(templated)["input_ids"][:2] == [bos, bos]
    assert [tuple(call["input_ids"].shape)[0] for call in recording.calls] == [1, 2]
    rows = 0
    for call in recording.calls:
        for ids, mask in zip(call["input_ids"].tolist(), call["attention_mask"].tolist(), strict=True):
            start = mask.index(1)
            assert all(m == 0 for m in mask[:start]) and all(m == 1 for m in mask[start:])  # left padding
            assert all(t == pad for t in ids[:start])
            assert ids[start] == bos
            assert ids.count(bos) == 1
            rows += 1
    assert rows == 3
    # The video reaches the model: one pixel_values_videos entry per clip, FRAMES frames of 448x448.
    assert tuple(recording.calls[1]["pixel_values_videos"].shape) == (2, FRAMES, 3, 448, 448)


def test_run_inference_returns_one_result_per_clip(handler: PlmModelHandler, loaded: LoadedPlm,
                                                   prompts: list[ClipPrompt], tiny_dir: str) -> None:
    batch = prompts[:3]
    results = handler.run_inference(batch, loaded)
    assert len(results) == 3
    for result, item in zip(results, batch, strict=True):
        assert result.example is item
        assert isinstance(result.inference, str) and result.inference
        assert result.model_id == tiny_dir


def test_batched_generation_equals_one_at_a_time(handler: PlmModelHandler, loaded: LoadedPlm,
                                                 prompts: list[ClipPrompt], alone: list[str]) -> None:
    # Different prompts and clips give different texts, so a padding mix-up would show.
    assert len(set(alone)) > 1, alone
    batched = [r.inference for r in handler.run_inference(prompts, loaded)]
    assert batched == alone
    reordered = [r.inference for r in handler.run_inference(prompts[::-1], loaded)]
    assert reordered == alone[::-1]


def test_clips_of_another_frame_shape_are_batched_apart(tiny_dir: str, loaded: LoadedPlm,
                                                        prompts: list[ClipPrompt], alone: list[str],
                                                        other_shape_clip: ClipFrames) -> None:
    recorder = BatchRecordingHandler(tiny_dir, device="cpu")
    odd = prompt_for(other_shape_clip, PROMPTS[0])
    batch = [prompts[0], odd, prompts[1]]
    results = recorder.run_inference(batch, loaded)
    key = [(item.clip.uri, item.clip.clip_index) for item in batch]
    assert sorted(recorder.batches) == sorted([[key[0], key[2]], [key[1]]])
    assert [results[0].inference, results[2].inference] == alone[:2]
    (odd_alone,) = recorder.run_inference([odd], loaded)
    assert results[1].inference == odd_alone.inference
    assert [r.example for r in results] == batch


def test_a_failing_clip_is_split_out_of_its_batch(tiny_dir: str, loaded: LoadedPlm, prompts: list[ClipPrompt],
                                                  alone: list[str]) -> None:
    injector = FaultInjectingHandler(tiny_dir, device="cpu")
    bad = 2
    batch = list(prompts)
    batch[bad] = replace(batch[bad], prompt=batch[bad].prompt + " " + FaultInjectingHandler.MARK)
    results = injector.run_inference(batch, loaded)
    assert len(results) == 4
    assert [r.example for r in results] == batch
    failure = results[bad].inference
    assert isinstance(failure, InferenceFailure)
    assert failure.error_class == "RuntimeError"
    assert "injected fault in a batch of 1" in failure.message
    # Tried as a batch of 4, then 2, then alone.
    assert failure.attempts == 1 + int(math.log2(len(batch)))
    assert failure.attempts > 1
    good = [i for i in range(4) if i != bad]
    assert [results[i].inference for i in good] == [alone[i] for i in good]
    assert [len(b) for b in injector.batches] == [4, 2, 2, 1, 1]


def test_frames_are_used_not_ignored(handler: PlmModelHandler, loaded: LoadedPlm,
                                     prompts: list[ClipPrompt], alone: list[str]) -> None:
    """The same prompt on other frames gives other logits: the video really conditions generation."""
    item = prompts[0]
    blank = replace(item, frames=np.zeros_like(item.frames))
    recording = RecordingModel(loaded.model)
    spied = replace(loaded, model=recording)
    handler.run_inference([item], spied)
    handler.run_inference([blank], spied)
    first, second = recording.calls
    assert torch.equal(first["input_ids"], second["input_ids"])
    assert not torch.equal(first["pixel_values_videos"], second["pixel_values_videos"])
    with torch.inference_mode():
        logits = [loaded.model(**{k: v for k, v in call.items()}).logits[:, -1] for call in (first, second)]
    assert not torch.allclose(logits[0], logits[1])
