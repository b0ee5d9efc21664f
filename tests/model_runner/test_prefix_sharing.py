"""Prefix sharing: several questions about one clip give, token for token, each question's answer alone."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from model_runner.handler import PlmModelHandler
from model_runner.loading import LoadedPlm
from model_runner.prefix import (
    PrefixCarry,
    common_prefix_length,
    cut_at_eos,
    eos_ids_of,
    generate_shared_tokens,
    group_by_clip,
    prepare,
    run_shared,
)
from model_runner.tiny import build_tiny_plm
from schemas.records import ClipPlan, ClipPrompt, InferenceFailure

MAX_NEW_TOKENS = 10

# Eight questions, all of different lengths once templated and tokenised.
QUESTIONS = [
    "Describe.",
    "Count the cups.",
    "What does the person do with the cup?",
    "Where does this happen, indoors or outside?",
    "Question: What does the subject do? Options: (A) cut (B) pour (C) stir (D) wash.",
    "Describe the video in detail. Then list the events in order, one per line.",
    "The person picks up the red cup and pours water into it. What happens next, and why?",
    "The following question is asked by the camera wearer at the end of the video.  Provide a detailed "
    "answer even if unsure.  Try to answer in around 20-30 words.",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_plm(str(tmp_path_factory.mktemp("prefix_model") / "tiny-plm"))


@pytest.fixture(scope="module")
def loaded(tiny_dir: str) -> LoadedPlm:
    return PlmModelHandler(tiny_dir, device="cpu", torch_threads=2).load_model()


def plan(uri: str = "file:///clip.mp4", clip_index: int = 0) -> ClipPlan:
    return ClipPlan(video_id="vid", uri=uri, clip_index=clip_index, start_s=0.0, end_s=1.0,
                    sample_frame_indices=(), sample_times=(), sample_end_times=())


def frames_of(num_frames: int, seed: int) -> np.ndarray:
    """Noise frames at PLM's 448 px (the model only needs pixels; noise differs clip to clip)."""
    return np.random.default_rng(seed).integers(0, 256, (num_frames, 448, 448, 3), dtype=np.uint8)


def prompts_about(frames: np.ndarray, questions: list[str], clip: ClipPlan | None = None,
                  max_new_tokens: int = MAX_NEW_TOKENS) -> list[ClipPrompt]:
    clip = clip or plan()
    return [ClipPrompt(clip=clip, frames=frames, task="sgqa", prompt=q, max_new_tokens=max_new_tokens)
            for q in questions]


