"""``plm-index eval``: run PLM over a PLM-VideoBench annotation file and score it as the benchmark does.

Frames, prompts and scoring follow lmms-eval's ``lmms_eval/tasks/plm_videobench`` and the PLM
model wrapper it calls (``lmms_eval/models/simple/plm.py``, which hands FGQA video paths to
perception_models' ``core/transforms/video_transform.py``):

- **FGQA**: perception_models' ``VideoTransform.load_video``: step through the video (or the
  ``segment``) at 1 fps, take 32 of those positions by ``round(i*(m-1)/(n-1))``; with fewer than 32
  positions, sample the 32 frames from every frame instead (all of them if there are fewer than 32).
- **SGQA**: lmms-eval's ``load_video_uniform``: 32 of all frames by the same rule, or every frame
  when the video has 32 or fewer (then PLM sees fewer than 32).
- **RCap, RTLoc, RDCap**: lmms-eval's ``load_video``: 32 of *all* the video's frames (not just the
  annotated range, which only enters the prompt and the ground truth), and a red box 4 px wide
  drawn on each sampled frame whose original index has a box, at full resolution, before the resize.
  The benchmark asserts at least 32 frames; shorter videos here repeat frames (PLM's rule).

Every frame is rotated upright and resized to 448x448 with PLM's exact bicubic resize; eval never
uses the decoder-resize mode. Decoding is greedy with each task's ``max_new_tokens``, and one
trailing "." is stripped from each answer, as the reference wrapper does.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core import storage
from core.media import decoded_frames
from evaluation import metrics
from evaluation.data import (
    REGION_TASKS,
    AnnotationRow,
    Box,
    FgqaRow,
    RcapRow,
    RdcapRow,
    RtlocRow,
    SgqaRow,
    load_annotations,
)
from evaluation.judge import ExactMatchJudge, Judge, JudgeError, OpenAICompatibleJudge, caption_scorer
from schemas.records import ClipPlan, ClipPrompt, VideoInfo, VideoInput
from tasks import prompts as task_prompts
from tasks.reading import (
    frames_to_seconds,
    parse_dense_captions,
    parse_frame_range,
    parse_option_letter,
)
from transforms.decode.base import DecodeError
from transforms.decode.frames import apply_rotation, draw_box, resize_exact
from transforms.plan.planning import plm_frame_indices
from transforms.probe.probing import probe_video

log = logging.getLogger(__name__)

FRAME_SIZE = 448
NUM_FRAMES = task_prompts.NUM_VIDEO_FRAMES
JUDGED_TASKS = frozenset({"rcap", "rdcap", "sgqa"})
DEFAULT_JUDGE_MODEL = "Llama-3.3-70B-Instruct"


class EvalError(ValueError):
    """The evaluation cannot start (bad settings, missing judge)."""


@dataclass(frozen=True)
class EvalSettings:
    """One ``plm-index eval`` run."""

    task: str
    data: str
    model: str
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


def fgqa_positions(info: VideoInfo, segment: tuple[float, float] | None = None,
                   max_frames: int = NUM_FRAMES, sampling_fps: float = 1.0) -> list[int]:
    """perception_models' ``VideoTransform.load_video`` frame positions (FGQA's path).

    Positions step through ``[start, end]`` every ``round(fps / sampling_fps)`` frames; more than
    ``max_frames`` of them are thinned by PLM's rule. Fewer, and the rule runs over every frame of
    the range instead, taking all of them when the range has fewer than ``max_frames``.
    """
    fps, total = float(info.fps), int(info.num_frames)
    start = 0 if segment is None else int(segment[0] * fps)
    end = total - 1 if segment is None else int(segment[1] * fps)
    end = min(end, total - 1)
    if start > end:
        start, end = end, start
    elif start == end:
        end = min(start + 1, total - 1)  # perception_models widens by one (without the clamp)
    stride = max(1, int(round(fps / sampling_fps)))
    stepped = list(range(start, end + 1, stride))
    if len(stepped) > max_frames:
        return [stepped[i] for i in plm_frame_indices(len(stepped), max_frames)]
    if len(stepped) < max_frames:
        count = end - start + 1
        return [start + i for i in plm_frame_indices(count, min(max_frames, count))]
    return stepped


def uniform_positions(first: int, count: int, max_frames: int = NUM_FRAMES) -> list[int]:
    """lmms-eval's ``load_video_uniform`` (SGQA): every frame when ``count <= max_frames``."""
    if count < 1:
        raise ValueError("no frames to sample")
    if count <= max_frames:
        return list(range(first, first + count))
    return [first + i for i in plm_frame_indices(count, max_frames)]


