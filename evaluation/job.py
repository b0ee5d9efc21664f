"""``plm-index eval``: score PLM on a PLM-VideoBench annotation file the way the benchmark does.

Everything per task comes from ``tasks/``: the prompt, the frames (``Task.eval_positions``), the
boxes, the *benchmark reading* of the answer (lmms-eval's rules, quirks included) and the metric.
Decoding and clip planning are the index's own (``transforms/decode``, ``transforms/plan``).

Frames follow lmms-eval's ``lmms_eval/tasks/plm_videobench`` and the PLM model wrapper it calls
(``lmms_eval/models/simple/plm.py``, which hands FGQA video paths to perception_models'
``core/transforms/video_transform.py``):

- **FGQA**: perception_models' ``VideoTransform.load_video``: 1-fps candidates through the video
  (or the ``segment``), thinned to 32 by ``round(i*(m-1)/31)``; with fewer than 32 candidates the
  rule runs over every frame instead (every frame once if there are fewer than 32).
- **SGQA**: lmms-eval's ``load_video_uniform``: 32 of all frames by the same rule, or every frame
  when the video has 32 or fewer (then PLM sees fewer than 32).
- **RCap, RTLoc, RDCap**: lmms-eval's ``load_video``: 32 of *all* the video's frames, with a red
  box 4 px wide drawn on each sampled frame whose original index has a box, at full resolution,
  before the resize. The benchmark asserts at least 32 frames; shorter videos repeat frames.

Every frame is rotated upright and resized to 448x448 with PLM's exact bicubic resize. Decoding
is greedy with each task's ``max_new_tokens``, and one trailing "." is stripped from each answer,
as the reference wrapper does.

With ``predictions`` set, no model is loaded and no video is read: each row's answer is the
``output`` of the prediction line with its ``uid``, parsed and scored exactly as the model's own
answer would be; a row without one is scored as an empty answer, and counted.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from core import storage
from evaluation.data import load_annotations
from evaluation.judge import ExactMatchJudge, Judge, JudgeError, OpenAICompatibleJudge
from schemas.benchmark import Box
from schemas.config import DecodeConfig
from schemas.records import ClipPlan, ClipPrompt, RegionOnClip, VideoClips, VideoInfo, VideoInput
from tasks import Task, benchmark_task_names, get_task
from tasks.prompts import NUM_VIDEO_FRAMES
from tasks.reading import strip_final_period
from transforms.decode.backends import decoder_for
from transforms.plan.planning import clip_from_positions
from transforms.probe.probing import probe_video

log = logging.getLogger(__name__)

FRAME_SIZE = 448
NUM_FRAMES = NUM_VIDEO_FRAMES
DEFAULT_JUDGE_MODEL = "Llama-3.3-70B-Instruct"
_EVAL_REGION = "eval-region"


class EvalError(ValueError):
    """The evaluation cannot start (bad settings, missing judge, a bad predictions file)."""


@dataclass(frozen=True)
class EvalSettings:
    """One ``plm-index eval`` run."""

    task: str
    data: str
    model: str | None = None
    video_root: str | None = None
    metadata: str | None = None
    judge: str | None = None
    judge_model: str = DEFAULT_JUDGE_MODEL
    judge_api_key_env: str | None = "OPENAI_API_KEY"
    limit: int | None = None
    output: str | None = None
    max_new_tokens: int | None = None
    device: str = "auto"
    show_progress: bool = True
    predictions: str | None = None
    """A JSONL file of ``{"uid": ..., "output": "..."}`` lines: score these instead of running a model."""


@dataclass
class RowFailure(Exception):
    """A row that could not be evaluated, and the stage where it failed."""

    stage: str
    error_class: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "error_class": self.error_class, "message": self.message}


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, start: float) -> None:
        self.seconds[key] = round(self.seconds.get(key, 0.0) + time.perf_counter() - start, 4)


# ------------------------------------------------------------------------------------ judges


def make_judge(spec: str | None, model: str = DEFAULT_JUDGE_MODEL,
               api_key_env: str | None = "OPENAI_API_KEY") -> Judge | None:
    """``exact`` gives the offline exact-match stand-in, an http(s) URL an OpenAI-compatible judge."""
    if spec is None:
        return None
    if spec == "exact":
        return ExactMatchJudge()
    if spec.startswith(("http://", "https://")):
        return OpenAICompatibleJudge(spec, model, api_key_env or None)
    raise EvalError(f"--judge must be 'exact' or an http(s) URL, got {spec!r}")


# ------------------------------------------------------------------------------- predictions


def load_predictions(path: str) -> dict[str, str]:
    """Raw model outputs by uid from ``{"uid": ..., "output": "..."}`` JSONL lines (uids compared as text).

    Every bad line is named at once: not JSON, not an object, no ``uid``, an ``output`` that is
    not a string, or a uid given twice.
    """
    if not storage.is_remote(path) and not os.path.exists(path):
        raise FileNotFoundError(f"predictions file {path} does not exist")
    with storage.open_read(path) if storage.is_remote(path) else open(path, "rb") as handle:
        text = handle.read().decode("utf-8")
    outputs: dict[str, str] = {}
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(item, dict) or "uid" not in item or item["uid"] is None:
            errors.append(f"line {number}: give an object with \"uid\" and \"output\"")
            continue
        output = item.get("output")
        if not isinstance(output, str):
            errors.append(f"line {number}: \"output\" must be the model's raw answer as a string")
            continue
        uid = str(item["uid"])
        if uid in outputs:
            errors.append(f"line {number}: uid {uid!r} was already given")
            continue
        outputs[uid] = output
    if errors:
        shown = "\n  ".join(errors[:50])
        raise EvalError(f"{path}: {len(errors)} bad prediction line(s)\n  {shown}")
    if not outputs:
        raise EvalError(f"{path}: the predictions file holds no predictions")
    return outputs


# ------------------------------------------------------------------------------------ frames


def resolve_video(video: str, video_root: str | None, data_path: str) -> str:
    """A row's video as a path or URI: absolute paths and URIs as given, others under the root.

    Without ``video_root``, relative paths resolve against the annotation file's folder.
    """
    if storage.is_remote(video) or os.path.isabs(video) or video.startswith("file://"):
        return video
    root = video_root if video_root is not None else os.path.dirname(os.path.abspath(data_path))
    if storage.is_remote(root):
        return storage.join(root, video)
    return os.path.join(root, video)


def decode_for_eval(info: VideoInfo, positions: list[int], boxes: dict[int, Box] | None,
                    size: int = FRAME_SIZE) -> tuple[np.ndarray, ClipPlan]:
    """The frames at ``positions`` as PLM sees them, decoded by the index's own decoder, and their plan.

    The positions become a one-clip plan (``clip_from_positions``); boxes, when given, become a
    region on it, so the decoder draws them at full resolution before the exact resize.
    """
    plan = clip_from_positions(info, 0, positions)
    if boxes is not None:
        region = RegionOnClip(_EVAL_REGION, tuple(boxes.get(p) for p in positions), 0, len(positions) - 1)
        plan = replace(plan, regions=(region,))
    config = DecodeConfig(num_frames=len(positions), frame_size=size, resize="exact", isolation="none")
    clips = list(decoder_for(config).decode(VideoClips(info=info, clips=(plan,)), config))
    if len(clips) != 1:
        raise RuntimeError(f"the decoder returned {len(clips)} clips for one planned clip")
    decoded = clips[0]
    return decoded.frames_for(_EVAL_REGION if boxes is not None else None), decoded.clip


# -------------------------------------------------------------------------------------- run


Generate = Callable[[list[ClipPrompt], Any, int], list[str]]


def _check_settings(settings: EvalSettings) -> tuple[Task, Judge | None]:
    if settings.task not in benchmark_task_names():
        raise EvalError(f"unknown task {settings.task!r}: use one of {', '.join(benchmark_task_names())}")
    if settings.limit is not None and settings.limit < 1:
        raise EvalError("--limit must be at least 1")
    if settings.predictions is None and not settings.model:
        raise EvalError("give a model to run, or --predictions to score outputs made elsewhere")
    task = get_task(settings.task)
    judge = make_judge(settings.judge, settings.judge_model, settings.judge_api_key_env)
    if task.judged and judge is None:
        raise EvalError(f"{task.name} is scored by an LLM judge: pass --judge URL (OpenAI-compatible) "
                        "or --judge exact (offline exact-match stand-in)")
    return task, judge


def _frames_for_row(task: Task, row: Any, settings: EvalSettings, infos: dict[str, VideoInfo | RowFailure],
                    record: dict[str, Any], timer: _Timer,
                    last: list[Any]) -> tuple[np.ndarray, ClipPlan]:
    uri = resolve_video(row.video, settings.video_root, settings.data)
    record["uri"] = uri
    start = time.perf_counter()
    if uri not in infos:
        try:
            infos[uri] = probe_video(VideoInput(uri=uri))
        except Exception as exc:  # noqa: BLE001 - recorded for every row of this video
            infos[uri] = RowFailure("probe", type(exc).__name__, str(exc))
    info = infos[uri]
    if isinstance(info, RowFailure):
        raise info
    timer.add("probe_s", start)
    try:
        positions = task.eval_positions(info, row)
    except Exception as exc:  # noqa: BLE001
        raise RowFailure("sample", type(exc).__name__, str(exc)) from exc
    record.update(video_frames=info.num_frames, sample_frame_indices=positions)
    boxes = task.eval_boxes(row)
    if task.region_task:
        record["boxed_frames"] = sum(1 for p in positions if boxes and p in boxes)
        if row.total_frames != info.num_frames:
            record["warning"] = (f"total_frames is {row.total_frames} but the video has "
                                 f"{info.num_frames} frames; ground truth uses total_frames")
    start = time.perf_counter()
    key = (uri, tuple(positions), None if boxes is None else id(boxes))
    if last and last[0] == key:
        frames, plan = last[1], last[2]
    else:
        try:
            frames, plan = decode_for_eval(info, positions, boxes)
        except Exception as exc:  # noqa: BLE001
            raise RowFailure("decode", type(exc).__name__, str(exc)) from exc
        last[:] = [key, frames, plan]
    record["sample_times"] = [round(t, 6) for t in plan.sample_times]
    timer.add("decode_s", start)
    return frames, plan


def run_eval(settings: EvalSettings, *, load: Callable[[str, str], Any] | None = None,
             generate: Generate | None = None) -> dict[str, Any]:
    """Evaluate ``settings.task`` over ``settings.data``; returns the report (also written to JSON).

    ``load(model, device)`` returns the loaded model (default: ``PlmRunner(model).load()``)
    and ``generate(items, loaded, max_new_tokens)`` answers prompts (default:
    ``PlmRunner.generate``); tests may replace them. With ``settings.predictions`` neither
    is called. A row whose video, decoding, generation or judging fails gets an ``error`` in the
    report and is left out of the metrics; the run goes on.
    """
    from tqdm import tqdm

    task, judge = _check_settings(settings)
    predictions = load_predictions(settings.predictions) if settings.predictions else None
    started = time.perf_counter()
    annotations = load_annotations(settings.data, task.name, metadata=settings.metadata)
    total_rows = len(annotations)
    if predictions is not None:
        without_uid = [line for line, row in annotations if row.uid is None]
        if without_uid:
            raise EvalError(f"{settings.data}: rows without a uid cannot be matched to predictions "
                            f"(lines {without_uid[:10]})")
    if settings.limit is not None:
        annotations = annotations[: settings.limit]
    max_new_tokens = settings.max_new_tokens or task.max_new_tokens or 0

    loaded = None
    load_s = 0.0
    if predictions is None:
        from model_runner.runner import PlmRunner

        generate = generate or PlmRunner.generate
        t0 = time.perf_counter()
        if load is None:
            loaded = PlmRunner(settings.model, device=settings.device).load()
        else:
            loaded = load(settings.model, settings.device)
        load_s = time.perf_counter() - t0
        log.info("eval %s: %d row(s) from %s with %s on %s", task.name, len(annotations), settings.data,
                 settings.model, loaded.device)

    infos: dict[str, VideoInfo | RowFailure] = {}
    last: list[Any] = []
    rows: list[dict[str, Any]] = []
    missing = 0
    bar = tqdm(annotations, desc=f"eval {task.name}", unit="row", file=sys.stderr,
               disable=not settings.show_progress)
    for line, row in bar:
        timer = _Timer()
        record: dict[str, Any] = {"line": line, "uid": row.uid, "video": row.video, "error": None}
        rows.append(record)
        try:
            prompt = task.eval_prompt(row)
            record["prompt"] = prompt
            plan = None
            if predictions is not None:
                raw = predictions.get(str(row.uid))
                record["prediction_missing"] = raw is None
                if raw is None:
                    missing += 1
                    raw = ""  # scored as the benchmark scores an empty answer
            else:
                frames, plan = _frames_for_row(task, row, settings, infos, record, timer, last)
                start = time.perf_counter()
                try:
                    item = ClipPrompt(clip=plan, frames=frames, task=task.name, prompt=prompt,
                                      max_new_tokens=max_new_tokens)
                    raw = generate([item], loaded, max_new_tokens)[0]
                except Exception as exc:  # noqa: BLE001
                    raise RowFailure("generate", type(exc).__name__, str(exc)) from exc
                timer.add("generate_s", start)
            prediction = strip_final_period(raw)
            record.update(raw_output=raw, prediction=prediction)
            start = time.perf_counter()
            try:
                record.update(task.score(row, prediction, plan, judge))
            except JudgeError as exc:
                raise RowFailure("judge", type(exc).__name__, str(exc)) from exc
            timer.add("score_s", start)
        except RowFailure as failure:
            record["error"] = failure.as_dict()
            log.warning("row at line %d (%s) failed at %s: %s: %s", line, row.video, failure.stage,
                        failure.error_class, failure.message)
        record["timing"] = timer.seconds
        log.info("row at line %d done%s", line, " with an error" if record["error"] else "")
    bar.close()

    scored = [r for r in rows if r["error"] is None]
    metrics: dict[str, Any] = {"scored_rows": len(scored)}
    if scored:
        metrics.update(task.metrics(scored))
    total_s = time.perf_counter() - started
    report = {
        "task": task.name,
        "data": settings.data,
        "model": settings.model if predictions is None else None,
        "model_id": None if loaded is None else loaded.model_id,
        "model_is_tiny_random": predictions is None and _is_tiny(settings.model),
        "predictions": settings.predictions,
        "device": None if loaded is None else loaded.device,
        "judge": None if judge is None else judge.name,
        "judge_used_for_metrics": task.judged,
        "num_rows": len(rows),
        "rows_in_file": total_rows,
        "rows_failed": sum(1 for r in rows if r["error"] is not None),
        "rows_without_prediction": missing if predictions is not None else None,
        "predictions_without_row": (sorted(set(predictions) - {str(r.uid) for _, r in annotations})
                                    if predictions is not None and settings.limit is None else None),
        "metrics": metrics,
        "headline_metric": task.headline,
        "reading": "benchmark (lmms-eval's rules)",
        "settings": {"num_frames": NUM_FRAMES, "frame_size": FRAME_SIZE, "resize": "exact",
                     "max_new_tokens": max_new_tokens, "do_sample": False, "answer_slip": True,
                     "strip_final_period": True, "video_root": settings.video_root,
                     "metadata": settings.metadata, "limit": settings.limit},
        "timing": {"load_model_s": round(load_s, 3), "total_s": round(total_s, 3),
                   "mean_row_s": round((total_s - load_s) / max(1, len(rows)), 3)},
        "environment": {"python": platform.python_version()},
        "rows": rows,
    }
    if settings.output:
        write_report(report, settings.output)
    return report


def _is_tiny(model: str | None) -> bool:
    from model_runner.tiny import is_tiny

    return model is not None and os.path.isdir(model) and is_tiny(model)


def write_report(report: dict[str, Any], path: str) -> None:
    """Write the report as indented JSON (local path or ``gs://``)."""
    text = json.dumps(report, indent=2, default=_json_default)
    if storage.is_remote(path):
        storage.write_bytes(path, text.encode("utf-8"))
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_table(report: dict[str, Any]) -> str:
    """A short plain-text summary of the report."""
    source = (f"predictions {report['predictions']}" if report.get("predictions")
              else f"model     {report['model']}" + ("  (tiny random weights: scores are noise)"
                                                     if report["model_is_tiny_random"] else ""))
    lines = [f"task      {report['task']}", source,
             f"judge     {report['judge'] or '-'}",
             f"rows      {report['num_rows']} evaluated, {report['rows_failed']} failed "
             f"(of {report['rows_in_file']} in the file)"]
    if report.get("rows_without_prediction") is not None:
        lines.append(f"missing   {report['rows_without_prediction']} row(s) had no prediction (scored as empty)")
    for key, value in report["metrics"].items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        marker = "  <- headline" if key == report["headline_metric"] else ""
        lines.append(f"{key:<18}{shown}{marker}")
    lines.append(f"time      {report['timing']['total_s']:.1f} s (model load {report['timing']['load_model_s']:.1f} s)")
    return "\n".join(lines)
