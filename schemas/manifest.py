"""The manifest: a JSONL, CSV or Parquet file listing videos, validated row by row.

A row has a ``uri`` and, optionally, ``questions`` and ``regions`` for the fine-grained tasks:

    {"uri": "kitchen/0001.mp4",
     "questions": [{"question": "How does the person cut the tomato?",
                    "options": ["vertically", "horizontally"], "answer": 0,
                    "start_s": 0, "end_s": 30}],
     "regions": [{"region_id": "person-1", "caption": "the person picks up the knife",
                  "boxes_by_frame": {"0": [10, 20, 200, 300], "1": [12, 20, 202, 300]}},
                 {"region_id": "cup", "box": [400, 80, 520, 200], "start_s": 2.0, "end_s": 9.5}]}

Boxes are ``[x1, y1, x2, y2]`` in original (upright) video pixels, keyed by frame index
(``boxes_by_frame``) or by timestamp in seconds (``boxes_by_time``), or one ``box`` held over
``start_s``..``end_s``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def check_box(box: list[float]) -> tuple[float, float, float, float]:
    """Validate one ``[x1, y1, x2, y2]`` box."""
    if len(box) != 4:
        raise ValueError(f"a box needs 4 numbers [x1, y1, x2, y2], got {len(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if min(x1, y1, x2, y2) < 0:
        raise ValueError(f"box {box} has negative coordinates")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {box} must have x2 > x1 and y2 > y1")
    return (x1, y1, x2, y2)


class Question(BaseModel):
    """A question about a video, or about a time range of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str = Field(min_length=1)
    options: list[str] | None = None
    answer: int | str | None = None
    task: Literal["fgqa", "sgqa"] | None = None
    start_s: float | None = Field(None, ge=0)
    end_s: float | None = Field(None, ge=0)
    qa_uid: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        task = self.kind()
        if task == "fgqa" and (not self.options or len(self.options) < 2):
            raise ValueError("an fgqa question needs at least 2 options")
        if task == "sgqa" and self.options:
            raise ValueError("an sgqa question takes no options")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError("end_s must be after start_s")
        if task == "fgqa" and self.answer is not None and self.answer_index() is None:
            raise ValueError(f"answer {self.answer!r} is neither an option index, a letter nor an option's text")
        return self

    def kind(self) -> str:
        """fgqa when options are given, else sgqa (unless ``task`` says)."""
        return self.task or ("fgqa" if self.options else "sgqa")

    def answer_index(self) -> int | None:
        """The correct option's index, from an index, a letter (A, (B)) or the option text."""
        if self.answer is None or not self.options:
            return None
        if isinstance(self.answer, int):
            return self.answer if 0 <= self.answer < len(self.options) else None
        text = self.answer.strip()
        letter = text.strip("() ").upper()
        if len(letter) == 1 and "A" <= letter <= "Z" and ord(letter) - 65 < len(self.options):
            return ord(letter) - 65
        if text in self.options:
            return self.options.index(text)
        return None


class Region(BaseModel):
    """A subject tracked through time, marked for PLM by a red rectangle."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region_id: str = Field(min_length=1)
    boxes_by_frame: dict[int, list[float]] | None = None
    boxes_by_time: dict[float, list[float]] | None = None
    box: list[float] | None = None
    start_s: float | None = Field(None, ge=0)
    end_s: float | None = Field(None, ge=0)
    caption: str | None = None
    tasks: list[Literal["rcap", "rtloc", "rdcap"]] | None = None

    @model_validator(mode="after")
    def _one_kind_of_box(self) -> Region:
        given = [k for k in ("boxes_by_frame", "boxes_by_time", "box") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of boxes_by_frame, boxes_by_time or box")
        if self.box is not None:
            check_box(self.box)
            if self.start_s is None or self.end_s is None:
                raise ValueError("a single box needs start_s and end_s")
        for boxes in (self.boxes_by_frame, self.boxes_by_time):
            if boxes is not None:
                if not boxes:
                    raise ValueError("boxes are empty")
                for key, box in boxes.items():
                    if float(key) < 0:
                        raise ValueError(f"box key {key} is negative")
                    check_box(box)
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError("end_s must be after start_s")
        return self


class ManifestRow(BaseModel):
    """One manifest row: a video URI, optional questions, regions and tasks, plus free fields."""

    model_config = ConfigDict(frozen=True, extra="allow")

    uri: str
    questions: list[Question] = []
    regions: list[Region] = []
    tasks: list[str] | None = None

    @field_validator("uri")
    @classmethod
    def _non_empty(cls, uri: str) -> str:
        uri = uri.strip()
        if not uri:
            raise ValueError("uri is empty")
        return uri

    def extras(self) -> dict[str, Any]:
        """Everything but ``uri``, JSON-ready, for later stages."""
        data = self.model_dump(mode="json", exclude={"uri"}, exclude_none=True)
        data.update(self.__pydantic_extra__ or {})
        return data


class ManifestError(ValueError):
    """A manifest with invalid rows; the message names every bad line."""
