"""Building rows of the index tables, with the run's shared columns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from schemas.records import ClipPlan, VideoSummary

MAX_MESSAGE = 2000

TASK_COLUMNS = frozenset({
    "question", "options", "chosen_option", "answer_option", "correct", "qa_uid", "region_id", "region_boxes",
    "start_frame", "end_frame", "raw_start_frame", "raw_end_frame", "clamped", "parse_error",
    "benchmark_reading_ok",
})


@dataclass(frozen=True)
class RunContext:
    """Columns every row of one run shares."""

    run_id: str
    settings_hash: str
    model_id: str
    generation: str
    pipeline_version: str
    created_at: dt.datetime

    def error_row(self, uri: str, video_id: str | None, clip_index: int | None, stage: str,
                  exc: BaseException | str, attempts: int = 1, error_class: str | None = None) -> dict[str, Any]:
        """An ``errors`` row: the input, the stage, the error class and a message saying what to do."""
        message = str(exc) if not isinstance(exc, str) else exc
        return {
            "uri": uri, "video_id": video_id, "clip_index": clip_index, "stage": stage,
            "error_class": error_class or (type(exc).__name__ if not isinstance(exc, str) else "Error"),
            "message": message[:MAX_MESSAGE], "attempts": attempts, "settings_hash": self.settings_hash,
            "run_id": self.run_id, "created_at": self.created_at,
        }

    def video_row(self, video: VideoSummary) -> dict[str, Any]:
        """A ``videos`` row."""
        return {
            "video_id": video.video_id, "uri": video.uri, "size_bytes": video.size_bytes,
            "duration_s": video.duration_s, "fps": video.fps, "num_frames": video.num_frames,
            "width": video.width, "height": video.height, "rotation": video.rotation, "codec": video.codec,
            "num_clips": video.num_clips, "settings_hash": self.settings_hash, "run_id": self.run_id,
            "created_at": self.created_at,
        }

    def segment_row(self, clip: ClipPlan, task: str, prompt: str, text: str, raw_output: str,
                    events: list[dict[str, Any]] | None = None, start_s: float | None = None,
                    end_s: float | None = None, **task_columns: Any) -> dict[str, Any]:
        """A ``segments`` row for one clip and task (times default to the clip's).

        ``task_columns`` fills the task-specific columns (question, region, frame indices...);
        the others stay null.
        """
        unknown = set(task_columns) - TASK_COLUMNS
        if unknown:
            raise ValueError(f"unknown segment columns {sorted(unknown)}")
        return {**dict.fromkeys(TASK_COLUMNS), **task_columns,
            "video_id": clip.video_id, "uri": clip.uri, "clip_index": clip.clip_index,
            "start_s": clip.start_s if start_s is None else start_s,
            "end_s": clip.end_s if end_s is None else end_s,
            "frame_timestamps": list(clip.sample_times), "task": task, "prompt": prompt, "text": text,
            "raw_output": raw_output, "events": events or [], "model_id": self.model_id,
            "generation": self.generation, "settings_hash": self.settings_hash,
            "pipeline_version": self.pipeline_version, "run_id": self.run_id, "created_at": self.created_at,
        }
