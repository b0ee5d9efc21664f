"""The fine-grained tasks through the build: questions and regions from a manifest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from core.media import make_video
from index import read_current
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, DecodeConfig, ModelConfig
from schemas.manifest import ManifestRow, Question
from schemas.records import ClipPrompt, VideoClips, VideoInput
from schemas.rows import RunContext
from tasks import get_task
from transforms.decode import decoder_for
from transforms.plan import plan_clips
from transforms.plan.annotations import annotate_clips
from transforms.probe import probe_video
from transforms.prompt import build_prompt, expand_tasks

RUN = RunContext("r", "s", "m", "{}", "0", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


@pytest.fixture(scope="module")
def black_video(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("black") / "black.mp4"
    return make_video(str(path), "color=c=black:size=320x240:rate=25", 4)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, black_video: str) -> Path:
    folder = tmp_path_factory.mktemp("manifest")
    row = {
        "uri": black_video,
        "questions": [
            {"question": "What does the person do?", "options": ["cut", "pour", "stir"], "answer": "B"},
            {"question": "Where did I put the keys?", "start_s": 0, "end_s": 2},
        ],
        "regions": [
            {"region_id": "cup", "caption": "the cup is lifted", "box": [40, 40, 200, 160],
             "start_s": 1.0, "end_s": 3.0},
            {"region_id": "hand", "boxes_by_frame": {str(i): [10, 10, 100, 100] for i in range(0, 50)}},
        ],
    }
    path = folder / "m.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


def clip_with_annotations(black_video: str, manifest: Path):
    extras = ManifestRow.model_validate(json.loads(manifest.read_text())).extras()
    info = probe_video(VideoInput(black_video, json.dumps(extras)))
    return info, annotate_clips(info, plan_clips(info, ClipSpec.parse("fixed:4"), 32))


def test_all_five_tasks_run_through_build(tmp_path: Path, manifest: Path, tiny_model: str) -> None:
    config = BuildConfig(input=str(manifest), output=str(tmp_path / "idx"), clips=ClipSpec.parse("fixed:4"),
                         model=ModelConfig(model=tiny_model, max_new_tokens=8, torch_threads=2),
                         tasks=("caption", "fgqa", "sgqa", "rcap", "rtloc", "rdcap"))
    summary = run_build(config, beam_options([]))
    assert (summary.inputs, summary.indexed, summary.failed) == (1, 1, 0)
    rows = read_current(str(tmp_path / "idx"), "segments").to_pylist()
    tasks = {r["task"] for r in rows}
    assert tasks == {"caption", "fgqa", "sgqa", "rcap", "rtloc", "rdcap"}
    for row in rows:
        assert 0.0 <= row["start_s"] <= row["end_s"] <= 4.0, row
        assert row["raw_output"] is not None
        # Every benchmark task's row says whether PLM-VideoBench's own reading agrees; captions have none.
        assert (row["benchmark_reading_ok"] is None) == (row["task"] == "caption"), row
    fgqa = next(r for r in rows if r["task"] == "fgqa")
    assert fgqa["options"] == ["cut", "pour", "stir"] and fgqa["answer_option"] == 1
    assert fgqa["prompt"].startswith("Question: What does the person do?\nOptions:\n(A) cut\n(B) pour\n(C) stir")
    assert (fgqa["chosen_option"] is None) == (fgqa["parse_error"] is not None)
    rcap = {r["region_id"]: r for r in rows if r["task"] == "rcap"}
    assert set(rcap) == {"cup", "hand"}
    # The cup's box covers 1.0-3.0 s: its rcap row spans exactly the sampled frames inside that range.
    cup = rcap["cup"]
    times = cup["frame_timestamps"]
    inside = [k for k, t in enumerate(times) if 1.0 <= t + 1e-6 < 3.0]
    assert (cup["start_frame"], cup["end_frame"]) == (inside[0], inside[-1])
    assert cup["start_s"] == pytest.approx(times[inside[0]])
    assert [b["frame"] for b in cup["region_boxes"]] == inside
    assert f"within frames [{inside[0]}, {inside[-1]}] in this 32 frame video." in cup["prompt"]
    rtloc = [r for r in rows if r["task"] == "rtloc"]
    assert [r["region_id"] for r in rtloc] == ["cup"]  # the hand region has no caption to localise


def test_rtloc_and_rdcap_answers_become_seconds(black_video: str, manifest: Path) -> None:
    info, clips = clip_with_annotations(black_video, manifest)
    clip = clips[0]
    prompt = ClipPrompt(clip, np.zeros((32, 448, 448, 3), np.uint8), "rtloc", "p", 16, region_id="cup")
    row = get_task("rtloc").rows(RUN, prompt, "The action happens in [20, 5] I think.")[0]
    # Reversed range is swapped; start maps to frame 5's start, end to the end of frame 20's interval.
    assert (row["start_frame"], row["end_frame"]) == (5, 20)
    assert row["start_s"] == clip.sample_times[5] and row["end_s"] == clip.sample_end_times[20]
    assert row["end_s"] > clip.sample_times[20]
    clamped = get_task("rtloc").rows(RUN, prompt, "[3, 40]")[0]
    assert clamped["end_frame"] == 31 and clamped["clamped"] is True and clamped["raw_end_frame"] == 40
    assert clamped["end_s"] == clip.sample_end_times[31]
    garbage = get_task("rtloc").rows(RUN, prompt, "no idea")[0]
    assert garbage["parse_error"] and garbage["raw_output"] == "no idea"
    dense = get_task("rdcap").rows(RUN, ClipPrompt(clip, prompt.frames, "rdcap", "p", 512, region_id="cup"),
                             "[0, 9]: picks up the cup\n[10, 31]: drinks")
    assert [(r["start_s"], r["end_s"], r["text"]) for r in dense] == [
        (clip.sample_times[0], clip.sample_end_times[9], "picks up the cup"),
        (clip.sample_times[10], clip.sample_end_times[31], "drinks")]
    empty = get_task("rdcap").rows(RUN, ClipPrompt(clip, prompt.frames, "rdcap", "p", 512, region_id="cup"), "")
    assert len(empty) == 1 and empty[0]["parse_error"]


def test_red_box_is_drawn_on_region_frames_only(black_video: str, manifest: Path) -> None:
    info, clips = clip_with_annotations(black_video, manifest)
    decoded = next(iter(decoder_for(DecodeConfig()).decode(VideoClips(info, tuple(clips)), DecodeConfig())))
    cup = decoded.frames_for("cup")
    region = next(r for r in decoded.clip.regions if r.region_id == "cup")
    scale_x, scale_y = 448 / 320, 448 / 240
    for k, box in enumerate(region.boxes):
        frame = cup[k].astype(int)
        if box is None:
            assert np.array_equal(cup[k], decoded.frames[k]), "frames without a box must stay untouched"
            continue
        # Middle of the left edge (x1 + 2 px, inside the 4 px outline), scaled to 448.
        x, y = int((box[0] + 2) * scale_x), int((box[1] + box[3]) / 2 * scale_y)
        assert frame[y, x, 0] > 150 and frame[y, x, 1] < 60, frame[y, x]
        cx, cy = int((box[0] + box[2]) / 2 * scale_x), int((box[1] + box[3]) / 2 * scale_y)
        assert frame[cy, cx].max() < 40, "the box interior stays black"
    assert not np.any(decoded.frames[..., 0] > 100), "plain frames carry no box"


def test_cli_question_applies_to_every_clip(black_video: str) -> None:
    info = probe_video(VideoInput(black_video))
    clips = annotate_clips(info, plan_clips(info, ClipSpec.parse("fixed:2"), 32),
                           (Question(question="Is it dark?", options=["yes", "no"]),))
    assert len(clips) == 2 and all(len(c.questions) == 1 for c in clips)
    decoded = list(decoder_for(DecodeConfig()).decode(VideoClips(info, tuple(clips)), DecodeConfig()))
    prompts = [build_prompt(t) for d in decoded for t in expand_tasks(d, ("fgqa",), 8)]
    assert [p.prompt for p in prompts] == [
        "Question: Is it dark?\nOptions:\n(A) yes\n(B) no\nOnly give the best option.{answer}"] * 2
    assert all(p.max_new_tokens == 16 for p in prompts)


def test_each_prompt_counts_the_prompts_on_its_frames(black_video: str, manifest: Path) -> None:
    """The model runner carries a clip's prefix to the next batch while prompts on the same frames are to come."""
    info, clips = clip_with_annotations(black_video, manifest)
    decoded = next(iter(decoder_for(DecodeConfig()).decode(VideoClips(info, tuple(clips)), DecodeConfig())))
    tasks = ("caption", "fgqa", "sgqa", "rcap", "rtloc", "rdcap")
    prompts = [build_prompt(t) for t in expand_tasks(decoded, tasks, 8)]
    on_frames = {(p.region_id, p.task, p.question_index): p.prompts_on_frames for p in prompts}
    # The plain frames: a caption and the two questions (one fgqa, one sgqa); the cup: rcap, rtloc,
    # rdcap; the hand (no caption to localise): rcap and rdcap.
    assert sorted(on_frames.values()) == [2, 2, 3, 3, 3, 3, 3, 3]
    assert {k[0]: v for k, v in on_frames.items()} == {None: 3, "cup": 3, "hand": 2}