def sample_positions(task: str, info: VideoInfo, row: AnnotationRow) -> list[int]:
    """The source-frame indices the benchmark feeds PLM for this row."""
    if task == "fgqa":
        return fgqa_positions(info, getattr(row, "segment", None))
    if task == "sgqa":
        segment = getattr(row, "segment", None)
        if segment is None:
            return uniform_positions(0, info.num_frames)
        times = info.frame_times
        first = int(np.searchsorted(times, segment[0] - 1e-6, side="left"))
        stop = int(np.searchsorted(times, segment[1] - 1e-6, side="left"))
        if stop <= first:
            raise ValueError(f"segment {list(segment)} holds no frames of this {info.duration_s:.2f} s video")
        return uniform_positions(first, stop - first)
    # Region tasks: 32 of all frames; the benchmark requires >= 32, PLM's rule repeats otherwise.
    return plm_frame_indices(info.num_frames, NUM_FRAMES)


def clip_plan(info: VideoInfo, positions: list[int]) -> ClipPlan:
    """A ClipPlan for the sampled positions (start and end time of each sampled frame)."""
    times = info.frame_times
    starts = tuple(float(times[p]) for p in positions)
    ends = tuple(float(times[p + 1]) if p + 1 < len(times) else float(info.duration_s) for p in positions)
    return ClipPlan(video_id=info.video_id, uri=info.uri, clip_index=0, start_s=starts[0], end_s=max(ends),
                    sample_frame_indices=tuple(positions), sample_times=starts, sample_end_times=ends)


def draw_region(rgb: np.ndarray, box: Box) -> np.ndarray:
    """Draw the region box as the benchmark does (PIL's 4 px rectangle; see ``draw_box``)."""
    return draw_box(rgb, box)


def prepare_frame(rgb: np.ndarray, rotation: int, box: Box | None, size: int = FRAME_SIZE) -> np.ndarray:
    """A decoded full-resolution frame as eval feeds PLM: upright, box drawn, then resized exactly."""
    upright = apply_rotation(rgb, rotation)
    if box is not None:
        upright = draw_region(upright, box)
    return resize_exact(upright, size)


def decode_positions(info: VideoInfo, positions: list[int], boxes: dict[int, Box] | None = None,
                     size: int = FRAME_SIZE) -> np.ndarray:
    """Decode the frames at ``positions`` (indices into ``info.frame_times``) in one pass.

    Decoded frames are matched to indices by their timestamps; only wanted frames are converted.
    Returns uint8 ``(len(positions), size, size, 3)`` in the order of ``positions``.
    """
    wanted = set(positions)
    times = info.frame_times
    gaps = np.diff(times)
    tol = float(max(1e-6, 0.25 * gaps[gaps > 0].min())) if np.any(gaps > 0) else 1e-3
    boxes = boxes or {}
    done: dict[int, np.ndarray] = {}
    for t, frame in decoded_frames(info.uri, info.first_pts, info.time_base):
        if t is None:
            continue
        index = int(np.searchsorted(times, t - tol, side="left"))
        if index >= len(times) or abs(float(times[index]) - t) > tol:
            continue
        if index in wanted and index not in done:
            done[index] = prepare_frame(frame.to_ndarray(format="rgb24"), info.rotation, boxes.get(index), size)
        if len(done) == len(wanted):
            break
    missing = sorted(wanted - done.keys())
    if missing:
        raise DecodeError(f"{len(missing)} sampled frame(s) could not be decoded (first: index {missing[0]})")
    return np.stack([done[p] for p in positions])