def alone(item: ClipPrompt, model: LoadedPlm) -> tuple[list[int], tuple[torch.Tensor, ...]]:
    """One prompt run alone exactly as ``PlmModelHandler.generate`` runs it: new tokens and per-step logits."""
    inputs = PlmModelHandler.model_inputs([item], model)
    with torch.inference_mode():
        out = model.model.generate(**inputs, max_new_tokens=item.max_new_tokens, do_sample=False,
                                   output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    return cut_at_eos(tokens, eos_ids_of(model)), tuple(step[0] for step in out.logits)


def check_equal_to_alone(items: list[ClipPrompt], model: LoadedPlm) -> list[list[int]]:
    """Shared answers equal alone ones token for token; per-step logits agree far below how questions differ."""
    out, width = run_shared(items, model, MAX_NEW_TOKENS, output_logits=True, return_dict_in_generate=True)
    eos = eos_ids_of(model)
    shared = [cut_at_eos(row, eos) for row in out.sequences[:, width:].tolist()]
    assert shared == generate_shared_tokens(items, model, MAX_NEW_TOKENS)
    answers = []
    for row, item in enumerate(items):
        tokens, logits = alone(item, model)
        assert shared[row] == tokens, f"question {row} ({item.prompt[:30]!r}) differs"
        for step, step_logits in enumerate(logits):
            torch.testing.assert_close(out.logits[step][row], step_logits, rtol=0, atol=1e-5)
        answers.append(tokens)
    # Teeth: the question really conditions the logits, by far more than the tolerance above, so a
    # suffix landing in the wrong row or at the wrong positions could not pass.
    first = out.logits[0]
    for row in range(1, len(items)):
        if items[row].prompt != items[0].prompt:
            assert (first[row] - first[0]).abs().max() > 1e-4
    assert all(len(a) > 0 for a in answers)
    return answers


def test_the_questions_have_different_lengths(loaded: LoadedPlm) -> None:
    batch = prepare(prompts_about(frames_of(4, 0), QUESTIONS), loaded)
    prefix = batch.prefix_ids.shape[1]
    suffix_lengths = batch.attention_mask[:, prefix:].sum(dim=1).tolist()
    assert len(set(suffix_lengths)) == len(QUESTIONS), suffix_lengths
    # The shared prefix holds every video token: 4 frames of 256 tokens.
    assert int((batch.prefix_ids[0] == loaded.processor.video_token_id).sum()) == 4 * 256
    assert not (batch.input_ids[:, prefix:] == loaded.processor.video_token_id).any()


def test_eight_questions_equal_each_alone_4_frames(loaded: LoadedPlm) -> None:
    # Black frames: with this random model the questions then steer the answers most (5 distinct of 8).
    black = np.zeros((4, 448, 448, 3), dtype=np.uint8)
    answers = check_equal_to_alone(prompts_about(black, QUESTIONS), loaded)
    assert len({tuple(a) for a in answers}) > 1, "every question got the same answer: the check is weak"


def test_eight_questions_equal_each_alone_32_frames(loaded: LoadedPlm) -> None:
    check_equal_to_alone(prompts_about(frames_of(32, 1), QUESTIONS), loaded)


def test_two_clips_in_one_call_equal_each_alone(loaded: LoadedPlm) -> None:
    first = prompts_about(frames_of(4, 2), QUESTIONS[:4], plan(clip_index=0))
    second = prompts_about(frames_of(4, 3), QUESTIONS[4:], plan(clip_index=1))
    items = [first[0], second[0], first[1], second[1], second[2], first[2], first[3], second[3]]
    check_equal_to_alone(items, loaded)


def test_the_clip_is_encoded_and_prefilled_once(loaded: LoadedPlm) -> None:
    calls: list[tuple[int, ...]] = []
    prefill_lengths: list[int] = []
    vision = loaded.model.model.vision_tower
    language = loaded.model.model.language_model
    hooks = [vision.register_forward_hook(lambda _m, args, _o: calls.append(tuple(args[0].shape))),
             language.register_forward_hook(
                 lambda _m, _a, kwargs, _o: prefill_lengths.append(kwargs["inputs_embeds"].shape[1]),
                 with_kwargs=True)]
    try:
        generate_shared_tokens(prompts_about(frames_of(4, 0), QUESTIONS), loaded, 2)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == [(4, 3, 448, 448)]  # one clip's four frames, through the vision tower once
    batch = prepare(prompts_about(frames_of(4, 0), QUESTIONS), loaded)
    # The prefix once, then the suffixes together, then one token per step.
    assert prefill_lengths[0] == batch.prefix_ids.shape[1] > 4 * 256
    assert prefill_lengths[1] == batch.input_ids.shape[1] - batch.prefix_ids.shape[1] < 200
    assert prefill_lengths[2:] == [1]


def test_group_by_clip() -> None:
    frames = frames_of(2, 0)
    same_pixels = frames.copy()
    other_pixels = frames_of(2, 1)
    items = [
        *prompts_about(frames, ["a", "b"]),
        *prompts_about(same_pixels, ["c"]),  # an equal copy: the same clip
        *prompts_about(other_pixels, ["d"]),  # same clip key, other pixels: another clip
        *prompts_about(frames, ["e"], plan(clip_index=1)),  # same pixels, other clip
        replace(prompts_about(frames, ["f"])[0], region_id="r1"),  # a region's frames: another clip
    ]
    assert group_by_clip(items) == [0, 0, 0, 1, 2, 3]


def test_common_prefix_length_leaves_a_token_to_generate_from() -> None:
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[7], [8, 9]]) == 0


