"""Attach a video's questions and regions (from the manifest or the CLI) to its planned clips."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from schemas.manifest import ManifestRow, Question, Region, check_box
from schemas.records import ClipPlan, QuestionOnClip, RegionOnClip, VideoInfo


def _overlaps(clip: ClipPlan, start_s: float | None, end_s: float | None) -> bool:
    start = 0.0 if start_s is None else start_s
    end = float("inf") if end_s is None else end_s
    return start < clip.end_s and end > clip.start_s


def _box_for_time(boxes: dict[float, list[float]], t: float, tolerance: float) -> list[float] | None:
    keys = np.asarray(sorted(boxes), dtype=np.float64)
    nearest = keys[int(np.argmin(np.abs(keys - t)))]
    return boxes[float(nearest)] if abs(nearest - t) <= tolerance else None


def region_on_clip(region: Region, clip: ClipPlan) -> RegionOnClip | None:
    """The region's boxes on the clip's sampled frames, or None if it has none there.

    A box keyed by frame index lands on the sampled frame with that original index; one keyed by
    time lands on the sampled frame whose interval contains it (nearest within half a frame); a
    single box lands on every sampled frame that starts inside ``start_s``..``end_s``.
    """
    boxes: list[tuple[float, float, float, float] | None] = []
    for index, start, end in zip(clip.sample_frame_indices, clip.sample_times, clip.sample_end_times, strict=True):
        box = None
        if region.boxes_by_frame is not None:
            box = region.boxes_by_frame.get(index)
        elif region.boxes_by_time is not None:
            box = _box_for_time(region.boxes_by_time, start, max((end - start) / 2, 1e-3))
        elif region.start_s is not None and region.end_s is not None and region.start_s <= start + 1e-6 < region.end_s:
            box = region.box
        if box is not None and region.start_s is not None and region.end_s is not None and region.box is None:
            if not region.start_s <= start + 1e-6 < region.end_s:
                box = None
        boxes.append(check_box(box) if box is not None else None)
    present = [slot for slot, box in enumerate(boxes) if box is not None]
    if not present:
        return None
    return RegionOnClip(region_id=region.region_id, boxes=tuple(boxes), start_frame=present[0],
                        end_frame=present[-1], caption=region.caption, tasks=tuple(region.tasks or ()))


def question_on_clip(question: Question) -> QuestionOnClip:
    """A validated question as the clip carries it."""
    return QuestionOnClip(task=question.kind(), question=question.question, options=tuple(question.options or ()),
                          answer_index=question.answer_index(), qa_uid=question.qa_uid)


def annotate_clips(info: VideoInfo, clips: list[ClipPlan], cli_questions: tuple[Question, ...] = ()) -> list[ClipPlan]:
    """Each clip with the regions that have boxes on it and the questions asked about it."""
    row = ManifestRow.model_validate({"uri": info.uri, **json.loads(info.extras_json or "{}")})
    questions = [*row.questions, *cli_questions]
    if not questions and not row.regions and not row.tasks:
        return clips
    annotated = []
    for clip in clips:
        regions = tuple(r for r in (region_on_clip(region, clip) for region in row.regions) if r is not None)
        asked = tuple(question_on_clip(q) for q in questions if _overlaps(clip, q.start_s, q.end_s))
        annotated.append(replace(clip, regions=regions, questions=asked, tasks=tuple(row.tasks or ())))
    return annotated
