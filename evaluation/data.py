"""PLM-VideoBench annotation rows, validated up front.

The fields are the published ones (Hugging Face ``facebook/PLM-VideoBench``, read by lmms-eval's
``lmms_eval/tasks/plm_videobench/*/*_utils.py``); any other field is kept:

- FGQA (``fgqa/plm_fgqa_test.jsonl``): ``uid``, ``qa_uid``, ``video``, ``question``, ``answer``
  (the correct option's text), ``options`` (``{"option_0": ..., "option_1": ...}``),
  ``answer_index`` and ``metadata`` (``source_video_id``, ``source_dataset``,
  ``source_start_time``, ``source_end_time``, ``question_type``, ``source_domain``).
- SGQA: ``uid``, ``video``, ``question``, ``answer`` (and ``domain``).
- RCap / RTLoc: ``uid``, ``video``, ``masklet_id``, ``total_frames``, ``caption``,
  ``start_frame``, ``end_frame``.
- RDCap: ``uid``, ``video``, ``masklet_id``, ``total_frames``, ``dense_captions``
  (``[{"start_frame", "end_frame", "caption"}]``).
- Region boxes live in ``metadata/metadata_test.jsonl``: ``video``, ``masklet_id`` and ``bbox``,
  a dict from frame index (a string in JSON) to ``[x1, y1, x2, y2]`` in original-frame pixels
  (or null). Here a region row may also carry ``bbox`` itself.

Two extensions: a region row's ``bbox`` inline, and an optional ``segment: [start_s, end_s]`` on
FGQA/SGQA rows whose ``video`` is the untrimmed source (the published rows point at trimmed clips).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TASKS = ("fgqa", "sgqa", "rcap", "rtloc", "rdcap")
Task = Literal["fgqa", "sgqa", "rcap", "rtloc", "rdcap"]
REGION_TASKS = frozenset({"rcap", "rtloc", "rdcap"})

Box = tuple[float, float, float, float]


class AnnotationError(ValueError):
    """An annotation file with bad rows; ``errors`` holds ``(line, message)`` for every one."""

    def __init__(self, path: str, errors: list[tuple[int, str]]) -> None:
        self.path = path
        self.errors = errors
        shown = "\n".join(f"  line {line}: {message}" for line, message in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(f"{path}: {len(errors)} bad row(s)\n{shown}{more}")


def _check_box(box: Any) -> Box | None:
    if box is None or (isinstance(box, list | tuple) and len(box) == 0):
        return None  # lmms-eval skips empty boxes (``if bbox:``)
    if not isinstance(box, list | tuple) or len(box) != 4:
        raise ValueError(f"a box must be [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box {list(box)} has x2 < x1 or y2 < y1")
    return x1, y1, x2, y2


def _check_bbox_map(value: Any) -> dict[int, Box] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("bbox must be an object from frame index to [x1, y1, x2, y2]")
    boxes: dict[int, Box] = {}
    for key, box in value.items():
        try:
            frame = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"bbox key {key!r} is not a frame index") from None
        if frame < 0:
            raise ValueError(f"bbox key {key!r} is a negative frame index")
        checked = _check_box(box)
        if checked is not None:
            boxes[frame] = checked
    return boxes


class _Row(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    video: str
    uid: str | int | None = None

    @field_validator("video")
    @classmethod
    def _video_non_empty(cls, video: str) -> str:
        if not video.strip():
            raise ValueError("video is empty")
        return video.strip()


class _SegmentRow(_Row):
    segment: tuple[float, float] | None = None
    """Optional extension: the part of ``video`` (seconds) the question is about."""

    @field_validator("segment")
    @classmethod
    def _segment_ordered(cls, segment: tuple[float, float] | None) -> tuple[float, float] | None:
        if segment is not None and not 0 <= segment[0] < segment[1]:
            raise ValueError("segment must be [start_s, end_s] with 0 <= start_s < end_s")
        return segment


class FgqaRow(_SegmentRow):
    """One binary FGQA question; rows sharing a ``qa_uid`` form one multiple-choice question."""

    qa_uid: str | int
    question: str
    options: list[str]
    answer: str | None = None
    answer_index: int | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("options", mode="before")
    @classmethod
    def _options_in_order(cls, options: Any) -> Any:
        # Published as {"option_0": ..., "option_1": ...}; lmms-eval letters each by its key's
        # number. Null values (struct padding) are dropped.
        if isinstance(options, dict):
            keyed = []
            for key, text in options.items():
                try:
                    index = int(str(key).split("_")[-1])
                except ValueError:
                    raise ValueError(f"option key {key!r} does not end in _<number>") from None
                if text is not None:
                    keyed.append((index, text))
            indices = [index for index, _ in keyed]
            if sorted(indices) != list(range(len(indices))):
                raise ValueError(f"option keys must number 0..n-1, got {sorted(indices)}")
            return [text for _, text in sorted(keyed)]
        return options

    @model_validator(mode="after")
    def _answer_consistent(self) -> FgqaRow:
        if len(self.options) < 2:
            raise ValueError("FGQA needs at least two options")
        if len(self.options) > 26:
            raise ValueError("FGQA supports at most 26 options (A..Z)")
        index = self.answer_index
        if index is None:
            if self.answer is None:
                raise ValueError("give answer_index or answer")
            if self.answer not in self.options:
                raise ValueError(f"answer {self.answer!r} is not one of the options")
            object.__setattr__(self, "answer_index", self.options.index(self.answer))
        elif not 0 <= index < len(self.options):
            raise ValueError(f"answer_index {index} is outside 0..{len(self.options) - 1}")
        elif self.answer is not None and self.options[index] != self.answer:
            raise ValueError(f"answer_index {index} names {self.options[index]!r}, not answer {self.answer!r}")
        return self


class SgqaRow(_SegmentRow):
    """One open question about an egocentric video."""

    question: str
    answer: str


class _RegionRow(_Row):
    masklet_id: int | str | None = None
    total_frames: int = Field(gt=0)
    bbox: dict[int, Box] | None = None

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox(cls, value: Any) -> dict[int, Box] | None:
        return _check_bbox_map(value)


class RcapRow(_RegionRow):
    """Caption the region's events within ``[start_frame, end_frame]`` (source-video frames)."""

    caption: str
    start_frame: int = Field(ge=0)
    end_frame: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> RcapRow:
        if self.end_frame < self.start_frame:
            raise ValueError("end_frame is before start_frame")
        return self