class CountingHandler(PlmModelHandler):
    """The real handler, noting which path each batch took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared: list[list[str]] = []
        self.plain: list[list[str]] = []

    def generate(self, items: list[ClipPrompt], model: LoadedPlm, max_new_tokens: int) -> list[str]:
        self.plain.append([item.prompt for item in items])
        return PlmModelHandler.generate(items, model, max_new_tokens)

    def generate_shared(self, items: list[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
                        **kwargs: Any) -> list[str]:
        self.shared.append([item.prompt for item in items])
        if any("[fault]" in item.prompt for item in items):
            raise RuntimeError(f"injected fault in a shared batch of {len(items)}")
        return PlmModelHandler.generate_shared(items, model, max_new_tokens, **kwargs)


def mixed_batch() -> list[ClipPrompt]:
    """Two clips with several prompts each, a clip with one prompt, and one prompt with another budget."""
    a = prompts_about(frames_of(4, 4), QUESTIONS[:3], plan("file:///a.mp4"))
    b = prompts_about(frames_of(4, 5), QUESTIONS[3:6], plan("file:///b.mp4"))
    c = prompts_about(frames_of(4, 6), QUESTIONS[6:7], plan("file:///c.mp4"))
    d = prompts_about(a[0].frames, QUESTIONS[7:8], plan("file:///a.mp4"), max_new_tokens=MAX_NEW_TOKENS - 4)
    return [a[0], b[0], c[0], a[1], d[0], b[1], a[2], b[2]]


def test_run_inference_gives_the_same_texts_with_and_without_sharing(tiny_dir: str, loaded: LoadedPlm) -> None:
    batch = mixed_batch()
    with_sharing = CountingHandler(tiny_dir, device="cpu", max_batch_size=8)
    without = CountingHandler(tiny_dir, device="cpu", max_batch_size=8, share_prefix=False)
    shared_texts = [r.inference for r in with_sharing.run_inference(batch, loaded)]
    plain_texts = [r.inference for r in without.run_inference(batch, loaded)]
    assert all(isinstance(t, str) for t in shared_texts)
    assert shared_texts == plain_texts
    # The sharing handler sent clips a (4 prompts, one with its own budget) and b (3 prompts) down
    # the shared path together and the lone prompt (clip c) down the plain path.
    assert with_sharing.shared == [[QUESTIONS[0], QUESTIONS[3], QUESTIONS[1], QUESTIONS[7], QUESTIONS[4],
                                    QUESTIONS[2], QUESTIONS[5]]]
    assert with_sharing.plain == [[QUESTIONS[6]]]
    assert without.shared == []


def test_a_failing_shared_batch_is_split(tiny_dir: str, loaded: LoadedPlm) -> None:
    batch = mixed_batch()
    bad = 3  # one of clip a's prompts
    batch[bad] = replace(batch[bad], prompt=batch[bad].prompt + " [fault]")
    handler = CountingHandler(tiny_dir, device="cpu", max_batch_size=8)
    results = handler.run_inference(batch, loaded)
    failure = results[bad].inference
    assert isinstance(failure, InferenceFailure)
    assert "injected fault in a shared batch of 1" in failure.message
    reference = CountingHandler(tiny_dir, device="cpu", max_batch_size=8, share_prefix=False)
    expected = [r.inference for r in reference.run_inference(batch, loaded)]
    assert [r.inference for i, r in enumerate(results) if i != bad] == [t for i, t in enumerate(expected) if i != bad]
    assert [len(b) for b in handler.shared] == [7, 3, 1, 2, 1, 1, 4]


def test_a_caption_and_questions_with_other_budgets_share_one_prefix(loaded: LoadedPlm) -> None:
    """One clip, prompts with different max_new_tokens: one vision pass, each row equal to its prompt alone."""
    frames = frames_of(4, 7)
    budgets = [MAX_NEW_TOKENS + 6, 3, MAX_NEW_TOKENS, 1, 5]
    items = [replace(item, max_new_tokens=budget)
             for item, budget in zip(prompts_about(frames, QUESTIONS[3:8]), budgets, strict=True)]
    calls: list[tuple[int, ...]] = []
    hook = loaded.model.model.vision_tower.register_forward_hook(
        lambda _m, args, _o: calls.append(tuple(args[0].shape)))
    try:
        shared = generate_shared_tokens(items, loaded, max(budgets))
    finally:
        hook.remove()
    assert calls == [(4, 3, 448, 448)]  # the clip went through the vision tower once for all five
    lengths = []
    for row, item in enumerate(items):
        tokens, _ = alone(item, loaded)
        assert shared[row] == tokens, f"prompt {row} (budget {item.max_new_tokens}) differs from alone"
        assert len(tokens) <= item.max_new_tokens
        lengths.append(len(tokens))
    # Teeth: rows really ended at different budgets (a row run to the largest budget would differ).
    assert len(set(lengths)) > 2, lengths
    # The handler's plain path cuts rows at their own budgets in one batch too.
    texts = PlmModelHandler.generate(items, loaded, max(budgets))
    assert texts == [PlmModelHandler.generate([item], loaded, item.max_new_tokens)[0] for item in items]


def on_frames(items: list[ClipPrompt]) -> list[ClipPrompt]:
    """The prompts, each saying how many prompts its clip has in all (as ``expand_tasks`` marks them)."""
    return [replace(item, prompts_on_frames=len(items)) for item in items]


def frames_through_vision(loaded: LoadedPlm, run: Any) -> tuple[Any, int]:
    """``run()``'s result and how many frames went through the vision tower meanwhile."""
    frames: list[int] = []
    hook = loaded.model.model.vision_tower.register_forward_hook(lambda _m, args, _o: frames.append(args[0].shape[0]))
    try:
        return run(), sum(frames)
    finally:
        hook.remove()


