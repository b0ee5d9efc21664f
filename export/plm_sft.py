"""perception_models' SFT data format, and how one answer of the index becomes one line of it.

The format, as facebookresearch/perception_models reads it (read there, not copied):

- ``apps/plm/docs/training.md``: JSONL, one sample a line: a ``video`` path and ``conversations``,
  a list of ``{"from": "human" | "assistant", "value": ...}`` turns. A dataset is registered in
  ``apps/plm/configs/datasets.yaml`` by name, with ``annotation`` (the JSONL) and ``root_dir``
  (the folder ``video`` is joined onto), then named in a training config's ``data.datamix``.
- ``core/data/preprocessor.py`` (``VisionPreprocessor.process``): a video row may also carry
  ``start_time`` and ``end_time`` (seconds) and ``bbox_map``; the tokenizer adds the media tokens,
  so the human turn is the prompt text alone. The ``bbox`` + ``width``/``height`` keys, written
  into the text as ``<|bbox0|>`` (``core/transforms/region_transform.py``), are the *image* region
  form; the video region tasks (RCap, RTLoc, RDCap) give their boxes as ``bbox_map``.
- ``core/transforms/video_transform.py`` (``VideoTransform.load_video`` and ``__call__``): the
  frames ``int(start_time * fps)`` .. ``min(int(end_time * fps), num_frames - 1)`` of the file
  (``fps`` its average rate), candidates every ``round(fps)`` frames, thinned to
  ``max_video_frames`` by PLM's uniform rule (``core.sampling.plm_loader_positions``);
  ``bbox_map`` maps ``str(frame index in the file)`` to an ``[x1, y1, x2, y2]`` pixel box drawn
  as a 4 px red rectangle on that frame when it is sampled.

So an exported line carries, beside the two turns, the loader times of the clip's first and last
sampled frames (so the trainer samples the frames the model answered about) and, for region
tasks, the boxes keyed by the file frame index of each sampled frame. Frame indices are computed
from the index's timestamps and the video's frame rate, exact for constant-frame-rate video; a
line whose loader would sample other frames is left out as doubtful (``sampling_differs``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.sampling import plm_loader_positions

FORMAT = "plm-sft"

# Why a row may not be good training data. The first five say the model may have got it wrong,
# the last two that the trainer would not see the frames the model saw.
DOUBT_REASONS = {
    "unparsed": "the answer could not be parsed (parse_error)",
    "clamped": "a frame index of the answer was out of range and clamped",
    "benchmark_reading_differs": "PLM-VideoBench's own reading would read the answer differently",
    "wrong_answer": "the chosen option is not the manifest's answer",
    "empty_answer": "the model answered nothing",
    "short_clip": "the clip has fewer frames than the model saw (it saw some twice; the loader takes each once)",
    "sampling_differs": "the trainer's loader would sample other frames than the model saw (variable frame rate?)",
}

# Seconds of slack when matching a frame's timestamp: well under half a frame at any real rate.
TIME_TOLERANCE_S = 1e-3


@dataclass(frozen=True)
class Answer:
    """One prompt of one clip and what the model answered: the rows the index holds for it.

    Every task writes one row per answer except RDCap, which writes one row per event of the
    answer (all with the same raw output); those rows are one answer, so one conversation.
    """

    rows: tuple[dict[str, Any], ...]

    @property
    def first(self) -> dict[str, Any]:
        """The answer's first row (the columns every row of it shares)."""
        return self.rows[0]

    @property
    def task(self) -> str:
        """The task that asked."""
        return str(self.first["task"])

    @property
    def prompt(self) -> str:
        """The prompt as PLM was asked it (written by the task's module in ``tasks/`` at build time)."""
        return str(self.first["prompt"] or "")

    @property
    def reply(self) -> str:
        """The model's answer text as it generated it (``raw_output``: what the prompt asked for)."""
        return str(self.first["raw_output"] or "").strip()

    @property
    def sample_times(self) -> list[float]:
        """Start times (s) of the clip's sampled frames, in the order the model saw them."""
        return list(self.first["frame_timestamps"] or [])


def group_answers(rows: Iterable[dict[str, Any]]) -> list[Answer]:
    """The rows as answers: RDCap's per-event rows of one prompt together, every other row alone."""
    answers: list[Answer] = []
    rdcap: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if row["task"] == "rdcap":
            key = (row["settings_hash"], row["video_id"], row["clip_index"], row["region_id"], row["prompt"])
            rdcap.setdefault(key, []).append(row)
        else:
            answers.append(Answer((row,)))
    answers.extend(Answer(tuple(group)) for group in rdcap.values())
    return answers


