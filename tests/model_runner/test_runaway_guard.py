"""Runaway guard: a looping row stops early; every output that does not loop is unchanged, token for token."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from model_runner.handler import PlmModelHandler
from model_runner.loading import LoadedPlm
from model_runner.runner import RUNAWAY_LISTENERS, PlmRunner
from model_runner.stopping import RowBudgets, RunawayGuard, RunawaySettings, cut_rows
from model_runner.tiny import build_tiny_plm
from pipeline.graph import make_handler
from pipeline.options import add_build_flags, build_config
from schemas.records import ClipPlan, ClipPrompt

LONG = 72  # new tokens: room for a loop to be caught well before the budget
LOOP = [11, 12, 13, 14, 15]  # the forced loop's n-gram (period 5)
LOOP_FROM = 6  # new tokens before the forced loop starts


def feed(guard: RunawayGuard, prompt: list[int], new: list[int]) -> int | None:
    """Run ``guard`` step by step as ``generate`` does; the number of new tokens when it stopped the row."""
    for count in range(1, len(new) + 1):
        ids = torch.tensor([prompt + new[:count]])
        if bool(guard(ids, torch.zeros(1, 4))[0]):
            return count
    return None


def test_guard_stops_at_the_step_the_loop_is_complete() -> None:
    settings = RunawaySettings(max_period=8, min_repeats=4, min_tokens=12)
    head = [1, 2, 3, 4]
    # Period 3: the loop needs max(4 * 3, 12) = 12 tokens of period 3.
    assert feed(RunawayGuard(2, settings), [0, 0], head + [7, 8, 9] * 6) == len(head) + 12
    # Period 1: 12 equal tokens.
    assert feed(RunawayGuard(2, settings), [0, 0], head + [5] * 20) == len(head) + 12
    # Period 5: 4 repeats are 20 tokens.
    assert feed(RunawayGuard(2, settings), [0, 0], head + [1, 2, 3, 4, 6] * 5) == len(head) + 20


def test_guard_leaves_text_that_only_nearly_loops() -> None:
    settings = RunawaySettings(max_period=8, min_repeats=4, min_tokens=12)
    # Three repeats of a 4-gram, then something else; 11 equal tokens; a period longer than max_period.
    assert feed(RunawayGuard(1, settings), [0], [7, 8, 9, 10] * 3 + [1] + [5] * 11 + [2]) is None
    assert feed(RunawayGuard(1, settings), [0], list(range(9)) * 4) is None
    # The prompt never starts a loop: new tokens that continue a repeated prompt only count themselves.
    assert feed(RunawayGuard(12, settings), [5] * 12, [5] * 11) is None


def test_cut_rows_keeps_tokens_up_to_the_stop_and_names_runaway_rows() -> None:
    guard = RunawayGuard(1, RunawaySettings(max_period=2, min_repeats=2, min_tokens=4))
    budgets = RowBudgets(1, [3, 10, 10])
    rows = [[1, 2, 3, 4, 5, 6], [9, 9, 9, 9, 9, 9], [4, 2, 0, 0, 0, 0]]
    for count in range(1, 7):
        ids = torch.tensor([[0] + r[:count] for r in rows])
        guard(ids, torch.zeros(3, 4))
        budgets(ids, torch.zeros(3, 4))
    tokens, runaway = cut_rows(rows, [budgets, guard], eos_ids={2})
    assert tokens == [[1, 2], [9, 9, 9, 9], [4, 2]]
    # Row 2 ended at its end-of-sequence token; the padding after it is no loop.
    assert runaway == [1]


class ForcedLoop(LogitsProcessor):
    """Fault injector: after ``LOOP_FROM`` new tokens, forces the rows in ``rows`` to repeat ``LOOP`` forever."""

    def __init__(self, prompt_width: int, rows: set[int]) -> None:
        self.prompt_width = prompt_width
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        if step < LOOP_FROM:
            return scores
        forced = scores.clone()
        for row in self.rows:
            forced[row] = -float("inf")
            forced[row, LOOP[(step - LOOP_FROM) % len(LOOP)]] = 0.0
        return forced


class LoopingModel:
    """The real PLM with ``ForcedLoop`` injected into every ``generate`` call (other rows: see ``NonLoopingModel``)."""

    def __init__(self, model: Any, rows: set[int]) -> None:
        self._model = model
        self._rows = rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # the shared path's prefix prefill
        return self._model(*args, **kwargs)

    def generate(self, **inputs: Any) -> torch.Tensor:
        width = inputs["input_ids"].shape[1]
        return self._model.generate(**inputs, no_repeat_ngram_size=4,
                                    logits_processor=LogitsProcessorList([ForcedLoop(width, self._rows)]))


class NonLoopingModel:
    """The real PLM generating with transformers' ``no_repeat_ngram_size``, so its long answers cannot loop.

    The tiny random-weight model loops by itself within a few dozen tokens (the guard catches that,
    see below); banning repeated 4-grams gives long, greedy, loop-free answers to compare with.
    """

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # the shared path's prefix prefill
        return self._model(*args, **kwargs)

    def generate(self, **inputs: Any) -> torch.Tensor:
        return self._model.generate(**inputs, no_repeat_ngram_size=4)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_plm(str(tmp_path_factory.mktemp("runaway_model") / "tiny-plm"))


@pytest.fixture(scope="module")
def loaded(tiny_dir: str) -> LoadedPlm:
    return PlmModelHandler(tiny_dir, device="cpu", torch_threads=2).load_model()


def plan(clip_index: int) -> ClipPlan:
    return ClipPlan(video_id="vid", uri="file:///clip.mp4", clip_index=clip_index, start_s=0.0, end_s=1.0,
                    sample_frame_indices=(), sample_times=(), sample_end_times=())


QUESTIONS = ["Describe the video in detail.", "What happens?", "Count the cups.", "Where is this?"]


def prompts(shared_clip: bool) -> list[ClipPrompt]:
    """Four prompts: about one clip (shared prefix path) or four clips (plain batch path)."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (2, 448, 448, 3), dtype=np.uint8) for _ in QUESTIONS]
    return [ClipPrompt(clip=plan(0 if shared_clip else i), frames=frames[0] if shared_clip else frames[i],
                       task="caption", prompt=q, max_new_tokens=LONG) for i, q in enumerate(QUESTIONS)]


