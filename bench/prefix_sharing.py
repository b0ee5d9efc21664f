"""Prefix sharing: 8 questions about one clip, sharing its encoding and prefix, against 1 question alone.

CPU, the tiny random PLM at PLM's real visual shape (32 frames of 448 px, 256 tokens a frame, so
a prefix of about 8.2k tokens whose prefill is the bulk of the work). Every generation is forced
to the same number of new tokens (min_new_tokens = max_new_tokens). Target: the 8 shared
questions cost at most 1.5x one question alone. The naive cost (8 questions, each alone) is
reported for reference.
"""

from __future__ import annotations

import os
import time

import numpy as np

from bench.common import Context, Figure, Stat, paired

NAME = "prefix_sharing"
TARGET = 1.5
NEW_TOKENS = 16
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


def tiny_model(ctx: Context) -> str:
    """The tiny random PLM, built once into the cache folder."""
    from pipeline.build import ensure_tiny_model

    return ensure_tiny_model(os.path.join(ctx.cache_dir, "tiny-plm"))


def run(ctx: Context) -> list[Figure]:
    """One figure for 8 shared vs 1 alone, one for 8 alone (reference)."""
    from model_runner.handler import PlmModelHandler
    from schemas.records import ClipPlan, ClipPrompt

    loaded = PlmModelHandler(tiny_model(ctx), device="cpu").load_model()
    loaded.model.generation_config.min_new_tokens = NEW_TOKENS  # a fixed amount of decoding everywhere
    frames = np.random.default_rng(0).integers(0, 256, (32, 448, 448, 3), dtype=np.uint8)
    clip = ClipPlan(video_id="bench", uri="bench://clip", clip_index=0, start_s=0.0, end_s=30.0,
                    sample_frame_indices=(), sample_times=(), sample_end_times=())
    items = [ClipPrompt(clip=clip, frames=frames, task="sgqa", prompt=q, max_new_tokens=NEW_TOKENS)
             for q in QUESTIONS]

    def one_alone() -> float:
        start = time.perf_counter()
        PlmModelHandler.generate(items[:1], loaded, NEW_TOKENS)
        return time.perf_counter() - start

    def eight_shared() -> float:
        start = time.perf_counter()
        PlmModelHandler.generate_shared(items, loaded, NEW_TOKENS)
        return time.perf_counter() - start

    def eight_alone() -> float:
        start = time.perf_counter()
        for item in items:
            PlmModelHandler.generate([item], loaded, NEW_TOKENS)
        return time.perf_counter() - start

    shared, alone, ratios = paired(eight_shared, one_alone, ctx.repeats)
    ratio = Stat.of(ratios)
    figures = [Figure(
        benchmark=NAME, name=f"8 questions, shared prefix (32x448 px, {NEW_TOKENS} new tokens each)", unit="s",
        value=Stat.of(shared), baseline_name="1 question alone, s", baseline=Stat.of(alone), ratio=ratio,
        target=f"<= {TARGET}x", met=ratio.median <= TARGET, note="CPU, tiny PLM; ratio = cost(8 shared)/cost(1)")]
    naive_reps = max(3, ctx.repeats // 2) if ctx.quick else ctx.repeats
    naive, alone2, naive_ratios = paired(eight_alone, one_alone, naive_reps, warmup=False)
    figures.append(Figure(
        benchmark=NAME, name="8 questions, each alone (reference: no sharing)", unit="s", value=Stat.of(naive),
        baseline_name="1 question alone, s", baseline=Stat.of(alone2), ratio=Stat.of(naive_ratios),
        note=f"{naive_reps} repetitions"))
    figures.append(caption_and_questions_figure(loaded, frames, clip, ctx))
    figures.append(straddling_figure(loaded, ctx))
    loaded.model.generation_config.min_new_tokens = None
    return figures


CAPTION_TOKENS = 64
QUESTION_TOKENS = 16


def caption_and_questions_figure(loaded: object, frames: np.ndarray, clip: object, ctx: Context) -> Figure:
    """1 caption and 4 questions about one clip (different token budgets, one shared prefix) against 1 caption.

    Every row runs to its own budget (``min_new_tokens`` is the caption's, each row stops at its
    ``max_new_tokens``), so the work is fixed.
    """
    from model_runner.handler import PlmModelHandler
    from schemas.records import ClipPrompt
    from tasks.caption import caption_prompt

    loaded.model.generation_config.min_new_tokens = CAPTION_TOKENS
    caption = ClipPrompt(clip=clip, frames=frames, task="caption", prompt=caption_prompt(32),
                         max_new_tokens=CAPTION_TOKENS)
    questions = [ClipPrompt(clip=clip, frames=frames, task="sgqa", prompt=q, max_new_tokens=QUESTION_TOKENS)
                 for q in QUESTIONS[1:5]]
    handler = PlmModelHandler("unused", device="cpu", max_batch_size=8)

    def caption_alone() -> float:
        start = time.perf_counter()
        handler.run_inference([caption], loaded)
        return time.perf_counter() - start

    def caption_and_questions() -> float:
        start = time.perf_counter()
        handler.run_inference([caption, *questions], loaded)
        return time.perf_counter() - start

    cand, base, ratios = paired(caption_and_questions, caption_alone, ctx.repeats)
    return Figure(
        benchmark=NAME, name=f"1 caption ({CAPTION_TOKENS} tokens) + 4 questions ({QUESTION_TOKENS} tokens), "
                             "one shared prefix", unit="s", value=Stat.of(cand),
        baseline_name="1 caption alone, s", baseline=Stat.of(base), ratio=Stat.of(ratios),
        note="CPU, tiny PLM, 32x448 px; the handler's run_inference, budgets differ row to row")


STRADDLE_CLIPS = 3
STRADDLE_BATCH = 4


def straddling_figure(loaded: object, ctx: Context) -> Figure:
    """Clips of 1 caption and 4 questions in batches of 4 rows: each clip straddles two batches.

    With the prefix carried to the next batch (the default) each clip is encoded once; without,
    the clip is encoded again in its second batch (its lone last prompt even runs unshared).
    Every row runs to its own budget, so the decoding work is the same in both.
    """
    from model_runner.handler import PlmModelHandler
    from schemas.records import ClipPlan, ClipPrompt
    from tasks.caption import caption_prompt

    loaded.model.generation_config.min_new_tokens = CAPTION_TOKENS
    rows = []
    for index in range(STRADDLE_CLIPS):
        frames = np.random.default_rng(10 + index).integers(0, 256, (32, 448, 448, 3), dtype=np.uint8)
        clip = ClipPlan(video_id="bench", uri="bench://clip", clip_index=index, start_s=0.0, end_s=30.0,
                        sample_frame_indices=(), sample_times=(), sample_end_times=())
        prompts = [(caption_prompt(32), "caption", CAPTION_TOKENS),
                   *((q, "sgqa", QUESTION_TOKENS) for q in QUESTIONS[1:5])]
        rows.extend(ClipPrompt(clip=clip, frames=frames, task=task, prompt=prompt, max_new_tokens=budget,
                               prompts_on_frames=len(prompts)) for prompt, task, budget in prompts)
    batches = [rows[i:i + STRADDLE_BATCH] for i in range(0, len(rows), STRADDLE_BATCH)]

    def run_all(carry: bool) -> float:
        handler = PlmModelHandler("unused", device="cpu", max_batch_size=STRADDLE_BATCH, carry_prefix=carry)
        start = time.perf_counter()
        for batch in batches:
            handler.run_inference(batch, loaded)
        return time.perf_counter() - start

    cand, base, ratios = paired(lambda: run_all(True), lambda: run_all(False), ctx.repeats)
    return Figure(
        benchmark=NAME, name=f"{STRADDLE_CLIPS} clips of 1 caption + 4 questions in batches of {STRADDLE_BATCH} rows, "
                             "a straddling clip's prefix carried to its next batch", unit="s", value=Stat.of(cand),
        baseline_name="the same, each clip encoded again in its second batch, s", baseline=Stat.of(base),
        ratio=Stat.of(ratios),
        note=f"CPU, tiny PLM, 32x448 px; {STRADDLE_CLIPS} clip encodings against {2 * STRADDLE_CLIPS}")