def frame_positions(times: Sequence[float], fps: float) -> list[int]:
    """File frame indices of frames starting at ``times`` (s from the first frame), at ``fps``."""
    return [int(round(t * fps)) for t in times]


def loader_time(position: int, fps: float) -> float:
    """The shortest time (s, 6 decimals) that PLM's loader reads as frame ``position``: int(t * fps)."""
    t = round(position / fps, 6)
    while int(t * fps) < position:
        t = round(t + 1e-6, 6)
    return t


def loader_positions(start_time: float, end_time: float, fps: float, num_frames: int, max_frames: int) -> list[int]:
    """The file frames perception_models' ``VideoTransform.load_video`` samples for this span."""
    first = int(start_time * fps)
    last = min(int(end_time * fps), num_frames - 1)
    if first > last:
        first, last = last, first
    elif first == last:
        last = first + 1
    return plm_loader_positions(first, last - first + 1, fps, max_frames, repeat_short=False)


def doubt(answer: Answer, positions: Sequence[int], loader: Sequence[int]) -> str | None:
    """Why ``answer`` may be bad training data (a key of ``DOUBT_REASONS``), or None.

    ``positions`` are the file frames the model saw, ``loader`` those the trainer's loader would
    sample for the exported span.
    """
    rows = answer.rows
    if any(r.get("parse_error") for r in rows):
        return "unparsed"
    if any(r.get("clamped") for r in rows):
        return "clamped"
    if any(r.get("benchmark_reading_ok") is False for r in rows):
        return "benchmark_reading_differs"
    if any(r.get("correct") is False for r in rows):
        return "wrong_answer"
    if not answer.reply:
        return "empty_answer"
    if len(set(positions)) < len(positions):
        return "short_clip"
    if list(loader) != list(positions):
        return "sampling_differs"
    return None


def bbox_map(answer: Answer, positions: Sequence[int], offset: int = 0) -> dict[str, list[float]] | None:
    """The region's boxes keyed as the loader reads them: ``str(file frame index - offset)``.

    The index keeps a box per sampled frame (``region_boxes[].frame`` is the index into the
    clip's sampled frames); the loader draws ``bbox_map[str(position)]`` on the frame it samples
    at ``position``. None for tasks without a region.
    """
    boxes = answer.first.get("region_boxes")
    if answer.first.get("region_id") is None or not boxes:
        return None
    return {str(positions[b["frame"]] - offset): [float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"])]
            for b in boxes if 0 <= b["frame"] < len(positions)}


def sft_line(answer: Answer, video: str, positions: Sequence[int], fps: float, offset: int = 0,
             cut: str | None = None, doubtful: str | None = None) -> dict[str, Any]:
    """One JSONL sample: ``video``, the loader span, ``bbox_map`` for region tasks, two turns.

    ``video`` is what the trainer opens (joined onto the dataset's ``root_dir``); ``offset`` is the
    file frame index where that file starts in the source (a cut clip), so times and box keys are
    relative to it. ``source`` is ignored by perception_models' loader and says where the line
    came from in the index (and, for a doubtful answer kept on request, why it is doubtful).
    """
    first = answer.first
    line: dict[str, Any] = {
        "video": video,
        "start_time": loader_time(positions[0] - offset, fps),
        "end_time": loader_time(positions[-1] - offset, fps),
    }
    boxes = bbox_map(answer, positions, offset)
    if boxes is not None:
        line["bbox_map"] = boxes
    line["conversations"] = [{"from": "human", "value": answer.prompt},
                             {"from": "assistant", "value": answer.reply}]
    line["source"] = {
        "uri": first["uri"], "video_id": first["video_id"], "clip_index": first["clip_index"], "task": answer.task,
        "region_id": first.get("region_id"), "question": first.get("question"),
        "clip_start_s": _finite(answer.sample_times[0]) if answer.sample_times else None,
        "num_frames": len(positions), "answer_start_s": _finite(min(r["start_s"] for r in answer.rows)),
        "answer_end_s": _finite(max(r["end_s"] for r in answer.rows)), "settings_hash": first["settings_hash"],
        "model_id": first.get("model_id"), "cut": cut, "doubt": doubtful,
    }
    return line


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