def test_a_clip_straddling_batches_is_encoded_once_with_the_same_answers(tiny_dir: str, loaded: LoadedPlm) -> None:
    """A's five prompts and B's three, in batches of four rows: A's fifth continues from A's carried prefix."""
    a = on_frames(prompts_about(frames_of(4, 8), QUESTIONS[:5], plan("file:///a.mp4")))
    b = on_frames(prompts_about(frames_of(4, 9), QUESTIONS[5:], plan("file:///b.mp4")))
    c = on_frames(prompts_about(frames_of(4, 10), QUESTIONS, plan("file:///c.mp4")))  # 8 prompts
    batches = [a[:4], [a[4], *b], c[:3] + [QUESTION_ALONE], c[3:7], c[7:]]
    reference = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4, share_prefix=False)
    expected = [[r.inference for r in reference.run_inference(batch, loaded)] for batch in batches]
    handler = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4)
    seen = []
    for batch, want in zip(batches, expected, strict=True):
        results, frames = frames_through_vision(loaded, lambda batch=batch: handler.run_inference(batch, loaded))
        assert [r.inference for r in results] == want
        seen.append(frames)
    # Each clip's four frames go through the vision tower once: A in the first batch only, B in the
    # second, C (over three batches) in the third, with the lone question's clip.
    assert seen == [4, 4, 8, 0, 0]


def test_a_carried_prefix_gives_each_prompt_its_logits_alone(loaded: LoadedPlm) -> None:
    """Token for token and logit for logit, a clip continued from its carried prefix equals each prompt alone."""
    a = on_frames(prompts_about(frames_of(4, 15), QUESTIONS[:5], plan("file:///a.mp4")))
    b = on_frames(prompts_about(frames_of(4, 16), QUESTIONS[5:], plan("file:///b.mp4")))
    carry = PrefixCarry()
    eos = eos_ids_of(loaded)
    for batch in (a[:4], [a[4], *b]):
        out, width = run_shared(batch, loaded, MAX_NEW_TOKENS, carry=carry, output_logits=True,
                                return_dict_in_generate=True)
        for row, item in enumerate(batch):
            tokens, logits = alone(item, loaded)
            assert cut_at_eos(out.sequences[row, width:].tolist(), eos) == tokens
            for step, step_logits in enumerate(logits):
                torch.testing.assert_close(out.logits[step][row], step_logits, rtol=0, atol=1e-5)
    assert not carry.holding  # both clips are finished
    # Teeth: A's last question on B's frames gives other logits, by far more than the tolerance, so a
    # row continuing from the wrong clip's prefix could not pass.
    _, on_a = alone(a[4], loaded)
    _, on_b = alone(replace(a[4], frames=b[0].frames), loaded)
    assert (on_a[0] - on_b[0]).abs().max() > 1e-4


QUESTION_ALONE = ClipPrompt(clip=plan("file:///d.mp4"), frames=frames_of(4, 11), task="sgqa", prompt=QUESTIONS[2],
                            max_new_tokens=MAX_NEW_TOKENS)


def test_a_held_prefix_the_next_batch_does_not_continue_is_dropped(tiny_dir: str, loaded: LoadedPlm) -> None:
    """Batches out of order (another bundle took the rest): the clip is encoded again, answers unchanged."""
    a = on_frames(prompts_about(frames_of(4, 12), QUESTIONS[:5], plan("file:///a.mp4")))
    other = on_frames(prompts_about(frames_of(4, 13), QUESTIONS[5:7], plan("file:///e.mp4")))
    batches = [a[:4], other, [a[4]]]
    reference = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4, share_prefix=False)
    handler = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4)
    seen = []
    for batch in batches:
        results, frames = frames_through_vision(loaded, lambda batch=batch: handler.run_inference(batch, loaded))
        assert [r.inference for r in results] == [r.inference for r in reference.run_inference(batch, loaded)]
        seen.append(frames)
    assert seen == [4, 4, 4]


def test_a_pickled_runner_carries_no_prefix(tiny_dir: str, loaded: LoadedPlm) -> None:
    import pickle

    handler = PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4)
    a = on_frames(prompts_about(frames_of(4, 14), QUESTIONS[:5], plan("file:///a.mp4")))
    unused = len(pickle.dumps(PlmModelHandler(tiny_dir, device="cpu", max_batch_size=4)))
    handler.run_inference(a[:4], loaded)
    pickled = pickle.dumps(handler)
    assert len(pickled) == unused  # no cache row, model or frames in it
    copy = pickle.loads(pickled)
    # The copy encodes A again; the original continues from its held prefix.
    assert frames_through_vision(loaded, lambda: copy.run_inference(a[4:], loaded))[1] == 4
    assert frames_through_vision(loaded, lambda: handler.run_inference(a[4:], loaded))[1] == 0