def token_lists(texts: list[str], loaded: LoadedPlm) -> list[list[int]]:
    return [loaded.processor.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


@pytest.mark.parametrize("shared_clip", [False, True], ids=["plain", "shared-prefix"])
def test_guard_changes_nothing_on_output_that_does_not_loop(tiny_dir: str, loaded: LoadedPlm,
                                                             shared_clip: bool) -> None:
    batch = prompts(shared_clip)
    steered = replace(loaded, model=NonLoopingModel(loaded.model))
    plain = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4)
    off = [r.inference for r in plain.run_inference(batch, steered)]
    guarded = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4, runaway_guard=RunawaySettings())
    on = [r.inference for r in guarded.run_inference(batch, steered)]
    assert on == off
    # The outputs are long and do not loop by the guard's own rule, so the comparison above is a real one.
    settings = RunawaySettings()
    for text, tokens in zip(off, token_lists(off, loaded), strict=True):
        assert len(tokens) > settings.min_tokens, text
        assert feed(RunawayGuard(0, settings), [], tokens) is None, text


@pytest.mark.parametrize("shared_clip", [False, True], ids=["plain", "shared-prefix"])
def test_guard_stops_a_forced_loop_early_and_leaves_the_other_rows(tiny_dir: str, loaded: LoadedPlm,
                                                                   shared_clip: bool) -> None:
    batch = prompts(shared_clip)
    looping = replace(loaded, model=LoopingModel(loaded.model, rows={1}))
    off = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4).run_inference(batch, looping)
    guarded = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4, runaway_guard=RunawaySettings())
    stopped: list[int] = []
    RUNAWAY_LISTENERS.append(stopped.append)  # what the Beam handler counts as its runaway_rows metric
    try:
        on = guarded.run_inference(batch, looping)
    finally:
        RUNAWAY_LISTENERS.remove(stopped.append)
    assert stopped == [1]
    # The Beam-free runner (eval, the GPU bench) answers exactly as the handler does.
    runner = PlmRunner(tiny_dir, device="cpu", runaway_guard=RunawaySettings())
    assert runner.answer(batch, looping) == [r.inference for r in on]
    loop_text = loaded.processor.tokenizer.decode(LOOP)
    settings = RunawaySettings()
    repeats_to_stop = settings.span(len(LOOP)) // len(LOOP)
    off_text, on_text = off[1].inference, on[1].inference
    # Unguarded, the looping row burns its whole budget; guarded, it stops once the loop is complete.
    assert off_text.count(loop_text) >= (LONG - LOOP_FROM) // len(LOOP) - 1
    assert repeats_to_stop - 1 <= on_text.count(loop_text) <= repeats_to_stop + 1
    assert off_text.startswith(on_text) and len(on_text) < 0.6 * len(off_text)
    assert [r.inference for i, r in enumerate(on) if i != 1] == [r.inference for i, r in enumerate(off) if i != 1]


def test_eval_generation_has_no_guard(loaded: LoadedPlm) -> None:
    # eval answers with PlmModelHandler.generate(items, loaded, max_new_tokens): benchmark-exact, never guarded.
    (item,) = prompts(False)[:1]
    looping = replace(loaded, model=LoopingModel(loaded.model, rows={0}))
    (text,) = PlmModelHandler.generate([item], looping, LONG)
    assert len(token_lists([text], loaded)[0]) >= LONG - 2


def test_build_turns_the_guard_on_unless_told_not_to(tiny_dir: str) -> None:
    parser = argparse.ArgumentParser()
    add_build_flags(parser)
    on = build_config(parser.parse_args(["--input", "in", "--output", "out"]), tiny_dir)
    off = build_config(parser.parse_args(["--input", "in", "--output", "out", "--no-runaway-guard"]), tiny_dir)
    assert on.model.runaway_guard and not off.model.runaway_guard
    assert make_handler(on, tiny_dir)._runaway == RunawaySettings()
    assert make_handler(off, tiny_dir)._runaway is None
    assert on.settings_hash() != off.settings_hash()


def test_guard_catches_the_tiny_models_own_loops(tiny_dir: str, loaded: LoadedPlm) -> None:
    # Unsteered, the random-weight model falls into loops by itself: the guard ends those rows early.
    batch = prompts(False)
    off = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4).run_inference(batch, loaded)
    guarded = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4, runaway_guard=RunawaySettings())
    on = guarded.run_inference(batch, loaded)
    off_tokens = token_lists([r.inference for r in off], loaded)
    on_tokens = token_lists([r.inference for r in on], loaded)
    shorter = [i for i in range(len(batch)) if len(on_tokens[i]) < len(off_tokens[i])]
    assert shorter, "no row of the tiny model looped: this check needs one"
    for i in range(len(batch)):
        assert on_tokens[i] == off_tokens[i][:len(on_tokens[i])]