def test_a_clip_straddling_batches_keeps_its_prefix_in_the_build(tmp_path: Path, black_video: str,
                                                                tiny_model: str) -> None:
    """A caption and two questions per clip in batches of two rows: every clip straddles two batches.

    The build continues each from its carried prefix (counted as the ``prefixes_carried`` metric)
    and indexes the same answers as batches of three, where no clip straddles.
    """
    from model_runner.runner import CARRIED_LISTENERS

    questions = (Question(question="Is it dark?", options=["yes", "no"]),
                 Question(question="What moves?", options=["a cup", "nothing"]))

    def answers(batch_size: int) -> tuple[list[tuple], int]:
        carried: list[int] = []
        CARRIED_LISTENERS.append(carried.append)
        try:
            output = tmp_path / f"idx{batch_size}"
            config = BuildConfig(input=black_video, output=str(output), clips=ClipSpec.parse("fixed:2"),
                                 model=ModelConfig(model=tiny_model, max_new_tokens=8, torch_threads=2,
                                                   batch_size=batch_size),
                                 tasks=("caption", "fgqa"), questions=questions)
            summary = run_build(config, beam_options([]))
        finally:
            CARRIED_LISTENERS.remove(carried.append)
        assert (summary.indexed, summary.failed) == (1, 0)
        rows = read_current(str(output), "segments").to_pylist()
        return sorted((r["clip_index"], r["task"], r["prompt"], r["raw_output"]) for r in rows), sum(carried)

    straddling, carried = answers(2)
    aligned, carried_aligned = answers(3)
    assert len(straddling) == 6 and straddling == aligned
    assert (carried, carried_aligned) == (2, 0)
