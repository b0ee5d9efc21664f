"""``plm-index eval`` end to end: real videos, the tiny PLM, published-format annotation files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from core.media import make_video
from core.sampling import uniform_or_all
from evaluation.data import AnnotationError, load_annotations
from evaluation.job import EvalError, EvalSettings, run_eval
from evaluation.judge import ExactMatchJudge, caption_scorer
from schemas.records import VideoInfo
from tasks import scoring as metrics
from tasks.fgqa import fgqa_positions, fgqa_prompt
from tasks.rcap import rcap_prompt
from tasks.rdcap import rdcap_prompt
from tasks.rtloc import rtloc_prompt
from tasks.sgqa import sgqa_prompt

ROOT = Path(__file__).resolve().parents[3]
TOTAL = 100  # 4 s at 25 fps
FAST_TOKENS = 8  # the benchmark's 16/512 would only slow the tiny model down; prompts are unchanged

METRIC_KEYS = {
    "fgqa": {"mbacc", "binary_accuracy", "num_questions"},
    "rtloc": {"mean_recall", "recall@0.3", "recall@0.5", "recall@0.7", "recall@0.9", "miou", "parse_errors"},
    "rdcap": {"soda_c"},
    "rcap": {"judge_score", "judge_parse_rate"},
    "sgqa": {"accuracy"},
}
UNIT_INTERVAL = {"mbacc", "binary_accuracy", "mean_recall", "recall@0.3", "recall@0.5", "recall@0.7",
                 "recall@0.9", "miou", "soda_c", "judge_score", "judge_parse_rate", "accuracy"}
# Frames 20..70 (even ones) carry the region's box; the other frames have none.
BOXED = {str(i): [60, 40, 250, 200] for i in range(20, 71, 2)}


def _bench_index(frame: int) -> int:
    """lmms-eval's rescale into the 32-frame space, written out: int(frame / (total / 32))."""
    return int(frame / (TOTAL / 32))


