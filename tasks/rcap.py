"""rcap: describe what a tracked region does within a frame range, judged by an LLM (score / 10).

Prompt: lmms-eval's ``rcap/rcap_utils.py`` (with its quirk: frames rescaled to the 32-frame space
but ``total_frames`` the source's); budget 512 tokens. The answer is free text: both readings take
it as written (the benchmark strips one trailing "."), so ``benchmark_reading_ok`` is true.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.benchmark import RcapRow
from schemas.records import ClipPlan, ClipPrompt
from schemas.rows import RunContext
from tasks.base import CaptionJudge, Target, region_of
from tasks.prompts import NUM_VIDEO_FRAMES
from tasks.reading import frames_to_seconds
from tasks.regions import RegionTask, region_columns
from tasks.scoring import rcap_score

_RCAP_PROMPT = (
    "Give a detailed description of the events occurring in the region marked by the red rectangle "
    "within frames [{start_frame}, {end_frame}] in this {total_frames} frame video."
)


def rcap_prompt(start_frame: int, end_frame: int, total_frames: int = NUM_VIDEO_FRAMES) -> str:
    """The RCap region-captioning prompt for frames ``[start_frame, end_frame]``.

    ``start_frame`` and ``end_frame`` are indices into the sampled frames. Beware a benchmark quirk:
    lmms-eval's ``plm_rcap_doc_to_text`` rescales start and end into the 32-frame space but fills
    ``{total_frames}`` with the *source video's* frame count (``doc["total_frames"]``), so to
    reproduce its strings pass that count here; the default 32 gives the self-consistent wording.
    """
    return _RCAP_PROMPT.format(start_frame=start_frame, end_frame=end_frame, total_frames=total_frames)


class RcapTask(RegionTask):
    """Region captions over the frames where the region has boxes."""

    name = "rcap"
    order = 30
    max_new_tokens = 512
    annotation = RcapRow
    judged = True
    headline = "judge_score"

    def prompt(self, clip: ClipPlan, target: Target) -> str:
        region = region_of(clip, target.region_id)
        return rcap_prompt(region.start_frame, region.end_frame, len(clip.sample_times))

    def rows(self, run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
        clip = prompt.clip
        region = region_of(clip, prompt.region_id)
        start_s, end_s = frames_to_seconds(region.start_frame, region.end_frame, clip.sample_times,
                                           clip.sample_end_times)
        return [run.segment_row(clip, self.name, prompt.prompt, text, text, start_s=start_s, end_s=end_s,
                                start_frame=region.start_frame, end_frame=region.end_frame,
                                benchmark_reading_ok=True, **region_columns(region))]

    def eval_prompt(self, row: RcapRow) -> str:
        return rcap_prompt(self.gt_frame(row.start_frame, row), self.gt_frame(row.end_frame, row),
                           total_frames=row.total_frames)

    def score(self, row: RcapRow, prediction: str, plan: ClipPlan | None, judge: CaptionJudge | None) -> dict[str, Any]:
        if judge is None:
            raise ValueError("rcap is scored by an LLM judge: pass --judge")
        judgement = judge.score_caption(row.caption, prediction)
        return {"gt_caption": row.caption, "judge_score": judgement.score, "judge_parsed": judgement.parsed,
                "judge_explanation": judgement.explanation}

    def metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"judge_score": rcap_score([r["judge_score"] for r in rows]),
                "judge_parse_rate": sum(bool(r["judge_parsed"]) for r in rows) / len(rows)}


TASK = RcapTask()
