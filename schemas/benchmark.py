"""PLM-VideoBench annotation rows as pydantic models: the published fields, validated up front.

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

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


def check_bbox_map(value: Any) -> dict[int, Box] | None:
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


class AnnotationBase(BaseModel):
    """A row of any task: the video it is about and its uid; unknown fields are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    video: str
    uid: str | int | None = None

    @field_validator("video")
    @classmethod
    def _video_non_empty(cls, video: str) -> str:
        if not video.strip():
            raise ValueError("video is empty")
        return video.strip()


class SegmentAnnotation(AnnotationBase):
    """A question row, optionally about a part of its video."""

    segment: tuple[float, float] | None = None
    """Optional extension: the part of ``video`` (seconds) the question is about."""

    @field_validator("segment")
    @classmethod
    def _segment_ordered(cls, segment: tuple[float, float] | None) -> tuple[float, float] | None:
        if segment is not None and not 0 <= segment[0] < segment[1]:
            raise ValueError("segment must be [start_s, end_s] with 0 <= start_s < end_s")
        return segment


class FgqaRow(SegmentAnnotation):
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


class SgqaRow(SegmentAnnotation):
    """One open question about an egocentric video."""

    question: str
    answer: str


class RegionAnnotation(AnnotationBase):
    """A region row: a masklet of a video with ``total_frames`` frames and its boxes."""

    masklet_id: int | str | None = None
    total_frames: int = Field(gt=0)
    bbox: dict[int, Box] | None = None

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox(cls, value: Any) -> dict[int, Box] | None:
        return check_bbox_map(value)


class RcapRow(RegionAnnotation):
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


class RdcapRow(RegionAnnotation):
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
        return check_bbox_map(value)


AnnotationRow = FgqaRow | SgqaRow | RcapRow | RtlocRow | RdcapRow