def _rows(task: str) -> list[dict[str, Any]]:
    """Small annotation rows in the published PLM-VideoBench format."""
    meta = {"source_video_id": "src", "source_dataset": "test", "source_start_time": 0.0,
            "source_end_time": 4.0, "question_type": "action", "source_domain": "test"}
    if task == "fgqa":
        return [
            {"uid": "q1-0", "qa_uid": "q1", "video": "pattern.mp4", "question": "What moves?",
             "options": {"option_0": "the ball", "option_1": "the box"}, "answer": "the ball",
             "answer_index": 0, "metadata": meta},
            {"uid": "q1-1", "qa_uid": "q1", "video": "pattern.mp4", "question": "What moves?",
             "options": {"option_0": "the cup", "option_1": "the ball"}, "answer": "the ball",
             "answer_index": 1, "metadata": meta},
            {"uid": "q2-0", "qa_uid": "q2", "video": "pattern.mp4", "question": "Which way?",
             "options": {"option_0": "left", "option_1": "right"}, "answer": "right",
             "answer_index": 1, "metadata": meta},
            {"uid": "q2-1", "qa_uid": "q2", "video": "pattern.mp4", "question": "Which way?",
             "options": {"option_0": "right", "option_1": "up"}, "answer": "right",
             "answer_index": 0, "metadata": meta},
        ]
    if task == "sgqa":
        return [{"uid": "s1", "video": "pattern.mp4", "question": "What did I hold?", "answer": "a red cup",
                 "domain": "kitchen"},
                {"uid": "s2", "video": "pattern.mp4", "question": "Where am I?", "answer": "in the lab",
                 "domain": "lab"}]
    region = {"video": "region.mp4", "masklet_id": 3, "total_frames": TOTAL, "bbox": BOXED}
    if task in ("rcap", "rtloc"):
        return [{"uid": 1, **region, "caption": "the square slides to the left", "start_frame": 20, "end_frame": 60},
                {"uid": 2, **region, "caption": "the square stops", "start_frame": 50, "end_frame": 99}]
    return [{"uid": 1, **region, "dense_captions": [
                {"start_frame": 0, "end_frame": 30, "caption": "the square slides left"},
                {"start_frame": 40, "end_frame": 99, "caption": "the square stops"}]},
            {"uid": 2, **region, "dense_captions": [{"start_frame": 10, "end_frame": 80, "caption": "it waits"}]}]


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real 4 s videos, a broken one, and one annotation file per task."""
    folder = tmp_path_factory.mktemp("eval")
    videos = folder / "videos"
    make_video(str(videos / "pattern.mp4"), "testsrc=size=320x240:rate=25", 4)
    make_video(str(videos / "region.mp4"), "color=c=gray:size=320x240:rate=25", 4)
    (videos / "broken.mp4").write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for task in METRIC_KEYS:
        (folder / f"{task}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in _rows(task)))
    return folder


def _settings(eval_dir: Path, task: str, model: str, **extra: Any) -> EvalSettings:
    judge = "exact" if task in ("rcap", "rdcap", "sgqa") else None
    values: dict[str, Any] = {"task": task, "data": str(eval_dir / f"{task}.jsonl"), "model": model,
                              "video_root": str(eval_dir / "videos"), "judge": judge,
                              "max_new_tokens": FAST_TOKENS, "show_progress": False,
                              "output": str(eval_dir / f"report-{task}.json")}
    values.update(extra)
    return EvalSettings(**values)


def _recomputed(task: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """The headline metrics, recomputed by evaluation.metrics from the report's own rows."""
    judge = ExactMatchJudge()
    if task == "fgqa":
        return {"mbacc": metrics.mbacc(rows)}
    if task == "rtloc":
        scores = metrics.rtloc_scores([tuple(r["scored_range"]) for r in rows], [tuple(r["gt_range"]) for r in rows])
        return {"mean_recall": scores.mean_recall, "miou": scores.miou,
                **{f"recall@{t}": v for t, v in scores.recall_at.items()}}
    if task == "rdcap":
        values = [metrics.soda_c([tuple(s) for s in r["pred_segments"]], [tuple(g) for g in r["gt_segments"]],
                                 caption_scorer(judge)) for r in rows]
        return {"soda_c": sum(values) / len(values)}
    if task == "rcap":
        return {"judge_score": metrics.rcap_score([judge.score_caption(r["gt_caption"], r["prediction"]).score
                                                   for r in rows])}
    return {"accuracy": metrics.sgqa_accuracy([judge.judge_sgqa("", r["prediction"], r["gt_answer"])
                                               for r in rows])}


def _expected_prompt(task: str, row: dict[str, Any]) -> str:
    if task == "fgqa":
        options = [row["options"][f"option_{i}"] for i in range(len(row["options"]))]
        return fgqa_prompt(row["question"], options)
    if task == "sgqa":
        return sgqa_prompt(row["question"])
    if task == "rcap":
        return rcap_prompt(_bench_index(row["start_frame"]), _bench_index(row["end_frame"]),
                                        total_frames=row["total_frames"])
    if task == "rtloc":
        return rtloc_prompt(row["caption"])
    return rdcap_prompt()


@pytest.mark.parametrize("task", sorted(METRIC_KEYS))
def test_eval_with_the_tiny_model(eval_dir: Path, tiny_model: str, task: str) -> None:
    report = run_eval(_settings(eval_dir, task, tiny_model, limit=2))  # two rows keep the test quick
    annotations = _rows(task)[:2]
    assert report["task"] == task and report["num_rows"] == 2 and report["rows_failed"] == 0
    assert report["rows_in_file"] == len(_rows(task))
    assert report["model"] == tiny_model and report["model_is_tiny_random"] is True
    assert METRIC_KEYS[task] <= set(report["metrics"])
    for key in METRIC_KEYS[task] & UNIT_INTERVAL:
        assert 0.0 <= report["metrics"][key] <= 1.0, key
    if task in ("rcap", "rdcap", "sgqa"):
        assert "exact-match" in report["judge"] and "not an LLM judge" in report["judge"]
    else:
        assert report["judge"] is None
    assert report["timing"]["total_s"] > 0 and report["settings"]["resize"] == "exact"
    rows = report["rows"]
    for row, annotation in zip(rows, annotations, strict=True):
        assert row["error"] is None
        assert isinstance(row["raw_output"], str)
        assert row["prediction"] == (row["raw_output"][:-1] if row["raw_output"].endswith(".") else row["raw_output"])
        assert row["prompt"] == _expected_prompt(task, annotation)
        assert len(row["sample_frame_indices"]) == 32
    for key, value in _recomputed(task, rows).items():
        assert report["metrics"][key] == pytest.approx(value), key
    # The report on disk is the same report.
    assert json.loads(Path(eval_dir / f"report-{task}.json").read_text())["metrics"] == report["metrics"]


