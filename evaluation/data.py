"""Loading PLM-VideoBench annotation files: every row validated up front, bad lines named together.

The row models live in ``schemas/benchmark.py``; which model a task reads comes from its task
(``tasks.get_task(name).annotation``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.benchmark import AnnotationError, AnnotationRow, Box, RegionAnnotation, RegionMetadata
from tasks import benchmark_task_names, get_task


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
    if task not in benchmark_task_names():
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(benchmark_task_names())}")
    model = get_task(task).annotation
    assert model is not None
    if not path.startswith("gs://") and not os.path.exists(path):
        raise FileNotFoundError(f"annotation file {path} does not exist")
    rows, errors = _parse_rows(path, model)
    if issubclass(model, RegionAnnotation):
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
