"""sgqa: open questions a camera wearer asks at the end of an egocentric video, judged by an LLM.

Prompt: lmms-eval's ``sgqa/sgqa_utils.py`` (note its double spaces) plus the "{answer}" slip;
budget 16 tokens (``sgqa_test.yaml``). Both readings take the answer as written (the benchmark
strips one trailing "."), so every row's ``benchmark_reading_ok`` is true. Frames: lmms-eval's
``load_video_uniform``: every frame of a video with 32 or fewer, else 32 by PLM's rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.sampling import uniform_or_all
from schemas.benchmark import SgqaRow
from schemas.records import ClipPlan, ClipPrompt, VideoInfo
from schemas.rows import RunContext
from tasks.base import CaptionJudge, Target, Task
from tasks.prompts import ANSWER_SLIP, NUM_VIDEO_FRAMES
from tasks.scoring import sgqa_accuracy

_SGQA_PROMPT = (
    "The following question is asked by the camera wearer at the end of the video.  "
    "Provide a detailed answer even if unsure.  Try to answer in around 20-30 words.  "
    "Now answer the following question based on the video content: {question}"
)


def sgqa_prompt(question: str, *, answer_slip: bool = True) -> str:
    """The SGQA open-ended question prompt (note the benchmark's double spaces)."""
    return _SGQA_PROMPT.format(question=question) + (ANSWER_SLIP if answer_slip else "")


class SgqaTask(Task):
    """Open questions; the judge says yes or no."""

    name = "sgqa"
    order = 20
    max_new_tokens = 16  # sgqa_test.yaml really sets 16, although the prompt asks for 20-30 words
    annotation = SgqaRow
    judged = True
    headline = "accuracy"
    question_task = True

    def prompt(self, clip: ClipPlan, target: Target) -> str:
        return sgqa_prompt(clip.questions[target.question_index].question)

    def rows(self, run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
        question = prompt.clip.questions[prompt.question_index]
        return [run.segment_row(prompt.clip, self.name, prompt.prompt, text, text, question=question.question,
                                qa_uid=question.qa_uid, benchmark_reading_ok=True)]

    def eval_prompt(self, row: SgqaRow) -> str:
        return sgqa_prompt(row.question)

    def eval_positions(self, info: VideoInfo, row: SgqaRow) -> list[int]:
        if row.segment is None:
            return uniform_or_all(0, info.num_frames, NUM_VIDEO_FRAMES)
        times = info.frame_times
        first = int(np.searchsorted(times, row.segment[0] - 1e-6, side="left"))
        stop = int(np.searchsorted(times, row.segment[1] - 1e-6, side="left"))
        if stop <= first:
            raise ValueError(f"segment {list(row.segment)} holds no frames of this {info.duration_s:.2f} s video")
        return uniform_or_all(first, stop - first, NUM_VIDEO_FRAMES)

    def score(self, row: SgqaRow, prediction: str, plan: ClipPlan | None, judge: CaptionJudge | None) -> dict[str, Any]:
        if judge is None:
            raise ValueError("sgqa is scored by an LLM judge: pass --judge")
        verdict = judge.judge_sgqa(row.question, prediction, row.answer)
        return {"gt_answer": row.answer, "judge_correct": verdict.correct, "judge_score": verdict.score,
                "judge_parsed": verdict.parsed}

    def metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"accuracy": sgqa_accuracy([bool(r["judge_correct"]) for r in rows])}


TASK = SgqaTask()