def _scripted(answers: list[str], seen: list[Any]):
    """A stand-in for PlmModelHandler.generate that answers rows in order and records its inputs."""
    def generate(items, loaded, max_new_tokens):  # noqa: ANN001, ANN202 - test double
        seen.extend(items)
        return [answers.pop(0) for _ in items]
    return generate


def _no_model(model: str, device: str) -> SimpleNamespace:
    return SimpleNamespace(device="cpu", model_id=model, model=None, processor=None)


@pytest.mark.parametrize("task", sorted(METRIC_KEYS))
def test_scripted_answers_score_as_the_metrics_say(eval_dir: Path, task: str) -> None:
    """Known answers through the whole job give the metrics computed directly from those answers."""
    annotations = _rows(task)
    judge = ExactMatchJudge()
    if task == "fgqa":
        answers = ["(A) the ball.", "(A)", "B", "(A) right"]  # q1: one wrong; q2: both right
        expected = {"mbacc": metrics.mbacc([{"qa_uid": "q1", "c": True}, {"qa_uid": "q1", "c": False},
                                            {"qa_uid": "q2", "c": True}, {"qa_uid": "q2", "c": True}],
                                           correct_key="c")}
    elif task == "rtloc":
        gts = [(_bench_index(r["start_frame"]), _bench_index(r["end_frame"])) for r in annotations]
        answers = [f"[{gts[0][0]}, {gts[0][1]}].", "[0, 3]"]
        scores = metrics.rtloc_scores([gts[0], (0, 3)], gts)
        expected = {"mean_recall": scores.mean_recall, "miou": scores.miou}
    elif task == "rdcap":
        first = annotations[0]["dense_captions"]
        answers = ["\n".join(f"[{_bench_index(c['start_frame'])}, {_bench_index(c['end_frame'])}]: {c['caption']}"
                             for c in first) + ".", "no segments at all"]
        gt_first = [(_bench_index(c["start_frame"]), _bench_index(c["end_frame"]), c["caption"]) for c in first]
        expected = {"soda_c": (metrics.soda_c(gt_first, gt_first, caption_scorer(judge)) + 0.0) / 2}
    elif task == "rcap":
        answers = [annotations[0]["caption"] + ".", "something else"]
        expected = {"judge_score": metrics.rcap_score([10.0, 0.0])}
    else:
        answers = [annotations[0]["answer"], "no idea"]
        expected = {"accuracy": metrics.sgqa_accuracy([True, False])}
    seen: list[Any] = []
    report = run_eval(_settings(eval_dir, task, "scripted", output=None), load=_no_model,
                      generate=_scripted(list(answers), seen))
    assert report["rows_failed"] == 0 and len(seen) == len(annotations)
    assert 0 < report["metrics"][report["headline_metric"]] < 1
    for key, value in expected.items():
        assert report["metrics"][key] == pytest.approx(value), key
    for item, row in zip(seen, report["rows"], strict=True):
        assert item.frames.shape == (32, 448, 448, 3) and item.frames.dtype == np.uint8
        assert item.max_new_tokens == FAST_TOKENS and item.prompt == row["prompt"]
        assert list(item.clip.sample_frame_indices) == row["sample_frame_indices"]
        # 4 s at 25 fps: fewer than 32 one-second steps, so every task samples 32 of all 100 frames.
        assert row["sample_frame_indices"] == [round(i * (TOTAL - 1) / 31) for i in range(32)]
        if task in ("rcap", "rtloc", "rdcap"):
            # On the gray video only the drawn box is red, and only on frames that have a box.
            red = (item.frames[..., 0] > 150) & (item.frames[..., 1] < 80) & (item.frames[..., 2] < 80)
            has_red = red.reshape(32, -1).any(axis=1).tolist()
            assert has_red == [str(p) in BOXED for p in row["sample_frame_indices"]]
    if task == "rtloc":
        first = report["rows"][0]
        assert first["pred_range"] == list(first["gt_range"]) and first["iou"] == pytest.approx(1.0)
        start, end = first["pred_seconds"]
        assert start == first["sample_times"][first["gt_range"][0]] and end > first["sample_times"][first["gt_range"][1]]


