"""fgqa: fine-grained multiple-choice questions, scored by multi-binary accuracy (MBAcc).

Prompt: lmms-eval's ``fgqa/fgqa_utils.py`` (``qa_template``) in ``fgqa_test.yaml``'s
``"{question}{answer}"`` (the "{answer}" slip, see ``tasks/prompts.py``); budget 16 tokens.

Two readings of an answer:

- **index reading** (``index_reading``, used by ``build``): forgiving. The first word may be
  wrapped ("(B)", "[B]", "**B**", "B.", "B:") and may follow a phrase ("Answer:", "The answer is",
  "Option"); failing that, a single distinct "(B)" anywhere in the text.
- **benchmark reading** (``benchmark_credits``, used by ``eval``): lmms-eval's ``check_ans``
  exactly. If the answer contains "answer:" (any case) that text is removed and the rest
  stripped; the answer is lowercased and cut at the first space; an empty first word is wrong;
  otherwise the option "(x)" is credited when the first word with its dots removed is a
  substring of "(x)", or "(x)" is a substring of the first word. So "(A)(B)" is credited for both
  A and B, "A:" and "The answer is (A)" for none, "b" and "(b" for B, and "(" for every option.
  The PLM wrapper first strips one trailing "." from the answer (``strip_final_period``).

A row's ``benchmark_reading_ok`` is true when the benchmark reading credits exactly the option
the index reading chose (and nothing else).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from core.sampling import plm_loader_positions
from schemas.benchmark import FgqaRow
from schemas.records import ClipPlan, ClipPrompt, VideoInfo
from schemas.rows import RunContext
from tasks.base import CaptionJudge, Target, Task
from tasks.prompts import ANSWER_SLIP, NUM_VIDEO_FRAMES, option_letter
from tasks.reading import strip_final_period
from tasks.scoring import mbacc

_FGQA_INSTRUCTION = "\nOnly give the best option."

# Index reading: leading phrases such as "Answer:", "The answer is", "Best option:" before the letter.
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:the\s+)?(?:correct\s+|best\s+|final\s+)?(?:answer|option|choice)\s*(?:is\s*)?[:\-]?\s*",
    re.IGNORECASE,
)
# A letter as the first word: "A", "(A)", "A.", "A)", "[A]", "**A**", "a:".
_FIRST_LETTER = re.compile(r"^[\s(\[*`'\"]*([A-Za-z])(?=[)\].:,;*`'\"]|\s|$)")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")


def fgqa_question_block(question: str, options: Sequence[str]) -> str:
    """The FGQA question with its lettered options and the instruction, without the slip."""
    if not options:
        raise ValueError("FGQA needs at least one option")
    lines = [f"Question: {question}", "Options:"]
    lines.extend(f"({option_letter(i)}) {text}" for i, text in enumerate(options))
    # lmms-eval strips trailing whitespace from the whole block before adding the instruction.
    return "\n".join(lines).rstrip() + _FGQA_INSTRUCTION


def fgqa_prompt(question: str, options: Sequence[str], *, answer_slip: bool = True) -> str:
    """The FGQA multiple-choice prompt; options are lettered (A), (B), ... in the given order."""
    return fgqa_question_block(question, options) + (ANSWER_SLIP if answer_slip else "")


def index_reading(text: str, num_options: int) -> int | None:
    """The option index an answer picks (0 for "A") by the forgiving index reading, or None.

    "(B)", "B", "b.", "Answer: (B)", "The answer is (B)", "**B**", "[B]", "B:" and "B) because ..."
    all give 1. A first word that is not an option letter falls back to a single distinct
    parenthesised capital "(B)" elsewhere in the text. An answer starting with the article "A"
    reads as option A.
    """
    if num_options < 1:
        return None
    rest = text
    for _ in range(2):  # "Answer: The answer is (B)"
        rest = _ANSWER_PREFIX.sub("", rest, count=1)
    match = _FIRST_LETTER.match(rest)
    if match:
        index = ord(match.group(1).upper()) - ord("A")
        if index < num_options:
            return index
    found = {ord(letter) - ord("A") for letter in _PAREN_LETTER.findall(text)}
    found = {index for index in found if index < num_options}
    if len(found) == 1:
        return found.pop()
    return None


def benchmark_credits(prediction: str, option_index: int) -> bool:
    """Whether lmms-eval's ``check_ans`` credits ``prediction`` when the answer is option ``option_index``.

    ``prediction`` is the text as scored (after ``strip_final_period``). The option's text plays
    no part in the decision, only its letter.
    """
    pred = prediction
    if "answer:" in pred.lower():
        pred = pred.lower().replace("answer:", "").strip()
    first_word = pred.lower().split(" ")[0]
    if not first_word:
        return False
    option = f"({option_letter(option_index)})".lower()
    return first_word.replace(".", "") in option or option in first_word


def benchmark_credited(prediction: str, num_options: int) -> list[int]:
    """Every option the benchmark reading would credit for ``prediction`` (none, one or several)."""
    return [i for i in range(num_options) if benchmark_credits(prediction, i)]


def fgqa_positions(info: VideoInfo, segment: tuple[float, float] | None = None,
                   max_frames: int = NUM_VIDEO_FRAMES, sampling_fps: float = 1.0) -> list[int]:
    """perception_models' ``VideoTransform.load_video`` positions over the video or ``segment``.

    The range is ``int(s * fps)..int(e * fps)`` (clamped to the last frame; reversed ranges are
    swapped and a one-frame range widened by one, as the loader does), then PLM's loader rule
    (``core.sampling.plm_loader_positions``), taking every frame once when the range is short.
    """
    fps, total = float(info.fps), int(info.num_frames)
    start = 0 if segment is None else int(segment[0] * fps)
    end = total - 1 if segment is None else int(segment[1] * fps)
    end = min(end, total - 1)
    if start > end:
        start, end = end, start
    elif start == end:
        end = min(start + 1, total - 1)  # perception_models widens by one (without the clamp)
    return plm_loader_positions(start, end - start + 1, fps, max_frames, sampling_fps=sampling_fps,
                                repeat_short=False)


class FgqaTask(Task):
    """Multiple-choice questions; MBAcc groups the binary rows of one ``qa_uid``."""

    name = "fgqa"
    order = 10
    max_new_tokens = 16
    annotation = FgqaRow
    headline = "mbacc"
    question_task = True

    def prompt(self, clip: ClipPlan, target: Target) -> str:
        question = clip.questions[target.question_index]
        return fgqa_prompt(question.question, list(question.options))

    def rows(self, run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
        """The chosen option by the index reading (scored where the answer is known)."""
        clip = prompt.clip
        question = clip.questions[prompt.question_index]
        chosen = index_reading(text, len(question.options))
        credited = benchmark_credited(strip_final_period(text), len(question.options))
        columns: dict[str, Any] = {"question": question.question, "qa_uid": question.qa_uid,
                                   "options": list(question.options), "chosen_option": chosen,
                                   "answer_option": question.answer_index,
                                   "benchmark_reading_ok": chosen is not None and credited == [chosen]}
        answer = ""
        if chosen is None:
            columns["parse_error"] = "no option letter found in the answer"
        else:
            answer = question.options[chosen]
        if question.answer_index is not None:
            columns["correct"] = chosen == question.answer_index
        return [run.segment_row(clip, self.name, prompt.prompt, answer, text, **columns)]

    def eval_prompt(self, row: FgqaRow) -> str:
        return fgqa_prompt(row.question, row.options)

    def eval_positions(self, info: VideoInfo, row: FgqaRow) -> list[int]:
        return fgqa_positions(info, row.segment)

    def score(self, row: FgqaRow, prediction: str, plan: ClipPlan | None, judge: CaptionJudge | None) -> dict[str, Any]:
        """Correct when the benchmark reading credits the answer's option; the credited letters are kept."""
        credited = benchmark_credited(prediction, len(row.options))
        return {"qa_uid": row.qa_uid, "answer_index": row.answer_index,
                "credited_options": [option_letter(i) for i in credited],
                "correct": benchmark_credits(prediction, row.answer_index),
                "index_reading_option": index_reading(prediction, len(row.options))}

    def metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"mbacc": mbacc(rows), "binary_accuracy": sum(bool(r["correct"]) for r in rows) / len(rows),
                "num_questions": len({r["qa_uid"] for r in rows})}


TASK = FgqaTask()