# ---------------------------------------------------------------------------------- prompts


def build_prompt(task: str, row: AnnotationRow) -> str:
    """The benchmark's prompt for this row, word for word (frame numbers in the 32-frame space)."""
    if task == "fgqa":
        assert isinstance(row, FgqaRow)
        return task_prompts.fgqa_prompt(row.question, row.options)
    if task == "sgqa":
        assert isinstance(row, SgqaRow)
        return task_prompts.sgqa_prompt(row.question)
    if task == "rcap":
        assert isinstance(row, RcapRow)
        # lmms-eval rescales start/end into 32-frame space but writes the source's total_frames.
        return task_prompts.rcap_prompt(task_prompts.benchmark_frame_index(row.start_frame, row.total_frames),
                                        task_prompts.benchmark_frame_index(row.end_frame, row.total_frames),
                                        total_frames=row.total_frames)
    if task == "rtloc":
        return task_prompts.rtloc_prompt(row.caption)  # type: ignore[union-attr]
    if task == "rdcap":
        return task_prompts.rdcap_prompt()
    raise EvalError(f"unknown task {task!r}")


def strip_final_period(text: str) -> str:
    """Drop one trailing ".", as lmms-eval's PLM wrapper does before scoring."""
    return text[:-1] if text.endswith(".") else text


# ---------------------------------------------------------------------------------- scoring


def _seconds(plan: ClipPlan, start: int, end: int) -> list[float] | None:
    if end >= len(plan.sample_times):
        return None
    return list(frames_to_seconds(start, end, plan.sample_times, plan.sample_end_times))


def score_row(task: str, row: AnnotationRow, prediction: str, plan: ClipPlan,
              judge: Judge | None) -> dict[str, Any]:
    """The row's parsed prediction and its per-row score fields."""
    n = NUM_FRAMES
    if task == "fgqa":
        assert isinstance(row, FgqaRow)
        chosen = parse_option_letter(prediction, len(row.options))
        return {"qa_uid": row.qa_uid, "answer_index": row.answer_index, "chosen_index": chosen,
                "chosen_option": row.options[chosen] if chosen is not None else None,
                "correct": metrics.fgqa_correct(prediction, row.answer_index, len(row.options))}
    if task == "rtloc":
        assert isinstance(row, RtlocRow)
        gt = [task_prompts.benchmark_frame_index(row.start_frame, row.total_frames, n),
              task_prompts.benchmark_frame_index(row.end_frame, row.total_frames, n)]
        parsed = parse_frame_range(prediction, n)
        out: dict[str, Any] = {"gt_range": gt, "parse_error": parsed.error, "pred_range": None,
                               "pred_raw_range": None, "pred_seconds": None, "iou": 0.0}
        if parsed.ok:
            out.update(pred_range=[parsed.start, parsed.end], pred_raw_range=[parsed.raw_start, parsed.raw_end],
                       swapped=parsed.swapped, clamped=parsed.clamped,
                       pred_seconds=_seconds(plan, parsed.start, parsed.end),
                       iou=metrics.temporal_iou((parsed.raw_start, parsed.raw_end), (gt[0], gt[1])))
        return out
    if task == "rdcap":
        assert isinstance(row, RdcapRow)
        gt_segments = [[task_prompts.benchmark_frame_index(c.start_frame, row.total_frames, n),
                        task_prompts.benchmark_frame_index(c.end_frame, row.total_frames, n), c.caption]
                       for c in row.dense_captions]
        events = parse_dense_captions(prediction, n)
        segments = [[e.raw_start, e.raw_end, e.text] for e in events if e.ok]
        assert judge is not None
        soda = metrics.soda_c([tuple(s) for s in segments], [tuple(g) for g in gt_segments], caption_scorer(judge))
        return {"gt_segments": gt_segments, "pred_segments": segments,
                "pred_seconds": [_seconds(plan, e.start, e.end) for e in events if e.ok],
                "parse_errors": [e.raw_text for e in events if not e.ok], "soda_c": soda}
    if task == "rcap":
        assert isinstance(row, RcapRow) and judge is not None
        judgement = judge.score_caption(row.caption, prediction)
        return {"gt_caption": row.caption, "judge_score": judgement.score, "judge_parsed": judgement.parsed,
                "judge_explanation": judgement.explanation}
    if task == "sgqa":
        assert isinstance(row, SgqaRow) and judge is not None
        verdict = judge.judge_sgqa(row.question, prediction, row.answer)
        return {"gt_answer": row.answer, "judge_correct": verdict.correct, "judge_score": verdict.score,
                "judge_parsed": verdict.parsed}
    raise EvalError(f"unknown task {task!r}")