def test_bad_videos_are_recorded_per_row_and_the_run_goes_on(eval_dir: Path) -> None:
    rows = _rows("sgqa") + [{"uid": "missing", "video": "nowhere.mp4", "question": "q", "answer": "a"},
                            {"uid": "broken", "video": "broken.mp4", "question": "q", "answer": "a"}]
    data = eval_dir / "sgqa-bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = [rows[0]["answer"], "wrong"]
    report = run_eval(_settings(eval_dir, "sgqa", "scripted", data=str(data), output=None), load=_no_model,
                      generate=_scripted(answers, []))
    assert report["num_rows"] == 4 and report["rows_failed"] == 2
    failed = {r["uid"]: r["error"] for r in report["rows"] if r["error"]}
    assert set(failed) == {"missing", "broken"}
    assert all(e["stage"] == "probe" and e["message"] for e in failed.values())
    assert report["metrics"]["scored_rows"] == 2
    assert report["metrics"]["accuracy"] == pytest.approx(metrics.sgqa_accuracy([True, False]))


def test_limit_and_region_metadata_file(eval_dir: Path) -> None:
    """Boxes may come from a published-style metadata file keyed by (video, masklet_id)."""
    rows = [{k: v for k, v in r.items() if k != "bbox"} for r in _rows("rtloc")]
    data = eval_dir / "rtloc-nobox.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AnnotationError) as info:
        load_annotations(str(data), "rtloc")
    assert [line for line, _ in info.value.errors] == [1, 2]
    meta = eval_dir / "metadata.jsonl"
    meta.write_text(json.dumps({"video": "region.mp4", "masklet_id": 3, "bbox": BOXED}) + "\n")
    seen: list[Any] = []
    report = run_eval(_settings(eval_dir, "rtloc", "scripted", data=str(data), metadata=str(meta), limit=1,
                                output=None), load=_no_model, generate=_scripted(["[1, 2]"], seen))
    assert report["num_rows"] == 1 and report["rows_in_file"] == 2 and len(seen) == 1
    assert report["rows"][0]["boxed_frames"] == sum(str(p) in BOXED for p in report["rows"][0]["sample_frame_indices"])


def test_loader_rejects_bad_rows_with_their_line_numbers(tmp_path: Path) -> None:
    good = _rows("fgqa")[0]
    lines = [json.dumps(good), "{not json", json.dumps({k: v for k, v in good.items() if k != "question"}),
             "", json.dumps({**good, "answer_index": 5}), json.dumps({**good, "answer": "the box"})]
    path = tmp_path / "fgqa.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError) as info:
        load_annotations(str(path), "fgqa")
    assert isinstance(info.value, ValueError)
    assert [line for line, _ in info.value.errors] == [2, 3, 5, 6]
    assert "line 3" in str(info.value) and "question" in str(info.value)


def test_judged_task_without_a_judge_or_with_a_bad_one_is_refused(eval_dir: Path) -> None:
    with pytest.raises(EvalError, match="--judge"):
        run_eval(_settings(eval_dir, "rcap", "scripted", judge=None), load=_no_model)
    with pytest.raises(EvalError, match="--judge"):
        run_eval(_settings(eval_dir, "sgqa", "scripted", judge="ftp://nope"), load=_no_model)


def _info(num_frames: int, fps: float) -> VideoInfo:
    times = np.arange(num_frames) / fps
    return VideoInfo(uri="x", video_id="x", size_bytes=1, duration_s=num_frames / fps, fps=fps,
                     num_frames=num_frames, width=8, height=8, rotation=0, codec="h264", frame_times=times)


