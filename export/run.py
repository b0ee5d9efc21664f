"""``plm-index export``: the index's answers as PLM fine-tuning data.

Reads the index only through ``index.read`` (its one rule for which rows are current), selects
rows with the search filters (``search.query.SearchFilters.table_mask``: the same uri glob, task
and time overlap as ``plm-index search``), leaves out doubtful answers (``export.plm_sft.doubt``)
unless asked to keep them, and writes, in the output folder:

- ``<task>.jsonl``: one line per answer in perception_models' SFT format (``export.plm_sft``);
- ``datasets.yaml``: an entry per task file, to paste into perception_models'
  ``apps/plm/configs/datasets.yaml``;
- ``export.json``: what was written and what was left out, and why;
- ``clips/`` with ``--cut-clips``: each clip cut to its own file (``export.cuts``); the lines
  then name those files relative to the output folder (the datasets' ``root_dir``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from core import storage
from export.cuts import CutError, StreamFrames, cut_clip, stream_frames
from export.plm_sft import (
    DOUBT_REASONS,
    FORMAT,
    Answer,
    doubt,
    frame_positions,
    group_answers,
    loader_positions,
    loader_time,
    sft_line,
)
from index.read import snapshot, with_snapshot_retries
from search.query import SearchFilters

FORMATS = (FORMAT,)
DEFAULT_DATASET = "plm_index"
# Frames PLM's SFT configs give a video (``data.max_video_frames`` in apps/plm/configs/stage_3/).
DEFAULT_MAX_FRAMES = 32


class ExportError(ValueError):
    """An export that cannot run: a bad format, output folder, filter or index."""


@dataclass(frozen=True)
class ExportConfig:
    """What to export, from where, to where."""

    index: str
    out: str
    format: str = FORMAT
    filters: SearchFilters = field(default_factory=SearchFilters)
    keep_doubtful: bool = False
    cut_clips: bool = False
    dataset: str = DEFAULT_DATASET


@dataclass
class ExportReport:
    """What an export wrote and what it left out."""

    out: str
    written: Counter[str] = field(default_factory=Counter)
    left_out: Counter[str] = field(default_factory=Counter)
    kept_doubtful: Counter[str] = field(default_factory=Counter)
    filtered_out: int = 0
    cuts: Counter[str] = field(default_factory=Counter)
    cut_errors: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as ``export.json`` holds it."""
        return {"format": FORMAT, "out": self.out, "written": dict(sorted(self.written.items())),
                "left_out_doubtful": {reason: self.left_out[reason] for reason in DOUBT_REASONS
                                      if self.left_out[reason]},
                "kept_doubtful": dict(self.kept_doubtful), "doubt_reasons": DOUBT_REASONS, "filtered_out_rows": self.filtered_out,
                "cut_clips": dict(self.cuts), "cut_errors": self.cut_errors, "files": self.files}

    def line(self) -> str:
        """One line for the terminal."""
        written = ", ".join(f"{task} {n}" for task, n in sorted(self.written.items())) or "nothing"
        doubtful = sum(self.left_out.values())
        text = f"exported {sum(self.written.values())} conversations ({written}) to {self.out}"
        if doubtful:
            reasons = ", ".join(f"{r} {n}" for r, n in self.left_out.items())
            text += f"; left out {doubtful} doubtful ({reasons}; --keep-doubtful keeps them)"
        if self.cuts:
            text += f"; cut {sum(self.cuts.values())} clips ({', '.join(f'{m} {n}' for m, n in self.cuts.items())})"
        if self.cut_errors:
            text += f"; {len(self.cut_errors)} clips could not be cut (see export.json)"
        return text


def check_config(config: ExportConfig) -> None:
    """Raise ``ExportError`` for an unknown format, a remote output folder, or a bad filter."""
    if config.format not in FORMATS:
        raise ExportError(f"unknown export format {config.format!r}; use one of {', '.join(FORMATS)}")
    if storage.is_remote(config.out):
        raise ExportError(f"--out {config.out} is remote; give a local folder (PLM's trainer reads local files) "
                          "and copy it where you need it")
    if os.path.isfile(config.out):
        raise ExportError(f"--out {config.out} is a file; give a folder")
    if not config.dataset.replace("_", "").isalnum():
        raise ExportError(f"--dataset {config.dataset!r}: use letters, digits and underscores")
    try:
        config.filters.validate()
        if config.filters.task is not None:
            from tasks import check_task_names

            check_task_names([config.filters.task])
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def read_index(location: str) -> tuple[pa.Table, pa.Table]:
    """The current ``videos`` and ``segments`` (without embeddings) of one snapshot of the index."""
    def read() -> tuple[pa.Table, pa.Table]:
        snap = snapshot(location)
        return snap.table("videos"), snap.table("segments")

    videos, segments = with_snapshot_retries(read)
    if "embedding" in segments.column_names:
        segments = segments.drop_columns(["embedding"])
    return videos, segments


@dataclass(frozen=True)
class _Planned:
    """An answer that passed the rule, with the file frames the model saw."""

    answer: Answer
    positions: list[int]
    fps: float
    doubt: str | None


