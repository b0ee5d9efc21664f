"""rtloc: when does a described event of a tracked region happen? Answered as ``[start, end]`` frames.

Prompt: lmms-eval's ``rtloc/rtloc_utils.py``; budget 16 tokens. Scored by recall at temporal IoU
above 0.3/0.5/0.7/0.9 (strictly above, with lmms-eval's ``calculate_iou``: see
``tasks.scoring.temporal_iou``), their mean, and mIoU.

Two readings of an answer:

- **index reading** (``tasks.reading.parse_frame_range``, used by ``build``): forgiving. The
  first "[a, b]" or "(a, b)", spaces allowed inside, negative or decimal numbers; rounded,
  ordered and clamped to the sampled frames.
- **benchmark reading** (``benchmark_window``, used by ``eval``): lmms-eval's exactly. Only the
  first match of ``[digits(.digits)?,<spaces>digits(.digits)?]`` counts (no space after "[" or
  before "]", no sign, no round brackets), read as a Python literal (so "[03, 9]", a leading zero,
  is unreadable). No match, or an unreadable one, is a parse error, and lmms-eval then scores the
  range ``[end_frame + 10, end_frame + 20]`` in *source* frames against the 32-frame ground truth,
  which overlaps it when the source has fewer than 32 frames (kept here, quirk included).

A row's ``benchmark_reading_ok`` is true when the benchmark reading finds the same range, at the
same place in the answer, as the index reading.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from schemas.benchmark import RtlocRow
from schemas.records import ClipPlan, ClipPrompt
from schemas.rows import RunContext
from tasks.base import CaptionJudge, Target, region_of, seconds_of
from tasks.prompts import NUM_VIDEO_FRAMES
from tasks.reading import frames_to_seconds, parse_frame_range, strip_final_period
from tasks.regions import RegionTask, region_columns
from tasks.scoring import RTLOC_IOU_THRESHOLDS, rtloc_scores, temporal_iou

_RTLOC_PROMPT = (
    "Given the region marked by the red rectangle in the video, please provide the start and end "
    "frame of when '{caption}' happens. Use the format [start, end] where start and end are frame "
    "numbers between {min_frame_idx} and {max_frame_idx} in this {num_frames} frame video."
)

_BENCHMARK_WINDOW = re.compile(r"\[[0-9]+(?:\.[0-9]+)?,\s*[0-9]+(?:\.[0-9]+)?\]")


def rtloc_prompt(caption: str, num_frames: int = NUM_VIDEO_FRAMES) -> str:
    """The RTLoc prompt: the model answers ``[start, end]`` in 0..num_frames-1."""
    return _RTLOC_PROMPT.format(caption=caption, min_frame_idx=0, max_frame_idx=num_frames - 1,
                                num_frames=num_frames)


def benchmark_window(prediction: str) -> tuple[float, float, int] | None:
    """The benchmark reading: ``(start, end, offset)`` as written (not ordered), or None for a parse error."""
    match = _BENCHMARK_WINDOW.search(prediction)
    if match is None:
        return None
    try:
        first, second = ast.literal_eval(match.group(0))
    except (SyntaxError, ValueError):  # "[03, 9]": Python rejects leading zeros, so lmms-eval does
        return None
    return float(first), float(second), match.start()


def benchmark_row_scores(prediction: str, row: RtlocRow) -> dict[str, Any]:
    """lmms-eval's per-row RTLoc result: the window read (or its parse-error stand-in) and its scores."""
    gt = (TASK.gt_frame(row.start_frame, row), TASK.gt_frame(row.end_frame, row))
    window = benchmark_window(prediction)
    parse_error = window is None
    pred = (float(row.end_frame + 10), float(row.end_frame + 20)) if window is None else window[:2]
    iou = temporal_iou(pred, gt)
    hits = {threshold: iou > threshold for threshold in RTLOC_IOU_THRESHOLDS}
    mean_recall = sum(hits.values()) / len(hits)
    return {"gt_range": list(gt), "pred_range": None if parse_error else list(pred), "scored_range": list(pred),
            "parse_error": parse_error, "iou": iou, "hits": {str(t): h for t, h in hits.items()},
            "mean_recall": mean_recall, "mean_precision": mean_recall}


class RtlocTask(RegionTask):
    """Temporal localisation of a described region event."""

    name = "rtloc"
    order = 40
    max_new_tokens = 16
    annotation = RtlocRow
    headline = "mean_recall"
    needs_caption = True

    def prompt(self, clip: ClipPlan, target: Target) -> str:
        return rtloc_prompt(region_of(clip, target.region_id).caption or "", len(clip.sample_times))

    def rows(self, run: RunContext, prompt: ClipPrompt, text: str) -> list[dict[str, Any]]:
        """A time range read by the index reading; an unreadable answer is kept with its reason."""
        clip = prompt.clip
        region = region_of(clip, prompt.region_id)
        columns = region_columns(region)
        found = parse_frame_range(text, len(clip.sample_times))
        caption = region.caption or ""
        if not found.ok:
            return [run.segment_row(clip, self.name, prompt.prompt, caption, text, benchmark_reading_ok=False,
                                    parse_error=f"{found.error}; raw output kept", **columns)]
        window = benchmark_window(strip_final_period(text))
        ok = window is not None and window[2] == found.offset and sorted(window[:2]) == [found.raw_start,
                                                                                          found.raw_end]
        start_s, end_s = frames_to_seconds(found.start, found.end, clip.sample_times, clip.sample_end_times)
        return [run.segment_row(clip, self.name, prompt.prompt, caption, text, start_s=start_s, end_s=end_s,
                                start_frame=found.start, end_frame=found.end, raw_start_frame=found.raw_start,
                                raw_end_frame=found.raw_end, clamped=found.clamped, benchmark_reading_ok=ok,
                                **columns)]

    def eval_prompt(self, row: RtlocRow) -> str:
        return rtloc_prompt(row.caption)

    def score(self, row: RtlocRow, prediction: str, plan: ClipPlan | None, judge: CaptionJudge | None) -> dict[str, Any]:
        out = benchmark_row_scores(prediction, row)
        pred = out["pred_range"]
        out["pred_seconds"] = None if pred is None else seconds_of(plan, round(min(pred)), round(max(pred)))
        return out

    def metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """lmms-eval's means over rows; a parse error counts with its stand-in range, as there."""
        scores = rtloc_scores([tuple(r["scored_range"]) for r in rows], [tuple(r["gt_range"]) for r in rows])
        out: dict[str, Any] = {"mean_recall": scores.mean_recall}
        out.update({f"recall@{t}": v for t, v in scores.recall_at.items()})
        out["mean_precision"] = scores.mean_recall  # one prediction per row: precision equals recall
        out["miou"] = scores.miou
        out["parse_errors"] = sum(bool(r["parse_error"]) for r in rows)
        return out


TASK = RtlocTask()