def test_fgqa_sampling_steps_at_one_fps_on_long_videos() -> None:
    # 60 s at 30 fps: positions 0, 30, ..., 1770 (60 of them), thinned to 32 by round(i*59/31).
    steps = list(range(0, 1800, 30))
    assert fgqa_positions(_info(1800, 30.0)) == [steps[round(i * 59 / 31)] for i in range(32)]
    # 20 s at 25 fps: only 20 one-second steps, so 32 of all 500 frames instead.
    assert fgqa_positions(_info(500, 25.0)) == [round(i * 499 / 31) for i in range(32)]
    # 20 frames: all of them, fewer than 32.
    assert fgqa_positions(_info(20, 25.0)) == list(range(20))
    # A segment [10 s, 50 s) of the 60 s video: frames 300..1500 stepped by 30 (41 steps), thinned.
    seg = list(range(300, 1501, 30))
    assert fgqa_positions(_info(1800, 30.0), (10.0, 50.0)) == [seg[round(i * 40 / 31)] for i in range(32)]


def test_sgqa_sampling_keeps_every_frame_of_short_videos() -> None:
    assert uniform_or_all(0, 20, 32) == list(range(20))
    assert uniform_or_all(5, 100, 32) == [5 + round(i * 99 / 31) for i in range(32)]