class RtlocRow(RcapRow):
    """Find when ``caption`` happens for the region; the answer is ``[start_frame, end_frame]``."""


class DenseCaption(BaseModel):
    """One ground-truth RDCap event, in source-video frames."""

    model_config = ConfigDict(extra="allow", frozen=True)

    start_frame: int = Field(ge=0)
    end_frame: int = Field(ge=0)
    caption: str

    @model_validator(mode="after")
    def _ordered(self) -> DenseCaption:
        if self.end_frame < self.start_frame:
            raise ValueError("end_frame is before start_frame")
        return self


class RdcapRow(_RegionRow):
    """Dense captions of the region's events."""

    dense_captions: list[DenseCaption] = Field(min_length=1)


class RegionMetadata(BaseModel):
    """One row of the published ``metadata/metadata_test.jsonl``: a masklet's boxes per frame."""

    model_config = ConfigDict(extra="allow", frozen=True)

    video: str
    masklet_id: int | str
    bbox: dict[int, Box]

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox(cls, value: Any) -> dict[int, Box] | None:
        return _check_bbox_map(value)


ROW_MODELS: dict[str, type[_Row]] = {
    "fgqa": FgqaRow, "sgqa": SgqaRow, "rcap": RcapRow, "rtloc": RtlocRow, "rdcap": RdcapRow,
}

AnnotationRow = FgqaRow | SgqaRow | RcapRow | RtlocRow | RdcapRow


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "row"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _json_lines(path: str) -> Iterable[tuple[int, str]]:
    from core import storage

    if storage.is_remote(path):
        with storage.open_read(path) as handle:
            text = handle.read().decode("utf-8")
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of rows; report positions as 1-based row numbers
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AnnotationError(path, [(exc.lineno, f"not valid JSON: {exc.msg}")]) from None
        for number, row in enumerate(rows, start=1):
            yield number, json.dumps(row)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def _parse_rows(path: str, model: type[BaseModel]) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    rows: list[tuple[int, Any]] = []
    errors: list[tuple[int, str]] = []
    for number, line in _json_lines(path):
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append((number, f"not valid JSON: {exc.msg}"))
            continue
        if not isinstance(data, dict):
            errors.append((number, "a row must be a JSON object"))
            continue
        try:
            rows.append((number, model.model_validate(data)))
        except ValidationError as exc:
            errors.append((number, _format_validation(exc)))
    return rows, errors


def load_region_metadata(path: str) -> dict[tuple[str, str], dict[int, Box]]:
    """Boxes by ``(video, str(masklet_id))`` from a published-style metadata file."""
    rows, errors = _parse_rows(path, RegionMetadata)
    if errors:
        raise AnnotationError(path, errors)
    return {(row.video, str(row.masklet_id)): row.bbox for _, row in rows}


def load_annotations(path: str, task: str, *, metadata: str | None = None) -> list[tuple[int, AnnotationRow]]:
    """Every row of ``path`` as ``(line number, row)``, or ``AnnotationError`` naming every bad line.

    The whole file is read and checked before any work starts. Region rows take their boxes from
    ``bbox`` in the row or, failing that, from ``metadata`` (matched on ``video`` and
    ``masklet_id``); a region row with neither is a bad row.
    """
    if task not in ROW_MODELS:
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if not path.startswith("gs://") and not os.path.exists(path):
        raise FileNotFoundError(f"annotation file {path} does not exist")
    rows, errors = _parse_rows(path, ROW_MODELS[task])
    if task in REGION_TASKS:
        boxes = load_region_metadata(metadata) if metadata else {}
        resolved = []
        for number, row in rows:
            if row.bbox is None:
                found = boxes.get((row.video, str(row.masklet_id)))
                if found is None:
                    where = f"in {metadata} " if metadata else ""
                    errors.append((number, f"no region boxes: give bbox in the row or a --metadata file "
                                           f"{where}with video {row.video!r} and masklet_id {row.masklet_id!r}"))
                    continue
                row = row.model_copy(update={"bbox": found})
            resolved.append((number, row))
        rows = resolved
    if errors:
        raise AnnotationError(path, sorted(errors))
    if not rows:
        raise AnnotationError(path, [(0, "the file holds no rows")])
    return rows