def task_metrics(task: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's metrics over the rows that were scored (rows with an error are left out)."""
    scored = [r for r in rows if r.get("error") is None]
    if not scored:
        return {"scored_rows": 0}
    out: dict[str, Any] = {"scored_rows": len(scored)}
    if task == "fgqa":
        out["mbacc"] = metrics.mbacc(scored)
        out["binary_accuracy"] = sum(bool(r["correct"]) for r in scored) / len(scored)
        out["num_questions"] = len({r["qa_uid"] for r in scored})
    elif task == "rtloc":
        preds = [tuple(r["pred_raw_range"]) if r["pred_raw_range"] is not None else None for r in scored]
        result = metrics.rtloc_scores(preds, [tuple(r["gt_range"]) for r in scored])
        out["mean_recall"] = result.mean_recall
        out.update({f"recall@{t}": v for t, v in result.recall_at.items()})
        out["miou"] = result.miou
        out["parse_errors"] = result.parse_errors
    elif task == "rdcap":
        out["soda_c"] = sum(r["soda_c"] for r in scored) / len(scored)
    elif task == "rcap":
        out["judge_score"] = metrics.rcap_score([r["judge_score"] for r in scored])
        out["judge_parse_rate"] = sum(bool(r["judge_parsed"]) for r in scored) / len(scored)
    elif task == "sgqa":
        out["accuracy"] = metrics.sgqa_accuracy([bool(r["judge_correct"]) for r in scored])
    return out


HEADLINE = {"fgqa": "mbacc", "rtloc": "mean_recall", "rdcap": "soda_c", "rcap": "judge_score", "sgqa": "accuracy"}


# -------------------------------------------------------------------------------------- run


Generate = Callable[[list[ClipPrompt], Any, int], list[str]]


def run_eval(settings: EvalSettings, *, load: Callable[[str, str], Any] | None = None,
             generate: Generate | None = None) -> dict[str, Any]:
    """Evaluate ``settings.task`` over ``settings.data``; returns the report (also written to JSON).

    ``load(model, device)`` returns the loaded model (default: ``PlmModelHandler(model).load_model()``)
    and ``generate(items, loaded, max_new_tokens)`` answers prompts (default:
    ``PlmModelHandler.generate``); tests may replace them. A row whose video, decoding, generation
    or judging fails gets an ``error`` in the report and is left out of the metrics; the run goes on.
    """
    from tqdm import tqdm

    from model_runner.handler import PlmModelHandler

    task = settings.task
    if task not in HEADLINE:
        raise EvalError(f"unknown task {task!r}: use one of {', '.join(HEADLINE)}")
    if settings.limit is not None and settings.limit < 1:
        raise EvalError("--limit must be at least 1")
    judge = make_judge(settings.judge, settings.judge_model, settings.judge_api_key_env)
    if task in JUDGED_TASKS and judge is None:
        raise EvalError(f"{task} is scored by an LLM judge: pass --judge URL (OpenAI-compatible) "
                        "or --judge exact (offline exact-match stand-in)")
    started = time.perf_counter()
    annotations = load_annotations(settings.data, task, metadata=settings.metadata)
    total_rows = len(annotations)
    if settings.limit is not None:
        annotations = annotations[: settings.limit]
    max_new_tokens = settings.max_new_tokens or task_prompts.MAX_NEW_TOKENS[task]
    generate = generate or PlmModelHandler.generate

    t0 = time.perf_counter()
    if load is None:
        loaded = PlmModelHandler(settings.model, device=settings.device).load_model()
    else:
        loaded = load(settings.model, settings.device)
    load_s = time.perf_counter() - t0
    log.info("eval %s: %d row(s) from %s with %s on %s", task, len(annotations), settings.data,
             settings.model, loaded.device)

    infos: dict[str, VideoInfo | RowFailure] = {}
    last_frames: tuple[Any, np.ndarray] | None = None
    rows: list[dict[str, Any]] = []
    bar = tqdm(annotations, desc=f"eval {task}", unit="row", file=sys.stderr, disable=not settings.show_progress)
    for line, row in bar:
        timer = _Timer()
        record: dict[str, Any] = {"line": line, "uid": row.uid, "video": row.video, "error": None}
        rows.append(record)
        try:
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
                positions = sample_positions(task, info, row)
            except Exception as exc:  # noqa: BLE001
                raise RowFailure("sample", type(exc).__name__, str(exc)) from exc
            plan = clip_plan(info, positions)
            record.update(video_frames=info.num_frames, sample_frame_indices=positions,
                          sample_times=[round(t, 6) for t in plan.sample_times])
            boxes = getattr(row, "bbox", None) if task in REGION_TASKS else None
            if task in REGION_TASKS:
                record["boxed_frames"] = sum(1 for p in positions if boxes and p in boxes)
                if row.total_frames != info.num_frames:  # type: ignore[union-attr]
                    record["warning"] = (f"total_frames is {row.total_frames} but the video has "  # type: ignore[union-attr]
                                         f"{info.num_frames} frames; ground truth uses total_frames")
            start = time.perf_counter()
            key = (uri, tuple(positions), None if boxes is None else id(boxes))
            if last_frames is not None and last_frames[0] == key:
                frames = last_frames[1]
            else:
                try:
                    frames = decode_positions(info, positions, boxes)
                except Exception as exc:  # noqa: BLE001
                    raise RowFailure("decode", type(exc).__name__, str(exc)) from exc
                last_frames = (key, frames)
            timer.add("decode_s", start)
            prompt = build_prompt(task, row)
            record["prompt"] = prompt
            start = time.perf_counter()
            try:
                item = ClipPrompt(clip=plan, frames=frames, task=task, prompt=prompt, max_new_tokens=max_new_tokens)
                raw = generate([item], loaded, max_new_tokens)[0]
            except Exception as exc:  # noqa: BLE001
                raise RowFailure("generate", type(exc).__name__, str(exc)) from exc
            timer.add("generate_s", start)
            prediction = strip_final_period(raw)
            record.update(raw_output=raw, prediction=prediction)
            start = time.perf_counter()
            try:
                record.update(score_row(task, row, prediction, plan, judge))
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

    total_s = time.perf_counter() - started
    failed = sum(1 for r in rows if r["error"] is not None)
    report = {
        "task": task,
        "data": settings.data,
        "model": settings.model,
        "model_id": loaded.model_id,
        "model_is_tiny_random": _is_tiny(settings.model),
        "device": loaded.device,
        "judge": None if judge is None else judge.name,
        "judge_used_for_metrics": task in JUDGED_TASKS,
        "num_rows": len(rows),
        "rows_in_file": total_rows,
        "rows_failed": failed,
        "metrics": task_metrics(task, rows),
        "headline_metric": HEADLINE[task],
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


def _is_tiny(model: str) -> bool:
    from model_runner.tiny import is_tiny

    return os.path.isdir(model) and is_tiny(model)


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
    lines = [f"task      {report['task']}",
             f"model     {report['model']}" + ("  (tiny random weights: scores are noise)"
                                                if report["model_is_tiny_random"] else ""),
             f"judge     {report['judge'] or '-'}",
             f"rows      {report['num_rows']} evaluated, {report['rows_failed']} failed "
             f"(of {report['rows_in_file']} in the file)"]
    for key, value in report["metrics"].items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        marker = "  <- headline" if key == report["headline_metric"] else ""
        lines.append(f"{key:<18}{shown}{marker}")
    lines.append(f"time      {report['timing']['total_s']:.1f} s (model load {report['timing']['load_model_s']:.1f} s)")
    return "\n".join(lines)