def test_cli_eval(eval_dir: Path, tiny_model: str) -> None:
    output = eval_dir / "cli-report.json"
    command = [sys.executable, "-m", "pipeline.cli", "eval", "--task", "rcap", "--data", str(eval_dir / "rcap.jsonl"),
               "--video-root", str(eval_dir / "videos"), "--model", tiny_model, "--judge", "exact",
               "--max-new-tokens", str(FAST_TOKENS), "--limit", "1", "--output", str(output)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(output.read_text())
    assert report["num_rows"] == 1 and report["rows"][0]["error"] is None
    assert "exact-match" in report["judge"]
    assert report["metrics"]["judge_score"] == pytest.approx(_recomputed("rcap", report["rows"])["judge_score"])
    assert "judge_score" in done.stdout and "headline" in done.stdout
    assert "eval rcap" in done.stderr  # the progress bar


SCRIPTED = {
    "fgqa": ["(A) the ball.", "The answer is (B)", "(A)(B)", "(A) right"],
    "rtloc": ["[6, 19].", "[ 0, 3 ]"],
    "rdcap": ["[0, 9]: the square slides left\n[12, 31]: [the square stops]", "[3.5, 25]: it waits"],
    "rcap": ["the square slides to the left.", "something else"],
    "sgqa": ["a red cup", "no idea"],
}
_PLACE_KEYS = {"timing", "sample_frame_indices", "sample_times", "video_frames", "uri", "boxed_frames",
               "pred_seconds", "warning", "prediction_missing"}


def _write_predictions(path: Path, task: str, answers: list[str], skip: int | None = None) -> str:
    lines = [json.dumps({"uid": row["uid"], "output": answer})
             for k, (row, answer) in enumerate(zip(_rows(task), answers, strict=True)) if k != skip]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("task", sorted(METRIC_KEYS))
def test_predictions_are_scored_exactly_as_the_models_own_answers(eval_dir: Path, task: str) -> None:
    answers = SCRIPTED[task]
    ran = run_eval(_settings(eval_dir, task, "scripted", output=None), load=_no_model,
                   generate=_scripted(list(answers), []))
    predictions = _write_predictions(eval_dir / f"pred-{task}.jsonl", task, answers)

    def no_model(*args: Any) -> Any:
        raise AssertionError("no model may be loaded or run when scoring predictions")

    scored = run_eval(_settings(eval_dir, task, None, output=None, predictions=predictions),
                      load=no_model, generate=no_model)
    assert scored["model"] is None and scored["predictions"] == predictions and scored["rows_failed"] == 0
    assert scored["rows_without_prediction"] == 0 and scored["predictions_without_row"] == []
    assert scored["metrics"] == ran["metrics"]
    for mine, theirs in zip(scored["rows"], ran["rows"], strict=True):
        assert "sample_frame_indices" not in mine  # no video was read
        assert {k: v for k, v in mine.items() if k not in _PLACE_KEYS} == \
            {k: v for k, v in theirs.items() if k not in _PLACE_KEYS}


def test_predictions_benchmark_reading_per_row(eval_dir: Path) -> None:
    predictions = _write_predictions(eval_dir / "pred-fgqa-read.jsonl", "fgqa", SCRIPTED["fgqa"])
    report = run_eval(_settings(eval_dir, "fgqa", None, output=None, predictions=predictions))
    rows = report["rows"]
    assert [r["prediction"] for r in rows] == ["(A) the ball", "The answer is (B)", "(A)(B)", "(A) right"]
    assert [r["credited_options"] for r in rows] == [["A"], [], ["A", "B"], ["A"]]
    assert [r["correct"] for r in rows] == [True, False, True, True]  # answers: A, B, B, A
    assert [r["index_reading_option"] for r in rows] == [0, 1, 0, 0]
    assert report["metrics"]["mbacc"] == pytest.approx(0.5)  # q1 fails on "The answer is (B)"


def test_missing_predictions_score_as_empty_answers_and_are_counted(eval_dir: Path) -> None:
    path = eval_dir / "pred-rtloc-missing.jsonl"
    _write_predictions(path, "rtloc", SCRIPTED["rtloc"], skip=1)
    with path.open("a") as handle:
        handle.write(json.dumps({"uid": "not-in-the-data", "output": "[1, 2]"}) + "\n")
    report = run_eval(_settings(eval_dir, "rtloc", None, output=None, predictions=str(path)))
    assert report["rows_without_prediction"] == 1 and report["predictions_without_row"] == ["not-in-the-data"]
    missing = report["rows"][1]
    assert missing["prediction_missing"] is True and missing["prediction"] == ""
    # lmms-eval's parse-error stand-in [end_frame + 10, end_frame + 20] in source frames.
    assert missing["parse_error"] and missing["scored_range"] == [109.0, 119.0] and missing["iou"] == 0.0
    assert report["metrics"]["parse_errors"] == 1 and report["rows_failed"] == 0
    fgqa = eval_dir / "pred-fgqa-missing.jsonl"
    _write_predictions(fgqa, "fgqa", SCRIPTED["fgqa"], skip=0)
    row = run_eval(_settings(eval_dir, "fgqa", None, output=None, predictions=str(fgqa)))["rows"][0]
    assert row["prediction_missing"] and row["correct"] is False and row["credited_options"] == []


def test_bad_predictions_files_are_refused_with_every_bad_line(eval_dir: Path) -> None:
    path = eval_dir / "pred-bad.jsonl"
    path.write_text('{"uid": 1, "output": "x"}\nnot json\n{"output": "x"}\n{"uid": 2, "output": 3}\n'
                    '{"uid": 1, "output": "y"}\n')
    with pytest.raises(EvalError) as caught:
        run_eval(_settings(eval_dir, "rcap", None, output=None, predictions=str(path)))
    message = str(caught.value)
    for line in (2, 3, 4, 5):
        assert f"line {line}:" in message
    assert "line 1:" not in message and "already given" in message
    with pytest.raises(FileNotFoundError):
        run_eval(_settings(eval_dir, "rcap", None, output=None, predictions=str(eval_dir / "absent.jsonl")))


def test_cli_eval_predictions_loads_no_model(eval_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    predictions = _write_predictions(eval_dir / "pred-cli.jsonl", "sgqa", SCRIPTED["sgqa"], skip=1)
    output = eval_dir / "cli-pred.json"
    status = main(["eval", "--task", "sgqa", "--data", str(eval_dir / "sgqa.jsonl"), "--predictions", predictions,
                   "--judge", "exact", "--no-progress", "--output", str(output)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "tiny random-weight" not in captured.err and "missing   1 row(s)" in captured.out
    report = json.loads(output.read_text())
    assert report["model"] is None and report["metrics"]["accuracy"] == pytest.approx(0.5)
