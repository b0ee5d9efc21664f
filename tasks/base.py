"""What every task provides, so that the CLI, the pipeline, ``eval`` and search need no task lists.

A task is one module in ``tasks/`` with a ``TASK`` object, an instance of a ``Task`` subclass:

- **index side** (``plm-index build``): ``targets`` (expansion over a clip: one prompt per
  question or region), ``prompt`` (the words), ``max_new_tokens`` (the budget) and ``rows``
  (the answer read by the forgiving *index reading*, as segment rows; each row also says in
  ``benchmark_reading_ok`` whether the benchmark's own reading accepts the answer the same way);
- **benchmark side** (``plm-index eval``), for tasks with ``annotation`` set: ``eval_prompt``,
  ``eval_positions`` (the benchmark's per-task frame sampling), ``eval_boxes``, ``score`` (the
  answer read by the *benchmark reading*, lmms-eval's rules exactly) and ``metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from schemas.benchmark import Box
from schemas.records import ClipPlan, ClipPrompt, VideoInfo
from schemas.rows import RunContext
from tasks.prompts import NUM_VIDEO_FRAMES


@dataclass(frozen=True)
class Target:
    """What one prompt of a task is about within a clip: a question, a region, or the whole clip."""

    question_index: int | None = None
    region_id: str | None = None


class CaptionJudge(Protocol):
    """The judge calls a task's scoring needs (``evaluation/judge.py`` implements them)."""

    def score_caption(self, gt: str, pred: str) -> Any:
        """A judgement with ``score`` (0-10), ``parsed`` and ``explanation``."""
        ...

    def judge_sgqa(self, question: str, pred: str, target: str) -> Any:
        """A judgement with ``correct``, ``score`` and ``parsed``."""
        ...


class Task:
    """One task's whole knowledge. Subclasses set the class attributes and override the methods."""

    name: ClassVar[str]
    order: ClassVar[int] = 100
    """Position in task lists (CLI help, error messages)."""
    max_new_tokens: ClassVar[int | None] = None
    """The generation budget; None: the build's ``--max-new-tokens`` (free captions)."""
    annotation: ClassVar[type[BaseModel] | None] = None
    """The PLM-VideoBench row model ``eval`` reads; None: the task has no benchmark."""
    judged: ClassVar[bool] = False
    """Whether ``eval`` needs an LLM judge (``--judge``) to score it."""
    headline: ClassVar[str | None] = None
    """The metric ``eval`` reports first."""
    region_task: ClassVar[bool] = False
    """Whether the task is about a tracked region (boxes drawn on the frames)."""
    question_task: ClassVar[bool] = False
    """Whether the task answers a question from the manifest or ``--question``."""
    num_frames: ClassVar[int] = NUM_VIDEO_FRAMES

    # ----------------------------------------------------------------------------- index side

    def budget(self, caption_max_new_tokens: int) -> int:
        """Tokens to generate: the task's own budget, or the build's for tasks without one."""
        return self.max_new_tokens if self.max_new_tokens is not None else caption_max_new_tokens

    def targets(self, clip: ClipPlan) -> Iterator[Target]:
        """The prompts this task makes for one clip: one per question of this task when it is a
        ``question_task``, else one about the whole clip."""
        if not self.question_task:
            yield Target()
            return
        for index, question in enumerate(clip.questions):
            if question.task == self.name:
                yield Target(question_index=index)

    def prompt(self, clip: ClipPlan, target: Target) -> str:
        """The prompt text for one target of one clip."""
        raise NotImplementedError

    def rows(self, run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
        """The answer read by the index reading, as segment rows (an unreadable one keeps ``parse_error``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- benchmark side

    def eval_prompt(self, row: Any) -> str:
        """The benchmark's prompt for an annotation row, word for word."""
        raise NotImplementedError(f"{self.name} has no benchmark")

    def eval_positions(self, info: VideoInfo, row: Any) -> list[int]:
        """The source-frame indices the benchmark feeds the model for this row."""
        raise NotImplementedError(f"{self.name} has no benchmark")

    def eval_boxes(self, row: Any) -> dict[int, Box] | None:
        """Region boxes by source-frame index, drawn on the sampled frames (None: no boxes)."""
        return None

    def score(self, row: Any, prediction: str, plan: ClipPlan | None, judge: CaptionJudge | None) -> dict[str, Any]:
        """The prediction read by the benchmark reading and scored: the report's per-row fields."""
        raise NotImplementedError(f"{self.name} has no benchmark")

    def metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The task's metrics over scored report rows."""
        raise NotImplementedError(f"{self.name} has no benchmark")


def region_of(clip: ClipPlan, region_id: str | None) -> Any:
    """The clip's region ``region_id`` (a ``RegionOnClip``)."""
    for region in clip.regions:
        if region.region_id == region_id:
            return region
    raise ValueError(f"clip {clip.clip_index} of {clip.uri} has no region {region_id!r}")


def seconds_of(plan: ClipPlan | None, start: int, end: int) -> list[float] | None:
    """Seconds covered by sampled frames ``[start, end]``, or None without a plan or outside it."""
    from tasks.reading import frames_to_seconds

    if plan is None or not 0 <= start <= end < len(plan.sample_times):
        return None
    return list(frames_to_seconds(start, end, plan.sample_times, plan.sample_end_times))