def export_index(config: ExportConfig) -> ExportReport:
    """Export the index at ``config.index`` to ``config.out`` (see the module docstring)."""
    check_config(config)
    videos, segments = read_index(config.index)
    if segments.num_rows == 0:
        raise ExportError(f"the index at {config.index} has no segments to export (no video is indexed there yet)")
    report = ExportReport(out=config.out)
    mask = config.filters.table_mask(segments)
    report.filtered_out = int((~mask).sum())
    rows = segments.filter(pa.array(mask)).to_pylist()
    info = {(v["settings_hash"], v["video_id"]): v for v in videos.to_pylist()}

    planned: list[_Planned] = []
    for answer in group_answers(rows):
        video = info.get((answer.first["settings_hash"], answer.first["video_id"]))
        if video is None or not video["fps"] or not answer.sample_times:
            report.left_out["sampling_differs"] += 1
            continue
        fps = float(video["fps"])
        positions = frame_positions(answer.sample_times, fps)
        loader = loader_positions(loader_time(positions[0], fps), loader_time(positions[-1], fps), fps,
                                  int(video["num_frames"]), len(positions))
        reason = doubt(answer, positions, loader)
        if reason is not None:
            if not config.keep_doubtful:
                report.left_out[reason] += 1
                continue
            report.kept_doubtful[reason] += 1
        planned.append(_Planned(answer, positions, fps, reason))

    os.makedirs(config.out, exist_ok=True)
    _remove_previous_export(config.out)
    lines: dict[str, list[dict[str, Any]]] = {}
    if config.cut_clips:
        for item, line in _cut_lines(planned, config.out, report):
            lines.setdefault(item.answer.task, []).append(line)
    else:
        for item in planned:
            uri = item.answer.first["uri"]
            video = uri[len("file://"):] if uri.startswith("file://") else uri
            lines.setdefault(item.answer.task, []).append(sft_line(item.answer, video, item.positions, item.fps,
                                                                           doubtful=item.doubt))
    _write_outputs(config, lines, report)
    return report


def _cut_lines(planned: list[_Planned], out: str, report: ExportReport) -> Iterator[tuple[_Planned, dict[str, Any]]]:
    """Cut each clip once (answers about one clip share its file) and yield the lines naming the cuts."""
    by_video: dict[str, list[_Planned]] = {}
    for item in planned:
        by_video.setdefault(item.answer.first["uri"], []).append(item)
    for uri, items in sorted(by_video.items()):
        try:
            with local_copy(uri) as source:
                stream = stream_frames(source)
                cuts: dict[tuple[int, int], Any] = {}
                for item in items:
                    if not _same_times(stream, item):
                        # The file's frames are not where the index's times put them (variable frame
                        # rate, or a file replaced since it was indexed): the trainer would see others.
                        report.left_out["sampling_differs"] += 1
                        continue
                    span = (item.positions[0], item.positions[-1])
                    if span not in cuts:
                        name = f"{item.answer.first['video_id'][:16]}-{span[0]:07d}-{span[1]:07d}.mp4"
                        cuts[span] = cut_clip(source, stream, span[0], span[1], os.path.join(out, "clips", name))
                        report.cuts[cuts[span].method] += 1
                    cut = cuts[span]
                    yield item, sft_line(item.answer, os.path.relpath(cut.path, out), item.positions, item.fps,
                                         offset=cut.first, cut=cut.method, doubtful=item.doubt)
        except (CutError, OSError) as exc:
            report.cut_errors.append(f"{uri}: {exc}")


def _same_times(stream: StreamFrames, item: _Planned) -> bool:
    """Whether the file's frames at the answer's positions start at the times the index recorded."""
    return all(p < len(stream.times) and abs(stream.times[p] - t) <= 0.5 / item.fps
               for p, t in zip(item.positions, item.answer.sample_times, strict=True))


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path of ``uri``: the file itself, or a temporary download of a remote object.

    ffmpeg and ffprobe read local files; a remote source is fetched once per video (through
    ``core.storage``, with its retries) and removed when its clips are cut.
    """
    if not storage.is_remote(uri):
        yield uri[len("file://"):] if uri.startswith("file://") else uri
        return
    folder = tempfile.mkdtemp(prefix="plm-export-")
    try:
        path = os.path.join(folder, "source" + os.path.splitext(uri.rsplit("/", 1)[-1])[1])
        with storage.open_read(uri) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_previous_export(out: str) -> None:
    """Remove the task files an earlier export to ``out`` wrote (its ``export.json`` lists them), so a
    narrower export does not leave stale task files beside its own; nothing else is touched."""
    previous = os.path.join(out, "export.json")
    if not os.path.isfile(previous):
        return
    try:
        with open(previous, encoding="utf-8") as handle:
            files = json.load(handle).get("files", [])
    except (OSError, ValueError):
        return
    for name in files:
        if isinstance(name, str) and name.endswith(".jsonl") and os.path.basename(name) == name:
            path = os.path.join(out, name)
            if os.path.isfile(path):
                os.remove(path)


def _write_outputs(config: ExportConfig, lines: dict[str, list[dict[str, Any]]], report: ExportReport) -> None:
    """Write the task files, ``datasets.yaml`` and ``export.json`` (each whole, then renamed into place)."""
    out = config.out
    entries = []
    for task, task_lines in sorted(lines.items()):
        task_lines.sort(key=lambda line: (line["source"]["uri"], line["source"]["clip_index"],
                                          str(line["source"]["region_id"]), str(line["source"]["question"]),
                                          line["conversations"][0]["value"]))
        path = os.path.join(out, f"{task}.jsonl")
        _write_text(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in task_lines))
        report.written[task] = len(task_lines)
        report.files.append(f"{task}.jsonl")
        entry = f"{config.dataset}_{task}:\n    annotation: {os.path.abspath(path)}\n"
        if config.cut_clips:
            entry += f"    root_dir: {os.path.abspath(out)}\n"
        entries.append(entry)
    _write_text(os.path.join(out, "datasets.yaml"),
                "# Add these entries to perception_models' apps/plm/configs/datasets.yaml, then name them in\n"
                "# a training config's data.datamix, e.g. datamix: " +
                ",".join(f"{config.dataset}_{task}:1" for task in sorted(lines)) + "\n" + "\n".join(entries))
    _write_text(os.path.join(out, "export.json"), json.dumps(report.to_json(), indent=1) + "\n")


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
